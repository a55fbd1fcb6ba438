"""Pick the headless OpenGL backend before MuJoCo is imported.

EGL (Mesa on CPU, the vendor driver on GPU) by default; OSMesa when no EGL library is installed. A
choice the user made in ``MUJOCO_GL`` is kept. ``PYOPENGL_PLATFORM`` is set to match, as PyOpenGL
and MuJoCo must agree.
"""

from __future__ import annotations

import ctypes.util
import os


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
