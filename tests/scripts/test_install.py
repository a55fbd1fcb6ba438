"""scripts/install.sh refuses what it cannot install before it installs anything: an extra that
is not one (pip only warns, and the run then fails far from the cause), and a Python whose
wheels the pinned packages lack (numpy < 2 has none past 3.12; transformers 5 needs 3.11)."""

from __future__ import annotations

import os
import subprocess
import sys
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


def _stand_in(path: Path, script: str) -> Path:
    path.write_text(f"#!/usr/bin/env bash\n{script}\n")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize(("version", "reads"), [("3.13.1", "3.13.1"), ("3.10.12", "3.10.12"),
                                                ("", "that does not run")])  # fmt: skip
def test_a_python_too_new_too_old_or_broken_is_named_with_the_fix(tmp_path, version, reads):
    # 3.10 passed the check and failed at pip, after apt and torch: transformers 5 needs 3.11.
    # A stand-in that reports the version and fails the range check (or, broken, fails to run).
    answer = f"echo {version}" if version else "exit 127"
    python = _stand_in(
        tmp_path / "python3", f'case "$2" in *platform*) {answer};; *) exit 1;; esac'
    )
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
    assert f"PYTHON={python} is Python {reads}; VisCritic needs 3.11 or 3.12" in done.stderr
    assert "e.g. PYTHON=python3.12 bash scripts/install.sh" in done.stderr
    done = _install(tmp_path, PYTHON="python3.99")
    assert done.returncode == 1
    assert "PYTHON=python3.99 is not a command" in done.stderr
    assert not (tmp_path / "venv").exists()


def test_a_python_given_beside_a_venv_of_another_version_is_named(tmp_path):
    # PYTHON=python3.12 beside a 3.11 .venv kept 3.11 without a word ("done"), as did a PYTHON=
    # that does not run
    def python(full: str) -> str:
        short = ".".join(full.split(".")[:2])
        return f'case "$2" in *platform*) echo {full};; *version_info*) echo {short};; *) exit 0;; esac'

    (tmp_path / "venv" / "bin").mkdir(parents=True)
    _stand_in(tmp_path / "venv" / "bin" / "python", python("3.11.7"))
    given = _stand_in(tmp_path / "python3.12", python("3.12.1"))
    done = _install(tmp_path, PYTHON=str(given))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"[install] PYTHON={given} is Python 3.12.1, and {tmp_path / 'venv'} already holds Python "
        f"3.11.7; remove {tmp_path / 'venv'} to rebuild it, or give the new one its own folder, "
        f"e.g. VENV=.venv312 PYTHON={given}"
    )
    broken = _stand_in(tmp_path / "broken", "exit 127")
    done = _install(tmp_path, PYTHON=str(broken))
    assert done.returncode == 1
    assert done.stderr.strip().startswith(f"[install] PYTHON={broken} does not run here")


def test_system_packages_without_root_or_sudo_name_the_way_on(tmp_path):
    # not root and no sudo: "sudo: command not found" (rc 127), with no word of the way on
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stand_in(bin_dir / "id", "echo 1000")
    _stand_in(bin_dir / "dpkg-query", "exit 1")  # nothing installed
    _stand_in(bin_dir / "apt-get", f"echo apt-get >> {tmp_path}/apt.log")
    for tool in ("bash", "env", "cat", "grep", "dirname"):  # no sudo on this PATH
        (bin_dir / tool).symlink_to(subprocess.check_output(["which", tool], text=True).strip())
    (bin_dir / "python3").symlink_to(Path(sys.executable).resolve())  # not a pyenv shim
    done = _install(tmp_path, SKIP_SYSTEM_PACKAGES="0", PATH=str(bin_dir))
    assert done.returncode == 1
    assert done.stderr.strip().endswith(
        "needs root, and there is no sudo here: run again as root, or install them with this "
        "system's package manager and run again with SKIP_SYSTEM_PACKAGES=1"
    )
    assert not (tmp_path / "apt.log").exists() and not (tmp_path / "venv").exists()


@pytest.mark.parametrize(
    ("extras", "missing", "asked"),
    [
        # robosuite's OpenCV loads libGL and GLib at import: no Mesa package brings them
        ("sim", "libgl1 libglib2.0-0 libglib2.0-0t64", "libgl1 libglib2.0-0"),
        # either name of a renamed library counts (Ubuntu 24.04's libglib2.0-0t64)
        ("sim", "libgl1 libglib2.0-0", "libgl1"),
        # evdev (robosuite -> pynput) is built from source; DeepSpeed compiles its CPU op
        ("sim", "g++ libc6-dev", "g++ libc6-dev"),
        ("train", "g++", "g++"),
    ],
)
def test_the_system_packages_the_extras_need_are_asked_for(tmp_path, extras, missing, asked):
    """(Stopped at apt's install, which fails here: nothing is installed.)"""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # root; dpkg-query says only `missing` are not installed; apt-get logs its install and fails
    _stand_in(bin_dir / "id", "echo 0")
    _stand_in(bin_dir / "dpkg-query",
              f'case " {missing} " in *" ${{@: -1}} "*) exit 1;; esac; echo "install ok installed"')  # fmt: skip
    _stand_in(bin_dir / "apt-get", f'[ "$4" = install ] || exit 0; echo "${{@:7}}" >> '
                                   f'{tmp_path}/apt.log; exit 1')  # fmt: skip
    # this apt knows the older name of GLib's package only (Debian 12)
    _stand_in(bin_dir / "apt-cache", '[ "$2" = libglib2.0-0t64 ] && exit 100; exit 0')
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    done = _install(tmp_path, SKIP_SYSTEM_PACKAGES="0", EXTRAS=extras, PATH=path,
                    PYTHON=str(Path(sys.executable).resolve()))  # fmt: skip
    assert done.returncode == 1
    assert (tmp_path / "apt.log").read_text().split() == asked.split()
    assert f"apt-get install {asked} failed" in done.stderr
