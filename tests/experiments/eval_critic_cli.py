"""Running experiments/eval_critic.py from tests: as a user does (a subprocess), or its config
composed in this process. Shared by test_eval_critic.py (the critics, probes and checks) and
test_eval_critic_external.py (labelled videos of one's own)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.zygote import run_python

ROOT = Path(__file__).resolve().parents[2]
TINY = ["episodes_per_task=4", "frames_per_query=2", "failure_frames=2", "delay_points=2",
        "probe_episodes=1", "stride=4"]  # fmt: skip


def strict_json(text: str):
    """``text`` parsed as strict JSON: ``NaN`` and ``Infinity`` are no JSON (Python's parser takes
    them, browsers' and jq's do not)."""

    def refuse(token):
        raise ValueError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


def eval_config(*overrides: str):
    """eval_critic's config with ``overrides``, as hydra composes it for the script."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("eval_critic", overrides=list(overrides))


def run_eval(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``eval_critic.py`` at tiny size in ``run_dir``, as a user runs it."""
    return run_python(
        [sys.executable, str(ROOT / "experiments" / "eval_critic.py"), f"hydra.run.dir={run_dir}",
         *TINY, *overrides],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
