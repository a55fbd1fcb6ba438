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


def shipped_path(name: str) -> Path | None:
    """The folder of a shipped critic, or ``None`` when ``name`` is not one."""
    return SHIPPED.get(name) if isinstance(name, str) else None


def export(checkpoint: str | Path, destination: str | Path) -> Path:
    """Copy a checkpoint's model and tokenizer files (not its optimizer state) to
    ``destination``, keeping a model card that is already there.

    Raises:
        FileNotFoundError: the checkpoint lacks the weights or the config.
    """
    checkpoint, destination = Path(checkpoint), Path(destination)
    missing = [f for f in MODEL_FILES[:2] if not (checkpoint / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{checkpoint} has no {missing}; pass a <run>/<stage>/final folder")
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
    except FileNotFoundError as exc:
        print(f"critic.weights: {exc}", file=sys.stderr)
        return 1
    return 0
