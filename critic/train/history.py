"""A training run's log: ``history.jsonl`` (one JSON row a step) and tensorboard's events.

Split from ``critic/train/recipe.py`` (the trainer) along the line between training and what it
writes down about itself.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rollout.files import write_atomic


def _json_number(value: Any) -> Any:
    """``value``, with a NaN or infinite float as None: JSON has no NaN (Python writes a bare
    ``NaN`` that strict readers refuse)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunHistory:
    """The rows a run logs, in ``run_dir/history.jsonl`` and ``run_dir/tensorboard``.

    Attributes:
        rows: the rows this process logged, in order.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.rows: list[dict[str, Any]] = []
        self.writer = None  # tensorboard's, made at the first row

    def add(self, stage: str, step: int, record: dict[str, Any]) -> None:
        """Log ``record`` at ``step`` of ``stage``: every finite number to tensorboard, the whole
        row to the history (NaN as null)."""
        self.rows.append(record)
        if self.writer is None:
            # made at the first record, not at setup: a run that stopped before it logged
            # anything (no samples, a teacher that does not load) left an events file that
            # blocked the run dir for the corrected run
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        for key, value in record.items():
            if (
                isinstance(value, float | int)
                and not isinstance(value, bool)
                and math.isfinite(value)
            ):
                self.writer.add_scalar(f"{stage}/{key}", value, step)
        with (self.run_dir / "history.jsonl").open("a") as f:  # strict JSON: NaN is null
            f.write(json.dumps({k: _json_number(v) for k, v in record.items()}) + "\n")

    def trim(self, stage: str, step: int, pipeline: list[str]) -> None:
        """A resume from ``stage``'s checkpoint at ``step`` trains the steps after it again: the
        rows an interrupted run logged for them (and for any stage after it in ``pipeline``)
        leave the history, which would hold those steps twice."""
        path = self.run_dir / "history.jsonl"
        if not path.is_file():
            return
        later = set(pipeline[pipeline.index(stage) + 1 :]) if stage in pipeline else set()
        kept = []
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:  # a line cut short when the run was killed
                continue
            if row.get("stage") in later or (
                row.get("stage") == stage and row.get("step", 0) > step
            ):
                continue
            kept.append(line)
        write_atomic(path, "".join(f"{line}\n" for line in kept))  # never half a history

    def close(self) -> None:
        """Close tensorboard's writer (it holds a file in the run dir)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
