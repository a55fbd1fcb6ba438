"""The critic server on loopback with a real tiny Qwen2.5-VL (and Qwen3-VL): batching, 4xx,
retries, the CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from critic import prompts
from critic.factory import make_critic
from critic.models import save_model
from rollout.engine import (
    InvalidRequestError,
    Request,
    SamplingParams,
    ServerUnavailableError,
)
from rollout.hf import HFEngine
from rollout.remote import RemoteEngine
from rollout.serve import CriticServer
from rollout.wire import decode_requests, encode_requests

DIGITS = list(range(10, 20))


def _requests(tokenizer, count: int, seed: int = 0) -> list[Request]:
    rng = np.random.default_rng(seed)
    return [
        Request(
            **prompts.encode(
                prompts.stepwise_progress(
                    "reach the target",
                    rng.integers(0, 256, (int(rng.integers(1, 4)), 56, 56, 3), dtype=np.uint8),
                    None,
                ),
                tokenizer,
            )
        )
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def served(tiny_model):
    model, tokenizer = tiny_model
    engine = HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id)
    server = CriticServer(engine, tokenizer, max_batch=16, max_wait_ms=50).start()
    yield server, engine, tokenizer
    server.stop()


def _post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_wire_round_trip(tiny_model):
    _, tokenizer = tiny_model
    requests = _requests(tokenizer, 2)
    decoded, header = decode_requests(encode_requests(requests, {"x": [1, 2]}))
    assert header == {"x": [1, 2], "n": 2}
    for a, b in zip(requests, decoded, strict=True):
        for name in ("input_ids", "mm_token_type_ids", "pixel_values_videos", "video_grid_thw"):
            torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0)


def test_remote_equals_local(served):
    server, engine, tokenizer = served
    requests = _requests(tokenizer, 3)
    remote = RemoteEngine(server.url)
    torch.testing.assert_close(
        remote.score(requests, DIGITS, prefix=[5]),
        engine.score(requests, DIGITS, prefix=[5]).float().double().float(),
        atol=1e-6,
        rtol=0,
    )
    greedy = SamplingParams(temperature=0, max_new_tokens=6)
    assert remote.generate(requests, greedy) == engine.generate(requests, greedy)
    seeded = SamplingParams(n=2, temperature=1.0, max_new_tokens=5, seed=3)
    assert remote.generate(requests, seeded) == engine.generate(requests, seeded)


def test_eight_concurrent_clients_are_batched_and_correct(served):
    server, engine, tokenizer = served
    clients, rounds = 8, 3
    work = {c: _requests(tokenizer, 2, seed=100 + c) for c in range(clients)}
    expected = {c: engine.score(work[c], DIGITS) for c in range(clients)}
    before = server.batcher.stats.batches, server.batcher.stats.calls
    barrier = threading.Barrier(clients)
    results: dict[int, list] = {c: [] for c in range(clients)}
    errors: list[BaseException] = []

    def client(c: int) -> None:
        remote = RemoteEngine(server.url)
        try:
            for _ in range(rounds):
                barrier.wait(timeout=60)
                results[c].append(remote.score(work[c], DIGITS))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors
    for c in range(clients):
        assert len(results[c]) == rounds
        for got in results[c]:
            torch.testing.assert_close(got, expected[c], atol=1e-5, rtol=0)
    batches = server.batcher.stats.batches - before[0]
    calls = server.batcher.stats.calls - before[1]
    assert calls == clients * rounds
    assert batches < calls  # calls shared forward passes
    assert server.batcher.stats.largest_batch > 2


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (
            "/v1/score",
            b"not an archive",
            "the body is not a request archive (an .npz); send what rollout.wire.encode_requests "
            "makes",
        ),
        ("/v1/nothing", None, "no such endpoint: POST /v1/nothing"),
    ],
)
def test_malformed_calls_get_4xx(served, path, body, message):
    server, _, tokenizer = served
    if body is None:
        body = encode_requests(_requests(tokenizer, 1), {"candidates": DIGITS})
    status, payload = _post(server.url + path, body)
    assert (status, payload["error"]) == (404 if "nothing" in path else 400, message)


def test_invalid_requests_get_400_with_the_reason_and_server_keeps_serving(served):
    server, engine, tokenizer = served
    good = _requests(tokenizer, 1)[0]
    vocab = engine.model.config.text_config.vocab_size
    grid = good.video_grid_thw.tolist()
    patches = good.pixel_values_videos.shape[0]
    cases = [
        (
            Request(torch.tensor([1, vocab]), torch.zeros(2, dtype=torch.int32)),
            {"candidates": DIGITS},
            f"request 0: input_ids holds ids outside the vocabulary [0, {vocab}): [{vocab}]",
        ),
        (
            Request(good.input_ids[:-1], good.mm_token_type_ids, good.pixel_values_videos, good.video_grid_thw),
            {"candidates": DIGITS},
            f"request 0: mm_token_type_ids must be a tensor shaped like input_ids ({len(good.input_ids) - 1},), "
            f"got Tensor of shape ({len(good.input_ids)},)",
        ),
        (
            Request(good.input_ids, good.mm_token_type_ids, good.pixel_values_videos[:-4], good.video_grid_thw),
            {"candidates": DIGITS},
            f"request 0: pixel_values_videos must be a torch tensor of [{patches}, 1176] for grid "
            f"{grid}, got Tensor of shape ({patches - 4}, 1176)",
        ),
        (good, {"candidates": []}, "header candidates=[] must name at least one token id"),
        (good, {"candidates": ["7"]}, "header candidates=['7'] must be a list of token ids"),
    ]  # fmt: skip
    for request, header, message in cases:
        status, payload = _post(server.url + "/v1/score", encode_requests([request], header))
        assert (status, payload["error"]) == (400, message)
    status, payload = _post(
        server.url + "/v1/generate", encode_requests([good], {"params": {"n": 0}})
    )
    assert status == 400
    assert payload["error"] == (
        "bad sampling params {'n': 0}: n=0 must be an integer >= 1 (completions per request)"
    )
    with pytest.raises(InvalidRequestError, match="refused the call: request 0: input_ids holds"):
        RemoteEngine(server.url).score([cases[0][0]], DIGITS)
    # Still serving, and the bad calls never reached the engine.
    assert RemoteEngine(server.url).score([good], DIGITS).shape == (1, 10)
    assert RemoteEngine(server.url).health()["failed_batches"] == 0


def test_client_of_a_gone_server_fails_clearly_after_bounded_retries():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nobody listens here
    remote = RemoteEngine(f"http://127.0.0.1:{port}", retries=2, backoff_s=0.05)
    start = time.monotonic()
    with pytest.raises(ServerUnavailableError) as err:
        remote.health()
    assert time.monotonic() - start < 5
    assert str(err.value).startswith(
        f"the critic server at http://127.0.0.1:{port} did not answer GET /v1/health after 3 tries"
    )
    assert "Start it with `python -m rollout.serve --model PATH`" in str(err.value)


@pytest.fixture(scope="module")
def checkpoint(tiny_model, tmp_path_factory):
    return save_model(*tiny_model, tmp_path_factory.mktemp("tiny-critic"))


def test_cli_serves_the_wrapper_and_a_stopped_server_is_an_error(checkpoint):
    env_vars = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rollout.serve", "--model", str(checkpoint), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_vars,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("critic server on http://127.0.0.1:"), proc.stderr.read()
        url = line.split()[3]
        remote_critic = make_critic(url)
        local_critic = make_critic(str(checkpoint))
        assert remote_critic._engine.timeout_s == 300  # the client's own limit
        assert make_critic({"name": url, "timeout_s": 600})._engine.timeout_s == 600
        env = gym.make("envs:VisCriticReward-v0", env="Reacher-v5", critic=url, image_size=56)
        env.reset(seed=0)
        frames = []
        for _ in range(3):
            _, reward, _, _, info = env.step(env.action_space.sample())
            assert np.isfinite(reward)
            assert info["critic_status"] == "ok"
            frames.append(env.unwrapped.render_critic_view())
        # The same prompt through the server and in-process gives the same estimate.
        from critic.base import ProgressQuery

        query = ProgressQuery("reach the target", frames=np.stack(frames))
        remote_value = remote_critic.estimate_progress([query])[0].progress
        local_value = local_critic.estimate_progress([query])[0].progress
        assert remote_value == pytest.approx(local_value, abs=1e-5)
        health = RemoteEngine(url).health()  # the server's video cache: its size and use
        assert health["cache_videos"] >= 2 and 0 < health["cache_mb"] < 1
        assert health["cache_hits"] + health["cache_misses"] >= health["cache_videos"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0
    with pytest.raises(ServerUnavailableError, match="did not answer POST /v1/score after 5 tries"):
        env.step(env.action_space.sample())
    env.close()


def test_a_remote_critic_reads_frames_at_the_served_checkpoints_pixel_budget(tiny_model, tmp_path):
    from rollout.checkpoint import load_checkpoint

    save_model(*tiny_model, tmp_path)
    settings = {"size": {"shortest_edge": 12544, "longest_edge": 602112}}
    (tmp_path / "video_preprocessor_config.json").write_text(json.dumps(settings))
    model, tokenizer = load_checkpoint(tmp_path)
    engine = HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id)
    with CriticServer(engine, tokenizer) as server:
        remote = make_critic(server.url)
    local = make_critic(str(tmp_path))
    assert remote.vision == local.vision
    assert (remote.vision.min_pixels, remote.vision.max_pixels) == (12544, 602112)


def test_a_served_qwen3_vl_critic_reads_as_the_local_one(tmp_path):
    """A client builds Qwen3-VL's timestamped prompts from the served config and processor
    settings; the server checks their segments against the grids, and scores them."""
    from critic.base import ProgressQuery
    from critic.models import build_preset
    from rollout.checkpoint import load_checkpoint

    save_model(*build_preset("tiny-qwen3vl"), tmp_path)
    settings = {"size": {"shortest_edge": 4096, "longest_edge": 65536}, "fps": 4,
                "image_mean": [0.5] * 3, "image_std": [0.5] * 3}  # fmt: skip
    (tmp_path / "video_preprocessor_config.json").write_text(json.dumps(settings))
    model, tokenizer = load_checkpoint(tmp_path)
    engine = HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id)
    frames = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    queries = [ProgressQuery("lift", frames=frames[:n]) for n in (1, 4, 5)]
    with CriticServer(engine, tokenizer) as server:
        remote = make_critic(server.url)
        remote_values = [e.progress for e in remote.estimate_progress(queries)]
    local = make_critic(str(tmp_path))
    assert remote.vision == local.vision
    assert remote.vision.segmented and (remote.vision.fps, remote.vision.max_pixels) == (4, 65536)
    local_values = [e.progress for e in local.estimate_progress(queries)]
    np.testing.assert_allclose(remote_values, local_values, atol=1e-5)


def test_the_shipped_critic_is_served_by_its_name(tmp_path, monkeypatch):
    """``python -m rollout.serve --model viscritic-small`` serves the shipped critic: rollout finds
    the name through the package's entry point (no rollout module names critic), and the served
    critic reads as ``make_critic("viscritic-small")``; a folder of that name is a folder."""
    from critic.base import ProgressQuery
    from critic.weights import SHIPPED
    from rollout.checkpoint import checkpoint_path, load_checkpoint, named_checkpoints

    assert named_checkpoints() == SHIPPED
    assert checkpoint_path("viscritic-small") == SHIPPED["viscritic-small"]
    assert checkpoint_path("/ckpt/other") == "/ckpt/other"  # not a name: as given
    (tmp_path / "viscritic-small").mkdir()  # a folder that exists is the folder, whatever its name
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match=r"is a folder here and the name of the shipped critic"):
        assert checkpoint_path("viscritic-small") == "viscritic-small"
    monkeypatch.chdir(Path(__file__).parent)
    model, tokenizer = load_checkpoint("viscritic-small")
    assert Path(model.name_or_path) == SHIPPED["viscritic-small"]  # its processor settings too
    engine = HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id)
    frames = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    queries = [ProgressQuery("reach the target", frames=frames[:n]) for n in (2, 4)]
    with CriticServer(engine, tokenizer) as server:
        remote = [e.progress for e in make_critic(server.url).estimate_progress(queries)]
    local = [e.progress for e in make_critic("viscritic-small").estimate_progress(queries)]
    np.testing.assert_allclose(remote, local, atol=1e-5)


def test_cli_bad_model_is_a_message_not_a_traceback(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "rollout.serve", "--model", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.startswith(f"error: cannot load critic model {tmp_path / 'none'}:")
    assert "Traceback" not in out.stderr


def test_float64_patches_from_a_client_are_served(served):
    server, engine, tokenizer = served
    request = _requests(tokenizer, 1)[0]
    wide = Request(request.input_ids, request.mm_token_type_ids,
                   request.pixel_values_videos.double(), request.video_grid_thw)  # fmt: skip
    torch.testing.assert_close(
        RemoteEngine(server.url).score([wide], DIGITS),
        engine.score([request], DIGITS),
        atol=1e-6,
        rtol=0,
    )


def test_bad_seed_is_a_400_and_the_batcher_survives(served):
    server, _, tokenizer = served
    good = _requests(tokenizer, 1)[0]
    body = encode_requests([good], {"params": {"seed": [1], "temperature": 1.0}})
    status, payload = _post(server.url + "/v1/generate", body)
    assert (status, payload["error"]) == (
        400, "bad sampling params {'seed': [1], 'temperature': 1.0}: seed=[1] must be None or an "
        "integer in [0, 2**63)",
    )  # fmt: skip
    assert server.batcher.alive and RemoteEngine(server.url).health()["status"] == "ok"


def test_client_token_types_are_not_trusted(served):
    server, engine, tokenizer = served
    requests = _requests(tokenizer, 3, seed=7)
    # Zeroed token types would shift every later request's video grid in a shared batch.
    tampered = [Request(r.input_ids, torch.zeros_like(r.mm_token_type_ids), r.pixel_values_videos,
                        r.video_grid_thw) for r in requests]  # fmt: skip
    torch.testing.assert_close(
        RemoteEngine(server.url).score(tampered, DIGITS),
        engine.score(requests, DIGITS),
        atol=1e-5,
        rtol=0,
    )
    # Video token runs must match the grid rows one by one.
    two = _requests(tokenizer, 1)[0]
    grid = torch.cat([two.video_grid_thw, two.video_grid_thw])
    pixels = torch.cat([two.pixel_values_videos, two.pixel_values_videos])
    run = int(two.video_grid_thw.prod()) // 4
    video_id = engine.model.config.video_token_id
    end = int((two.input_ids == video_id).nonzero().max()) + 1  # right after the prompt's run
    ids = torch.cat([two.input_ids[:end], torch.full((run,), video_id), two.input_ids[end:]])
    bad = Request(ids, torch.zeros_like(ids, dtype=torch.int32), pixels, grid)
    status, payload = _post(
        server.url + "/v1/score", encode_requests([bad], {"candidates": DIGITS})
    )
    assert status == 400
    assert payload["error"].startswith(
        f"request 0: video token runs of lengths [{2 * run}] do not match"
    )
