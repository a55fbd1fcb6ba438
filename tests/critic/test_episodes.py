"""Episodes on disk: lossless round trip, lossy closeness, resumable rows, clear errors on damage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from critic.data.episodes import (
    Episode,
    EpisodeFormatError,
    finished_ids,
    iter_episodes,
    read_episode,
    read_table,
    write_episode,
)
from critic.data.video import read_video


def _episode(episode_id: str = "ep0", t: int = 12, size: int = 48, failure: str | None = None):
    rng = np.random.default_rng(0)
    return Episode(
        episode_id=episode_id,
        env_id="Reacher-v5",
        instruction="Move the fingertip to the red target.",
        frames={
            "top": rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8),
            "side": rng.integers(0, 256, (t, size, size + 16, 3), dtype=np.uint8),
        },
        progress=np.linspace(0, 1, t, dtype=np.float32),
        steps=np.arange(t, dtype=np.int64) * 2,
        success=failure is None,
        failure_type=failure,
        failure_step=7 if failure else None,
        fps=10.0,
        seed=3,
        state={"distance": np.linspace(0.2, 0.0, t, dtype=np.float32)},
    )


def test_lossless_round_trip_is_identical(tmp_path):
    episode = _episode(failure="stall")
    write_episode(episode, tmp_path, codec="ffv1")
    loaded = read_episode(tmp_path, "ep0")
    assert loaded.cameras == ["top", "side"]
    for camera in episode.cameras:
        np.testing.assert_array_equal(loaded.frames[camera], episode.frames[camera])
    np.testing.assert_array_equal(loaded.progress, episode.progress)
    np.testing.assert_array_equal(loaded.steps, episode.steps)
    np.testing.assert_array_equal(loaded.state["distance"], episode.state["distance"])
    assert (loaded.success, loaded.failure_type, loaded.failure_step) == (False, "stall", 7)
    assert (loaded.instruction, loaded.env_id, loaded.fps, loaded.seed) == (
        episode.instruction, "Reacher-v5", 10.0, 3,
    )  # fmt: skip
    only_top = read_episode(tmp_path, "ep0", cameras=["top"])
    assert only_top.cameras == ["top"]


def test_h264_is_close_and_smaller(tmp_path):
    # A smooth image (what renders look like): lossy coding keeps it close.
    t, size = 10, 64
    y, x = np.mgrid[0:size, 0:size]
    smooth = np.stack([(x * 4 + k * 3) % 256 for k in range(t)]).astype(np.uint8)
    frames = np.repeat(smooth[..., None], 3, axis=-1)
    frames[..., 1] = (y * 4).astype(np.uint8)
    episode = Episode("smooth", "Lift", "lift", {"cam": frames}, np.zeros(t, np.float32),
                      np.arange(t), success=True)  # fmt: skip
    write_episode(episode, tmp_path / "lossless", codec="ffv1")
    write_episode(episode, tmp_path / "lossy", codec="h264")
    loaded = read_episode(tmp_path / "lossy", "smooth").frames["cam"]
    assert loaded.shape == frames.shape
    assert np.abs(loaded.astype(int) - frames.astype(int)).mean() < 4
    lossy = (tmp_path / "lossy" / "videos" / "smooth.cam.mkv").stat().st_size
    lossless = (tmp_path / "lossless" / "videos" / "smooth.cam.mkv").stat().st_size
    assert lossy < lossless


def test_rows_mark_finished_episodes_and_iterate_in_order(tmp_path):
    assert finished_ids(tmp_path) == set()
    for name in ("b", "a"):
        write_episode(_episode(name, t=4, size=32), tmp_path)
    # A video without its row is an unfinished episode: not listed, not loaded.
    (tmp_path / "videos" / "c.top.mkv").write_bytes(b"partial")
    assert finished_ids(tmp_path) == {"a", "b"}
    assert [e.episode_id for e in iter_episodes(tmp_path)] == ["a", "b"]
    assert [r["episode_id"] for r in read_table(tmp_path)] == ["a", "b"]


def test_damaged_files_name_the_file(tmp_path):
    write_episode(_episode(t=6, size=32), tmp_path)
    video = tmp_path / "videos" / "ep0.top.mkv"
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 3])  # truncated
    with pytest.raises(EpisodeFormatError) as err:
        read_episode(tmp_path, "ep0")
    assert str(err.value).startswith(f"{video}:")
    assert str(err.value).endswith(
        f"To record the episode again, delete {tmp_path / 'episodes' / 'ep0.parquet'} and re-run "
        "synthesize.py with the same out= and options (it records only what is missing)"
    )
    # read alone, as an external video is (no row to say how many frames): its header says
    with pytest.raises(
        EpisodeFormatError, match=r"frames decoded, ending at .* the file is cut short"
    ):
        read_video(video)
    video.write_bytes(b"\x00" * 100)  # garbage
    with pytest.raises(EpisodeFormatError, match=f"^{video}: not a readable video"):
        read_episode(tmp_path, "ep0")
    video.unlink()
    with pytest.raises(EpisodeFormatError, match=f"^{video}: no such video file"):
        read_episode(tmp_path, "ep0")
    row = tmp_path / "episodes" / "ep0.parquet"
    row.write_bytes(b"not parquet")
    with pytest.raises(EpisodeFormatError, match=f"^{row}: not a readable parquet file"):
        read_episode(tmp_path, "ep0")
    # the table eval_critic lists says how to mend it too (it said only "not readable")
    from critic.data.episodes import read_table

    with pytest.raises(EpisodeFormatError) as err:
        read_table(tmp_path)
    assert str(err.value).startswith(f"{row}: not a readable parquet file (")
    assert str(err.value).endswith(
        f"). To record the episode again, delete {row} and re-run synthesize.py with the same "
        "out= and options (it records only what is missing)"
    )
    with pytest.raises(EpisodeFormatError, match="no such episode file"):
        read_episode(tmp_path, "missing")


def test_inconsistent_episodes_are_refused(tmp_path):
    with pytest.raises(EpisodeFormatError, match="per-frame fields disagree in length"):
        Episode("x", "Lift", "lift", {"cam": np.zeros((3, 8, 8, 3), np.uint8)},
                np.zeros(4, np.float32), np.arange(3), success=True)  # fmt: skip
    with pytest.raises(EpisodeFormatError, match="frames must be uint8"):
        Episode("x", "Lift", "lift", {"cam": np.zeros((3, 8, 8), np.uint8)},
                np.zeros(3, np.float32), np.arange(3), success=True)  # fmt: skip
    odd = Episode("odd", "Lift", "lift", {"cam": np.zeros((2, 9, 8, 3), np.uint8)},
                  np.zeros(2, np.float32), np.arange(2), success=True)  # fmt: skip
    with pytest.raises(EpisodeFormatError, match="h264 needs even frame sides, got 9x8"):
        write_episode(odd, tmp_path, codec="h264")
    with pytest.raises(EpisodeFormatError, match="codec='png' is not supported"):
        write_episode(odd, tmp_path, codec="png")
    # a list of frames was an AttributeError ('list' object has no attribute 'dtype'); a success
    # of "False" and progress past 1 were kept as given
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    for fields, says in (
        ({"frames": {"cam": list(frames)}}, "episode 'x' camera 'cam': frames must be a numpy "
         "array, got a list; pass np.asarray(frames, np.uint8)"),
        ({"success": "False"}, "episode 'x': success='False' must be True or False"),
        ({"progress": ["0", "0.5", "x"]}, "episode 'x': progress must be numbers, one per frame "
         "(could not convert string to float: 'x')"),
        ({"progress": np.array([0, 0.5, 1.5], np.float32)}, "episode 'x': progress holds values "
         "outside [0, 1] ([1.5]); progress is the share of the task done, NaN where unknown"),
    ):  # fmt: skip
        given = {"frames": {"cam": frames}, "progress": np.zeros(3, np.float32), "success": True}
        with pytest.raises(EpisodeFormatError) as err:
            Episode("x", "Lift", "lift", steps=np.arange(3), **{**given, **fields})
        assert str(err.value) == says
    unknown = np.full(3, np.nan, np.float32)  # an external video's: no progress to read
    assert Episode("x", "Lift", "lift", {"cam": frames}, unknown, np.arange(3), np.bool_(True))


def test_an_expert_is_neither_a_failure_nor_a_policy_rollout():
    from critic.data.episodes import injected_failure

    assert _episode("Reacher-v5-000003-expert").expert
    assert not _episode("Reacher-v5-000003-stall", failure="stall").expert
    # a learner's rollout that succeeded has no failure type, and is still no expert's episode
    assert not _episode("Reacher-v5-000003-policy_4f8f09d4").expert
    assert not _episode("Reacher-v5-000003-policy_4f8f09d4-hindsight_uniform").expert
    # nor is an injected failure that succeeded all the same (flailing onto Reacher's target:
    # seed 369 of 800; it had joined the expert metrics and probes with its label's dips)
    assert not _episode("Reacher-v5-000369-flail").expert
    assert injected_failure("Lift-000003-missed_grasp") == "missed_grasp"
    # seeds from 1,000,000 have seven digits: such an injected failure that succeeded had read
    # as an expert's episode
    assert injected_failure("Reacher-v5-1000268-flail") == "flail"
    assert not _episode("Reacher-v5-1000268-flail").expert
    assert injected_failure("Reacher-v5-000003-policy_4f8f09d4") is None
    assert _episode("my-own-episode").expert  # an id of another form: read by its failure alone


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("progress", [0.0, None, 0.5, 1.0], r"its progress field \[0\.0, None, 0\.5, 1\.0\] is not valid \(a list of numbers is needed, one per frame\)"),
        ("steps", ["0", "2", "4", "6"], r"its steps field \['0', '2', '4', '6'\] is not valid"),
        ("seed", "three", r"its seed field 'three' is not valid \(an integer is needed, not str\)"),
        ("fps", None, r"its fps field None is not valid \(a number is needed, not NoneType\)"),
        ("success", "yes", r"its success field 'yes' is not valid \(true or false is needed"),
        ("failure_step", 2.5, r"its failure_step field 2\.5 is not valid"),
        ("state", '{"distance": [0.2, null, 0.1, 0.0]}', r"its state field .* is not valid"),
        ("state", "not json", r"its state field 'not json' is not valid \(Expecting value"),
        ("env_id", None, r"its env_id field None is not valid \(a string is needed, not NoneType\)"),
    ],
)  # fmt: skip
def test_a_row_edited_by_hand_names_the_field_it_got_wrong(tmp_path, field, value, says):
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_episode(_episode(t=4, size=16), tmp_path)
    path = tmp_path / "episodes" / "ep0.parquet"
    row = pq.read_table(path).to_pylist()[0]
    row[field] = value  # another program, or a hand, wrote it
    pq.write_table(pa.Table.from_pylist([row]), path)
    with pytest.raises(EpisodeFormatError, match=f"^{path}: {says}") as err:
        read_episode(tmp_path, "ep0")
    assert str(err.value).endswith("(it records only what is missing)")
    # so does the listing the evaluator reads rows from before it decodes any episode (an edited
    # row had ended in a KeyError or TypeError there)
    with pytest.raises(EpisodeFormatError, match=f"^{path}: {says}") as err:
        read_table(tmp_path)
    assert str(err.value).endswith("(it records only what is missing)")


def test_step_seconds_is_the_recording_gap_not_the_mean_one():
    # Reacher at 50 frames/s recorded every 4 steps (12.5 frames/s) ends at step 50: frames at
    # 0, 4, ..., 48 and the last at 50. The mean gap, 50 / 13 = 3.85, read 0.0208 s a step for
    # the true 0.02 (a "stall at 0.3 s" in a rationale, a detection delay 4 % short)
    episode = _episode(t=14)
    episode.steps, episode.fps = np.asarray([*range(0, 49, 4), 50]), 12.5
    assert episode.step_seconds == pytest.approx(0.02)
    episode.steps, episode.fps = np.arange(5), 30.0  # every step, as external videos are read
    assert episode.step_seconds == pytest.approx(1 / 30)


def test_a_folder_named_like_a_partition_reads(tmp_path):
    # pyarrow read .../seed=0/ as a partition and added seed as a column: every row of the folder
    # failed to read, and the message told the user to delete good files
    root = tmp_path / "seed=0" / "success=false"
    write_episode(_episode(failure="stall"), root, codec="ffv1")
    assert [row["seed"] for row in read_table(root)] == [3]
    assert read_episode(root, "ep0").failure_type == "stall"


def test_episode_ids_of_a_task():
    from critic.data.episodes import episode_of

    assert episode_of("Reacher-v5", "Reacher-v5-000003-expert")
    assert episode_of("Reacher-v5", "Reacher-v5-1000003-stall")
    assert not episode_of("Reacher-v5", "Reacher-v5-0003-expert")
    assert not episode_of("Lift", "Reacher-v5-000003-expert")


def test_a_row_that_cannot_be_written_is_named_and_leaves_no_episode(tmp_path, monkeypatch):
    # a file-size limit or a full disk: pyarrow's "[Errno 27] Error writing bytes to file" named
    # no file. The video is written, the row is not: the episode does not count as finished
    import errno

    import pyarrow.parquet as pq

    def full(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1")  # cut short, as a full disk leaves it
        raise OSError(errno.EFBIG, "Error writing bytes to file")

    monkeypatch.setattr(pq, "write_table", full)
    with pytest.raises(OSError) as err:
        write_episode(_episode(), tmp_path)
    assert err.value.filename == str(tmp_path / "episodes" / "ep0.parquet")
    assert finished_ids(tmp_path) == set()
    assert list((tmp_path / "episodes").iterdir()) == []
