"""Choosing and binding the headless GL backend.

Every test changes the environment only through ``monkeypatch``, so the process's real GL choice
(made when ``envs`` was imported) is back in place afterwards.
"""

from __future__ import annotations

import ctypes.util
import os

import pytest

import envs.gl
from envs.gl import bind_mujoco_backend, gl_mismatch, select_gl_backend

_VENDOR_PRESENT = envs.gl._egl_vendor_present  # the real one, before a test stands one in


@pytest.fixture
def clean_gl_env(monkeypatch):
    """Neither variable set; setenv first so that monkeypatch restores the real values. EGL has
    a driver to load, whatever this machine has (a test that needs none says so)."""
    for name in ("MUJOCO_GL", "PYOPENGL_PLATFORM"):
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)
    for name in ("__EGL_VENDOR_LIBRARY_DIRS", "__EGL_VENDOR_LIBRARY_FILENAMES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(envs.gl, "_egl_vendor_present", lambda: True)
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


@pytest.mark.parametrize("platform", ["osmesa", "EGL"])
def test_a_pyopengl_platform_set_alone_picks_the_backend(clean_gl_env, platform):
    # dm_control's headless set-up: PYOPENGL_PLATFORM=osmesa alone. EGL was picked beside it, and
    # MuJoCo refused to import ("should be either unset or 'egl'"): no task could be built
    clean_gl_env.setattr(ctypes.util, "find_library", _libraries("EGL", "OSMesa"))
    clean_gl_env.setenv("PYOPENGL_PLATFORM", platform)
    assert select_gl_backend() == platform.lower()
    assert os.environ["MUJOCO_GL"] == platform.lower() and gl_mismatch() is None


def test_an_empty_mujoco_gl_is_unset(clean_gl_env):
    # MUJOCO_GL= (an empty export) was kept as a choice: MuJoCo fell back to GLFW, with no display
    clean_gl_env.setattr(ctypes.util, "find_library", _libraries("EGL", "OSMesa"))
    clean_gl_env.setenv("MUJOCO_GL", " ")
    assert select_gl_backend() == "egl" and os.environ["MUJOCO_GL"] == "egl"


def test_an_unreadable_vendor_folder_does_not_stop_the_import(clean_gl_env, tmp_path):
    clean_gl_env.setattr(envs.gl, "_egl_vendor_present", _VENDOR_PRESENT)
    clean_gl_env.setenv("__EGL_VENDOR_LIBRARY_DIRS", f"{tmp_path / 'file'}:{tmp_path}")
    (tmp_path / "file").write_text("not a folder")  # listdir raises NotADirectoryError
    assert _VENDOR_PRESENT() is False


def test_egl_without_a_driver_to_load_falls_back_to_osmesa(clean_gl_env, tmp_path):
    # glvnd's libEGL with no vendor JSON (a compute-only GPU container): EGL failed at the first
    # render, though OSMesa was installed
    clean_gl_env.setattr(ctypes.util, "find_library", _libraries("EGL", "OSMesa"))
    clean_gl_env.setattr(envs.gl, "_egl_vendor_present", _VENDOR_PRESENT)  # the real check
    clean_gl_env.setenv("__EGL_VENDOR_LIBRARY_DIRS", str(tmp_path))  # no *.json there
    assert select_gl_backend() == "osmesa"
    clean_gl_env.delenv("MUJOCO_GL")
    clean_gl_env.delenv("PYOPENGL_PLATFORM")
    (tmp_path / "50_mesa.json").write_text("{}")
    assert select_gl_backend() == "egl"
    clean_gl_env.delenv("MUJOCO_GL")
    clean_gl_env.delenv("PYOPENGL_PLATFORM")
    (tmp_path / "50_mesa.json").unlink()
    clean_gl_env.setattr(ctypes.util, "find_library", _libraries("EGL"))  # no OSMesa either
    assert select_gl_backend() == "egl"  # MuJoCo says why at the first render


def test_two_backends_named_are_a_typed_error_naming_both(clean_gl_env):
    import envs

    clean_gl_env.setenv("MUJOCO_GL", "egl")
    clean_gl_env.setenv("PYOPENGL_PLATFORM", "osmesa")
    message = (
        "the MuJoCo task 'Reacher-v5' cannot render: MUJOCO_GL='egl' and "
        "PYOPENGL_PLATFORM='osmesa' name two OpenGL backends, which MuJoCo refuses; set both to "
        "one (egl or osmesa), or unset PYOPENGL_PLATFORM"
    )
    with pytest.raises(envs.InvalidOptionError) as err:
        envs.make_task_env("Reacher-v5")
    assert str(err.value) == message


def test_a_mistyped_mujoco_gl_is_a_typed_error_naming_the_backends(clean_gl_env):
    # `import mujoco` raised a bare RuntimeError ("invalid value for environment variable
    # MUJOCO_GL: egll") through every entry point, with no word of the values it takes
    import envs

    clean_gl_env.setenv("MUJOCO_GL", "egll")
    with pytest.raises(envs.InvalidOptionError) as err:
        envs.make_task_env("Reacher-v5")
    assert str(err.value) == (
        "the MuJoCo task 'Reacher-v5' cannot render: MUJOCO_GL='egll' is not an OpenGL backend "
        "MuJoCo knows ('glx', 'egl', 'osmesa', or 'glfw' with a display); set MUJOCO_GL=egl "
        "(osmesa where EGL has no driver), or unset it to have one chosen"
    )
    for value in (" EGL ", "osmesa", "glfw", "disable", "1"):  # what MuJoCo takes, any case
        clean_gl_env.setenv("MUJOCO_GL", value)
        assert gl_mismatch() is None, value


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


def _in_a_forked_child(work, timeout_s: float = 60.0):
    """``work()``'s result (or the repr of what it raised) in a child forked from this process,
    as gymnasium's AsyncVectorEnv starts its workers; "hung" when it had not ended in time."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    answers = context.Queue()

    def child():
        try:
            answers.put(("ok", work()))
        except BaseException as exc:  # what it raised is the answer
            answers.put(("raised", f"{type(exc).__name__}: {exc}"))

    process = context.Process(target=child)
    process.start()
    process.join(timeout_s)
    if process.is_alive():
        process.kill()
        process.join()
        return ("hung", None)
    return answers.get(timeout=5)


def test_a_child_forked_after_rendering_says_so_instead_of_hanging():
    # a new GL context in a child forked from a process that had rendered hung (EGL and OSMesa)
    from envs import make_task_env

    env = make_task_env("Reacher-v5")
    env.reset(seed=0)
    env.render_critic_view()  # this process has a GL context now

    def render_in_child():
        child_env = make_task_env("Reacher-v5")
        child_env.reset(seed=0)
        return child_env.render_critic_view().shape

    kind, said = _in_a_forked_child(render_in_child)
    env.close()
    assert kind == "raised", (kind, said)
    assert said.startswith("RenderError: this process was forked from one that had rendered (pid ")
    assert "start worker processes with 'forkserver' or 'spawn'" in said


def test_torch_in_a_child_forked_after_torch_ran_does_not_hang():
    # a parent's OpenMP pool is unusable in a forked child: its first parallel operation hung
    import torch

    a = torch.randn(512, 512)
    (a @ a).sum()  # the parent's pool

    def matmul_in_child():
        b = torch.randn(512, 512)
        return torch.get_num_threads(), float((b @ b).sum()) != 0.0

    assert _in_a_forked_child(matmul_in_child, timeout_s=30.0) == ("ok", (1, True))
