"""Small real critics for tests: they keep or break the contract on purpose, and record queries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from critic.base import Critic, FailureQuery, FailureVerdict, ProgressEstimate, ProgressQuery
from critic.oracle import OracleCritic


@dataclass
class RecordingCritic(OracleCritic):
    """The oracle, needing frames, that records every batch of queries it is asked."""

    needs_frames: bool = True
    batches: list[list[ProgressQuery]] = field(default_factory=list)

    def estimate_progress(self, queries: Sequence[ProgressQuery]) -> list[ProgressEstimate]:
        self.batches.append(list(queries))
        return super().estimate_progress(queries)


@dataclass
class ScriptedCritic(Critic):
    """Answers a fixed sequence of progress values (or raw estimates), one per query."""

    answers: list = field(default_factory=list)
    batch_size_error: int = 0  # return this many extra (or missing, if negative) estimates
    needs_frames: bool = False
    calls: int = 0

    @property
    def name(self) -> str:
        return "scripted"

    def estimate_progress(self, queries: Sequence[ProgressQuery]) -> list[ProgressEstimate]:
        out = []
        for _ in queries:
            value = self.answers[min(self.calls, len(self.answers) - 1)]
            self.calls += 1
            out.append(value if isinstance(value, ProgressEstimate) else ProgressEstimate(value))
        if self.batch_size_error > 0:
            out += out[: self.batch_size_error]
        elif self.batch_size_error < 0:
            out = out[: self.batch_size_error]
        return out

    def detect_failure(self, queries: Sequence[FailureQuery]) -> list[FailureVerdict]:
        return [FailureVerdict(success=None) for _ in queries]
