"""Frames → Qwen vision patches: hand-worked layout, resize rule, and the official processor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from critic.vision import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    PROJECT_PIXELS,
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


def test_one_frame_matches_the_official_image_processor_without_torchvision():
    """The normalisation and patch layout against transformers' own (PIL) Qwen2-VL image
    processor, which needs no torchvision, on frames it does not resize (its PIL resize differs
    from the video processor's by up to 0.3); the tests above decode with this module's constants
    and cannot see a wrong mean or std."""
    from transformers import Qwen2VLImageProcessorPil
    from transformers.image_utils import OPENAI_CLIP_MEAN as MEAN
    from transformers.image_utils import OPENAI_CLIP_STD as STD

    assert tuple(OPENAI_CLIP_MEAN) == tuple(MEAN) and tuple(OPENAI_CLIP_STD) == tuple(STD)
    rng = np.random.default_rng(0)
    for shape in [(56, 56, 3), (112, 84, 3)]:
        frame = rng.integers(0, 256, shape, dtype=np.uint8)
        official = Qwen2VLImageProcessorPil()(images=[frame], return_tensors="pt")
        ours, grid = frames_to_patches(frame[None])
        assert torch.equal(grid, official["image_grid_thw"])
        assert torch.equal(ours, official["pixel_values"])
    # where it resizes, the grid (smart_resize) is still the same
    frame = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    official = Qwen2VLImageProcessorPil()(images=[frame], return_tensors="pt")
    assert torch.equal(frames_to_patches(frame[None])[1], official["image_grid_thw"])


def test_matches_the_official_processor_where_torchvision_exists():
    pytest.importorskip(
        "torchvision", reason="no torchvision here (no CPU build); runs on GPU nodes"
    )
    from transformers import Qwen2VLVideoProcessor

    rng = np.random.default_rng(0)
    # at this project's budget (the processor's own default is the release's, another grid)
    low, high = PROJECT_PIXELS
    processor = Qwen2VLVideoProcessor(size={"shortest_edge": low, "longest_edge": high})
    for shape in [(4, 56, 56, 3), (3, 128, 128, 3), (2, 96, 128, 3)]:
        frames = rng.integers(0, 256, shape, dtype=np.uint8)
        official = processor(
            videos=[torch.from_numpy(frames).permute(0, 3, 1, 2)], return_tensors="pt"
        )
        ours, grid = frames_to_patches(frames)
        assert torch.equal(grid, official["video_grid_thw"])
        # the same uint8 resize: equal up to float rounding of the normalisation (resized in
        # float and rounded, pixels differed by up to 22 levels, 0.35 after normalising)
        difference = (ours - official["pixel_values_videos"]).abs().max().item()
        assert difference <= 1e-5, (shape, difference)


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


# -- Qwen3-VL: 16-px patches, mean/std 0.5, the budget over the whole video, timestamped segments

QWEN3 = VisionSpec(patch_size=16, mean=(0.5,) * 3, std=(0.5,) * 3, segmented=True)


def test_qwen3_spec_comes_from_its_vision_config():
    transformers = pytest.importorskip("transformers")
    vision = transformers.Qwen3VLConfig().vision_config
    assert VisionSpec.from_config(vision) == QWEN3  # the project's budget: no processor config
    assert VisionSpec.from_config(vision.to_dict()) == QWEN3  # a served config's dict
    assert not VisionSpec.from_config(transformers.Qwen2_5_VLConfig().vision_config).segmented
    # a real checkpoint's video_preprocessor_config.json: its budget (over frames x area), its
    # mean / std and frame rate
    processor = {"size": {"shortest_edge": 4096, "longest_edge": 25165824},
                 "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "fps": 4}  # fmt: skip
    spec = VisionSpec.from_config(vision, processor)
    assert (spec.min_pixels, spec.max_pixels, spec.fps) == (4096, 25165824, 4.0)
    # without a size: Qwen3VLVideoProcessor's defaults, 128 to 768 tokens of 32²
    spec = VisionSpec.from_config(vision, {})
    assert (spec.min_pixels, spec.max_pixels, spec.mean) == (131072, 786432, (0.5, 0.5, 0.5))


@pytest.mark.parametrize(
    ("video", "budget", "expected"),
    [
        # 2 x 64² = 8192 within the project's 3136 .. 1003520: kept (2 x 2 tokens a patch)
        ((2, 64, 64), None, (64, 64)),
        ((1, 64, 64), None, (64, 64)),  # one frame counts as the two it is padded to
        # 8 x 256² = 524288 within 131072 .. 786432: kept
        ((8, 256, 256), "qwen3", (256, 256)),
        # 16 x 720 x 1280 over 786432: beta = sqrt(16 * 921600 / 786432) = 4.330;
        # floor(720 / 4.330 / 32) = 5 → 160, floor(1280 / 4.330 / 32) = 9 → 288
        ((16, 720, 1280), "qwen3", (160, 288)),
        # 10² under 32: scaled to 32², 2 x 1024 < 3136: beta = sqrt(3136 / 2048) = 1.237 → 64²
        ((2, 10, 10), None, (64, 64)),
    ],
)
def test_qwen3_resize_by_hand(video, budget, expected):
    spec = QWEN3 if budget is None else VisionSpec(**{**QWEN3.__dict__, "min_pixels": 131072,
                                                       "max_pixels": 786432})  # fmt: skip
    assert spec.resized(*video) == expected
    processing = pytest.importorskip("transformers.models.qwen3_vl.video_processing_qwen3_vl")
    if video[0] >= 2:  # transformers' own rule (it refuses a single frame)
        official = processing.smart_resize(*video, 2, 32, spec.min_pixels, spec.max_pixels)
        assert official == expected


def test_qwen3_per_frame_cap_as_transformers_computes_it():
    # cap_pixels_per_frame: max(min(768 x 32², 786432 / 16), 1.05 x 131072) = 137625 a frame, so
    # 16 frames may take 2202000 px: beta = sqrt(16 x 921600 / 2202000) = 2.588;
    # floor(720 / 2.588 / 32) = 8 → 256, floor(1280 / 2.588 / 32) = 15 → 480
    spec = VisionSpec(**{**QWEN3.__dict__, "min_pixels": 131072, "max_pixels": 786432,
                         "cap_pixels_per_frame": True})  # fmt: skip
    assert spec.resized(16, 720, 1280) == (256, 480)
    processing = pytest.importorskip("transformers.models.qwen3_vl.video_processing_qwen3_vl")
    assert processing.smart_resize(16, 720, 1280, 2, 32, 131072, 137625 * 16) == (256, 480)


def test_qwen3_patches_match_transformers_patchify_and_normalisation():
    """Everything after the resize, against Qwen3VLVideoProcessor.patchify (the resize itself is
    the bicubic the Qwen2.5-VL path shares, compared with torchvision where it exists)."""
    processing = pytest.importorskip("transformers.models.qwen3_vl.video_processing_qwen3_vl")
    frames = np.random.default_rng(0).integers(0, 256, (3, 64, 96, 3), dtype=np.uint8)
    ours, grid = frames_to_patches(frames, QWEN3)
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)[None].float() / 255  # no resize: 64 x 96
    video = (video - 0.5) / 0.5  # IMAGENET_STANDARD_MEAN / _STD, the processor's
    official, t, h, w = processing.Qwen3VLVideoProcessor.patchify(None, video, 16, 2, 2)
    assert grid.tolist() == [[t, h, w]] == [[2, 4, 6]]
    torch.testing.assert_close(ours, official[0], atol=1e-6, rtol=0)
    assert ours.max().item() <= 1.0 and ours.min().item() >= -1.0  # 255 → 1, 0 → -1


@pytest.mark.parametrize(("frames", "expected"), [(1, [0.0]), (3, [0.25, 1.0]), (4, [0.25, 1.25])])
def test_qwen3_timestamps_by_hand(frames, expected):
    # frames at 2 fps are 0, 0.5, 1.0, ... s; a temporal patch's time is its two frames' mean
    assert QWEN3.timestamps(frames) == expected


@pytest.mark.parametrize("frames", [1, 3, 4])
def test_qwen3_video_text_is_what_its_processor_writes(frames):
    """The text of one video, against Qwen3VLProcessor.replace_video_token (frames at 2 fps)."""
    pytest.importorskip("transformers")
    from types import SimpleNamespace

    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor
    from transformers.video_utils import VideoMetadata

    grid = ((frames + 1) // 2, 4, 6)
    processor = SimpleNamespace(
        video_processor=Qwen3VLVideoProcessor,  # its class defaults: merge and temporal size 2
        video_token="<|video_pad|>",
        vision_start_token="<|vision_start|>",
        vision_end_token="<|vision_end|>",
        _calculate_timestamps=lambda *a: Qwen3VLProcessor._calculate_timestamps(None, *a),
    )
    metadata = VideoMetadata(total_num_frames=frames, fps=2, frames_indices=list(range(frames)))
    inputs = {"video_grid_thw": torch.tensor([grid]), "video_metadata": [metadata]}
    official = Qwen3VLProcessor.replace_video_token(processor, inputs, 0)
    assert QWEN3.video_text(grid, frames) == official
    assert official.count("seconds>") == grid[0] and official.count("<|video_pad|>") == grid[0] * 6
    assert VisionSpec().video_text(grid, frames).count("<|vision_start|>") == 1  # Qwen2.5-VL: one


def test_qwen3_reads_its_budget_from_size_alone():
    """Qwen3VLVideoProcessor ignores top-level min_pixels / max_pixels (Qwen2's maps them)."""
    transformers = pytest.importorskip("transformers")
    processor = {"min_pixels": 3136, "max_pixels": 12845056,
                 "size": {"shortest_edge": 4096, "longest_edge": 65536}}  # fmt: skip
    qwen3 = VisionSpec.from_config(transformers.Qwen3VLConfig().vision_config, processor)
    assert (qwen3.min_pixels, qwen3.max_pixels) == (4096, 65536)
    qwen25 = VisionSpec.from_config(transformers.Qwen2_5_VLConfig().vision_config, processor)
    assert (qwen25.min_pixels, qwen25.max_pixels) == (3136, 12845056)


def test_qwen3_cap_counts_one_frame_as_the_two_it_is_padded_to():
    spec = VisionSpec(**{**QWEN3.__dict__, "min_pixels": 4096, "max_pixels": 25165824,
                         "cap_pixels_per_frame": True})  # fmt: skip
    assert spec.resized(1, 1080, 1920) == spec.resized(2, 1080, 1920)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"image_mean": "0.5"}, "image_mean='0.5' must be one or three finite numbers (per channel)"),
        ({"image_mean": [0.5, 0.5]}, "image_mean=[0.5, 0.5] must be one or three finite numbers"),
        ({"image_std": [0.5, 0, 0.5]}, "image_std=[0.5, 0, 0.5] must be one or three numbers > 0"),
        ({"fps": -1}, "fps=-1 must be a number > 0 (frames a second)"),
        ({"fps": 0}, "fps=0 must be a number > 0 (frames a second)"),
        ({"fps": "two"}, "fps='two' must be a number > 0 (frames a second)"),
        ({"cap_pixels_per_frame": "false"}, "cap_pixels_per_frame='false' must be true, false or null"),
        ({"size": {"longest_edge": 100000}}, "the pixel budget's minimum 131072 exceeds its maximum 100000"),
        ({"size": {"shortest_edge": -4}}, "size.shortest_edge=-4 must be a whole number >= 1"),
        ({"size": {"shortest_edge": 4096.5}}, "size.shortest_edge=4096.5 must be a whole number >= 1"),
        ({"size": [1, 2]}, "size=[1, 2] must be a mapping of edges to pixels"),
        ({"max_video_tokens": -1}, "max_video_tokens=-1 must be a whole number >= 1"),
        ([1, 2], "the settings are list [1, 2], not a mapping"),
    ],
)  # fmt: skip
def test_processor_settings_frames_cannot_be_read_with_are_refused(settings, message):
    transformers = pytest.importorskip("transformers")
    from critic.vision import ProcessorConfigError

    with pytest.raises(ProcessorConfigError) as err:
        VisionSpec.from_config(transformers.Qwen3VLConfig().vision_config, settings)
    assert str(err.value).startswith(message)


def test_a_critic_names_the_checkpoint_whose_processor_config_is_bad(tmp_path):
    import json

    from critic import CriticError, make_critic
    from critic.models import build_preset, save_model

    save_model(*build_preset("tiny-qwen3vl"), tmp_path)
    (tmp_path / "video_preprocessor_config.json").write_text(json.dumps({"fps": 0}))
    with pytest.raises(CriticError) as err:
        make_critic(str(tmp_path))
    assert str(err.value) == (
        f"{tmp_path}'s video processor config cannot be read: fps=0 must be a number > 0 (frames "
        "a second); fix it in the checkpoint's video_preprocessor_config.json (or "
        "processor_config.json / preprocessor_config.json)"
    )


def test_unset_budgets_and_whole_float_sizes_read_as_transformers_reads_them():
    """0 (or null) leaves a budget to the next place it is read from, as the ``or`` chain of
    Qwen2VLVideoProcessor does; 4096.0 is 4096."""
    transformers = pytest.importorskip("transformers")
    vision = transformers.Qwen2_5_VLConfig().vision_config
    spec = VisionSpec.from_config(vision, {"min_pixels": 0, "size": {"shortest_edge": 4096.0}})
    assert (spec.min_pixels, spec.max_pixels) == (4096, 602112)


def test_qwen25_per_frame_cap_as_transformers_computes_it():
    """Qwen2VLVideoProcessor's cap, read from a processor config (it was read for Qwen3-VL only).

    A context of 1000 tokens: 90 % of it is int(1000 x 28² x 0.9) = 705600 px a temporal patch,
    so 16 frames get 705600 x 2 // 16 = 88200 px each (above 1.05 x 3136 = 3292): beta =
    sqrt(720 x 1280 / 88200) = 3.2325; floor(720 / 3.2325 / 28) = 7 → 196, floor(1280 / 3.2325 /
    28) = 14 → 392. Uncapped, 720 x 1280 rounds to 728 x 1288 (26 and 46 tokens of 28).
    """
    transformers = pytest.importorskip("transformers")
    settings = {"min_pixels": 3136, "max_pixels": 12845056, "max_video_tokens": 1000}
    vision_config = transformers.Qwen2_5_VLConfig().vision_config
    capped = VisionSpec.from_config(vision_config, {**settings, "cap_pixels_per_frame": True})
    assert capped.resized(16, 720, 1280) == (196, 392)
    assert VisionSpec.from_config(vision_config, settings).resized(16, 720, 1280) == (728, 1288)
    # the default context (128,000 tokens) leaves a 16-frame 720p video as it was
    default = VisionSpec.from_config(vision_config, {**settings, "max_video_tokens": None,
                                                     "cap_pixels_per_frame": True})  # fmt: skip
    assert default.resized(16, 720, 1280) == (728, 1288)
