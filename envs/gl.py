"""Pick the headless OpenGL backend before MuJoCo is imported.

EGL (Mesa on CPU, the vendor driver on GPU) by default; OSMesa when no EGL library is installed,
or glvnd's has no driver to load. A choice the user made in ``MUJOCO_GL``, or in
``PYOPENGL_PLATFORM`` alone, is kept. ``PYOPENGL_PLATFORM`` is set to match, as PyOpenGL and
MuJoCo must agree (:func:`gl_mismatch` names them where they do not).
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


HEADLESS = ("egl", "osmesa")
# where glvnd's libEGL finds the drivers that make it usable (a compute-only GPU container has the
# library and none of them)
EGL_VENDOR_DIRS = ("/usr/share/glvnd/egl_vendor.d", "/etc/glvnd/egl_vendor.d")


def _egl_vendor_present() -> bool:
    """Whether glvnd's libEGL has a driver to load (a vendor JSON), as it looks for them."""
    files = os.environ.get("__EGL_VENDOR_LIBRARY_FILENAMES")
    if files:
        return any(os.path.isfile(f) for f in files.split(":"))
    dirs = os.environ.get("__EGL_VENDOR_LIBRARY_DIRS")
    for folder in dirs.split(":") if dirs else EGL_VENDOR_DIRS:
        try:  # (at import: an unreadable folder must not stop `import envs`)
            if any(n.endswith(".json") for n in os.listdir(folder)):
                return True
        except OSError:
            continue
    return False


def select_gl_backend() -> str | None:
    """Set ``MUJOCO_GL`` / ``PYOPENGL_PLATFORM`` if unset and return the backend in force.

    Unset (or empty) ``MUJOCO_GL``: the headless backend ``PYOPENGL_PLATFORM`` names, where it
    names one (a dm_control-style ``PYOPENGL_PLATFORM=osmesa`` had MuJoCo import EGL beside it,
    and refuse to); else EGL where its library has a driver to load, OSMesa where EGL has none
    or is missing, EGL where OSMesa is missing too (MuJoCo then says why).
    """
    backend = (os.environ.get("MUJOCO_GL") or "").strip() or None  # MUJOCO_GL= is unset
    platform = (os.environ.get("PYOPENGL_PLATFORM") or "").strip().lower()
    if backend is None:
        if platform in HEADLESS:
            backend = platform
        elif ctypes.util.find_library("EGL") and (
            _egl_vendor_present() or not ctypes.util.find_library("OSMesa")
        ):
            backend = "egl"
        elif ctypes.util.find_library("OSMesa"):
            backend = "osmesa"
        else:
            return None  # MuJoCo will say what is missing when a renderer is made
        os.environ["MUJOCO_GL"] = backend
    if backend in HEADLESS:
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    return backend


# the MUJOCO_GL values MuJoCo imports with (mujoco/gl_context.py), by system; any other value is
# a RuntimeError from `import mujoco`
MUJOCO_GL_VALUES = ("disable", "disabled", "off", "false", "0", "enable", "enabled", "on", "true",
                    "1", "glfw", "")  # fmt: skip
MUJOCO_GL_SYSTEM = {"Linux": ("glx", "egl", "osmesa"), "Windows": ("wgl",), "Darwin": ("cgl",)}


def gl_mismatch() -> str | None:
    """Why MuJoCo refuses to import here, or None: ``MUJOCO_GL`` is no backend it knows (a typo),
    or it and ``PYOPENGL_PLATFORM`` name two headless backends (it needs them to agree)."""
    import platform as system

    backend = (os.environ.get("MUJOCO_GL") or "").strip().lower()
    platform = (os.environ.get("PYOPENGL_PLATFORM") or "").strip().lower()
    known = (*MUJOCO_GL_VALUES, *MUJOCO_GL_SYSTEM.get(system.system(), ()))
    if backend not in known:
        return (
            f"MUJOCO_GL={os.environ['MUJOCO_GL']!r} is not an OpenGL backend MuJoCo knows "
            f"({', '.join(repr(k) for k in known if k not in MUJOCO_GL_VALUES) or 'glfw'}, or "
            "'glfw' with a display); set MUJOCO_GL=egl (osmesa where EGL has no driver), or "
            "unset it to have one chosen"
        )
    if backend in HEADLESS and platform and platform != backend:
        return (
            f"MUJOCO_GL={backend!r} and PYOPENGL_PLATFORM={platform!r} name two OpenGL backends, "
            "which MuJoCo refuses; set both to one (egl or osmesa), or unset PYOPENGL_PLATFORM"
        )
    return None


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


def require_simulator(module: str, purpose: str):
    """Import ``module`` (``mujoco``, a gymnasium MuJoCo env, ``robosuite``) for ``purpose``, or
    a typed error: :class:`~envs.errors.InvalidOptionError` where the GL variables disagree
    (:func:`gl_mismatch`; it was a "missing system library" message), else
    :class:`~rollout.imports.MissingExtraError` naming the extra."""
    from envs.errors import InvalidOptionError
    from rollout.imports import require_package

    if problem := gl_mismatch():
        raise InvalidOptionError(f"{purpose} cannot render: {problem}")
    return require_package(module, "sim", purpose)


def gl_renderer() -> str | None:
    """The OpenGL renderer MuJoCo draws with here (``GL_RENDERER``: ``llvmpipe`` is Mesa's
    software renderer, a GPU's name its vendor driver), read from a 16×16 context; ``None`` where
    no context can be made. A benchmark records it: the same ``MUJOCO_GL=egl`` renders on the
    GPU or on the CPU, at very different speeds."""
    try:
        import mujoco
        from OpenGL import GL

        context = mujoco.GLContext(16, 16)
        try:
            context.make_current()
            name = GL.glGetString(GL.GL_RENDERER)
        finally:
            context.free()
    except Exception:  # no display, no library, no driver: nothing to record
        return None
    return name.decode(errors="replace") if isinstance(name, bytes) else None
