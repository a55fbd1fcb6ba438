"""The training scripts' command lines, run with a stand-in interpreter that logs each command."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_train_viscritic_small_runs_every_step_with_the_interpreter_given_quoted(tmp_path):
    # a folder with a space: $PYTHON unquoted would run "<tmp>/my" with "python/python" as argument
    python = tmp_path / "my python" / "python"
    python.parent.mkdir()
    log = tmp_path / "calls.txt"
    python.write_text(  # one line per command: its arguments, shell-quoted
        f'#!/usr/bin/env bash\n{{ printf "%q " "$@"; echo; }} >> {shlex.quote(str(log))}\n'
    )
    python.chmod(0o755)
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "train_viscritic_small.sh"), str(tmp_path / "data"),
         str(tmp_path / "run")],
        env={**os.environ, "PYTHON": str(python)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    calls = [shlex.split(line) for line in log.read_text().splitlines()]
    # the loop script (step 2) ran with the same interpreter, between the 8-frame critic's
    # steps and the export
    assert calls[0][:2] == ["experiments/synthesize.py", "env=Reacher-v5"]
    assert calls[-1][:3] == ["-m", "critic.weights", "export"]
    assert any("hydra.run.dir=" + str(tmp_path / "run" / "loop" / "pertask") in c for c in calls)
    scripts = {c[0] for c in calls if c[0] != "-m"}
    assert scripts == {"experiments/synthesize.py", "experiments/train_critic.py",
                       "experiments/zero_shot_rl.py"}  # fmt: skip
    assert all((ROOT / s).is_file() for s in scripts)
