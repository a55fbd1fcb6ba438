"""Privileged progress worked by hand on the real Reacher, Pusher, Door and PickPlaceCan sims.

Bodies are moved along their slide joints (robosuite's: their joints' qpos) and the kinematics
recomputed (``mj_forward``); nothing is stepped, so the distances are exactly the ones placed.
``_start_episode`` is the hook ``reset`` calls to record what progress is measured against;
calling it after placing the bodies fixes the start distances to hand-chosen values.
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


def test_pusher_counts_the_push_stage_from_the_first_centimetre_pushed(pusher):
    # The line of the test above: object at a = 0.27 from the tip, goal at 0.57: reach 0.27,
    # push 0.30. Pushed 1 cm on (a = 0.28): push 0.29, pushed (0.30 - 0.29) / (0.30 - 0.05) =
    # 0.04 of the way: the push stage, 0.25 + 0.75 × 0.04 = 0.28, not the reach stage, where
    # the tip is now 0.28 away, farther than at the start: 0.
    tip = pusher.mj_data.body("tips_arm").xpos[:2].copy()
    u = np.array([-1.0, 0.0])
    _move_body(pusher, "goal", ("goal_slidex", "goal_slidey"), tip + 0.57 * u)
    _move_body(pusher, "object", ("obj_slidex", "obj_slidey"), tip + 0.27 * u)
    pusher._start_episode()
    _move_body(pusher, "object", ("obj_slidex", "obj_slidey"), tip + 0.28 * u)
    assert pusher.progress() == pytest.approx(0.28, abs=1e-9)


def test_door_progress_pays_the_handle_turn_then_the_swing_by_hand():
    # Stages: reach the handle (30 %), turn it a quarter turn (20 %), swing the door 0.3 rad
    # (50 %, robosuite's success past 0.3). The joints are set directly, nothing stepped.
    env = envs.make_task_env("Door")
    try:
        env.reset(seed=0)
        rs = env.robosuite
        assert rs.use_latch

        def door_at(hinge: float, handle: float) -> None:
            rs.sim.data.qpos[rs.hinge_qpos_addr] = hinge
            rs.sim.data.qpos[rs.handle_qpos_addr] = handle
            rs.sim.forward()

        # handle turned π/4, half of π/2, either way: 0.3 + 0.2 × 0.5 = 0.4
        door_at(0.0, 0.25 * np.pi)
        assert env.progress() == pytest.approx(0.4)
        door_at(0.0, -0.25 * np.pi)
        assert env.progress() == pytest.approx(0.4)
        door_at(0.0, np.pi)  # past a quarter turn: the stage's whole 20 %
        assert env.progress() == pytest.approx(0.5)
        # swung 0.15 rad, half of 0.3: 0.5 + 0.5 × 0.5 = 0.75, whatever the handle reads
        door_at(0.15, 0.0)
        assert env.progress() == pytest.approx(0.75)
        door_at(0.15, 0.25 * np.pi)
        assert env.progress() == pytest.approx(0.75)
        # 0.29 rad: 0.5 + 0.5 × 29 / 30 = 0.98333, not yet open; 0.31: open, exactly 1
        door_at(0.29, 0.0)
        assert not env.is_success() and env.progress() == pytest.approx(0.5 + 0.5 * 29 / 30)
        door_at(0.31, 0.0)
        assert env.is_success() and env.progress() == 1.0
        # the latch sags under gravity alone (0.0103 rad by step 285 of an untouched episode):
        # past the old 0.01, an untouched handle was paid the reach and the turn's start, 0.30
        door_at(0.0, -0.0145)
        assert env.progress() < 0.3
        door_at(0.0, -0.06)  # turned: the expert passes 0.05 within a few steps of touching it
        assert env.progress() == pytest.approx(0.3 + 0.2 * 0.06 / (0.5 * np.pi))
    finally:
        env.close()


def test_pick_place_can_pays_the_carry_only_as_far_as_the_can_is_lifted():
    # Stages: reach (20 %), grasp (10 %), lift 10 cm (20 %), carry over the bin (40 %), drop in
    # (10 %, success): 0.3 + 0.2 × lifted + 0.4 × carried × lifted once held.
    env = envs.make_task_env("PickPlaceCan")
    try:
        env.reset(seed=0)
        rs = env.robosuite
        joint = env._can().joints[0]
        start = rs.sim.data.get_joint_qpos(joint).copy()
        target = env._target_xy()

        def can_at(dz: float = 0.0, share: float = 0.0) -> None:
            """The can ``dz`` above where it stood, a ``share`` of the way over the bin."""
            qpos = start.copy()
            qpos[:2] += share * (target - start[:2])
            qpos[2] += dz
            rs.sim.data.set_joint_qpos(joint, qpos)
            rs.sim.forward()

        env._grasping = lambda obj: True  # held: reach and grasp paid (30 %)
        can_at()
        assert env.progress() == pytest.approx(0.3)
        # carried half the way over the bin without lifting it (slid on the table): the carry
        # pays nothing, 0.3 (it would pay 0.4 × 0.515 more if it did not need the lift)
        xy0 = env.privileged_state()["can_over_target_spot_cm"] / 100  # seed 0: 69.42 cm
        can_at(share=0.5)
        xy = env.privileged_state()["can_over_target_spot_cm"] / 100
        assert xy == pytest.approx(xy0 / 2)
        carried = (xy0 - xy) / (xy0 - 0.02)  # 0.3471 / 0.6742 = 0.515 of the way to 2 cm
        assert env.progress() == pytest.approx(0.3)
        # lifted 5 cm of 10: 0.3 + 0.2 × 0.5 = 0.4 where it stood; half the way over the bin
        # the carry pays half: 0.4 + 0.4 × 0.515 × 0.5 = 0.503
        can_at(dz=0.05)
        assert env.progress() == pytest.approx(0.4)
        can_at(dz=0.05, share=0.5)
        assert env.progress() == pytest.approx(0.4 + 0.4 * carried * 0.5)
        assert env.progress() == pytest.approx(0.503, abs=1e-3)
        # lifted the whole 10 cm: 0.5 + 0.4 × 0.515 = 0.706
        can_at(dz=0.10, share=0.5)
        assert env.progress() == pytest.approx(0.5 + 0.4 * carried)
        # over the target bin the lift has done its work: lowered into it, held, the carry's
        # 0.9 (within 2 cm of the bin's middle) stays; let go there, 0.9 until it is in (the
        # reach stage's 0.2 was paid: a dip of 0.67 at every expert's release)
        bin_z = rs.bin2_pos[2]
        for dz in (0.10, bin_z + 0.105 - start[2]):  # 0.5 cm above where it counts as in
            can_at(dz=dz, share=1.0)
            assert env._over_target_bin(env._can_pos()) and not env.is_success()
            assert env.progress() == pytest.approx(0.9)
        env._grasping = lambda obj: False
        can_at(dz=0.10, share=1.0)
        assert env.progress() == pytest.approx(0.9)
        can_at(share=0.5)  # let go on the way: the reach stage's, no more than 0.2
        assert env.progress() <= 0.2
        # standing on the divider's top, never to drop in: not over the bin (it read 0.9)
        qpos = start.copy()
        qpos[:3] = [rs.bin2_pos[0] + 0.005, rs.bin2_pos[1] + 0.005, 0.94]
        rs.sim.data.set_joint_qpos(joint, qpos)
        rs.sim.forward()
        assert not env._over_target_bin(env._can_pos()) and env.progress() <= 0.2
    finally:
        env.close()
