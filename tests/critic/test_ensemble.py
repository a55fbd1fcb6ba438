"""critic/ensemble.py: hand-worked combinations, unreadable members, the majority verdict, typed
config errors, and an ensemble as the reward of a real Reacher env."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import pytest

import envs  # noqa: F401 - registers VisCriticReward-v0
from critic.base import (
    Critic,
    CriticError,
    FailureQuery,
    FailureVerdict,
    ParseStatus,
    ProgressEstimate,
    ProgressQuery,
)
from critic.ensemble import EnsembleConfigError, EnsembleCritic
from critic.factory import make_critic


@dataclass
class Fixed(Critic):
    """Reads every query as ``progress`` (``None``: unreadable); says ``success``."""

    progress: float | None = 0.5
    success: bool | None = True
    achieved: float | None = None
    failure_type: str | None = None
    frames: int | None = None
    needs_frames: bool = field(default=False, kw_only=True)

    @property
    def clip_frames(self) -> int | None:
        return self.frames

    def estimate_progress(self, queries):
        status = ParseStatus.OK if self.progress is not None else ParseStatus.NO_ANSWER
        return [
            ProgressEstimate(self.progress, status=status, achieved=self.achieved) for _ in queries
        ]

    def detect_failure(self, queries):
        return [FailureVerdict(self.success, self.failure_type) for _ in queries]


QUERIES = [ProgressQuery("reach"), ProgressQuery("reach")]


@pytest.mark.parametrize(
    ("combine", "expected"),
    [
        ("mean", 0.5),
        ("min", 0.2),
        # mean 0.5, population std sqrt((0.09 + 0.01 + 0.16) / 3) = 0.294392
        ("mean_minus_std", 0.5 - 0.294392),
    ],
)
def test_combinations_by_hand(combine, expected):
    critic = EnsembleCritic([Fixed(0.2), Fixed(0.4), Fixed(0.9)], combine=combine)
    estimates = critic.estimate_progress(QUERIES)
    assert [e.progress for e in estimates] == pytest.approx([expected] * 2, abs=1e-6)
    assert estimates[0].spread == pytest.approx(0.294392, abs=1e-6)


@pytest.mark.parametrize(("combine", "expected"), [("mean", 0.5), ("min", 0.2)])
def test_the_probability_that_the_task_is_achieved_combines_by_the_same_rule(combine, expected):
    members = [Fixed(0.2, achieved=0.2), Fixed(0.4, achieved=0.4), Fixed(0.9, achieved=0.9)]
    estimate = EnsembleCritic(members, combine=combine).estimate_progress(QUERIES[:1])[0]
    assert estimate.achieved == pytest.approx(expected)
    # a member that cannot say leaves the ensemble unable to say; unreadable members are left out
    partial = EnsembleCritic([Fixed(0.2, achieved=0.2), Fixed(0.4)], combine=combine)
    assert partial.estimate_progress(QUERIES[:1])[0].achieved is None
    unread = EnsembleCritic([Fixed(0.2, achieved=0.2), Fixed(None)], combine=combine)
    expected_unread = 0.2 if combine == "mean" else None  # min: no worst case without it
    assert unread.estimate_progress(QUERIES[:1])[0].achieved == (
        None if expected_unread is None else pytest.approx(expected_unread)
    )


def test_the_std_penalty_is_weighted_and_clipped_at_zero():
    members = [Fixed(0.0), Fixed(0.4)]  # mean 0.2, std 0.2
    half = EnsembleCritic(members, combine="mean_minus_std", std_weight=0.5)
    assert half.estimate_progress(QUERIES[:1])[0].progress == pytest.approx(0.1)
    triple = EnsembleCritic(members, combine="mean_minus_std", std_weight=3.0)
    assert triple.estimate_progress(QUERIES[:1])[0].progress == 0.0


def test_unreadable_members_are_left_out_and_all_unreadable_is_unreadable():
    critic = EnsembleCritic([Fixed(None), Fixed(0.3), Fixed(0.7)])
    assert critic.estimate_progress(QUERIES[:1])[0].progress == pytest.approx(0.5)
    none = EnsembleCritic([Fixed(None), Fixed(None)]).estimate_progress(QUERIES[:1])[0]
    assert none.progress is None and none.status is ParseStatus.NO_ANSWER
    for combine in ("min", "mean_minus_std"):  # the worst case is unknown without every member
        worst = EnsembleCritic([Fixed(0.9), Fixed(None)], combine=combine)
        estimate = worst.estimate_progress(QUERIES[:1])[0]
        assert estimate.progress is None and estimate.status is ParseStatus.NO_ANSWER


@pytest.mark.parametrize(
    ("answers", "says"),
    [
        ([], "returned 0 answers"),
        ([None, None], "returned a NoneType among its answers"),
    ],
)
def test_a_member_that_breaks_the_contract_is_named(answers, says):
    # a wrong count was a bare zip() error, a None an AttributeError: no member named
    @dataclass
    class Broken(Fixed):
        def estimate_progress(self, queries):
            return answers

        def detect_failure(self, queries):
            return answers

    ensemble = EnsembleCritic([Fixed(0.5), Broken(0.5)])
    for read, kind in ((ensemble.estimate_progress, "ProgressEstimate"),
                       (ensemble.detect_failure, "FailureVerdict")):  # fmt: skip
        queries = QUERIES if kind == "ProgressEstimate" else [FailureQuery("reach")] * 2
        with pytest.raises(CriticError, match=rf"ensemble member '.*' {says} for 2 queries; a "
                           rf"critic returns one {kind} per query, in order"):  # fmt: skip
            read(queries)


def test_a_bare_query_is_named_by_the_ensemble_not_its_first_member():
    from critic.base import CriticError, FailureQuery

    critic = EnsembleCritic([make_critic("oracle"), make_critic("oracle")])
    for method, query in (("estimate_progress", QUERIES[0]), ("detect_failure", FailureQuery("x"))):
        with pytest.raises(CriticError) as err:
            getattr(critic, method)(query)
        assert str(err.value).startswith(f"{critic.name}.{method} takes a list of ")  # not oracle.


def test_the_verdict_is_the_readable_majority():
    members = [Fixed(success=False, failure_type="stall"), Fixed(success=False,
               failure_type="stall"), Fixed(success=True), Fixed(success=None)]  # fmt: skip
    verdict = EnsembleCritic(members).detect_failure([FailureQuery("reach")])[0]
    assert (verdict.success, verdict.failure_type) == (False, "stall")
    assert verdict.confidence == pytest.approx(2 / 3)
    tie = EnsembleCritic([Fixed(success=True), Fixed(success=False)])
    assert tie.detect_failure([FailureQuery("reach")])[0].success is False  # a tie is a failure


@pytest.mark.parametrize("first", ["stall", "overshoot"])
def test_a_tie_between_failure_types_goes_to_the_first_member(first):
    # two members agree on a failure, one type each (a count of 1 apiece): the first member's
    # type, whatever the string hash's seed (the tie was broken by set order)
    other = {"stall": "overshoot", "overshoot": "stall"}[first]
    members = [Fixed(success=False, failure_type=first), Fixed(success=False, failure_type=other)]
    verdict = EnsembleCritic(members).detect_failure([FailureQuery("reach")])[0]
    assert (verdict.success, verdict.failure_type) == (False, first)


def test_members_share_one_clip_length_and_the_ensemble_reports_it():
    assert EnsembleCritic([Fixed(frames=1), Fixed(frames=None)]).clip_frames == 1
    # built, but asked for a clip it has none to give
    with pytest.raises(EnsembleConfigError, match=r"different clip lengths \[1, 8\] by default"):
        EnsembleCritic([Fixed(frames=1), Fixed(frames=8)]).clip_frames  # noqa: B018


@dataclass
class PerTask(Fixed):
    """Reads ``tasks[task]`` frames on the tasks named, ``frames`` elsewhere."""

    tasks: dict = field(default_factory=dict)

    def clip_frames_for(self, task):
        return self.tasks.get(task, self.frames)


def test_members_with_a_clip_per_task_agree_on_the_task_they_read():
    critic = EnsembleCritic([PerTask(frames=8, tasks={"Reacher-v5": 1}),
                             PerTask(frames=8, tasks={"Reacher-v5": 1, "Lift": 4})])  # fmt: skip
    assert [critic.clip_frames_for(t) for t in ("Reacher-v5", "Pusher-v5")] == [1, 8]
    with pytest.raises(EnsembleConfigError, match=r"different clip lengths \[4, 8\] on Lift"):
        critic.clip_frames_for("Lift")
    # members whose defaults differ may still read the task they are used for alike (the shipped
    # critic, 8 frames but 1 on Reacher, beside a Reacher-only 1-frame round)
    mixed = EnsembleCritic([PerTask(frames=8, tasks={"Reacher-v5": 1}), PerTask(frames=1)])
    assert mixed.clip_frames_for("Reacher-v5") == 1
    with pytest.raises(EnsembleConfigError, match=r"different clip lengths \[1, 8\] on Lift"):
        mixed.clip_frames_for("Lift")
    # ... unless a length is asked for: the members read it, with no length of its own to warn of
    import warnings

    from critic.base import query_frames

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert query_frames(mixed, 4, "Lift") == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"members": []}, "members=[]: an ensemble needs a list of two or more critics"),
        ({"members": "oracle"}, "members='oracle': an ensemble needs a list of two or more"),
        ({"members": ["oracle"]}, "members=['oracle']: an ensemble needs a list of two or more"),
        ({"members": ["oracle", "oracle"], "combine": "median"},
         "combine='median' is not a rule; pick one of ['mean', 'min', 'mean_minus_std']"),
        ({"members": ["oracle", "oracle"], "std_weight": -1}, "std_weight=-1 must be a finite number >= 0"),
    ],
)  # fmt: skip
def test_bad_configs_are_typed_messages(kwargs, message):
    with pytest.raises(EnsembleConfigError) as err:
        make_critic({"name": "ensemble", **kwargs})
    assert str(err.value).startswith(message)


@pytest.mark.filterwarnings("ignore:ensemble members 0 and 1 are the same critic")  # meant
def test_an_ensemble_of_oracles_is_the_reward_of_a_real_env():
    env = gym.make(
        "VisCriticReward-v0",
        env="Reacher-v5",
        critic={"name": "ensemble", "members": ["oracle", "oracle"], "combine": "min"},
    )
    env.reset(seed=0)
    _, reward, _, _, info = env.step(env.action_space.sample())
    assert reward == pytest.approx(info["progress"]) == info["critic_progress"]  # min of two truths
    env.close()


@pytest.mark.filterwarnings("ignore:ensemble members 0 and 1 are the same critic")  # meant
def test_an_ensemble_of_a_trained_critic_reads_as_the_critic_in_a_real_env():
    # Two copies of the shipped two-frame checkpoint: their mean is the single critic's reading,
    # and the ensemble sends the members' own clip length (1 frame) without being told.
    model = str(Path(__file__).resolve().parents[2] / "critic/weights/viscritic-small-reacher-2f")
    single = gym.make("VisCriticReward-v0", env="Reacher-v5", critic=model, query_every=5)
    pair = gym.make("VisCriticReward-v0", env="Reacher-v5", query_every=5,
                    critic={"name": "ensemble", "members": [model, model], "combine": "mean"})  # fmt: skip
    assert EnsembleCritic([model, model]).clip_frames == 1
    rewards = []
    for env in (single, pair):
        env.reset(seed=3)
        env.action_space.seed(3)
        rewards.append([env.step(env.action_space.sample())[1] for _ in range(10)])
        env.close()
    assert rewards[0] == pytest.approx(rewards[1], abs=1e-6)
    assert len(set(rewards[0])) > 1  # the readings move: the comparison is not of constants


def test_an_ensemble_offers_its_members_failure_types():
    # the evaluator scores types against them: without, it took the built-in ones and the
    # episodes' own, and counted a type no member was offered as a missed type
    from critic.oracle import OracleCritic

    @dataclass
    class Offering(OracleCritic):
        failure_types: tuple = ("stall", "flip")

    assert EnsembleCritic(members=[OracleCritic(), OracleCritic()]).failure_types is None
    mixed = EnsembleCritic(members=[Offering(), Offering(failure_types=("flip", "drop"))])
    assert mixed.failure_types == ("stall", "flip", "drop")


def test_the_same_member_twice_is_warned_of():
    # two noisy oracles at the default seed draw the same noise: the "ensemble" averaged copies
    from critic.ensemble import EnsembleCritic

    noisy = {"name": "noisy_oracle", "offset_sd": 0.2}
    with pytest.warns(UserWarning, match=r"ensemble members 0 and 1 are the same critic \("
                      r"\{'name': 'noisy_oracle', 'offset_sd': 0.2\}\): they answer alike"):  # fmt: skip
        EnsembleCritic(members=[noisy, dict(noisy)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        EnsembleCritic(members=[noisy, {**noisy, "seed": 1}])  # two seeds: two draws
