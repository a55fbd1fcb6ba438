"""VisCriticVecEnv: one batched critic call per vector step, same rewards as the single-env wrapper."""

from __future__ import annotations

from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import SubprocVecEnv

import envs
from envs import InvalidOptionError
from envs.vec_env import VisCriticVecEnv, make_viscritic_vec_env
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


@pytest.mark.filterwarnings(
    "ignore:VisCriticVecEnv.relabel=True. returns:UserWarning"
)  # read by hand
@pytest.mark.parametrize("reward_mode", ["progress", "delta", "log"])
def test_relabelled_rewards_equal_per_step_rewards_in_one_call_per_episode_end(reward_mode):
    options = {"reward_mode": reward_mode, "query_every": 3, "frames_per_query": 2}
    per_step = make_viscritic_vec_env("Reacher-v5", N_ENVS, RecordingCritic(), seed=5,
                                      horizon=HORIZON, **options)  # fmt: skip
    critic = RecordingCritic()
    relabel = make_viscritic_vec_env("Reacher-v5", N_ENVS, critic, seed=5, horizon=HORIZON,
                                     relabel=True, **options)  # fmt: skip
    plan = _action_plan(per_step.action_space)
    per_step.reset(), relabel.reset()
    expected, got = [], {i: [] for i in range(N_ENVS)}
    for t in range(STEPS):
        expected.append(per_step.step(plan[t])[1])
        _, placeholder, _, infos = relabel.step(plan[t])
        assert (placeholder == 0).all() and all(info["critic_pending"] for info in infos)
        for i, info in enumerate(infos):
            if "critic_rewards" in info:
                got[i].append(info["critic_rewards"])
    expected = np.array(expected)  # [STEPS, N_ENVS]
    for i in range(N_ENVS):  # two finished episodes of HORIZON steps per env
        np.testing.assert_allclose(np.concatenate(got[i]), expected[: 2 * HORIZON, i], atol=1e-6)
    # The critic is called only when episodes end: at steps 10 and 20, once for all 3 envs, each
    # episode's reset query and its 4 query steps (3, 6, 9 and the last) → 3 × 5 = 15 queries.
    assert [len(b) for b in critic.batches] == [15, 15]
    per_step.close(), relabel.close()


class SquaredAchieved(RecordingCritic):
    """The oracle, whose probability that the task is achieved is its progress squared."""

    def estimate_progress(self, queries):
        return [replace(e, achieved=e.progress**2) for e in super().estimate_progress(queries)]


@pytest.mark.filterwarnings(
    "ignore:VisCriticVecEnv.relabel=True. returns:UserWarning"
)  # read by hand
def test_relabelled_rewards_add_the_achieved_probability_as_per_step_rewards_do():
    options = {"query_every": 3, "frames_per_query": 2, "achieved_weight": 0.5}
    per_step = make_viscritic_vec_env("Reacher-v5", N_ENVS, SquaredAchieved(), seed=5,
                                      horizon=HORIZON, **options)  # fmt: skip
    relabel = make_viscritic_vec_env("Reacher-v5", N_ENVS, SquaredAchieved(), seed=5,
                                     horizon=HORIZON, relabel=True, **options)  # fmt: skip
    plan = _action_plan(per_step.action_space)
    per_step.reset()
    expected, progress = [], []
    for t in range(STEPS):
        _, rewards, _, infos = per_step.step(plan[t])
        expected.append(rewards)
        progress.append([info["critic_progress"] for info in infos])
    per_step.close()
    # reward = p + 0.5 p^2 with p the held progress: the achieved term is there, and not zero
    p = np.asarray(progress)
    np.testing.assert_allclose(np.asarray(expected), p + 0.5 * p**2, atol=1e-6)
    assert (p > 0.05).any()
    np.testing.assert_allclose(_relabelled_rewards(relabel), np.asarray(expected)[: 2 * HORIZON],
                               atol=1e-6)  # fmt: skip


def _relabelled_rewards(venv) -> np.ndarray:
    """Each env's relabelled rewards over its first two episodes, [2 * HORIZON, N_ENVS]."""
    plan, got = _action_plan(venv.action_space), {i: [] for i in range(N_ENVS)}
    venv.reset()
    for t in range(STEPS):
        for i, info in enumerate(venv.step(plan[t])[3]):
            if "critic_rewards" in info:
                got[i].append(info["critic_rewards"])
    venv.close()
    return np.stack([np.concatenate(got[i]) for i in range(N_ENVS)], axis=1)


@pytest.mark.filterwarnings(
    "ignore:VisCriticVecEnv.relabel=True. returns:UserWarning"
)  # read by hand
def test_interpolated_rewards_join_the_queries_with_straight_lines():
    options = {"query_every": 4, "frames_per_query": 2, "relabel": True, "seed": 5,
               "horizon": HORIZON}  # fmt: skip
    held = _relabelled_rewards(make_viscritic_vec_env("Reacher-v5", N_ENVS, RecordingCritic(),
                                                      **options))  # fmt: skip
    lines = _relabelled_rewards(make_viscritic_vec_env(
        "Reacher-v5", N_ENVS, RecordingCritic(), between_queries="interpolate", **options))  # fmt: skip
    # progress mode: reward = progress. Queries after steps 4, 8 and the last (10) of each
    # episode; on those steps both agree; step 5 is a quarter of the way from step 4 to step 8.
    for episode in (0, HORIZON):
        steps = episode + np.array([4, 8, 10]) - 1  # 1-based steps → reward index
        np.testing.assert_allclose(lines[steps], held[steps], atol=1e-6)
        p4, p8, p10 = held[steps]
        np.testing.assert_allclose(lines[episode + 4], p4 + (p8 - p4) / 4, atol=1e-6)  # step 5
        np.testing.assert_allclose(lines[episode + 8], (p8 + p10) / 2, atol=1e-6)  # step 9
        np.testing.assert_allclose(held[episode + 8], p8, atol=1e-6)  # hold: step 9 keeps p8
    with pytest.raises(InvalidOptionError, match="between_queries='interpolate' needs the next"):
        make_viscritic_vec_env("Reacher-v5", 1, "oracle", between_queries="interpolate")
    with pytest.raises(InvalidOptionError, match="which a reward given at each step cannot wait"):
        gym.make("VisCriticReward-v0", env="Reacher-v5", critic="oracle",
                 between_queries="interpolate")  # fmt: skip


def test_relabel_callback_writes_the_critic_rewards_into_sacs_replay_buffer():
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.callbacks import BaseCallback, CallbackList

    from envs.callbacks import RelabelCallback

    venv = make_viscritic_vec_env("Reacher-v5", 1, "oracle", seed=0, horizon=HORIZON,
                                  relabel=True, reward_mode="delta")  # fmt: skip
    episodes = []

    class Record(BaseCallback):
        def _on_step(self) -> bool:
            episodes.extend(i["critic_rewards"] for i in self.locals["infos"] if "critic_rewards" in i)  # fmt: skip
            return True

    model = SAC("MlpPolicy", venv, train_freq=(1, "episode"), gradient_steps=-1, batch_size=8,
                learning_starts=5, seed=0)  # fmt: skip
    model.learn(3 * HORIZON, callback=CallbackList([Record(), RelabelCallback()]))
    stored = model.replay_buffer.rewards[: 3 * HORIZON, 0]
    assert len(episodes) == 3
    np.testing.assert_allclose(stored, np.concatenate(episodes), atol=1e-6)
    assert np.abs(stored).sum() > 0  # the oracle's deltas, not the placeholder zeros
    with pytest.raises(InvalidOptionError, match=r"train_freq=\(1, 'step'\) trains on steps"):
        SAC("MlpPolicy", venv, seed=0).learn(2, callback=RelabelCallback())
    with pytest.raises(InvalidOptionError, match="PPO has none"):
        PPO("MlpPolicy", venv, n_steps=8, batch_size=8).learn(2, callback=RelabelCallback())
    venv.close()


def test_relabel_without_its_callback_is_warned_and_a_bad_relabel_or_config_refused():
    from stable_baselines3 import SAC

    from envs.callbacks import RelabelCallback
    from envs.vec_env import VisCriticVecEnv

    with pytest.raises(InvalidOptionError, match=r"^relabel='no' must be True or False$"):
        make_viscritic_vec_env("Reacher-v5", 1, "oracle", horizon=HORIZON, relabel="no")
    venv = make_viscritic_vec_env("Reacher-v5", 1, "oracle", seed=0, horizon=HORIZON,
                                  relabel=True)  # fmt: skip
    venv.reset()
    with pytest.warns(UserWarning, match="no RelabelCallback is attached") as caught:
        for _ in range(HORIZON):
            venv.step(np.zeros((1, 2), np.float32))
    assert caught[0].filename == __file__  # the caller of step, through SB3's wrapper's step
    venv.close()
    # a reward config given as a mapping of its options is built; anything else is refused
    plain = make_viscritic_vec_env("Reacher-v5", 1, "oracle", horizon=HORIZON)
    assert VisCriticVecEnv(plain.venv, "oracle", {"query_every": 5}).config.query_every == 5
    with pytest.raises(InvalidOptionError, match=r"^config=3 must be a CriticRewardConfig"):
        VisCriticVecEnv(plain.venv, "oracle", 3)
    with pytest.raises(InvalidOptionError, match="needs a VisCriticVecEnv\\(relabel=True\\)"):
        SAC("MlpPolicy", plain, train_freq=(1, "episode"), seed=0).learn(
            2, callback=RelabelCallback()
        )
    plain.close()


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


class _RecordRelabelled:
    """An SB3 callback (built lazily: SB3 is an extra) that keeps each episode's relabelled
    rewards, and one that stops ``learn()`` once ``num_timesteps`` reaches ``stop_at``."""

    @staticmethod
    def make(episodes: list, stop_at: int | None = None):
        from stable_baselines3.common.callbacks import BaseCallback

        class Record(BaseCallback):
            def _on_step(self) -> bool:
                episodes.extend(i["critic_rewards"] for i in self.locals["infos"]
                                if "critic_rewards" in i)  # fmt: skip
                return stop_at is None or self.num_timesteps < stop_at

        return Record()


def _relabelling_sac(**options):
    from stable_baselines3 import SAC

    venv = make_viscritic_vec_env("Reacher-v5", 1, "oracle", seed=0, horizon=HORIZON,
                                  relabel=True, reward_mode="delta", **options)  # fmt: skip
    return SAC("MlpPolicy", venv, train_freq=(1, "episode"), gradient_steps=-1, batch_size=8,
               learning_starts=5, seed=0)  # fmt: skip


def test_a_learn_stopped_on_an_episode_s_last_step_still_writes_its_rewards():
    # StopTrainingOnMaxEpisodes returns False on the second episode's last step, before SB3
    # stores it and without _on_rollout_end: that episode's rewards were never written (zeros)
    from stable_baselines3.common.callbacks import CallbackList, StopTrainingOnMaxEpisodes

    from envs.callbacks import RelabelCallback

    model, episodes = _relabelling_sac(), []
    stop = StopTrainingOnMaxEpisodes(2)
    model.learn(10 * HORIZON, callback=CallbackList([_RecordRelabelled.make(episodes),
                                                     RelabelCallback(), stop]))  # fmt: skip
    assert model.replay_buffer.pos == 2 * HORIZON - 1  # the last step was not stored
    stored = model.replay_buffer.rewards[: 2 * HORIZON - 1, 0]
    np.testing.assert_allclose(stored, np.concatenate(episodes)[: 2 * HORIZON - 1], atol=1e-6)
    assert np.abs(stored[HORIZON:]).sum() > 0


def test_a_learn_stopped_mid_episode_relabels_it_so_far_and_a_resume_finishes_it():
    from stable_baselines3.common.callbacks import CallbackList

    from envs.callbacks import RelabelCallback

    model, episodes = _relabelling_sac(), []
    # stops at the second episode's 4th step, which is not stored: 3 of its steps are
    model.learn(10 * HORIZON, callback=CallbackList([_RecordRelabelled.make(episodes, HORIZON + 4),
                                                     RelabelCallback()]))  # fmt: skip
    buffer = model.replay_buffer
    assert buffer.pos == HORIZON + 3 and len(episodes) == 1
    first_three = buffer.rewards[HORIZON : HORIZON + 3, 0].copy()
    assert np.abs(first_three).sum() > 0  # the oracle's deltas so far, not placeholder zeros
    # a resume continues the episode (it was a ValueError: 10 rewards for 6 positions)
    # (to num_timesteps 2 * HORIZON: the episode's end, the 4 steps before counted)
    model.learn(HORIZON - 4, callback=CallbackList([_RecordRelabelled.make(episodes),
                                                RelabelCallback()]), reset_num_timesteps=False)  # fmt: skip
    assert len(episodes) == 2 and len(episodes[1]) == HORIZON
    # the episode's 4th env step was never stored; its 5th was stored where the 4th would be
    expected = np.delete(episodes[1], 3)
    np.testing.assert_allclose(buffer.rewards[HORIZON : 2 * HORIZON - 1, 0], expected, atol=1e-6)
    np.testing.assert_allclose(first_three, episodes[1][:3], atol=1e-6)  # so far = at the end


def test_a_resume_stopped_again_on_its_first_step_writes_no_slot_it_did_not_store():
    from stable_baselines3.common.callbacks import CallbackList

    from envs.callbacks import RelabelCallback

    # the true reward added: every step's reward is nonzero, so a slot written shows
    model, episodes = _relabelling_sac(env_reward_weight=1.0), []
    for stop_at in (HORIZON + 4, HORIZON + 5):  # the second learn() stops on its first step
        model.learn(10 * HORIZON, reset_num_timesteps=False,
                    callback=CallbackList([_RecordRelabelled.make(episodes, stop_at), RelabelCallback()]))  # fmt: skip
    buffer = model.replay_buffer
    assert buffer.pos == HORIZON + 3 and buffer.rewards[buffer.pos, 0] == 0  # never stored
    assert (buffer.rewards[HORIZON : HORIZON + 3, 0] != 0).all()


def test_a_callback_attached_in_mid_episode_writes_the_steps_it_saw_with_a_warning():
    from stable_baselines3.common.callbacks import CallbackList

    from envs.callbacks import RelabelCallback

    model, episodes = _relabelling_sac(), []
    with pytest.warns(UserWarning, match="no RelabelCallback is attached"):
        # no relabelling; stopped at the second episode's 4th step, which is not stored
        model.learn(10 * HORIZON, callback=_RecordRelabelled.make(episodes, HORIZON + 4))
    assert model.replay_buffer.pos == HORIZON + 3
    with pytest.warns(UserWarning) as caught:  # the callback sees the episode's last 6 steps
        model.learn(HORIZON - 4, callback=CallbackList([_RecordRelabelled.make(episodes),
                                                    RelabelCallback()]), reset_num_timesteps=False)  # fmt: skip
    assert [str(w.message) for w in caught] == [
        f"RelabelCallback: {HORIZON} critic rewards for {HORIZON - 4} stored steps of env 0's "
        f"episode; the last {HORIZON - 4} are written"
    ]
    assert caught[0].filename == __file__  # the learn() line, not SB3's (rollout.warn)
    np.testing.assert_allclose(
        model.replay_buffer.rewards[HORIZON + 3 : 2 * HORIZON - 1, 0], episodes[1][4:], atol=1e-6
    )


def test_the_callbacks_still_import_from_where_they_were():
    from envs import callbacks, vec_env

    assert vec_env.RelabelCallback is callbacks.RelabelCallback
    assert vec_env.CriticFidelityCallback is callbacks.CriticFidelityCallback
    with pytest.raises(AttributeError, match="has no attribute 'Relabel'"):
        vec_env.Relabel  # noqa: B018


def test_reward_normalisation_above_relabelled_rewards_is_refused():
    # VecNormalize(norm_reward=True) learnt its scale from the placeholder zeros: SAC trained on
    # rewards divided by ~2e-3 and clipped to 10
    from stable_baselines3 import SAC
    from stable_baselines3.common.vec_env import VecNormalize

    from envs.callbacks import RelabelCallback

    venv = make_viscritic_vec_env("Reacher-v5", 1, "oracle", seed=0, horizon=HORIZON,
                                  relabel=True)  # fmt: skip
    model = SAC("MlpPolicy", VecNormalize(venv, norm_obs=False, norm_reward=True),
                train_freq=(1, "episode"), seed=0)  # fmt: skip
    with pytest.raises(InvalidOptionError, match=r"^VecNormalize\(norm_reward=True\) learns"):
        model.learn(2, callback=RelabelCallback())
    SAC("MlpPolicy", VecNormalize(venv, norm_obs=True, norm_reward=False),
        train_freq=(1, "episode"), learning_starts=5, seed=0).learn(HORIZON, callback=RelabelCallback())  # fmt: skip
    venv.close()


@pytest.mark.filterwarnings("ignore:The environment is already wrapped with a `Monitor`")
def test_workers_that_cannot_serve_the_wrapper_are_named():
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecMonitor

    from envs.critic_reward import CriticRewardConfig
    from envs.vec_env import CriticFrames

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
