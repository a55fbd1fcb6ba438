"""Training checkpoints: the model in safetensors (``save_pretrained``, loadable as a critic), plus
the optimizer, the step and every random generator, so a resumed run repeats the uninterrupted
run's losses exactly (same seed, hardware and library versions).

Layout: ``<dir>/model.safetensors`` (+ config, tokenizer), ``<dir>/trainer_state.pt`` and
``<dir>/trainer_config.json`` (the run's options and the step), written to a hidden sibling folder
that takes ``<dir>``'s place when complete.
"""

from __future__ import annotations

import json
import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE = "trainer_state.pt"


class CheckpointError(ValueError):
    """A checkpoint folder is missing or incomplete."""


def unwritten(path: Path, problem: OSError | None, last: Path | None) -> CheckpointError:
    """The error for the checkpoint ``path`` that could not be written (``problem``: ``None`` on a
    process whose own part was written while another's was not), naming ``last``, the run's last
    checkpoint written, to resume from (a full disk was a raw OSError traceback)."""
    why = "another process could not write its part" if problem is None else (
        problem.strerror or str(problem))  # fmt: skip
    then = (
        f"the last checkpoint written is {last}: resume={last} once there is room"
        if last is not None
        else "no checkpoint of this run was written before it: run it again once there is room"
    )
    return CheckpointError(f"cannot write the checkpoint {path} ({why}); {then}")


def staging_folder(path: str | Path) -> Path:
    """Where a save of ``path`` is written before it takes ``path``'s place: a hidden sibling,
    which :func:`latest_checkpoint` does not see."""
    path = Path(path)
    return path.parent / f".{path.name}.partial"


def as_write_error(exc: Exception, folder: Path) -> Exception:
    """A failed write of a checkpoint into ``folder`` as the ``OSError`` it is: safetensors
    raises its own ``SafetensorError`` ("I/O error: No space left on device") and ``torch.save``
    a ``RuntimeError`` ("[enforce fail at inline_container.cc] . unexpected pos"), which went
    past the callers' ``except OSError`` as tracebacks. Any other error is returned as it is."""
    from safetensors import SafetensorError

    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, SafetensorError) or (
        isinstance(exc, RuntimeError) and "inline_container" in str(exc)
    ):
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        return OSError(f"{reason}: writing into {folder} failed; is the disk full?")
    return exc


def save_checkpoint(
    path: str | Path,
    model,
    tokenizer,
    optimizer,
    step: int,
    extra: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    staged: bool = False,
) -> Path:
    """Write model, tokenizer, optimizer, step and RNG states to ``path`` (a folder).

    Everything goes to :func:`staging_folder` first, which is renamed to ``path`` at the end (an
    earlier save there is replaced only then), so a save cut short never leaves a folder that
    reads as complete with another save's files in it.

    Args:
        options: the run's resolved options, recorded with the step in
            :data:`critic.train.run_record.RUN_RECORD` (a resume= with other options is refused).
        staged: the staging folder already holds this save's other files (DeepSpeed's shards);
            otherwise it is emptied first (a save cut short left it).
    """
    from critic.train.run_record import RUN_RECORD

    path = Path(path)
    staging = staging_folder(path)
    if not staged:
        shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if options is not None:
            record = json.dumps({"step": step, "options": options}, indent=1)
            (staging / RUN_RECORD).write_text(record + "\n")
        state = {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "rng": rng_states(),
            "extra": extra or {},
        }
        torch.save(state, staging / STATE)
    except Exception as exc:
        shutil.rmtree(staging, ignore_errors=True)  # half a save holds the room the user needs
        if (error := as_write_error(exc, staging)) is exc:
            raise
        raise error from exc
    replaced = path.parent / f".{path.name}.old"
    shutil.rmtree(replaced, ignore_errors=True)
    if path.exists():  # an earlier save of this folder (a resumed run's): out of the way first
        path.rename(replaced)
    staging.rename(path)
    shutil.rmtree(replaced, ignore_errors=True)
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
    state = _read_state(file, {"step", "optimizer", "rng", "extra"})
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{path}'s optimizer state does not fit this run's parameters ({exc}); resume with "
            "the options the checkpoint was trained with (freeze_vision=, the model's size)"
        ) from exc
    _restore_rng(file, state)
    return {"step": int(state["step"]), "extra": state["extra"]}


def _restore_rng(file: Path, state: dict[str, Any]) -> None:
    try:
        set_rng_states(state["rng"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{file}'s random generator states are not this project's ({exc!r}); resume from a "
            "checkpoint-<step> folder of a train_critic.py run"
        ) from exc


def rng_states() -> dict[str, Any]:
    """This process's Python, numpy and torch random generator states."""
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state()}  # fmt: skip


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])


def save_rank_state(folder: str | Path, rank: int, state: dict[str, Any]) -> Path:
    """One process's own state in a multi-process checkpoint (its generators are added):
    ``<folder>/rank<r>.pt``. DeepSpeed's shards sit beside it, saved by DeepSpeed."""
    path = Path(folder) / f"rank{rank}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**state, "rng": rng_states()}, path)
    return path


def load_rank_state(folder: str | Path, rank: int) -> dict[str, Any]:
    """Restore one process's generators from :func:`save_rank_state`; returns its state.

    Raises:
        CheckpointError: no state for this rank (the run had fewer processes).
    """
    path = Path(folder) / f"rank{rank}.pt"
    if not path.is_file():
        raise CheckpointError(
            f"{path.parent} has no rank{rank}.pt: the checkpoint was written by a run with fewer "
            "processes; resume with the same number of processes"
        )
    state = _read_state(path, {"rng"})
    _restore_rng(path, state)
    return state


def _read_state(file: Path, fields: set[str]) -> dict[str, Any]:
    """The dict of ``fields`` (and more) that this project saved in ``file``, or a
    :class:`CheckpointError` that says the file is damaged or foreign."""
    try:
        state = torch.load(file, weights_only=False)  # our own file: it holds RNG states (tuples)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError, ImportError,
            AttributeError) as exc:  # fmt: skip
        # a truncated, damaged or foreign file (a Git LFS pointer, another program's pickle)
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(
            f"{file} cannot be read ({reason}); the save was cut short or the file damaged: "
            "resume from an earlier checkpoint-<step> folder of the run"
        ) from exc
    if not isinstance(state, dict) or not fields <= state.keys():
        raise CheckpointError(
            f"{file} is not a trainer state this project wrote (it needs {sorted(fields)}); "
            "resume from a checkpoint-<step> folder of a train_critic.py run"
        )
    return state


def remove_older_checkpoints(newest: str | Path, keep: int) -> list[Path]:
    """Remove the ``checkpoint-<step>`` folders beside ``newest`` (the one just written) older
    than its ``keep`` latest, ``newest`` counted (``keep_checkpoints=``; as transformers'
    ``save_total_limit``); returns those removed. Later steps (an earlier run's, resumed from
    before them) are neither counted nor removed: counted, they removed ``newest``. A folder
    that is not a whole checkpoint is left alone."""
    newest = Path(newest)
    step = int(newest.name[11:])
    found = sorted(
        (p for p in newest.parent.glob("checkpoint-*")
         if (p / STATE).is_file() and p.name[11:].isdigit() and int(p.name[11:]) <= step),
        key=lambda p: int(p.name[11:]),
    )  # fmt: skip
    older = found[: max(len(found) - keep, 0)]
    for path in older:
        shutil.rmtree(path, ignore_errors=True)
    return older


def keep_earlier_final(final: Path, step: int) -> Path | None:
    """Before a resumed stage writes its ``final`` at ``step``: an earlier run's final there, of a
    lower step (a stage resumed from an earlier ``checkpoint-<step>`` of a run that had finished
    it), becomes ``checkpoint-<its step>`` beside it (it was replaced without a word), unless that
    checkpoint is there already. Returns where it went, or None. (A stage resumed from its own
    ``final`` keeps it so before it trains: :meth:`critic.train.recipe.Trainer.run_stage`.)"""
    from critic.train.run_record import RUN_RECORD

    try:
        earlier = int(json.loads((final / RUN_RECORD).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no final, or one that does not say its step: nothing to name it by
    kept = final.parent / f"checkpoint-{earlier}"
    if earlier >= step or kept.exists():
        return None
    final.rename(kept)
    return kept


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The complete ``checkpoint-<step>`` folder with the highest step under ``folder``."""
    found = [
        p
        for p in Path(folder).glob("checkpoint-*")
        if (p / STATE).is_file() and p.name[11:].isdigit()
    ]
    return max(found, key=lambda p: int(p.name[11:]), default=None)
