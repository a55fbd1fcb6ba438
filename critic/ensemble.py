"""Several critics read as one: the reward-model ensembles used against over-optimisation
(Coste et al., 2023, "Reward Model Ensembles Help Mitigate Overoptimization").

Each member answers every query; the progress is their ``mean``, their ``min`` (worst case), or
``mean_minus_std`` (``mean - std_weight * std``, the population SD, clipped to [0, 1]: a
variant of Coste et al.'s uncertainty-weighted optimisation, which subtracts the variance; it can
read below every member, [0.5, 0.5, 1.0] reading 0.43 where ``min`` reads 0.5); the
probability that the task is achieved is combined by the same rule, when every member gives one.
A member's unreadable answer leaves the ``mean`` to the others; under ``min`` and
``mean_minus_std`` it makes the estimate unreadable (the worst case is not known without it). A
learner that finds a state one member over-reads gains less where the members disagree. Every
member must read the same clip length (on the task it is used for), since one query goes to all
of them.

    make_critic({"name": "ensemble", "members": ["viscritic-small", "/ckpt/a"], "combine": "min"})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from critic.base import (
    Critic,
    CriticError,
    FailureQuery,
    FailureVerdict,
    ParseStatus,
    ProgressEstimate,
    ProgressQuery,
    check_queries,
    checked_answers,
)
from rollout.checks import is_number
from rollout.warn import warn_user

COMBINE = ("mean", "min", "mean_minus_std")


class EnsembleConfigError(CriticError):
    """The ensemble's members or combination rule cannot be used; the message names the fix."""


@dataclass
class EnsembleCritic(Critic):
    """Critics answering together (module doc).

    Attributes:
        members: critics, or what :func:`critic.factory.make_critic` takes for each (two or more).
        combine: ``mean``, ``min`` or ``mean_minus_std``.
        std_weight: the ``mean_minus_std`` penalty per standard deviation, >= 0.
    """

    members: Sequence[Critic | str | Mapping[str, Any]] = ()
    combine: str = "mean"
    std_weight: float = 1.0
    critics: list[Critic] = field(init=False, repr=False)

    @classmethod
    def check_options(
        cls, members: Any = (), combine: str = "mean", std_weight: float = 1.0
    ) -> list:
        """The members as a list, or the :class:`EnsembleConfigError` the ensemble would raise
        for its rule, its weight or its number of members, without building a member (a script
        checks its critic before other work starts)."""
        if combine not in COMBINE:
            raise EnsembleConfigError(
                f"combine={combine!r} is not a rule; pick one of {list(COMBINE)}"
            )
        if not is_number(std_weight) or std_weight < 0:
            raise EnsembleConfigError(f"std_weight={std_weight!r} must be a finite number >= 0")
        listed = isinstance(members, Sequence) and not isinstance(members, str)
        listed_members = list(members) if listed else members
        if not listed or len(listed_members) < 2:
            raise EnsembleConfigError(
                f"members={listed_members!r}: an ensemble needs a list of two or more critics, "
                "e.g. critic.members=[critic/weights/viscritic-small-reacher-2f,/ckpt/round6]"
            )
        return listed_members

    def __post_init__(self) -> None:
        from critic.factory import make_critic

        members = self.check_options(self.members, self.combine, self.std_weight)
        # Members may read different lengths on tasks the ensemble is not used for (the shipped
        # critic reads Lift from 8 frames, a Reacher-only round none): the lengths are checked
        # per task, where a query is built (clip_frames_for).
        # the same spec twice answers alike (a noisy oracle's default seed is every copy's): the
        # ensemble then averages nothing, and an ensemble of noisy oracles was no ensemble
        specs = [m if isinstance(m, str | Mapping) else None for m in members]
        for i, spec in enumerate(specs):
            if spec is not None and spec in specs[:i]:
                warn_user(
                    f"ensemble members {specs.index(spec)} and {i} are the same critic "
                    f"({dict(spec) if isinstance(spec, Mapping) else spec!r}): they answer alike, "
                    "and the ensemble combines copies; give each its own seed= (a noisy "
                    "oracle's) or checkpoint"
                )
        self.critics = [make_critic(m) for m in members]
        self.needs_frames = any(c.needs_frames for c in self.critics)

    @property
    def name(self) -> str:
        return f"ensemble-{self.combine}({', '.join(c.name for c in self.critics)})"

    @property
    def failure_types(self) -> tuple[str, ...] | None:
        """The failure types its members' prompts offer (in their order, each once), which the
        evaluator scores types against; ``None`` where no member has a vocabulary (oracles)."""
        types = [t for c in self.critics for t in (getattr(c, "failure_types", None) or ())]
        return tuple(dict.fromkeys(types)) or None

    @property
    def reads_previous_progress(self) -> bool:
        return any(c.reads_previous_progress for c in self.critics)

    @property
    def clip_frames(self) -> int | None:
        """The members' common default clip length (:meth:`clip_frames_for` with no task)."""
        return self.clip_frames_for(None)

    def clip_frames_for(self, task: str | None) -> int | None:
        """The members' common clip length on ``task``; members that record a length per task
        must agree on each task they are used for."""
        lengths = {c.clip_frames_for(task) for c in self.critics} - {None}
        if len(lengths) > 1:
            raise EnsembleConfigError(
                f"members read different clip lengths {sorted(lengths)} "
                f"{'by default' if task is None else f'on {task}'} "
                f"({[c.name for c in self.critics]}); one query goes to all of them, so "
                "ensemble critics trained on the same number of frames for this task"
            )
        return lengths.pop() if lengths else None

    def estimate_progress(self, queries: Sequence[ProgressQuery]) -> list[ProgressEstimate]:
        check_queries(queries, ProgressQuery, f"{self.name}.estimate_progress")  # not a member's
        answers = [
            _checked(c, c.estimate_progress(queries), len(queries), ProgressEstimate)
            for c in self.critics
        ]
        out = []
        for per_query in zip(*answers, strict=True):
            read = np.asarray([a.progress for a in per_query if a.progress is not None], float)
            unread = [a for a in per_query if a.progress is None]
            if read.size == 0 or (unread and self.combine != "mean"):
                # the pessimistic rules do not know their worst case without every member: an
                # answer steered unreadable must not leave the optimistic members to decide
                out.append(ProgressEstimate(None, status=unread[0].status))
                continue
            achieved = [a.achieved for a in per_query if a.progress is not None]
            out.append(
                ProgressEstimate(
                    self._combine(read),
                    spread=float(read.std()),
                    achieved=None if None in achieved else self._combine(np.asarray(achieved)),
                )
            )
        return out

    def _combine(self, read: np.ndarray) -> float:
        """The members' readings (progress, or the probability the task is achieved) as one."""
        if self.combine == "mean":
            return float(read.mean())
        if self.combine == "min":
            return float(read.min())
        return float(np.clip(read.mean() - self.std_weight * read.std(), 0.0, 1.0))

    def detect_failure(self, queries: Sequence[FailureQuery]) -> list[FailureVerdict]:
        """The majority of the readable verdicts (a tie is a failure); confidence is the share
        of readable members that agree. A failure's type is the most common among them, the
        first member's (in ``members`` order) on a tie."""
        check_queries(queries, FailureQuery, f"{self.name}.detect_failure")
        answers = [
            _checked(c, c.detect_failure(queries), len(queries), FailureVerdict)
            for c in self.critics
        ]
        out = []
        for per_query in zip(*answers, strict=True):
            readable = [v for v in per_query if v.success is not None]
            if not readable:
                out.append(FailureVerdict(None, status=ParseStatus.NO_ANSWER))
                continue
            successes = sum(v.success for v in readable)
            success = successes > len(readable) / 2
            agree = [v for v in readable if v.success == success]
            types = [v.failure_type for v in agree if v.failure_type]
            out.append(
                FailureVerdict(
                    success,
                    None if success or not types else max(types, key=types.count),
                    confidence=len(agree) / len(readable),
                )
            )
        return out

    def close(self) -> None:
        for critic in self.critics:
            critic.close()


def _checked(member: Critic, answers: Any, queries: int, kind: type) -> list:
    """A member's answers, if they keep the contract (:func:`critic.base.checked_answers`), or a
    :class:`CriticError` naming the member."""
    return checked_answers(answers, queries, kind, f"ensemble member {member.name!r}")
