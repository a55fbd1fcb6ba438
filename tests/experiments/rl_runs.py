"""Zero-shot RL runs for the tests: the script run tiny from the command line, and run dirs made from
a committed run for the tests of merging and reporting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.zygote import run_python

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = ROOT / "experiments" / "zero_shot_rl.py"
TINY = [
    "total_timesteps=160",
    "eval_every=80",
    "eval_episodes=2",
    "test_episodes=3",
    "env.horizon=20",
    "algo.learning_starts=40",
    "algo.batch_size=16",
    "progress_bar=false",
]


def rl_cli(*args: str) -> subprocess.CompletedProcess:
    # the repo on the path: a run may name a test critic (tests.helpers) as its critic
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    return run_python(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )


def rl_run(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return rl_cli(*TINY, f"hydra.run.dir={tmp_path}", *overrides)


DEFAULT_RUN = ROOT / "docs" / "results" / "zero_shot_rl_reacher_gamma099"  # seeds 0-2


def run_dir(tmp_path: Path, name: str, edit=None, seed_offset: int = 0, keep=None) -> Path:
    """A run dir whose results.json is the default run of 2026-12-04 (γ 0.99), its seeds
    shifted, its conditions filtered to ``keep`` and its config edited."""
    results = json.loads((DEFAULT_RUN / "results.json").read_text())
    results["runs"] = [
        {**r, "seed": r["seed"] + seed_offset}
        for r in results["runs"]
        if keep is None or r["condition"] in keep
    ]
    if edit:
        edit(results["config"])
    folder = tmp_path / name
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(results))
    return folder
