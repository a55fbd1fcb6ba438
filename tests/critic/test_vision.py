"""Frames → Qwen vision patches: hand-worked layout, resize rule, and the official processor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from critic.vision import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    FrameError,
    VisionSpec,
    frames_to_patches,
    smart_resize,
)


def _block_frame(size: int = 56) -> np.ndarray:
    # Each 14 x 14 block holds the value 10 * block_row + block_col (on all channels).
    rows, cols = np.indices((size, size)) // 14
    return np.repeat((10 * rows + cols)[..., None], 3, axis=2).astype(np.uint8)


def _decode(value: float) -> int:
    # Invert channel 0's normalisation: v = (x / 255 - mean) / std.
    return round((value * OPENAI_CLIP_STD[0] + OPENAI_CLIP_MEAN[0]) * 255)


def test_patch_order_follows_the_merge_groups():
    # 56 x 56 is exactly the minimum area (56² = 3136) and a multiple of 28: no resize.
    # One frame is repeated to 2 (temporal patch 2): grid (1, 4, 4), 16 patches of 3*2*14*14 = 1176.
    pixels, grid = frames_to_patches(_block_frame()[None])
    assert grid.tolist() == [[1, 4, 4]] and pixels.shape == (16, 1176)
    assert pixels.dtype == torch.float32
    blocks = [_decode(pixels[k, 0].item()) for k in range(16)]
    # 2 x 2 merge groups stay together, groups in row-major order:
    assert blocks == [0, 1, 10, 11, 2, 3, 12, 13, 20, 21, 30, 31, 22, 23, 32, 33]
    # Within a patch: [channel, time, 14, 14]; the padded second frame repeats the first.
    assert torch.equal(pixels[:, :196], pixels[:, 196:392])
    assert VisionSpec().tokens((1, 4, 4)) == 4


def test_frames_pad_to_the_temporal_patch():
    frames = np.stack([_block_frame()] * 3)
    _, grid = frames_to_patches(frames)
    assert grid.tolist() == [[2, 4, 4]]  # ceil(3 / 2) = 2


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((128, 128), (140, 140)),  # round(128 / 28) = 5 → 140
        ((64, 64), (56, 56)),  # round(64 / 28) = 2 → 56
        ((28, 28), (56, 56)),  # 784 px < 3136: scaled by sqrt(3136 / 784) = 2 → 56
        ((96, 128), (84, 140)),  # round(3.43) = 3 → 84; round(4.57) = 5 → 140
    ],
)
def test_smart_resize_by_hand(size, expected):
    assert smart_resize(*size) == expected


def test_resized_frames_keep_their_content():
    frame = np.zeros((128, 128, 3), np.uint8)
    frame[:, 64:] = 255  # left black, right white
    pixels, grid = frames_to_patches(frame[None])
    assert grid.tolist() == [[1, 10, 10]]
    assert _decode(pixels[0, 0].item()) == 0  # top-left patch: black
    assert abs(_decode(pixels[-1, 196 * 2 - 1].item()) - 255) <= 1  # bottom-right: white


@pytest.mark.parametrize(
    "frames",
    [
        np.zeros((2, 8, 8, 3), np.float32),
        np.zeros((8, 8, 3), np.uint8),
        np.zeros((0, 8, 8, 3), np.uint8),
    ],
)
def test_bad_frames(frames):
    with pytest.raises(FrameError, match=r"frames must be uint8 \[T, H, W, 3\] with T >= 1, got"):
        frames_to_patches(frames)


def test_matches_the_official_processor_where_torchvision_exists():
    pytest.importorskip(
        "torchvision", reason="no torchvision here (no CPU build); runs on GPU nodes"
    )
    from transformers import Qwen2VLVideoProcessor

    rng = np.random.default_rng(0)
    for shape in [(4, 56, 56, 3), (3, 128, 128, 3), (2, 96, 128, 3)]:
        frames = rng.integers(0, 256, shape, dtype=np.uint8)
        official = Qwen2VLVideoProcessor(cap_pixels_per_frame=False)(
            videos=[torch.from_numpy(frames).permute(0, 3, 1, 2)], return_tensors="pt"
        )
        ours, grid = frames_to_patches(frames)
        assert torch.equal(grid, official["video_grid_thw"])
        difference = (ours - official["pixel_values_videos"]).abs().max().item()
        # uint8 rounding after resize can differ by one level: 1 / 255 / min(std) ≈ 0.0150
        assert difference <= 0.016, (shape, difference)


def test_reversed_and_strided_views_are_accepted():
    """A reversed video's first frame (negative stride on a length-1 axis) once crashed torch."""
    video = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 3), dtype=np.uint8)
    patches, _ = frames_to_patches(video[::-1][:1], VisionSpec())
    expected, _ = frames_to_patches(video[3:4].copy(), VisionSpec())
    np.testing.assert_array_equal(patches.numpy(), expected.numpy())
    strided, _ = frames_to_patches(video[:, ::-1], VisionSpec())  # a mirrored view
    mirrored, _ = frames_to_patches(np.ascontiguousarray(video[:, ::-1]), VisionSpec())
    np.testing.assert_array_equal(strided.numpy(), mirrored.numpy())


def test_a_frame_without_pixels_is_a_frame_error():
    from critic.vision import FrameError, smart_resize

    with pytest.raises(FrameError, match="a frame of 0x56 pixels has no pixels to read"):
        smart_resize(0, 56)
