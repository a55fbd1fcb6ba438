"""Video frames → ``pixel_values_videos`` and ``video_grid_thw`` for Qwen2.5-VL.

transformers' Qwen video processor needs torchvision, which has no CPU build on our machines, so
this is the same computation in plain torch: resize each frame so both sides are multiples of
``patch_size * merge_size`` within a pixel budget (Qwen's ``smart_resize``), bicubic with
anti-aliasing on uint8 as torchvision does, rescale to [0, 1], normalise with the CLIP mean and
std, repeat the last frame to a multiple of ``temporal_patch_size``, and flatten into patches in
the vision tower's order. ``tests/critic/test_vision.py`` compares it with the official processor
wherever torchvision is installed.

The pixel budget (smallest and largest resized frame area) is the project's own, small one
(:data:`PROJECT_PIXELS`), unless the checkpoint's folder holds a processor config
(:func:`rollout.hf.processor_config`): a real Qwen checkpoint then reads frames at the size its own
video processor gives them. The presets and the checkpoints this project saves hold none, so they
keep the budget they were trained at.

Qwen3-VL is not supported: it takes 16-pixel patches normalised with mean/std 0.5, and each
temporal patch in its own timestamped segment of the prompt.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# (min_pixels, max_pixels) of the presets and of every checkpoint this project trains: 64² frames
# read at 56² (4 video tokens a frame pair), what a CPU-trained critic can afford.
PROJECT_PIXELS = (56 * 56, 28 * 28 * 1280)
# transformers' Qwen2VLVideoProcessor defaults (size shortest_edge / longest_edge): what a
# processor config that names no budget of its own means.
QWEN_VIDEO_PIXELS = (128 * 28 * 28, 768 * 28 * 28)


class FrameError(ValueError):
    """Frames are not a uint8 ``[T, H, W, 3]`` array the vision tower can take."""


@dataclass(frozen=True)
class VisionSpec:
    """The vision tower's input geometry (defaults: Qwen2.5-VL's patches, the project's pixel
    budget :data:`PROJECT_PIXELS`).

    Attributes:
        patch_size: pixels per patch side.
        temporal_patch_size: frames per temporal patch.
        merge_size: patches merged per side into one token.
        min_pixels: smallest resized frame area.
        max_pixels: largest resized frame area.
    """

    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    min_pixels: int = PROJECT_PIXELS[0]
    max_pixels: int = PROJECT_PIXELS[1]

    @classmethod
    def from_config(cls, vision_config, processor: Mapping[str, Any] | None = None) -> VisionSpec:
        """The geometry of a model's ``vision_config`` (a config object or its dict).

        Args:
            processor: the checkpoint's video processor settings
                (:func:`rollout.hf.processor_config`): their pixel budget as transformers reads
                it (``min_pixels`` / ``max_pixels``, else ``size``'s ``shortest_edge`` /
                ``longest_edge``, else :data:`QWEN_VIDEO_PIXELS`). ``None`` (no processor config: a preset or a
                checkpoint this project saved): the project's :data:`PROJECT_PIXELS`.
        """
        get = (
            vision_config.get if isinstance(vision_config, dict) else vision_config.__getattribute__
        )
        min_pixels, max_pixels = PROJECT_PIXELS
        if processor is not None:
            size = processor.get("size") or {}
            min_pixels = processor.get("min_pixels") or size.get("shortest_edge")
            max_pixels = processor.get("max_pixels") or size.get("longest_edge")
            min_pixels = int(min_pixels or QWEN_VIDEO_PIXELS[0])
            max_pixels = int(max_pixels or QWEN_VIDEO_PIXELS[1])
        return cls(
            patch_size=get("patch_size"),
            temporal_patch_size=get("temporal_patch_size"),
            merge_size=get("spatial_merge_size"),
            min_pixels=min_pixels,
            max_pixels=max_pixels,
        )

    @property
    def factor(self) -> int:
        """Resized sides are multiples of this."""
        return self.patch_size * self.merge_size

    def tokens(self, grid_thw: tuple[int, int, int]) -> int:
        """Video tokens the language model sees for a grid: ``t * h * w / merge_size²``."""
        t, h, w = grid_thw
        return t * h * w // (self.merge_size**2)


def smart_resize(
    height: int,
    width: int,
    factor: int = 28,
    min_pixels: int = PROJECT_PIXELS[0],
    max_pixels: int = PROJECT_PIXELS[1],
) -> tuple[int, int]:
    """Qwen's resize rule: sides multiples of ``factor``, area in [min, max], aspect kept.

    Example: 128 x 128 with factor 28 → round(128 / 28) * 28 = 5 * 28 = 140 per side.
    """
    if min(height, width) < 1:
        raise FrameError(f"a frame of {height}x{width} pixels has no pixels to read")
    if max(height, width) / min(height, width) > 200:
        raise FrameError(
            f"frame aspect ratio {max(height, width) / min(height, width):.0f} exceeds 200"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def resize_frames(frames: np.ndarray, spec: VisionSpec | None = None):
    """Resize a video to the sides the tower takes (:func:`smart_resize`), uint8 to uint8.

    Args:
        frames: uint8 ``[T, H, W, 3]``.

    Returns:
        uint8 torch tensor ``[T, 3, h, w]`` (the input itself, permuted, if already that size).

    Raises:
        FrameError: the frames are not uint8 ``[T, H, W, 3]`` with T >= 1.
    """
    import torch

    spec = spec or VisionSpec()
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise FrameError(
            f"frames must be uint8 [T, H, W, 3] with T >= 1, got {frames.dtype} {frames.shape}"
        )
    _, height, width, _ = frames.shape
    new_h, new_w = smart_resize(height, width, spec.factor, spec.min_pixels, spec.max_pixels)
    # A reversed view of one frame (frames[::-1][:1]) counts as contiguous to numpy, whatever its
    # stride on the length-1 axis, and torch refuses negative strides: copy those.
    if not frames.flags.c_contiguous or any(s < 0 for s in frames.strides):
        frames = np.array(frames, order="C", copy=True)
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)  # [T, 3, H, W]
    if (new_h, new_w) != (height, width):
        resized = torch.nn.functional.interpolate(
            video.float(), size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False
        )
        video = resized.round().clamp(0, 255).to(torch.uint8)  # torchvision resizes uint8 to uint8
    return video


def frames_to_patches(frames: np.ndarray, spec: VisionSpec | None = None):
    """Turn a video into the vision tower's flat patches.

    Args:
        frames: uint8 ``[T, H, W, 3]``.
        spec: the tower's geometry.

    Returns:
        ``(pixel_values_videos, video_grid_thw)``: float32 ``[t*h*w, 3*tp*p*p]`` and int64
        ``[1, 3]`` tensors, ``t = ceil(T / tp)``, ``h, w`` = resized sides / ``patch_size``.

    Raises:
        FrameError: the frames are not uint8 ``[T, H, W, 3]`` with T >= 1.
    """
    import torch

    spec = spec or VisionSpec()
    video = resize_frames(frames, spec)
    num_frames, _, new_h, new_w = video.shape
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    video = (video.float() / 255.0 - mean) / std
    tp, p, m = spec.temporal_patch_size, spec.patch_size, spec.merge_size
    if pad := -num_frames % tp:
        video = torch.cat([video, video[-1:].expand(pad, -1, -1, -1)])
    grid_t, grid_h, grid_w = video.shape[0] // tp, new_h // p, new_w // p
    patches = video.view(grid_t, tp, 3, grid_h // m, m, p, grid_w // m, m, p)
    # → [t, h/m, w/m, m, m, C, tp, p, p]: merged 2x2 groups stay adjacent, as the tower expects.
    patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    flat = patches.reshape(grid_t * grid_h * grid_w, 3 * tp * p * p).contiguous()
    return flat, torch.tensor([[grid_t, grid_h, grid_w]], dtype=torch.int64)
