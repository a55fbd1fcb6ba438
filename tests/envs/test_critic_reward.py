"""Hand-worked numbers for the reward modes, the query schedule and frame sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from critic.base import ParseStatus, ProgressEstimate
from envs.critic_reward import CriticRewardConfig, EpisodeTracker, check_batch, sample_frames
from envs.errors import CriticOutputError, InvalidOptionError


def _frames(n: int) -> list[np.ndarray]:
    # Frame i is filled with the value i, so the chosen indices can be read back.
    return [np.full((2, 2, 3), i, dtype=np.uint8) for i in range(n)]


def test_uniform_sampling_spreads_over_the_episode():
    # round(linspace(0, 9, 4)) = round([0, 3, 6, 9]) = [0, 3, 6, 9]
    chosen = sample_frames(_frames(10), 4, "uniform")
    assert chosen.shape == (4, 2, 2, 3)
    assert chosen[:, 0, 0, 0].tolist() == [0, 3, 6, 9]


def test_uniform_sampling_rounds_to_nearest():
    # linspace(0, 6, 3) = [0, 3, 6]; linspace(0, 7, 3) = [0, 3.5, 7] → round half to even → [0, 4, 7]
    assert sample_frames(_frames(8), 3, "uniform")[:, 0, 0, 0].tolist() == [0, 4, 7]


def test_last_sampling_and_short_episodes():
    assert sample_frames(_frames(10), 4, "last")[:, 0, 0, 0].tolist() == [6, 7, 8, 9]
    # Fewer frames than asked: still `count` of them (a clip's length must not tell the time).
    # linspace(0, 2, 8) = 0, .29, .57, .86, 1.14, 1.43, 1.71, 2 → 0, 0, 1, 1, 1, 1, 2, 2.
    assert sample_frames(_frames(3), 8, "uniform")[:, 0, 0, 0].tolist() == [0, 0, 1, 1, 1, 1, 2, 2]
    # "last" repeats the oldest frame in front: [0, 0, 1, 2].
    assert sample_frames(_frames(3), 4, "last")[:, 0, 0, 0].tolist() == [0, 0, 1, 2]
    assert sample_frames(_frames(1), 3, "uniform")[:, 0, 0, 0].tolist() == [0, 0, 0]


def test_query_schedule_every_k_and_at_the_end():
    config = CriticRewardConfig(query_every=5)
    # A 12-step episode: steps 5 and 10 are k-multiples, step 12 is the last.
    steps = [t for t in range(1, 13) if config.is_query_step(t, done=t == 12)]
    assert steps == [5, 10, 12]


def _rewards(config: CriticRewardConfig, estimates, env_rewards=None) -> list[float]:
    tracker = EpisodeTracker(config, "do it", "test")
    tracker.start(None, 0.0)
    tracker.begin(ProgressEstimate(0.1))  # p_0 = 0.1
    env_rewards = env_rewards or [0.0] * len(estimates)
    return [tracker.reward(r, e) for r, e in zip(env_rewards, estimates, strict=True)]


# p_0 = 0.1, then estimates 0.3, (no query: held), 0.6.
_ESTIMATES = [ProgressEstimate(0.3), None, ProgressEstimate(0.6)]


def test_progress_mode_holds_between_queries():
    # r_t = p_t: 0.3, 0.3 (held), 0.6
    assert _rewards(CriticRewardConfig(reward_mode="progress"), _ESTIMATES) == pytest.approx(
        [0.3, 0.3, 0.6]
    )


def test_delta_mode_telescopes():
    # r_t = p_t - p_{t-1}: 0.3-0.1=0.2, 0.3-0.3=0, 0.6-0.3=0.3; sum 0.5 = p_T - p_0 = 0.6 - 0.1
    rewards = _rewards(CriticRewardConfig(reward_mode="delta"), _ESTIMATES)
    assert rewards == pytest.approx([0.2, 0.0, 0.3])
    assert sum(rewards) == pytest.approx(0.6 - 0.1)


def test_potential_mode():
    # r_t = 0.9 p_t - p_{t-1}: 0.27-0.1=0.17, 0.27-0.3=-0.03, 0.54-0.3=0.24
    config = CriticRewardConfig(reward_mode="potential", gamma=0.9)
    assert _rewards(config, _ESTIMATES) == pytest.approx([0.17, -0.03, 0.24])
    # gamma = 1 is in its range (0, 1]: r_t = p_t - p_{t-1}, the delta mode's: 0.2, 0.0, 0.3
    config = CriticRewardConfig(reward_mode="potential", gamma=1.0)
    assert _rewards(config, _ESTIMATES) == pytest.approx([0.2, 0.0, 0.3])


def test_success_mode():
    # 1 when p_t >= 0.5: 0.3 → 0, 0.3 → 0, 0.6 → 1
    config = CriticRewardConfig(reward_mode="success", success_threshold=0.5)
    assert _rewards(config, _ESTIMATES) == [0.0, 0.0, 1.0]


def test_success_at_a_threshold_of_one_is_reached_by_a_reading_of_one():
    # success_threshold = 1.0 is allowed ((0, 1]): p = 0.99 → 0, p = 1.0 >= 1.0 → 1, and the
    # tracker counts it a success (with >, a threshold of 1 could never be met)
    config = CriticRewardConfig(reward_mode="success", success_threshold=1.0)
    tracker = EpisodeTracker(config, "do it", "test")
    tracker.start(None, 0.0)
    tracker.begin(ProgressEstimate(0.1))
    assert tracker.reward(0.0, ProgressEstimate(0.99)) == 0.0 and not tracker.critic_success()
    assert tracker.reward(0.0, ProgressEstimate(1.0)) == 1.0 and tracker.critic_success()


def test_log_mode():
    # e = 0.05, r_t = log(1.05 / (1.05 - p_t)) / log(1.05 / 0.05) = log(1.05 / (1.05 - p_t)) / log 21:
    # p = 0.3: log(1.4) / log(21) = 0.33647 / 3.04452 = 0.11052 (held at the next step);
    # p = 0.6: log(2.3333) / log(21) = 0.84730 / 3.04452 = 0.27830
    rewards = _rewards(CriticRewardConfig(reward_mode="log"), _ESTIMATES)
    assert rewards == pytest.approx([0.11052, 0.11052, 0.27830], abs=1e-5)
    # the ends are 0 and 1, as in progress mode; e = 0.5 at p = 0.5: log(1.5 / 1) / log(3) = 0.36907
    assert _rewards(CriticRewardConfig(reward_mode="log"), [ProgressEstimate(0.0)]) == [0.0]
    assert _rewards(CriticRewardConfig(reward_mode="log"), [ProgressEstimate(1.0)]) == [
        pytest.approx(1.0)
    ]
    half = CriticRewardConfig(reward_mode="log", log_floor=0.5)
    assert _rewards(half, [ProgressEstimate(0.5)]) == pytest.approx([math.log(1.5) / math.log(3)])
    # every halving of what is left pays alike: 1 - p from 0.4 to 0.2 and from 0.2 to 0.1 (e -> 0)
    tiny = CriticRewardConfig(reward_mode="log", log_floor=1e-9)
    r = _rewards(tiny, [ProgressEstimate(0.6), ProgressEstimate(0.8), ProgressEstimate(0.9)])
    assert r[1] - r[0] == pytest.approx(r[2] - r[1], rel=1e-6)


def test_env_reward_mixed_in():
    # progress + 0.5 * env: 0.3+0.5, 0.3+1.0, 0.6+1.5
    config = CriticRewardConfig(env_reward_weight=0.5)
    assert _rewards(config, _ESTIMATES, [1.0, 2.0, 3.0]) == pytest.approx([0.8, 1.3, 2.1])


def test_achieved_weight_adds_the_held_probability_that_the_task_is_achieved():
    # progress + 2 * achieved, achieved held between queries and over an unreadable answer:
    # 0.3 + 2*0.1, 0.3 + 2*0.1 (held), 0.6 + 2*0.8, 0.6 + 2*0.8 (unreadable: both held)
    e = ProgressEstimate
    unreadable = e(None, status=ParseStatus.NO_ANSWER)
    estimates = [e(0.3, achieved=0.1), None, e(0.6, achieved=0.8), unreadable]
    config = CriticRewardConfig(achieved_weight=2.0)
    assert _rewards(config, estimates) == pytest.approx([0.5, 0.5, 2.2, 2.2])
    # the default weight 0 leaves the reward the progress alone
    assert _rewards(CriticRewardConfig(), estimates) == pytest.approx([0.3, 0.3, 0.6, 0.6])


def test_achieved_weight_needs_a_critic_that_gives_the_probability():
    tracker = EpisodeTracker(CriticRewardConfig(achieved_weight=1.0), "x", "my-critic")
    assert tracker.check(ProgressEstimate(0.4, achieved=0.2)).achieved == 0.2
    assert tracker.check(ProgressEstimate(None, status=ParseStatus.NO_ANSWER)).progress is None
    with pytest.raises(CriticOutputError) as err:
        tracker.check(ProgressEstimate(0.4))
    assert str(err.value) == (
        "achieved_weight=1.0 rewards the critic's probability that the task is achieved, and "
        "critic 'my-critic' gives none (ProgressEstimate.achieved); use a one-pass digit readout "
        "(mode=score), the oracle, or achieved_weight=0"
    )
    with pytest.raises(CriticOutputError, match=r"returned achieved=1\.5 for env 0"):
        EpisodeTracker(CriticRewardConfig(), "x", "c").check(ProgressEstimate(0.4, achieved=1.5))


def test_unreadable_answer_holds_previous_progress():
    unreadable = ProgressEstimate(None, status=ParseStatus.NO_ANSWER)
    # delta: 0.3-0.1=0.2, then the unreadable answer holds 0.3 → 0, then 0.6-0.3=0.3
    config = CriticRewardConfig(reward_mode="delta")
    assert _rewards(config, [ProgressEstimate(0.3), unreadable, ProgressEstimate(0.6)]) == (
        pytest.approx([0.2, 0.0, 0.3])
    )


def test_an_unreadable_first_estimate_gives_no_probability_that_the_task_is_achieved():
    # the reset state's answer was not read but carried achieved=0.9: p_0 is 0 and P(achieved)
    # unknown, so progress + 2 × achieved pays 0 + 2 × 0 at a step with no query (it paid
    # 2 × 0.9 = 1.8 for a number read from an answer that was not), then 0.5 + 2 × 0.2 = 0.9
    tracker = EpisodeTracker(CriticRewardConfig(achieved_weight=2.0), "do it", "test")
    tracker.start(None, 0.0)
    tracker.begin(ProgressEstimate(None, status=ParseStatus.NO_ANSWER, achieved=0.9))
    assert tracker.progress == 0.0 and tracker.achieved is None
    assert tracker.reward(0.0, None) == 0.0
    assert tracker.reward(0.0, ProgressEstimate(0.5, achieved=0.2)) == pytest.approx(0.9)


def test_interpolated_progress_hand_worked():
    from envs.critic_reward import interpolate_progress

    e = ProgressEstimate
    # queries at 0, 3 and 5: 0 → 0.6 over three steps (0.2 each), 0.6 → 0.8 over two (0.1 each)
    assert interpolate_progress([e(0.0), None, None, e(0.6), None, e(0.8)]) == pytest.approx(
        [0.0, 0.2, 0.4, 0.6, 0.7, 0.8]
    )
    # an unreadable answer is missing: its neighbours are joined; after the last one it holds;
    # before the first readable one nothing is known
    unreadable = e(None, status=ParseStatus.NO_ANSWER)
    assert interpolate_progress([unreadable, None, e(0.2), unreadable, e(0.6), None]) == (
        pytest.approx([None, None, 0.2, 0.4, 0.6, 0.6])
    )
    assert interpolate_progress([None, unreadable]) == [None, None]
    # the probability that the task is achieved is interpolated the same way, when given
    achieved = [e(0.0, achieved=0.0), None, e(0.6, achieved=0.5), None, e(0.8)]
    assert interpolate_progress(achieved, "achieved") == pytest.approx([0.0, 0.25, 0.5, 0.5, 0.5])


def test_returns_are_tracked():
    tracker = EpisodeTracker(CriticRewardConfig(), "x", "test")
    tracker.start(None, 0.0)
    tracker.begin(ProgressEstimate(0.0))
    tracker.reward(2.0, ProgressEstimate(0.25))
    tracker.reward(-1.0, None)
    assert tracker.env_return == pytest.approx(1.0)
    assert tracker.critic_return == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"reward_mode": "dense"},
            "reward_mode='dense' is not a reward mode; pick one of "
            "['progress', 'delta', 'potential', 'success', 'log']",
        ),
        (
            {"log_floor": 0.0},
            "log_floor=0.0 must be a number in (0, 1] (the log mode's floor on the share of "
            "the task left; 0.05 by default)",
        ),
        (
            {"query_every": 0},
            "query_every=0 must be an integer >= 1 (1 queries the critic every step; "
            "k holds the reward for k steps)",
        ),
        (
            {"query_every": 2.5},
            "query_every=2.5 must be an integer >= 1 (1 queries the critic every step; "
            "k holds the reward for k steps)",
        ),
        (
            {"frames_per_query": 0},
            "frames_per_query=0 must be an integer >= 1, or None for the critic's own clip length",
        ),
        (
            {"frame_sampling": "random"},
            "frame_sampling='random' is not a sampling; pick one of ['uniform', 'last']",
        ),
        ({"gamma": 0.0}, "gamma=0.0 must be a number in (0, 1]"),
        ({"gamma": math.nan}, "gamma=nan must be a number in (0, 1]"),
        (
            {"achieved_weight": -1},
            "achieved_weight=-1 must be a finite number >= 0 (0 adds nothing for the task achieved)",
        ),
        (
            {"env_reward_weight": math.inf},
            "env_reward_weight=inf must be a finite number (0 gives the critic reward alone)",
        ),
        ({"success_threshold": 0}, "success_threshold=0 must be a number in (0, 1]"),
        ({"terminate_on_success": "yes"}, "terminate_on_success='yes' must be True or False"),
        (
            {"between_queries": "spline"},
            "between_queries='spline' is not an option; pick one of ['hold', 'interpolate']",
        ),
    ],
)
def test_bad_options_name_the_value_and_the_fix(options, message):
    with pytest.raises(InvalidOptionError) as err:
        CriticRewardConfig(**options)
    assert str(err.value) == message


class _Critic:
    def __init__(self, clip_frames):
        self.clip_frames = clip_frames


@pytest.mark.parametrize(
    ("requested", "critic", "expected"),
    [(None, _Critic(1), 1), (None, _Critic(None), 8), (None, None, 8), (3, _Critic(1), 3)],
)
@pytest.mark.filterwarnings("ignore:frames_per_query=3. _Critic was trained on clips of 1")
def test_frames_per_query_is_the_critic_s_own_unless_asked(requested, critic, expected):
    config = CriticRewardConfig(frames_per_query=requested)
    assert config.for_critic(critic).frames_per_query == expected
    assert config.for_critic(critic).query_every == config.query_every  # nothing else moves


class _PerTask(_Critic):
    def clip_frames_for(self, task):
        return {"Reacher-v5": 1}.get(task, self.clip_frames)


def test_frames_per_query_is_the_critic_s_own_for_the_task():
    config, critic = CriticRewardConfig(), _PerTask(8)
    assert config.for_critic(critic, "Reacher-v5").frames_per_query == 1
    assert config.for_critic(critic, "Lift").frames_per_query == 8
    assert config.for_critic(critic).frames_per_query == 8  # task unknown: the critic's clip
    with pytest.warns(UserWarning, match=r"^frames_per_query=4: _PerTask was trained on clips "
                      r"of 1 frames on Reacher-v5 and reads 4 as an input it never saw"):  # fmt: skip
        asked = CriticRewardConfig(frames_per_query=4).for_critic(critic, "Reacher-v5")
    assert asked.frames_per_query == 4


def test_a_tracker_without_a_critic_sends_the_default_clip():
    tracker = EpisodeTracker(CriticRewardConfig(frame_sampling="last"), "x", "test")
    tracker.start(np.zeros((2, 2, 3), np.uint8), 0.0)
    for t in range(1, 12):
        tracker.observe(np.full((2, 2, 3), t, np.uint8), 0.0)
    assert tracker.query().frames[:, 0, 0, 0].tolist() == [4, 5, 6, 7, 8, 9, 10, 11]


@pytest.mark.parametrize("value", [math.nan, math.inf, -0.1, 1.5])
def test_out_of_contract_progress_raises(value):
    tracker = EpisodeTracker(CriticRewardConfig(), "x", "my-critic")
    with pytest.raises(CriticOutputError) as err:
        tracker.check(ProgressEstimate(value), env_index=3)
    assert str(err.value) == (
        f"critic 'my-critic' returned progress {value!r} for env 3; progress must be a finite "
        "number in [0, 1], or None with a parse status when the answer could not be read"
    )


def test_non_estimate_raises():
    tracker = EpisodeTracker(CriticRewardConfig(), "x", "my-critic")
    with pytest.raises(CriticOutputError) as err:
        tracker.check(0.5)
    assert str(err.value) == (
        "critic 'my-critic' returned float for env 0; estimate_progress must return "
        "critic.ProgressEstimate objects"
    )


def test_wrong_batch_size_raises():
    with pytest.raises(CriticOutputError) as err:
        check_batch("my-critic", [ProgressEstimate(0.1)] * 3, 2)
    assert str(err.value) == (
        "critic 'my-critic' returned 3 estimates for 2 queries; a critic must return exactly "
        "one estimate per query, in order"
    )


def test_numpy_options_are_taken_and_kept_as_plain_numbers():
    config = CriticRewardConfig(
        query_every=np.int64(5), frames_per_query=np.int32(2), gamma=np.float32(0.5)
    )
    assert (config.query_every, config.frames_per_query, config.gamma) == (5, 2, 0.5)
    assert type(config.query_every) is int and type(config.gamma) is float


def test_a_reward_that_overflows_is_refused_naming_the_weight():
    # each weight and reward is finite; their weighted sum is not (-1.5e308 - 1.5e308 = -inf)
    tracker = EpisodeTracker(CriticRewardConfig(env_reward_weight=1e308), "x", "test")
    assert tracker.reward(-1.5, None) == pytest.approx(-1.5e308)
    with pytest.raises(InvalidOptionError, match=r"reward at step 2 is -inf: env_reward_weight="
                       r"1e\+308 times the task's reward -2 .*overflows a float"):  # fmt: skip
        tracker.reward(-2.0, None)
