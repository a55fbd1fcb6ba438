"""Small real critics for tests: they keep or break the contract on purpose, and record queries;
and a folder's lock held by another process, as a run writing there holds it."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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


@contextlib.contextmanager
def held_elsewhere(folder: Path) -> Iterator[int]:
    """``folder``'s lock (``rollout.files.lock_folder``) held by another process for the block,
    as a run writing there holds it; yields that process's pid."""
    code = ("import sys, time; from rollout.files import lock_folder; "
            "held = lock_folder(sys.argv[1], 'run'); print('held', flush=True); time.sleep(300)")  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()
