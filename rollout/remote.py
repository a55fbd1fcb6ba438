"""A remote engine: the :class:`~rollout.engine.Engine` interface over a critic server's HTTP API.

Env workers build and encode their requests locally and let one server (``python -m
rollout.serve``) batch them on one model. A call that the server rejects raises
:class:`~rollout.engine.InvalidRequestError` with the server's message (no retry: it would fail
again). A server that is down, restarting or overloaded is retried with exponential back-off a
bounded number of times, then :class:`~rollout.engine.ServerUnavailableError` says so: a reward is
never silently made up. A call the server was still running when its own time ran out (a 504) is
not sent again, and an answer that is not the server's (another service at that address, a
reply with too few rows) is an :class:`~rollout.engine.EngineError` naming the address.

Connecting has its own short time limit (``connect_timeout_s``): a host that does not answer
at all (down, a wrong address, a firewall dropping packets) is retried like a refused
connection and reported as unreachable, where waiting ``timeout_s`` for it had blocked for
minutes and then called the server overloaded.
"""

from __future__ import annotations

import functools
import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

from rollout.checks import is_int, is_number
from rollout.engine import (
    Engine,
    EngineError,
    InvalidRequestError,
    Request,
    SamplingParams,
    ServerUnavailableError,
)
from rollout.wire import MODEL_HEADER, encode_requests

_TRANSIENT = (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException)


class _ConnectTimeout(ConnectionError):
    """No connection within ``connect_timeout_s``: retried, not read as a slow answer."""


class _Connect:
    """Mix-in for ``http.client`` connections: connect within ``connect_timeout``, then wait
    for the answer as long as the call's own timeout (urllib has one timeout for both)."""

    def __init__(self, *args: Any, connect_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connect_timeout = connect_timeout

    def connect(self) -> None:
        answer_timeout = self.timeout
        self.timeout = min(self.connect_timeout, answer_timeout)
        try:
            super().connect()
        except TimeoutError as exc:
            raise _ConnectTimeout(
                f"no connection within connect_timeout_s={self.timeout:g} s"
            ) from exc
        finally:
            self.timeout = answer_timeout
        self.sock.settimeout(answer_timeout)


class _HTTPConnection(_Connect, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_Connect, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, connect_timeout: float) -> None:
        super().__init__()
        self._connection = functools.partial(_HTTPConnection, connect_timeout=connect_timeout)

    def http_open(self, req):
        return self.do_open(self._connection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, connect_timeout: float) -> None:
        super().__init__()
        self._connection = functools.partial(_HTTPSConnection, connect_timeout=connect_timeout)

    def https_open(self, req):
        return self.do_open(self._connection, req, context=self._context)


class RemoteEngine(Engine):
    """Talks to a critic server.

    Args:
        url: the server, ``http://host:port``.
        timeout_s: how long one HTTP call may take (a batch of generations can be slow); longer
            than the server's own ``--timeout-s`` (240 s by default), so that a call the server
            gives up on is its 504, not this client's guess.
        retries: extra tries after a failed connection or a 503.
        backoff_s: first wait between tries; doubles each time, capped at 2 s.
        connect_timeout_s: how long to wait for a connection (each try); a host that does not
            answer within it is retried, then reported unreachable.

    Example:
        >>> engine = RemoteEngine("http://127.0.0.1:8000")  # doctest: +SKIP
        >>> engine.score(requests, candidates=digit_ids)  # doctest: +SKIP
    """

    def __init__(
        self,
        url: str,
        timeout_s: float = 300.0,
        retries: int = 4,
        backoff_s: float = 0.25,
        connect_timeout_s: float = 10.0,
    ) -> None:
        if not isinstance(url, str) or not url.strip().lower().startswith(("http://", "https://")):
            raise ValueError(f"url={url!r} must start with http:// or https://")
        url = url.strip()
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018 - raises on a port that is not a number in 0-65535
        except ValueError as exc:
            raise ValueError(f"url={url!r} is not a server address ({exc})") from exc
        if not parts.hostname or any(c.isspace() for c in url):
            raise ValueError(f"url={url!r} is not a server address; give http://host:port")
        extra = [
            name
            for name, value in (("a path", parts.path.strip("/")),
                                ("a query", parts.query or "?" in url),
                                ("a fragment", parts.fragment or "#" in url),
                                ("credentials", parts.username or parts.password))
            if value
        ]  # fmt: skip
        if extra:  # the endpoints were appended to them: .../v1/v1/model, /?x=1/v1/model
            raise ValueError(
                f"url={url!r} has {' and '.join(extra)}; a critic server is addressed by "
                f"http://host:port alone, e.g. {parts.scheme}://{parts.netloc.rpartition('@')[2]}"
            )
        if not is_int(retries) or retries < 0:
            raise ValueError(f"retries={retries!r} must be an integer >= 0")
        if not is_number(timeout_s) or timeout_s <= 0:
            raise ValueError(f"timeout_s={timeout_s!r} must be a number of seconds > 0")
        if not is_number(backoff_s) or backoff_s < 0:
            raise ValueError(f"backoff_s={backoff_s!r} must be a number of seconds >= 0")
        if not is_number(connect_timeout_s) or connect_timeout_s <= 0:
            raise ValueError(
                f"connect_timeout_s={connect_timeout_s!r} must be a number of seconds > 0"
            )
        self.url = url.rstrip("/")
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.connect_timeout_s = float(connect_timeout_s)
        self._opener = urllib.request.build_opener(
            _HTTPHandler(self.connect_timeout_s), _HTTPSHandler(self.connect_timeout_s)
        )
        self._info: dict | None = None

    @property
    def needs_videos(self) -> bool:
        """Whether the served engine wants raw frames along with the patches."""
        return bool(self.model_info().get("needs_videos", False))

    def model_info(self) -> dict:
        """The served model's config and tokenizer files (fetched once)."""
        if self._info is None:
            info = self._call("GET", "/v1/model")
            self._answer(info, "tokenizer", "/v1/model")  # what every critic server sends
            self._info = info
        return self._info

    def health(self) -> dict:
        """``{"status": "ok", ...batching stats}`` from the server."""
        health = self._call("GET", "/v1/health")
        self._answer(health, "status", "/v1/health")
        return health

    def score(
        self, requests: Sequence[Request], candidates: Sequence[int], prefix: Sequence[int] = ()
    ):
        import torch

        for name, ids in (("candidates", candidates), ("prefix", prefix)):
            if isinstance(ids, (str, bytes)) or not all(is_int(i) for i in ids):
                raise InvalidRequestError(f"{name}={ids!r} must be a list of token ids")
        if not requests:
            return torch.zeros((0, len(candidates)))
        header = {"candidates": [int(c) for c in candidates], "prefix": [int(p) for p in prefix]}
        body = self._sized(encode_requests(requests, header, videos=self.needs_videos))
        probs = self._answer(self._call("POST", "/v1/score", body), "probs", "/v1/score")
        try:
            out = torch.tensor(probs, dtype=torch.float32)
        except (TypeError, ValueError) as exc:
            raise self._foreign("/v1/score", f"its probs are not a table ({exc})") from exc
        if not bool(torch.isfinite(out).all()):
            raise self._foreign("/v1/score", "its probs are not all finite numbers")
        if tuple(out.shape) != (len(requests), len(candidates)):
            raise self._foreign(
                "/v1/score",
                f"it gave probs of shape {tuple(out.shape)} for {len(requests)} requests and "
                f"{len(candidates)} candidates",
            )
        return out

    def generate(
        self, requests: Sequence[Request], params: SamplingParams
    ) -> list[list[list[int]]]:
        if not requests:
            return []
        fields = {k: getattr(params, k) for k in SamplingParams.__dataclass_fields__}
        body = self._sized(encode_requests(requests, {"params": fields}, videos=self.needs_videos))
        path = "/v1/generate"
        groups = self._answer(self._call("POST", path, body), "completions", path)
        if (
            not isinstance(groups, list)
            or len(groups) != len(requests)
            or not all(isinstance(g, list) and len(g) == params.n for g in groups)
            or not all(isinstance(c, list) and all(is_int(t) for t in c) for g in groups for c in g)
        ):
            count = len(groups) if isinstance(groups, list) else type(groups).__name__
            raise self._foreign(
                path,
                f"it gave {count} completion groups for {len(requests)} requests of "
                f"n={params.n} token-id lists each",
            )
        return groups

    def _sized(self, body: bytes) -> bytes:
        """``body``, or :class:`InvalidRequestError` when it is larger than the server takes: the
        server answers such a call 413 without reading it, and the client, still sending, saw a
        broken pipe, retried and called the server down."""
        limit = self.model_info().get("max_body_bytes")
        if is_int(limit) and len(body) > limit:  # the server may have restarted with a larger
            before, self._info = self._info, None
            now = self.model_info()
            if before is not None and now.get("model_id") != before.get("model_id"):
                # calls stay built for the model read first: its id would have let calls built
                # for another model through without the server's 409
                self._info = before
                raise EngineError(
                    f"the critic server at {self.url}: this server now serves another model (id "
                    f"{now.get('model_id')}) than the one the client read from it (id "
                    f"{before.get('model_id')}): it restarted on another checkpoint; make the "
                    "critic again (make_critic(url)) to read the new one"
                )
            limit = now.get("max_body_bytes")
        if is_int(limit) and len(body) > limit:
            raise InvalidRequestError(
                f"the call's body of {len(body)} bytes exceeds the critic server's {limit} (split "
                "the batch: fewer queries per call, or start the server with a larger "
                "--max-body-mb)"
            )
        return body

    def _answer(self, payload: Any, key: str, path: str) -> Any:
        """``payload[key]``, or an :class:`EngineError` when the answer is not the server's."""
        if not isinstance(payload, dict) or key not in payload:
            raise self._foreign(path, f"its answer has no {key!r}")
        return payload[key]

    def _foreign(self, path: str, what: str) -> EngineError:
        return EngineError(
            f"{self.url}{path} did not answer as a critic server does: {what}. Is it one "
            "(python -m rollout.serve), and of this VisCritic version?"
        )

    def _call(self, method: str, path: str, body: bytes | None = None) -> Any:
        last: str = ""
        started = time.monotonic()
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.backoff_s * 2 ** (attempt - 1), 2.0))
            headers = {}
            if body is not None:
                headers["Content-Type"] = "application/octet-stream"
                if self._info is not None and "model_id" in self._info:
                    headers[MODEL_HEADER] = str(self._info["model_id"])
            request = urllib.request.Request(self.url + path, data=body, method=method,
                                             headers=headers)  # fmt: skip
            try:
                with self._opener.open(request, timeout=self.timeout_s) as response:
                    data = response.read()
            except urllib.error.HTTPError as exc:
                message = _server_message(exc)
                if exc.code == 503:
                    last = f"503 {message}"
                    continue
                if exc.code == 504:  # it ran out of time on this call, and still runs it
                    raise ServerUnavailableError(
                        f"the critic server at {self.url} gave up waiting for {method} {path}: "
                        f"{message}"
                    ) from exc
                if exc.code == 409:  # restarted on another model: these requests are not its
                    raise EngineError(f"the critic server at {self.url}: {message}") from exc
                if exc.code == 404:
                    raise EngineError(
                        f"{self.url}{path}: no such endpoint ({message}); is it a critic server "
                        "(python -m rollout.serve)?"
                    ) from exc
                if 400 <= exc.code < 500:
                    raise InvalidRequestError(
                        f"the critic server refused the call: {message}"
                    ) from exc
                raise EngineError(
                    f"the critic server failed the call ({exc.code}): {message}"
                ) from exc
            except _TRANSIENT as exc:
                reason = getattr(exc, "reason", exc)
                if isinstance(exc, TimeoutError) or isinstance(reason, TimeoutError):
                    # It may still be working on it: sending the call again would only pile on.
                    raise ServerUnavailableError(
                        f"the critic server at {self.url} did not answer {method} {path} within "
                        f"timeout_s={self.timeout_s:g} s; it is overloaded or stuck (check its log), "
                        "or give a longer timeout_s (a critic's option: {'name': URL, 'timeout_s': "
                        "600})"
                    ) from exc
                last = f"{type(exc).__name__}: {reason}"
                continue
            try:
                return json.loads(data)
            except ValueError as exc:  # HTML from a proxy, another service, bytes
                raise self._foreign(path, f"its answer is not JSON ({exc})") from exc
        raise ServerUnavailableError(
            f"the critic server at {self.url} did not answer {method} {path} after "
            f"{self.retries + 1} tries over {time.monotonic() - started:.1f} s (last: {last}). "
            "Start it with `python -m rollout.serve --model PATH`, or check the address."
        )


def _server_message(exc: urllib.error.HTTPError) -> str:
    try:
        return json.loads(exc.read())["error"]
    except (ValueError, KeyError, TypeError, OSError):
        return str(exc.reason)
