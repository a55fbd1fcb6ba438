"""The critic server's HTTP side: one request handler per server (:func:`handler_for`), which
turns each outcome of a call into its status and message, and the listening socket's class
(:func:`server_class`). :class:`rollout.serve.CriticServer` decides what a call does; this module
decides what the client hears: 404 for an unknown endpoint, 411 / 413 for a body without a length
or over ``--max-body-mb``, 409 for calls built for another model, 400 for a bad request, 503 for a
call that never started in time (retried), 504 for one that was running (not retried), 500 for an
engine error or a bug (the server keeps serving)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from rollout.engine import EngineError, InvalidRequestError
from rollout.wire import MODEL_HEADER

if TYPE_CHECKING:
    from rollout.serve import CriticServer

log = logging.getLogger("rollout.serve")  # the server's log: one place to read a server's story


class UnknownEndpointError(LookupError):
    """A POST to a path the server does not serve."""


class CallTimeoutError(TimeoutError):
    """A call's result did not come within the server's ``timeout_s``.

    Attributes:
        started: whether the engine had started on it (it runs to its end regardless).
    """

    def __init__(self, message: str, started: bool) -> None:
        super().__init__(message)
        self.started = started


def _cache_stats(server: CriticServer) -> dict[str, float | int]:
    """The video-embedding cache's size and use, for ``/v1/health`` (none without a cache)."""
    cache = getattr(server.engine, "cache", None)
    if cache is None:
        return {}
    return {"cache_videos": len(cache), "cache_mb": round(cache.nbytes / 2**20, 3),
            "cache_hits": cache.hits, "cache_misses": cache.misses}  # fmt: skip


def handler_for(server: CriticServer) -> type[BaseHTTPRequestHandler]:
    """The request handler class of ``server``: GETs read its health and model, POSTs go to
    :meth:`~rollout.serve.CriticServer.handle` and each way a call can end becomes its status."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive for clients that ask for it
        timeout = server.idle_timeout_s  # each read and write on the connection

        def log_message(self, format: str, *args) -> None:
            log.debug("%s " + format, self.address_string(), *args)

        def _send(self, status: HTTPStatus, payload: dict) -> None:
            data = json.dumps(payload, allow_nan=False).encode()  # NaN is no JSON
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up: nobody to tell
                log.info("%s left before its answer (%d)", self.address_string(), int(status))
                self.close_connection = True

        def _error(self, status: HTTPStatus, message: str) -> None:
            self._send(status, {"error": message, "status": int(status)})

        def do_GET(self) -> None:
            if self.path == "/v1/health":
                alive = server.batcher.alive
                status = HTTPStatus.OK if alive else HTTPStatus.SERVICE_UNAVAILABLE
                self._send(status, {"status": "ok" if alive else "batcher down",
                                    **asdict(server.batcher.stats), **_cache_stats(server)})  # fmt: skip
            elif self.path == "/v1/model":
                self._send(HTTPStatus.OK, server.model_info)
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no such endpoint: GET {self.path}")

        def do_POST(self) -> None:
            length = self.headers.get("Content-Length")
            # not "²", nor more digits than int() reads (4,300) or any body could have
            if length is None or not (length.isascii() and length.isdigit()) or len(length) > 20:
                self._error(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length header")
                self.close_connection = True
                return
            if int(length) > server.max_body:
                self._error(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"body of {int(length)} bytes exceeds the server's {server.max_body} "
                    "(split the batch, or start the server with a larger --max-body-mb)",
                )
                self.close_connection = True
                return
            body = self.rfile.read(int(length))
            built_for = self.headers.get(MODEL_HEADER)
            if built_for is not None and built_for != server.model_id:
                self._error(
                    HTTPStatus.CONFLICT,
                    f"this server now serves another model (id {server.model_id}) than the one "
                    f"the client read from it (id {built_for}): it restarted on another "
                    "checkpoint; make the critic again (make_critic(url)) to read the new one",
                )
                return
            try:
                self._send(HTTPStatus.OK, server.handle(self.path, body))
            except UnknownEndpointError:
                self._error(HTTPStatus.NOT_FOUND, f"no such endpoint: POST {self.path}")
            except InvalidRequestError as exc:
                self._error(HTTPStatus.BAD_REQUEST, str(exc))
            except CallTimeoutError as exc:
                if exc.started:  # it runs to its end: the same call again would queue behind it
                    self._error(
                        HTTPStatus.GATEWAY_TIMEOUT,
                        f"the call was still running: {exc}; send smaller calls, add servers, or "
                        "start the server with a longer --timeout-s (and the clients with a "
                        "longer timeout_s still)",
                    )
                else:
                    self._error(HTTPStatus.SERVICE_UNAVAILABLE, f"the server is overloaded: {exc}")
            except EngineError as exc:
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc))
            except Exception as exc:  # a bug must cost one call, not the server
                log.exception("unexpected error on POST %s", self.path)
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}")

    return Handler


def server_class(host: str, port: int) -> type[ThreadingHTTPServer]:
    """A threading HTTP server of ``host``'s address family (IPv6 for a literal such as ``::1``;
    the stdlib's class is IPv4 only)."""
    import socket

    # an IPv6 literal (::1, ::) alone: a name such as localhost stays IPv4, where clients of
    # http://127.0.0.1:port reach it (some systems resolve localhost to ::1 first)
    family = socket.AF_INET6 if ":" in (host or "") else socket.AF_INET
    return type("CriticHTTPServer", (ThreadingHTTPServer,), {"address_family": family})
