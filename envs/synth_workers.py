"""Recording a dataset's episodes, in this process or in worker processes (:func:`envs.synth.synthesize`
calls :func:`record_all` once it holds the folder and has checked its manifest).

Split from ``envs/synth.py`` (what one episode records) along the line between recording an
episode and running many: the workers, their stop event, and what they must register first.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Any

from critic.data.episodes import write_episode
from envs.manifest import logger
from envs.plans import EpisodePlan
from envs.synth import record_episode
from envs.tasks import check_sendable, specs_for_workers
from rollout.workers import workers_start_deaf_to_ctrl_c


def _record_and_write(plan: EpisodePlan, root: str, codec: str, options: dict) -> dict[str, Any]:
    start = time.perf_counter()
    episode = record_episode(plan, **options)
    write_episode(episode, root, codec=codec)
    return {
        **asdict(plan),
        "episode_id": plan.episode_id,
        "success": episode.success,
        "failure_type": episode.failure_type,
        "failure_step": episode.failure_step,
        "frames": len(episode),
        "final_progress": float(episode.progress[-1]),
        "max_progress": float(episode.progress.max()),
        "seconds": time.perf_counter() - start,
    }


_stop: Any = None  # in a worker process: the run's stop event (set once the run has stopped)


def _start_worker(stop: Any, specs: dict[str, Any], experts: dict[str, Any]) -> None:
    """A worker process leaves Ctrl-C to the parent (which stops the run), keeps its stop event,
    and registers the parent's specs and experts of the run's tasks: a spawned worker imports
    ``envs`` afresh, and would record the built-in spec where the parent's manifest says a
    task registered or replaced after import (``envs.register_task``)."""
    global _stop
    from envs.experts import _EXPERTS, _load_experts
    from envs.tasks import register_task
    from rollout.workers import end_with_parent, hear_ctrl_c_as_ignored

    end_with_parent()  # a killed parent left its workers waiting for ever
    hear_ctrl_c_as_ignored()
    _stop = stop
    for spec in specs.values():
        register_task(spec)
    _load_experts()  # the built-in experts first: the parent's replace them, not the other way
    _EXPERTS.update(experts)


def _registered(plans: Sequence[EpisodePlan]) -> tuple[dict[str, Any], dict[str, Any]]:
    """This process's task specs and scripted experts of the plans' tasks, for its workers."""
    from envs.experts import _EXPERTS, _load_experts

    _load_experts()
    tasks = sorted({plan.task for plan in plans})
    experts = {t: _EXPERTS[t] for t in tasks if t in _EXPERTS}
    for task, expert in experts.items():
        check_sendable(
            expert, f"the expert of {task!r}", "define its class at a module's top level, not "
            "inside a function"
        )  # fmt: skip
    return specs_for_workers(tasks), experts


def _record_in_worker(
    plan: EpisodePlan, root: str, codec: str, options: dict
) -> dict[str, Any] | None:
    """:func:`_record_and_write` in a worker process; ``None`` for a plan that the executor had
    already handed to the worker when the run stopped."""
    if _stop is not None and _stop.is_set():
        return None
    return _record_and_write(plan, root, codec, options)


def record_all(
    plans: Sequence[EpisodePlan],
    todo: Sequence[EpisodePlan],
    root: Path,
    codec: str,
    workers: int,
    progress_bar: bool,
    options: dict,
) -> list[dict[str, Any]]:
    """Record and write ``todo``'s episodes (in ``workers`` processes); one summary row each."""
    from tqdm.auto import tqdm

    if len(todo) < len(plans):
        rest = f"recording the other {len(todo)}" if todo else "nothing to record"
        logger.info(f"{len(plans) - len(todo)} of {len(plans)} episodes already in {root}; {rest}")
    bar = tqdm(total=len(todo), desc="episodes", disable=not progress_bar)
    rows: list[dict[str, Any]] = []
    try:
        if workers == 1:
            for plan in todo:
                rows.append(_record_and_write(plan, str(root), codec, options))
                bar.update()
        else:
            import multiprocessing

            context = multiprocessing.get_context("spawn")
            stop = context.Event()
            pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                                       initargs=(stop, *_registered(todo)))  # fmt: skip
            try:
                with workers_start_deaf_to_ctrl_c():  # the workers start at the first submits
                    futures = [
                        pool.submit(_record_in_worker, p, str(root), codec, options) for p in todo
                    ]
                for future in as_completed(futures):
                    rows.append(future.result())
                    bar.update()
            except BaseException:
                # A failed episode, a killed worker or Ctrl-C stops the run: the plans not yet
                # started are dropped (a re-run records them), the episodes being recorded finish.
                stop.set()
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            pool.shutdown()
    finally:
        bar.close()
    return rows
