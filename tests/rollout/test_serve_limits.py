"""What a critic server refuses before it costs the server (a body too large, a compressed
archive that unpacks to hundreds of MB, a grid whose product wraps around, a generation past the
model's context, a video placeholder in a score prefix), said as a 4xx naming the fix, not a
500, a hang or a client's "server down"; and the addresses a server listens on and a client
takes."""

from __future__ import annotations

import io
import json
import socket
import urllib.error
import urllib.request
import warnings
import zipfile

import numpy as np
import pytest
import torch

from critic import prompts
from rollout.engine import EngineError, InvalidRequestError, Request, SamplingParams
from rollout.hf import MAX_GRID, HFEngine
from rollout.remote import RemoteEngine
from rollout.serve import CriticServer
from rollout.wire import decode_requests, encode_requests

DIGITS = list(range(10, 20))


def _request(tokenizer, frames: int = 1, side: int = 56) -> Request:
    video = np.random.default_rng(0).integers(0, 256, (frames, side, side, 3), dtype=np.uint8)
    return Request(**prompts.encode(prompts.stepwise_progress("reach", video, None), tokenizer))


@pytest.fixture(scope="module")
def small_server(tiny_model):
    """A server that takes bodies of at most 0.5 MB."""
    model, tokenizer = tiny_model
    engine = HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id)
    server = CriticServer(engine, tokenizer, max_body_mb=0.5).start()
    yield server, engine, tokenizer
    server.stop()


def _post(url: str, body: bytes) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=60) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())["error"]


def test_a_call_larger_than_the_server_takes_is_refused_before_it_is_sent(small_server):
    # the server answers 413 without reading the body: the client, still sending, saw a broken
    # pipe, retried five times and said the server was down
    server, _, tokenizer = small_server
    remote = RemoteEngine(server.url, retries=4)
    big = [_request(tokenizer, frames=8, side=112)] * 4
    with pytest.raises(InvalidRequestError) as err:
        remote.score(big, DIGITS)
    assert str(err.value).startswith("the call's body of ")
    assert f"exceeds the critic server's {server.max_body} (split the batch" in str(err.value)
    assert remote.score([_request(tokenizer)], DIGITS).shape == (1, 10)  # a small one passes


def test_a_compressed_archive_is_refused_before_it_is_unpacked(small_server):
    # 600 KB of compressed zeros unpacked to 600 MB in the server
    server, _, tokenizer = small_server
    buffer = io.BytesIO()
    np.savez_compressed(buffer, junk=np.zeros(2_000_000, np.float32))
    assert len(buffer.getvalue()) < server.max_body
    status, message = _post(server.url + "/v1/score", buffer.getvalue())
    assert status == 400 and message.startswith(
        "the request archive holds compressed members ['junk.npy']; send them stored"
    )
    body = encode_requests([_request(tokenizer)], {"candidates": DIGITS})
    assert all(i.compress_type == zipfile.ZIP_STORED for i in zipfile.ZipFile(io.BytesIO(body)).infolist())  # fmt: skip
    assert len(decode_requests(body)[0]) == 1


def test_calls_the_model_would_fail_are_refused_as_bad_calls(small_server):
    server, engine, tokenizer = small_server
    request = _request(tokenizer)
    video = engine.model.config.video_token_id
    # a video placeholder in the prefix: the model looked for one more patch than sent (a 500)
    header = {"candidates": DIGITS, "prefix": [video]}
    status, message = _post(server.url + "/v1/score", encode_requests([request], header))
    assert (status, message) == (
        400,
        f"prefix holds the video placeholder id {video}; a prefix is text (e.g. <answer>)",
    )
    # t = 2**60 + 1 wrapped around in the grid's product, so the patch count still matched
    grid = request.video_grid_thw.clone()
    grid[0, 0] = 2**60 + 1
    wrapped = Request(request.input_ids, request.mm_token_type_ids, request.pixel_values_videos, grid)  # fmt: skip
    with pytest.raises(InvalidRequestError, match=rf"holds a value above {MAX_GRID} patches"):
        engine.check_request(wrapped)
    # NaN patches were answered {"probs": [[NaN, ...]]}, which is no JSON
    nan = request.pixel_values_videos.clone()
    nan[0, 0] = float("nan")
    bad = Request(request.input_ids, request.mm_token_type_ids, nan, request.video_grid_thw)
    status, message = _post(
        server.url + "/v1/score", encode_requests([bad], {"candidates": DIGITS})
    )
    said = ("request 0: pixel_values_videos holds NaN or infinite values (or values beyond the "
            "model's torch.float32); build them from uint8 frames (critic.prompts.encode)")  # fmt: skip
    assert (status, message) == (400, said)
    # finite as sent, infinite in the model's float32: the same NaN answer
    huge = Request(request.input_ids, request.mm_token_type_ids,
                   torch.full_like(request.pixel_values_videos, 1e300, dtype=torch.float64),
                   request.video_grid_thw)  # fmt: skip
    status, message = _post(
        server.url + "/v1/score", encode_requests([huge], {"candidates": DIGITS})
    )
    assert (status, message) == (400, said)
    # finite in float32, overflowing inside the model: an error, never NaN read as probabilities
    overflow = Request(request.input_ids, request.mm_token_type_ids,
                       torch.full_like(request.pixel_values_videos, 3e38), request.video_grid_thw)  # fmt: skip
    status, message = _post(
        server.url + "/v1/score", encode_requests([overflow], {"candidates": DIGITS})
    )
    assert status == 500 and "the model's scores of request(s) [0] are not finite" in message
    with pytest.raises(EngineError, match=r"scores of request\(s\) \[0\] are not finite"):
        RemoteEngine(server.url, retries=0).score([overflow], DIGITS)
    # a generation past the model's context ran on for minutes, every other client's calls
    # answered 503 meanwhile
    context = engine.model.config.text_config.max_position_embeddings
    too_long = SamplingParams(max_new_tokens=context, temperature=0)
    text = int((request.input_ids != engine.model.config.video_token_id).sum())
    with pytest.raises(InvalidRequestError) as err:
        RemoteEngine(server.url).generate([request], too_long)
    assert str(err.value) == (
        f"the critic server refused the call: a prompt of {text} text tokens and "
        f"max_new_tokens={context} exceed the model's context of {context} positions; give "
        f"max_new_tokens <= {context - text}"
    )
    with pytest.raises(InvalidRequestError, match="exceed the model's context"):
        engine.generate([request], too_long)  # in process too
    # a video's patches take fewer positions than tokens (M-RoPE): 32 frames at 448² are more
    # tokens than the context and were refused with "give max_new_tokens <= 0"
    long_video = _request(tokenizer, frames=32, side=448)
    assert len(long_video.input_ids) > context
    engine.check_length([long_video], 16)
    # a score past the context was read without a word (generate refused the same prompt)
    video = np.zeros((1, 56, 56, 3), np.uint8)
    long_text = Request(**prompts.encode(prompts.stepwise_progress("reach " * context, video, None), tokenizer))  # fmt: skip
    words = int((long_text.input_ids != engine.model.config.video_token_id).sum())
    assert words > context
    for score in (RemoteEngine(server.url).score, engine.score):  # the server's and in process
        with pytest.raises(InvalidRequestError) as err:
            score([long_text], DIGITS, prefix=[5])
        assert str(err.value).endswith(
            f"a prompt of {words} text tokens, a prefix of 1 and the token scored after it "
            f"exceed the model's context of {context} positions; shorten the prompt (its "
            "instruction)"
        )
    score = engine.score([request], DIGITS)  # a prompt that fits is read
    assert score.shape == (1, len(DIGITS))


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:8000/v1", "has a path"),  # it called .../v1/v1/model
        ("http://127.0.0.1:8000/?x=1", "has a query"),
        ("http://127.0.0.1:8000#top", "has a fragment"),
        ("http://user:pw@127.0.0.1:8000", "has credentials"),
        # empty, but there: the endpoints were appended to them (".../?/v1/model")
        ("http://127.0.0.1:8000?", "has a query"),
        ("http://127.0.0.1:8000#", "has a fragment"),
    ],
)
def test_a_server_address_is_host_and_port_alone(url, says):
    with pytest.raises(ValueError) as err:
        RemoteEngine(url)
    assert str(err.value).startswith(f"url={url!r} {says}; a critic server is addressed by ")
    assert str(err.value).endswith("e.g. http://127.0.0.1:8000")


def test_a_server_url_in_capitals_or_with_spaces_is_a_server_url():
    from critic.factory import model_source_problem

    # it was "unknown critic" though the client takes it
    assert model_source_problem(" HTTP://127.0.0.1:8000") is None
    assert RemoteEngine("HTTP://127.0.0.1:8000/").url == "HTTP://127.0.0.1:8000"
    assert "has a path" in model_source_problem("http://127.0.0.1:8000/v1")


def test_a_server_listens_on_ipv6(tiny_model):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    model, tokenizer = tiny_model
    engine = HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id)
    server = CriticServer(engine, tokenizer, host="::1", port=0).start()
    try:  # "Address family for hostname not supported": the stdlib server is IPv4 alone
        assert server.url.startswith("http://[::1]:")
        assert RemoteEngine(server.url).health()["status"] == "ok"
        out = RemoteEngine(server.url).score([_request(tokenizer)], DIGITS)
        assert torch.allclose(out, engine.score([_request(tokenizer)], DIGITS))
    finally:
        server.stop()


def test_stopping_while_a_batch_runs_ends_the_server_cleanly(tmp_path):
    # it waited 30 s for the batch, then the interpreter's exit under it aborted: "terminate
    # called without an active exception", exit 134. The preset's untrained weights repeat one
    # token, so its generations run to the context's end (about 10 s for 4 on this CPU)
    import contextlib
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    from critic.models import build_preset, save_model

    model, tokenizer = build_preset("tiny")
    save_model(model, tokenizer, tmp_path / "tiny")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rollout.serve", "--model", str(tmp_path / "tiny"), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )  # fmt: skip
    try:
        url = proc.stdout.readline().split()[3]
        request = _request(tokenizer)
        longest = SamplingParams(
            temperature=0,
            max_new_tokens=model.config.text_config.max_position_embeddings
            - len(request.input_ids),
        )

        def call():
            with contextlib.suppress(Exception):  # the server stops under it: no answer
                RemoteEngine(url, retries=0).generate([request] * 16, longest)

        threading.Thread(target=call, daemon=True).start()
        time.sleep(2.0)  # the batch runs
        started = time.monotonic()
        # SIGTERM takes Ctrl-C's path in the server; SIGINT itself is ignored by a process
        # started in the background, as CI may start the suite
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "terminate called" not in err and "Traceback" not in err
    assert time.monotonic() - started < 15  # at most 5 s for the batch, not all of it (20 s+)


def test_a_server_restarted_on_another_model_refuses_calls_built_for_the_first(tiny_model):
    # the client's requests, built from the first model's tokenizer and geometry, failed on a
    # patch width ("pixel_values_videos must be [48, 1536]"), or with the same geometry and
    # another tokenizer were answered without a word
    from critic.models import build_preset
    from rollout.engine import EngineError

    model, tokenizer = tiny_model
    first = CriticServer(HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id), tokenizer).start()  # fmt: skip
    port = first.httpd.server_address[1]
    remote = RemoteEngine(first.url, retries=0)
    assert remote.score([_request(tokenizer)], DIGITS).shape == (1, 10)
    first.stop()
    # the same model with other server options is the same model: its calls pass
    same = CriticServer(HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id), tokenizer,
                        port=port, max_body_mb=1024).start()  # fmt: skip
    assert same.model_id == first.model_id
    assert remote.score([_request(tokenizer)], DIGITS).shape == (1, 10)
    same.stop()
    other, other_tokenizer = build_preset("tiny-qwen3vl")
    engine = HFEngine(other, other_tokenizer.pad_token_id, other_tokenizer.eos_token_id)
    second = CriticServer(engine, other_tokenizer, port=port).start()
    try:
        with pytest.raises(EngineError) as err:
            remote.score([_request(tokenizer)], DIGITS)
        assert str(err.value) == (
            f"the critic server at {remote.url}: this server now serves another model (id "
            f"{second.model_id}) than the one the client read from it (id {first.model_id}): it "
            "restarted on another checkpoint; make the critic again (make_critic(url)) to read "
            "the new one"
        )
        fresh = RemoteEngine(second.url)
        request = Request(**prompts.encode(prompts.stepwise_progress("reach", np.zeros((1, 64, 64, 3), np.uint8), None), other_tokenizer, fresh_vision(fresh)))  # fmt: skip
        assert fresh.score([request], DIGITS).shape == (1, 10)
    finally:
        second.stop()


def fresh_vision(remote: RemoteEngine):
    from critic.vision import VisionSpec

    return VisionSpec.from_config(remote.model_info()["config"]["vision_config"])


def test_a_generation_of_too_many_completions_or_tokens_is_refused(small_server):
    # one small body asked for requests x n completions at once, each holding its video's
    # patches (n=6000 of one 600 KB request took 3.9 GB), or for hours of tokens
    from rollout.serve import MAX_COMPLETIONS, MAX_NEW_TOKENS

    server, _, tokenizer = small_server
    remote = RemoteEngine(server.url, retries=0)
    request = _request(tokenizer)
    with pytest.raises(InvalidRequestError) as err:
        remote.generate([request] * 2, SamplingParams(n=MAX_COMPLETIONS // 2 + 1, max_new_tokens=1))
    assert str(err.value) == (
        f"the critic server refused the call: the call asks for 2 requests x n="
        f"{MAX_COMPLETIONS // 2 + 1} = {MAX_COMPLETIONS + 2} completions, over this server's "
        f"{MAX_COMPLETIONS} a call; send fewer requests or samples per call"
    )
    with pytest.raises(InvalidRequestError, match=f"is over this server's {MAX_NEW_TOKENS} a"):
        remote.generate([request], SamplingParams(max_new_tokens=MAX_NEW_TOKENS + 1))
    assert len(remote.generate([request], SamplingParams(n=2, max_new_tokens=1))[0]) == 2


def test_a_header_nested_too_deep_is_a_bad_call():
    # a RecursionError from json, a 500 where a malformed call gets a 400
    buffer = io.BytesIO()
    np.savez(buffer, header=np.array("[" * 100_000 + "]" * 100_000))
    with pytest.raises(InvalidRequestError):
        decode_requests(buffer.getvalue())


def test_a_restart_with_another_dtype_is_the_same_model():
    # the text and vision configs hold a dtype too: a --dtype restart was a 409 for every client
    from rollout.serve import _without_dtypes

    config = {"dtype": "float32", "text_config": {"dtype": "float32", "hidden_size": 8},
              "vision_config": {"torch_dtype": "float32", "depth": 1}}  # fmt: skip
    assert _without_dtypes(config) == {
        "text_config": {"hidden_size": 8},
        "vision_config": {"depth": 1},
    }


def test_an_oversized_call_to_a_restarted_server_keeps_the_model_it_was_built_for(tiny_model):
    # the client read the new server's model id to learn its body limit, and its next calls,
    # built for the first model, passed the server's 409 check and failed on a patch width
    from critic.models import build_preset
    from rollout.engine import EngineError

    model, tokenizer = tiny_model
    engine = HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id)
    first = CriticServer(engine, tokenizer, max_body_mb=0.5).start()
    port = first.httpd.server_address[1]
    remote = RemoteEngine(first.url, retries=0)
    assert remote.score([_request(tokenizer)], DIGITS).shape == (1, 10)
    first.stop()
    other, other_tokenizer = build_preset("tiny-qwen3vl")
    second_engine = HFEngine(other, other_tokenizer.pad_token_id, other_tokenizer.eos_token_id)
    second = CriticServer(second_engine, other_tokenizer, port=port, max_body_mb=0.5).start()
    try:
        big = [_request(tokenizer, frames=8, side=112)] * 4
        for call in (big, [_request(tokenizer)]):  # then a small one: still the server's 409
            with pytest.raises(EngineError, match="now serves another model"):
                remote.score(call, DIGITS)
    finally:
        second.stop()


def test_a_served_qwen_release_without_its_processor_config_is_warned_of(small_server, monkeypatch):
    # read locally, such a checkpoint was warned of; served, neither the server nor the client
    # said that its frames were read at this project's small pixel budget
    from critic.vlm import VLMCritic

    server, _, _ = small_server
    served = RemoteEngine.model_info

    def a_release(self):  # Qwen's own vocabulary, as a release fine-tuned elsewhere has
        info = served(self)
        config = {**info["config"], "vocab_size": 151_936}
        if "text_config" in config:
            config["text_config"] = {**config["text_config"], "vocab_size": 151_936}
        return {**info, "config": config}

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        VLMCritic(server.url)  # the tiny model's own: no warning
    monkeypatch.setattr(RemoteEngine, "model_info", a_release)
    with pytest.warns(
        UserWarning, match=f"^the checkpoint served at {server.url} has no processor"
    ):
        VLMCritic(server.url)
