"""Failure detection (RoboFail-style): a critic's verdict on each whole episode, its failure
probability from the verdict, from the last frame's progress or from P(achieved), thresholds fit
on one split and scored on another, confusion by failure type and the detection delay.

The metric functions it scores with (accuracy, precision / recall / F1 with *failure* as the
positive class, AUROC) are in :mod:`critic.eval`, with hand-worked tests in
``tests/critic/test_eval.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from critic.base import Critic, FailureQuery, FailureVerdict, checked_answers
from critic.data.episodes import Episode
from critic.data.samples import camera_frames, clip, failure_vocabulary
from critic.eval import auroc, binary_metrics, nanmean
from critic.parse import normalize_label
from critic.queries import (
    check_count,
    critic_name,
    predict_estimates,
    predict_in_order,
    progress_queries,
    progress_query,
    reads_in_order,
)


def evaluate_failures(
    critic: Critic,
    episodes: Sequence[Episode],
    frames: int = 16,
    delay_points: int = 4,
    camera: str | None = None,
    threshold: float | None = None,
    progress_threshold: float | None = None,
    frames_per_query: int = 8,
    achieved_threshold: float | None = None,
    batch: int = 32,
) -> dict[str, Any]:
    """Whole-episode verdicts (and, for true failures, verdicts on prefixes for the delay), and
    the same decision read from the reward's own query on each episode's last frame: its
    progress, and the probability that the task is achieved there.

    ``threshold`` (fit on other episodes with :func:`accuracy_threshold`) also scores the
    decision ``failure probability >= threshold`` (``threshold_accuracy``, ``threshold_f1``, ...);
    ``progress_threshold`` does the same for ``1 - final progress`` under ``progress``, and
    ``achieved_threshold`` for ``1 - P(achieved)`` under ``achieved`` (absent when the critic
    gives no such probability). ``batch``: the most queries sent to the critic in one call.

    Returns:
        ``accuracy`` (an unreadable verdict is wrong), ``precision``, ``recall``, ``f1``
        (failure positive; an unreadable verdict calls no failure), ``auroc`` of the failure
        probability (n/a, as every figure of a detector, when it read no episode), ``readable``, ``confusion`` (true label → predicted label → count,
        labels ``success`` or the failure type, ``unreadable``; a type outside
        the critic's ``failure_types`` (else :data:`critic.base.FAILURE_TYPES` and these episodes' types), such as a policy rollout's ``unknown``, is ``failure``),
        ``type_accuracy`` (right type among detected failures of a named type), ``detection_delay_s`` (mean over detected failures),
        ``detected_in_time`` (share of failures whose prefixes are judged failures by the last frame),
        the best constant's accuracy (the majority label), and ``progress``: the
        :func:`threshold_metrics` of the final-progress detector and, given
        ``progress_threshold``, ``judged_failure_by_type`` (the share of each kind of episode,
        ``success`` or its failure type as the confusion names it, that it calls a failure);
        ``achieved``: the same for the
        achieved detector.
    """
    verdicts = failure_verdicts(critic, episodes, frames, camera, batch)
    actual = [not e.success for e in episodes]
    predicted = [v.success is False for v in verdicts]
    answered = [v.success is not None for v in verdicts]
    scores = [failure_probability(v) for v in verdicts]
    progress, achieved = _last_frame_readings(critic, episodes, frames_per_query, camera, batch)
    last = _last_frame_failure(progress, achieved)
    by_progress, by_achieved = last["progress"], last["achieved"]
    confusion: dict[str, dict[str, int]] = {}
    typed = []
    # the critic's own vocabulary (a checkpoint trained on a task of one's own offers its types
    # too), else the built-in one and the types of these episodes (the oracle names any)
    vocabulary = getattr(critic, "failure_types", None) or failure_vocabulary(
        e.failure_type for e in episodes
    )
    named = {normalize_label(t) for t in vocabulary}
    # a type no prompt offers ("unknown": a policy rollout, an external label without one) is a
    # plain failure, the answer the critic is taught for it: in the confusion and in each
    # detector's judged_failure_by_type alike
    kinds = [
        "success"
        if e.success
        else (
            e.failure_type
            if e.failure_type is not None and normalize_label(e.failure_type) in named
            else "failure"
        )
        for e in episodes
    ]
    for episode, truth, verdict in zip(episodes, kinds, verdicts, strict=True):
        said = (
            "unreadable"
            if verdict.success is None
            else "success"
            if verdict.success
            else (verdict.failure_type or "failure")
        )
        confusion.setdefault(truth, {}).setdefault(said, 0)
        confusion[truth][said] += 1
        if not episode.success and verdict.success is False and truth != "failure":
            typed.append(normalize_label(said) == normalize_label(truth))
    delays, in_time = _detection_delays(critic, episodes, frames, delay_points, camera, batch)
    majority = max(np.mean(actual), 1 - np.mean(actual)) if actual else float("nan")
    return {
        "episodes": len(episodes),
        **binary_metrics(predicted, actual, answered),
        **_none_read(threshold_metrics(scores, actual, threshold), any(answered)),
        "progress": {
            **_none_read(
                threshold_metrics(by_progress, actual, progress_threshold),
                bool(np.isfinite(progress).any()),
            ),
            # the shares it calls failures, where it read something (none read: every score nan)
            **(
                _judged_by_type(kinds, by_progress, progress_threshold)
                if np.isfinite(progress).any()
                else {}
            ),
        },
        **(
            {
                "achieved": {
                    **threshold_metrics(by_achieved, actual, achieved_threshold),
                    **_judged_by_type(kinds, by_achieved, achieved_threshold),
                }
            }
            if np.isfinite(by_achieved).any()
            else {}
        ),
        "readable": float(np.mean([v.success is not None for v in verdicts])),
        "type_accuracy": nanmean([float(t) for t in typed]),
        "detection_delay_s": nanmean(delays),
        "detected_in_time": nanmean([float(t) for t in in_time]),
        "constant_accuracy": float(majority),
        "confusion": confusion,
    }


def _judged_by_type(
    kinds: Sequence[str], scores: Sequence[float], threshold: float | None
) -> dict[str, dict[str, float]]:
    """Share of each kind of episode (``success``, its failure type, or ``failure``) that
    ``score >= threshold`` calls a failure: recall per failure type, the false-alarm rate for
    successes."""
    if threshold is None:
        return {}
    judged: dict[str, list[bool]] = {}
    for kind, score in zip(kinds, scores, strict=True):
        judged.setdefault(kind, []).append(score >= threshold)
    return {"judged_failure_by_type": {k: float(np.mean(v)) for k, v in sorted(judged.items())}}


def failure_verdicts(
    critic: Critic,
    episodes: Sequence[Episode],
    frames: int = 16,
    camera: str | None = None,
    batch: int = 32,
) -> list:
    """The critic's verdict on each whole episode (``frames`` frames spread over it), asked
    ``batch`` episodes at a time.

    Raises:
        ValueError: ``frames`` < 2 (a clip spread from the first frame to the last, of one frame,
            is the first frame: it would not show how the episode ended), or ``batch`` < 1.
    """
    check_failure_frames(frames)
    queries = [
        FailureQuery(
            episode.instruction,
            clip(v := camera_frames(episode, camera), len(v) - 1, frames),
            privileged_success=episode.success,
            privileged_failure_type=episode.failure_type,
        )
        for episode in episodes
    ]
    return _detect(critic, queries, batch)


def check_failure_frames(frames: Any) -> None:
    """A failure query's clip must reach the episode's end: at least 2 frames (the first and the
    last; :func:`critic.base.clip_indices` of 1 frame is the first)."""
    if isinstance(frames, bool) or not isinstance(frames, int | np.integer) or frames < 2:
        raise ValueError(
            f"failure_frames={frames!r} must be an integer >= 2: a failure query's clip is spread "
            "from the episode's first frame to its last, and one frame would be the first alone, "
            "which does not show how the episode ended (16 by default)"
        )


def _detect(critic: Critic, queries: list[FailureQuery], batch: int) -> list:
    """``critic.detect_failure`` over ``queries``, ``batch`` at a time (one call generates every
    query it gets at once: a whole evaluation in one call would not fit a GPU's memory)."""
    check_count("batch", batch)
    verdicts = []
    for start in range(0, len(queries), batch):
        asked = queries[start : start + batch]
        answers = critic.detect_failure(asked)
        verdicts += checked_answers(answers, len(asked), FailureVerdict, critic_name(critic))
    return verdicts


FAILURE_DETECTORS = {
    # name: how the critic's probability that an episode failed is read
    "verdict": "the generated verdict and its confidence (a failure query over the whole episode)",
    "progress": "1 - the progress it gives the last frame (the reward's own query)",
    "achieved": "1 - the probability it gives the task achieved at the last frame (same query)",
}


def failure_scores(
    critic: Critic,
    episodes: Sequence[Episode],
    detector: str = "verdict",
    frames: int = 16,
    frames_per_query: int = 8,
    camera: str | None = None,
    batch: int = 32,
) -> list[float]:
    """Each episode's probability of failure by ``detector`` (:data:`FAILURE_DETECTORS`); 0.5
    where the answer is unreadable, ``nan`` everywhere where the detector read nothing: the
    critic gives no probability that the task is achieved (``achieved``), or no progress
    answer could be read (``progress``). ``frames``: the verdict query's frames; ``frames_per_query``: the
    progress query's; ``batch``: the most queries in one call to the critic.

    Raises:
        ValueError: an unknown ``detector``.
    """
    if detector == "verdict":
        verdicts = failure_verdicts(critic, episodes, frames, camera, batch)
        return [failure_probability(v) for v in verdicts]
    if detector in FAILURE_DETECTORS:
        return last_frame_scores(critic, episodes, frames_per_query, camera, batch)[detector]
    raise ValueError(f"detector={detector!r} is not one of {list(FAILURE_DETECTORS)}")


def last_frame_scores(
    critic: Critic,
    episodes: Sequence[Episode],
    frames_per_query: int = 8,
    camera: str | None = None,
    batch: int = 32,
) -> dict[str, list[float]]:
    """The failure probabilities of both last-frame detectors from one reading of each
    episode's last frame (the reward's query): ``progress`` (``1 - progress``) and ``achieved``
    (``1 - P(achieved)``); 0.5 where unreadable, and ``nan`` everywhere where a detector read
    nothing (no P(achieved) given, or no progress read), so no threshold is fit on it."""
    return _last_frame_failure(
        *_last_frame_readings(critic, episodes, frames_per_query, camera, batch)
    )


def _last_frame_readings(critic, episodes, frames_per_query, camera, batch):
    """The critic's progress and P(achieved) on each episode's last frame (``nan`` unread).
    A critic that reads its last estimate reads each whole episode in order first, as the
    reward would have given it that estimate (:func:`critic.queries.predict_in_order`)."""
    if reads_in_order(critic):
        read = predict_in_order(critic, [
            progress_queries(e, frames_per_query=frames_per_query, camera=camera) for e in episodes
        ], batch)  # fmt: skip
        return (np.array([p[-1] for p, _ in read], dtype=float),
                np.array([a[-1] for _, a in read], dtype=float))  # fmt: skip
    queries = []
    for episode in episodes:
        video = camera_frames(episode, camera)
        queries.append(
            progress_query(episode, video, episode.progress, len(video) - 1, frames_per_query)
        )
    return predict_estimates(critic, queries, batch)


def _last_frame_failure(progress: np.ndarray, achieved: np.ndarray) -> dict[str, list[float]]:
    """:func:`last_frame_scores` from the readings."""
    unread = np.isnan(progress)
    # a critic that gives no P(achieved) on any readable answer has no such detector: all nan
    # (not 0.5 at its unread answers, which would report one); one that gives it on some reads
    # 0.5 where it gave none (a nan score there had made the whole detector's AUROC nan)
    gives_achieved = np.isfinite(achieved[~unread]).any()
    # none read: every score the 0.5 of an unreadable answer, on which a τ was fit and printed
    read_any = bool((~unread).any())
    return {
        "progress": np.where(unread, 0.5 if read_any else np.nan, 1.0 - progress).tolist(),
        "achieved": np.where(np.isnan(achieved) & gives_achieved, 0.5, 1.0 - achieved).tolist(),
    }


def threshold_metrics(
    scores: Sequence[float], actual: Sequence[bool], threshold: float | None = None
) -> dict[str, float]:
    """AUROC of ``scores`` for the ``actual`` failures and, given a ``threshold`` fit elsewhere,
    accuracy / precision / recall / F1 of ``score >= threshold``."""
    out = {"auroc": auroc(scores, actual)}
    if threshold is not None:
        at = binary_metrics([s >= threshold for s in scores], actual)
        out.update({"threshold": float(threshold), **{f"threshold_{k}": v for k, v in at.items()}})
    return out


def _none_read(metrics: dict[str, float], read: bool) -> dict[str, float]:
    """A detector's ``metrics``, or every one ``nan`` (n/a) when it read no episode: each score
    was the 0.5 of an unreadable answer, and an AUROC of 0.5 would read as a real figure."""
    return (
        metrics
        if read
        else {k: v if k == "threshold" else float("nan") for k, v in metrics.items()}
    )


def failure_probability(verdict) -> float:
    """The critic's probability that the episode failed, from its verdict and confidence (0.5
    when the verdict is unreadable)."""
    if verdict.success is None:
        return 0.5
    return 1.0 - verdict.confidence if verdict.success else verdict.confidence


def _detection_delays(critic, episodes, frames, points, camera, batch=32):
    """For each true failure with a failure time: prefixes ending at ``points`` frames spread from
    the failure frame to the last one; the delay is the first judged a failure (seconds). The last
    prefix is always the whole episode: one point is the whole episode alone."""
    delays, in_time = [], []
    for episode in episodes:
        if episode.success or episode.failure_step is None or points < 1:
            continue
        video = camera_frames(episode, camera)
        last = len(video) - 1
        start = min(int(np.searchsorted(episode.steps, episode.failure_step)), last)
        # linspace(start, last, 1) is [start]: one point would never query the whole episode
        spread = np.linspace(start, last, points) if points > 1 else np.array([last])
        ends = sorted({int(e) for e in spread.round()})
        queries = [
            FailureQuery(
                episode.instruction,
                clip(video, end, frames),
                privileged_success=False,
                privileged_failure_type=episode.failure_type,
            )
            for end in ends
        ]
        verdicts = _detect(critic, queries, batch)
        hit = next((end for end, v in zip(ends, verdicts, strict=True) if v.success is False), None)
        in_time.append(hit is not None)
        if hit is not None:
            delays.append(
                max(0.0, (episode.steps[hit] - episode.failure_step) * episode.step_seconds)
            )
    return delays, in_time
