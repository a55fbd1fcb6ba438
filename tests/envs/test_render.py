"""What the critic sees: shapes, tiling, render-only appearance, geom groups, GL backend choice."""

from __future__ import annotations

import numpy as np
import pytest

import envs
from envs.gl import select_gl_backend
from envs.render import CriticView, ViewRenderer


@pytest.mark.parametrize("task", ["Reacher-v5", "Lift"])
def test_frames_are_uint8_of_the_spec_shape(task):
    env = envs.make_task_env(task)
    env.reset(seed=0)
    frame = env.render_critic_view()
    assert frame.dtype == np.uint8 and frame.shape == envs.get_task(task).view.frame_shape
    assert frame.std() > 0  # not a blank image
    env.close()


def test_cameras_tile_left_to_right():
    tiled = envs.make_task_env("Lift", camera=["agentview", "robot0_eye_in_hand"], image_size=64)
    single = envs.make_task_env("Lift", camera="agentview", image_size=64)
    tiled.reset(seed=2)
    single.reset(seed=2)
    frame = tiled.render_critic_view()
    assert frame.shape == (64, 128, 3)
    np.testing.assert_array_equal(frame[:, :64], single.render_critic_view())
    assert not np.array_equal(frame[:, 64:], frame[:, :64])
    tiled.close()
    single.close()


def test_appearance_is_render_only():
    rendered, blind = envs.make_task_env("Reacher-v5"), envs.make_task_env("Reacher-v5")
    target = rendered.mj_model.geom("target").id
    size, rgba = (
        rendered.mj_model.geom_size[target].copy(),
        rendered.mj_model.geom_rgba[target].copy(),
    )
    obs_a, _ = rendered.reset(seed=4)
    obs_b, _ = blind.reset(seed=4)
    rng = np.random.default_rng(0)
    for _ in range(20):
        action = rng.uniform(-1, 1, 2).astype(np.float32)
        rendered.render_critic_view()
        obs_a, *_ = rendered.step(action)
        obs_b, *_ = blind.step(action)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rendered.mj_model.geom_size[target], size)
    np.testing.assert_array_equal(rendered.mj_model.geom_rgba[target], rgba)
    rendered.close()
    blind.close()


def _red_pixels(frame: np.ndarray) -> int:
    r, g, b = (frame[..., i].astype(int) for i in range(3))
    return int(((r > 2 * g + 20) & (r > 2 * b + 20)).sum())


def test_enlarged_flat_target_is_more_visible():
    env = envs.make_task_env("Reacher-v5")
    env.reset(seed=0)
    spec_view = env.view
    plain = ViewRenderer(env.mj_model, CriticView(cameras=spec_view.cameras, height=64, width=64))
    # The target is drawn 3× larger in flat red: about 9× the area of the plain view's target.
    assert _red_pixels(env.render_critic_view()) > 4 * max(
        _red_pixels(plain.render(env.mj_data)), 1
    )
    plain.close()
    env.close()


def test_collision_only_view_differs_from_the_visual_view():
    env = envs.make_task_env("Lift")
    env.reset(seed=0)
    visual = ViewRenderer(env.mj_model, CriticView(cameras=("agentview",)))
    collision = env.render_critic_view()
    full = visual.render(env.mj_data)
    assert collision.std() > 0 and full.std() > 0
    assert not np.array_equal(collision, full)
    visual.close()
    env.close()


def test_gl_backend_respects_the_user(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    assert select_gl_backend() == "osmesa"
    import os

    assert os.environ["PYOPENGL_PLATFORM"] == "osmesa"


def test_gl_backend_defaults_to_egl_when_installed(monkeypatch):
    import ctypes.util

    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    if ctypes.util.find_library("EGL") is None:
        pytest.skip("no EGL library on this machine")
    from envs.gl import _egl_vendor_present

    if not _egl_vendor_present() and ctypes.util.find_library("OSMesa"):
        pytest.skip("EGL has no driver to load here: OSMesa is chosen (tests/envs/test_gl.py)")
    assert select_gl_backend() == "egl"


def test_rendering_works_when_mujoco_was_imported_before_envs():
    # mujoco fixes its GL backend at import; without MUJOCO_GL set that is GLFW (needs a display).
    import os
    import subprocess
    import sys

    code = (
        "import mujoco, envs; e = envs.make_task_env('Reacher-v5'); e.reset(seed=0); "
        "print(e.render_critic_view().shape); e.close()"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-1500:]
    assert out.stdout.strip() == "(56, 56, 3)"
