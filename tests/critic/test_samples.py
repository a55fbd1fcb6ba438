"""Pretext transforms, grounded chains of thought and sample builders (hand-worked where possible)."""

from __future__ import annotations

import numpy as np
import pytest

from critic.base import ParseStatus
from critic.data.episodes import Episode
from critic.data.reasoning import chain_of_thought, describe
from critic.data.samples import (
    KINDS,
    build_samples,
    clip,
    cut_points,
    frozen_samples,
    seed_split,
    task_split,
)
from critic.data.transforms import QUARTER_TURNS, TRANSFORMS, apply_transform, window_length
from critic.parse import parse_progress, parse_transform, parse_verdict

RNG = np.random.default_rng


def _frames(t: int = 4, h: int = 2, w: int = 3) -> np.ndarray:
    # Pixel value encodes (frame, row, col): 30·t + 10·y + x (< 256 for t <= 8), so moves are readable.
    t_, y, x = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    value = 30 * t_ + 10 * y + x
    return np.repeat(value[..., None], 3, axis=-1).astype(np.uint8)


def test_rotations_flip_and_reverse_by_hand():
    f = _frames(t=2)
    # Frame 0 is [[0, 1, 2], [10, 11, 12]]; 90° counter-clockwise → [[2, 12], [1, 11], [0, 10]].
    assert apply_transform("rotate_90", f, RNG(0))[0, :, :, 0].tolist() == [
        [2, 12],
        [1, 11],
        [0, 10],
    ]
    assert apply_transform("rotate_180", f, RNG(0))[0, :, :, 0].tolist() == [
        [12, 11, 10],
        [2, 1, 0],
    ]
    assert apply_transform("rotate_270", f, RNG(0))[0, :, :, 0].tolist() == [
        [10, 0],
        [11, 1],
        [12, 2],
    ]
    assert apply_transform("hflip", f, RNG(0))[0, :, :, 0].tolist() == [[2, 1, 0], [12, 11, 10]]
    assert apply_transform("reverse", f, RNG(0))[0, 0, 0, 0] == 30  # frame 1 first
    np.testing.assert_array_equal(apply_transform("none", f, RNG(0)), f)


def test_shuffle_and_speed():
    f = _frames(t=8)
    for seed in range(20):
        shuffled = apply_transform("shuffle", f, RNG(seed))
        order = (shuffled[:, 0, 0, 0] // 30).tolist()
        assert order != list(range(8)) and sorted(order) == list(range(8))
        # Groups of 2 consecutive frames stay together: 8 frames in 4 groups.
        assert all(order[i + 1] == order[i] + 1 for i in range(0, 8, 2))
    assert (apply_transform("speed_2x", f, RNG(0))[:, 0, 0, 0] // 30).tolist() == [0, 2, 4, 6]
    assert window_length("speed_2x", 8) == 16 and window_length("hflip", 8) == 8
    with pytest.raises(
        ValueError, match=r"transform='blur' is not a pretext transform; pick one of \['none'"
    ):
        apply_transform("blur", f, RNG(0))


def test_describe_each_kind_of_state():
    assert describe("gripper_to_cube_cm", 4.0, RNG(0)) in {
        "the gripper is 4.0 cm from the cube",
        "4.0 cm separate the gripper and the cube",
        "the gripper is about 4 cm away from the cube",
    }
    assert "cube" in describe("cube_height_cm", 3.2, RNG(0)) and "3.2" in describe(
        "cube_height_cm", 3.2, RNG(0)
    )
    # said of the frame alone: a released cube is not grasped, but not "not grasped yet"
    assert {describe("cube_grasped", 0.0, RNG(s)) for s in range(20)} == {
        "the cube is not grasped",
        "the gripper does not hold the cube",
        "the cube is free of the gripper",
    }
    # a distance across the table is said as one: not "0.7 cm from the green cube" of a cube
    # carried high above it
    assert {describe("red_cube_over_green_cube_cm", 0.74, RNG(s)) for s in range(20)} == {
        "the red cube is 0.7 cm from being over the green cube",
        "seen from above, the red cube is 0.7 cm from the green cube",
        "across the table, the red cube is about 1 cm from the green cube",
    }
    assert "12 degrees" in describe("door_angle_deg", 12.0, RNG(0))
    assert describe("joint_speed", 0.5, RNG(0)) == "joint speed is 0.50"
    # a contact's settling under the rest height or angle: "lifted -0.3 cm", "-0.0 cm above the
    # table" and "swung -0 degrees" were taught (a cube at rest, one landing, a door at rest)
    for key, value in (("cube_height_cm", -0.02), ("cube_height_cm", -0.3),
                       ("door_angle_deg", -0.06)):  # fmt: skip
        said = {describe(key, value, RNG(s)) for s in range(20)}
        assert not any("-" in text for text in said), said
        assert all((" 0.0 cm" if key.endswith("cm") else " 0 degrees") in t for t in said)
    # far under it (a cube off the table): said as below, not as a negative height
    assert {describe("cube_height_cm", -20.0, RNG(s)) for s in range(20)} == {
        "the cube is 20.0 cm below where it rested",
        "the cube has fallen 20.0 cm below the table top",
    }


def test_chain_of_thought_is_grounded_varied_and_parses_to_the_truth():
    state = {"gripper_to_cube_cm": 4.0, "cube_grasped": 0.0}
    texts = {chain_of_thought(state, 0.35, RNG(s)) for s in range(30)}
    assert len(texts) > 5  # varied wording
    for text in texts:
        parsed = parse_progress(text, "percent")
        assert (parsed.status, parsed.value) == (ParseStatus.OK, 0.35)
        assert "4" in text and "cube" in text
    with pytest.raises(ValueError, match=r"progress=1.5 must be in \[0, 1\]"):
        chain_of_thought(state, 1.5, RNG(0))


def test_a_task_without_state_is_taught_its_progress_alone():
    # "the scene has not changed much" was written beside every answer, 91 % too
    texts = {chain_of_thought({}, 0.91, RNG(s)) for s in range(30)}
    assert texts == {
        "<think>So the task is about 91% done.</think><answer>91%</answer>",
        "<think>Overall progress: 91%.</think><answer>91%</answer>",
        "<think>I estimate 91% progress.</think><answer>91%</answer>",
        "<think>That puts the task at 91%.</think><answer>91%</answer>",
    }


def test_cut_points_and_clip():
    for seed in range(20):
        points = cut_points(40, 4, RNG(seed))
        assert len(points) == 4 and points == sorted(points)
        # One per bin of [1, 40): [1, 10.75), [10.75, 20.5), [20.5, 30.25), [30.25, 40).
        assert [
            1 <= points[0] < 11,
            10 <= points[1] < 21,
            20 <= points[2] < 31,
            30 <= points[3] < 40,
        ] == [True] * 4
    assert cut_points(1, 4, RNG(0)) == []
    f = _frames(t=8)
    # Frames 0..7, 4 of them uniformly: linspace(0, 7, 4) = 0, 2.33, 4.67, 7 → rounded 0, 2, 5, 7.
    assert (clip(f, 7, 4)[:, 0, 0, 0] // 30).tolist() == [0, 2, 5, 7]
    # Fewer frames than asked: they repeat, so the clip is as long as every other one.
    # linspace(0, 2, 8) = 0, .29, .57, .86, 1.14, 1.43, 1.71, 2 → 0, 0, 1, 1, 1, 1, 2, 2.
    assert (clip(f, 2, 8)[:, 0, 0, 0] // 30).tolist() == [0, 0, 1, 1, 1, 1, 2, 2]


def _episode(success: bool = True) -> Episode:
    t = 24
    return Episode(
        "ep", "Lift", "Lift the cube.",
        {"cam": RNG(0).integers(0, 256, (t, 28, 28, 3), dtype=np.uint8)},
        np.linspace(0, 1 if success else 0.8, t, dtype=np.float32), np.arange(t) * 2,
        success, None if success else "drop_after_lift", None if success else 30, 10.0, 7,
        {"gripper_to_cube_cm": np.linspace(9, 0, t), "cube_grasped": (np.arange(t) > 12).astype(float)},
    )  # fmt: skip


def test_every_kind_builds_and_every_completion_parses_to_its_target():
    for success in (True, False):
        samples = build_samples(_episode(success), KINDS, RNG(0), cuts=3, pretext_count=3)
        assert {s.kind for s in samples} == set(KINDS)
        for s in samples:
            assert s.episode_id == "ep" and s.seed == 7 and s.env_id == "Lift"
            if s.kind in ("progress", "sft", "score", "frozen"):
                assert s.target["progress"] == pytest.approx(
                    float(_episode(success).progress[s.frame])
                )
                assert len(s.prompt.videos) == 3  # initial, clip, current (PRIMO R1)
            if s.kind == "sft":
                parsed = parse_progress(s.completion, "percent")
                assert parsed.value == round(100 * s.target["progress"]) / 100
            if s.kind in ("score", "frozen"):  # the digit the score readout reads: round(9 p)
                assert s.prompt.answer == "digit"
                parsed = parse_progress(s.completion, "digit")
                assert parsed.value == pytest.approx(round(9 * s.target["progress"]) / 9)
                assert s.completion.startswith("<think></think><answer>")
            if s.kind == "failure":
                verdict = parse_verdict(s.completion, s.prompt.choices)
                assert (verdict.value, verdict.label) == (success, s.target["failure_type"])
            if s.kind in ("pretext", "joint"):
                parsed = parse_transform(s.completion, TRANSFORMS)
                assert parsed.value == s.target["transform"]
                assert s.target["transform"] in TRANSFORMS
            if s.kind == "joint":
                assert (
                    parse_progress(s.completion, "percent").value
                    == round(100 * s.target["progress"]) / 100
                )
    failure = next(s for s in build_samples(_episode(False), ["failure"], RNG(0)))
    # failure at env step 30, frames every 2 steps at 10 fps → 20 steps/s → 1.5 s
    assert "drop after lift at 1.5 s" in failure.completion
    with pytest.raises(ValueError, match=r"unknown sample kinds \['video'\]"):
        build_samples(_episode(), ["video"], RNG(0))


def test_a_failure_of_unknown_type_is_taught_as_the_plain_answer_the_parser_takes():
    import dataclasses

    from critic.train.rewards import verdict_reward

    rollout = dataclasses.replace(_episode(False), failure_type="unknown", failure_step=None)
    (sample,) = build_samples(rollout, ["failure"], RNG(0))  # a policy rollout that failed
    assert sample.completion.endswith("<answer>failure</answer>")
    verdict = parse_verdict(sample.completion, sample.prompt.choices)
    assert verdict.status is ParseStatus.OK and (verdict.value, verdict.label) == (False, None)
    fields = {"success": [False], "failure_type": ["unknown"], "choices": [sample.prompt.choices]}
    assert verdict_reward([sample.completion], **fields) == [1.0]  # the reference is right
    hyphen = parse_verdict("<answer>failure: drop-after-lift</answer>", ["drop_after_lift"])
    assert (hyphen.status, hyphen.label) == (ParseStatus.OK, "drop_after_lift")


@pytest.mark.parametrize(
    ("length", "drawn"),
    [
        (1, {"none", "rotate_90", "rotate_180", "rotate_270", "hflip"}),  # nothing to reorder
        # 2 frames shuffled are the 2 reversed: taught as both labels, every shuffle was a reverse
        (2, {"none", "rotate_90", "rotate_180", "rotate_270", "hflip", "reverse"}),
        (10, set(TRANSFORMS) - {"speed_2x"}),  # a speed_2x clip would be 5 frames, not 8
        (16, set(TRANSFORMS)),
    ],
)
def test_pretext_clips_are_all_as_long_and_only_of_transforms_that_fit(length, drawn):
    episode = Episode("ep", "Lift", "Lift.", {"cam": _frames(length, 4, 4)},
                      np.linspace(0, 1, length, dtype=np.float32), np.arange(length), True)  # fmt: skip
    samples = build_samples(episode, ["pretext"], RNG(0), pretext_count=200)
    assert {s.target["transform"] for s in samples} == drawn
    assert {len(s.prompt.videos[0]) for s in samples} == {min(8, length)}


def test_a_transform_is_never_labelled_on_a_clip_it_left_as_it_was():
    # a stall's frames are alike byte for byte: reversed or shuffled, its clip was the clip as it
    # was, labelled reverse or shuffle, while its only right reading was "none"
    frames = _frames(16, 4, 4)
    frames[4:12] = frames[4]  # a still stretch of 8 frames in 16
    episode = Episode("ep", "Lift", "Lift.", {"cam": frames},
                      np.linspace(0, 1, 16, dtype=np.float32), np.arange(16), True)  # fmt: skip
    for length in (2, 3, 8):
        samples = build_samples(episode, ["pretext"], RNG(0), frames=length, pretext_count=300)
        temporal = [s for s in samples if s.target["transform"] in ("reverse", "shuffle")]
        assert temporal
        for s in samples:
            start, _ = s.meta["window"]
            if s.target["transform"] != "none":
                assert not np.array_equal(s.prompt.videos[0], frames[start : start + length])
    still = Episode("ep", "Lift", "Lift.", {"cam": np.repeat(frames[:1], 16, axis=0)},
                    np.zeros(16, dtype=np.float32), np.arange(16), False)  # fmt: skip
    samples = build_samples(still, ["pretext"], RNG(0), frames=3, pretext_count=100)
    # no window of a still episode changes under reverse, shuffle or speed_2x: shown as "none"
    temporal = {"reverse", "shuffle", "speed_2x"}
    assert {s.target["transform"] for s in samples} == set(TRANSFORMS) - temporal
    # unless "none" is no answer the prompt offers: then no sample (a "none" there was a label
    # outside the choices, every answer rewarded 0)
    assert not build_samples(still, ["pretext"], RNG(0), frames=3, pretext_count=50,
                             transforms=["reverse", "shuffle"])  # fmt: skip


def test_quarter_turns_of_non_square_frames_are_not_drawn():
    # a 4x6 clip turned is 6x4: the tower's grid gave the label away
    episode = Episode("ep", "Lift", "Lift.", {"cam": _frames(16, 4, 6)},
                      np.linspace(0, 1, 16, dtype=np.float32), np.arange(16), True)  # fmt: skip
    samples = build_samples(episode, ["pretext"], RNG(0), pretext_count=200)
    assert {s.target["transform"] for s in samples} == set(TRANSFORMS) - set(QUARTER_TURNS)
    assert {s.prompt.videos[0].shape[1:3] for s in samples} == {(4, 6)}


def test_short_shuffles_are_never_the_reverse():
    for t in (3, 4):  # one frame a group: the reversed order was a valid "shuffle"
        f = _frames(t=t)
        orders = {tuple(apply_transform("shuffle", f, RNG(seed))[:, 0, 0, 0] // 30)
                  for seed in range(200)}  # fmt: skip
        assert tuple(range(t)) not in orders and tuple(range(t))[::-1] not in orders
        assert len(orders) == (4 if t == 3 else 22)  # 3! - 2 and 4! - 2 orders are left
    with pytest.raises(ValueError, match="shuffle needs at least 3 frames, got 2"):
        apply_transform("shuffle", _frames(t=2), RNG(0))


def test_a_shuffle_never_shows_the_pixels_of_its_window_reversed():
    # an arm that moves to frame 5, then stays: a shuffle of [4, 5, 5] as [5, 5, 4] showed what
    # reverse shows, under another label (6 of 135 shuffles here)
    frames = _frames(t=16, h=2, w=2)
    frames[5:] = frames[5]
    episode = Episode("ep", "Lift", "Lift.", {"cam": frames},
                      np.linspace(0, 1, 16, dtype=np.float32), np.arange(16), True)  # fmt: skip
    from critic.data.samples import pretext_samples

    samples = pretext_samples(episode, RNG(0), count=400, frames=3,
                              transforms=("none", "reverse", "shuffle"))  # fmt: skip
    shuffles = [s for s in samples if s.target["transform"] == "shuffle"]
    assert len(shuffles) > 100
    for sample in shuffles:
        start, end = sample.meta["window"]
        assert not np.array_equal(sample.prompt.videos[0], frames[start:end][::-1])


def test_pretext_windows_reach_every_start_up_to_the_one_ending_at_the_last_frame():
    # an 8-frame episode has 3-frame windows starting at 0..5: the last one ends at the achieved
    # frame, which a window drawn from range(n - length) never showed
    from critic.data.samples import pretext_samples

    episode = Episode("ep", "Lift", "Lift.", {"cam": _frames(8, 2, 2)},
                      np.linspace(0, 1, 8, dtype=np.float32), np.arange(8), True)  # fmt: skip
    samples = pretext_samples(episode, RNG(0), count=200, frames=3, transforms=("none", "reverse"))
    assert {tuple(x.meta["window"]) for x in samples} == {(s, s + 3) for s in range(6)}


def test_a_joint_speed_2x_sample_asks_the_progress_of_the_last_frame_it_shows():
    # its target was the progress of the window's last frame, one the sped-up clip skips
    episode = Episode("ep", "Lift", "Lift.", {"cam": _frames(8, 2, 2)},
                      np.linspace(0, 0.7, 8, dtype=np.float32), np.arange(8), True)  # fmt: skip
    samples = build_samples(episode, ["joint"], RNG(0), frames=3, pretext_count=100)
    fast = [s for s in samples if s.target["transform"] == "speed_2x"]
    assert fast
    for sample in fast:
        start, end = sample.meta["window"]
        shown = (sample.prompt.videos[0][:, 0, 0, 0] // 30).tolist()
        assert end - start == 6 and shown == [start, start + 2, start + 4]
        assert sample.frame == start + 4 and sample.target["progress"] == pytest.approx(
            0.1 * (start + 4)
        )


def test_samples_own_their_pixels_so_the_episode_video_can_be_freed():
    # a view (the anchor frame video[0][None]) would pin the whole decoded episode in memory for
    # as long as its samples live: 3x a training set's memory (docs/zero_shot_rl.md)
    episode = _episode()
    video = episode.frames["cam"]
    for s in build_samples(episode, KINDS, RNG(0), cuts=3, pretext_count=3):
        for shown in s.prompt.videos:
            assert not np.shares_memory(shown, video), (s.kind, shown.shape)
    anchored = build_samples(episode, ["score"], RNG(0), cuts=2)[0]
    np.testing.assert_array_equal(anchored.prompt.videos[0][0], video[0])  # the same pixels


def test_frozen_samples_hold_the_freeze_frame_and_its_progress():
    video = _frames(t=8)  # frame t's pixels are 30 t + ..., so frame indices read back as // 30
    progress = np.array([0.0, 0.1, 0.3, 0.5, 0.7, 1.0, 1.0, 1.0], np.float32)  # achieved at 5
    episode = Episode("ep", "Reacher-v5", "Reach.", {"cam": video}, progress, np.arange(8), True)
    samples = frozen_samples(episode, RNG(0), count=200, frames=4)
    freezes = {s.meta["freeze"] for s in samples}
    assert freezes == {1, 2, 3, 4}  # inside the active part, before the first achieved frame
    for s in samples:
        f, c = s.meta["freeze"], s.meta["cut"]
        assert f < c <= 7 and s.frame == f and s.kind == "frozen"
        assert s.target["progress"] == pytest.approx(float(progress[f]))
        assert s.completion == f"<think></think><answer>{round(9 * progress[f])}</answer>"
        initial, shown, current = s.prompt.videos
        # The clip spreads 4 frames over 0..c of the frozen video 0, 1, .., f, f, .., f.
        expected = np.minimum(np.round(np.linspace(0, c, 4)).astype(int), f)
        assert (shown[:, 0, 0, 0] // 30).tolist() == expected.tolist()
        assert current[0, 0, 0, 0] // 30 == f and initial[0, 0, 0, 0] == 0
    # f = 2, c = 7 by hand: linspace(0, 7, 4) = 0, 2.33, 4.67, 7 → 0, 2, 5, 7 → frozen 0, 2, 2, 2.
    s = next(s for s in samples if (s.meta["freeze"], s.meta["cut"]) == (2, 7))
    assert (s.prompt.videos[1][:, 0, 0, 0] // 30).tolist() == [0, 2, 2, 2]
    # Too short to freeze (achieved at frame 1, or two frames): none.
    assert frozen_samples(Episode("s", "R", "Reach.", {"cam": video[:3]},
                                  np.array([0.0, 1.0, 1.0]), np.arange(3), True), RNG(0)) == []  # fmt: skip
    assert frozen_samples(Episode("s", "R", "Reach.", {"cam": video[:2]},
                                  np.array([0.0, 0.5]), np.arange(2), False), RNG(0)) == []  # fmt: skip


def test_splits():
    splits = [seed_split(s) for s in range(10_000)]
    assert splits == [seed_split(s) for s in range(10_000)]  # fixed
    assert abs(splits.count("test") / 10_000 - 0.1) < 0.02
    assert abs(splits.count("val") / 10_000 - 0.1) < 0.02
    assert (
        task_split("Door", held_out=["Door"]) == "zero_shot"
        and task_split("Lift", ["Door"]) == "train"
    )


def test_a_failure_type_of_ones_own_is_offered_taught_and_recorded(tmp_path):
    """An expert of one's own (docs/tasks.md) injects types outside the built-in vocabulary:
    they were taught as a plain 'failure', offered in no prompt, and scored as 'failure'."""
    from dataclasses import replace
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from critic.base import FAILURE_TYPES
    from critic.data.episodes import write_episode
    from critic.data.samples import failure_vocabulary, seed_split
    from critic.models import FAILURE_TYPES_KEY
    from critic.train.draws import load_samples, record_draws

    # built-in types first, then the data's own once each (one spelling), never 'unknown'
    assert failure_vocabulary(["stall", "flip", "Flip", "unknown", None, "Missed grasp"]) == (
        *FAILURE_TYPES,
        "Flip",
    )
    seeds = [s for s in range(50) if seed_split(s) == "train"][:2]
    flipped = replace(_episode(False), episode_id="flip", failure_type="flip", seed=seeds[0])
    for episode in (flipped, replace(_episode(True), episode_id="ok", seed=seeds[1])):
        write_episode(episode, tmp_path)
    cfg = OmegaConf.create({"data": [str(tmp_path)], "seed": 0, "frames": 2, "cuts": 1,
                            "frozen_count": 1, "pretext_count": 1, "transforms": list(TRANSFORMS),
                            "held_out_tasks": [], "task_frames": {}})  # fmt: skip
    (failure,) = [s for s in load_samples(cfg, ("failure",), "train") if not s.target["success"]]
    assert failure.prompt.choices == (*FAILURE_TYPES, "flip")
    assert failure.completion.endswith("<answer>failure: flip</answer>")
    config = SimpleNamespace()
    record_draws(config, cfg)  # what a checkpoint saves, and a critic loaded from it offers
    assert getattr(config, FAILURE_TYPES_KEY) == [*FAILURE_TYPES, "flip"]
    assert config.viscritic_tasks == ["Lift"]  # the tasks it was trained on (critic.base)
    cfg.held_out_tasks = ["Lift"]  # a held-out task's types stay unseen, as its episodes
    record_draws(config, cfg)
    assert getattr(config, FAILURE_TYPES_KEY) == list(FAILURE_TYPES)


def test_a_task_only_the_starting_checkpoint_knows_keeps_its_clip_length(tmp_path):
    # a run on Lift alone from a checkpoint that read Reacher at 1 frame and Pusher at 8 had
    # recorded Reacher at this run's frames=, so a critic loaded from it sent Reacher 2 frames
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from critic.data.episodes import write_episode
    from critic.train.draws import record_draws

    write_episode(_episode(True), tmp_path)  # a Lift episode
    cfg = OmegaConf.create({"data": [str(tmp_path)], "frames": 2, "held_out_tasks": [],
                            "task_frames": {}, "transforms": list(TRANSFORMS)})  # fmt: skip
    start = {"viscritic_clip_frames": 8, "viscritic_task_clip_frames": {"Reacher-v5": 1},
             "viscritic_tasks": ["Lift", "Pusher-v5", "Reacher-v5"]}  # fmt: skip
    config = SimpleNamespace(**start)
    record_draws(config, cfg)
    assert config.viscritic_clip_frames == 2  # this run's, which Lift was trained at
    assert config.viscritic_task_clip_frames == {"Reacher-v5": 1, "Pusher-v5": 8}
    assert config.viscritic_tasks == ["Lift", "Pusher-v5", "Reacher-v5"]
    # a task this run trains takes this run's length, as given or frames=
    cfg.task_frames = {"Lift": 4}
    config = SimpleNamespace(**start)
    record_draws(config, cfg)
    assert config.viscritic_task_clip_frames == {"Reacher-v5": 1, "Pusher-v5": 8, "Lift": 4}
    # a starting checkpoint read at this run's length needs no entry of its own
    cfg.task_frames, cfg.frames = {}, 8
    config = SimpleNamespace(**start)
    record_draws(config, cfg)
    assert config.viscritic_task_clip_frames == {"Reacher-v5": 1}
    # one from before the task list was recorded keeps the lengths it names
    config = SimpleNamespace(viscritic_clip_frames=8, viscritic_task_clip_frames={"Reacher-v5": 1})
    record_draws(config, cfg)
    assert config.viscritic_task_clip_frames == {"Reacher-v5": 1}


def test_the_top_digit_can_be_kept_for_the_task_achieved():
    from critic.data.samples import build_samples, digit_label

    # round(9 p) teaches 9 from p = 17/18 on: a Reacher arm 3 cm short (p 0.957) read as done, and
    # the readout's P(9) is its P(achieved)
    assert [digit_label(p) for p in (0.0, 0.5, 0.944, 0.957, 1.0)] == [0, 4, 8, 9, 9]
    assert [digit_label(p, "achieved") for p in (0.0, 0.5, 0.944, 0.957, 1.0)] == [0, 4, 8, 8, 9]
    with pytest.raises(ValueError, match=r"top_digit='top'; pick one of \['round', 'achieved'\]"):
        digit_label(0.5, "top")
    video = _frames(t=8)
    progress = np.array([0.0, 0.3, 0.6, 0.9, 0.96, 0.98, 1.0, 1.0], np.float32)
    episode = Episode("ep", "Reacher-v5", "Reach.", {"cam": video}, progress, np.arange(8), True)
    for rule in ("round", "achieved"):
        built = build_samples(episode, ["score", "frozen"], RNG(0), cuts=8, frozen_count=20,
                              frames=4, top_digit=rule)  # fmt: skip
        for s in built:
            p = float(progress[s.frame])
            assert s.completion == f"<think></think><answer>{digit_label(p, rule)}</answer>"
        nines = {s.frame for s in built if s.completion.endswith(">9</answer>")}
        assert nines == ({4, 5, 6, 7} if rule == "round" else {6, 7})  # frames 4, 5: 0.96, 0.98
        # the outcome stage's reward pays what the label teaches: it paid 9 over the label's 8
        # at 0.96 and 0.98 (0.96 against 0.929; 0.98 against 0.909)
        from critic.train.grpo import sample_fields
        from critic.train.rewards import progress_accuracy_reward

        short = [s for s in built if s.frame in (4, 5)]
        fields = sample_fields(short, 1)
        paid = {}
        for digit in (8, 9):
            answer = f"<think></think><answer>{digit}</answer>"
            paid[digit] = progress_accuracy_reward([answer] * len(short), **fields)
        best = [8 if eight > nine else 9 for eight, nine in zip(paid[8], paid[9], strict=True)]
        assert best == [digit_label(float(progress[s.frame]), rule) for s in short]
