"""The frames a critic query carries, checked before any model sees them.

A query holds a clip (uint8 ``[T, H, W, 3]``) and its anchor frames (uint8 ``[H, W, 3]``).
:func:`checked_frames` turns what a user passed into that array, or refuses it with a
:class:`FrameError` that names the query, the field, what it holds and the conversion that fixes
it (a float image, a channels-first tensor, an RGBA render...). What the vision tower then does
with the array (resize, normalise, patch) is :mod:`critic.vision`'s.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class FrameError(ValueError):
    """Frames are not a uint8 ``[T, H, W, 3]`` array the vision tower can take."""


MAX_ASPECT = 200  # the longest side over the shortest that Qwen's resize rule takes


def checked_frames(value: Any, name: str, index: int) -> np.ndarray:
    """A query's ``frames`` (uint8 ``[T, H, W, 3]``) or anchor frame (``initial_frame`` /
    ``current_frame``: uint8 ``[H, W, 3]``) as an array, or a :class:`FrameError` that names the
    field, the query's index in the batch, what it holds and the fix."""
    video = name == "frames"
    where = f"query {index}'s {name}"
    if video and isinstance(value, list | tuple):
        sizes = list(dict.fromkeys(np.shape(frame) for frame in value))
        if len(sizes) > 1:
            raise FrameError(
                f"{where} hold frames of different sizes {sizes}; resize them to one size "
                "(e.g. each to the first frame's) before building the query"
            )
    try:
        array = np.asarray(value)
    except (RuntimeError, TypeError) as exc:  # a tensor that requires grad, or on a GPU
        raise FrameError(
            f"{where} cannot be read as an array ({exc}); pass a uint8 numpy array, e.g. "
            "x.detach().cpu().numpy() for a torch tensor"
        ) from None
    layout = "[T, H, W, 3] (a video)" if video else "[H, W, 3] (one frame)"
    ndim = 4 if video else 3
    if array.dtype == np.uint8 and array.ndim == ndim and array.shape[-1] == 3:
        height, width = array.shape[-3:-1]
        # what the resize rule refuses, said here: before any model call, naming the query
        if min(height, width) < 1:
            raise FrameError(
                f"{where} {'are' if video else 'is'} {height}x{width} pixels, with nothing "
                "to read; render them at a size of 1x1 or more (e.g. 64x64)"
            )
        if max(height, width) / min(height, width) > MAX_ASPECT:
            raise FrameError(
                f"{where} {'are' if video else 'is'} {height}x{width} pixels, an aspect "
                f"ratio over {MAX_ASPECT} (the vision tower's limit); crop or pad them "
                "toward a square"
            )
        return array
    if np.issubdtype(array.dtype, np.floating):
        # floats in [0, 1] (a normalised image) or [0, 255] (an .astype(np.float32) of uint8):
        # scaling the second by 255 wraps (200.0 became 56)
        finite = array[np.isfinite(array)] if array.size else array
        top = float(finite.max()) if finite.size else 0.0
        fix = (
            "from floats in [0, 255]: x.round().clip(0, 255).astype(np.uint8)"
            if top > 1.0
            else "from floats in [0, 1]: (x * 255).round().astype(np.uint8)"
        )
        if finite.size < array.size:
            fix += ", after replacing their NaN or infinite values"
    elif array.dtype == np.uint16:
        fix = "from 16-bit frames: (x >> 8).astype(np.uint8)"
    elif (
        np.issubdtype(array.dtype, np.integer)
        and array.ndim == ndim
        and array.shape[-1] == 3
        and (not array.size or (array.min() >= 0 and array.max() <= 255))
    ):  # a list of numbers (frame.tolist()), an int64 array
        fix = "from integers in [0, 255]: x.astype(np.uint8)"
    elif array.ndim == ndim and array.shape[-1] == 4:
        fix = "from RGBA frames: x[..., :3]"
    elif array.ndim == ndim and array.shape[-3] == 3:
        fix = "from channels-first frames: np.moveaxis(x, -3, -1)"
    elif array.ndim == ndim and array.shape[-1] == 1:
        fix = "from grey frames: np.repeat(x, 3, axis=-1)"
    elif video and array.ndim == 3 and array.shape[-1] == 3:
        fix = "from one frame: x[None]"
    elif array.ndim == ndim - 1:
        fix = "from grey frames: np.repeat(x[..., None], 3, axis=-1)"
    else:
        fix = f"e.g. a uint8 array of shape {(8, 64, 64, 3) if video else (64, 64, 3)}"
    raise FrameError(
        f"{where} {'are' if video else 'is'} {array.dtype} of shape {array.shape}; "
        f"{'they' if video else 'it'} must be uint8 RGB {layout}: {fix}"
    )


def no_frames(frames: Any) -> bool:
    """Whether a query holds no frames: ``None`` or empty. A value with no length (a 0-d array,
    a number) is left to :func:`checked_frames`, which names it (``len()`` of it
    was a raw TypeError)."""
    if frames is None:
        return True
    try:
        return len(frames) == 0
    except TypeError:
        return False
