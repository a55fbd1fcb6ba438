"""Critic evaluation: the metric functions and progress accuracy (failure detection is in
:mod:`critic.detection`, the reward-hacking probes in :mod:`critic.probes`).

Pure metric functions first (hand-worked tests in ``tests/critic/test_eval.py``), then a critic's
progress on episodes. Its queries are built and read by :mod:`critic.queries` as the reward
wrapper builds and reads them, so what is measured here is what RL sees online.

- **Progress**: MAE against the privileged progress, and VOC (value-order correlation: Spearman
  between the predictions and time) over the *active* part of an episode, up to the first frame at
  which the task is achieved (after it the true progress is flat and any order is noise).
- **Failure detection** (RoboFail-style): accuracy, precision / recall / F1 with *failure* as the
  positive class, AUROC of the critic's failure probability, confusion by failure type, and the
  detection delay: the time from the failure to the first prefix of the episode judged a failure.
- **Reading by state**: the critic's progress and P(achieved) by bins of a privileged quantity
  (the fingertip's distance to the target, the gripper's to a cube): the reward's landscape, where a
  reading that is flat over a range the learner visits shows.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from critic.base import Critic, active_length
from critic.data.episodes import Episode, is_policy_rollout
from critic.queries import (
    check_count,
    predict_estimates,
    predict_in_order,
    progress_queries,
    reads_in_order,
)


# -- metrics ---------------------------------------------------------------------------------
def _same_length(metric: str, **arrays: np.ndarray) -> None:
    """A ValueError naming each array's length unless they agree: numpy broadcasts one of
    length 1 against the rest, which read one prediction as every one's."""
    if len({len(a) for a in arrays.values()}) > 1:
        counts = ", ".join(f"{len(a)} {name}" for name, a in arrays.items())
        raise ValueError(f"{metric}: {counts}; give one per item, in the same order")


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); ``nan`` when either side is constant
    or there are fewer than 2 points."""
    from scipy.stats import rankdata

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    _same_length("spearman", x=x, y=y)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    rx, ry = rankdata(x), rankdata(y)
    return float(np.corrcoef(rx, ry)[0, 1])


def value_order_correlation(predictions: Sequence[float]) -> float:
    """VOC: Spearman between predictions in time order and time itself (1: rises monotonically).

    Unreadable frames (``nan``) are left out and the rest keep their times, so one unparsed
    answer does not drop an episode. Predictions that are constant over two or more readable
    frames show no order: 0, not ``nan`` (a flat critic must not be left out of a mean over
    episodes, nor pass a probe as if unread). ``nan`` with fewer than two readable frames.

    Example:
        >>> round(value_order_correlation([0.1, 0.3, 0.2, 0.9]), 6)  # ranks 1 3 2 4 vs 1 2 3 4
        0.8
        >>> round(value_order_correlation([0.9, float("nan"), 0.1]), 6)  # the nan left out
        -1.0
        >>> value_order_correlation([0.5, 0.5])  # flat: no order
        0.0
    """
    values = np.asarray(predictions, dtype=float)
    readable = np.isfinite(values)
    if readable.sum() < 2:
        return float("nan")
    if np.ptp(values[readable]) == 0:
        return 0.0
    return spearman(values[readable], np.flatnonzero(readable))


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve of ``scores`` for the positive ``labels`` (ties count half);
    ``nan`` when one class is missing. Equals the Mann–Whitney U statistic / (n+ · n-)."""
    from scipy.stats import rankdata

    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    _same_length("auroc", scores=scores, labels=labels)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def accuracy_threshold(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """The threshold ``τ`` that makes ``score >= τ`` the most accurate predictor of ``labels``,
    chosen among midpoints between neighbouring distinct scores (and one above/below all of them);
    on ties the one nearest 0.5 wins. Fit it on validation episodes, apply it to test ones.

    Example: scores [0.1, 0.3, 0.6, 0.8], labels [F, T, F, T]: candidates 0.0, 0.2, 0.45, 0.7, 0.9
    give accuracies 0.5, 0.75, 0.5, 0.75, 0.5; 0.2 and 0.7 tie, and 0.7 is nearer 0.5 → τ = 0.7.
    """
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    _same_length("accuracy_threshold", scores=scores, labels=labels)
    if len(scores) == 0:
        raise ValueError("accuracy_threshold needs at least one score")
    if not np.isfinite(scores).all():  # a nan sorted last among the candidates and was ignored
        raise ValueError(
            f"accuracy_threshold needs finite scores; got {scores[~np.isfinite(scores)][:3].tolist()}"
            " (leave out the items a detector could not score)"
        )
    distinct = np.unique(scores)
    candidates = np.r_[distinct[0] - 0.1, (distinct[:-1] + distinct[1:]) / 2, distinct[-1] + 0.1]
    accuracy = np.array([((scores >= t) == labels).mean() for t in candidates])
    best = candidates[accuracy == accuracy.max()]
    return float(best[np.argmin(np.abs(best - 0.5))])


def binary_metrics(
    predicted: Sequence[bool], actual: Sequence[bool], answered: Sequence[bool] | None = None
) -> dict[str, float]:
    """Accuracy, precision, recall and F1 of ``predicted`` positives; ``nan`` where undefined.
    ``answered`` (all by default) marks the predictions that were given: one that was not (an
    unreadable verdict, counted as no positive) is wrong in the accuracy whatever the truth, so
    a critic that answers nothing does not score the share of negatives.

    Precision is undefined when nothing is predicted positive, recall when nothing is positive,
    F1 (``2 tp / (2 tp + fp + fn)``) when neither: a perfect critic on a set with no failures
    reads n/a, not a total miss (0), and one that calls no failure among failures still scores
    F1 0.

    Example:
        >>> binary_metrics([False, False], [False, False])["recall"]  # no positive to recall
        nan
    """
    p, a = np.asarray(predicted, dtype=bool), np.asarray(actual, dtype=bool)
    given = np.ones_like(p) if answered is None else np.asarray(answered, dtype=bool)
    _same_length("binary_metrics", predicted=p, actual=a, answered=given)
    tp, fp, fn = int((p & a).sum()), int((p & ~a).sum()), int((~p & a).sum())
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return {
        "accuracy": float(((p == a) & given).mean()) if len(p) else float("nan"),
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def calibration(
    predicted: Sequence[float], actual: Sequence[float], bins: int = 10
) -> dict[str, list[float]]:
    """Mean true progress per bin of predicted progress (bins of equal width over [0, 1]);
    unreadable predictions (``nan``) are left out, where they fell into the first bin."""
    predicted, actual = np.asarray(predicted, dtype=float), np.asarray(actual, dtype=float)
    _same_length("calibration", predicted=predicted, actual=actual)
    read = np.isfinite(predicted)
    predicted, actual = predicted[read], actual[read]
    index = np.clip((predicted * bins).astype(int), 0, bins - 1)
    centers, mean_pred, mean_true, counts = [], [], [], []
    for b in range(bins):
        mask = index == b
        centers.append((b + 0.5) / bins)
        counts.append(int(mask.sum()))
        mean_pred.append(float(predicted[mask].mean()) if mask.any() else float("nan"))
        mean_true.append(float(actual[mask].mean()) if mask.any() else float("nan"))
    return {"center": centers, "predicted": mean_pred, "true": mean_true, "count": counts}


def nanmean(values: Sequence[float]) -> float:
    """The mean of the finite values (``None`` and ``nan`` left out); ``nan`` when there are none."""
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def nanstd(values: Sequence[float]) -> float:
    """The (population) standard deviation of the finite values; ``nan`` when there are none."""
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.std(values)) if values else float("nan")


def reading_by_state(
    values: Sequence[float],
    predicted: Sequence[float],
    true: Sequence[float],
    achieved: Sequence[float] | None,
    edges: Sequence[float],
) -> list[dict[str, Any]]:
    """The critic's reading against a privileged quantity, per bin of ``values``: ``(-inf, e1)``,
    ``[e1, e2)``, ..., ``[en, inf)`` for ``edges = [e1, ..., en]`` (increasing). Each row: the
    bin (``low``/``high``, ``None`` where open), its frames and their share, the mean progress
    read (unreadable frames left out) and true, and the mean P(achieved) with the share of frames
    above 0.5 (``nan`` when the critic gives none). Empty bins are left out.

    Raises:
        ValueError: edges that do not increase, or arrays of different lengths.
    """
    edges = [float(e) for e in edges]
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise ValueError(f"bin edges {edges} must increase")
    v, p, t = (np.asarray(x, dtype=float) for x in (values, predicted, true))
    a = np.full(len(v), np.nan) if achieved is None else np.asarray(achieved, dtype=float)
    if not len(v) == len(p) == len(t) == len(a):
        raise ValueError(
            f"{len(v)} values, {len(p)} readings, {len(t)} truths, {len(a)} P(achieved)"
        )
    rows = []
    bounds = [None, *edges, None]
    known = np.isfinite(v)  # a frame whose state value is missing falls in no bin, nor the shares
    for low, high in itertools.pairwise(bounds):
        inside = known.copy()
        if low is not None:
            inside &= v >= low
        if high is not None:
            inside &= v < high
        if not inside.any():
            continue
        read, given = p[inside], a[inside]
        answered = t[inside][np.isfinite(read)]  # the truth of the frames read, as progress is
        rows.append({
            "low": low, "high": high, "frames": int(inside.sum()),
            "share": float(inside.sum() / known.sum()),
            "progress": nanmean(read),
            "true_progress": float(answered.mean()) if len(answered) else float("nan"),
            "achieved": nanmean(given),
            "achieved_over_half": float((given[np.isfinite(given)] > 0.5).mean())
            if np.isfinite(given).any() else float("nan"),
        })  # fmt: skip
    return rows


# -- a critic's progress on episodes ---------------------------------------------------------
@dataclass
class EpisodeProgress:
    """A critic's per-frame progress on one episode next to the truth."""

    episode_id: str
    env_id: str
    expert: bool
    predicted: np.ndarray
    true: np.ndarray
    active: int
    achieved: np.ndarray | None = None  # P(achieved) per frame (nan: none given)
    policy: bool = False  # a saved policy's rollout: neither an expert's nor an injected failure

    @property
    def voc(self) -> float:
        return value_order_correlation(self.predicted[: self.active])


def evaluate_progress(
    critic: Critic,
    episodes: Sequence[Episode],
    frames_per_query: int = 8,
    batch: int = 32,
    stride: int = 1,
) -> list[EpisodeProgress]:
    """Progress of ``critic`` on every ``stride``-th frame of every episode."""
    check_count("stride", stride)
    check_count("batch", batch)
    results = []
    in_order = None
    if reads_in_order(critic):  # every episode's t-th queries together, each with its last reading
        in_order = iter(predict_in_order(critic, [
            progress_queries(e, frames_per_query=frames_per_query, stride=stride) for e in episodes
        ], batch))  # fmt: skip
    for episode in episodes:
        queries = progress_queries(episode, frames_per_query=frames_per_query, stride=stride)
        truth = np.asarray(episode.progress, dtype=float)[::stride]
        if in_order is None:
            predicted, achieved = predict_estimates(critic, queries, batch)
        else:
            predicted, achieved = next(in_order)
        results.append(
            EpisodeProgress(
                episode.episode_id,
                episode.env_id,
                episode.expert,
                predicted,
                truth,
                active_length(truth),
                achieved,
                is_policy_rollout(episode.episode_id),
            )
        )
    return results


def _within_sd(results: Sequence[EpisodeProgress]) -> float:
    """The RMS of each readable frame's error about its episode's mean error (``nan`` without a
    readable frame)."""
    spread = []
    for r in results:
        error = (r.predicted - r.true)[np.isfinite(r.predicted)]
        spread.append(error - error.mean() if len(error) else error)
    pooled = np.concatenate(spread) if spread else np.array([])
    return float(np.sqrt(np.mean(pooled**2))) if len(pooled) else float("nan")


def progress_summary(results: Sequence[EpisodeProgress]) -> dict[str, Any]:
    """MAE (every readable frame), VOC (active part, mean over the ``voc_episodes`` that have
    one) and the best constant's
    MAE (the median of the true progress, on the same frames), for experts, for failures and for saved policies' rollouts
    (``policy``: a learner's episode is neither an expert's nor a planned failure, whether it
    succeeded or not), plus the readable share.

    ``offset_sd`` is the standard deviation over episodes of each episode's mean error (read −
    true, readable frames): an error every reading of an episode shares. As a reward it changes
    which episodes look good, which a per-frame MAE does not show (docs/zero_shot_rl.md, "Goals
    anywhere"). ``within_sd`` is the rest: the root mean square, over readable frames, of each
    error about its episode's mean error, the scatter from one reading of an episode to the next.
    As a reward it costs most where progress pays least per centimetre, far from the goal
    (docs/rl_learner.md, "Where the learners end, in the report")."""
    summary: dict[str, Any] = {}
    for group, mine in (
        ("expert", [r for r in results if r.expert and not r.policy]),
        ("failure", [r for r in results if not r.expert and not r.policy]),
        ("policy", [r for r in results if r.policy]),
    ):
        if not mine:
            continue
        pred = np.concatenate([r.predicted for r in mine])
        true = np.concatenate([r.true for r in mine])
        readable = np.isfinite(pred)
        # the best constant is fit and scored on the frames the critic's MAE is scored on
        constant = float(np.median(true[readable])) if readable.any() else float("nan")
        offsets = [nanmean(r.predicted - r.true) for r in mine]
        summary[group] = {
            "episodes": len(mine),
            "frames": len(pred),
            "mae": float(np.abs(pred[readable] - true[readable]).mean())
            if readable.any()
            else float("nan"),
            "voc": nanmean([r.voc for r in mine]),
            # an episode with under 2 readable frames in its active part (achieved at its
            # first frame) has no VOC and is not in the mean
            "voc_episodes": int(np.isfinite([r.voc for r in mine]).sum()),
            "readable": float(readable.mean()),
            "constant": constant,
            "constant_mae": float(np.abs(constant - true[readable]).mean())
            if readable.any()
            else float("nan"),
            # an SD over one episode is not a spread: n/a
            "offset_sd": nanstd(offsets) if np.isfinite(offsets).sum() > 1 else float("nan"),
            "within_sd": _within_sd(mine),
        }
    return summary
