"""Saved stable-baselines3 policies, for recording their rollouts (:mod:`envs.synth`): their
policy network loaded without the algorithm around it, a digest that tells two ``policy.zip``
files apart in episode ids, and a check that a policy fits a task's spaces.

Split from ``envs/synth.py`` (which plans and records episodes) along the line between reading a
saved policy and recording with it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from envs.errors import InvalidOptionError
from rollout.imports import require_package


def _stamp(path: str) -> tuple[str, int, int]:
    """``path`` with its modification time and size: a cache key that a rewritten file misses."""
    file = Path(path)
    if not (file.is_file() and os.access(file, os.R_OK)):
        raise InvalidOptionError(
            f"policy={path!r} cannot be read (no such readable file); pass the policy.zip a "
            "stable-baselines3 run saved (experiments/zero_shot_rl.py writes "
            "<run>/<cond>_seed<s>/policy.zip)"
        )
    info = file.stat()
    return path, info.st_mtime_ns, info.st_size


def policy_digest(path: str) -> str:
    """The first 8 hex digits of the SHA-1 of a policy file: episode ids of two runs' policies
    differ even when both files are called ``policy.zip``, and a file saved again over the old one
    gets new ids (its episodes are recorded, not skipped as done)."""
    return _digest(*_stamp(path))


@functools.lru_cache(maxsize=64)
def _digest(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:8]


def load_policy(path: str) -> Any:
    """The policy network of the stable-baselines3 model saved at ``path`` (on CPU, in eval mode),
    whatever the algorithm (SAC, TD3, PPO, A2C, DQN, sb3_contrib's): rebuilt from the file's own
    record of its policy class and options, as SB3's ``load`` does, without the algorithm around it.
    Observation normalisation kept outside the model (``VecNormalize``) is not applied.

    Raises:
        InvalidOptionError: the file is missing or not a stable-baselines3 save.
    """
    return _load_policy(*_stamp(path))


@functools.lru_cache(maxsize=8)
def _load_policy(path: str, mtime_ns: int, size: int) -> Any:
    save_util = require_package("stable_baselines3.common.save_util", "rl", "saved policies")
    load_from_zip_file = save_util.load_from_zip_file

    try:
        # Only acting is needed: schedules are not rebuilt (they may not unpickle across versions).
        data, params, _ = load_from_zip_file(
            path, device="cpu", custom_objects={"learning_rate": 0.0, "lr_schedule": lambda _: 0.0}
        )
        policy = data["policy_class"](
            data["observation_space"], data["action_space"], lambda _: 0.0,
            **data.get("policy_kwargs", {}),
        )  # fmt: skip
        policy.load_state_dict(params["policy"])
        policy.viscritic_task = data.get("viscritic_task")  # zero_shot_rl.py records it
    except (zipfile.BadZipFile, KeyError, TypeError, ValueError, RuntimeError,
            pickle.UnpicklingError, EOFError) as exc:  # fmt: skip  # the last two: a corrupt or
        # truncated member (policy.pth) of a zip that is otherwise a model save
        raise InvalidOptionError(
            f"policy={path!r} is not a stable-baselines3 model save ({type(exc).__name__}: {exc}); "
            "pass the zip of model.save(...)"
        ) from exc
    policy.set_training_mode(False)
    return policy


def check_policy_spaces(model: Any, task: str, env: Any) -> None:
    """A typed error when the policy was trained on another task than ``task``: the task its
    file records (``zero_shot_rl.py`` saves it), or spaces of other shapes, or other action
    bounds (a policy's actions are squashed into the bounds it was trained with)."""
    trained_on = getattr(model, "viscritic_task", None)
    if trained_on is not None and trained_on != task:
        raise InvalidOptionError(
            f"the policy was trained on {trained_on}, not {task}; pass a policy trained on {task}"
        )
    for name in ("observation_space", "action_space"):
        mine, theirs = getattr(env, name), getattr(model, name)
        if getattr(mine, "shape", None) != getattr(theirs, "shape", None):
            raise InvalidOptionError(
                f"the policy's {name} has shape {theirs.shape}, {task}'s has {mine.shape}: "
                f"was it trained on another task? Pass a policy trained on {task}"
            )
    mine, theirs = env.action_space, model.action_space
    bounded = hasattr(mine, "low") and hasattr(theirs, "low")
    if bounded and not (np.allclose(mine.low, theirs.low) and np.allclose(mine.high, theirs.high)):
        raise InvalidOptionError(
            f"the policy's actions lie in [{np.min(theirs.low):g}, {np.max(theirs.high):g}], "
            f"{task}'s in [{np.min(mine.low):g}, {np.max(mine.high):g}]: was it trained on "
            f"another task? Pass a policy trained on {task}"
        )
