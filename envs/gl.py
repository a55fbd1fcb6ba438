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
