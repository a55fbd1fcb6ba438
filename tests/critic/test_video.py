"""Any video read back: whole files, files cut short, frames held on screen or changing size."""

from __future__ import annotations

import numpy as np
import pytest

from critic.data.errors import EpisodeFormatError
from critic.data.video import read_video


def test_a_last_frame_held_on_screen_is_not_a_cut_short_video(tmp_path):
    # a GIF whose last frame shows for 3 s of its 3.9: the header's length is the frames' own
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(10)]
    images[0].save(tmp_path / "held.gif", save_all=True, append_images=images[1:],
                   duration=[100] * 9 + [3000])  # fmt: skip
    frames, _ = read_video(tmp_path / "held.gif")
    assert len(frames) == 10


def _mkv_with_audio(path, sizes):
    """An ffv1 video (frame i filled with i, of the size ``sizes[i]``) with a flac track beside
    it, 30 fps, as recordings with sound come: mkv gives no stream duration, only tags."""
    import av

    with av.open(str(path), "w") as container:
        video = container.add_stream("ffv1", rate=30)
        video.width, video.height = sizes[0][1], sizes[0][0]
        video.pix_fmt = "bgr0"
        audio = container.add_stream("flac", rate=44100)
        sent = 0
        for i, (h, w) in enumerate(sizes):
            frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), i, np.uint8), format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
            while sent * 1024 < (i + 1) / 30 * 44100:
                sound = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.int16), format="s16",
                                                   layout="mono")  # fmt: skip
                sound.sample_rate, sound.pts = 44100, sent * 1024
                for packet in audio.encode(sound):
                    container.mux(packet)
                sent += 1
        for stream in (video, audio):
            for packet in stream.encode(None):
                container.mux(packet)


def test_a_cut_short_video_with_a_sound_track_is_refused(tmp_path):
    # mkv and webm give no stream duration and an audio track hid the container's: the check was
    # skipped and 34 of 60 frames read as the whole video; the track's DURATION tag says 2 s
    _mkv_with_audio(tmp_path / "full.mkv", [(48, 64)] * 60)
    assert len(read_video(tmp_path / "full.mkv")[0]) == 60
    data = (tmp_path / "full.mkv").read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])
    with pytest.raises(EpisodeFormatError, match=r"where its header says the video runs 2\.00 s"):
        read_video(tmp_path / "cut.mkv")


def test_a_video_whose_frames_change_size_needs_a_size_to_be_read_at(tmp_path):
    # two MPEG-TS recordings joined byte by byte (as segmented recorders write them), at two
    # sizes: a raw numpy error ("all input arrays must have the same shape") from np.stack before
    import av

    def segment(w, h):
        path = tmp_path / f"{w}x{h}.ts"
        with av.open(str(path), "w", format="mpegts") as container:
            stream = container.add_stream("mpeg2video", rate=15)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            for _ in range(15):
                frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), 100, np.uint8), "rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
        return path.read_bytes()

    joined = tmp_path / "joined.ts"
    joined.write_bytes(segment(64, 48) + segment(96, 64))
    with pytest.raises(EpisodeFormatError, match=r"its frames change size \(64x48, 96x64\)"):
        read_video(joined)
    assert read_video(joined, size=32)[0].shape[1:] == (32, 32, 3)


@pytest.mark.parametrize("codec", ["ffv1", "h264"])
def test_the_same_frames_make_the_same_bytes(tmp_path, codec):
    # Matroska's random segment and track ids and its write date made every re-recorded video
    # differ (44 bytes): checksums and data versioning saw a new file for the same episode
    from critic.data.video import write_video

    frames = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    write_video(tmp_path / "a.mkv", frames, 10.0, codec)
    write_video(tmp_path / "b.mkv", frames, 10.0, codec)
    assert (tmp_path / "a.mkv").read_bytes() == (tmp_path / "b.mkv").read_bytes()


def _write(path, pts_ms, codec="ffv1", shape=(48, 64), marker=False):
    """Frame i filled with 10 i (a marker block in its top-left corner), shown from pts_ms[i]."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = shape[1], shape[0], "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, pts in enumerate(pts_ms):
            pixels = np.full((*shape, 3), 10 * i, np.uint8)
            if marker:
                pixels[:8, :8] = 250
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def test_a_variable_frame_rate_video_is_read_on_a_constant_clock(tmp_path):
    # 10 frames at 30 fps, then 10 shown half a second each (a phone's): mkv's average rate said
    # 30 fps, so the video read as 0.67 s long where it runs 5.4 s, and the frame a time named
    # was another (frame 15 for 0.5 s, shown at 2.8 s)
    shown_from = [33 * i for i in range(10)] + [330 + 500 * (i + 1) for i in range(10)]
    _write(tmp_path / "vfr.mkv", shown_from)
    frames, fps = read_video(tmp_path / "vfr.mkv")
    # every tick shows the frame on screen at its time (a tick is at most a quarter of a frame's
    # share of the video: 4x as many frames, so the fast stretch is read a tick at a time)
    for index in range(len(frames)):
        on_screen = max(i for i, pts in enumerate(shown_from) if pts <= 1000 * index / fps + 1e-6)
        assert abs(int(frames[index].mean()) - 10 * on_screen) <= 2, index
    assert frames[int(4.0 * fps)].mean() == pytest.approx(10 * 16, abs=2)  # shown from 3.83 s
    assert len(frames) / fps == pytest.approx(5.33 + 1 / fps, abs=0.01)  # the last shown at 5.33 s
    # a constant rate is read frame for frame
    frames, fps = read_video(_write(tmp_path / "cfr.mkv", [33 * i for i in range(20)]) or
                             tmp_path / "cfr.mkv")  # fmt: skip
    assert len(frames) == 20 and fps == pytest.approx(30, rel=0.05)


@pytest.mark.parametrize("clock", ["constant", "variable"])
def test_a_long_video_keeps_max_frames_and_converts_no_more_than_it_holds(
    tmp_path, monkeypatch, clock
):
    # every frame was converted and stacked before the 512 kept were picked: an external video's
    # memory grew with its length (6,000 frames at 256²: 2.3 GB for the 100 MB kept)
    import critic.data.video as video

    shown_from = [33 * i for i in range(24)]
    if clock == "variable":  # then frames held half a second each: 4x as many ticks as frames
        shown_from += [33 * 24 + 500 * (i + 1) for i in range(12)]
    _write(tmp_path / "long.mkv", shown_from)
    every, rate = read_video(tmp_path / "long.mkv")
    converted = []
    pixels = video._pixels
    monkeypatch.setattr(video, "_pixels", lambda f, size: converted.append(1) or pixels(f, size))
    kept, kept_rate = read_video(tmp_path / "long.mkv", max_frames=10)
    picked = np.linspace(0, len(every) - 1, 10).round().astype(int)
    np.testing.assert_array_equal(kept, every[picked])
    assert kept_rate == pytest.approx(rate * 9 / (len(every) - 1))
    # the first pass converts max_frames before it knows the video is longer, the second pass
    # only the frames kept (a variable clock repeats frames: fewer distinct ones)
    assert len(converted) <= 10 + len(set(picked.tolist()))
    assert len(converted) < len(shown_from)
    # a video no longer than max_frames is read once, as it is
    converted.clear()
    few, _ = read_video(tmp_path / "long.mkv", max_frames=len(shown_from))
    assert len(converted) == len(shown_from)
    if clock == "constant":
        np.testing.assert_array_equal(few, every)
    with pytest.raises(
        ValueError, match=r"^max_frames=1 must be None \(every frame\) or a count >= 2"
    ):
        read_video(tmp_path / "long.mkv", max_frames=1)


def test_a_video_stored_sideways_is_turned_as_its_display_matrix_says(tmp_path):
    import struct

    _write(tmp_path / "flat.mp4", [33 * i for i in range(4)], codec="libx264", marker=True)
    data = bytearray((tmp_path / "flat.mp4").read_bytes())
    # a phone's portrait recording: the track header's matrix turns the stored frame a quarter
    # clockwise (mp4's tkhd, version 0: the matrix follows 76 bytes of other fields)
    at = data.find(b"tkhd") + 4 + 4 + 4 + 4 + 4 + 4 + 4 + 8 + 2 + 2 + 2 + 2
    data[at : at + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    (tmp_path / "portrait.mp4").write_bytes(bytes(data))
    frames, _ = read_video(tmp_path / "portrait.mp4")
    # it was read as stored: 48x64, the marker top left; shown turned, the marker is top right
    assert frames.shape[1:] == (64, 48, 3)
    assert frames[0, :8, -8:].mean() > 200 and frames[0, :8, :8].mean() < 100


def test_a_video_cut_a_few_seconds_short_of_its_stream_s_length_is_refused(tmp_path):
    # the stream's own length allowed 5 % of slack: 2.3 s of a minute went without a word
    _write(tmp_path / "minute.mkv", [round(1000 * i / 30) for i in range(1800)], shape=(16, 16))
    data = (tmp_path / "minute.mkv").read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: int(len(data) * 0.955)])
    with pytest.raises(EpisodeFormatError, match=r"the file is cut short"):
        read_video(tmp_path / "cut.mkv")
    assert len(read_video(tmp_path / "minute.mkv")[0]) == 1800


def test_a_second_camera_s_stream_is_named_and_the_first_read(tmp_path):
    import av

    with av.open(str(tmp_path / "two.mkv"), "w") as container:
        small, main = container.add_stream("ffv1", rate=10), container.add_stream("ffv1", rate=10)
        for stream, (h, w) in ((small, (24, 32)), (main, (48, 64))):
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(4):
            for stream in (small, main):
                pixels = np.full((stream.height, stream.width, 3), 10 * i, np.uint8)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        for stream in (small, main):
            container.mux(stream.encode(None))
    # a multi-camera recording was scored on whichever camera was muxed first, without a word
    with pytest.warns(UserWarning, match=r"holds 2 video streams \(32x24, 64x48\); the first "
                      r"\(32x24\) is read"):  # fmt: skip
        frames, _ = read_video(tmp_path / "two.mkv")
    assert frames.shape == (4, 24, 32, 3)


def test_a_constant_rate_whose_stamps_round_to_ticks_and_a_cover_picture_read_as_they_are(
    tmp_path,
):
    import warnings

    import av

    from critic.data.video import write_video

    # mkv stamps whole milliseconds: a 600 fps episode's gaps read 1 and 2 ms, which the
    # variable-rate check took for a phone's (40 frames read as 66, and the episode refused)
    frames = (np.arange(40, dtype=np.uint8) * 5)[:, None, None, None].repeat(16, 1).repeat(16, 2)
    write_video(tmp_path / "fast.mkv", np.repeat(frames, 3, axis=3), 600.0, "ffv1")
    read, fps = read_video(tmp_path / "fast.mkv")
    assert len(read) == 40 and fps == pytest.approx(600)
    # an mp4's thumbnail (a stream marked attached_pic) is no second camera
    with av.open(str(tmp_path / "cover.mp4"), "w") as container:
        video = container.add_stream("libx264", rate=30)
        video.width = video.height = 64
        video.pix_fmt = "yuv420p"
        cover = container.add_stream("mjpeg", rate=1)
        cover.width = cover.height = 32
        cover.pix_fmt = "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        picture = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 200, np.uint8), format="rgb24")
        for packet in [*cover.encode(picture), *cover.encode(None)]:
            container.mux(packet)
        for i in range(30):
            pixels = np.full((64, 64, 3), 5 * i, np.uint8)
            container.mux(video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(video.encode(None))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "holds 2 video streams"
        read, _ = read_video(tmp_path / "cover.mp4")
    assert read.shape == (30, 64, 64, 3)
