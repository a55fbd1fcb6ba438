"""Tiny end-to-end runs of the two benchmark scripts, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
