"""VisCriticReward on real simulators with the oracle and small scripted critics."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from critic.base import ProgressEstimate
from envs import CriticOutputError, InvalidOptionError, UnknownTaskError
from rollout.imports import MissingExtraError
from tests.helpers import RecordingCritic, ScriptedCritic


def _actions(env: gym.Env, n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    space = env.action_space
    return [rng.uniform(space.low, space.high).astype(space.dtype) for _ in range(n)]


@pytest.mark.parametrize("task", envs.task_names())
def test_wrapped_env_passes_gymnasium_and_sb3_checkers(task):
    env = gym.make("VisCriticReward-v0", env=task, critic={"name": "oracle", "needs_frames": True})
    try:
        gym_check_env(env.unwrapped)  # the bare task under the wrapper
        gym_check_env(env, skip_render_check=True)
        sb3_check_env(env, warn=False)
    finally:
        env.close()


def test_progress_reward_is_the_oracle_progress_and_info_reports_the_true_task():
    env = gym.make("VisCriticReward-v0", env="Reacher-v5", critic="oracle")
    bare = gym.wrappers.TimeLimit(envs.make_task_env("Reacher-v5"), 50)
    _, info = env.reset(seed=3)
    bare.reset(seed=3)
    assert info["critic_progress"] == info["progress"] == 0.0
    for action in _actions(env, 50):
        _, reward, terminated, truncated, info = env.step(action)
        _, env_reward, *_ = bare.step(action)
        assert reward == pytest.approx(info["progress"])  # progress mode, oracle critic
        assert info["env_reward"] == pytest.approx(env_reward)
        assert isinstance(info["is_success"], bool)
        assert info["critic_queried"] and info["critic_status"] == "ok"
    assert truncated and not terminated
    env.close()
    bare.close()


def test_query_every_k_holds_the_reward_and_queries_at_the_last_step():
    env = gym.make("VisCriticReward-v0", env="Reacher-v5", critic="oracle", query_every=7)
    env.reset(seed=0)
    queried, rewards = [], []
    for t, action in enumerate(_actions(env, 50), start=1):
        _, reward, _, truncated, info = env.step(action)
        rewards.append(reward)
        if info["critic_queried"]:
            queried.append(t)
    # every 7th step, and the last (50) where the episode is truncated
    assert queried == [7, 14, 21, 28, 35, 42, 49, 50]
    assert truncated
    # Between queries the reward is held: steps 8..13 pay what step 7 paid.
    assert rewards[7:13] == [rewards[6]] * 6
    assert rewards[0:6] == [0.0] * 6  # p_0 = 0 for Reacher at reset, held until step 7
    env.close()


def test_frames_are_rendered_only_on_query_steps_and_sampled():
    critic = RecordingCritic()
    env = gym.make("VisCriticReward-v0", env="Reacher-v5", critic=critic, query_every=5,
                   frames_per_query=4)  # fmt: skip
    env.reset(seed=1)
    for action in _actions(env, 50):
        env.step(action)
    queries = [q for batch in critic.batches for q in batch]
    assert len(queries) == 1 + 10  # reset, then steps 5, 10, ..., 50
    shape = envs.get_task("Reacher-v5").view.frame_shape
    first = queries[0]
    # The reset query holds one rendered frame, repeated to the clip's length (4).
    assert first.frames.shape == (4, *shape) and first.frames.dtype == np.uint8
    assert (first.frames == first.initial_frame).all()
    np.testing.assert_array_equal(first.initial_frame, first.current_frame)
    last = queries[-1]
    # 11 rendered frames (reset + 10 query steps); uniform over them: round(linspace(0, 10, 4))
    # = [0, 3, 7, 10] → the first frame is the reset frame, the last is the current one.
    assert last.frames.shape == (4, *shape)
    np.testing.assert_array_equal(last.frames[0], first.initial_frame)
    np.testing.assert_array_equal(last.frames[-1], last.current_frame)
    assert last.instruction == envs.get_task("Reacher-v5").instruction
    assert last.previous_progress == pytest.approx(queries[-2].privileged_progress)
    env.close()


def test_oracle_needs_no_frames():
    critic = RecordingCritic(needs_frames=False)
    env = gym.make("VisCriticReward-v0", env="Reacher-v5", critic=critic)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    # asked at the reset and at the step (query_every=1), with no pixels either time
    assert [len(b) for b in critic.batches] == [1, 1]
    assert all(q.frames is None and q.current_frame is None for b in critic.batches for q in b)
    env.close()


def test_same_seed_same_rollout():
    def rollout():
        env = gym.make(
            "VisCriticReward-v0", env="Lift", critic="oracle", reward_mode="delta", query_every=2
        )
        obs, _ = env.reset(seed=7)
        out = [obs]
        for action in _actions(env, 15, seed=1):
            obs, reward, *_ = env.step(action)
            out += [obs, np.array([reward])]
        env.close()
        return np.concatenate(out)

    np.testing.assert_array_equal(rollout(), rollout())


def test_critic_success_can_terminate():
    critic = ScriptedCritic(answers=[0.0, 0.2, 0.97])  # reset, step 1, step 2
    env = gym.make("VisCriticReward-v0", env="Reacher-v5", critic=critic, terminate_on_success=True)
    env.reset(seed=0)
    _, _, terminated, _, _ = env.step(env.action_space.sample())
    assert not terminated
    _, _, terminated, _, info = env.step(env.action_space.sample())
    assert terminated and info["critic_progress"] == 0.97 and not info["is_success"]
    env.close()
    # only on a step the critic read: a reset read at 0.97 ended step 1, which no query saw
    critic = ScriptedCritic(answers=[0.97, 0.3])
    env = gym.make("VisCriticReward-v0", env="Reacher-v5", critic=critic,
                   terminate_on_success=True, query_every=3)  # fmt: skip
    env.reset(seed=0)
    ends = [env.step(env.action_space.sample())[2] for _ in range(3)]
    assert ends == [False, False, False] and critic.calls == 2  # step 3 read 0.3
    env.close()
    # nor on a step whose answer could not be read, on the 0.97 it held from the reset
    unreadable = ProgressEstimate(None, status="no_answer")
    critic = ScriptedCritic(answers=[0.97, unreadable, 0.3])
    env = gym.make("VisCriticReward-v0", env="Reacher-v5", critic=critic, terminate_on_success=True)
    env.reset(seed=0)
    _, _, terminated, _, info = env.step(env.action_space.sample())
    assert not terminated and info["critic_status"] == "no_answer"
    env.close()


def test_potential_shaping_pays_no_potential_at_a_termination():
    # r = 0.9 p_t - p_{t-1}, with p_T = 0 at a true terminal: the return telescopes to -p_0
    # whatever the policy; step 2 paid 0.9 * 0.97 - 0.5 = 0.373, a bonus for ending early
    critic = ScriptedCritic(answers=[0.1, 0.5, 0.97])
    env = gym.make("VisCriticReward-v0", env="Reacher-v5", critic=critic, reward_mode="potential",
                   gamma=0.9, terminate_on_success=True)  # fmt: skip
    env.reset(seed=0)
    rewards = []
    for _ in range(2):
        _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        rewards.append(reward)
    assert terminated and not truncated
    assert rewards == pytest.approx([0.9 * 0.5 - 0.1, 0.0 - 0.5])
    assert rewards[0] + 0.9 * rewards[1] == pytest.approx(-0.1)  # the discounted return: -p_0
    env.close()
    # a time limit's truncation is no terminal: the learner bootstraps through it
    critic = ScriptedCritic(answers=[0.1, 0.5])
    env = gym.make("VisCriticReward-v0", env="Reacher-v5", critic=critic, reward_mode="potential",
                   gamma=0.9, horizon=1)  # fmt: skip
    env.reset(seed=0)
    _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
    assert truncated and not terminated and reward == pytest.approx(0.9 * 0.5 - 0.1)
    env.close()


def test_unreadable_answers_are_reported_and_hold_progress():
    unreadable = ProgressEstimate(None, reasoning="maybe 30 or 60", status="hedged")
    critic = ScriptedCritic(answers=[0.4, unreadable])
    env = gym.make("VisCriticReward-v0", env="Reacher-v5", critic=critic)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(env.action_space.sample())
    assert reward == 0.4 and info["critic_progress"] == 0.4
    assert info["critic_reasoning"] == "maybe 30 or 60"
    env.close()


def test_unknown_env_name():
    with pytest.raises(UnknownTaskError) as err:
        gym.make("VisCriticReward-v0", env="Lfit")
    assert str(err.value) == (
        f"unknown task 'Lfit'; registered tasks: {envs.task_names()}. Pass one of these as "
        "env=..., or register your own with envs.register_task (docs/tasks.md; the experiment "
        "scripts import its module with imports=[my_tasks])."
    )


def test_unknown_reward_mode():
    with pytest.raises(InvalidOptionError) as err:
        gym.make("VisCriticReward-v0", env="Reacher-v5", reward_mode="sparse")
    assert str(err.value) == (
        "reward_mode='sparse' is not a reward mode; pick one of "
        "['progress', 'delta', 'potential', 'success', 'log']"
    )


def test_query_every_below_one():
    with pytest.raises(InvalidOptionError) as err:
        gym.make("VisCriticReward-v0", env="Reacher-v5", query_every=0)
    assert str(err.value) == (
        "query_every=0 must be an integer >= 1 (1 queries the critic every step; "
        "k holds the reward for k steps)"
    )


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_critic_reward(value):
    env = gym.make(
        "VisCriticReward-v0", env="Reacher-v5", critic=ScriptedCritic(answers=[0.0, value])
    )
    env.reset(seed=0)
    with pytest.raises(CriticOutputError) as err:
        env.step(env.action_space.sample())
    assert str(err.value) == (
        f"critic 'scripted' returned progress {value!r} for env 0; progress must be a finite "
        "number in [0, 1], or None with a parse status when the answer could not be read"
    )
    env.close()


def test_critic_returning_the_wrong_batch_size():
    env = gym.make("VisCriticReward-v0", env="Reacher-v5",
                   critic=ScriptedCritic(answers=[0.0], batch_size_error=1))  # fmt: skip
    with pytest.raises(CriticOutputError) as err:
        env.reset(seed=0)
    assert str(err.value) == (
        "critic 'scripted' returned 2 estimates for 1 queries; a critic must return exactly one "
        "estimate per query, in order"
    )
    env.close()


def test_missing_optional_extra_names_the_extra():
    from envs.mujoco_tasks import ReacherTask

    class NeedsMissingSim(ReacherTask):
        env_class_path = "viscritic_missing_simulator_xyz:Env"

    spec = envs.get_task("Reacher-v5")
    envs.register_task(
        envs.TaskSpec("NeedsMissingSim", "x", 10, spec.view, NeedsMissingSim, "mujoco")
    )
    try:
        with pytest.raises(MissingExtraError) as err:
            envs.make_viscritic_env("NeedsMissingSim")
        assert str(err.value).startswith(
            "the MuJoCo task 'NeedsMissingSim' needs the optional package "
            "'viscritic_missing_simulator_xyz', which is not installed"
        )
        assert str(err.value).endswith(
            "Install it with: pip install -e '.[sim]' (in the repository's root)"
        )
    finally:
        envs.tasks._TASKS.pop("NeedsMissingSim")
        gym.registry.pop(envs.bare_env_id("NeedsMissingSim"))


def test_wrapper_needs_a_task_env():
    with pytest.raises(InvalidOptionError) as err:
        envs.VisCriticReward(gym.make("CartPole-v1"))
    assert str(err.value) == (
        "VisCriticReward needs a VisCritic task env underneath, got CartPoleEnv; build it with "
        "envs.make_task_env(name) or gym.make('VisCriticReward-v0', env=name)"
    )


def test_an_unknown_reward_option_is_named_with_the_ones_there_are():
    with pytest.raises(InvalidOptionError) as err:
        gym.make("VisCriticReward-v0", env="Reacher-v5", critic="oracle", query_evry=5)
    assert str(err.value).startswith(
        "query_evry=5: not a reward option; the reward options are ['reward_mode', 'gamma', "
        "'log_floor', 'query_every', "
    )
    assert str(err.value).endswith(
        "(the env's camera, image size, horizon and task options are not the reward's: camera=, "
        "image_size=, horizon= and task_kwargs= beside them in gym.make, env.* in the "
        "experiments' configs)"
    )
    from envs.vec_stack import make_viscritic_vec_env

    with pytest.raises(InvalidOptionError, match=r"^query_evry=5: not a reward option"):
        make_viscritic_vec_env("Reacher-v5", critic="oracle", query_evry=5)


def test_task_state_info_says_where_an_episode_began_and_where_it_is():
    from envs.wrappers import TaskStateInfo

    with pytest.raises(InvalidOptionError, match="TaskStateInfo needs a VisCritic task env"):
        TaskStateInfo(gym.make("CartPole-v1"))
    env = TaskStateInfo(gym.wrappers.TimeLimit(envs.make_task_env("Pusher-v5"), 5))
    try:
        _, info = env.reset(seed=3)
        task = env.unwrapped
        start = task.privileged_state()
        assert info["task_state"] == info["task_start_state"] == start
        assert set(start) == {"fingertip_to_object_cm", "object_to_goal_cm"}
        for action in _actions(env, 5):
            *_, truncated, info = env.step(action)
        assert truncated and info["task_start_state"] == start
        assert info["task_state"] == task.privileged_state() != start  # the arm has moved
    finally:
        env.close()


def test_a_time_limit_outside_the_wrapper_is_named_at_the_next_reset():
    """gymnasium keeps ``max_episode_steps`` from the entry point and puts its TimeLimit outside
    the wrapper, which then never sees the episode end: its last step was paid the estimate of
    step 14, and in ``delta`` mode the episode returned 0 where the progress was 0.21. Two
    episodes cut at the same step are named once; one cut short, or an env checker's, are not."""
    import warnings

    def episode(env, seed):
        env.reset(seed=seed)
        while True:
            *_, terminated, truncated, info = env.step(np.zeros(env.action_space.shape))
            if terminated or truncated:
                return info

    options = dict(env="Reacher-v5", critic="oracle", query_every=7, reward_mode="delta")
    outer = gym.make("VisCriticReward-v0", max_episode_steps=20, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        info = episode(outer, 0)
        assert not info["critic_queried"] and info["critic_progress"] != info["progress"]
        episode(outer, 1)  # the first cut says nothing: an episode may end early on purpose
    with pytest.warns(UserWarning) as caught:
        episode(outer, 2)
    assert [str(w.message) for w in caught] == [
        "two episodes in a row were reset at step 20 of Reacher-v5 before VisCriticReward saw "
        "them end: if a time limit outside it cuts them (gym.make(..., max_episode_steps=20), a "
        "TimeLimit wrapper), their last step is paid an older estimate, not a query; give "
        "horizon=20 to VisCriticReward-v0 instead"
    ]
    assert caught[0].filename == __file__  # the user's line, not gymnasium's reset (rollout.warn)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        episode(outer, 3)
        outer.reset(seed=4)  # once per wrapper
        inner = gym.make("VisCriticReward-v0", horizon=20, **options)
        for seed in range(3):
            info = episode(inner, seed)  # its own horizon ends the episodes: nothing to say
        assert info["critic_queried"] and info["critic_progress"] == info["progress"]
    with warnings.catch_warnings(record=True) as caught:  # gymnasium's checker resets early too
        warnings.simplefilter("always")
        gym_check_env(inner)
    assert not [w for w in caught if "episodes in a row" in str(w.message)]
    outer.close()
    inner.close()


@pytest.mark.parametrize("task", ["Reacher-v5", "Lift"])
def test_an_env_that_has_rendered_copies_and_pickles(task):
    # the renderer holds a GL context and the mujoco module: TypeError: cannot pickle 'module'
    # object. A copy starts unreset, as gymnasium's own MuJoCo envs copy (rebuilt from their
    # arguments, at the model's initial state, which the copy's progress was not measured from).
    # robosuite's observables are closures over its own robot: a copied Lift stepped its own
    # simulator and read its observations from the original's, and it did not pickle.
    import copy
    import pickle

    # by its versioned id (VisCritic/Lift-v0): the bare name made gymnasium warn
    env = gym.make(f"VisCritic/{task}" if "-v" in task else f"VisCritic/{task}-v0",
                   render_mode="rgb_array")  # fmt: skip
    env.reset(seed=3)
    env.render()
    twins = copy.deepcopy(env), pickle.loads(pickle.dumps(env))
    start, _ = env.reset(seed=0)
    frame = env.render()
    held = env.unwrapped.mj_data.qpos.copy()
    action = np.full(env.action_space.shape, 0.5, np.float32)
    for twin in twins:
        with pytest.raises(gym.error.ResetNeeded, match=r"render_critic_view\(\) before reset"):
            twin.render()
        assert twin.spec == env.spec
        obs, _ = twin.reset(seed=0)
        np.testing.assert_array_equal(obs, start)
        np.testing.assert_array_equal(twin.render(), frame)
        moved, *_ = twin.step(action)  # the twin's own observations, the original's untouched
        assert not np.array_equal(moved, start)
        twin.close()
    np.testing.assert_array_equal(env.unwrapped.mj_data.qpos, held)  # the original untouched
    env.close()


def test_a_critic_given_as_an_instance_is_the_one_the_spec_rebuilds():
    # the spec recorded the critic's display name: "noisy_oracle(offset_sd=0.3, step_sd=0.0)"
    # names no critic, and "oracle" rebuilt an OracleCritic without needs_frames
    from critic.oracle import NoisyOracleCritic, OracleCritic

    for critic in (NoisyOracleCritic(offset_sd=0.3), OracleCritic(needs_frames=True)):
        wrapped = envs.VisCriticReward(gym.make("VisCritic/Reacher-v5"), critic=critic)
        again = gym.make(wrapped.spec)
        assert again.get_wrapper_attr("critic") is critic
        again.close()
        wrapped.close()
    by_name = gym.make("VisCriticReward-v0", env="Reacher-v5", critic="oracle")
    assert json.loads(by_name.spec.to_json())["kwargs"]["critic"] == "oracle"
    by_name.close()
    # an instance cannot go into JSON: gymnasium writes its fields, and a make of that JSON
    # said only "names no critic"
    from gymnasium.envs.registration import EnvSpec

    from critic import UnknownCriticError

    given = gym.make("VisCriticReward-v0", env="Reacher-v5", critic=OracleCritic())
    assert given.spec.kwargs["critic"] is given.get_wrapper_attr("critic")  # shared, not copied
    with pytest.raises(UnknownCriticError) as err:
        gym.make(EnvSpec.from_json(given.spec.to_json()))
    assert str(err.value).endswith(
        "or a critic.Critic; a spec serialised with a critic instance records its fields, not "
        "the critic: give gym.make the critic by name or mapping where the spec must serialise"
    )
    given.close()


def test_a_robosuite_task_of_one_s_own_copies_with_its_own_arguments():
    # the copy was built from the base class's arguments alone: a subclass's own failed
    # ("takes from 3 to 5 positional arguments but 7 were given"); a closed task's copy ran a live
    # simulator nothing closed
    import copy

    from envs.robosuite_tasks import LiftTask

    class HighLift(LiftTask):
        def __init__(self, spec, view, render_mode=None, goal_cm=6.0, **kwargs):
            super().__init__(spec, view, render_mode, **kwargs)
            self.goal_cm = goal_cm

    lift = envs.get_task("Lift")
    task = HighLift(lift, lift.view, goal_cm=8.0, control_freq=10)
    twin = copy.deepcopy(task)
    assert type(twin) is HighLift and twin.goal_cm == 8.0
    assert twin.metadata["render_fps"] == 10
    twin.reset(seed=0)
    twin.close()
    task.close()
    closed = copy.deepcopy(task)
    with pytest.raises(gym.error.ClosedEnvironmentError):
        closed.reset(seed=0)
