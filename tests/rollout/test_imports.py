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
    assert message.endswith("Install it with: pip install 'viscritic[sim]'")
    assert isinstance(err.value, ImportError)


def test_importing_the_packages_is_cheap():
    # No simulator, torch or transformers at import time (DESIGN.md).
    code = (
        "import sys, critic, envs, rollout; "
        "print(sorted(m for m in ('mujoco', 'robosuite', 'torch', 'transformers', "
        "'stable_baselines3') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
