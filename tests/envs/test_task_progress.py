"""Privileged progress worked by hand on the real Reacher and Pusher sims.

Bodies are moved along their slide joints and the kinematics recomputed (``mj_forward``); nothing is
stepped, so the distances are exactly the ones placed. ``_start_episode`` is the hook ``reset``
calls to record what progress is measured against; calling it after placing the bodies fixes the
start distances to hand-chosen values.
"""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

import envs


def _move_body(env, body: str, joints: tuple[str, str], xy: np.ndarray) -> None:
    """Slide ``body`` (x joint, y joint) so its centre is at ``xy`` in the plane."""
    model, data = env.mj_model, env.mj_data
    delta = np.asarray(xy) - data.body(body).xpos[:2]
    for axis, joint in enumerate(joints):
        data.qpos[model.joint(joint).qposadr[0]] += delta[axis]
    mujoco.mj_forward(model, data)


@pytest.fixture
def reacher():
    env = envs.make_task_env("Reacher-v5")
    env.reset(seed=0)
    yield env
    env.close()


@pytest.fixture
def pusher():
    env = envs.make_task_env("Pusher-v5")
    env.reset(seed=0)
    yield env
    env.close()


def test_reacher_progress_is_the_fraction_of_the_start_distance_closed(reacher):
    tip = reacher.mj_data.body("fingertip").xpos[:2].copy()
    left = np.array([-1.0, 0.0])

    def place_target(distance: float) -> None:
        _move_body(reacher, "target", ("target_x", "target_y"), tip + distance * left)

    place_target(0.20)
    reacher._start_episode()  # start distance 0.20 (above the 0.05 floor)
    assert reacher.progress() == pytest.approx(0.0, abs=1e-9)
    # 0.20 → 0.11 closes 0.09 of the 0.20 - 0.02 = 0.18 to close: 0.5.
    place_target(0.11)
    assert reacher.progress() == pytest.approx(0.5, abs=1e-9)
    # 0.025 is just outside the 0.02 success radius: 0.175 / 0.18 = 35/36, still below 1.
    place_target(0.025)
    assert not reacher.is_success()
    assert reacher.progress() == pytest.approx(35 / 36, abs=1e-9)
    # Inside the radius: success, and progress is exactly 1.
    place_target(0.015)
    assert reacher.is_success() and reacher.progress() == 1.0
    # Farther than the start: clipped to 0.
    place_target(0.25)
    assert reacher.progress() == 0.0


def test_reacher_start_distance_has_a_floor(reacher):
    # A target spawned 0.01 away would leave only -0.01 to close; the floor makes the start
    # max(0.01, 0.02 + 0.03) = 0.05, so at 0.035 progress is (0.05 - 0.035) / (0.05 - 0.02) = 0.5.
    tip = reacher.mj_data.body("fingertip").xpos[:2].copy()
    right = np.array([1.0, 0.0])
    _move_body(reacher, "target", ("target_x", "target_y"), tip + 0.01 * right)
    reacher._start_episode()
    assert reacher.is_success() and reacher.progress() == 1.0
    _move_body(reacher, "target", ("target_x", "target_y"), tip + 0.035 * right)
    assert reacher.progress() == pytest.approx(0.5, abs=1e-9)


def test_reacher_start_floor_is_an_option():
    # Under a 15 cm floor a start 8 cm away is measured from 15 cm: at the start progress is
    # (0.15 - 0.08) / (0.15 - 0.02) = 7/13, at 5 cm (0.15 - 0.05) / 0.13 = 10/13.
    env = envs.make_task_env("Reacher-v5", min_start_distance=0.15)
    try:
        env.reset(seed=0)
        task = env.unwrapped
        tip = task.mj_data.body("fingertip").xpos[:2].copy()
        right = np.array([1.0, 0.0])
        _move_body(task, "target", ("target_x", "target_y"), tip + 0.08 * right)
        task._start_episode()
        assert task.progress() == pytest.approx(7 / 13, abs=1e-9)
        _move_body(task, "target", ("target_x", "target_y"), tip + 0.05 * right)
        assert task.progress() == pytest.approx(10 / 13, abs=1e-9)
        # a start beyond the floor is unchanged: the fraction of its own distance closed
        _move_body(task, "target", ("target_x", "target_y"), tip + 0.20 * right)
        task._start_episode()
        _move_body(task, "target", ("target_x", "target_y"), tip + 0.11 * right)
        assert task.progress() == pytest.approx(0.5, abs=1e-9)
    finally:
        env.close()
    for bad in (0.02, 0.01, 1.5, "5cm", True):
        with pytest.raises(envs.InvalidOptionError, match=f"min_start_distance={bad!r} must be"):
            envs.make_task_env("Reacher-v5", min_start_distance=bad)


def test_pusher_progress_weights_reach_then_push(pusher):
    # Everything on one line from the arm tip T, direction u:
    #   T ---- object ---- goal,  object at T + a·u, goal fixed at T + 0.57·u.
    # Start: object at a = 0.27: reach 0.27, push 0.30 (both above their floors 0.12 and 0.10).
    tip = pusher.mj_data.body("tips_arm").xpos[:2].copy()
    u = np.array([-1.0, 0.0])

    def place_object(a: float) -> None:
        _move_body(pusher, "object", ("obj_slidex", "obj_slidey"), tip + a * u)

    _move_body(pusher, "goal", ("goal_slidex", "goal_slidey"), tip + 0.57 * u)
    place_object(0.27)
    pusher._start_episode()
    assert pusher.progress() == pytest.approx(0.0, abs=1e-9)
    # a = 0.17: reach 0.17, push 0.40 (worse than the start, so the push stage counts 0).
    # Reach stage: 0.25 × (0.27 - 0.17) / (0.27 - 0.07) = 0.25 × 0.5 = 0.125.
    place_object(0.17)
    assert pusher.progress() == pytest.approx(0.125, abs=1e-9)
    # a = 0.445: push 0.125, pushed (0.30 - 0.125) / (0.30 - 0.05) = 0.7.
    # Push stage: 0.25 + 0.75 × 0.7 = 0.775.
    place_object(0.445)
    assert pusher.progress() == pytest.approx(0.775, abs=1e-9)
    # a = 0.515: push 0.055, just outside the 0.05 radius: 0.25 + 0.75 × 0.245 / 0.25 = 0.985.
    place_object(0.515)
    assert not pusher.is_success()
    assert pusher.progress() == pytest.approx(0.985, abs=1e-9)
    # a = 0.54: push 0.03 < 0.05: success, progress exactly 1.
    place_object(0.54)
    assert pusher.is_success() and pusher.progress() == 1.0
