"""Training checkpoints: the model in safetensors (``save_pretrained``, loadable as a critic), plus
the optimizer, the step and every random generator, so a resumed run repeats the uninterrupted
run's losses exactly (same seed, hardware and library versions).

Layout: ``<dir>/model.safetensors`` (+ config, tokenizer), ``<dir>/trainer_state.pt``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE = "trainer_state.pt"


class CheckpointError(ValueError):
    """A checkpoint folder is missing or incomplete."""


def save_checkpoint(
    path: str | Path, model, tokenizer, optimizer, step: int, extra: dict[str, Any] | None = None
) -> Path:
    """Write model, tokenizer, optimizer, step and RNG states to ``path`` (a folder)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "rng": {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
        },
        "extra": extra or {},
    }
    partial = path / (STATE + ".partial")
    torch.save(state, partial)
    partial.replace(path / STATE)  # the state appears last: a folder with it is complete
    return path


def load_trainer_state(path: str | Path, optimizer) -> dict[str, Any]:
    """Restore the optimizer and RNG states saved in ``path``; returns ``{"step", "extra"}``.

    The model itself is loaded from the same folder by the usual loader (``load_model(path)``).

    Raises:
        CheckpointError: ``path`` holds no complete checkpoint.
    """
    file = Path(path) / STATE
    if not file.is_file():
        raise CheckpointError(
            f"{path} is not a complete training checkpoint (no {STATE}); resume from a "
            "checkpoint-<step> folder a run wrote"
        )
    state = torch.load(file, weights_only=False)  # our own file: it holds RNG states (tuples)
    optimizer.load_state_dict(state["optimizer"])
    random.setstate(state["rng"]["python"])
    np.random.set_state(state["rng"]["numpy"])
    torch.set_rng_state(state["rng"]["torch"])
    return {"step": int(state["step"]), "extra": state["extra"]}


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The complete ``checkpoint-<step>`` folder with the highest step under ``folder``."""
    found = [
        p
        for p in Path(folder).glob("checkpoint-*")
        if (p / STATE).is_file() and p.name[11:].isdigit()
    ]
    return max(found, key=lambda p: int(p.name[11:]), default=None)
