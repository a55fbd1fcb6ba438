"""The evaluator reads a critic's answers as the reward does: answers that break the contract are
named, numpy booleans count as the calls they are, and a detector that read nothing fits no
threshold. Split from tests/critic/test_eval.py."""

from __future__ import annotations

import numpy as np
import pytest

from critic.base import Critic, CriticError, FailureVerdict, ParseStatus, ProgressEstimate
from critic.detection import evaluate_failures, failure_scores, threshold_metrics
from critic.eval import (
    EpisodeProgress,
    accuracy_threshold,
    calibration,
    evaluate_progress,
    progress_summary,
    reading_by_state,
    value_order_correlation,
)
from critic.oracle import OracleCritic
from critic.probes import probe_passes
from critic.queries import predict_estimates, progress_queries
from tests.critic.test_detection import MuteCritic
from tests.critic.test_eval import _episode


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


def test_tied_readings_share_their_average_rank_in_the_value_order_correlation():
    # ranks (1.5, 1.5, 3.5, 3.5) against times (1, 2, 3, 4): centred (-1, -1, 1, 1) and
    # (-1.5, -0.5, 0.5, 1.5); sum of products 1.5 + 0.5 + 0.5 + 1.5 = 4 over norms 2 and
    # sqrt(5): 2 / sqrt(5) = 0.894427. Ranked in order of appearance the ties read 1.0: a
    # critic that steps up once scored as one that rises every frame
    assert value_order_correlation([0.2, 0.2, 0.5, 0.5]) == pytest.approx(2 / 5**0.5)
    assert value_order_correlation([0.2, 0.2, 0.5, 0.5]) == pytest.approx(0.894427, abs=1e-6)


def test_a_prediction_of_exactly_one_falls_in_the_last_calibration_bin():
    # 1.0 * 10 = 10 is past the last bin's index 9 and is clipped into it, with 0.95's bin
    # [0.9, 1.0]: its truth 0.9 counted there, not left out of every bin
    cal = calibration([0.05, 1.0], [0.0, 0.9], bins=10)
    assert cal["count"] == [1, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    assert cal["predicted"][9] == 1.0 and cal["true"][9] == pytest.approx(0.9)


def test_a_reversed_probe_read_flat_does_not_pass():
    # the reversed video's VOC must be below 0: a flat critic reads VOC 0 (no order) and must
    # not pass as if it saw time run backwards
    assert probe_passes("reversed", 0.0) is False
    assert probe_passes("reversed", -0.01) is True


def test_the_best_constant_is_the_median_of_skewed_truths():
    # truths 0, 0, 0, 1: the median 0 misses by 0, 0, 0, 1 → MAE 0.25; the mean 0.25 would
    # miss by 0.25 × 3 + 0.75 = 1.5 → MAE 0.375, a bar the critic's MAE (0.1) need not clear
    skewed = EpisodeProgress("a", "T", True, np.array([0.1, 0.1, 0.1, 0.9]),
                             np.array([0.0, 0.0, 0.0, 1.0]), 4)  # fmt: skip
    summary = progress_summary([skewed])["expert"]
    assert summary["constant"] == 0.0
    assert summary["constant_mae"] == pytest.approx(0.25)
    assert summary["mae"] == pytest.approx(0.1)


def test_a_score_at_the_threshold_is_called_a_failure():
    # score >= τ = 0.6: called 0.2 F, 0.6 T, 0.6 T, 0.9 T against actual F T F T: tp 2, fp 1,
    # fn 0, tn 1 → accuracy 3/4, precision 2/3, recall 1. (With >, the two 0.6s were not
    # called: precision 1/1, recall 1/2.) AUROC: the positives 0.6 and 0.9 over the negatives
    # 0.2 and 0.6 win 1 + 0.5 (the tie) + 1 + 1 of 4 pairs = 0.875
    m = threshold_metrics([0.2, 0.6, 0.6, 0.9], [False, True, False, True], threshold=0.6)
    assert m["auroc"] == pytest.approx(0.875) and m["threshold"] == 0.6
    assert m["threshold_accuracy"] == pytest.approx(0.75)
    assert m["threshold_precision"] == pytest.approx(2 / 3) and m["threshold_recall"] == 1.0
    # the share per kind uses the same rule: the oracle's last reading of an expert is 1.0,
    # score 1 - 1.0 = 0.0, so τ = 0 calls every success a failure (the false-alarm rate 1)
    episodes = [_episode(0), _episode(1), _episode(2, "stall")]
    judged = evaluate_failures(OracleCritic(), episodes, frames=4, delay_points=0,
                               progress_threshold=0.0)["progress"]  # fmt: skip
    assert judged["judged_failure_by_type"] == {"stall": 1.0, "success": 1.0}


def test_a_state_value_on_a_bin_edge_falls_in_the_bin_it_opens():
    # edges [1, 2]: bins (-inf, 1), [1, 2), [2, inf); 0.5, 1.0 and 2.0 fall one in each. With
    # v > low, 1.0 and 2.0 fell in no bin; with v <= high, 1.0 fell in the first two and 2.0
    # in the last two
    rows = reading_by_state([0.5, 1.0, 2.0], [0.1, 0.5, 0.9], [0.0, 0.5, 1.0], None, [1, 2])
    assert [(r["low"], r["high"], r["frames"]) for r in rows] == [
        (None, 1.0, 1), (1.0, 2.0, 1), (2.0, None, 1)]  # fmt: skip
    assert [r["progress"] for r in rows] == pytest.approx([0.1, 0.5, 0.9])
    assert [r["share"] for r in rows] == pytest.approx([1 / 3] * 3)


class SaysAchievedUnread(Critic):
    """An unparsed answer that still carries a P(achieved), then two read ones (one without)."""

    def estimate_progress(self, queries):
        e = ProgressEstimate
        answers = [e(None, status=ParseStatus.NO_ANSWER, achieved=0.9), e(0.4, achieved=0.7),
                   e(0.6)]  # fmt: skip
        return answers[: len(queries)]

    def detect_failure(self, queries):
        return [FailureVerdict(None, status=ParseStatus.NO_ANSWER) for _ in queries]


def test_an_unreadable_estimate_gives_no_probability_that_the_task_is_achieved():
    # frames 0, 4 and 8 of 12, read in one call: progress nan, 0.4, 0.6; P(achieved) nan (the
    # answer was not read, whatever it carried; the reward holds none there either), 0.7, nan
    queries = progress_queries(_episode(0), frames_per_query=2, stride=4)
    progress, achieved = predict_estimates(SaysAchievedUnread(), queries)
    np.testing.assert_array_equal(progress, [np.nan, 0.4, 0.6])
    np.testing.assert_array_equal(achieved, [np.nan, 0.7, np.nan])
