"""Critics shipped inside the package: a name → its folder of weights.

``viscritic-small`` is trained by this project's own pipeline on this CPU (its model card,
``viscritic-small/MODEL_CARD.md``, says how, and how well). Load it by name anywhere a critic or
model is asked for: ``make_critic("viscritic-small")``, ``gym.make("VisCriticReward-v0",
env="Reacher-v5", critic="viscritic-small")``, ``train_critic.py model=viscritic-small``,
``python -m rollout.serve --model viscritic-small`` (``rollout`` finds :data:`SHIPPED` through the
package's entry point ``viscritic.checkpoints`` in pyproject.toml, which imports this module at run
time, for a name only: no rollout module names it).

    python -m critic.weights export outputs/viscritic_small/run/loop/pertask/readout/final critic/weights/viscritic-small --overwrite
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from critic.data.episodes import file_in_the_way
from rollout.checkpoint import PROCESSOR_FILES
from rollout.imports import MissingExtraError, require_package

SHIPPED = {"viscritic-small": Path(__file__).parent / "viscritic-small"}

# What a loadable checkpoint needs; the optimizer state (trainer_state.pt) stays behind. The
# weights are one file or, for a model saved in shards (a 7B's save_pretrained), an index and the
# shards it names; the chat template is in one of two files (transformers 5 writes the .jinja,
# Qwen's releases the .json); a processor config, where there is one, holds the pixel budget the
# model was trained at (without it the critic reads frames at the project's own).
MODEL_FILES = (
    "model.safetensors",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)
SHARD_INDEX = "model.safetensors.index.json"
CHAT_TEMPLATES = ("chat_template.jinja", "chat_template.json")


def _critic_files(folder: Path) -> list[str]:
    """The names in ``folder`` that belong to a critic's checkpoint (what an export copies, and
    what a later export replaces), :data:`MODEL_FILES` first in their order."""
    if not folder.is_dir():
        return []
    named = {*MODEL_FILES, SHARD_INDEX, *CHAT_TEMPLATES, *PROCESSOR_FILES, *OPTIONAL}
    found = [p.name for p in folder.iterdir() if p.name in named or p.name.endswith(".safetensors")]
    order = {name: i for i, name in enumerate(MODEL_FILES)}
    return sorted(found, key=lambda name: (order.get(name, len(order)), name))


def _checkpoint_files(checkpoint: Path) -> list[str]:
    """What of ``checkpoint`` a critic loads from, in the order they are copied.

    Raises:
        FileNotFoundError: the config, tokenizer, chat template or weights are missing (a shard
            its index names, too).
    """
    missing = [f for f in ("config.json", "tokenizer.json", "tokenizer_config.json")
               if not (checkpoint / f).is_file()]  # fmt: skip
    weights = ["model.safetensors"]
    if not (checkpoint / weights[0]).is_file() and (checkpoint / SHARD_INDEX).is_file():
        import json

        try:
            shards = sorted(
                set(json.loads((checkpoint / SHARD_INDEX).read_text())["weight_map"].values())
            )
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
            raise FileNotFoundError(
                f"{checkpoint / SHARD_INDEX} is not a readable shard index (no weight_map); copy "
                "the checkpoint again"
            ) from None
        weights = [SHARD_INDEX, *map(str, shards)]
    missing += [f for f in weights if not (checkpoint / f).is_file()]
    templates = [f for f in CHAT_TEMPLATES if (checkpoint / f).is_file()]
    if not templates:
        missing.append(CHAT_TEMPLATES[0])
    if missing:
        raise FileNotFoundError(
            f"{checkpoint} has no {missing}; pass a <run>/<stage>/final folder (a training run "
            "writes them all there), or a checkpoint with its weights, tokenizer and chat template"
        )
    optional = [f for f in (*OPTIONAL, *PROCESSOR_FILES) if (checkpoint / f).is_file()]
    return [*weights, "config.json", "tokenizer.json", "tokenizer_config.json", *templates,
            *optional]  # fmt: skip


class ExportError(ValueError):
    """The destination cannot take the export: a file, the checkpoint folder itself, or a folder
    that holds a critic's files already (without ``overwrite``)."""


def shipped_path(name: str) -> Path | None:
    """The folder of a shipped critic, or ``None`` when ``name`` is not one."""
    return SHIPPED.get(name) if isinstance(name, str) else None


def export(checkpoint: str | Path, destination: str | Path, overwrite: bool = False) -> Path:
    """Copy a checkpoint's model and tokenizer files (not its optimizer state) to
    ``destination``, keeping a model card that is already there.

    The files are copied into a hidden folder beside them first and moved into place once all
    are there, so an export interrupted while copying (the slow part) leaves the destination as
    it was; model files of an earlier export that this checkpoint lacks are removed, so the
    folder never mixes two.

    Args:
        overwrite: replace the weights a destination already holds (refused otherwise).

    Raises:
        FileNotFoundError: the checkpoint lacks a file a critic loads from (its weights, config,
            tokenizer or chat template), or its weights file is damaged.
        ExportError: the destination is a file (or lies under one), is the checkpoint itself,
            or holds weights and ``overwrite`` is not set.
    """
    checkpoint, destination = Path(checkpoint), Path(destination)
    present = _checkpoint_files(checkpoint)
    for name in (f for f in present if f.endswith(".safetensors")):
        if (problem := _weights_problem(checkpoint / name)) is not None:
            raise FileNotFoundError(
                f"{checkpoint / name} is damaged ({problem}); copy the checkpoint again, or "
                "export its run's checkpoint-<step> folder"
            )
    existing = file_in_the_way(destination)
    if existing is not None:
        where = "is a file" if existing == destination else f"lies under the file {existing}"
        raise ExportError(
            f"destination {destination} {where}; pass a folder (it is made if missing), e.g. "
            "critic/weights/<name>"
        )
    if destination.is_dir() and destination.samefile(checkpoint):
        raise ExportError(
            f"destination {destination} is the checkpoint itself; pass another folder to copy "
            "its model files into, e.g. critic/weights/<name>"
        )
    held = _critic_files(destination)
    if held and not overwrite:
        raise ExportError(
            f"destination {destination} already holds a critic's files ({', '.join(held)}); "
            "pass --overwrite "
            "(python -m critic.weights export CHECKPOINT DESTINATION --overwrite) to replace "
            "them (a MODEL_CARD.md there is kept), or another folder"
        )
    staging = destination / ".export-partial"
    if staging.is_dir():
        shutil.rmtree(staging)  # what an interrupted export left
    else:
        staging.unlink(missing_ok=True)
    staging.mkdir(parents=True)
    earlier = _critic_files(destination)
    try:
        for name in present:
            shutil.copy2(checkpoint / name, staging / name)
    except BaseException:  # a full disk, Ctrl-C: the destination keeps what it had
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for name in present:
        os.replace(staging / name, destination / name)
    for name in set(earlier) - set(present):  # an earlier export's, not this one's
        (destination / name).unlink(missing_ok=True)
    staging.rmdir()
    return destination


# A checkpoint may lack these and still load. The run record (train_critic.py's resolved options,
# critic.train.run_record.RUN_RECORD) goes along where there is one: what the weights were trained
# with, which a model card's command can be checked against.
OPTIONAL = ("generation_config.json", "trainer_config.json")


def _weights_problem(path: Path) -> str | None:
    """What is wrong with a safetensors file's header (a truncated copy, a Git LFS pointer), or
    None. Reads the header only."""
    safetensors = require_package("safetensors", "vlm", f"reading the weights {path}")
    SafetensorError, safe_open = safetensors.SafetensorError, safetensors.safe_open

    try:
        with safe_open(str(path), framework="pt") as weights:
            weights.keys()
    except (SafetensorError, OSError) as exc:
        return str(exc)
    return None


def main(argv: list[str]) -> int:
    overwrite = "--overwrite" in argv
    argv = [a for a in argv if a != "--overwrite"]
    if len(argv) != 3 or argv[0] != "export":
        print(
            "usage: python -m critic.weights export CHECKPOINT DESTINATION [--overwrite]",
            file=sys.stderr,
        )
        return 2
    try:
        print(export(argv[1], argv[2], overwrite=overwrite))
    except (FileNotFoundError, ExportError, MissingExtraError) as exc:
        print(f"critic.weights: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a full disk, a folder not writable: the copy is staged, then moved
        print(f"critic.weights: cannot write {argv[2]} ({exc.strerror or exc}); the destination "
              "is unchanged", file=sys.stderr)  # fmt: skip
        return 1
    return 0
