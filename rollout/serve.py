"""The critic server: one model behind HTTP, shared by many env workers, with dynamic batching.

Clients (:class:`rollout.remote.RemoteEngine`, and ``VLMCritic(model="http://host:port")`` over it)
build prompts, tokens and patches themselves, in their own processes, and send the encoded
requests; the server only batches and runs the model. Concurrent calls that arrive within
``max_wait_ms`` of each other (up to ``max_batch`` requests) share one forward pass. A malformed
call gets a 4xx with a message and the server keeps serving; a merged batch that fails in the
engine is run again call by call, so one client's bad call fails only that call. A call still
running when its ``timeout_s`` ends gets a 504 (the client does not send it again: that would
only queue the same work behind itself); one that never started gets a 503 (retried).

Endpoints (JSON answers; bodies of POSTs are :mod:`rollout.wire` archives):

- ``GET /v1/health``: ``{"status": "ok", ...batching stats, ...video cache size and use}``;
- ``GET /v1/model``: the model config and tokenizer files, so a client can encode requests;
- ``POST /v1/score``: header ``{"candidates": [ids], "prefix": [ids]}`` → ``{"probs": [[...]]}``;
- ``POST /v1/generate``: header ``{"params": {SamplingParams fields}}`` →
  ``{"completions": [[[ids]]]}``.

Run it with ``python -m rollout.serve --model PATH`` (or the ``viscritic-serve`` console script).
The standard library's threading HTTP server is enough here: each connection gets a thread that
only parses and waits, and the model runs on one batching thread (:mod:`rollout.batcher`), so no
async framework is needed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import sys
import tempfile
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from rollout.batcher import DynamicBatcher
from rollout.checks import is_int, is_number
from rollout.engine import Engine, InvalidRequestError, SamplingParams
from rollout.handler import CallTimeoutError, UnknownEndpointError, handler_for, server_class
from rollout.wire import decode_requests
from rollout.workers import stop_on_sigterm

# The most completions one call may ask for (requests x n) and the most tokens each: what a
# critic asks for (64 queries x a few samples, a hundred tokens) with room to spare.
MAX_COMPLETIONS = 1024
MAX_NEW_TOKENS = 4096


class CriticServer:
    """An engine served over HTTP on ``host:port`` (port 0 picks a free one).

    Args:
        engine: the engine to serve (an :class:`~rollout.hf.HFEngine`).
        tokenizer: the model's tokenizer; its files are handed to clients at ``/v1/model``.
        host: address to bind; ``127.0.0.1`` keeps it on this machine.
        port: port to bind; 0 picks a free one (read :attr:`url`).
        max_batch: most requests per engine call.
        max_wait_ms: how long a call waits for others to batch with.
        timeout_s: how long one call may wait for its result: a 503 (retried) if it never
            started, a 504 (not retried) if it was running. Shorter than the clients' own
            ``timeout_s`` (300 s by default), so that they hear why.
        max_body_mb: larger bodies get a 413.
        idle_timeout_s: how long a connection may stay silent (a request half sent, a kept-alive
            connection between calls) before the server closes it: a client machine that died
            without closing its connections left a thread and a socket each, for good.

    Example:
        >>> with CriticServer(engine, tokenizer) as server:  # doctest: +SKIP
        ...     critic = make_critic(server.url)
    """

    def __init__(
        self,
        engine: Engine,
        tokenizer: Any = None,
        host: str = "127.0.0.1",
        port: int = 0,
        max_batch: int = 16,
        max_wait_ms: float = 5.0,
        timeout_s: float = 240.0,
        max_body_mb: float = 512.0,
        idle_timeout_s: float = 60.0,
    ) -> None:
        for name, value in (("timeout_s", timeout_s), ("idle_timeout_s", idle_timeout_s)):
            if not is_number(value) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a number of seconds > 0")
        if not is_number(max_body_mb) or max_body_mb * 2**20 < 1:  # 1e-9: a limit of 0 bytes
            raise ValueError(f"max_body_mb={max_body_mb!r} must be a number of megabytes > 0")
        self.engine = engine
        self.batcher = DynamicBatcher(engine, max_batch=max_batch, max_wait_ms=max_wait_ms)
        self.timeout_s = float(timeout_s)
        self.idle_timeout_s = float(idle_timeout_s)
        self.max_body = int(max_body_mb * 2**20)
        self.model_info = {
            **(engine.describe() if hasattr(engine, "describe") else {}),
            "tokenizer": _tokenizer_files(tokenizer) if tokenizer is not None else {},
            "max_body_bytes": self.max_body,  # clients refuse a larger call before sending it
        }
        # what a client built its requests for: a server restarted on another model at the same
        # address refuses its calls (409), where they failed on a patch width or, with the same
        # geometry and another tokenizer, were answered wrong without a word
        built_from = {k: v for k, v in self.model_info.items() if k != "max_body_bytes"}
        # a --dtype of the same weights: the same requests (the text and vision configs hold one
        # each too: a restart with --dtype was a 409 for every client)
        built_from["config"] = _without_dtypes(built_from.get("config") or {})
        self.model_id = hashlib.sha256(
            json.dumps(built_from, sort_keys=True, default=str).encode()
        ).hexdigest()[:16]
        self.model_info["model_id"] = self.model_id
        try:
            self.httpd = server_class(host, port)((host, port), handler_for(self))
        except BaseException:  # a port in use: the batcher's thread would hold the model for good
            self.batcher.close()
            raise
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> CriticServer:
        """Serve on a background thread (returns at once)."""
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="viscritic-server", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve on this thread until :meth:`stop` or Ctrl-C."""
        self.httpd.serve_forever()

    def stop(self) -> None:
        """Stop accepting, finish what is queued, release the port."""
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=30)
            self._thread = None
        self.httpd.server_close()
        self.batcher.close()

    def __enter__(self) -> CriticServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- one call ---------------------------------------------------------------------------
    def handle(self, path: str, body: bytes) -> Any:
        """Validate and run one POST; raises InvalidRequestError for a bad call."""
        if path not in ("/v1/score", "/v1/generate"):
            raise UnknownEndpointError(path)
        requests, header = decode_requests(body)
        if not requests:
            raise InvalidRequestError("the call holds no requests")
        check = getattr(self.engine, "check_request", None)
        for i, request in enumerate(requests):
            if check is not None:
                try:
                    check(request)
                except InvalidRequestError as exc:
                    raise InvalidRequestError(f"request {i}: {exc}") from exc
        if hasattr(
            self.engine, "with_token_types"
        ):  # the model reads these: never trust a client's
            requests = [self.engine.with_token_types(r) for r in requests]
        if path == "/v1/score":
            candidates, prefix = header.get("candidates"), header.get("prefix", [])
            for name, ids in (("candidates", candidates), ("prefix", prefix)):
                if not isinstance(ids, list) or not all(is_int(i) for i in ids):
                    raise InvalidRequestError(f"header {name}={ids!r} must be a list of token ids")
            if not candidates:
                raise InvalidRequestError("header candidates=[] must name at least one token id")
            if hasattr(self.engine, "check_token_ids"):
                self.engine.check_token_ids(candidates, "candidates")
            if hasattr(self.engine, "check_prefix"):
                self.engine.check_prefix(prefix)
            if hasattr(self.engine, "check_length"):
                self.engine.check_length(requests, 1, prefix=prefix)
            key = ("score", tuple(candidates), tuple(prefix))
            future = self.batcher.submit(
                "score", requests, key, {"candidates": candidates, "prefix": prefix}
            )
            return {"probs": self._wait(future)}
        raw = header.get("params", {})
        if not isinstance(raw, dict):
            raise InvalidRequestError(f"header params={raw!r} must be an object")
        try:
            params = SamplingParams(**raw)
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError(f"bad sampling params {raw!r}: {exc}") from exc
        # one small body could ask for requests x n completions at once, each holding its video's
        # patches (n=6000 of one 600 KB request took 3.9 GB), or for hours of tokens
        if len(requests) * params.n > MAX_COMPLETIONS:
            raise InvalidRequestError(
                f"the call asks for {len(requests)} requests x n={params.n} = "
                f"{len(requests) * params.n} completions, over this server's {MAX_COMPLETIONS} "
                "a call; send fewer requests or samples per call"
            )
        if params.max_new_tokens > MAX_NEW_TOKENS:
            raise InvalidRequestError(
                f"max_new_tokens={params.max_new_tokens} is over this server's {MAX_NEW_TOKENS} "
                "a completion; a critic's answer needs far fewer"
            )
        if hasattr(self.engine, "check_length"):  # before it holds the batcher for minutes
            self.engine.check_length(requests, params.max_new_tokens)
        # Seeded sampling is only reproducible when the call runs alone: other calls in a batch
        # would draw from the same generator. Greedy and unseeded calls batch freely.
        alone = params.seed is not None and params.temperature > 0
        key = ("generate", params, object() if alone else None)
        future = self.batcher.submit("generate", requests, key, {"params": params})
        return {"completions": self._wait(future)}

    def _wait(self, future: Future):
        try:
            return future.result(timeout=self.timeout_s)
        except FutureTimeout as exc:
            if future.cancel():  # still queued: it will not run for nobody
                raise CallTimeoutError(
                    f"not started within the server's timeout_s={self.timeout_s:g} s", False
                ) from exc
            if future.done():  # it finished as the wait ended
                return future.result()
            raise CallTimeoutError(
                f"no result within the server's timeout_s={self.timeout_s:g} s (the server is "
                "busy, or the call is large)",
                True,
            ) from exc


def _without_dtypes(value: Any) -> Any:
    """A model config without its ``dtype`` / ``torch_dtype`` entries, at any depth."""
    if isinstance(value, dict):
        return {
            k: _without_dtypes(v) for k, v in value.items() if k not in ("dtype", "torch_dtype")
        }
    return value


def _tokenizer_files(tokenizer) -> dict[str, str]:
    """The tokenizer as ``save_pretrained`` writes it: file name → base64 content."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return {
            p.name: base64.b64encode(p.read_bytes()).decode()
            for p in Path(tmp).iterdir()
            if p.is_file()
        }


def _port(text: str) -> int:
    """``--port``: an integer in [0, 65535]."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port; use 0-65535 (0: a free one)")
    return port


def _at_least(low: float, kind: type = float):
    """An argparse type: a ``kind`` number >= ``low``."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not is_number(value) or value < low:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what} >= {low:g}")
        return value

    return parse


def _above_zero(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not is_number(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number > 0")
    return value


def _prog() -> str:
    """The command as it was run: ``viscritic-serve`` (the installed script) or ``python -m
    rollout.serve``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name.startswith("viscritic-serve") else "python -m rollout.serve"


def _start(args: argparse.Namespace) -> CriticServer | int:
    """The server the command line asks for, its model loaded, or 2 with the error printed."""
    from rollout.imports import MissingExtraError

    try:
        from rollout.cache import VideoEmbeddingCache
        from rollout.checkpoint import ModelLoadError, load_checkpoint
        from rollout.hf import HFEngine
    except MissingExtraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        try:
            model, tokenizer = load_checkpoint(args.model, dtype=args.dtype, device=args.device)
        except OSError as exc:  # it read "cannot listen on host:port"
            raise ModelLoadError(f"cannot read --model {args.model}: {exc}") from exc
        engine = HFEngine(
            model,
            tokenizer.pad_token_id,
            tokenizer.eos_token_id,
            cache=None if args.no_cache else VideoEmbeddingCache(max_mb=args.cache_mb),
        )
        server = CriticServer(
            engine,
            tokenizer,
            host=args.host,
            port=args.port,
            max_batch=args.max_batch,
            max_wait_ms=args.max_wait_ms,
            max_body_mb=args.max_body_mb,
            timeout_s=args.timeout_s,
            idle_timeout_s=args.idle_timeout_s,
        )
    except (
        ModelLoadError,
        MissingExtraError,
        ValueError,
        RuntimeError,
        AttributeError,
        TypeError,
    ) as exc:
        # a bad --model, --device (no CUDA here) or --dtype
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    return server


class _CurrentStderr:
    """``sys.stderr`` as it is when a record is written (a handler bound to the one at its start
    wrote into a stream since closed: a test's capture, a redirected run)."""

    def write(self, text: str) -> None:
        sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _log_to_stderr() -> None:
    """The server's own log (``rollout.serve``: clients that left, batches that failed) on
    stderr at INFO. Not the root logger's level: that turned on every library's INFO records
    (torch's among them) in the server's output."""
    log = logging.getLogger("rollout.serve")
    if not log.handlers:
        handler = logging.StreamHandler(_CurrentStderr())
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """``python -m rollout.serve --model PATH``: serve a checkpoint until Ctrl-C / SIGTERM."""
    parser = argparse.ArgumentParser(
        prog=_prog(),
        description="Serve a Qwen2.5-VL or Qwen3-VL critic checkpoint to many env workers.",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="checkpoint directory (save_pretrained), or a shipped critic's name (viscritic-small)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: all)")
    parser.add_argument("--port", type=_port, default=8000, help="port; 0 picks a free one")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--dtype", default=None, help="float32, bfloat16, ... (default: checkpoint's)"
    )
    parser.add_argument(
        "--max-batch", type=_at_least(1, int), default=16, help="most requests per forward pass"
    )
    parser.add_argument(
        "--max-wait-ms", type=_at_least(0), default=5.0, help="wait for a batch to fill"
    )
    parser.add_argument(
        "--max-body-mb", type=_above_zero, default=512.0, help="largest call accepted"
    )
    parser.add_argument(
        "--timeout-s",
        type=_above_zero,
        default=240.0,
        help="longest a call may wait for its result (then a 503 if it never started, a 504 if "
        "it was running); keep it shorter than the clients' timeout_s (300 s by default)",
    )
    parser.add_argument(
        "--idle-timeout-s",
        type=_above_zero,
        default=60.0,
        help="close a connection silent this long (a request half sent, an idle keep-alive)",
    )
    parser.add_argument("--no-cache", action="store_true", help="no video-embedding cache")
    parser.add_argument(
        "--cache-mb",
        type=_above_zero,
        default=1024.0,
        help="most megabytes of video embeddings the cache keeps, where the model is (a GPU's "
        "memory for a model there); the least recently used go first",
    )
    args = parser.parse_args(argv)
    _log_to_stderr()
    try:
        server = _start(args)
    except KeyboardInterrupt:  # Ctrl-C during minutes of imports and weights loading
        print("critic server: stopped before it served (interrupted while loading)",
              file=sys.stderr, flush=True)  # fmt: skip
        return 130
    if not isinstance(server, CriticServer):
        return server  # the exit status of a start that failed, its error printed

    stop_on_sigterm()
    print(
        f"critic server on {server.url} (model {args.model}, max batch {args.max_batch})",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
        server.batcher.close(timeout=5.0)
    if server.batcher.alive:
        # a batch still runs (a long generation): the interpreter's exit under it aborted
        # ("terminate called without an active exception", exit 134) after a 30 s wait
        print(
            "critic server: stopped with a batch still running; its callers get no answer",
            file=sys.stderr,
            flush=True,
        )
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
