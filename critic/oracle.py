"""The oracle critic: answers from the simulator's privileged progress and success.

It is the baseline every learned critic is compared with and the labeller of synthetic data. It
sees the same queries as a VLM critic; it just reads the privileged fields instead of the frames.
:class:`NoisyOracleCritic` adds errors of a chosen size to its progress, to measure how good a
learned critic must be before a policy learns from it as from the truth.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from critic.base import (
    ACHIEVED,
    Critic,
    CriticError,
    FailureQuery,
    FailureVerdict,
    ParseStatus,
    ProgressEstimate,
    ProgressQuery,
    check_queries,
)
from critic.frames import checked_frames
from rollout.checks import is_int, is_number


@dataclass
class OracleCritic(Critic):
    """Reads ``privileged_progress`` / ``privileged_success`` from each query. A progress query
    whose privileged progress is not finite (``nan``: a labelled video has none) gets an
    unreadable estimate (``progress`` and ``achieved`` ``None``, ``ParseStatus.NOT_A_NUMBER``).

    Args:
        needs_frames: ``False`` by default: the oracle needs no pixels. Set it to ``True`` to have
            the reward wrapper render and pass frames anyway, e.g. to measure the rendering cost a
            VLM critic will pay.

    Example:
        >>> OracleCritic().estimate_progress([ProgressQuery("lift", privileged_progress=0.4)])
        [ProgressEstimate(progress=0.4, reasoning='', status=<ParseStatus.OK: 'ok'>, spread=None, achieved=0.0)]
    """

    needs_frames: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        if not isinstance(self.needs_frames, bool | np.bool_):
            raise CriticError(f"needs_frames={self.needs_frames!r} must be True or False")
        self.needs_frames = bool(self.needs_frames)

    @property
    def name(self) -> str:
        return "oracle"

    def estimate_progress(self, queries: Sequence[ProgressQuery]) -> list[ProgressEstimate]:
        check_queries(queries, ProgressQuery, f"{self.name}.estimate_progress")
        estimates = []
        for i, query in enumerate(queries):
            if query.privileged_progress is None:
                raise CriticError(
                    f"OracleCritic got query {i} without privileged_progress; the oracle reads "
                    "the simulator's ground truth. Build queries through envs.VisCriticReward (which "
                    "fills it from the task) or set ProgressQuery.privileged_progress."
                )
            progress = float(query.privileged_progress)
            if not np.isfinite(progress):
                # no ground truth to read (an external video's nan): unreadable, not progress nan
                # with achieved 0, which the evaluator read as a sure failure
                estimates.append(ProgressEstimate(None, status=ParseStatus.NOT_A_NUMBER))
                continue
            estimates.append(
                ProgressEstimate(progress=progress, achieved=float(progress >= ACHIEVED))
            )
        return estimates

    def detect_failure(self, queries: Sequence[FailureQuery]) -> list[FailureVerdict]:
        check_queries(queries, FailureQuery, f"{self.name}.detect_failure")
        verdicts = []
        for i, query in enumerate(queries):
            if query.privileged_success is None:
                raise CriticError(
                    f"OracleCritic got failure query {i} without privileged_success; set "
                    "FailureQuery.privileged_success from the simulator's success flag."
                )
            success = bool(query.privileged_success)
            verdicts.append(
                FailureVerdict(
                    success=success,
                    failure_type=None if success else query.privileged_failure_type,
                )
            )
        return verdicts


@dataclass
class NoisyOracleCritic(OracleCritic):
    """The oracle's progress with errors of a set size: ``clip(p + o_e + n_q, 0, 1)``.

    A learned critic's error on an episode splits into an offset ``o_e`` that all its readings
    share and a part ``n_q`` that changes from query to query; ``eval_critic.py`` reports the
    first as the policy rollouts' ``offset SD``. This critic draws both, so RL can be run at a
    chosen error size (``zero_shot_rl.py critic=noisy_oracle critic.offset_sd=0.1``).

    The offset is drawn once per episode, from a generator seeded by ``seed`` and the bytes of
    the episode's first frame (so every query of one episode, in any batch or process, shares
    it); the query noise from ``seed`` and the bytes of the query's first and current frames, so
    the same query reads the same in any order, batch, vec env or process, as a deterministic
    critic's would (one generator for the critic's life made an episode's rewards depend on the
    queries before it: ``reset(seed=3)`` twice read differently). A query given without frames
    (called directly) draws it from one generator seeded by ``seed``; a critic that renders none
    (``needs_frames=False``) takes no noise, since every env built from one spec would draw the
    same. The reset query (the first frame against itself) is read exactly, as a critic
    comparing a frame with itself would. ``achieved`` is the noisy progress at the top (1.0), as
    a learned critic's comes from its own reading: an episode whose offset is below 0 never reads
    achieved (at ``offset_sd=0.2``, half of the successes), and one above reads it from a true
    progress of ``1 - o``; :meth:`detect_failure` stays exact. Clipping pulls readings near 0
    and 1 toward the middle (at 0.2, a true 1.0 reads 0.92 on average, a true 0 reads 0.08).

    Args:
        offset_sd: SD of the per-episode offset, >= 0.
        step_sd: SD of the per-query noise, >= 0.
        seed: seeds both draws.

    Example:
        >>> frame = np.zeros((4, 4, 3), np.uint8)
        >>> q = ProgressQuery("reach", initial_frame=frame, current_frame=frame + 1,
        ...                   privileged_progress=0.5)
        >>> NoisyOracleCritic(offset_sd=0.0, step_sd=0.0).estimate_progress([q])[0].progress
        0.5
    """

    offset_sd: float = 0.2
    step_sd: float = 0.0
    seed: int = 0
    needs_frames: bool = field(default=True, kw_only=True)
    _noise: np.random.Generator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not is_int(self.seed) or self.seed < 0:
            raise CriticError(f"NoisyOracleCritic seed={self.seed!r} must be an integer >= 0")
        self.seed = int(self.seed)
        for key in ("offset_sd", "step_sd"):
            value = getattr(self, key)
            if not is_number(value) or value < 0:
                raise CriticError(
                    f"NoisyOracleCritic {key}={value!r} must be a finite number >= 0 (an SD of "
                    "progress, e.g. 0.2; 0: none)"
                )
        if self.offset_sd and not self.needs_frames:
            raise CriticError(
                "NoisyOracleCritic keys each episode's offset by its first frame, so it needs "
                "frames: keep needs_frames=True, or set offset_sd=0"
            )
        if self.step_sd and not self.needs_frames:  # one stream per critic, the same in each env
            raise CriticError(
                "NoisyOracleCritic keys each query's noise by its frames (without them every env "
                "built from one spec drew the same noise, step for step): keep needs_frames=True, "
                "or set step_sd=0"
            )
        self._noise = np.random.default_rng(self.seed)

    @property
    def name(self) -> str:
        return f"noisy_oracle(offset_sd={self.offset_sd}, step_sd={self.step_sd})"

    def episode_offset(self, initial_frame: np.ndarray) -> float:
        """The offset every query of the episode that starts at ``initial_frame`` shares."""
        key = [self.seed, _digest(initial_frame)]
        return float(np.random.default_rng(key).normal(0.0, self.offset_sd))

    def query_noise(
        self, initial_frame: np.ndarray | None, current_frame: np.ndarray | None
    ) -> float:
        """The error of one query, beside its episode's offset (see the class)."""
        if initial_frame is None or current_frame is None:
            return float(self._noise.normal(0.0, self.step_sd))
        key = [self.seed, _digest(initial_frame), _digest(current_frame)]
        return float(np.random.default_rng(key).normal(0.0, self.step_sd))

    def estimate_progress(self, queries: Sequence[ProgressQuery]) -> list[ProgressEstimate]:
        estimates = super().estimate_progress(queries)
        noisy = []
        for i, (query, estimate) in enumerate(zip(queries, estimates, strict=True)):
            first, now = query.initial_frame, query.current_frame
            if (first is None or now is None) and query.frames is not None:
                # as a VLM critic reads a query of frames alone: its first and its last (checked
                # as it checks them: a ragged list or a 0-d value is a FrameError naming it)
                frames = checked_frames(query.frames, "frames", i)
                first = frames[0] if first is None and len(frames) else first
                now = frames[-1] if now is None and len(frames) else now
            if self.offset_sd and (first is None or now is None):
                raise CriticError(
                    f"NoisyOracleCritic got query {i} without its first and current frames; "
                    "it keys each episode's offset by the first frame (build queries through "
                    "envs.VisCriticReward, which renders them)"
                )
            # uint8 [H, W, 3], as a VLM critic takes them: a list of the same frame hashed to
            # another offset (its int64 bytes)
            if first is not None:
                first = checked_frames(first, "initial_frame", i)
            if now is not None:
                now = checked_frames(now, "current_frame", i)
            if estimate.progress is None or (
                first is not None and now is not None and np.array_equal(first, now)
            ):
                # unreadable (no ground truth) stays so; the reset query, a frame against itself,
                # reads 0 error
                noisy.append(estimate)
                continue
            error = self.episode_offset(first) if self.offset_sd else 0.0
            if self.step_sd:
                error += self.query_noise(first, now)
            progress = float(np.clip(estimate.progress + error, 0.0, 1.0))
            noisy.append(replace(estimate, progress=progress, achieved=float(progress >= ACHIEVED)))
        return noisy


def _digest(frame: np.ndarray) -> int:
    """A frame's bytes as a 64-bit key of a noise draw."""
    digest = hashlib.blake2b(np.ascontiguousarray(frame).tobytes(), digest_size=8)
    return int.from_bytes(digest.digest(), "little")
