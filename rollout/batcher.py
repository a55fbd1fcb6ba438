"""The critic server's dynamic batcher: one engine on one thread, merging calls that arrive close
together into one engine call (up to ``max_batch`` requests), and rerunning a merged batch that
fails call by call, so one client's bad call fails only its own. :mod:`rollout.serve` puts it
behind HTTP.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from rollout.checks import is_int, is_number
from rollout.engine import Engine, EngineError

log = logging.getLogger("rollout.serve")  # the server's log: one place to read a server's story


@dataclass
class BatchStats:
    """What the batcher has done: calls received, requests in them, engine calls made."""

    calls: int = 0
    requests: int = 0
    batches: int = 0
    largest_batch: int = 0
    failed_batches: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)


@dataclass
class _Job:
    kind: str  # "score" or "generate"
    key: tuple
    requests: list
    args: dict
    future: Future


class DynamicBatcher:
    """Runs an engine on one thread, merging calls that arrive close together.

    Args:
        engine: the engine to run.
        max_batch: most requests merged into one engine call (a larger single call runs whole;
            a call that would take a batch past it waits for the next).
        max_wait_ms: how long the first call of a batch waits for company.
    """

    def __init__(self, engine: Engine, max_batch: int = 16, max_wait_ms: float = 5.0) -> None:
        if not is_int(max_batch) or max_batch < 1:
            raise ValueError(f"max_batch={max_batch!r} must be an integer >= 1")
        if not is_number(max_wait_ms) or max_wait_ms < 0:
            raise ValueError(f"max_wait_ms={max_wait_ms!r} must be a number >= 0")
        self.engine = engine
        self.max_batch = int(max_batch)
        self.max_wait_s = max_wait_ms / 1000
        self.stats = BatchStats()
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._held: _Job | None = None  # did not fit the last batch: starts the next
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="viscritic-batcher", daemon=True)
        self._thread.start()

    def submit(self, kind: str, requests: list, key: tuple, args: dict) -> Future:
        """Queue one call; its future resolves to the engine's result for these requests."""
        future: Future = Future()
        if self._closed:
            future.set_exception(EngineError("the server is shutting down"))
            return future
        self._queue.put(_Job(kind, key, requests, args, future))
        return future

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking calls and wait up to ``timeout`` seconds for the batch running now
        (:attr:`alive` says whether it ended)."""
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=timeout)

    @property
    def alive(self) -> bool:
        """Whether the batching thread is running."""
        return self._thread.is_alive()

    def _loop(self) -> None:
        while True:
            job, self._held = (self._held or self._queue.get()), None
            if job is None:
                return
            try:
                if self._batch_from(job):
                    return
            except Exception:  # never let one batch end the thread: every later call would hang
                log.exception("the batcher failed on a batch; it keeps serving")

    def _batch_from(self, job: _Job) -> bool:
        """Collect a batch starting with ``job`` and run it; True when told to stop."""
        stop = False
        jobs = [job]
        size = len(job.requests)
        deadline = time.monotonic() + self.max_wait_s
        while size < self.max_batch:
            try:
                nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if nxt is None:
                stop = True  # finish this batch, then stop
                break
            if size + len(nxt.requests) > self.max_batch:
                self._held = nxt
                break
            jobs.append(nxt)
            size += len(nxt.requests)
        jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]  # timed out: skip
        try:
            groups: dict[tuple, list[_Job]] = {}
            for j in jobs:
                groups.setdefault(j.key, []).append(j)
            for group in groups.values():
                self._run(group)
        except Exception as exc:
            for j in jobs:  # nobody waits forever on a batch that broke
                if not j.future.done():
                    j.future.set_exception(
                        EngineError(f"the batch failed: {type(exc).__name__}: {exc}")
                    )
            raise
        return stop

    def _run(self, jobs: list[_Job], again: bool = False) -> None:
        """One engine call for ``jobs`` (of one key); ``again``: a failed batch's call, rerun
        alone (already counted as a call)."""
        requests = [r for j in jobs for r in j.requests]
        stats = self.stats
        if not again:
            stats.calls += len(jobs)
            stats.requests += len(requests)
        stats.batches += 1
        stats.largest_batch = max(stats.largest_batch, len(requests))
        # a new dict, not the one changed in place: /v1/health reads it on another thread, and a
        # dict that gains a key while it is read raises there (the health call then went unanswered)
        sizes = dict(stats.batch_sizes)
        sizes[len(requests)] = sizes.get(len(requests), 0) + 1
        stats.batch_sizes = sizes
        try:
            if jobs[0].kind == "score":
                out = self.engine.score(requests, **jobs[0].args).tolist()
            else:
                out = self.engine.generate(requests, **jobs[0].args)
            if len(out) != len(requests):
                raise EngineError(f"it answered {len(out)} of {len(requests)} requests")
        except Exception as exc:  # the server must outlive any one batch: report, keep serving
            stats.failed_batches += 1
            if len(jobs) > 1:  # one call's requests may be what broke it: each call alone
                log.warning(
                    "engine call failed on a batch of %d calls; running them one by one",
                    len(jobs),
                    exc_info=True,
                )
                for j in jobs:
                    self._run([j], again=True)
                return
            log.exception("engine call failed on a batch of %d requests", len(requests))
            for j in jobs:
                j.future.set_exception(
                    EngineError(f"the engine failed: {type(exc).__name__}: {exc}")
                )
            return
        start = 0
        for j in jobs:
            j.future.set_result(out[start : start + len(j.requests)])
            start += len(j.requests)
