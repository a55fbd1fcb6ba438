"""The evaluator reads a critic's answers as the reward does: answers that break the contract are
named, numpy booleans count as the calls they are, and a detector that read nothing fits no
threshold. Split from tests/critic/test_eval.py."""

from __future__ import annotations

import numpy as np
import pytest

from critic.base import CriticError, FailureVerdict, ProgressEstimate
from critic.detection import evaluate_failures, failure_scores
from critic.eval import accuracy_threshold, evaluate_progress
from critic.oracle import OracleCritic
from tests.critic.test_eval import MuteCritic, _episode


def test_a_detector_that_read_nothing_calls_no_kind_a_failure_and_fits_no_threshold():
    # every progress answer unreadable: each score was the 0.5 of an unread answer, a τ was fit
    # on them, and "success 1.00" printed as the false-alarm rate of a detector that read none
    episodes = [_episode(0), _episode(1), _episode(2, "stall"), _episode(3, "overshoot")]
    assert np.isnan(failure_scores(MuteCritic(), episodes, "progress")).all()
    mute = evaluate_failures(MuteCritic(), episodes, frames=4, delay_points=0,
                             progress_threshold=0.4)["progress"]  # fmt: skip
    assert "judged_failure_by_type" not in mute and np.isnan(mute["threshold_accuracy"])
    with pytest.raises(ValueError, match=r"accuracy_threshold needs finite scores; got \[nan\]"):
        accuracy_threshold([0.1, np.nan, 0.9], [False, True, True])


class NumpyVerdicts(OracleCritic):
    """The oracle's verdicts with numpy bools (``success=p > 0.5`` computed with numpy)."""

    def detect_failure(self, queries):
        return [
            FailureVerdict(np.bool_(v.success), v.failure_type, 0.9)
            for v in super().detect_failure(queries)
        ]


def test_numpy_bool_verdicts_count_as_the_calls_they_are():
    # np.False_ is not False: every failure call was counted as none (accuracy 0.5, recall 0)
    episodes = [_episode(0), _episode(1), _episode(2, "stall"), _episode(3, "overshoot")]
    numpy = evaluate_failures(NumpyVerdicts(), episodes, frames=4, delay_points=3)
    assert numpy["accuracy"] == 1.0 and numpy["recall"] == 1.0
    assert numpy["type_accuracy"] == 1.0 and numpy["detected_in_time"] == 1.0


class Short(OracleCritic):
    """One answer too few per call."""

    def estimate_progress(self, queries):
        return super().estimate_progress(queries)[:-1]

    def detect_failure(self, queries):
        return super().detect_failure(queries)[:-1]


class Over(OracleCritic):
    """Readings above 1."""

    def estimate_progress(self, queries):
        return [ProgressEstimate(1.5, achieved=2.0) for _ in queries]

    def detect_failure(self, queries):
        return [FailureVerdict("no", confidence=0.5) for _ in queries]


@pytest.mark.parametrize(
    ("critic", "progress_message", "verdict_message"),
    [
        (Short(), "returned 3 answers for 4 queries", "returned 3 answers for 4 queries"),
        (Over(), "returned progress=1.5 for query 0", "returned success='no' for query 0"),
    ],
)
def test_answers_that_break_the_contract_are_named_not_scored(
    critic, progress_message, verdict_message
):
    # the reward and the ensemble refused them; the evaluator scored a reading of 1.5 (expert
    # MAE 0.875) and met a short list with an IndexError from deep in its metrics
    episodes = [_episode(0), _episode(1), _episode(2, "stall"), _episode(3, "overshoot")]
    with pytest.raises(CriticError, match=rf"critic 'oracle' {progress_message}"):
        evaluate_progress(critic, episodes[:1], frames_per_query=2, stride=3)
    with pytest.raises(CriticError, match=rf"critic 'oracle' {verdict_message}"):
        failure_scores(critic, episodes, "verdict", frames=4)
