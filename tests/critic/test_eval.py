"""Evaluation metrics with hand-worked numbers, and progress on critics that pass and fail
(failure detection is in test_detection.py, the probes in test_probes.py)."""

from __future__ import annotations

import numpy as np
import pytest

from critic.base import (
    Critic,
    FailureVerdict,
    ParseStatus,
    ProgressEstimate,
    ProgressQuery,
    active_length,
)
from critic.data.episodes import Episode
from critic.eval import (
    EpisodeProgress,
    accuracy_threshold,
    auroc,
    binary_metrics,
    calibration,
    evaluate_progress,
    progress_summary,
    spearman,
    value_order_correlation,
)
from critic.oracle import OracleCritic
from critic.probes import run_probes
from critic.queries import progress_queries


def _episode(i: int, failure: str | None = None, t: int = 12) -> Episode:
    """Frame k is filled with the value 20 k (so a test can read which frame a critic saw);
    experts reach progress 1 at frame 8 and stay, failures peak at 0.6 and fall back."""
    frames = (np.arange(t)[:, None, None, None] * 20 * np.ones((1, 8, 8, 3))).astype(np.uint8)
    if failure is None:
        progress = np.minimum(np.arange(t) / 8, 1.0)
    else:
        progress = np.r_[np.linspace(0, 0.6, t // 2), np.linspace(0.6, 0.2, t - t // 2)]
    return Episode(
        f"ep{i}", "Reacher-v5", "Touch the target.", {"cam": frames},
        progress.astype(np.float32), np.arange(t) * 2, failure is None, failure,
        None if failure is None else 6, 10.0, i,
    )  # fmt: skip


def test_value_order_correlation_and_auroc_hand_worked():
    # ranks 1 3 2 4 against 1 2 3 4: 1 - 6 (0 + 1 + 1 + 0) / (4 (16 - 1)) = 0.8
    assert value_order_correlation([0.1, 0.3, 0.2, 0.9]) == pytest.approx(0.8)
    assert value_order_correlation([0.9, 0.5, 0.1]) == pytest.approx(-1.0)
    assert value_order_correlation([0.5, 0.5, 0.5]) == 0.0  # a constant: no order, counted
    # an unreadable frame is left out, the rest keep their times: 0.9, 0.7, 0.2 at 0, 2, 3
    assert value_order_correlation([0.9, np.nan, 0.7, 0.2]) == pytest.approx(-1.0)
    assert np.isnan(value_order_correlation([0.4, np.nan]))  # one readable frame: no order read
    # positives 0.9 and 0.3, negatives 0.8 and 0.1: of the 4 pairs, 0.3 < 0.8 is the one
    # misordered → 3/4
    assert auroc([0.9, 0.8, 0.3, 0.1], [True, False, True, False]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5], [True, False]) == pytest.approx(0.5)  # a tie counts half
    assert np.isnan(auroc([0.2, 0.4], [True, True]))


def test_accuracy_threshold_hand_worked():
    # candidates 0.0, 0.2, 0.45, 0.7, 0.9 → accuracies 0.5, 0.75, 0.5, 0.75, 0.5; 0.2 and 0.7 tie
    # and 0.7 is nearer 0.5
    tau = accuracy_threshold([0.1, 0.3, 0.6, 0.8], [False, True, False, True])
    assert tau == pytest.approx(0.7)
    # separable: every failure scores above every success → a cut between them, accuracy 1
    tau = accuracy_threshold([0.05, 0.1, 0.12, 0.3], [False, False, True, True])
    assert tau == pytest.approx(0.11)
    # one class only: the one candidate above both scores (0.4 + 0.1) calls none a failure
    assert accuracy_threshold([0.2, 0.4], [False, False]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least one score"):
        accuracy_threshold([], [])


def test_binary_metrics_and_active_length_hand_worked():
    # predicted T T F F, actual T F T F: tp 1, fp 1, fn 1, tn 1
    m = binary_metrics([True, True, False, False], [True, False, True, False])
    assert m == pytest.approx({"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5})
    # nothing predicted positive among one failure: tp 0, fp 0, fn 1 → precision 0/0 undefined,
    # recall 0/1 = 0, F1 2·0 / (0 + 0 + 1) = 0: a total miss
    m = binary_metrics([False, False], [True, False])
    assert np.isnan(m["precision"]) and m["recall"] == 0.0 and m["f1"] == 0.0
    # no failure to find and none called: tp = fp = fn = 0 → precision, recall and F1 all 0/0,
    # undefined (nan), not a total miss (0); accuracy 2/2
    m = binary_metrics([False, False], [False, False])
    assert m["accuracy"] == 1.0 and all(np.isnan(m[k]) for k in ("precision", "recall", "f1"))
    # a false alarm on a set of successes: tp 0, fp 1 → precision 0/1 = 0, recall 0/0 undefined,
    # F1 2·0 / (0 + 1 + 0) = 0
    m = binary_metrics([True, False], [False, False])
    assert m["precision"] == 0.0 and np.isnan(m["recall"]) and m["f1"] == 0.0
    assert active_length(np.array([0.0, 0.5, 1.0, 1.0])) == 3  # up to the first achieved frame
    assert active_length(np.array([0.0, 0.5, 0.9])) == 3  # never achieved: all
    cal = calibration([0.05, 0.15, 0.12, 0.95], [0.0, 0.2, 0.1, 1.0], bins=10)
    assert cal["count"][:2] == [1, 2] and cal["count"][9] == 1
    assert cal["true"][1] == pytest.approx(0.15)  # bin [0.1, 0.2): truths 0.2 and 0.1


@pytest.mark.parametrize(
    ("call", "says"),
    [
        # a prediction of length 1 was broadcast against three truths: accuracy 0.33, no word
        (lambda: binary_metrics([True], [True, False, False]),
         "binary_metrics: 1 predicted, 3 actual, 1 answered; give one per item, in the same order"),
        (lambda: binary_metrics([True, False], [True, False], [True]),
         "binary_metrics: 2 predicted, 2 actual, 1 answered"),
        (lambda: accuracy_threshold([0.1, 0.3, 0.5], [True]), "accuracy_threshold: 3 scores, 1 labels"),
        (lambda: auroc([0.1, 0.2, 0.3], [True, False]), "auroc: 3 scores, 2 labels"),
        (lambda: spearman([1, 2, 3], [1, 2]), "spearman: 3 x, 2 y"),
        (lambda: calibration([0.1, 0.5], [0.1, 0.5, 0.9]), "calibration: 2 predicted, 3 actual"),
    ],
)  # fmt: skip
def test_metrics_of_arrays_that_do_not_pair_up_are_refused(call, says):
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value).startswith(says)


@pytest.mark.parametrize(("option", "value"), [("stride", -1), ("stride", 0), ("batch", 0),
                                              ("batch", 2.0), ("stride", True)])  # fmt: skip
def test_a_stride_or_batch_that_is_not_a_count_is_refused(option, value):
    # stride=-1 read the truth reversed against no predictions; 0 was range()'s ValueError
    episode = Episode("e", "Reacher-v5", "reach", {"view": np.zeros((10, 8, 8, 3), np.uint8)},
                      np.linspace(0, 1, 10, dtype=np.float32), np.arange(10), True)  # fmt: skip
    with pytest.raises(ValueError) as err:
        evaluate_progress(OracleCritic(), [episode], **{option: value})
    assert str(err.value) == f"{option}={value!r} must be an integer >= 1"
    if option == "batch":
        with pytest.raises(ValueError, match=r"^batch="):
            run_probes(OracleCritic(), [], batch=value)  # before any episode


def test_progress_summary_hand_worked():
    # expert: predictions off by 0.1 on each of 4 frames → MAE 0.1; active part rises → VOC 1
    expert = EpisodeProgress("a", "T", True, np.array([0.1, 0.4, 0.6, 0.9]),
                             np.array([0.0, 0.3, 0.7, 1.0]), 4)  # fmt: skip
    summary = progress_summary([expert])
    assert summary["expert"]["mae"] == pytest.approx(0.1)
    assert summary["expert"]["voc"] == pytest.approx(1.0)
    # best constant: the median of 0, 0.3, 0.7, 1.0 is 0.5; its MAE (0.5+0.2+0.2+0.5)/4 = 0.35
    assert summary["expert"]["constant"] == pytest.approx(0.5)
    assert summary["expert"]["constant_mae"] == pytest.approx(0.35)
    assert "failure" not in summary
    # a learner's rollout (no failure, or "unknown") is its own group, whatever its outcome
    rollout = EpisodeProgress("Reacher-v5-000001-policy_0123abcd", "T", False,
                              np.array([0.5, 0.5]), np.array([0.2, 0.6]), 2, policy=True)  # fmt: skip
    summary = progress_summary([expert, rollout])
    assert summary["expert"]["episodes"] == 1 and "failure" not in summary
    assert summary["policy"]["episodes"] == 1
    assert summary["policy"]["mae"] == pytest.approx(0.2)  # (0.3 + 0.1) / 2
    # per-episode mean error: the expert's errors +0.1, +0.1, -0.1, -0.1 average 0.0, the
    # rollout's +0.3, -0.1 average 0.1; one episode per group: no spread to read (n/a)
    assert np.isnan(summary["expert"]["offset_sd"]) and np.isnan(summary["policy"]["offset_sd"])
    other = EpisodeProgress("b", "T", True, np.array([0.5, 0.5]), np.array([0.2, 0.4]), 2)
    # expert offsets 0.0 and +0.2 (0.3, 0.1): population SD 0.1
    assert progress_summary([expert, other])["expert"]["offset_sd"] == pytest.approx(0.1)
    # within an episode: the expert's errors ±0.1 about its mean 0.0, the rollout's +0.3 and
    # -0.1 about 0.1 (±0.2); the other's +0.3, +0.1 about 0.2 (±0.1)
    assert summary["expert"]["within_sd"] == pytest.approx(0.1)
    assert summary["policy"]["within_sd"] == pytest.approx(0.2)
    # pooled over episodes: six deviations of 0.1 -> 0.1; a frame not read is left out
    assert progress_summary([expert, other])["expert"]["within_sd"] == pytest.approx(0.1)
    unread = EpisodeProgress("c", "T", True, np.array([np.nan, 0.7, 0.3]),
                             np.array([0.0, 0.4, 0.4]), 3)  # fmt: skip
    # readable errors +0.3 and -0.1 about 0.1: ±0.2, with the expert's four ±0.1: sqrt(0.12 / 6)
    assert progress_summary([expert, unread])["expert"]["within_sd"] == pytest.approx(
        (0.12 / 6) ** 0.5
    )
    # the best constant is fit and scored on the frames the critic read: truths 0.4 and 0.4
    # of the unread episode alone → median 0.4, MAE 0; a flat critic's VOC counts as 0, and one
    # unread frame does not drop an episode from the mean: (1.0 + 0 - 1.0) / 3 = 0
    alone = progress_summary([unread])["expert"]
    assert alone["constant"] == pytest.approx(0.4) and alone["constant_mae"] == pytest.approx(0)
    flat = EpisodeProgress("d", "T", True, np.full(3, 0.5), np.array([0.0, 0.5, 1.0]), 3)
    falling = EpisodeProgress("e", "T", True, np.array([0.9, np.nan, 0.1]),
                              np.array([0.0, 0.5, 1.0]), 3)  # fmt: skip
    assert progress_summary([expert, flat, falling])["expert"]["voc"] == pytest.approx(0.0)
    # achieved at its first frame: an active part of 1 frame has no order, and no VOC; the mean
    # is of the other two, and says so
    at_once = EpisodeProgress("f", "T", True, np.array([0.9, 1.0]), np.array([1.0, 1.0]), 1)
    summary = progress_summary([expert, falling, at_once])["expert"]
    assert summary["voc"] == pytest.approx(0.0) and summary["episodes"] == 3
    assert summary["voc_episodes"] == 2


def test_reading_by_state_hand_worked():
    from critic.eval import reading_by_state

    # six frames at 0.5, 1.5, 1.5, 3, 12 and 20 cm; bins (-inf, 1), [1, 2), [2, 10), [10, inf)
    values = [0.5, 1.5, 1.5, 3.0, 12.0, 20.0]
    read = [0.9, 0.8, np.nan, 0.6, 0.3, 0.1]  # one unreadable answer, left out of its mean
    true = [1.0, 1.0, 1.0, 0.7, 0.2, 0.0]
    achieved = [0.9, 0.6, np.nan, 0.2, 0.1, 0.0]
    rows = reading_by_state(values, read, true, achieved, [1, 2, 10])
    assert [(r["low"], r["high"], r["frames"]) for r in rows] == [
        (None, 1.0, 1), (1.0, 2.0, 2), (2.0, 10.0, 1), (10.0, None, 2)]  # fmt: skip
    assert rows[1]["share"] == pytest.approx(2 / 6)
    assert rows[1]["progress"] == pytest.approx(0.8) and rows[1]["true_progress"] == 1.0
    # the truth is averaged over the frames read, as the reading is: a critic exact wherever it
    # answered read 0.40 against a truth of 0.525 that counted the frame it left unanswered
    exact = reading_by_state([1.0] * 4, [0.2, np.nan, 0.4, 0.6], [0.2, 0.9, 0.4, 0.6], None, [2])
    assert exact[0]["progress"] == pytest.approx(0.4) == exact[0]["true_progress"]
    assert rows[1]["achieved"] == pytest.approx(0.6) and rows[1]["achieved_over_half"] == 1.0
    assert rows[3]["progress"] == pytest.approx(0.2) and rows[3]["achieved_over_half"] == 0.0
    # a critic that gives no P(achieved): nan, not an error
    none = reading_by_state(values, read, true, None, [1, 2, 10])
    assert all(np.isnan(r["achieved"]) and np.isnan(r["achieved_over_half"]) for r in none)
    # an empty bin is left out
    assert len(reading_by_state(values, read, true, None, [1, 2, 4, 10])) == 4
    # a frame whose state is missing is in no bin and out of the shares, which sum to 1
    gaps = reading_by_state([*values, np.nan], [*read, 0.5], [*true, 0.5], None, [1, 2, 10])
    assert sum(r["share"] for r in gaps) == pytest.approx(1.0)
    assert [r["frames"] for r in gaps] == [1, 2, 1, 2]
    with pytest.raises(ValueError, match=r"bin edges \[2.0, 1.0\] must increase"):
        reading_by_state(values, read, true, None, [2, 1])
    with pytest.raises(ValueError, match="6 values, 5 readings"):
        reading_by_state(values, read[:5], true, None, [1])


def test_an_episode_s_queries_are_built_a_batch_at_a_time():
    # a list of them held every clip at once: 394 MB for 1000 frames of 128² with 8-frame clips
    import dataclasses
    import tracemalloc

    video = np.zeros((200, 64, 64, 3), np.uint8)
    episode = dataclasses.replace(_episode(0, t=200), frames={"cam": video})
    clip_bytes = 8 * video[0].nbytes
    tracemalloc.start()
    results = evaluate_progress(OracleCritic(), [episode], frames_per_query=8, batch=4)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(results[0].predicted) == 200
    assert peak < 20 * clip_bytes, peak  # every query's clip at once: 200 clips (19.7 MB)


def test_episode_queries_say_a_bad_option_when_they_are_asked_for():
    # built lazily, a short progress array ended a loop over them early without a word (an
    # IndexError ends a Sequence's iteration), and frames_per_query=0 failed only when read
    episode = _episode(0)
    with pytest.raises(ValueError, match=r"^5 progress values for 12 frames of episode 'ep0'"):
        progress_queries(episode, progress=np.linspace(0, 0.5, 5))
    with pytest.raises(ValueError, match=r"^11 progress values for 12 frames"):  # one short
        progress_queries(episode, progress=episode.progress[:-1])
    with pytest.raises(ValueError, match=r"^frames_per_query=0 must be an integer >= 1"):
        progress_queries(episode, frames_per_query=0)
    queries = progress_queries(episode, stride=5)
    assert [q.privileged_progress for q in queries] == [0.0, 0.625, 1.0]
    assert [q.privileged_progress for q in queries[::-1]] == [1.0, 0.625, 0.0]
    assert queries[-1].privileged_progress == 1.0
    with pytest.raises(IndexError):
        queries[3]


def test_queries_match_the_reward_wrapper_and_the_oracle_scores_perfectly():
    from envs.critic_reward import sample_frames

    episode = _episode(0)
    queries = progress_queries(episode, frames_per_query=4)
    video = episode.frames["cam"]
    for t, q in enumerate(queries):
        expected = sample_frames(list(video[: t + 1]), 4, "uniform")
        np.testing.assert_array_equal(q.frames, expected)
        assert (q.initial_frame == video[0]).all() and (q.current_frame == video[t]).all()
    results = evaluate_progress(OracleCritic(), [episode, _episode(1, "stall")])
    summary = progress_summary(results)
    assert summary["expert"]["mae"] == 0.0 and summary["expert"]["voc"] == pytest.approx(1.0)
    assert summary["failure"]["mae"] == 0.0


class ClockCritic(Critic):
    """Rewards elapsed time, not the task: the i-th query of a call gets progress min(1, i / 8).
    A reward hacker (the probes send one episode's queries, in time order, per call)."""

    def estimate_progress(self, queries):
        return [ProgressEstimate(min(1.0, i / 8)) for i in range(len(queries))]

    def detect_failure(self, queries):
        return [FailureVerdict(True, confidence=0.9) for _ in queries]


class LapsingClockCritic(ClockCritic):
    """The clock, with the third answer of every call unreadable."""

    def estimate_progress(self, queries):
        estimates = super().estimate_progress(queries)
        if len(estimates) > 2:
            estimates[2] = ProgressEstimate(None, status=ParseStatus.NO_ANSWER)
        return estimates


def test_calibration_leaves_unreadable_predictions_out():
    # nan * bins cast to int is INT_MIN, clipped into the first bin: its count went up by the
    # unread frames, its true mean took their progress and its predicted mean read nan
    from critic.eval import calibration

    bins = calibration([np.nan, 0.05, 0.95], [0.9, 0.1, 1.0])
    assert bins["count"][0] == 1 and bins["true"][0] == pytest.approx(0.1)
    assert bins["predicted"][0] == pytest.approx(0.05) and sum(bins["count"]) == 2


def test_an_unreadable_first_reading_is_passed_on_as_0_as_the_reward_holds_it():
    # the reward holds 0 for an unreadable first estimate (EpisodeTracker.begin); the evaluator
    # must give a stepwise critic the same, not None again
    from critic.queries import read_in_order

    seen = []

    def estimate(asked, _):
        seen.extend(q.previous_progress for q in asked)
        return [ProgressEstimate(None) if len(seen) == 1 else ProgressEstimate(0.5) for _ in asked]

    query = ProgressQuery("reach")
    read_in_order([[query, query, query]], estimate, batch=4)
    assert seen == [None, 0.0, 0.5]


def test_a_critic_that_reads_its_last_estimate_is_given_it_in_order():
    # a stepwise critic was read with previous_progress=None at every frame, unlike online
    from dataclasses import dataclass

    from critic.eval import evaluate_progress
    from critic.oracle import OracleCritic

    @dataclass
    class Stepwise(OracleCritic):
        @property
        def reads_previous_progress(self) -> bool:
            return True

        def __post_init__(self):
            self.seen: list[list[float | None]] = []

        def estimate_progress(self, queries):
            self.seen.append([q.previous_progress for q in queries])
            read = super().estimate_progress(queries)
            # the first episode's second frame is unreadable: the reading before it is held
            return [ProgressEstimate(None) if len(self.seen) == 3 and i == 0 else e
                    for i, e in enumerate(read)]  # fmt: skip

    critic = Stepwise()
    results = evaluate_progress(critic, [_episode(0, t=4), _episode(1, t=3)], batch=1)
    # one call per episode per frame, the t-th frames of both episodes in turn (batch=1):
    # previous_progress is the critic's last reading in that episode, none at the first
    assert critic.seen == [[None], [None], [0.0], [0.0], [0.0], [0.125], [0.25]]
    np.testing.assert_allclose(results[0].predicted, [0.0, np.nan, 0.25, 0.375])
    np.testing.assert_allclose(results[1].predicted, [0.0, 0.125, 0.25])
