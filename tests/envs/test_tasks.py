"""Every registered task as a bare gymnasium env, on its real simulator."""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from envs import InvalidOptionError, RenderError, UnknownTaskError
from envs.experts import make_expert
from envs.mujoco_tasks import _fraction_closed

TASKS = envs.task_names()


def test_the_issue_tasks_are_registered():
    assert set(TASKS) >= {"Lift", "Stack", "Door", "PickPlaceCan", "Reacher-v5", "Pusher-v5"}


def _actions(env: gym.Env, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    space = env.action_space
    return [rng.uniform(space.low, space.high).astype(space.dtype) for _ in range(n)]


@pytest.mark.parametrize("task", TASKS)
def test_bare_env_passes_checkers_and_reports_progress(task):
    env = envs.make_task_env(task, render_mode="rgb_array")
    try:
        gym_check_env(env, skip_render_check=False)
        sb3_check_env(env, warn=False)
        _, info = env.reset(seed=0)
        assert 0.0 <= info["progress"] <= 1.0 and isinstance(info["is_success"], bool)
        for action in _actions(env, 5, seed=0):
            _, reward, terminated, truncated, info = env.step(action)
            assert np.isfinite(reward)
            assert not terminated and not truncated  # the horizon is TimeLimit's job
            assert 0.0 <= info["progress"] <= 1.0 and isinstance(info["is_success"], bool)
        assert env.render().shape == env.view.frame_shape
        assert env.instruction == envs.get_task(task).instruction
    finally:
        env.close()


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_same_rollout_other_seed_other_start(task):
    def rollout(seed: int) -> np.ndarray:
        env = envs.make_task_env(task)
        obs, info = env.reset(seed=seed)
        out = [obs, [info["progress"]]]
        for action in _actions(env, 10, seed=1):
            obs, reward, _, _, info = env.step(action)
            out += [obs, [reward, info["progress"]]]
        env.close()
        return np.concatenate([np.asarray(o, np.float64).ravel() for o in out])

    first = rollout(3)
    np.testing.assert_array_equal(first, rollout(3))
    assert not np.array_equal(first, rollout(4))


def test_time_limit_truncates_exactly_at_the_horizon():
    spec = envs.get_task("Reacher-v5")
    env = gym.wrappers.TimeLimit(envs.make_task_env("Reacher-v5"), spec.horizon)
    env.reset(seed=0)
    for t in range(1, spec.horizon + 1):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        assert truncated == (t == spec.horizon) and not terminated
    env.close()


def test_fraction_closed_by_hand():
    # From 0.20 to a goal of 0.02 is 0.18 to close; at 0.11, 0.09 is closed: 0.09 / 0.18 = 0.5.
    assert _fraction_closed(0.20, 0.11, 0.02) == pytest.approx(0.5)
    assert _fraction_closed(0.20, 0.30, 0.02) == 0.0  # farther than the start: clipped
    assert _fraction_closed(0.20, 0.01, 0.02) == 1.0  # past the goal: clipped


def test_reacher_touching_the_target_is_success_and_full_progress():
    env = envs.make_task_env("Reacher-v5")
    env.reset(seed=0)
    inner = env._inner
    qpos, qvel = inner.data.qpos.copy(), inner.data.qvel.copy()
    qpos[2:4] = inner.data.body("fingertip").xpos[:2]  # move the target under the fingertip
    inner.set_state(qpos, qvel)
    mujoco.mj_forward(env.mj_model, env.mj_data)
    assert env.is_success() and env.progress() == 1.0
    env.close()


def _cube_mover(rs, cube, toward=None):
    """Place robosuite's ``cube``: ``dx`` from its spawn along x, ``dz`` above where it rests
    (the table's top plus half the cube; robosuite spawns it 1 cm above, and measured from there
    a cube at rest read -1.0 cm), a share ``toward`` of the way to the xy point ``toward``."""
    joint = cube.joints[0]
    start = rs.sim.data.get_joint_qpos(joint).copy()
    rest = 0.8 + cube.size[2]
    assert start[2] == pytest.approx(rest + 0.01)

    def move(dx: float = 0.0, dz: float = 0.0, share: float = 0.0) -> None:
        qpos = start.copy()
        qpos[0] += dx
        if share:
            qpos[:2] += share * (toward - start[:2])
        qpos[2] = rest + dz
        rs.sim.data.set_joint_qpos(joint, qpos)
        rs.sim.forward()

    return move, start, rest


def test_lift_progress_rises_through_its_stages_when_the_cube_is_carried():
    # Stages: reach (40 %), grasp (10 %), lift to robosuite's 4 cm above the table (50 %).
    env = envs.make_task_env("Lift")
    env.reset(seed=0)
    rs = env.robosuite
    cube_at, _, rest = _cube_mover(rs, rs.cube)  # heights from where the cube rests

    assert env.privileged_state()["cube_height_cm"] == pytest.approx(1.0)

    assert env.progress() == 0.0  # nothing reached yet
    reach0 = env.privileged_state()["gripper_to_cube_cm"] / 100
    # the cube slid 5 cm toward the gripper (it starts behind the cube, at lower x): the reach
    # stage pays 40 % of the share of the distance closed to 1 cm
    cube_at(dx=-0.05, dz=0.01)  # at its spawn height
    reach = env.privileged_state()["gripper_to_cube_cm"] / 100
    assert reach < reach0 - 0.02
    assert env.progress() == pytest.approx(0.4 * (reach0 - reach) / (reach0 - 0.01))
    # held in the gripper: reach and grasp done (50 %), then the lift's share of the way from
    # the cube's rest height to the success height
    env._grasping = lambda obj: True
    cube_at()
    assert env.privileged_state()["cube_height_cm"] == pytest.approx(0.0, abs=1e-9)
    assert env.progress() == pytest.approx(0.5)
    rise = 0.84 - rest  # robosuite's success height: 4 cm above the table's top
    cube_at(dz=0.01)  # the first centimetre of the lift pays (it read 0.5 from the spawn height)
    assert env.progress() == pytest.approx(0.5 + 0.5 * 0.01 / rise) and 0.01 / rise > 0.45
    cube_at(dz=rise / 2)
    assert env.progress() == pytest.approx(0.75)
    cube_at(dz=rise + 0.01)  # above robosuite's threshold: success, whatever the stages say
    del env._grasping
    assert env.is_success() and env.progress() == 1.0
    env.close()


def test_stack_progress_pays_reach_grasp_lift_and_carry_by_hand():
    # Stages: reach red (30 %), grasp (5 %), lift 4 cm (15 %), carry over green (40 %), release
    # on it (10 %, success); the carry pays only as far as the cube is lifted.
    env = envs.make_task_env("Stack")
    env.reset(seed=0)
    rs = env.robosuite
    green = rs.sim.data.get_joint_qpos(rs.cubeB.joints[0])[:2].copy()
    move, start, _ = _cube_mover(rs, rs.cubeA, toward=green)

    def red_at(dx: float = 0.0, dz: float = 0.0, toward_green: float = 0.0) -> None:
        move(dx, dz, toward_green)

    assert env.progress() == 0.0
    reach0 = env.privileged_state()["gripper_to_red_cube_cm"] / 100
    red_at(
        dx=-0.05, dz=0.01
    )  # 5 cm toward the gripper (behind it, at lower x), at its spawn height
    reach = env.privileged_state()["gripper_to_red_cube_cm"] / 100
    assert reach < reach0 - 0.02
    assert env.progress() == pytest.approx(0.3 * (reach0 - reach) / (reach0 - 0.01))
    env._grasping = lambda obj: True  # held: reach and grasp paid (35 %)
    red_at()
    assert env.progress() == pytest.approx(0.35)
    red_at(dz=0.02)  # half the lift, not moved toward green: 0.35 + 0.15 / 2
    assert env.progress() == pytest.approx(0.425)
    xy0 = float(np.linalg.norm(green - start[:2]))
    # lifted, a fifth of the way over green (not yet touching it, which robosuite would call
    # stacked once released): 0.5 + 0.4 × the share of the way carried
    red_at(dz=0.04, toward_green=0.2)
    assert not env.robosuite.check_contact(rs.cubeA, rs.cubeB)
    xy = env.privileged_state()["red_cube_over_green_cube_cm"] / 100
    assert xy == pytest.approx(xy0 * 0.8)
    assert env.progress() == pytest.approx(0.5 + 0.4 * (xy0 - xy) / (xy0 - 0.01))
    red_at(dz=0.02, toward_green=0.2)  # the same place half as high: the carry pays half
    assert env.progress() == pytest.approx(0.35 + 0.075 + 0.4 * (xy0 - xy) / (xy0 - 0.01) * 0.5)
    env.close()


def test_unknown_task():
    with pytest.raises(UnknownTaskError) as err:
        envs.get_task("Nope")
    assert str(err.value) == (
        f"unknown task 'Nope'; registered tasks: {TASKS}. Pass one of these as env=..., or "
        "register your own with envs.register_task (docs/tasks.md; the experiment scripts import "
        "its module with imports=[my_tasks])."
    )
    # in a spawn / forkserver worker (gymnasium's AsyncVectorEnv), where a task registered
    # under the __main__ guard never ran (checked by hand with a spawn Process)
    import multiprocessing

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(multiprocessing, "parent_process", lambda: object())
        with pytest.raises(UnknownTaskError) as err:
            envs.get_task("Nope")
    assert str(err.value).endswith(
        "imports=[my_tasks]). This is a worker process: it has the tasks registered when its "
        "modules are imported, so register yours at a module's top level (not under `if "
        '__name__ == "__main__":`), or use envs.vec_env.make_viscritic_vec_env, which hands its '
        "workers the spec."
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"image_size": 8},
            "image_size=8 is not valid; pass an int or (height, width) with each side between "
            "16 and 1024 pixels",
        ),
        (
            {"image_size": (64, "a")},
            "image_size=(64, 'a') is not valid; pass an int or (height, width) with each side "
            "between 16 and 1024 pixels",
        ),
        (
            {"camera": []},
            "camera=[] names no camera; pass a camera name, or a list of names to tile",
        ),
        (
            {"render_mode": "human"},
            "render_mode='human' is not supported; use None or 'rgb_array' (headless: the "
            "critic's view is returned as an image)",
        ),
    ],
)
def test_bad_task_options(options, message):
    with pytest.raises(InvalidOptionError) as err:
        envs.make_task_env("Reacher-v5", **options)
    assert str(err.value) == message


def test_unknown_camera_is_caught_when_the_env_is_built():
    with pytest.raises(RenderError) as err:
        envs.make_task_env("Lift", camera="nope")
    assert str(err.value).startswith("unknown camera 'nope'; this model has cameras ['frontview'")
    assert str(err.value).endswith(
        "Pass one of these, a list of them to tile, or an envs.FreeCamera"
    )


@pytest.mark.parametrize("task", TASKS)
def test_privileged_state_speaks_the_reasoning_vocabulary(task):
    import re

    from critic.data.reasoning import describe

    env = envs.make_task_env(task)
    env.reset(seed=0)
    state = env.unwrapped.privileged_state()
    env.close()
    assert state and all(np.isfinite(v) for v in state.values())
    # the goal distance the RL report splits test starts by is one of them, or none is named
    goal = envs.get_task(task).goal_distance
    assert goal is None or (goal in state and goal.endswith("_cm"))
    for key, value in state.items():
        # Every name is one the chain-of-thought writer has wordings for, not the generic fallback.
        assert not re.fullmatch(
            r".* is -?\d+\.\d\d", describe(key, value, np.random.default_rng(0))
        )


def test_an_option_a_task_does_not_take_is_named():
    with pytest.raises(InvalidOptionError) as err:
        envs.make_task_env("Reacher-v5", min_start_distance=0.1, bogus=1)
    assert str(err.value).startswith(
        "bogus=1 is not an option of the task 'Reacher-v5' (MujocoEnv.__init__() got an "
        "unexpected keyword argument 'bogus'); remove it or correct its name: task options are "
        "Reacher-v5's own (min_start_distance) and its simulator's constructor arguments"
    )
    # through the wrapper's task_kwargs, which must be a mapping
    with pytest.raises(InvalidOptionError, match=r"^bogus=1 is not an option of the task"):
        gym.make("VisCriticReward-v0", env="Reacher-v5", critic="oracle", task_kwargs={"bogus": 1})
    with pytest.raises(InvalidOptionError) as err:
        gym.make("VisCriticReward-v0", env="Reacher-v5", critic="oracle", task_kwargs="x")
    assert str(err.value) == (
        "task_kwargs='x' must be a mapping of option names to values, e.g. "
        "{'min_start_distance': 0.15} on Reacher-v5, or None"
    )


@pytest.mark.parametrize("task", ["Reacher-v5", "Pusher-v5"])
def test_step_before_reset_is_reset_needed_not_a_wrong_reward(task):
    env = envs.make_task_env(task)  # bare: gym.make's OrderEnforcing is not there
    with pytest.raises(gym.error.ResetNeeded) as err:
        env.step(env.action_space.sample())
    assert str(err.value) == f"{task}: step() before reset(); call env.reset(seed=...) first"
    env.close()


@pytest.mark.parametrize("task", ["Reacher-v5", "Pusher-v5", "Lift"])
def test_reading_the_task_before_reset_is_reset_needed_not_a_success(task):
    # Before the first reset MuJoCo's derived positions are all zero: every distance read 0, and
    # the task reported success from nothing done (and an expert marked its failure at step 0).
    # robosuite's tasks read the state robosuite built them in (Lift: progress 0.0, the cube
    # "1.0 cm" high), and after close an AttributeError from inside robosuite.
    env = envs.make_task_env(task)
    for name in ("is_success", "progress", "privileged_state", "render_critic_view"):
        with pytest.raises(gym.error.ResetNeeded) as err:
            getattr(env, name)()
        assert str(err.value) == (
            f"{task}: {name}() before reset(); call env.reset(seed=...) first"
        )
    expert = make_expert(task, "stall")
    with pytest.raises(gym.error.ResetNeeded, match=rf"^{task}: \w+\.reset\(\) before reset\(\)"):
        expert.reset(env, seed=0)
    env.reset(seed=0)
    assert not env.is_success() and env.progress() == 0.0
    env.close()
    for name in ("is_success", "progress", "privileged_state", "render_critic_view"):
        with pytest.raises(gym.error.ClosedEnvironmentError, match=rf"^{task}: the env is closed"):
            getattr(env, name)()


def test_seeds_and_actions_are_checked_at_the_task():
    env = envs.make_task_env("Reacher-v5")
    first, _ = env.reset(seed=np.int64(3))  # numpy's integers are seeds too
    again, _ = env.reset(seed=3)
    np.testing.assert_array_equal(first, again)
    for seed in (-1, "3", 1.5):
        with pytest.raises(InvalidOptionError) as err:
            env.reset(seed=seed)
        assert str(err.value) == (
            f"seed={seed!r} must be None or an integer >= 0, e.g. env.reset(seed=0)"
        )
    env.reset(seed=0)
    with pytest.raises(envs.InvalidActionError) as err:
        env.step(np.array([np.nan, 0.0]))
    assert str(err.value).startswith("Reacher-v5: action [nan, 0.0] is not finite")
    with pytest.raises(envs.InvalidActionError, match=r"must be an array of shape \(2,\)"):
        env.step(np.zeros(3))
    _, reward, *_ = env.step([0.1, -0.1])  # a list is an action
    assert np.isfinite(reward)
    env.close()


@pytest.mark.parametrize(
    ("task", "options", "message"),
    [
        ("Reacher-v5", {"frame_skip": 0},
         "frame_skip=0 must be an integer >= 1 (simulator steps per action)"),
        ("Lift", {"control_freq": "10"},
         "control_freq='10' must be a number of actions per second > 0, e.g. 20 (the default)"),
        ("Lift", {"robots": "UR5e"}, "Lift: robots= cannot be set: this task fixes ["),
        ("Lift", {"model_seed": -1}, "model_seed=-1 must be an integer >= 0"),
        ("Lift", {"reward_shaping": "no"}, "reward_shaping='no' must be true or false"),
        # faster than robosuite's 500 Hz physics: no step between actions, every frame the first
        ("Lift", {"control_freq": 1000}, "control_freq=1000 is faster than the simulation's own "
         "step (0.002 s, 500 steps a second)"),
        # robosuite's own cameras were silently ignored: the frames kept the critic's view
        ("Lift", {"camera_heights": 64}, "camera_heights=64 is an option of robosuite's own "
         "cameras and renderer, which Lift does not use"),
        # a string failed at the first step's reward, after a manifest was written
        ("Lift", {"reward_scale": "x"}, "reward_scale='x' must be a number"),
        ("PickPlaceCan", {"object_type": "milk"}, "PickPlaceCan: object_type= cannot be set: "
         "{'single_object_mode': 2, 'object_type': 'can'} is what makes this task PickPlaceCan"),
        ("PickPlaceCan", {"single_object_mode": 1}, "PickPlaceCan: single_object_mode= cannot"),
        ("Lift", {"controller_configs": "OSC"}, "the task 'Lift' could not be built with its "
         "options {'controller_configs': 'OSC'}: AttributeError"),
        # a model file that is not there is a bad option value too, not a raw OSError
        ("Reacher-v5", {"xml_file": "/nope.xml"}, "the task 'Reacher-v5' could not be built with "
         "its options {'xml_file': '/nope.xml'}: OSError: File /nope.xml does not exist; check"),
        # gymnasium takes any reward weight and fails on it at the first step
        ("Reacher-v5", {"reward_dist_weight": "x"}, "reward_dist_weight='x' must be a finite "
         "number (a weight in gymnasium's reward of Reacher-v5), e.g. 1.0"),
        ("Pusher-v5", {"reward_control_weight": None}, "reward_control_weight=None must be a "
         "finite number (a weight in gymnasium's reward of Pusher-v5), e.g. 1.0"),
        ("Pusher-v5", {"reward_near_weight": float("inf")}, "reward_near_weight=inf must be a "
         "finite number"),
    ],
)  # fmt: skip
def test_task_option_values_are_checked_before_the_simulator_sees_them(task, options, message):
    with pytest.raises(InvalidOptionError) as err:
        envs.make_task_env(task, **options)
    assert str(err.value).startswith(message)


_SIZE_FIX = "set the frame size with image_size= (an int, or (height, width))"
_CAMERA_FIX = "set the camera with camera= (a camera name, an envs.FreeCamera, or a list to tile)"
_VIEW_FIX = "what is drawn is the task spec's view (envs.CriticView, see envs.register_task)"


@pytest.mark.parametrize(
    ("options", "fix"),
    [
        ({"width": 64}, _SIZE_FIX),
        ({"height": 64}, _SIZE_FIX),
        ({"camera_name": "nope"}, _CAMERA_FIX),
        ({"camera_id": 0}, _CAMERA_FIX),
        ({"default_camera_config": {"distance": 2.0}}, _CAMERA_FIX),
        ({"max_geom": 100}, _VIEW_FIX),
        ({"visual_options": {}}, _VIEW_FIX),
    ],
)
def test_gymnasium_render_arguments_are_refused_for_the_critics_view(options, fix):
    # gymnasium's MujocoEnv takes them for its own renderer, which the critic's frames never use:
    # accepted, they changed nothing (a camera_name that does not exist was not even noticed).
    ((key, value),) = options.items()
    with pytest.raises(InvalidOptionError) as err:
        envs.make_task_env("Pusher-v5", **options)
    assert str(err.value) == (
        f"{key}={value!r} is an argument of gymnasium's own renderer, which Pusher-v5 does not "
        f"use: its frames are the critic's view. Remove it; {fix}"
    )


def test_an_environment_argument_in_task_kwargs_is_named():
    with pytest.raises(InvalidOptionError) as err:
        gym.make("VisCriticReward-v0", env="Reacher-v5", critic="oracle",
                 task_kwargs={"camera": "top", "image_size": 64})  # fmt: skip
    assert str(err.value).startswith(
        "task_kwargs names ['camera', 'image_size'], which are not task options: camera=, "
        "image_size= and render_mode= are the environment's own arguments"
    )


@pytest.mark.parametrize("task", ["Reacher-v5", "Lift"])
def test_a_closed_env_says_so(task):
    env = envs.make_task_env(task)
    env.reset(seed=0)
    env.close()
    env.close()  # twice is fine
    for use in (lambda: env.reset(seed=0), lambda: env.step(env.action_space.sample()),
                env.render_critic_view):  # fmt: skip
        with pytest.raises(gym.error.ClosedEnvironmentError) as err:
            use()
        assert str(err.value) == (
            f"{task}: the env is closed; make a new one (envs.make_task_env or gym.make)"
        )


def test_robosuite_envs_reset_without_a_seed_start_anywhere():
    starts = []
    for _ in range(2):
        env = envs.make_task_env("Lift")
        starts.append(env.reset()[0])  # no seed: gymnasium draws one
        env.close()
    assert not np.allclose(starts[0], starts[1])
    seeded = [envs.make_task_env("Lift") for _ in range(2)]
    first, second = (e.reset(seed=4)[0] for e in seeded)
    np.testing.assert_array_equal(first, second)  # a seed still repeats the episode
    np.testing.assert_array_equal(seeded[0].reset()[0], seeded[1].reset()[0])  # and goes on alike
    for e in seeded:
        e.close()


def test_a_reset_that_raised_leaves_gym_make_envs_usable():
    env = gym.make("VisCriticReward-v0", env="Reacher-v5", critic="oracle")
    with pytest.raises(InvalidOptionError):
        env.reset(seed=-1)
    env.reset(seed=0)
    _, reward, *_ = env.step(env.action_space.sample())  # gymnasium's own checker broke here
    assert np.isfinite(reward)
    env.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lookat": (0.0, 0.0), "distance": 1.0}, r"lookat=\(0.0, 0.0\) must be three finite"),
        ({"lookat": (0.0, 0.0, float("nan")), "distance": 1.0}, "must be three finite numbers"),
        ({"lookat": (0.0, 0.0, 0.0), "distance": -1.0}, "distance=-1.0 must be a number of metres"),
        ({"lookat": (0.0, 0.0, 0.0), "distance": "far"}, "distance='far' must be a number"),
        ({"lookat": (0.0, 0.0, 0.0), "distance": 1.0, "azimuth": None}, "azimuth=None must be"),
    ],
)  # fmt: skip
def test_free_camera_placements_are_checked(kwargs, message):
    from envs.render import FreeCamera

    with pytest.raises(InvalidOptionError, match=message):
        FreeCamera(**kwargs)


@pytest.mark.parametrize("env_id", ["VisCriticReward-v0", "VisCritic/Reacher-v5"])
def test_gym_make_wraps_a_render_mode_the_env_gives_in_pieces(env_id):
    # gymnasium wraps "rgb_array_list" in RenderCollection around an env that renders
    # "rgb_array", when its entry point says so (the functions had no metadata: refused)
    import gymnasium as gym

    options = {"env": "Reacher-v5", "critic": "oracle"} if env_id == "VisCriticReward-v0" else {}
    env = gym.make(env_id, render_mode="rgb_array_list", **options)
    env.reset(seed=0)
    env.step(np.zeros(2, np.float32))
    frames = env.render()  # the reset's and the step's critic view
    assert len(frames) == 2 and all(f.shape == (56, 56, 3) for f in frames)
    env.close()
