"""critic.data.external: a user's own labelled videos (RoboFail-style), read as they come, messy
labels refused line by line with the fix (the well-formed cases and eval_critic's use of them are
in tests/experiments/test_eval_critic.py)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from critic.data.episodes import EpisodeFormatError
from critic.data.external import read_labelled_videos, read_labels
from critic.data.video import write_video

pytest.importorskip("av")


@pytest.fixture
def folder(tmp_path):
    """Two 6-frame videos, a.mkv and b.mkv, at 10 fps; no labels yet."""
    frames = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    for name in ("a", "b"):
        write_video(tmp_path / f"{name}.mkv", frames, 10.0, "ffv1")
    return tmp_path


def _label(folder, *rows) -> None:
    (folder / "labels.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )


A = {"video": "a.mkv", "instruction": "Pick up the cup.", "success": True}
B = {"video": "b.mkv", "instruction": "Pick up the cup.", "success": False}


def test_a_line_separator_inside_a_string_is_json_lines_not_a_new_line(folder):
    # splitlines() cut the line at U+2028 inside the instruction: "not JSON"
    _label(folder, {**A, "instruction": "Pick up the cup.\u2028Then stop."}, B)
    episodes = read_labelled_videos(folder, size=28)
    assert episodes[0].instruction == "Pick up the cup.\u2028Then stop."
    assert [e.success for e in episodes] == [True, False]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, r"labels.jsonl:1: not JSON \(maximum recursion depth"),
        ('{"video": "a.mkv", "success": false, "failure_time_s": ' + "1" * 5000 + "}",
         r"labels.jsonl:1: not JSON \(Exceeds the limit \(4300 digits\)"),
    ],
)  # fmt: skip
def test_json_python_cannot_read_is_a_typed_error(folder, line, message):
    # a RecursionError and a ValueError, raw tracebacks before
    (folder / "labels.jsonl").write_text(line + "\n")
    with pytest.raises(EpisodeFormatError, match=message):
        read_labels(folder)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        # misspelt: ignored, so the failure had no type and no time
        ([{**B, "failure_typ": "stall"}], "labels.jsonl:1: 'failure_typ' is not a label this "
         "loader reads; did you mean 'failure_type'? (it reads ['video', 'instruction', "
         "'success', 'failure_type', 'failure_time_s', 'split'])"),
        ([{**A, "failure_type": "stall", "failure_time_s": 0.2}], "labels.jsonl:1: success=true "
         "with ['failure_type', 'failure_time_s']: a successful video has no failure; set "
         "success=false, or drop failure_type and failure_time_s"),
        ([{**A, "instruction": "  "}], "labels.jsonl:1: instruction='  ' is empty: give the task "
         "in words"),
        # the confusion's own rows: counted as a success, or as unreadable with readable 1.0
        ([{**B, "failure_type": "Success"}], "labels.jsonl:1: failure_type='Success' is a verdict "
         "the evaluator reports, not a kind of failure; name how it failed (e.g. \"drop\"), or "
         "leave failure_type out"),
        ([{**B, "failure_type": "unreadable"}], "labels.jsonl:1: failure_type='unreadable' is a "
         "verdict"),
    ],
)  # fmt: skip
def test_labels_that_would_change_the_figures_silently_are_refused(folder, rows, message):
    _label(folder, *rows)
    with pytest.raises(EpisodeFormatError) as err:
        read_labelled_videos(folder)
    assert str(err.value).startswith(str(folder / message))


def test_the_users_own_keys_are_kept(folder):
    # instruction_id beside instruction was refused as a misspelling of it
    _label(folder, {**A, "robot": "franka", "operator": "ana", "instruction_id": 7, "videos": 2})
    assert read_labels(folder)[0][1]["robot"] == "franka"
    assert len(read_labelled_videos(folder)) == 1


def test_one_file_labelled_twice_under_another_name_is_refused(folder):
    # by its absolute path or a link to it: accepted, once as a success and once as a failure
    (folder / "link.mkv").symlink_to(folder / "a.mkv")
    for again in (str(folder / "a.mkv"), "link.mkv", "./a.mkv"):
        _label(folder, A, {**B, "video": again})
        with pytest.raises(EpisodeFormatError) as err:
            read_labels(folder)
        assert str(err.value) == (
            f"{folder / 'labels.jsonl'}:2: {again!r} is labelled again (the same file as line "
            "1); label each video once"
        )


def test_what_is_not_a_video_is_named(folder):
    # each read "not a readable video (tuple index out of range)" or "no such video file"
    (folder / "frames").mkdir()
    _label(folder, {**A, "video": "frames"})
    with pytest.raises(EpisodeFormatError) as err:
        read_labelled_videos(folder)
    assert str(err.value).startswith(
        f"{folder / 'frames'}: a folder, not a video file; frame folders are not read: encode "
        "the frames as one video first (e.g. ffmpeg -i"
    )
    import av

    with av.open(str(folder / "sound.wav"), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")  # fmt: skip
        frame.rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
    _label(folder, {**A, "video": "sound.wav"})
    with pytest.raises(EpisodeFormatError) as err:
        read_labelled_videos(folder)
    assert str(err.value) == f"{folder / 'sound.wav'}: holds no video stream (no frames to read)"
    (folder / "labels.jsonl").unlink()
    (folder / "labels.jsonl").mkdir()
    with pytest.raises(EpisodeFormatError, match=r"labels.jsonl: is a folder, not a file; an"):
        read_labels(folder)


def test_limit_decodes_the_first_videos_after_checking_every_line(folder):
    _label(folder, A, B, {**A, "video": "missing.mkv"})
    assert [e.episode_id for e in read_labelled_videos(folder, limit=2)] == ["a", "b"]
    _label(folder, A, B, {**A, "video": "c.mkv", "success": "yes"})  # a bad third line
    with pytest.raises(EpisodeFormatError, match=r"labels.jsonl:3: success='yes'"):
        read_labelled_videos(folder, limit=1)


@pytest.mark.parametrize(
    ("options", "says"),
    [
        # a bad size was blamed on the file ("not a readable video (Invalid argument)")
        ({"size": 0}, "size=0 must be None (the video's own) or one side in pixels, an integer "
         "from 1 to 8192, e.g. size=128"),
        ({"size": 100000}, "size=100000 must be None"),
        ({"size": (32, 48)}, "size=(32, 48) must be None"),
        # a negative limit dropped the last video without a word
        ({"limit": -1}, "limit=-1 must be None (every video) or a count >= 0 of the first "
         "videos to read"),
        ({"limit": 1.5}, "limit=1.5 must be None"),
    ],
)  # fmt: skip
def test_a_size_or_limit_it_cannot_take_is_named_not_blamed_on_a_video(folder, options, says):
    from critic.data.video import read_video

    _label(folder, A, B)
    with pytest.raises(ValueError) as err:
        read_labelled_videos(folder, **options)
    assert str(err.value).startswith(says) and not isinstance(err.value, EpisodeFormatError)
    if "size" in options:
        with pytest.raises(ValueError, match=r"^size="):
            read_video(folder / "a.mkv", size=options["size"])


def test_a_long_video_keeps_an_even_share_of_its_frames_and_its_failure_s_time(tmp_path):
    from critic.data.external import MAX_FRAMES

    # 40 s at 30 fps: every frame of every video stayed in memory (a minute at 448² is 1 GB)
    frames = (np.arange(1200) // 6).astype(np.uint8)[:, None, None, None]  # frame i: i // 6
    write_video(tmp_path / "long.mkv", np.broadcast_to(frames, (1200, 16, 16, 3)), 30.0, "ffv1")
    _label(tmp_path, {"video": "long.mkv", "instruction": "x", "success": False,
                      "failure_time_s": 30.0})  # fmt: skip
    (episode,) = read_labelled_videos(tmp_path, size=None)
    assert len(episode.frames["video"]) == MAX_FRAMES == 512
    assert len(episode.frames["video"]) / episode.fps == pytest.approx(40.0, rel=0.01)
    # the failure's step is still the frame shown 30 s in: frame 900, filled with 900 // 6 = 150
    assert episode.frames["video"][episode.failure_step].mean() == pytest.approx(150, abs=1)
    # the video's own length bounds a failure's time (the kept frames over their rate read 40.05
    # s, and 40.03 s passed, its step one past the last frame); one at its very end is its last
    for late, says in ((40.03, "is past the end of 'long.mkv' (40 s long)"), (40.0, None)):
        _label(tmp_path, {"video": "long.mkv", "instruction": "x", "success": False,
                          "failure_time_s": late})  # fmt: skip
        if says is None:
            (episode,) = read_labelled_videos(tmp_path, size=None)
            assert episode.failure_step == MAX_FRAMES - 1
            continue
        with pytest.raises(EpisodeFormatError, match=re.escape(says)):
            read_labelled_videos(tmp_path, size=None)


def test_a_key_given_twice_or_a_blank_failure_type_is_named(folder):
    # the last of two values was kept without a word; a blank type was a type of its own
    (folder / "labels.jsonl").write_text(
        '{"video": "b.mkv", "instruction": "x", "success": false, "failure_time_s": 0.5, '
        '"failure_time_s": 0.1}\n'
    )
    with pytest.raises(EpisodeFormatError, match=r"labels.jsonl:1: 'failure_time_s' is given "
                       r"twice \(0.5, then 0.1\); give each key once"):  # fmt: skip
        read_labels(folder)
    _label(folder, {**B, "failure_type": "  "})
    with pytest.raises(EpisodeFormatError, match=r"labels.jsonl:1: failure_type='  ' must be a "
                       r'name, e.g. "drop", or absent'):  # fmt: skip
        read_labels(folder)
