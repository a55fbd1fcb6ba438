"""Reward functions: hand-worked values, None handling, exact errors, and never a crash (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from critic.base import FAILURE_TYPES
from critic.data.transforms import TRANSFORMS
from critic.train.rewards import (
    REWARDS,
    RewardConfigError,
    combine_rewards,
    format_reward,
    get_reward,
    joint_reward,
    make_progress_reward,
    progress_accuracy_reward,
    reward_components,
    transform_reward,
    verdict_reward,
)

GOOD = "<think>x</think><answer>30%</answer>"


# --- format -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "answer", "expected"),
    [
        (GOOD, None, 1.0),
        ("  <think>x</think>\n<answer> 30 </answer>\n", "percent", 1.0),
        ("<think></think><answer>30</answer>", "percent", 1.0),  # an empty thought is allowed
        ("<think>x</think><answer>high</answer>", "percent", 1.0),  # content is not format's job
        ("<think>x</think><answer>success</answer>", "verdict", 1.0),
        ("<answer>30%</answer>", "percent", 0.0),  # no thought
        ("<think>x</think>", "percent", 0.0),  # no answer
        ("<think>x</think><answer>  </answer>", "percent", 0.0),  # blank answer
        ("<answer>30</answer><think>x</think>", "percent", 0.0),  # wrong order
        ("<think>x</think>so<answer>30</answer>", "percent", 0.0),  # text between the tags
        ("<think>x</think><answer>30</answer> done", "percent", 0.0),  # text after the answer
        ("<think>x</think><answer>30</answer><answer>40</answer>", "percent", 0.0),
        ("<think><think>x</think><answer>30</answer>", "percent", 0.0),
        ("<think>x<answer>1</answer></think><answer>30</answer>", "percent", 0.0),
        ("<think>x</think><transform>hflip</transform><answer>30</answer>", "percent", 0.0),
        # pretext: the reference completion answers inside <transform> alone
        ("<think></think><transform>hflip</transform>", "transform", 1.0),
        ("<think>x</think><answer>hflip</answer>", "transform", 0.0),
        ("<think>x</think><transform>hflip</transform><answer>30</answer>", "transform", 0.0),
        # joint: transform first, then the answer
        (
            "<think>x</think><transform>hflip</transform><answer>30</answer>",
            "transform+percent",
            1.0,
        ),
        (
            "<think>x</think><answer>30</answer><transform>hflip</transform>",
            "transform+percent",
            0.0,
        ),
        ("<think>x</think><answer>30</answer>", "transform+percent", 0.0),
        ("<think>x</think><transform></transform><answer>30</answer>", "transform+percent", 0.0),
    ],
)
def test_format_reward(text, answer, expected):
    assert format_reward([text], answer=[answer]) == [expected]


def test_format_reward_defaults_to_percent_and_reads_non_strings_as_empty():
    assert format_reward([GOOD, "<answer>1</answer>", None, 3]) == [1.0, 0.0, 0.0, 0.0]


def test_format_reward_unknown_answer_format():
    with pytest.raises(RewardConfigError) as info:
        format_reward([GOOD], answer=["percentage"])
    assert str(info.value) == (
        "answer='percentage' is not an answer format; pick one of ['percent', 'digit', "
        "'percent_list', 'verdict', 'transform', 'transform+percent']"
    )


# --- progress -----------------------------------------------------------------------------------


def test_progress_accuracy_reward_hand_worked():
    completions = [
        GOOD,  # |0.30 - 0.5| = 0.2 → 1 - 0.2 = 0.8
        "<think>x</think><answer>30%</answer>",  # target 0.3 → exact → 1.0
        "<think>x</think><answer>100</answer>",  # target 0.0 → 1 - 1 = 0.0
        "<think>x</think><answer>30 or 60%</answer>",  # hedge → 0.0
        "<think>x</think><answer>130</answer>",  # out of range → 0.0
        "<think>x</think>30%",  # no answer tag → 0.0
        GOOD,  # target None → None
    ]
    progress = [0.5, 0.3, 0.0, 0.5, 0.5, 0.5, None]
    rewards = progress_accuracy_reward(completions, progress=progress)
    assert rewards[:-1] == pytest.approx([0.8, 1.0, 0.0, 0.0, 0.0, 0.0])
    assert rewards[-1] is None


def test_progress_reward_scale():
    reward = make_progress_reward(0.5)
    # |0.3 - 0.5| = 0.2 → 1 - 0.2 / 0.5 = 0.6;  |0.3 - 1.0| = 0.7 → 1 - 1.4 < 0 → clipped to 0.0
    assert reward([GOOD, GOOD], progress=[0.5, 1.0]) == pytest.approx([0.6, 0.0])
    assert reward.__name__ == "progress_accuracy_reward_scale_0.5"
    assert progress_accuracy_reward.__name__ == "progress_accuracy_reward"


def test_progress_reward_reads_the_answer_format():
    digit = "<think>x</think><answer>3</answer>"
    joint = "<think>x</think><transform>hflip</transform><answer>40%</answer>"
    rewards = progress_accuracy_reward(
        [digit, digit, joint, GOOD],
        progress=[1 / 3, 1 / 3, 0.5, 0.5],
        answer=["digit", "percent", "transform+percent", "verdict"],
    )
    # digit 3 → 3/9 = 1/3 → 1.0;  read as percent 3% → 1 - |0.03 - 1/3| = 0.69667;
    # joint 40% vs 0.5 → 0.9;  a verdict prompt has no progress answer → None
    assert rewards[:3] == pytest.approx([1.0, 1 - abs(0.03 - 1 / 3), 0.9])
    assert rewards[3] is None
    # top_digit=achieved: short of done (0.95) the label is 8, so 8 is paid most: 8 → 1.0,
    # 9 → 1 - (1 - 8/9) = 8/9; done (1.0) the label is 9; percent answers and round as before
    eight, nine = "<think></think><answer>8</answer>", "<think></think><answer>9</answer>"
    rewards = progress_accuracy_reward(
        [eight, nine, eight, nine, nine, "<think></think><answer>95%</answer>"],
        progress=[0.95, 0.95, 1.0, 1.0, 0.95, 0.95],
        answer=["digit"] * 5 + ["percent"],
        top_digit=["achieved"] * 4 + ["round", "achieved"],
    )
    assert rewards == pytest.approx([1.0, 8 / 9, 8 / 9, 1.0, 0.95, 1.0])


def test_progress_reward_errors():
    with pytest.raises(RewardConfigError) as info:
        make_progress_reward(0)
    assert str(info.value) == (
        "scale=0 is not a positive finite number; give the progress error at which the reward "
        "reaches 0 (1.0: r = 1 - |p - t|)"
    )
    with pytest.raises(RewardConfigError) as info:
        progress_accuracy_reward([GOOD, GOOD], progress=[0.5, 1.5])
    assert str(info.value) == (
        "progress[1] = 1.5 is not a progress target; give a fraction in [0, 1]"
    )
    with pytest.raises(RewardConfigError) as info:
        progress_accuracy_reward([GOOD, GOOD], progress=[0.5])
    assert str(info.value) == (
        "field 'progress' has 1 values for 2 completions; give one per completion"
    )


# --- verdict ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "success", "failure_type", "expected"),
    [
        ("success", True, None, 1.0),
        ("failure: missed_grasp", True, None, 0.0),  # wrong verdict
        ("failure: missed grasp", False, "missed_grasp", 1.0),  # spaces read as "_"
        ("Failure (drop_after_lift)", False, "drop_after_lift", 1.0),
        ("failure: stall", False, "missed_grasp", 0.5),  # right verdict, wrong type
        ("failure", False, "missed_grasp", 0.5),  # right verdict, missing type
        ("failure", False, None, 1.0),  # the type is unknown: "failure" is the whole truth
        ("failure: stall", False, None, 0.5),  # a type the truth does not have
        ("success", False, "stall", 0.0),
        ("failure: banana", False, "stall", 0.0),  # not one of the choices: unreadable
        ("success or failure", True, None, 0.0),  # hedge
    ],
)
def test_verdict_reward(answer, success, failure_type, expected):
    text = f"<think>x</think><answer>{answer}</answer>"
    rewards = verdict_reward([text], [success], [failure_type], choices=[FAILURE_TYPES])
    assert rewards == [expected]


def test_verdict_reward_refuses_a_success_target_that_is_not_a_truth_value():
    text = "<answer>success</answer>"
    # numpy's bools and 0 / 1 are truth values; the text "False" would read as a success
    assert verdict_reward([text] * 3, [np.bool_(True), 0, np.bool_(False)]) == [1.0, 0.0, 0.0]
    for target in ("False", "0", 0.5, 2):
        with pytest.raises(RewardConfigError) as info:
            verdict_reward([text], [target])
        assert str(info.value) == (
            f"success[0] = {target!r} is not a success target; give True, False or None"
        )


def test_verdict_reward_none_and_no_choices():
    texts = ["<answer>failure: banana</answer>", "<answer>success</answer>", "no tag"]
    # without choices any type reads: right verdict, wrong type → 0.5
    assert verdict_reward(texts, [False, None, False], ["stall", None, "stall"]) == [0.5, None, 0.0]
    assert verdict_reward(texts) == [None, None, None]  # no success field at all


# --- transform and joint ------------------------------------------------------------------------


def test_transform_reward():
    texts = [
        "<think></think><transform>rotate_90</transform>",
        "<think></think><transform>Rotate 90</transform>",  # case and spaces ignored
        "<think></think><transform>hflip</transform>",  # wrong
        "<think></think><transform>blur</transform>",  # not a transform
        "<think></think><transform>hflip or reverse</transform>",  # hedge
        "<think></think><answer>rotate_90</answer>",  # no transform tag
        "<think></think><transform>rotate_90</transform>",  # target None
    ]
    targets = ["rotate_90"] * 6 + [None]
    assert transform_reward(texts, targets) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, None]
    # the sample's choices replace TRANSFORMS: "blur" is allowed there
    assert transform_reward([texts[3]], ["blur"], choices=[("none", "blur")]) == [1.0]
    assert transform_reward([texts[3]], ["blur"], choices=[()]) == [0.0]  # empty → TRANSFORMS


def test_joint_reward():
    text = "<think>x</think><transform>rotate_90</transform><answer>40%</answer>"
    rewards = joint_reward(
        [text, text, text, text, text],
        transform=["rotate_90", "hflip", "rotate_90", None, None],
        progress=[0.5, 0.5, None, 0.5, None],
        answer=["transform+percent"] * 5,
    )
    # (1 + 0.9) / 2 = 0.95;  (0 + 0.9) / 2 = 0.45;  transform alone 1.0;  progress alone 0.9
    assert rewards[:4] == pytest.approx([0.95, 0.45, 1.0, 0.9])
    assert rewards[4] is None


# --- combining ----------------------------------------------------------------------------------


def test_combine_rewards_hand_worked():
    reward = combine_rewards([format_reward, progress_accuracy_reward], [1, 0.5])
    completions = [GOOD, "<answer>30 or 60%</answer>", "<think>x</think><answer>success</answer>"]
    fields = {"progress": [0.5, 0.5, None], "answer": ["percent", "percent", "verdict"]}
    # 1·1 + 0.5·0.8 = 1.4;  1·0 + 0.5·0 = 0;  1·1 + (progress None, left out) = 1.0
    assert reward(completions, **fields) == pytest.approx([1.4, 0.0, 1.0])
    assert reward.__name__ == "format_reward+progress_accuracy_reward"
    components = reward_components([format_reward, progress_accuracy_reward], completions, **fields)
    assert list(components) == ["format_reward", "progress_accuracy_reward"]
    assert components["format_reward"] == [1.0, 0.0, 1.0]
    assert components["progress_accuracy_reward"][:2] == pytest.approx([0.8, 0.0])
    assert components["progress_accuracy_reward"][2] is None


def test_combine_rewards_none_only_when_all_none_and_names():
    reward = combine_rewards(["progress", "verdict"])  # registry names; weights default to 1
    texts = [GOOD, "<answer>success</answer>", GOOD]
    rewards = reward(texts, progress=[0.5, None, None], success=[None, True, None])
    assert rewards[:2] == pytest.approx([0.8, 1.0])
    assert rewards[2] is None


def test_combine_rewards_errors():
    with pytest.raises(RewardConfigError) as info:
        combine_rewards([format_reward, progress_accuracy_reward, verdict_reward], [1.0, 0.5])
    assert str(info.value) == (
        "weights has 2 values for 3 reward functions; give one weight per function"
    )
    with pytest.raises(RewardConfigError) as info:
        combine_rewards([format_reward, verdict_reward], [1.0, math.inf])
    assert str(info.value) == (
        "weights[1] = inf is not a finite number; give one finite weight per function"
    )
    with pytest.raises(RewardConfigError) as info:
        combine_rewards([format_reward, "format"])
    assert str(info.value) == (
        "two reward functions are named 'format_reward'; give each a distinct __name__ "
        "(the name keys its logged values)"
    )
    with pytest.raises(RewardConfigError) as info:
        combine_rewards([])
    assert str(info.value) == (
        "functions=[]; give a list of one or more reward functions or REWARDS names"
    )


def test_combine_rewards_rejects_bad_component_values():
    def nan_reward(completions, **fields):
        return [math.nan] * len(completions)

    def short_reward(completions, **fields):
        return []

    with pytest.raises(RewardConfigError) as info:
        combine_rewards([nan_reward])([GOOD])
    assert str(info.value) == (
        "reward function 'nan_reward' returned nan for completion 0; return a finite number or None"
    )
    with pytest.raises(RewardConfigError) as info:
        combine_rewards([short_reward])([GOOD])
    assert str(info.value) == (
        "reward function 'short_reward' returned 0 values for 1 completions; "
        "return one per completion"
    )


def test_reward_components_take_numpy_scalars():
    def np_reward(completions, **fields):  # what reward code built on numpy returns
        return [np.float32(0.5), np.int64(1), np.bool_(True)][: len(completions)]

    assert combine_rewards([np_reward])([GOOD] * 3) == [0.5, 1.0, 1.0]


def test_get_reward():
    assert get_reward("joint") is joint_reward
    with pytest.raises(RewardConfigError) as info:
        get_reward("accuracy")
    assert str(info.value) == (
        "reward='accuracy' is not a known reward; pick one of "
        "['format', 'progress', 'verdict', 'transform', 'joint']"
    )


# --- never a crash --------------------------------------------------------------------------------

_PIECES = st.sampled_from(
    ["<think>", "</think>", "<answer>", "</answer>", "<transform>", "</transform>", "30", "%",
     " or ", "-", "success", "failure: stall", "rotate_90", "1e400", "0.5", " "]
)  # fmt: skip
_TEXT = st.one_of(
    st.text(max_size=60), st.lists(_PIECES | st.text(max_size=5), max_size=12).map("".join)
)


@settings(max_examples=200, deadline=None)
@given(
    texts=st.lists(_TEXT, min_size=1, max_size=4),
    data=st.data(),
)
def test_rewards_never_raise_and_stay_in_unit_interval(texts, data):
    n = len(texts)

    def column(strategy):
        return data.draw(st.lists(st.none() | strategy, min_size=n, max_size=n))

    fields = {
        "progress": column(st.floats(0.0, 1.0)),
        "success": column(st.booleans()),
        "failure_type": column(st.sampled_from(FAILURE_TYPES)),
        "transform": column(st.sampled_from(TRANSFORMS)),
        "answer": column(st.sampled_from(["percent", "digit", "verdict", "transform+percent"])),
        "choices": column(st.sampled_from([FAILURE_TYPES, TRANSFORMS, ()])),
    }
    functions = [*REWARDS.values(), make_progress_reward(0.25)]
    for fn in functions:
        rewards = fn(texts, **fields)
        assert len(rewards) == n
        assert all(r is None or (isinstance(r, float) and 0.0 <= r <= 1.0) for r in rewards)
    # weights summing to 1 keep the combined reward in [0, 1] too
    combined = combine_rewards(functions, [1 / len(functions)] * len(functions))
    assert all(r is None or 0.0 <= r <= 1.0 + 1e-12 for r in combined(texts, **fields))
