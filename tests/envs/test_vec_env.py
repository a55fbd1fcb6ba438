"""VisCriticVecEnv: one batched critic call per vector step, same rewards as the single-env wrapper."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import SubprocVecEnv

import envs
from envs import InvalidOptionError
from envs.vec_env import VisCriticVecEnv
from envs.vec_stack import make_viscritic_vec_env
from tests.helpers import RecordingCritic

N_ENVS, HORIZON, STEPS = 3, 10, 25  # 25 steps cross two episode boundaries (after 10 and 20)


def _action_plan(space: gym.spaces.Box, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(space.low, space.high, size=(STEPS, N_ENVS, *space.shape)).astype(np.float32)


@pytest.mark.parametrize("reward_mode", ["progress", "delta", "log"])
def test_batched_rewards_equal_single_env_rewards(reward_mode):
    options = {"reward_mode": reward_mode, "query_every": 3, "frames_per_query": 2}
    critic = RecordingCritic()
    venv = make_viscritic_vec_env("Reacher-v5", N_ENVS, critic, seed=5, horizon=HORIZON, **options)
    plan = _action_plan(venv.action_space)
    venv.reset()
    batched = np.array([venv.step(plan[t])[1] for t in range(STEPS)])  # [STEPS, N_ENVS]
    venv.close()

    for i in range(N_ENVS):
        env = envs.make_viscritic_env("Reacher-v5", RecordingCritic(), horizon=HORIZON, **options)
        env.reset(seed=5 + i)  # make_vec_env gives env i the seed 5 + i at the first reset
        single = []
        for t in range(STEPS):
            _, reward, terminated, truncated, _ = env.step(plan[t, i])
            single.append(reward)
            if terminated or truncated:
                env.reset()
        env.close()
        np.testing.assert_allclose(batched[:, i], single, rtol=0, atol=1e-6)


def test_one_critic_call_per_vector_step():
    critic = RecordingCritic()
    venv = make_viscritic_vec_env("Reacher-v5", N_ENVS, critic, seed=0, horizon=HORIZON)
    venv.reset()
    plan = _action_plan(venv.action_space)
    for t in range(STEPS):
        venv.step(plan[t])
    assert len(critic.batches) == 1 + STEPS  # the reset batch, then one per step
    sizes = [len(b) for b in critic.batches]
    # Every env queries each step; at steps 10 and 20 each env also starts a new episode.
    assert sizes[0] == N_ENVS
    assert sizes[10] == sizes[20] == 2 * N_ENVS
    assert set(sizes[1:10]) == {N_ENVS}
    venv.close()


class _PerTaskClip(RecordingCritic):
    """Trained on 1-frame Reacher clips and 8 frames elsewhere (a checkpoint's task_frames=)."""

    def clip_frames_for(self, task):
        return 1 if task == "Reacher-v5" else 8


@pytest.mark.parametrize(("task", "frames"), [("Reacher-v5", 1), ("Pusher-v5", 8)])
def test_every_query_carries_the_critic_s_clip_length_for_the_task(task, frames):
    critic = _PerTaskClip()
    venv = make_viscritic_vec_env(task, 2, critic, seed=0, horizon=HORIZON)
    venv.reset()
    for _ in range(3):
        venv.step(np.stack([venv.action_space.sample()] * 2))
    venv.close()
    assert {len(q.frames) for batch in critic.batches for q in batch} == {frames}
    direct = _PerTaskClip()  # the vector wrapper over workers built by hand settles it too
    workers = make_viscritic_vec_env(task, 2, direct, horizon=HORIZON)
    assert workers.config.frames_per_query == frames
    again = VisCriticVecEnv(workers.venv, direct)  # no config given: settled from the workers
    assert again.config.frames_per_query == frames
    workers.close()


def test_episode_end_reports_true_and_critic_returns():
    venv = make_viscritic_vec_env("Reacher-v5", 2, "oracle", seed=0, horizon=HORIZON)
    venv.reset()
    for _ in range(HORIZON):
        _, _, dones, infos = venv.step(np.zeros((2, *venv.action_space.shape), np.float32))
    assert dones.all()
    for info in infos:
        assert info["episode"]["l"] == HORIZON  # SB3 Monitor, below the critic: the true return
        assert info["episode"]["r"] == pytest.approx(info["env_return"], abs=1e-4)
        assert "critic_return" in info and "terminal_observation" in info
        assert isinstance(info["is_success"], bool)
        # one Monitor, with the true success: a second one above it wrote an episode without it
        assert info["episode"]["is_success"] == info["is_success"]
    wrappers = []
    inner = venv.venv.envs[0]
    while isinstance(inner, gym.Wrapper):
        wrappers.append(type(inner).__name__)
        inner = inner.env
    assert wrappers == ["Monitor", "CriticFrames", "TimeLimit"]
    venv.close()


@pytest.mark.filterwarnings("ignore:VisCriticVecEnv\\(relabel=True\\) returns")
@pytest.mark.parametrize("relabel", [False, True])
def test_reset_infos_carry_the_task_s_and_the_critic_s_reading_of_the_reset(relabel):
    """As the single-env wrapper's reset info does (SB3's VecEnv left them empty)."""
    venv = make_viscritic_vec_env("Reacher-v5", 2, "oracle", seed=0, horizon=HORIZON,
                                  relabel=relabel)  # fmt: skip
    venv.reset()
    single = gym.make("VisCriticReward-v0", env="Reacher-v5", critic="oracle")
    _, expected = single.reset(seed=0)
    first = [dict(info) for info in venv.reset_infos]
    venv.reset_infos[0] = {"stale": True}  # the autoreset at the episode's end writes its own
    for _ in range(HORIZON):
        venv.step(np.zeros((2, *venv.action_space.shape), np.float32))
    for infos in (first, venv.reset_infos):
        for info in infos:
            assert "critic_frame" not in info and 0.0 <= info["progress"] <= 1.0
            if relabel:  # read at the episode's end
                assert info["critic_pending"] is True and "critic_progress" not in info
            else:  # the oracle reads the task's progress
                assert info["critic_progress"] == pytest.approx(info["progress"])
                assert info.keys() == expected.keys() - {"critic_frame"}
    single.close()
    venv.close()


def test_subprocess_workers():
    venv = make_viscritic_vec_env(
        "Reacher-v5", 2, RecordingCritic(), seed=0, horizon=HORIZON, vec_env_cls=SubprocVecEnv
    )
    venv.reset()
    for _ in range(HORIZON + 1):
        _, rewards, _, infos = venv.step(np.zeros((2, *venv.action_space.shape), np.float32))
        assert np.isfinite(rewards).all()
    assert infos[0]["critic_queried"]
    venv.close()


def test_a_subprocess_worker_s_bad_action_or_early_step_is_refused_typed():
    # the worker's typed error killed it: the caller got a bare EOFError, close() another, and a
    # worker was left running
    import multiprocessing

    import gymnasium as gym

    from envs.errors import InvalidActionError

    venv = make_viscritic_vec_env("Reacher-v5", 2, "oracle", seed=0, vec_env_cls=SubprocVecEnv)
    with pytest.raises(gym.error.ResetNeeded, match=r"^step\(\) before venv.reset\(\)"):
        venv.step(np.zeros((2, 2), np.float32))
    venv.reset()
    for actions, says in (
        ([[np.nan, 0.0], [0.0, 0.0]], "env 0 (Reacher-v5): action [nan, 0.0] is not finite"),
        (np.zeros((2, 3)), "env 0 (Reacher-v5): action array([0., 0., 0.]) must be an array of "
         "shape (2,)"),
        ([[0.0, 0.0], [0.0, 1e39]], "env 1 (Reacher-v5): action [0.0, 1e+39] overflows the "
         "action space's float32"),
    ):  # fmt: skip
        with pytest.raises(InvalidActionError) as err:
            venv.step(np.asarray(actions))
        assert str(err.value).startswith(says)
    venv.step(np.zeros((2, 2), np.float32))  # the workers are alive and serve on
    workers = list(venv.venv.processes)
    venv.close()
    assert not any(w.is_alive() for w in workers)
    assert not [c for c in multiprocessing.active_children() if c in workers]


def test_close_after_a_worker_died_stops_the_others():
    # SB3's close waited on the dead worker's pipe and raised EOFError, the others left running
    venv = make_viscritic_vec_env("Reacher-v5", 2, "oracle", seed=0, vec_env_cls=SubprocVecEnv)
    venv.reset()
    workers = list(venv.venv.processes)
    workers[0].kill()
    workers[0].join()
    venv.close()
    assert not any(w.is_alive() for w in workers)


def test_terminate_on_success_is_refused():
    with pytest.raises(InvalidOptionError) as err:
        make_viscritic_vec_env("Reacher-v5", 1, terminate_on_success=True)
    assert str(err.value) == (
        "terminate_on_success=True is not available with VisCriticVecEnv (sub-envs reset "
        "themselves); use envs.VisCriticReward on each env instead"
    )


@pytest.mark.parametrize(("n_envs", "text"), [(0, "n_envs=0"), (1.5, "n_envs=1.5")])
def test_bad_n_envs(n_envs, text):
    with pytest.raises(InvalidOptionError) as err:
        make_viscritic_vec_env("Reacher-v5", n_envs)
    assert str(err.value) == f"{text} must be an integer >= 1"


def test_a_step_with_another_count_of_actions_than_envs_is_refused():
    # SB3's vec envs read one action per env and dropped the third without a word
    venv = make_viscritic_vec_env("Reacher-v5", 2, "oracle", horizon=HORIZON)
    venv.reset()
    for actions, says in (
        (np.zeros((3, 2), np.float32), "3 actions for 2 envs (shape (3, 2)); give one per env, "
         "e.g. shape (2, *action_space.shape)"),
        (np.zeros((1, 2), np.float32), "1 action for 2 envs (shape (1, 2))"),
        (np.float32(0), "no actions for 2 envs (shape ())"),
    ):  # fmt: skip
        with pytest.raises(InvalidOptionError) as err:
            venv.step(actions)
        assert str(err.value).startswith(says)
    venv.step([np.zeros(2, np.float32)] * 2)  # a list of one per env is taken
    venv.close()


def test_bad_horizon():
    with pytest.raises(InvalidOptionError) as err:
        make_viscritic_vec_env("Reacher-v5", 1, horizon=0)
    assert str(err.value) == "horizon=0 must be an integer >= 1 (steps per episode)"


def test_contract_errors_name_the_env():
    from envs import CriticOutputError
    from tests.helpers import ScriptedCritic

    # Queries go out in env order: reset answers 0.1, 0.1; the first step answers 0.2, then NaN.
    critic = ScriptedCritic(answers=[0.1, 0.1, 0.2, float("nan")])
    venv = make_viscritic_vec_env("Reacher-v5", 2, critic, seed=0, horizon=HORIZON)
    venv.reset()
    with pytest.raises(CriticOutputError) as err:
        venv.step(np.zeros((2, *venv.action_space.shape), np.float32))
    assert str(err.value).startswith("critic 'scripted' returned progress nan for env 1;")
    venv.close()


def test_a_bad_seed_vec_env_class_or_env_underneath_is_named():
    from stable_baselines3.common.env_util import make_vec_env

    from envs.vec_env import VisCriticVecEnv

    with pytest.raises(InvalidOptionError, match=r"^vec_env_cls='subproc' must be an SB3 VecEnv"):
        make_viscritic_vec_env("Reacher-v5", 1, "oracle", vec_env_cls="subproc")
    with pytest.raises(InvalidOptionError, match=r"^seed='3' must be None or an integer >= 0$"):
        make_viscritic_vec_env("Reacher-v5", 1, "oracle", seed="3")
    bare = make_vec_env("Pendulum-v1", 1)
    with pytest.raises(InvalidOptionError, match="needs VisCritic task envs underneath"):
        VisCriticVecEnv(bare, "oracle")
    bare.close()


@pytest.mark.filterwarnings("ignore:The environment is already wrapped with a `Monitor`")
def test_workers_that_cannot_serve_the_wrapper_are_named():
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecMonitor

    from envs.critic_reward import CriticRewardConfig
    from envs.vec_stack import CriticFrames

    def workers(query_every: int = 1, render: bool = True, clip: int | None = 8):
        config = CriticRewardConfig(query_every=query_every, frames_per_query=clip)
        return make_vec_env(lambda: CriticFrames(gym.wrappers.TimeLimit(
            envs.make_task_env("Reacher-v5"), HORIZON), config, render=render), n_envs=1)  # fmt: skip

    # workers rendering every 5th step under a wrapper querying every step: 4 queries in 5 showed
    # the reset frame while progress rose
    with pytest.raises(InvalidOptionError, match=r"render every \[5\] steps, and this wrapper "
                                                 r"queries every 1: queries on steps"):  # fmt: skip
        VisCriticVecEnv(workers(5), RecordingCritic(), {"query_every": 1})
    with pytest.raises(InvalidOptionError, match="were built with render=False"):
        VisCriticVecEnv(workers(render=False), RecordingCritic())
    # a clip critic's workers must send every step's frame: from the query steps' alone its
    # clips repeated frames, which in training mark an episode's first steps
    with pytest.raises(InvalidOptionError, match=r"reads clips of \[8\] frames spread over the "
                                                 r"episode, but the CriticFrames workers send"):  # fmt: skip
        VisCriticVecEnv(workers(clip=None), RecordingCritic())
    VisCriticVecEnv(workers(1), RecordingCritic(), {"query_every": 5}).close()  # a superset: fine
    VisCriticVecEnv(workers(5, render=False), "oracle", {"query_every": 1}).close()  # no frames
    # a critic that reads no frames needs no CriticFrames at all: plain task workers will do
    plain = make_vec_env(lambda: gym.wrappers.TimeLimit(envs.make_task_env("Reacher-v5"), HORIZON))
    oracle = VisCriticVecEnv(plain, "oracle")
    oracle.reset()
    assert np.isfinite(oracle.step(np.zeros((1, 2), np.float32))[1]).all()
    oracle.close()
    # an SB3 wrapper between the workers and VisCriticVecEnv passes no reset infos up (KeyError)
    below = VisCriticVecEnv(VecMonitor(workers()), "oracle")
    with pytest.raises(InvalidOptionError, match=r"put SB3's wrappers \(VecMonitor, VecNorm"):
        below.reset()
    below.close()


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"camera": "nope"}, "UnknownCameraError"),
        ({"task_kwargs": {"bogus": 1}}, "InvalidOptionError"),
    ],
)
def test_a_worker_s_option_error_reaches_the_caller_typed(options, error):
    # in worker processes it was a ConnectionResetError, the typed error only in their stderr
    with pytest.raises(Exception) as err:
        make_viscritic_vec_env("Reacher-v5", 2, "oracle", vec_env_cls=SubprocVecEnv, **options)
    assert type(err.value).__name__ == error


def test_the_stack_renders_the_critics_view_when_asked():
    # rgb_array was refused as a reward option, and task_kwargs refuses render_mode: SB3's
    # VecVideoRecorder had nothing to record from
    import envs

    venv = make_viscritic_vec_env("Reacher-v5", 2, "oracle", seed=0, render_mode="rgb_array")
    venv.reset()
    images = venv.get_images()
    view = envs.make_task_env("Reacher-v5", render_mode="rgb_array")
    view.reset(seed=0)  # env 0 of the stack: seed + 0
    assert venv.render_mode == "rgb_array" and len(images) == 2
    np.testing.assert_array_equal(images[0], view.render())
    assert venv.render().shape == (112, 56, 3)  # SB3 tiles the two 56² views
    view.close(), venv.close()
    assert make_viscritic_vec_env("Reacher-v5", 1, "oracle").render_mode is None
