"""VisCriticVecEnv(relabel=True): the critic called when episodes end, the same rewards as per-step
queries, and RelabelCallback writing them into an off-policy learner's replay buffer."""

from __future__ import annotations

from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest

from envs import InvalidOptionError
from envs.vec_stack import make_viscritic_vec_env
from tests.envs.test_vec_env import HORIZON, N_ENVS, STEPS, _action_plan
from tests.helpers import RecordingCritic


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
        _, rewards, _, live = per_step.step(plan[t])
        expected.append(rewards)
        _, placeholder, _, infos = relabel.step(plan[t])
        assert (placeholder == 0).all() and all(info["critic_pending"] for info in infos)
        # the true reward's keys at every step, as the per-step env gives them, and the steps
        # the critic reads (asked at the episode's end here)
        for key in ("env_reward", "env_return", "critic_queried"):
            assert [info[key] for info in infos] == pytest.approx([info[key] for info in live])
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


class Ratchet(RecordingCritic):
    """A stepwise critic: the oracle, but never below its last estimate (what it is shown as
    ``previous_progress``) + 0.05, so its rewards depend on being given that estimate."""

    @property
    def reads_previous_progress(self) -> bool:
        return True

    def estimate_progress(self, queries):
        read = super().estimate_progress(queries)
        return [e if q.previous_progress is None
                else replace(e, progress=min(1.0, max(e.progress, q.previous_progress + 0.05)))
                for q, e in zip(queries, read, strict=True)]  # fmt: skip


@pytest.mark.filterwarnings(
    "ignore:VisCriticVecEnv.relabel=True. returns:UserWarning"
)  # read by hand
def test_a_critic_that_reads_its_last_estimate_gets_it_when_relabelled_as_online():
    # every relabelled query went with previous_progress=None ("none yet" in a stepwise prompt)
    options = {"query_every": 3, "frames_per_query": 2}
    per_step = make_viscritic_vec_env("Reacher-v5", N_ENVS, Ratchet(), seed=5, horizon=HORIZON,
                                      **options)  # fmt: skip
    plan = _action_plan(per_step.action_space)
    per_step.reset()
    expected = np.asarray([per_step.step(plan[t])[1] for t in range(STEPS)])
    per_step.close()
    critic = Ratchet()
    relabel = make_viscritic_vec_env("Reacher-v5", N_ENVS, critic, seed=5, horizon=HORIZON,
                                     relabel=True, **options)  # fmt: skip
    np.testing.assert_allclose(_relabelled_rewards(relabel), expected[: 2 * HORIZON], atol=1e-6)
    # each episode's queries in order (its reset query, then 3, 6, 9 and the last step), the
    # t-th of the 3 envs' episodes in one call: 5 calls of 3 at each of the two episode ends
    assert [len(b) for b in critic.batches] == [3] * 10
    assert not (expected[: 2 * HORIZON] == 0).all()


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


def test_moved_names_still_import_from_where_they_were():
    from envs import callbacks, vec_env, vec_stack

    assert vec_env.RelabelCallback is callbacks.RelabelCallback
    assert vec_env.CriticFidelityCallback is callbacks.CriticFidelityCallback
    assert vec_env.CriticFrames is vec_stack.CriticFrames
    assert vec_env.make_viscritic_vec_env is vec_stack.make_viscritic_vec_env
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


@pytest.mark.filterwarnings("ignore:VisCriticVecEnv.relabel=True. returns:UserWarning")
@pytest.mark.parametrize("sampling", ["uniform", "last"])
def test_a_relabelled_episode_holds_each_frame_once_and_stacks_its_clips_in_chunks(
    sampling, monkeypatch
):
    # each query step's clip was a stacked copy kept until the episode ended: 8 frames of memory
    # per step for the 1 rendered (354 MB per env at 800 steps of 128²)
    import tracemalloc

    from envs.vec_env import VisCriticVecEnv

    monkeypatch.setattr(VisCriticVecEnv, "RELABEL_CHUNK", 16)
    horizon, options = 40, {"query_every": 1, "frames_per_query": 8, "frame_sampling": sampling}
    per_step, critic = RecordingCritic(), RecordingCritic()
    envs_ = [make_viscritic_vec_env("Reacher-v5", 1, c, seed=5, horizon=horizon, relabel=r,
                                    **options) for c, r in ((per_step, False), (critic, True))]  # fmt: skip
    space = envs_[0].action_space
    plan = np.random.default_rng(0).uniform(space.low, space.high, (horizon, 1, *space.shape))
    for venv in envs_:
        venv.reset()
    for t in range(horizon):
        envs_[0].step(plan[t].astype(np.float32))
    relabel = envs_[1]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for t in range(horizon - 1):
        relabel.step(plan[t].astype(np.float32))
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    frame = relabel._trackers[0].frames[-1].nbytes
    assert grown < 2 * (horizon - 1) * frame, (grown, frame)  # stacked clips: 8 × 39 frames
    assert critic.batches == []  # nothing asked before the episode ends
    infos = relabel.step(plan[-1].astype(np.float32))[3]
    assert len(infos[0]["critic_rewards"]) == horizon
    # the reset query and one per step, asked 16 at a time, with the clips per-step queries carry
    assert [len(b) for b in critic.batches] == [16, 16, 9]
    asked = [q for b in critic.batches for q in b]
    expected = [q for b in per_step.batches for q in b][: horizon + 1]
    for got, want in zip(asked, expected, strict=True):
        np.testing.assert_array_equal(got.frames, want.frames)
        np.testing.assert_array_equal(got.current_frame, want.current_frame)
        np.testing.assert_array_equal(got.initial_frame, want.initial_frame)
    for venv in envs_:
        venv.close()


def test_the_function_the_relabel_messages_name_exists():
    # both named envs.make_viscritic_vec_env, which envs does not export
    import importlib
    import re

    from envs.callbacks import RelabelCallback

    messages = []
    with pytest.raises(InvalidOptionError) as err:
        gym.make("VisCriticReward-v0", env="Reacher-v5", critic="oracle",
                 between_queries="interpolate")  # fmt: skip
    messages.append(str(err.value))
    venv = make_viscritic_vec_env("Reacher-v5", 1, "oracle", horizon=HORIZON)
    with pytest.raises(InvalidOptionError) as err:
        from stable_baselines3 import SAC

        SAC("MlpPolicy", venv, train_freq=(1, "episode"), learning_starts=5).learn(
            2, callback=RelabelCallback()
        )
    venv.close()
    messages.append(str(err.value))
    for message in messages:
        (named,) = re.findall(r"envs\.[\w.]+make_viscritic_vec_env", message)
        module, _, name = named.rpartition(".")
        assert callable(getattr(importlib.import_module(module), name)), message


@pytest.mark.parametrize("relabel", [False, True])
def test_potential_shaping_pays_no_potential_at_a_termination(monkeypatch, relabel):
    # a task whose step terminates: p_T = 0 there (the step paid 0.9 * 0.97 - 0.5 = 0.373, a
    # bonus for ending early); SB3 marks a time limit's truncation apart, which keeps 0.9 p_T
    from envs.mujoco_tasks import GymMujocoTask
    from envs.vec_env import _terminal
    from tests.helpers import ScriptedCritic

    real = GymMujocoTask.step

    def ending(self, action):
        obs, reward, _, truncated, info = real(self, action)
        self._steps_taken = getattr(self, "_steps_taken", 0) + 1
        return obs, reward, self._steps_taken == 2, truncated, info

    monkeypatch.setattr(GymMujocoTask, "step", ending)
    critic = ScriptedCritic(answers=[0.1, 0.5, 0.97, 0.1])  # reset, steps 1 and 2, next reset
    venv = make_viscritic_vec_env("Reacher-v5", 1, critic, reward_mode="potential", gamma=0.9,
                                  relabel=relabel)  # fmt: skip
    venv.relabel_callback_attached = True  # (no learner here to read the relabelled rewards)
    venv.reset()
    rewards, infos = [], []
    for _ in range(2):
        venv.step_async(np.zeros((1, 2), dtype=np.float32))
        _, reward, done, info = venv.step_wait()
        rewards.append(float(reward[0]))
        infos.append(info[0])
    assert done[0]
    paid = infos[-1]["critic_rewards"].tolist() if relabel else rewards
    assert paid == pytest.approx([0.9 * 0.5 - 0.1, 0.0 - 0.5])
    venv.close()
    assert _terminal(True, {}) and not _terminal(True, {"TimeLimit.truncated": True})
    assert not _terminal(False, {})


def test_rewards_so_far_before_reset_or_without_relabelling_is_named():
    relabel = make_viscritic_vec_env("Reacher-v5", 1, RecordingCritic(), seed=0, horizon=HORIZON,
                                     relabel=True)  # fmt: skip
    per_step = make_viscritic_vec_env("Reacher-v5", 1, RecordingCritic(), seed=0, horizon=HORIZON)
    try:
        # it was "'DummyVecEnv' object has no attribute '_pending'": SB3 forwarded the lookup
        with pytest.raises(gym.error.ResetNeeded, match=r"before venv.reset\(\): call reset"):
            relabel.rewards_so_far(0)
        relabel.reset()
        assert relabel.rewards_so_far(0).shape == (0,)  # no step yet
        per_step.reset()
        with pytest.raises(InvalidOptionError, match=r"reads the queries a relabel=True env"):
            per_step.rewards_so_far(0)
    finally:
        relabel.close(), per_step.close()
