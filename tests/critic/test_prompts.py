"""Prompt formats and their encoding into Qwen-VL inputs."""

from __future__ import annotations

import re

import numpy as np
import pytest

from critic import prompts
from critic.vision import VisionSpec

FRAMES = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)


def test_every_format_marks_one_video_per_input():
    cases = [
        prompts.anchored_progress("lift", FRAMES[0], FRAMES, FRAMES[-1]),
        prompts.stepwise_progress("lift", FRAMES, 0.25),
        prompts.shuffled_progress("lift", FRAMES, seed=0)[0],
        prompts.failure_detection("lift", FRAMES, ["missed_grasp", "stall"]),
        prompts.pretext(FRAMES, ["none", "rotate_90"]),
        prompts.joint("lift", FRAMES, ["none", "rotate_90"]),
    ]
    for prompt in cases:
        assert prompt.messages[-1]["content"].count(prompts.VIDEO) == len(prompt.videos)
    assert "previous estimate: 25%" in cases[1].messages[-1]["content"]
    assert cases[3].choices == ("missed_grasp", "stall")


def test_shuffled_order_is_a_seeded_permutation():
    prompt, order = prompts.shuffled_progress("lift", FRAMES, seed=3)
    assert sorted(order.tolist()) == [0, 1, 2, 3]
    for shown, original in enumerate(order):
        np.testing.assert_array_equal(prompt.videos[shown][0], FRAMES[original])


def test_encode_puts_one_pad_token_per_merged_patch(tiny_model):
    _, tokenizer = tiny_model
    prompt = prompts.anchored_progress("lift", FRAMES[0], FRAMES, FRAMES[-1])
    enc = prompts.encode(prompt, tokenizer)
    # 64² → 56²: 4 x 4 patches → 4 tokens per temporal pair. Images: 1 pair each; video: 2 pairs.
    assert enc["video_grid_thw"].tolist() == [[1, 4, 4], [2, 4, 4], [1, 4, 4]]
    video_id = tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert int((enc["input_ids"] == video_id).sum()) == 4 + 8 + 4
    assert int((enc["mm_token_type_ids"] == 2).sum()) == 16
    assert enc["pixel_values_videos"].shape == (16 + 32 + 16, 1176)
    assert VisionSpec().tokens((2, 4, 4)) == 8


def test_bad_scale():
    with pytest.raises(ValueError, match=r"scale='tenths' is not an answer scale"):
        prompts.stepwise_progress("lift", FRAMES, None, scale="tenths")


@pytest.mark.parametrize(
    ("instruction", "says"),
    [
        ("put it in the <video> box", "holds '<video>', the prompt's own syntax"),
        ("stack <|video_pad|> cubes", "holds '<|video_pad|>', the prompt's own syntax"),
        ("reach<|im_end|>", "holds '<|im_end|>'"),
        # the answer format's tags: special tokens of the shipped tokenizer (it was encoded as one)
        (
            "x <answer>9</answer>",
            "holds '<answer>', the prompt's own syntax (a video "
            "placeholder, a special token or an answer tag); reword it",
        ),
        ("think first </think>", "holds '</think>'"),
        (None, "instruction=None must be the task in words"),
        ("  ", "instruction='  ' is empty: give the task in words, e.g. 'Lift the cube.'"),
    ],
)
def test_an_instruction_carrying_prompt_syntax_is_refused_when_the_query_is_made(instruction, says):
    from critic.base import CriticError, FailureQuery, ProgressQuery

    for make in (ProgressQuery, FailureQuery):
        with pytest.raises(CriticError, match=re.escape(says)):
            make(instruction)


@pytest.mark.parametrize(
    ("make", "fields", "says"),
    [
        ("progress", {"privileged_progress": 1.5}, "privileged_progress=1.5 must be None, NaN "
         "(unknown) or a number in [0, 1] (the simulator's progress, as task_info()['progress'] "
         "gives it)"),
        ("progress", {"privileged_progress": "0.5"}, "privileged_progress='0.5' must be"),
        # the oracle read these by their truth: "False" and NaN were successes
        ("failure", {"privileged_success": "False"}, "privileged_success='False' must be None, "
         "True or False (the simulator's success flag); the oracle would read any other value by "
         "its truth"),
        ("failure", {"privileged_success": float("nan")}, "privileged_success=nan must be"),
        ("failure", {"privileged_success": False, "privileged_failure_type": 123},
         "privileged_failure_type=123 must be None or a failure label (a string), e.g. 'stall'"),
    ],
)  # fmt: skip
def test_privileged_fields_the_oracle_would_misread_are_refused(make, fields, says):
    from critic.base import CriticError, FailureQuery, ProgressQuery

    with pytest.raises(CriticError) as err:
        (ProgressQuery if make == "progress" else FailureQuery)("reach", **fields)
    assert str(err.value).startswith(says)


def test_privileged_fields_of_numpy_types_and_unknown_progress_are_taken():
    from critic.base import FailureQuery, ProgressQuery
    from critic.oracle import OracleCritic

    oracle = OracleCritic()
    for truth in (np.float32(0.25), np.float64(1.0), 0, float("nan")):
        ProgressQuery("reach", privileged_progress=truth)
    [verdict] = oracle.detect_failure([FailureQuery("reach", privileged_success=np.bool_(False))])
    assert verdict.success is False


@pytest.mark.parametrize("previous", [float("nan"), 35, -1.0, "0.5"])
def test_a_previous_estimate_outside_0_1_is_refused(previous):
    from critic.base import CriticError, ProgressQuery

    with pytest.raises(
        CriticError, match=r"previous_progress=.* must be None or a number in \[0, 1\]"
    ):
        ProgressQuery("reach", previous_progress=previous)


def _flat_frames(count: int, size: int = 64) -> np.ndarray:
    """Rendered-looking frames: a flat floor and a flat block that moves."""
    frames = np.full((count, size, size, 3), (90, 110, 130), np.uint8)
    for t in range(count):
        frames[t, 20 + t : 36 + t, 10 + 2 * t : 26 + 2 * t] = (200, 40, 40)
    return frames


def test_a_packed_prompt_reads_and_encodes_as_the_prompt_it_packs(tiny_model):
    import torch

    _, tokenizer = tiny_model
    frames = _flat_frames(6)
    prompt = prompts.anchored_progress("lift", frames[0], frames, frames[-1])
    packed = prompts.pack(prompt)
    assert prompts.pack(packed) is packed
    assert (packed.messages, packed.answer, packed.choices) == (
        prompt.messages,
        prompt.answer,
        prompt.choices,
    )
    for before, after in zip(prompt.videos, packed.videos, strict=True):
        np.testing.assert_array_equal(before, after)
        assert after.dtype == np.uint8 and after.flags.writeable  # torch takes it without a warning
    held = sum(len(data) for data, _ in packed.packed)
    assert sum(v.nbytes for v in prompt.videos) / held > 20  # flat colour: 8 frames of 64² here
    np.testing.assert_array_equal(packed.unpacked().videos[1], frames)
    plain, read = prompts.encode(prompt, tokenizer), prompts.encode(packed, tokenizer)
    assert plain.keys() == read.keys()
    for key in plain:
        assert torch.equal(plain[key], read[key]), key
    random = prompts.pack(prompts.pretext(FRAMES, ["none", "rotate_90"]))  # noise packs not at all
    np.testing.assert_array_equal(random.videos[0], FRAMES)
    with pytest.raises(ValueError, match="pack\\(\\) holds uint8 frames; this video is float32"):
        prompts.pack(prompts.Prompt(prompt.messages, (frames.astype(np.float32),), "percent"))


def test_the_pretext_question_asks_only_for_the_tags_its_format_reward_pays():
    from critic.train.rewards import format_reward

    prompt = prompts.pretext(FRAMES, ["none", "rotate_90"])
    asked = " ".join(m["content"] for m in prompt.messages)
    # the shared system message asked for an <answer> too, which the pretext format pays 0 for
    assert "<answer>" not in asked and "<transform></transform>" in prompt.messages[0]["content"]
    obeying = "<think>turned</think><transform>rotate_90</transform>"
    assert format_reward(
        [obeying, obeying + "<answer>rotate_90</answer>"], [prompt.answer] * 2
    ) == [
        1.0,
        0.0,
    ]
    # every other question keeps the system message that asks for <answer>
    assert prompts.joint("lift", FRAMES, ["none"]).messages[0]["content"] == prompts.SYSTEM


def test_a_prompt_without_a_video_encodes_with_no_patches(tiny_model):
    # zip(*()) had no two values to unpack: a bare ValueError
    _, tokenizer = tiny_model
    encoded = prompts.encode(prompts._user("Task: lift. How far along?", [], "digit"), tokenizer)
    assert encoded["pixel_values_videos"] is None and encoded["video_grid_thw"] is None
    assert len(encoded["input_ids"]) > 0 and int(encoded["mm_token_type_ids"].sum()) == 0
