"""scripts/install.sh refuses what it cannot install before it installs anything: an extra that
is not one (pip only warns, and the run then fails far from the cause), and a Python whose
wheels the pinned packages lack (numpy < 2 has none past 3.12)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _install(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "install.sh")],
        env={**os.environ, "SKIP_SYSTEM_PACKAGES": "1", "VENV": str(tmp_path / "venv"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("extras", "bad"),
    [("sim,dta", "dta"), ("sim,", ""), ("sim, rl", " rl"), ("sim,,rl", ""), ("sim rl", "sim rl")],
)
def test_an_extra_that_is_not_one_is_refused_before_anything_is_installed(tmp_path, extras, bad):
    done = _install(tmp_path, EXTRAS=extras)
    assert done.returncode == 1
    assert done.stderr.strip().endswith(
        f"EXTRAS={extras}: '{bad}' is not an extra; pick from sim rl vlm data train dev vllm all "
        "(comma-separated, no spaces, e.g. EXTRAS=sim,rl)"
    )
    assert not (tmp_path / "venv").exists()


def test_a_python_too_new_or_missing_is_named_with_the_fix(tmp_path):
    python = tmp_path / "python3.13"  # a stand-in that reports 3.13 and fails the range check
    python.write_text(
        '#!/usr/bin/env bash\ncase "$2" in *platform*) echo 3.13.1;; *) exit 1;; esac\n'
    )
    python.chmod(0o755)
    # before any system package is asked for: apt-get and dpkg-query stand-ins that log a call
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("apt-get", "dpkg-query"):
        (bin_dir / tool).write_text(f"#!/usr/bin/env bash\necho {tool} >> {tmp_path}/apt.log\n")
        (bin_dir / tool).chmod(0o755)
    path = f"{bin_dir}:{os.environ['PATH']}"
    done = _install(tmp_path, PYTHON=str(python), SKIP_SYSTEM_PACKAGES="0", PATH=path)
    assert not (tmp_path / "apt.log").exists()
    assert done.returncode == 1
    assert f"PYTHON={python} is Python 3.13.1; VisCritic needs 3.10 to 3.12" in done.stderr
    assert "e.g. PYTHON=python3.12 bash scripts/install.sh" in done.stderr
    done = _install(tmp_path, PYTHON="python3.99")
    assert done.returncode == 1
    assert "PYTHON=python3.99 is not a command" in done.stderr
    assert not (tmp_path / "venv").exists()
