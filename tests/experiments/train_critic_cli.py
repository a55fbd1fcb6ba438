"""Running experiments/train_critic.py from tests: as a user does (a subprocess, or torchrun),
or its recipe imported in this process to check a config without loading a model. Shared by
test_train_critic.py (the stages, resume), test_train_critic_config.py (the config checks),
test_train_critic_data.py (the data options) and test_train_critic_backends.py (DeepSpeed, vLLM)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from tests.zygote import run_python

ROOT = Path(__file__).resolve().parents[2]
TINY = ["frames=2", "cuts=2", "pretext_count=1", "eval_samples=4", "eval_max_new_tokens=4",
        "grpo.max_new_tokens=4", "progress_bar=false"]  # fmt: skip


def run_train(
    run_dir: Path, *overrides: str, torchrun: bool = False
) -> subprocess.CompletedProcess:
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        if torchrun
        else [sys.executable]
    )
    run = subprocess.run if torchrun else run_python  # torchrun's processes start fresh
    return run(
        [*launcher, str(ROOT / "experiments" / "train_critic.py"), f"hydra.run.dir={run_dir}", *TINY, *overrides],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONHASHSEED": "0"},
    )  # fmt: skip


def read_history(run_dir: Path) -> list[dict]:
    """The run's ``history.jsonl``, read as strict JSON (a bare NaN is refused)."""

    def refuse(constant: str):
        raise ValueError(f"history.jsonl holds {constant}, which is not JSON")

    text = (run_dir / "history.jsonl").read_text()
    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]


def load_recipe(*overrides: str, config: str = "train_critic"):
    """The recipe module, imported in this process, and ``config`` composed with ``overrides``."""
    spec = importlib.util.spec_from_file_location(
        "train_critic", ROOT / "experiments" / "train_critic.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config, overrides=list(overrides))
    return module, cfg


def check_overrides(*overrides: str):
    module, cfg = load_recipe(*overrides)
    return module.check_config(cfg), module.TrainConfigError


def run_stages(trainer, stages) -> None:
    """Set a built ``Trainer`` up, run ``stages`` in order, and clean up whatever happens."""
    trainer.setup()
    try:
        for stage in stages:
            trainer.run_stage(stage)
    finally:
        trainer.cleanup()
