"""The optional-dependency helper names the extra that fixes a missing package."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rollout.imports import MissingExtraError, require_package


def test_present_package_is_returned():
    assert require_package("json", "core", "x").dumps([1]) == "[1]"


def test_missing_package_names_the_extra():
    with pytest.raises(MissingExtraError) as err:
        require_package("definitely_not_a_pkg_xyz", "sim", "the robosuite task 'Lift'")
    message = str(err.value)
    assert message.startswith(
        "the robosuite task 'Lift' needs the optional package 'definitely_not_a_pkg_xyz', which "
        "is not installed"
    )
    assert message.endswith("Install it with: pip install -e '.[sim]' (in the repository's root)")
    assert isinstance(err.value, ImportError)


def test_an_installed_package_whose_system_library_is_missing_is_not_blamed_on_pip(
    tmp_path, monkeypatch
):
    # robosuite without libGL (its OpenCV loads it at import) was "not installed ... pip install
    # -e '.[sim]'", which fixes nothing
    (tmp_path / "needs_libgl.py").write_text(
        "raise ImportError('libGL.so.1: cannot open shared object file: No such file or directory')"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtraError) as err:
        require_package("needs_libgl", "sim", "the robosuite task 'Lift'")
    assert str(err.value) == (
        "the robosuite task 'Lift' needs the optional package 'needs_libgl', which is installed "
        "and does not import (libGL.so.1: cannot open shared object file: No such file or "
        "directory): a system library it loads is missing. On Debian/Ubuntu `bash "
        "scripts/install.sh` installs those the project needs (robosuite's OpenCV: libgl1 "
        "libglib2.0-0)"
    )


def test_an_installed_package_that_does_not_import_for_another_reason_is_reinstalled(
    tmp_path, monkeypatch
):
    # packages that do not fit each other ("cannot import name"): no system library to blame
    (tmp_path / "mismatched.py").write_text("from json import no_such_name")
    (tmp_path / "symbol.py").write_text(
        "raise ImportError('/x/torchvision/_C.so: undefined symbol: _ZN3c10')"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtraError) as err:
        require_package("mismatched", "vlm", "the VLM critic")
    assert "system library" not in str(err.value)
    assert str(err.value).endswith(
        "Reinstall it with: pip install -e '.[vlm]' (in the repository's root)"
    )
    with pytest.raises(MissingExtraError) as err:  # torch and torchvision that do not fit
        require_package("symbol", "vlm", "the VLM critic")
    assert "system library" not in str(err.value) and "Reinstall it with" in str(err.value)


def test_importing_the_packages_is_cheap():
    # No simulator, torch or transformers at import time (DESIGN.md).
    code = (
        "import sys, critic, envs, rollout; "
        "print(sorted(m for m in ('mujoco', 'robosuite', 'torch', 'transformers', "
        "'stable_baselines3') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


_HIDDEN = """import runpy, sys
sys.modules[{module!r}] = None  # as if its extra were not installed
sys.argv = {argv!r}
if sys.argv[0].endswith(".py"):
    runpy.run_path(sys.argv[0], run_name="__main__")
else:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize(
    ("module", "argv", "extra"),
    [
        ("stable_baselines3", ["experiments/zero_shot_rl.py"], "rl"),
        ("stable_baselines3", ["experiments/synthesize.py", "policies=[p.zip]", "out=ds"], "rl"),
        ("transformers", ["rollout.serve", "--model", "viscritic-small"], "vlm"),
        ("safetensors", ["critic.weights", "export", "critic/weights/viscritic-small", "x"], "vlm"),
    ],
    ids=["zero_shot_rl", "synthesize_policies", "serve", "weights_export"],
)
def test_an_entry_point_without_its_extra_says_which_to_install(tmp_path, module, argv, extra):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    (tmp_path / "p.zip").write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip: a policy path
    argv = [str(root / a) if a.endswith(".py") or a.startswith("critic/") else a for a in argv]
    argv += [f"hydra.run.dir={tmp_path / 'run'}"] if argv[0].endswith(".py") else []
    done = subprocess.run(
        [sys.executable, "-c", _HIDDEN.format(module=module, argv=argv)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**__import__("os").environ, "PYTHONPATH": f"{root}:{root / 'experiments'}"},
        timeout=120,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert f"Install it with: pip install -e '.[{extra}]' (in the repository's root)" in done.stderr
