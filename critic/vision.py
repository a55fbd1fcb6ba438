"""Video frames → ``pixel_values_videos``, ``video_grid_thw`` and prompt text for Qwen-VL towers.

transformers' Qwen video processors need torchvision, which has no CPU build on our machines, so
this is the same computation in plain torch: resize each frame so both sides are multiples of
``patch_size * merge_size`` within a pixel budget (Qwen's ``smart_resize``), bicubic with
anti-aliasing on uint8 as torchvision does, rescale to [0, 1], normalise, repeat the last frame
to a multiple of ``temporal_patch_size``, and flatten into patches in the vision tower's order.
``tests/critic/test_vision.py`` compares it with the official processor wherever torchvision is
installed.

The two Qwen-VL generations differ in four places, all held by :class:`VisionSpec`:

============================  =======================  ==========================================
                              Qwen2.5-VL               Qwen3-VL (``segmented``)
============================  =======================  ==========================================
patch side                    14 px (28 px per token)  16 px (32 px per token)
mean / std                    CLIP's                   0.5 / 0.5
pixel budget                  per frame                over the whole video (frames x area)
prompt text of one video      one vision segment       one ``<t seconds>`` segment per temporal
                                                       patch (:meth:`VisionSpec.video_text`)
============================  =======================  ==========================================

Qwen3-VL's timestamps are the frames' times at the processor's ``fps`` (2 by default), from 0: a
critic's clip is read as a video sampled at that rate (its frames carry no times of their own).

The pixel budget (smallest and largest resized frame area) is the project's own, small one
(:data:`PROJECT_PIXELS`), unless the checkpoint's folder holds a processor config
(:func:`rollout.checkpoint.processor_config`): a real Qwen checkpoint then reads frames at the size
its own video processor gives them. The presets and the checkpoints this project saves hold none, so
they keep the budget they were trained at.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from critic.frames import MAX_ASPECT, FrameError
from rollout.checks import is_number

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Qwen3-VL's (transformers' IMAGENET_STANDARD_MEAN / _STD)
HALF = (0.5, 0.5, 0.5)
# Vision towers whose videos are read as one timestamped segment per temporal patch, with the
# pixel budget over the whole video: Qwen3-VL's (dense and MoE; an old checkpoint's vision config
# can still say "qwen3_vl").
SEGMENTED_TOWERS = frozenset({"qwen3_vl_vision", "qwen3_vl_moe_vision", "qwen3_vl", "qwen3_vl_moe"})

# (min_pixels, max_pixels) of the presets and of every checkpoint this project trains: 64² frames
# read at 56² (4 video tokens a frame pair), what a CPU-trained critic can afford.
PROJECT_PIXELS = (56 * 56, 28 * 28 * 1280)
# transformers' Qwen2VLVideoProcessor defaults (size shortest_edge / longest_edge): what a
# processor config that names no budget of its own means.
QWEN_VIDEO_PIXELS = (128 * 28 * 28, 768 * 28 * 28)
# Qwen3VLVideoProcessor's (over frames x area), and the frame rate its timestamps count at.
QWEN3_VIDEO_PIXELS = (128 * 32 * 32, 768 * 32 * 32)
QWEN3_FPS = 2.0
# the processors' default max_video_tokens: Qwen3-VL's merged tokens a frame, Qwen2.5-VL's context
QWEN3_FRAME_TOKENS = 768
QWEN_CONTEXT_TOKENS = 128000


class ProcessorConfigError(ValueError):
    """A checkpoint's processor config holds a setting the critic cannot read frames with."""


@dataclass(frozen=True)
class VisionSpec:
    """The vision tower's input geometry (defaults: Qwen2.5-VL's patches, the project's pixel
    budget :data:`PROJECT_PIXELS`).

    Attributes:
        patch_size: pixels per patch side.
        temporal_patch_size: frames per temporal patch.
        merge_size: patches merged per side into one token.
        min_pixels: smallest resized area: of a frame, or of the whole video (frames x area)
            where ``segmented``.
        max_pixels: largest resized area, counted the same way.
        mean: per-channel mean the rescaled pixels are normalised with.
        std: per-channel standard deviation, the same.
        segmented: Qwen3-VL's video format: the budget counts every frame, and each temporal
            patch is its own ``<t seconds>`` segment of the prompt (:meth:`video_text`).
        fps: the frame rate a segmented video's timestamps count at.
        cap_pixels_per_frame: the video processors' per-frame cap, where a processor config asks
            for it (transformers' ``cap_pixels_per_frame``; off where unset, as transformers
            reads it): Qwen3-VL's caps each frame at ``max_video_tokens`` merged tokens and an
            even share of ``max_pixels``; Qwen2.5-VL's at an even share of 90 % of
            ``max_video_tokens`` (the context length) a temporal patch; both at least 1.05 x
            ``min_pixels``.
        max_video_tokens: that cap's size; ``None``: the processor's default (Qwen3-VL 768 a
            frame, Qwen2.5-VL a context of 128,000).
    """

    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    min_pixels: int = PROJECT_PIXELS[0]
    max_pixels: int = PROJECT_PIXELS[1]
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    segmented: bool = False
    fps: float = QWEN3_FPS
    cap_pixels_per_frame: bool = False
    max_video_tokens: int | None = None

    @classmethod
    def from_config(cls, vision_config, processor: Mapping[str, Any] | None = None) -> VisionSpec:
        """The geometry of a model's ``vision_config`` (a config object or its dict).

        Args:
            processor: the checkpoint's video processor settings
                (:func:`rollout.checkpoint.processor_config`): their pixel budget as
                transformers reads it (Qwen2.5-VL: ``min_pixels`` / ``max_pixels``, else ``size``'s
                ``shortest_edge`` / ``longest_edge``, else :data:`QWEN_VIDEO_PIXELS`; Qwen3-VL:
                ``size``'s only, whose processor ignores the top-level keys, else
                :data:`QWEN3_VIDEO_PIXELS`), mean, std and frame rate. ``None`` (no processor
                config: a preset or a checkpoint this project saved): the project's
                :data:`PROJECT_PIXELS` and the tower's own mean and std.

        Raises:
            ProcessorConfigError: a processor setting is not one frames can be read with (a
                budget that is not a positive integer or whose minimum exceeds its maximum, a
                mean or std that is not 3 finite numbers, a std or frame rate <= 0, ...).
        """
        get = (
            vision_config.get if isinstance(vision_config, dict) else vision_config.__getattribute__
        )
        segmented = str(_maybe(get, "model_type")) in SEGMENTED_TOWERS
        min_pixels, max_pixels = PROJECT_PIXELS
        mean, std = (HALF, HALF) if segmented else (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
        extra: dict[str, Any] = {}
        if processor is not None:
            if not isinstance(processor, Mapping):
                raise ProcessorConfigError(
                    f"the settings are {type(processor).__name__} {processor!r:.60}, not a mapping"
                )
            size = processor.get("size") or {}
            if not isinstance(size, Mapping):
                raise ProcessorConfigError(f"size={size!r} must be a mapping of edges to pixels")
            if segmented:  # Qwen3VLVideoProcessor reads its budget from size alone
                min_pixels = _pixels("size.shortest_edge", size, QWEN3_VIDEO_PIXELS[0])
                max_pixels = _pixels("size.longest_edge", size, QWEN3_VIDEO_PIXELS[1])
            else:  # Qwen2VLVideoProcessor maps min_pixels / max_pixels into size
                min_pixels = _pixels("min_pixels", processor, None)
                max_pixels = _pixels("max_pixels", processor, None)
                min_pixels = min_pixels or _pixels("size.shortest_edge", size, QWEN_VIDEO_PIXELS[0])
                max_pixels = max_pixels or _pixels("size.longest_edge", size, QWEN_VIDEO_PIXELS[1])
            if min_pixels > max_pixels:
                raise ProcessorConfigError(
                    f"the pixel budget's minimum {min_pixels} exceeds its maximum {max_pixels}"
                )
            mean = _channels("image_mean", processor.get("image_mean"), mean, positive=False)
            std = _channels("image_std", processor.get("image_std"), std, positive=True)
            if segmented:
                fps = processor.get("fps")
                if fps is None:
                    fps = QWEN3_FPS
                if not is_number(fps) or fps <= 0:
                    raise ProcessorConfigError(
                        f"fps={fps!r} must be a number > 0 (frames a second)"
                    )
                extra["fps"] = float(fps)
            cap = processor.get("cap_pixels_per_frame")
            if cap is not None and not isinstance(cap, bool):
                raise ProcessorConfigError(
                    f"cap_pixels_per_frame={cap!r} must be true, false or null"
                )
            extra["cap_pixels_per_frame"] = bool(cap)
            extra["max_video_tokens"] = _pixels("max_video_tokens", processor, None)
        return cls(
            patch_size=get("patch_size"),
            temporal_patch_size=get("temporal_patch_size"),
            merge_size=get("spatial_merge_size"),
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            mean=mean,
            std=std,
            segmented=segmented,
            **extra,
        )

    @property
    def factor(self) -> int:
        """Resized sides are multiples of this."""
        return self.patch_size * self.merge_size

    def tokens(self, grid_thw: tuple[int, int, int]) -> int:
        """Video tokens the language model sees for a grid: ``t * h * w / merge_size²``."""
        t, h, w = grid_thw
        return t * h * w // (self.merge_size**2)

    def resized(self, num_frames: int, height: int, width: int) -> tuple[int, int]:
        """The sides a video of ``num_frames`` frames of ``height`` x ``width`` is resized to:
        :func:`smart_resize` per frame, or :func:`smart_resize_video` where ``segmented``."""
        max_pixels = self.max_pixels
        if not self.segmented:
            if self.cap_pixels_per_frame:  # Qwen2VLVideoProcessor.resize's cap, as it computes it
                context = self.max_video_tokens or QWEN_CONTEXT_TOKENS
                share = int(context * self.factor**2 * 0.9) * self.temporal_patch_size // num_frames
                max_pixels = max(min(max_pixels, share), int(self.min_pixels * 1.05))
            return smart_resize(height, width, self.factor, self.min_pixels, max_pixels)
        if self.cap_pixels_per_frame:  # Qwen3VLVideoProcessor.resize's cap, as it computes it
            frames = max(num_frames, self.temporal_patch_size)  # what smart_resize_video counts
            tokens = self.max_video_tokens or QWEN3_FRAME_TOKENS
            per_frame = max(
                min(tokens * self.factor**2, self.max_pixels // frames),
                int(self.min_pixels * 1.05),
            )
            max_pixels = per_frame * frames
        return smart_resize_video(
            num_frames,
            height,
            width,
            self.temporal_patch_size,
            self.factor,
            self.min_pixels,
            max_pixels,
        )

    def timestamps(self, num_frames: int) -> list[float]:
        """Seconds of each temporal patch of a segmented video: the mean time of its frames at
        :attr:`fps`, the last frame repeated to fill the last patch (Qwen3VLProcessor's rule).

        Example: 3 frames at 2 fps → times 0, 0.5, 1.0 (+ 1.0 repeated) → ``[0.25, 1.0]``.
        """
        tp = self.temporal_patch_size
        times = [i / self.fps for i in range(num_frames)]
        times += times[-1:] * (-num_frames % tp)
        return [(times[i] + times[i + tp - 1]) / 2 for i in range(0, len(times), tp)]

    def video_text(self, grid_thw: tuple[int, int, int], num_frames: int) -> str:
        """The prompt text of one video: its ``<|video_pad|>`` tokens in vision segments.

        Qwen2.5-VL: one segment. Qwen3-VL (``segmented``): one ``<t seconds>`` segment per
        temporal patch, as its processor writes them (``<0.2 seconds>`` with one decimal).
        """
        t, h, w = grid_thw
        if not self.segmented:
            return "<|vision_start|>" + "<|video_pad|>" * self.tokens(grid_thw) + "<|vision_end|>"
        per_patch = "<|vision_start|>" + "<|video_pad|>" * self.tokens((1, h, w)) + "<|vision_end|>"
        stamps = self.timestamps(num_frames)
        if len(stamps) != t:
            raise FrameError(f"grid {grid_thw} has {t} temporal patches but {num_frames} frames")
        return "".join(f"<{s:.1f} seconds>" + per_patch for s in stamps)


def _maybe(get, name: str) -> Any:
    try:
        return get(name)
    except AttributeError:
        return None


def _pixels(name: str, settings: Mapping[str, Any], default: int | None) -> int | None:
    """A processor config's positive whole-number setting (``name``'s last dotted part; 4096.0
    is 4096), or ``default`` where it is absent, null or 0 (unset, as transformers reads it)."""
    value = settings.get(name.rpartition(".")[2])
    if value is None or (is_number(value) and value == 0):
        return default
    if not is_number(value) or value < 1 or value != int(value):
        raise ProcessorConfigError(f"{name}={value!r} must be a whole number >= 1")
    return int(value)


def _channels(
    name: str, value: Any, default: tuple[float, float, float], positive: bool
) -> tuple[float, float, float]:
    """A processor config's per-channel mean or std (one number stands for all three)."""
    if value is None:
        return default
    values = [value] * 3 if is_number(value) else value
    if (
        not isinstance(values, list | tuple)
        or len(values) != 3
        or not all(is_number(v) and (v > 0 or not positive) for v in values)
    ):
        kind = "numbers > 0" if positive else "finite numbers"
        raise ProcessorConfigError(f"{name}={value!r} must be one or three {kind} (per channel)")
    return tuple(float(v) for v in values)  # type: ignore[return-value]


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
    if max(height, width) / min(height, width) > MAX_ASPECT:
        raise FrameError(
            f"frame aspect ratio {max(height, width) / min(height, width):.0f} exceeds {MAX_ASPECT}"
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


def smart_resize_video(
    num_frames: int,
    height: int,
    width: int,
    temporal_factor: int = 2,
    factor: int = 32,
    min_pixels: int = QWEN3_VIDEO_PIXELS[0],
    max_pixels: int = QWEN3_VIDEO_PIXELS[1],
) -> tuple[int, int]:
    """Qwen3-VL's resize rule: as :func:`smart_resize`, with the area budget counted over the
    video's frames (``num_frames`` x area), and sides under ``factor`` scaled up to it first.

    A video shorter than ``temporal_factor`` frames (which transformers refuses) is counted as the
    ``temporal_factor`` frames its last frame is repeated to.

    Example: 8 frames of 256 x 256 within 128 * 32² .. 768 * 32²: 8 * 256² = 524288 is within,
    so 256 x 256 (64 tokens a temporal patch).
    """
    if min(height, width) < 1:
        raise FrameError(f"a frame of {height}x{width} pixels has no pixels to read")
    if max(height, width) / min(height, width) > MAX_ASPECT:
        raise FrameError(
            f"frame aspect ratio {max(height, width) / min(height, width):.0f} exceeds {MAX_ASPECT}"
        )
    num_frames = max(num_frames, temporal_factor)
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    t_bar = round(num_frames / temporal_factor) * temporal_factor
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt((num_frames * height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (num_frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def resize_frames(frames: np.ndarray, spec: VisionSpec | None = None):
    """Resize a video to the sides the tower takes (:meth:`VisionSpec.resized`), uint8 to uint8.

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
    num_frames, height, width, _ = frames.shape
    new_h, new_w = spec.resized(num_frames, height, width)
    # A reversed view of one frame (frames[::-1][:1]) counts as contiguous to numpy, whatever its
    # stride on the length-1 axis, and torch refuses negative strides: copy those; and read-only
    # ones (a memory map, a decoded video's), which torch.from_numpy warns about
    if (
        not frames.flags.c_contiguous
        or not frames.flags.writeable
        or any(s < 0 for s in frames.strides)
    ):
        frames = np.array(frames, order="C", copy=True)
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)  # [T, 3, H, W]
    if (new_h, new_w) != (height, width):
        # the uint8 tensor itself, as torchvision (and so transformers' video processors) resizes
        # it: resized in float and rounded, 13 % of a Pusher frame's pixels came out up to 7
        # levels apart from what a real checkpoint was trained on
        video = torch.nn.functional.interpolate(
            video.contiguous(),
            size=(new_h, new_w),
            mode="bicubic",
            antialias=True,
            align_corners=False,
        )
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
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
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
