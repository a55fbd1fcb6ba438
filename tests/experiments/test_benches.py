"""Tiny end-to-end runs of the two benchmark scripts, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "experiments" / script), f"hydra.run.dir={tmp_path}", *overrides],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip


def test_bench_tiny_run(tmp_path):
    done = _run("bench.py", tmp_path, "tasks=[Reacher-v5]", "steps=5", "rounds=1",
                "modes=[raw,camera,'oracle k=2','oracle+frames k=2']")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "bench.json").read_text())
    assert set(results["Reacher-v5"]) == {"raw", "camera", "oracle k=2", "oracle+frames k=2"}
    assert all(rate > 0 for rate in results["Reacher-v5"].values())
    assert "| Reacher-v5 |" in (tmp_path / "bench.md").read_text()


def test_bench_bad_mode_is_a_message(tmp_path):
    done = _run("bench.py", tmp_path, "tasks=[Reacher-v5]", "modes=[warp]")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "bench: unknown modes ['warp']" in done.stderr


def test_bench_critic_tiny_run(tmp_path):
    done = _run("bench_critic.py", tmp_path, "model=tiny", "episode_steps=3", "batches=[1,2]",
                "repeats=1", "reason_samples=2", "reason_tokens=4")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "bench_critic.json").read_text())
    assert set(results["score_queries_per_s"]) == {"1", "2"}
    assert 0.0 < results["sliding_window"]["hit_rate"] < 1.0
    assert results["latency_s"]["score"] > 0
    relabel = results["episode_relabel"]  # the reset query and 3 steps
    assert relabel["queries"] == 4 and relabel["per_step_s"] > 0 and relabel["relabelled_s"] > 0
    shared = results["shared_prefix"]  # text and initial frame, run once for the 4 queries
    assert 100 < shared["shared_tokens"] < shared["tokens_per_query"] and shared["shared_s"] > 0
    split = results["per_query_ms"]["2"]
    # The tower really ran inside the forward pass, and every query had its tokens counted.
    assert 0 < split["vision_tower_ms"] < split["forward_ms"] and split["encode_ms"] > 0
    assert split["tokens_per_query"] > 100  # anchored prompt: text plus three videos


def _bench_gpu_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_gpu", ROOT / "experiments" / "bench_gpu.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_gpu_flop_count():
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    bench = _bench_gpu_module()
    model = bench.build_model("tiny", "cpu", "float32")
    inputs, grid = bench._inputs(model, batch=2, text_len=32, frames=4, frame_size=56, device="cpu")
    assert grid == (2, 4, 4)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(**inputs, use_cache=False)
    flops = bench.forward_flops(model, 2, 32, grid)
    # The weight matmuls are exactly what torch counts (it does not count CPU sdpa).
    assert flops["matmul"] == counter.get_total_flops()
    # Attention by hand, tiny preset: text 2 layers, d_attn 64; vision depth 2, width 32, window
    # (112/14)² = 64 patches, block 1 full. 32 patches → 8 video tokens, seq = 32 + 8 = 40.
    # text: 4 · batch 2 · (2 · 40² · 64) = 1,638,400; vision: each patch attends min(64, 16) = 16
    # in block 0 and 16 in block 1 → 4 · 2 · 32 · 32 · 32 = 262,144.
    assert flops["attention"] == 1_638_400 + 262_144
    assert flops["total"] == flops["matmul"] + flops["attention"]


def test_bench_gpu_cpu_smoke_run(tmp_path):
    done = _run("bench_gpu.py", tmp_path, "shape=tiny", "device=cpu", "dtype=float32",
                "peak_tflops=1", "batch=2", "frames=4", "frame_size=56", "text_tokens=16",
                "new_tokens=3", "repeats=1")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert results["tokens_per_prompt"] == 16 + 8
    assert results["prefill_tokens_per_s"] > 0 and results["decode_tokens_per_s"] > 0
    assert 0 < results["mfu"] < 1


def test_bench_gpu_without_gpu_is_a_message(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    done = _run("bench_gpu.py", tmp_path, "shape=tiny")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "bench_gpu: no CUDA GPU here" in done.stderr
