"""Critics shipped inside the package: a name → its folder of weights.

``viscritic-small`` is trained by this project's own pipeline on this CPU (its model card,
``viscritic-small/MODEL_CARD.md``, says how, and how well). Load it by name anywhere a critic or
model is asked for: ``make_critic("viscritic-small")``, ``gym.make("VisCriticReward-v0",
env="Reacher-v5", critic="viscritic-small")``, ``train_critic.py model=viscritic-small``; a
critic server takes its folder (``python -m rollout.serve --model critic/weights/viscritic-small``:
``rollout`` knows no critic names).

    python -m critic.weights export outputs/viscritic_small/run/outcome/final critic/weights/viscritic-small
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from critic.data.episodes import file_in_the_way

SHIPPED = {"viscritic-small": Path(__file__).parent / "viscritic-small"}

# What a loadable checkpoint needs; the optimizer state (trainer_state.pt) stays behind.
MODEL_FILES = (
    "model.safetensors",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)


class ExportError(ValueError):
    """The destination cannot take the export: a file, or the checkpoint folder itself."""


def shipped_path(name: str) -> Path | None:
    """The folder of a shipped critic, or ``None`` when ``name`` is not one."""
    return SHIPPED.get(name) if isinstance(name, str) else None


def export(checkpoint: str | Path, destination: str | Path) -> Path:
    """Copy a checkpoint's model and tokenizer files (not its optimizer state) to
    ``destination``, keeping a model card that is already there.

    Raises:
        FileNotFoundError: the checkpoint lacks the weights or the config.
        ExportError: the destination is a file (or lies under one), or is the checkpoint itself.
    """
    checkpoint, destination = Path(checkpoint), Path(destination)
    missing = [f for f in MODEL_FILES[:2] if not (checkpoint / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{checkpoint} has no {missing}; pass a <run>/<stage>/final folder")
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
    destination.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if (checkpoint / name).is_file():
            shutil.copy2(checkpoint / name, destination / name)
    return destination


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "export":
        print("usage: python -m critic.weights export CHECKPOINT DESTINATION", file=sys.stderr)
        return 2
    try:
        print(export(argv[1], argv[2]))
    except (FileNotFoundError, ExportError) as exc:
        print(f"critic.weights: {exc}", file=sys.stderr)
        return 1
    return 0
