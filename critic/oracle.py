"""The oracle critic: answers from the simulator's privileged progress and success.

It is the baseline every learned critic is compared with and the labeller of synthetic data. It
sees the same queries as a VLM critic; it just reads the privileged fields instead of the frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from critic.base import (
    ACHIEVED,
    Critic,
    CriticError,
    FailureQuery,
    FailureVerdict,
    ProgressEstimate,
    ProgressQuery,
)


@dataclass
class OracleCritic(Critic):
    """Reads ``privileged_progress`` / ``privileged_success`` from each query.

    Args:
        needs_frames: ``False`` by default: the oracle needs no pixels. Set it to ``True`` to have
            the reward wrapper render and pass frames anyway, e.g. to measure the rendering cost a
            VLM critic will pay.

    Example:
        >>> OracleCritic().estimate_progress([ProgressQuery("lift", privileged_progress=0.4)])
        [ProgressEstimate(progress=0.4, reasoning='', status=<ParseStatus.OK: 'ok'>, spread=None, achieved=0.0)]
    """

    needs_frames: bool = False

    @property
    def name(self) -> str:
        return "oracle"

    def estimate_progress(self, queries: Sequence[ProgressQuery]) -> list[ProgressEstimate]:
        estimates = []
        for i, query in enumerate(queries):
            if query.privileged_progress is None:
                raise CriticError(
                    f"OracleCritic got query {i} without privileged_progress; the oracle reads "
                    "the simulator's ground truth. Build queries through envs.VisCriticReward (which "
                    "fills it from the task) or set ProgressQuery.privileged_progress."
                )
            progress = float(query.privileged_progress)
            estimates.append(
                ProgressEstimate(progress=progress, achieved=float(progress >= ACHIEVED))
            )
        return estimates

    def detect_failure(self, queries: Sequence[FailureQuery]) -> list[FailureVerdict]:
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
