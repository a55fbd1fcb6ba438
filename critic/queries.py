"""Putting a critic through episodes: its progress queries, built as the reward wrapper builds
them (the episode's first frame, ``frames_per_query`` frames spread uniformly over the video so
far, and the current frame: PRIMO R1), and the critic's readings of them, in batches
(:func:`predict_estimates`) or, for a critic that reads its own last estimate, in order
(:func:`read_in_order`), as the reward reads it online.

Split from :mod:`critic.eval` (its metrics) along the line its docs drew; the evaluator
(:func:`critic.eval.evaluate_progress`), the failure detectors (:mod:`critic.detection`), the
probes (:mod:`critic.probes`) and the relabelling vec env (:mod:`envs.vec_env`) read a critic
through these.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from critic.base import Critic, ProgressEstimate, ProgressQuery, checked_answers
from critic.data.episodes import Episode
from critic.data.samples import camera_frames, clip
from rollout.checks import is_int


def check_count(option: str, value: Any) -> None:
    """A ValueError unless ``value`` (the option ``option``: a stride, a batch size) is an
    integer >= 1: a negative stride read the truth reversed against no predictions, and 0
    raised range()'s error."""
    if not is_int(value) or value < 1:
        raise ValueError(f"{option}={value!r} must be an integer >= 1")


def progress_queries(
    episode: Episode,
    frames: np.ndarray | None = None,
    progress: np.ndarray | None = None,
    frames_per_query: int = 8,
    camera: str | None = None,
    stride: int = 1,
) -> Sequence[ProgressQuery]:
    """One query every ``stride`` frames, as the reward wrapper builds them (``uniform`` frame
    sampling over the video so far), each built when it is read (:class:`EpisodeQueries`).

    ``frames`` and ``progress`` replace the episode's own (the probes pass transformed videos);
    the privileged progress goes along for oracle critics.
    """
    check_count("stride", stride)
    check_count("frames_per_query", frames_per_query)
    video = camera_frames(episode, camera) if frames is None else frames
    truth = episode.progress if progress is None else progress
    if len(truth) < len(video):  # read when each query is built: said here, where it is given
        raise ValueError(
            f"{len(truth)} progress values for {len(video)} frames of episode "
            f"{episode.episode_id!r}; give one per frame"
        )
    return EpisodeQueries(episode, video, truth, frames_per_query, range(0, len(video), stride))


class EpisodeQueries(Sequence[ProgressQuery]):
    """An episode's queries at frames ``times``, each built when it is read: a list of them held
    every query's clip at once (394 MB for an episode of 1000 frames of 128² with 8-frame clips),
    while the critic reads them a batch at a time (:func:`predict_estimates`).

    Each read builds a new query, so ``in``, ``index`` and ``==`` do not find one read before
    (a query holds arrays, which do not compare as one value): ``list(queries)`` for those."""

    def __init__(
        self,
        episode: Episode,
        video: np.ndarray,
        truth: np.ndarray,
        frames_per_query: int,
        times: range,
    ) -> None:
        self._episode, self._video, self._truth = episode, video, truth
        self._frames, self._times = frames_per_query, times

    def __len__(self) -> int:
        return len(self._times)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._query(t) for t in self._times[index]]
        return self._query(self._times[index])

    def __iter__(self):  # not Sequence's, which ends at any IndexError, a query's own too
        for t in self._times:
            yield self._query(t)

    def _query(self, t: int) -> ProgressQuery:
        return progress_query(self._episode, self._video, self._truth, t, self._frames)


def progress_query(
    episode: Episode, video: np.ndarray, truth: np.ndarray, t: int, frames_per_query: int
) -> ProgressQuery:
    """The query at frame ``t`` of ``video``: first frame, a clip of the video so far, frame ``t``,
    and the privileged progress ``truth[t]`` (for oracle critics)."""
    return ProgressQuery(
        instruction=episode.instruction,
        frames=clip(video, t, frames_per_query),
        initial_frame=video[0],
        current_frame=video[t],
        privileged_progress=float(truth[t]),
    )


def predict_progress(
    critic: Critic, queries: Sequence[ProgressQuery], batch: int = 32
) -> np.ndarray:
    """The critic's progress for every query, in batches; an unreadable answer is ``nan``."""
    return predict_estimates(critic, queries, batch)[0]


def critic_name(critic: Critic) -> str:
    """A critic as an error names it."""
    return f"critic {getattr(critic, 'name', type(critic).__name__)!r}"


def predict_estimates(
    critic: Critic, queries: Sequence[ProgressQuery], batch: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """The critic's progress and P(achieved) for every query, in batches of ``batch`` (each
    slice of ``queries`` is read as its call is made); ``nan`` where an answer is unreadable or
    the critic gives no probability."""
    check_count("batch", batch)
    progress, achieved = [], []
    for start in range(0, len(queries), batch):
        asked = queries[start : start + batch]
        answers = critic.estimate_progress(asked)
        for estimate in checked_answers(answers, len(asked), ProgressEstimate, critic_name(critic)):
            progress.append(np.nan if estimate.progress is None else estimate.progress)
            unread = estimate.progress is None or estimate.achieved is None
            achieved.append(np.nan if unread else estimate.achieved)
    return np.asarray(progress, dtype=float), np.asarray(achieved, dtype=float)


def read_in_order(
    episodes: Sequence[Sequence[Any]],
    estimate: Callable[[list[ProgressQuery], list[int]], Sequence[ProgressEstimate]],
    batch: int,
    build: Callable[[Any], ProgressQuery] = lambda query: query,
) -> list[list[ProgressEstimate]]:
    """Each episode's estimates, its queries read in order with the critic's last reading as
    each one's ``previous_progress``, as the reward wrapper sends it (none at the first; an
    unreadable first reading counts 0, a later one holds the reading before it): what a critic
    that reads it (a stepwise prompt, :attr:`Critic.reads_previous_progress`) is given online.

    The ``t``-th queries of every episode are read together, ``batch`` at a time, by
    ``estimate(queries, episode_indices)``; ``build`` makes a query of an episode's entry as it
    is read (the reward's deferred queries)."""
    previous: list[float | None] = [None] * len(episodes)
    out: list[list[ProgressEstimate]] = [[] for _ in episodes]
    for t in range(max((len(q) for q in episodes), default=0)):
        live = [i for i, q in enumerate(episodes) if t < len(q)]
        for start in range(0, len(live), batch):
            chunk = live[start : start + batch]
            asked = [replace(build(episodes[i][t]), previous_progress=previous[i]) for i in chunk]
            for i, answer in zip(chunk, estimate(asked, chunk), strict=True):
                out[i].append(answer)
                if answer.progress is not None:
                    previous[i] = float(answer.progress)
                elif previous[i] is None:
                    previous[i] = 0.0
    return out


def predict_in_order(
    critic: Critic, episodes: Sequence[Sequence[ProgressQuery]], batch: int = 32
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Progress and P(achieved) for each episode's queries (as :func:`predict_estimates`), read
    in order as the reward reads a critic that reads its last estimate (:func:`read_in_order`)."""
    check_count("batch", batch)

    def estimate(asked: list[ProgressQuery], _: list[int]) -> list[ProgressEstimate]:
        answers = critic.estimate_progress(asked)
        return checked_answers(answers, len(asked), ProgressEstimate, critic_name(critic))

    out = []
    for answers in read_in_order(episodes, estimate, batch):
        progress = [np.nan if e.progress is None else e.progress for e in answers]
        achieved = [
            np.nan if e.progress is None or e.achieved is None else e.achieved for e in answers
        ]
        out.append((np.asarray(progress, dtype=float), np.asarray(achieved, dtype=float)))
    return out


def reads_in_order(critic: Critic) -> bool:
    """Whether ``critic``'s queries must be read in order (:func:`predict_in_order`)."""
    return bool(getattr(critic, "reads_previous_progress", False))
