"""The critic server and its client when something goes wrong: one client's bad call among
others, a call slower than the server's timeout, a batch past ``max_batch``, an address that is
not a critic server, bad options, and the engine's edge cases (greedy with n > 1, an empty
batch). A checkpoint whose files are incomplete or do not belong together: test_checkpoint.py."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from critic import prompts
from rollout.batcher import DynamicBatcher
from rollout.engine import (
    EngineError,
    InvalidRequestError,
    Request,
    SamplingParams,
    ServerUnavailableError,
)
from rollout.hf import HFEngine
from rollout.remote import RemoteEngine
from rollout.serve import CriticServer

DIGITS = list(range(10, 20))


def _request(tokenizer, seed: int = 0, frames: int = 1) -> Request:
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 256, (frames, 56, 56, 3), dtype=np.uint8)
    return Request(**prompts.encode(prompts.stepwise_progress("reach", video, None), tokenizer))


class _Recording:
    """A stand-in engine: scores each request with its first token id, records each batch,
    fails a batch holding a request whose first id is ``poison``, sleeps ``delay_s`` a call."""

    def __init__(self, poison: int | None = None, delay_s: float = 0.0, short: bool = False):
        self.batches: list[int] = []
        self.poison, self.delay_s, self.short = poison, delay_s, short

    def score(self, requests, candidates, prefix=()):
        self.batches.append(len(requests))
        time.sleep(self.delay_s)
        firsts = [int(r.input_ids[0]) for r in requests]
        if self.poison in firsts:
            raise TypeError("slice indices must be integers")
        rows = torch.tensor(firsts, dtype=torch.float32)[:, None].repeat(1, len(candidates))
        return rows[:-1] if self.short else rows


def _plain(first: int, length: int = 3) -> Request:
    ids = torch.tensor([first] + [1] * (length - 1))
    return Request(ids, torch.zeros_like(ids))


def test_a_bad_call_batched_with_good_ones_fails_alone():
    engine = _Recording(poison=666)
    batcher = DynamicBatcher(engine, max_batch=16, max_wait_ms=300)
    try:
        good = batcher.submit("score", [_plain(5), _plain(6)], ("score",), {"candidates": [1]})
        bad = batcher.submit("score", [_plain(666)], ("score",), {"candidates": [1]})
        later = batcher.submit("score", [_plain(7)], ("score",), {"candidates": [1]})
        assert good.result(timeout=30) == [[5.0], [6.0]]
        assert later.result(timeout=30) == [[7.0]]
        with pytest.raises(EngineError, match="the engine failed: TypeError: slice indices"):
            bad.result(timeout=30)
    finally:
        batcher.close()
    assert engine.batches == [4, 2, 1, 1]  # merged, then each call alone
    assert batcher.stats.calls == 3 and batcher.stats.requests == 4


def _score(batcher, *firsts: int):
    return batcher.submit("score", [_plain(f) for f in firsts], ("score",), {"candidates": [1]})


def test_a_bad_call_merged_with_one_good_call_fails_alone_and_is_counted():
    # two calls merged (not only three or more) are each run again alone when the batch fails
    engine = _Recording(poison=666)
    batcher = DynamicBatcher(engine, max_batch=16, max_wait_ms=300)
    try:
        good, bad = _score(batcher, 5), _score(batcher, 666)
        assert good.result(timeout=30) == [[5.0]]
        with pytest.raises(EngineError):
            bad.result(timeout=30)
    finally:
        batcher.close()
    assert engine.batches == [2, 1, 1]
    assert batcher.stats.failed_batches == 2  # the merged batch and the bad call's own


def test_calls_that_fill_max_batch_exactly_are_merged_and_the_largest_batch_is_kept():
    engine = _Recording()
    batcher = DynamicBatcher(engine, max_batch=4, max_wait_ms=300)
    try:
        assert [c.result(timeout=30) for c in (_score(batcher, 1, 2, 3), _score(batcher, 4))] \
            == [[[1.0], [2.0], [3.0]], [[4.0]]]  # fmt: skip
        _score(batcher, 5).result(timeout=30)  # a smaller batch after it
    finally:
        batcher.close()
    assert engine.batches == [4, 1]
    assert batcher.stats.largest_batch == 4


def test_a_call_that_fills_the_batch_alone_does_not_wait_for_company():
    # max_wait_ms is for a batch with room left; a full one goes at once (a 10 s wait here)
    batcher = DynamicBatcher(_Recording(), max_batch=2, max_wait_ms=10_000)
    try:
        start = time.monotonic()
        assert _score(batcher, 1, 2).result(timeout=30) == [[1.0], [2.0]]
        assert time.monotonic() - start < 5
    finally:
        batcher.close()


def test_max_batch_is_a_cap_on_merged_calls():
    engine = _Recording()
    batcher = DynamicBatcher(engine, max_batch=4, max_wait_ms=300)
    try:
        calls = [
            batcher.submit("score", [_plain(i) for i in range(n)], ("score",), {"candidates": [1]})
            for n in (3, 4, 1, 6)  # a single call past the cap still runs whole
        ]
        assert [len(c.result(timeout=30)) for c in calls] == [3, 4, 1, 6]
    finally:
        batcher.close()
    assert engine.batches == [3, 4, 1, 6]
    assert max(engine.batches[:3]) <= 4


def test_an_engine_answering_too_few_rows_fails_the_call():
    batcher = DynamicBatcher(_Recording(short=True), max_batch=4, max_wait_ms=0)
    try:
        call = batcher.submit("score", [_plain(1), _plain(2)], ("score",), {"candidates": [1]})
        with pytest.raises(EngineError, match="it answered 1 of 2 requests"):
            call.result(timeout=30)
    finally:
        batcher.close()


def test_a_call_still_running_at_the_servers_timeout_is_not_sent_again(tiny_model):
    _, tokenizer = tiny_model
    engine = _Recording(delay_s=1.0)
    with CriticServer(engine, tokenizer, timeout_s=0.3, max_wait_ms=0) as server:
        remote = RemoteEngine(server.url, retries=4, backoff_s=0.05)
        with pytest.raises(ServerUnavailableError) as err:
            remote.score([_request(tokenizer)], DIGITS)
        time.sleep(1.2)  # let the one run end
    assert engine.batches == [1]  # run once, not five times
    assert str(err.value) == (
        f"the critic server at {server.url} gave up waiting for POST /v1/score: the call was "
        "still running: no result within the server's timeout_s=0.3 s (the server is busy, or the "
        "call is large); send smaller calls, add servers, or start the server with a longer "
        "--timeout-s (and the clients with a longer timeout_s still)"
    )


def test_a_silent_connection_is_closed_after_the_idle_timeout():
    # a client machine that died mid-request (or a proxy holding connections half open) left a
    # server thread and a socket each, for good: 20 such clients, 20 threads
    import socket

    with CriticServer(_Recording(), idle_timeout_s=0.3) as server:
        host, port = server.httpd.server_address[:2]
        for sent in (b"POST /v1/score HTTP/1.1\r\nContent-Length: 100\r\n\r\n{", b""):
            with socket.create_connection((host, port), timeout=10) as sock:
                sock.sendall(sent)  # half a call, or nothing
                started = time.monotonic()
                assert sock.recv(1024) == b""  # closed by the server, not left waiting
                assert time.monotonic() - started < 5


def test_a_content_length_that_is_not_ascii_digits_is_answered_411():
    # "²" passes str.isdigit and not int(): the handler raised, the client got no answer at all
    import socket

    with CriticServer(_Recording()) as server:
        host, port = server.httpd.server_address[:2]
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(b"POST /v1/score HTTP/1.1\r\nContent-Length: \xb2\r\n\r\nab")
            assert sock.recv(1024).startswith(b"HTTP/1.1 411 ")
        # more digits than int() reads (4,300): a ValueError, and no answer again
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(b"POST /v1/score HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n")
            assert sock.recv(1024).startswith(b"HTTP/1.1 411 ")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timeout_s": "30"}, r"^timeout_s='30' must be a number of seconds > 0$"),
        ({"idle_timeout_s": 0}, r"^idle_timeout_s=0 must be a number of seconds > 0$"),
        ({"max_body_mb": -1}, r"^max_body_mb=-1 must be a number of megabytes > 0$"),
        ({"max_body_mb": 1e-9}, r"^max_body_mb=1e-09 must be a number of megabytes > 0$"),  # 0 B
        ({"max_body_mb": float("nan")}, r"^max_body_mb=nan must be a number of megabytes > 0$"),
    ],
)
def test_server_options_are_checked(options, message):
    with pytest.raises(ValueError, match=message):
        CriticServer(_Recording(), **options)


def test_a_server_whose_port_is_taken_lets_its_batcher_and_engine_go():
    import gc
    import weakref

    taken = CriticServer(_Recording())
    engine = _Recording()
    alive = weakref.ref(engine)
    threads = threading.active_count()
    try:
        with pytest.raises(OSError):
            CriticServer(engine, port=taken.httpd.server_address[1])
    finally:
        taken.stop()
    del engine
    gc.collect()
    # the batcher's thread had held the engine (a real checkpoint: the whole model) for good
    assert alive() is None and threading.active_count() <= threads


def test_the_batch_sizes_health_reads_are_never_changed_in_place():
    # /v1/health iterates batch_sizes on its own thread: a key added meanwhile raised there
    batcher = DynamicBatcher(_Recording(), max_wait_ms=0)
    try:
        batcher.submit("score", [_plain(5)], ("score",), {"candidates": [1]}).result(timeout=30)
        seen = batcher.stats.batch_sizes
        batcher.submit("score", [_plain(5)] * 2, ("score",), {"candidates": [1]}).result(timeout=30)
    finally:
        batcher.close()
    assert seen == {1: 1} and batcher.stats.batch_sizes == {1: 1, 2: 1}


class _Foreign(http.server.BaseHTTPRequestHandler):
    """Another service at the address: answers whatever its class attribute says."""

    answer: tuple[int, bytes] = (200, b"<html>hello</html>")
    model_ok = True  # /v1/model as a critic server answers it (the calls after it go wrong)
    delay_s = 0.0  # how long it takes to answer, once connected

    def _reply(self):
        time.sleep(self.delay_s)
        if self.command == "POST":
            self.rfile.read(int(self.headers["Content-Length"]))
        status, body = self.answer
        if self.path == "/v1/model" and self.model_ok:
            status, body = 200, b'{"tokenizer": {}, "needs_videos": false}'

        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _reply

    def log_message(self, *args):
        pass


@pytest.fixture
def foreign():
    _Foreign.model_ok, _Foreign.delay_s = True, 0.0
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Foreign)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize(
    ("status", "body", "says"),
    [
        (200, b"<html>hello</html>", "its answer is not JSON"),
        (200, b"\xff\xfe", "its answer is not JSON"),
        (200, b"[1, 2]", "its answer has no 'probs'"),
        (200, b'{"result": 1}', "its answer has no 'probs'"),
        (200, b'{"probs": [[0.5, 0.5]]}', r"it gave probs of shape \(1, 2\) for 2 requests and 2"),
        (200, b'{"probs": "x"}', "its probs are not a table"),
    ],
)
def test_an_address_that_is_not_a_critic_server_is_named(tiny_model, foreign, status, body, says):
    _, tokenizer = tiny_model
    _Foreign.answer = (status, body)
    url = f"http://127.0.0.1:{foreign.server_address[1]}"
    remote = RemoteEngine(url, retries=0)
    with pytest.raises(EngineError, match=f"^{url}/v1/score did not answer as a critic server "
                       f"does: {says}") as err:  # fmt: skip
        remote.score([_request(tokenizer, 0), _request(tokenizer, 1)], [10, 11])
    assert not isinstance(err.value, InvalidRequestError)


def test_a_short_generate_answer_and_a_foreign_404_are_named(tiny_model, foreign):
    _, tokenizer = tiny_model
    url = f"http://127.0.0.1:{foreign.server_address[1]}"
    remote = RemoteEngine(url, retries=0)
    _Foreign.answer = (200, json.dumps({"completions": [[[1, 2]]]}).encode())
    with pytest.raises(EngineError, match="it gave 1 completion groups for 3 requests of n=1"):
        remote.generate([_request(tokenizer, i) for i in range(3)], SamplingParams(n=1))
    _Foreign.answer, _Foreign.model_ok = (200, b"[]"), False
    with pytest.raises(
        EngineError, match=r"/v1/model did not answer .*: its answer has no 'tokenizer'"
    ):
        RemoteEngine(url, retries=0).model_info()
    _Foreign.answer = (404, b"Not Found")
    with pytest.raises(EngineError, match=f"^{url}/v1/health: no such endpoint .*is it a critic"):
        RemoteEngine(url, retries=0).health()


def test_client_addresses_and_ids_are_checked():
    assert RemoteEngine("http://127.0.0.1:8000/\n").url == "http://127.0.0.1:8000"
    with pytest.raises(ValueError, match=r"^url='http://127.0.0.1:abc' is not a server address"):
        RemoteEngine("http://127.0.0.1:abc")
    with pytest.raises(ValueError, match="is not a server address; give http://host:port"):
        RemoteEngine("http://")
    remote = RemoteEngine("http://127.0.0.1:1", retries=0)
    with pytest.raises(InvalidRequestError, match=r"^candidates=\[2.9, '7', True\] must be a list"):
        remote.score([], [2.9, "7", True])
    with pytest.raises(InvalidRequestError, match=r"^prefix='ab' must be a list of token ids"):
        remote.score([], [1], prefix="ab")


def test_a_host_that_does_not_connect_is_retried_then_named_unreachable(foreign):
    # a listening socket whose accept queue is full drops new connections' SYNs, as a host that
    # is down or firewalled does: the client waited its whole timeout_s (300 s by default) and
    # then called the server overloaded, with no retry
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(0)
    port = silent.getsockname()[1]
    queued = []
    for _ in range(3):  # fill the queue; these are never accepted
        queued.append(socket.socket())
        queued[-1].setblocking(False)
        queued[-1].connect_ex(("127.0.0.1", port))
    try:
        remote = RemoteEngine(f"http://127.0.0.1:{port}", timeout_s=60, retries=1, backoff_s=0,
                              connect_timeout_s=0.3)  # fmt: skip
        started = time.monotonic()
        with pytest.raises(ServerUnavailableError, match=(
            r"did not answer GET /v1/health after 2 tries over .* \(last: URLError: no "
            r"connection within connect_timeout_s=0.3 s\)\. Start it with")):  # fmt: skip
            remote.health()
        assert time.monotonic() - started < 10
    finally:
        for sock in [*queued, silent]:
            sock.close()
    # once connected, an answer may take longer than the connection did
    _Foreign.answer, _Foreign.delay_s = (200, b'{"status": "ok"}'), 0.5
    url = f"http://127.0.0.1:{foreign.server_address[1]}"
    assert RemoteEngine(url, retries=0, connect_timeout_s=0.1).health() == {"status": "ok"}
    with pytest.raises(ValueError, match=r"connect_timeout_s=0 must be a number of seconds > 0"):
        RemoteEngine(url, connect_timeout_s=0)


def test_the_local_engine_edge_cases(tiny_model):
    model, tokenizer = tiny_model
    engine = HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id)
    assert engine.score([], DIGITS).shape == (0, 10)
    request = _request(tokenizer)
    twice = engine.generate(
        [request, request], SamplingParams(n=3, temperature=0, max_new_tokens=4)
    )
    once = engine.generate([request], SamplingParams(n=1, temperature=0, max_new_tokens=4))
    assert twice == [once[0] * 3, once[0] * 3]  # greedy: one completion, n times
    float_grid = Request(
        request.input_ids, request.mm_token_type_ids, request.pixel_values_videos,
        request.video_grid_thw.float(),
    )  # fmt: skip
    with pytest.raises(InvalidRequestError, match="video_grid_thw must be int64 or int32"):
        engine.check_request(float_grid)


def test_bfloat16_patches_go_over_the_wire(tiny_model):
    model, tokenizer = tiny_model
    engine = HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id)
    request = _request(tokenizer, 3)
    bf16 = Request(request.input_ids, request.mm_token_type_ids,
                   request.pixel_values_videos.bfloat16(), request.video_grid_thw)  # fmt: skip
    with CriticServer(engine, tokenizer) as server:
        served = RemoteEngine(server.url).score([bf16], DIGITS)
    torch.testing.assert_close(served, engine.score([bf16], DIGITS), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--port", "70000"], "argument --port: '70000' is not a port; use 0-65535"),
        (["--port", "x"], "argument --port: 'x' is not a port"),
        (["--device", "gpu"], "error: device='gpu' is not a device; use cpu, cuda or cuda:<index>"),
        (["--dtype", "bogus"], "error: dtype='bogus' is not a torch dtype"),
        (["--max-body-mb", "nan"], "argument --max-body-mb: 'nan' is not a number > 0"),
        (["--timeout-s", "0"], "argument --timeout-s: '0' is not a number > 0"),
        (["--cache-mb", "0"], "argument --cache-mb: '0' is not a number > 0"),
        (["--max-batch", "0"], "argument --max-batch: '0' is not an integer >= 1"),
        # a preset is built in-process, not served: it was looked up on the hub for 26 s
        (["--model", "tiny"], "error: cannot load critic model tiny: no folder tiny on this"),
    ],
)
def test_cli_bad_options_are_messages(args, says):
    done = subprocess.run(
        [sys.executable, "-m", "rollout.serve", "--model", "critic/weights/viscritic-small",
         "--port", "0", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert says in done.stderr


def test_a_model_that_cannot_be_read_is_not_called_a_port_problem(monkeypatch, capsys):
    # any OSError from loading read "cannot listen on 127.0.0.1:8000"
    import rollout.checkpoint
    from rollout.serve import main

    def unreadable(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(rollout.checkpoint, "load_checkpoint", unreadable)
    assert main(["--model", "/ckpt/critic", "--port", "0"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: cannot read --model /ckpt/critic: [Errno 5] Input/output error"
    )


def test_ctrl_c_while_the_model_loads_is_a_message_and_libraries_keep_their_log_levels(
    monkeypatch, capsys
):
    import logging

    import rollout.checkpoint
    from rollout.serve import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rollout.checkpoint, "load_checkpoint", interrupted)
    log = logging.getLogger("rollout.serve")
    before = (list(log.handlers), log.level, log.propagate, logging.getLogger().level)
    try:
        try:
            assert main(["--model", "/ckpt/critic", "--port", "0"]) == 130
        except KeyboardInterrupt:  # not left to stop the whole test session
            pytest.fail("Ctrl-C while the model loads reached the user as a traceback")
        assert capsys.readouterr().err.strip() == (
            "critic server: stopped before it served (interrupted while loading)"
        )
        # the server's own records at INFO; the root logger (so torch's, transformers') untouched
        assert log.isEnabledFor(logging.INFO) and logging.getLogger().level == before[3]
        assert not logging.getLogger("torch").isEnabledFor(logging.INFO)
        # its records go to stderr as it is when written (bound to the one at the start, they
        # went into a stream since closed: a test's capture)
        import io

        later = io.StringIO()
        monkeypatch.setattr(sys, "stderr", later)
        log.warning("a client left")
        assert later.getvalue().endswith("WARNING a client left\n")
    finally:
        log.handlers[:], log.propagate = before[0], before[2]
        log.setLevel(before[1])
