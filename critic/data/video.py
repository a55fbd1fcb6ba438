"""Episode videos through PyAV: writing an episode's frames, reading any video back.

Codecs: ``ffv1`` (lossless: frames load back bit-identical; the default for small frames) or
``h264`` (lossy, ~20x smaller; even frame sides). :func:`read_video` reads any container PyAV
does (an external dataset's mp4, webm, gif), checks it is whole, and resizes on request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from critic.data.errors import EpisodeFormatError
from rollout.checks import is_int
from rollout.imports import require_package
from rollout.warn import warn_user

CODECS = {
    # name: (PyAV codec, pixel format in the file, encoder options)
    "ffv1": ("ffv1", "bgr0", {}),
    "h264": ("libx264", "yuv420p", {"crf": "18", "preset": "veryfast"}),
}


def write_video(path: Path, frames: np.ndarray, fps: float, codec: str) -> None:
    """Encode uint8 ``frames`` ``[T, H, W, 3]`` into ``path`` at ``fps`` with ``codec`` (a key of
    :data:`CODECS`).

    Raises:
        EpisodeFormatError: ``h264`` with an odd frame side.
    """
    av = require_package("av", "data", "writing episode videos")
    name, pix_fmt, options = CODECS[codec]
    _, height, width, _ = frames.shape
    if codec == "h264" and (height % 2 or width % 2):
        raise EpisodeFormatError(
            f"{path}: h264 needs even frame sides, got {height}x{width}; use codec='ffv1'"
        )
    from fractions import Fraction

    # bitexact: no random segment and track ids, no write date, so the same frames make the same
    # bytes (checksums, deduplication and data versioning see a re-recorded episode as the same)
    with av.open(str(path), mode="w", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(name, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = dict(options)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))


# The largest side read_video resizes to (8K video's width).
MAX_VIDEO_SIDE = 8192


def check_video_size(size: Any) -> None:
    """A ValueError unless ``size`` is None or a side :func:`read_video` can resize to."""
    if size is not None and not (is_int(size) and 1 <= size <= MAX_VIDEO_SIDE):
        raise ValueError(
            f"size={size!r} must be None (the video's own) or one side in pixels, an integer "
            f"from 1 to {MAX_VIDEO_SIDE}, e.g. size=128"
        )


def read_video(
    path: str | Path, size: int | None = None, max_frames: int | None = None
) -> tuple[np.ndarray, float]:
    """Every frame of a video as uint8 ``[T, H, W, 3]`` (``size`` × ``size`` when given) and its
    frame rate (20 when the container does not say); with ``max_frames``, at most that many,
    evenly spread (the rate scaled to match, so a time still lands on its frame). Only the frames
    kept are converted and held: a video longer than ``max_frames`` is decoded twice, once for
    its timestamps and once for the kept frames, so memory does not grow with its length.
    :func:`read_video_and_length` gives its length in seconds too.

    Raises:
        EpisodeFormatError: the file is missing, unreadable, holds no frames, or is cut short
            (its frames end well before the length its header gives).
        ValueError: ``size`` is not a side in pixels (it was blamed on the file).
    """
    frames, rate, _ = read_video_and_length(path, size, max_frames)
    return frames, rate


def read_video_and_length(
    path: str | Path, size: int | None = None, max_frames: int | None = None
) -> tuple[np.ndarray, float, float]:
    """:func:`read_video`'s frames and rate, and the video's length in seconds (its frame count
    over its rate before ``max_frames`` spread fewer: the kept frames' count over their rate
    reads a little longer).

    Raises:
        EpisodeFormatError, ValueError: as :func:`read_video`.
    """
    check_video_size(size)
    if max_frames is not None and not (is_int(max_frames) and max_frames >= 2):
        raise ValueError(
            f"max_frames={max_frames!r} must be None (every frame) or a count >= 2 of frames to "
            "keep, e.g. max_frames=512"
        )
    av = require_package("av", "data", "reading videos")
    path = Path(path)
    if path.is_dir():
        raise EpisodeFormatError(
            f"{path}: a folder, not a video file; frame folders are not read: encode the frames "
            f"as one video first (e.g. ffmpeg -i {path}/%05d.png -c:v ffv1 {path}.mkv)"
        )
    if not path.is_file():
        raise EpisodeFormatError(f"{path}: no such video file")
    try:
        with av.open(str(path)) as container:
            cameras = _cameras(container, av)
            if not cameras:  # audio alone, or a video of no stream
                raise EpisodeFormatError(f"{path}: holds no video stream (no frames to read)")
            if len(cameras) > 1:  # a second camera: say which one is read
                shapes = [f"{v.width}x{v.height}" for v in cameras]
                warn_user(
                    f"{path}: holds {len(shapes)} video streams ({', '.join(shapes)}); the first "
                    f"({shapes[0]}) is read; keep the camera to score alone in its own file "
                    "(ffmpeg -i IN -map 0:v:1 -c copy OUT)"
                )
            stream = cameras[0]
            rate = stream.average_rate
            # how long the header says the video stream is (seconds; None when it does not say),
            # and whether the stream's own record says it (then a cut shows to within frames)
            own = True
            if stream.duration is not None and stream.time_base is not None:
                length = float(stream.duration * stream.time_base)
            elif (tagged := _tagged_duration(stream.metadata)) is not None:  # mkv/webm tracks
                length = tagged
            elif len(container.streams) == 1 and container.duration:  # the video's alone
                length, own = container.duration / 1e6, False
            else:  # an audio track may run longer: no length to hold the video to
                length = None
            # frames converted while there are no more than max_frames: a longer video's are
            # dropped and only its kept ones converted, on a second pass (below)
            frames, times, sizes, end = [], [], set(), None
            for f in container.decode(stream):
                if max_frames is None or len(times) < max_frames:
                    frames.append(_pixels(f, size))
                elif frames:
                    frames = []
                sizes.add(_shown_size(f, size))
                times.append(f.time)
                # where the frame stops showing: its own duration when it has one (a last frame
                # held on screen), else one frame period (added below)
                held = f.duration * f.time_base if f.duration and f.time_base else None
                end = None if f.time is None else (f.time, held)
    except EpisodeFormatError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError) as exc:
        raise EpisodeFormatError(f"{path}: not a readable video ({exc})") from exc
    if not times:
        raise EpisodeFormatError(f"{path}: the video holds no frames")
    if len(sizes) > 1:  # resized frames are all size x size
        raise EpisodeFormatError(
            f"{path}: its frames change size ({', '.join(f'{w}x{h}' for h, w in sorted(sizes))}"
            "), so they cannot be read as one video; give a frame size to resize every frame to "
            "(eval_critic.py external_size=<pixels>, the default 128)"
        )
    # A file cut short decodes the frames before the cut without an error; its header still says
    # how long the stream was. Compared by time, not frame count: a variable frame rate or a
    # longer audio track makes duration x rate no count of frames.
    step = 1 / float(rate) if rate else 0.05
    stop = None if end is None else end[0] + (float(end[1]) if end[1] else step)
    # the stream's own length is exact to a frame or two; a container's may run on (5 %)
    slack = max(3 * step, 0.005 * length) if own and length else 0.05 * (length or 0)
    if length and stop is not None and stop < length - slack:
        raise EpisodeFormatError(
            f"{path}: {len(times)} frames decoded, ending at {stop:.2f} s where its "
            f"header says the video runs {length:.2f} s: the file is cut short; copy it again"
        )
    tick = float(stream.time_base) if stream.time_base else 0.0
    shown, rate = _constant_rate(
        list(range(len(times))), times, float(rate) if rate else 20.0, tick
    )
    seconds = len(shown) / rate
    if max_frames is not None and len(shown) > max_frames:  # evenly: again a constant rate
        rate *= (max_frames - 1) / (len(shown) - 1)  # the kept frames' spacing
        shown = [shown[i] for i in np.linspace(0, len(shown) - 1, max_frames).round().astype(int)]
    if len(frames) < len(times):  # decoded again, converting only the frames kept
        kept = sorted(set(shown))
        frames = dict(zip(kept, _decode_only(path, kept, size), strict=True))
    return np.stack([frames[i] for i in shown]), rate, seconds


def _cameras(container: Any, av: Any) -> list:
    """A container's video streams but cover pictures (an mp4's thumbnail is a video stream of
    one frame: not a camera)."""
    attached = int(av.stream.Disposition.attached_pic)
    return [v for v in container.streams.video if not int(v.disposition) & attached]


def _pixels(frame: Any, size: int | None) -> np.ndarray:
    """A decoded frame as uint8 ``[H, W, 3]`` (``size`` × ``size`` when given), turned upright."""
    pixels = (frame if size is None else frame.reformat(width=size, height=size)).to_ndarray(
        format="rgb24"
    )
    # a phone's portrait video is stored sideways with a display matrix that turns it
    # (PyAV: degrees counter-clockwise, as np.rot90 turns)
    if turns := _turns(frame):
        pixels = np.ascontiguousarray(np.rot90(pixels, turns))
    return pixels


def _turns(frame: Any) -> int:
    return round((getattr(frame, "rotation", 0) or 0) / 90) % 4


def _shown_size(frame: Any, size: int | None) -> tuple[int, int]:
    """``(height, width)`` of :func:`_pixels`' array for ``frame``, without converting it."""
    if size is not None:
        return size, size
    return (frame.width, frame.height) if _turns(frame) % 2 else (frame.height, frame.width)


def _decode_only(path: Path, kept: list[int], size: int | None) -> list[np.ndarray]:
    """The frames at the sorted decode indices ``kept`` of ``path``'s first camera, converted by
    :func:`_pixels` (the others decoded and dropped)."""
    av = require_package("av", "data", "reading videos")
    wanted = set(kept)
    try:
        with av.open(str(path)) as container:
            stream = _cameras(container, av)[0]
            frames = [
                _pixels(f, size) for i, f in enumerate(container.decode(stream)) if i in wanted
            ]
    except (av.error.FFmpegError, ValueError, IndexError) as exc:
        raise EpisodeFormatError(f"{path}: not a readable video ({exc})") from exc
    if len(frames) != len(kept):  # the file was replaced between the two passes
        raise EpisodeFormatError(
            f"{path}: changed while it was read ({len(frames)} of the {len(kept)} frames kept "
            "decoded on the second pass); read it again once it is written"
        )
    return frames


def _constant_rate(frames: list, times: list, rate: float, tick: float = 0.0) -> tuple[list, float]:
    """Frames of a variable frame rate (a phone's: a frame more than a quarter of a gap, and more
    than a timestamp tick and a half, off the even clock from the first to the last) put on a
    constant clock, each tick showing the frame on screen then, so a frame's index counts time as
    the rest of the project reads it (a failure's time, a clip spread over the episode); frames
    at a constant rate as they are (timestamps rounded to whole ticks, as mkv's milliseconds
    round a 600 fps video's, included)."""
    if len(frames) < 3 or any(t is None for t in times):
        return frames, rate
    t = np.asarray(times, dtype=float)
    gaps = np.diff(t)
    even = t[0] + (t[-1] - t[0]) * np.arange(len(t)) / (len(t) - 1)
    if gaps.min() <= 0 or np.abs(t - even).max() <= max(1.5 * tick, 0.25 * gaps.mean()):
        return frames, rate
    # the clock ticks at the video's fast frames (a tenth of its gaps are shorter), at most 4x
    # as many frames as it has, so a slow stretch repeats frames rather than fast ones merging
    period = max(float(np.percentile(gaps, 10)), (t[-1] - t[0]) / (4 * len(frames)))
    grid = t[0] + period * np.arange(int((t[-1] - t[0]) / period + 1e-9) + 1)
    shown = np.searchsorted(t, grid + 1e-9, side="right") - 1
    return [frames[i] for i in shown], 1 / period


def _tagged_duration(metadata: Any) -> float | None:
    """A Matroska/WebM track's own ``DURATION`` tag (``HH:MM:SS.nnnnnnnnn``) in seconds, or None:
    those containers give no stream duration, and the tag is written at the file's start, so a
    file cut short still says how long its video was."""
    text = str((metadata or {}).get("DURATION", ""))
    hours, _, rest = text.partition(":")
    minutes, _, seconds = rest.partition(":")
    try:
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None
