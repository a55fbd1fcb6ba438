"""Failure detection (critic/detection.py), RoboFail-style, on hand-built episodes: verdicts,
the last-frame detectors, the delay, batching and refusals. Split from test_eval.py (the metrics
and progress), whose episodes and clock critics it uses."""

from __future__ import annotations

import numpy as np
import pytest

from critic.base import (
    Critic,
    FailureVerdict,
    ParseStatus,
    ProgressEstimate,
)
from critic.detection import evaluate_failures, failure_probability, failure_scores
from critic.oracle import OracleCritic
from critic.queries import progress_queries
from tests.critic.test_eval import ClockCritic, LapsingClockCritic, _episode


def test_failure_detection_oracle_and_constant():
    episodes = [_episode(0), _episode(1), _episode(2, "stall"), _episode(3, "overshoot")]
    oracle = evaluate_failures(OracleCritic(), episodes, frames=4, delay_points=3)
    assert oracle["accuracy"] == 1.0 and oracle["f1"] == 1.0 and oracle["auroc"] == 1.0
    assert oracle["confusion"] == {"success": {"success": 2}, "stall": {"stall": 1},
                                   "overshoot": {"overshoot": 1}}  # fmt: skip
    assert oracle["type_accuracy"] == 1.0
    # the failure is at env step 6 = frame 3; the first prefix ends there → no delay
    assert oracle["detection_delay_s"] == 0.0 and oracle["detected_in_time"] == 1.0
    # one delay point: the one prefix is the whole episode (frame 11, env step 22), not the
    # failure frame; the oracle calls it a failure there: (22 - 6) steps × 1 / (10 fps × 2 steps
    # a frame) = 16 × 0.05 s = 0.8 s
    one = evaluate_failures(OracleCritic(), episodes, frames=4, delay_points=1)
    assert one["detection_delay_s"] == pytest.approx(0.8) and one["detected_in_time"] == 1.0
    assert oracle["constant_accuracy"] == 0.5
    assert "threshold_accuracy" not in oracle  # only with a threshold fit elsewhere
    clock = evaluate_failures(ClockCritic(), episodes, frames=4)
    # says success every time: accuracy 0.5, recall 0, failure probability 0.1 everywhere → AUROC 0.5
    assert clock["accuracy"] == 0.5 and clock["recall"] == 0.0 and clock["auroc"] == 0.5
    assert clock["detected_in_time"] == 0.0
    # failure probability 0.1 everywhere: τ = 0.05 calls all four failures → accuracy 0.5
    at = evaluate_failures(ClockCritic(), episodes, frames=4, delay_points=0, threshold=0.05)
    assert at["threshold"] == 0.05 and at["threshold_accuracy"] == 0.5 and at["recall"] == 0.0
    assert failure_probability(FailureVerdict(None)) == 0.5
    # a failure of a type no prompt offers (a policy rollout's "unknown") is a plain failure:
    # the answer critics are taught for it, left out of the type accuracy
    rollout = [*episodes, _episode(4, "unknown")]
    mixed = evaluate_failures(OracleCritic(), rollout, frames=4, delay_points=0,
                              progress_threshold=0.5)  # fmt: skip
    assert mixed["confusion"]["failure"] == {"unknown": 1} and mixed["type_accuracy"] == 1.0
    # and the same kind where each detector's recall is split by kind (it was "unknown" there)
    assert set(mixed["progress"]["judged_failure_by_type"]) == set(mixed["confusion"])
    assert mixed["progress"]["judged_failure_by_type"]["failure"] == 1.0
    # a type of one's own ("flip", docs/tasks.md) is a type like the built-in ones: the oracle
    # (no vocabulary of its own) names it, and it counts in the type accuracy; it was "failure"
    own = evaluate_failures(OracleCritic(), [*episodes, _episode(5, "flip")], frames=4,
                            delay_points=0)  # fmt: skip
    assert own["confusion"]["flip"] == {"flip": 1} and "failure" not in own["confusion"]
    assert own["type_accuracy"] == 1.0


class MuteCritic(Critic):
    """Never gives a readable answer."""

    def estimate_progress(self, queries):
        return [ProgressEstimate(None, status=ParseStatus.NO_ANSWER) for _ in queries]

    def detect_failure(self, queries):
        return [FailureVerdict(None, status=ParseStatus.NO_ANSWER) for _ in queries]


class MuteOnSuccessCritic(OracleCritic):
    """The oracle's verdicts, unreadable where the episode succeeded."""

    def detect_failure(self, queries):
        return [
            FailureVerdict(None, status=ParseStatus.NO_ANSWER) if q.privileged_success else v
            for q, v in zip(queries, super().detect_failure(queries), strict=True)
        ]


def test_an_unreadable_verdict_is_wrong_and_a_detector_that_read_nothing_is_n_a():
    # unreadable verdicts were counted as "success" calls: a critic that never answered scored
    # the share of successes (0.75 here), and its AUROC of all-0.5 scores read 0.5
    episodes = [_episode(0), _episode(1), _episode(2), _episode(3, "stall")]
    mute = evaluate_failures(MuteCritic(), episodes, frames=4, delay_points=0)
    assert mute["readable"] == 0.0 and mute["accuracy"] == 0.0 and mute["recall"] == 0.0
    assert np.isnan(mute["auroc"]) and np.isnan(mute["progress"]["auroc"])
    assert mute["constant_accuracy"] == 0.75
    # the oracle's calls on the failure, none on the three successes: 1 of 4 right; precision
    # 1 (no false alarm), recall 1; the verdict's AUROC from failure probabilities 0.5, 0.5, 0.5
    # and 1.0 is 1.0
    half = evaluate_failures(MuteOnSuccessCritic(), episodes, frames=4, delay_points=0)
    assert half["readable"] == 0.25 and half["accuracy"] == 0.25
    assert half["precision"] == 1.0 and half["recall"] == 1.0 and half["auroc"] == 1.0
    assert half["progress"]["auroc"] == 1.0  # the progress reading is the oracle's


def test_failure_from_final_progress():
    episodes = [_episode(0), _episode(1), _episode(2, "stall"), _episode(3, "overshoot")]
    # the oracle's last-frame progress: experts 1.0, failures 0.2 → P(failure) 0, 0, 0.8, 0.8
    assert failure_scores(OracleCritic(), episodes, "progress") == pytest.approx([0, 0, 0.8, 0.8])
    oracle = evaluate_failures(OracleCritic(), episodes, frames=4, delay_points=0,
                               progress_threshold=0.5)["progress"]  # fmt: skip
    assert oracle["auroc"] == 1.0 and oracle["threshold_accuracy"] == 1.0
    # the clock gives the 4 last frames (one call) 0, 1/8, 2/8, 3/8 → P(failure) 1, .875, .75, .625:
    # both failures score below both experts (AUROC 0); τ = 0.7 calls episodes 0, 1, 2 failures
    # → 1 of 4 right, precision 1/3, recall 1/2
    clock = evaluate_failures(ClockCritic(), episodes, frames=4, delay_points=0,
                              progress_threshold=0.7)["progress"]  # fmt: skip
    assert clock["auroc"] == 0.0
    assert clock["threshold_accuracy"] == 0.25 and clock["threshold_recall"] == 0.5
    assert clock["threshold_precision"] == pytest.approx(1 / 3)
    # by kind: both successes called failures (false alarms 1.0), the stall caught, the overshoot not
    assert clock["judged_failure_by_type"] == {"success": 1.0, "stall": 1.0, "overshoot": 0.0}
    assert oracle["judged_failure_by_type"] == {"success": 0.0, "stall": 1.0, "overshoot": 1.0}
    # the oracle's P(achieved) at the last frame: experts 1, failures 0 → P(failure) 0, 0, 1, 1
    assert failure_scores(OracleCritic(), episodes, "achieved") == [0.0, 0.0, 1.0, 1.0]
    achieved = evaluate_failures(OracleCritic(), episodes, frames=4, delay_points=0,
                                 achieved_threshold=0.5)["achieved"]  # fmt: skip
    assert achieved["auroc"] == 1.0 and achieved["threshold_accuracy"] == 1.0
    assert achieved["judged_failure_by_type"] == oracle["judged_failure_by_type"]
    # a critic that gives no such probability has no achieved detector (nan scores, no entry)
    assert np.isnan(failure_scores(ClockCritic(), episodes, "achieved")).all()
    assert "achieved" not in evaluate_failures(ClockCritic(), episodes, frames=4, delay_points=0)
    # nor does one with an unreadable answer (the third) (its unread 0.5 used to report one)
    assert "achieved" not in evaluate_failures(LapsingClockCritic(), episodes, frames=4,
                                               delay_points=0)  # fmt: skip
    # one readable answer without P(achieved) among others with it reads 0.5 there: its nan
    # score had made the detector's AUROC n/a
    assert failure_scores(SometimesAchievedOracle(), episodes, "achieved") == [0.0, 0.0, 0.5, 1.0]
    some = evaluate_failures(SometimesAchievedOracle(), episodes, frames=4, delay_points=0)
    assert some["achieved"]["auroc"] == 1.0
    with pytest.raises(ValueError, match="detector='vote'"):
        failure_scores(OracleCritic(), episodes, "vote")


class SometimesAchievedOracle(OracleCritic):
    """The oracle, with no P(achieved) on the third answer of a call (its progress still read)."""

    def estimate_progress(self, queries):
        estimates = super().estimate_progress(queries)
        if len(estimates) > 2:
            estimates[2] = ProgressEstimate(estimates[2].progress)
        return estimates


class CallSizeOracle(OracleCritic):
    """The oracle, recording how many queries each call carries and the frames (by their fill
    value, 20 k at frame k) each failure query shows."""

    def __init__(self):
        super().__init__()
        self.calls, self.shown = [], []

    def estimate_progress(self, queries):
        self.calls.append(len(queries))
        return super().estimate_progress(queries)

    def detect_failure(self, queries):
        self.calls.append(len(queries))
        self.shown += [(q.frames[:, 0, 0, 0] // 20).tolist() for q in queries]
        return super().detect_failure(queries)


def test_failure_detection_asks_the_critic_batch_queries_at_a_time():
    # before, every episode's verdict query went to the critic in one call, whatever batch= said
    # (a whole evaluation generated at once on a GPU)
    episodes = [_episode(i, None if i % 2 else "stall") for i in range(5)]
    critic = CallSizeOracle()
    batched = evaluate_failures(critic, episodes, frames=4, delay_points=3, batch=2)
    # 5 verdicts, then 5 last-frame readings, then 3 prefixes of each of the 3 failures
    assert critic.calls == [2, 2, 1] + [2, 2, 1] + [2, 1] * 3
    assert batched == evaluate_failures(OracleCritic(), episodes, frames=4, delay_points=3)
    # the whole-episode clip of 4 frames runs from the first frame to the last (frame 11)
    assert critic.shown[:2] == [[0, 4, 7, 11], [0, 4, 7, 11]]
    critic.calls.clear()
    failure_scores(critic, episodes, "verdict", frames=4, batch=3)
    assert critic.calls == [3, 2]
    with pytest.raises(ValueError, match=r"batch=0 must be an integer >= 1"):
        evaluate_failures(critic, episodes, frames=4, batch=0)


def test_a_failure_clip_of_one_frame_or_an_unknown_camera_is_refused():
    # one frame spread from the first to the last is the first alone: every verdict was read from
    # a frame that shows nothing of the outcome
    episodes = [_episode(0), _episode(1, "stall")]
    for call in (
        lambda: evaluate_failures(OracleCritic(), episodes, frames=1),
        lambda: failure_scores(OracleCritic(), episodes, "verdict", frames=1),
    ):
        with pytest.raises(
            ValueError, match=r"failure_frames=1 must be an integer >= 2: a failure"
        ):
            call()
    # a camera the episodes lack names the ones they have (it was a bare KeyError: 'wrist')
    for call in (
        lambda: evaluate_failures(OracleCritic(), episodes, frames=4, camera="wrist"),
        lambda: progress_queries(episodes[0], camera="wrist"),
    ):
        with pytest.raises(ValueError, match=r"has no camera 'wrist'; it has \['cam'\]"):
            call()


def test_the_last_frame_detector_reads_a_stepwise_critic_after_the_episode_before_it():
    from critic.detection import last_frame_scores
    from tests.helpers import ScriptedCritic

    class Counting(ScriptedCritic):  # its last estimate + 0.25: online it reads 0.75 at frame 3
        @property
        def reads_previous_progress(self) -> bool:
            return True

        def estimate_progress(self, queries):
            return [ProgressEstimate(0.0 if q.previous_progress is None
                                     else min(1.0, q.previous_progress + 0.25)) for q in queries]  # fmt: skip

    scores = last_frame_scores(Counting(), [_episode(0, t=4), _episode(1, t=2)])
    assert scores["progress"] == pytest.approx([0.25, 0.75])  # 1 - progress
