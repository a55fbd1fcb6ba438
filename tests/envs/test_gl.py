"""Choosing and binding the headless GL backend.

Every test changes the environment only through ``monkeypatch``, so the process's real GL choice
(made when ``envs`` was imported) is back in place afterwards.
"""

from __future__ import annotations

import ctypes.util
import os

import pytest

from envs.gl import bind_mujoco_backend, select_gl_backend


@pytest.fixture
def clean_gl_env(monkeypatch):
    """Neither variable set; setenv first so that monkeypatch restores the real values."""
    for name in ("MUJOCO_GL", "PYOPENGL_PLATFORM"):
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)
    return monkeypatch


def _libraries(*present: str):
    return lambda name: f"lib{name}.so" if name in present else None


def test_user_choice_of_a_display_backend_sets_no_pyopengl_platform(clean_gl_env):
    clean_gl_env.setenv("MUJOCO_GL", "glfw")
    assert select_gl_backend() == "glfw"
    assert "PYOPENGL_PLATFORM" not in os.environ


def test_user_pyopengl_platform_is_kept(clean_gl_env):
    clean_gl_env.setenv("MUJOCO_GL", "egl")
    clean_gl_env.setenv("PYOPENGL_PLATFORM", "EGL")
    assert select_gl_backend() == "egl"
    assert os.environ["PYOPENGL_PLATFORM"] == "EGL"


def test_osmesa_when_no_egl_library(clean_gl_env):
    clean_gl_env.setattr(ctypes.util, "find_library", _libraries("OSMesa"))
    assert select_gl_backend() == "osmesa"
    assert (os.environ["MUJOCO_GL"], os.environ["PYOPENGL_PLATFORM"]) == ("osmesa", "osmesa")


def test_egl_preferred_when_both_are_installed(clean_gl_env):
    clean_gl_env.setattr(ctypes.util, "find_library", _libraries("EGL", "OSMesa"))
    assert select_gl_backend() == "egl"
    assert (os.environ["MUJOCO_GL"], os.environ["PYOPENGL_PLATFORM"]) == ("egl", "egl")


def test_no_gl_library_leaves_the_choice_to_mujoco(clean_gl_env):
    clean_gl_env.setattr(ctypes.util, "find_library", _libraries())
    assert select_gl_backend() is None
    assert "MUJOCO_GL" not in os.environ and "PYOPENGL_PLATFORM" not in os.environ


def _backend_in_force() -> str:
    backend = os.environ.get("MUJOCO_GL", "")
    if backend not in ("egl", "osmesa"):
        pytest.skip(f"this process renders with MUJOCO_GL={backend!r}, not a headless backend")
    return backend


def test_bind_rebinds_mujoco_to_the_headless_backend(monkeypatch):
    from mujoco import gl_context

    backend = _backend_in_force()

    class DisplayContext:  # stands in for the GLFW context mujoco picks when imported first
        pass

    monkeypatch.setattr(gl_context, "GLContext", DisplayContext)
    bind_mujoco_backend()
    assert gl_context.GLContext.__module__ == f"mujoco.{backend}"


def test_bind_leaves_a_display_backend_alone(monkeypatch):
    from mujoco import gl_context

    before = gl_context.GLContext
    monkeypatch.setenv("MUJOCO_GL", "glfw")
    bind_mujoco_backend()
    assert gl_context.GLContext is before
