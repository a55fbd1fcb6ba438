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
