"""Pretext transforms of a video (ViSS-R1 / Pretext-GRPO): each has a label the critic must name.

All take uint8 ``[T, H, W, 3]`` frames and return a new array. ``speed_2x`` keeps every second
frame, so it returns ``ceil(T / 2)`` frames: a sample builder gives it a window twice as long to
keep clip lengths equal. ``shuffle`` permutes groups of consecutive frames and never returns the
original order.

Example:
    >>> frames = np.zeros((8, 4, 6, 3), np.uint8)
    >>> apply_transform("rotate_90", frames, np.random.default_rng(0)).shape
    (8, 6, 4, 3)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

TRANSFORMS = (
    "none",
    "rotate_90",
    "rotate_180",
    "rotate_270",
    "hflip",
    "reverse",
    "shuffle",
    "speed_2x",
)
ROTATIONS = ("none", "rotate_90", "rotate_180", "rotate_270")
TEMPORAL = ("reverse", "shuffle", "speed_2x")  # change the frames' order or rate: need 2 or more
QUARTER_TURNS = ("rotate_90", "rotate_270")  # swap height and width


def _shuffle(frames: np.ndarray, rng: np.random.Generator, groups: int = 4) -> np.ndarray:
    if len(frames) < 3:
        raise ValueError(
            f"shuffle needs at least 3 frames, got {len(frames)}: 2 frames have no order but "
            "the clip's and its reverse"
        )
    chunks = np.array_split(np.arange(len(frames)), min(groups, len(frames)))
    order = np.arange(len(chunks))
    # one frame a chunk (clips of up to `groups` frames): the chunks reversed would be the
    # `reverse` transform's clip, taught under another label
    ruled_out = [order.copy()] + ([order[::-1].copy()] if len(chunks) == len(frames) else [])
    while any(np.array_equal(order, r) for r in ruled_out):
        order = rng.permutation(len(chunks))
    return frames[np.concatenate([chunks[i] for i in order])]


_APPLY: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "none": lambda f, rng: f.copy(),
    # np.rot90 over (H, W) turns each frame counter-clockwise by 90° per k.
    "rotate_90": lambda f, rng: np.ascontiguousarray(np.rot90(f, 1, axes=(1, 2))),
    "rotate_180": lambda f, rng: np.ascontiguousarray(np.rot90(f, 2, axes=(1, 2))),
    "rotate_270": lambda f, rng: np.ascontiguousarray(np.rot90(f, 3, axes=(1, 2))),
    "hflip": lambda f, rng: np.ascontiguousarray(f[:, :, ::-1]),
    "reverse": lambda f, rng: np.ascontiguousarray(f[::-1]),
    "shuffle": _shuffle,
    "speed_2x": lambda f, rng: np.ascontiguousarray(f[::2]),
}


def window_length(transform: str, frames: int) -> int:
    """How many source frames ``transform`` needs to output ``frames`` frames."""
    return 2 * frames if transform == "speed_2x" else frames


def apply_transform(name: str, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``frames`` with transform ``name`` applied.

    Raises:
        ValueError: an unknown transform (the message lists them), or too few frames.
    """
    if name not in _APPLY:
        raise ValueError(
            f"transform={name!r} is not a pretext transform; pick one of {list(TRANSFORMS)}"
        )
    frames = np.asarray(frames)
    if frames.ndim != 4 or len(frames) < 1:
        raise ValueError(f"frames must be [T, H, W, 3] with T >= 1, got {frames.shape}")
    return _APPLY[name](frames, rng)
