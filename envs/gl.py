"""Pick the headless OpenGL backend before MuJoCo is imported.

EGL (Mesa on CPU, the vendor driver on GPU) by default; OSMesa when no EGL library is installed. A
choice the user made in ``MUJOCO_GL`` is kept. ``PYOPENGL_PLATFORM`` is set to match, as PyOpenGL
and MuJoCo must agree.
"""

from __future__ import annotations

import ctypes.util
import os
import sys

# The process whose OpenGL contexts exist (set at the first one). A child forked from it inherits
# the value, not the contexts: MuJoCo's new one then hangs (EGL and OSMesa alike).
_GL_PID: int | None = None


def note_gl_context() -> None:
    """Record that this process has made an OpenGL context (:func:`forked_gl_problem`)."""
    global _GL_PID
    if _GL_PID is None:
        _GL_PID = os.getpid()


def forked_gl_problem() -> str | None:
    """Why this process cannot render, or None: it was forked from one that had rendered, and
    a context made here would hang (gymnasium's ``AsyncVectorEnv`` forks by default on Linux)."""
    if _GL_PID is None or os.getpid() == _GL_PID:
        return None
    return (
        f"this process was forked from one that had rendered (pid {_GL_PID}), and MuJoCo's "
        "OpenGL contexts do not survive a fork (a new one hangs); start worker processes with "
        "'forkserver' or 'spawn': gym.make_vec(..., vectorization_mode='async', "
        "vector_kwargs={'context': 'forkserver'}), or SubprocVecEnv(..., "
        "start_method='forkserver')"
    )


def _one_torch_thread() -> None:
    """In a forked child: torch on one thread. A parent that ran torch on several leaves an
    OpenMP pool the child cannot use: its first parallel operation hangs (a critic's forward in
    an ``AsyncVectorEnv`` worker). PyTorch's DataLoader workers run on one thread too."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_one_torch_thread)


def select_gl_backend() -> str | None:
    """Set ``MUJOCO_GL`` / ``PYOPENGL_PLATFORM`` if unset and return the backend in force."""
    backend = os.environ.get("MUJOCO_GL")
    if backend is None:
        if ctypes.util.find_library("EGL"):
            backend = "egl"
        elif ctypes.util.find_library("OSMesa"):
            backend = "osmesa"
        else:
            return None  # MuJoCo will say what is missing when a renderer is made
        os.environ["MUJOCO_GL"] = backend
    if backend in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    return backend


def bind_mujoco_backend() -> None:
    """Make mujoco's renderer use the backend in ``MUJOCO_GL`` even if mujoco was imported first.

    mujoco fixes its GL context class when it is imported. A program that imports mujoco (or
    gymnasium's MuJoCo envs, or robosuite) before ``envs`` got GLFW, which needs a display; this
    rebinds mujoco's context class to the headless one that ``MUJOCO_GL`` names. It does nothing
    when mujoco already uses that backend.
    """
    import importlib

    from mujoco import gl_context

    backend = os.environ.get("MUJOCO_GL", "").lower().strip()
    if backend not in ("egl", "osmesa"):
        return
    current = getattr(gl_context, "GLContext", None)
    if current is not None and current.__module__ == f"mujoco.{backend}":
        return
    gl_context.GLContext = importlib.import_module(f"mujoco.{backend}").GLContext
