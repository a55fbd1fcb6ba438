"""Your own labelled robot videos as episodes, for failure-detection evaluation (RoboFail-style).

Layout: a folder with the videos (any container PyAV decodes: mp4, webm, avi...) and a
``labels.jsonl`` with one line per video::

    {"video": "pick_03.mp4", "instruction": "Pick up the cup.", "success": false,
     "failure_type": "drop_after_lift", "failure_time_s": 4.2}

``failure_type`` and ``failure_time_s`` are optional, and so is ``split`` (``train``, ``val`` or
``test``: given on every line or on none), which lets the evaluator fit its failure threshold on
the ``val`` videos and score the ``test`` ones. There is no per-frame progress in such data, so
the episodes carry ``nan`` progress and the evaluator scores failure detection only.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from critic.base import CriticError, check_instruction
from critic.data.episodes import Episode, EpisodeFormatError
from critic.data.video import check_video_size, read_video_and_length
from critic.parse import normalize_label
from rollout.checks import is_int, is_number

REQUIRED = ("video", "instruction", "success")
FAILURE_KEYS = ("failure_type", "failure_time_s")  # a failure's: not beside success=true
OPTIONAL = (*FAILURE_KEYS, "split")
SPLITS = ("train", "val", "test")
# the evaluator's confusion labels an episode with these besides the failure types
RESERVED_TYPES = ("success", "unreadable")


class _TwiceError(ValueError):
    """A JSON object names a key twice."""


def _once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key, value in pairs:
        if key in row:
            raise _TwiceError(f"{key!r} is given twice ({row[key]!r}, then {value!r})")
        row[key] = value
    return row


def read_labels(folder: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """The checked rows of ``folder``'s ``labels.jsonl``, with their line numbers; no video is
    decoded. Keys other than :data:`REQUIRED` and :data:`OPTIONAL` are the user's own and are
    kept, except one that looks like a misspelling of an optional key the line lacks
    (``failure_typ``; ``instruction_id`` beside ``instruction`` is the user's own).

    Raises:
        EpisodeFormatError: naming the line, the value and the fix.
    """
    folder = Path(folder)
    labels = folder / "labels.jsonl"
    if not labels.is_file():
        what = "is a folder, not a file" if labels.is_dir() else "no such file"
        raise EpisodeFormatError(
            f"{labels}: {what}; an external dataset needs labels.jsonl with one "
            '{"video", "instruction", "success"} object per line'
        )
    try:
        text = labels.read_text(encoding="utf-8-sig")  # a byte-order mark is tolerated
    except UnicodeDecodeError as exc:
        raise EpisodeFormatError(f"{labels}: not UTF-8 text ({exc}); save it as UTF-8") from exc
    rows, seen = [], {}
    # JSON Lines ends lines at \n alone: splitlines() also cut at U+2028 or U+0085 inside a string
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{labels}:{number}"
        try:  # a key given twice kept its last value without a word
            row = json.loads(line, object_pairs_hook=_once)
        except _TwiceError as exc:
            raise EpisodeFormatError(f"{where}: {exc}; give each key once") from None
        except (ValueError, RecursionError) as exc:  # too deep, or an integer of 5000 digits
            raise EpisodeFormatError(f"{labels}:{number}: not JSON ({str(exc)[:200]})") from exc
        missing = [k for k in REQUIRED if not isinstance(row, dict) or k not in row]
        if missing:
            raise EpisodeFormatError(f"{where}: missing {missing}; each line needs {list(REQUIRED)}")  # fmt: skip
        absent = [k for k in OPTIONAL if k not in row]  # a required key is there by now
        for key in row:
            if key not in REQUIRED + OPTIONAL and (
                near := difflib.get_close_matches(key, absent, n=1, cutoff=0.8)
            ):
                raise EpisodeFormatError(
                    f"{where}: {key!r} is not a label this loader reads; did you mean "
                    f"{near[0]!r}? (it reads {list(REQUIRED + OPTIONAL)})"
                )
        if not isinstance(row["success"], bool):
            raise EpisodeFormatError(f"{where}: success={row['success']!r} must be true or false")
        video, failure_time = row["video"], row.get("failure_time_s")
        if not isinstance(video, str) or not video:
            raise EpisodeFormatError(
                f"{where}: video={video!r} must be a file name relative to {folder}"
            )
        # a.mkv, ./a.mkv, its absolute path and a link to it are one video
        same = os.path.realpath(folder / video)
        if same in seen:
            raise EpisodeFormatError(
                f"{where}: {video!r} is labelled again (the same file as line {seen[same]}); "
                "label each video once"
            )
        seen[same] = number
        if failure_time is not None and not (is_number(failure_time) and failure_time >= 0):
            raise EpisodeFormatError(
                f"{where}: failure_time_s={failure_time!r} must be a number of seconds "
                ">= 0 from the video's start, or absent"
            )
        try:
            check_instruction(row["instruction"])
        except CriticError as exc:
            raise EpisodeFormatError(f"{where}: {exc}") from exc
        failure_kind = row.get("failure_type")
        if failure_kind is not None and not (
            isinstance(failure_kind, str) and failure_kind.strip()
        ):
            raise EpisodeFormatError(  # blank was kept as a type of its own, named "  "
                f'{where}: failure_type={failure_kind!r} must be a name, e.g. "drop", or absent'
            )
        if isinstance(failure_kind, str) and normalize_label(failure_kind) in RESERVED_TYPES:
            # the confusion's own rows: the failure was counted as a success, or as unreadable
            raise EpisodeFormatError(
                f"{where}: failure_type={failure_kind!r} is a verdict the evaluator reports, not "
                'a kind of failure; name how it failed (e.g. "drop"), or leave failure_type out'
            )
        if row["success"] and (given := [k for k in FAILURE_KEYS if row.get(k) is not None]):
            raise EpisodeFormatError(
                f"{where}: success=true with {given}: a successful video has no failure; set "
                "success=false, or drop " + " and ".join(given)
            )
        if "split" in row and row["split"] not in SPLITS:
            raise EpisodeFormatError(
                f"{where}: split={row['split']!r} is not a split; give one of {list(SPLITS)} (val: "
                "the videos the failure threshold is fit on, test: those it is scored on)"
            )
        rows.append((number, row))
    with_split = [number for number, row in rows if "split" in row]
    if with_split and len(with_split) < len(rows):
        without = next(number for number, row in rows if "split" not in row)
        raise EpisodeFormatError(
            f"{labels}:{without}: no split, where line {with_split[0]} gives one; give every "
            "line its split, or none"
        )
    return rows


def has_splits(rows: list[tuple[int, dict[str, Any]]]) -> bool:
    """Whether :func:`read_labels`'s ``rows`` give their videos' splits (all of them, or none)."""
    return bool(rows) and "split" in rows[0][1]


def in_split(
    rows: list[tuple[int, dict[str, Any]]], split: str | None
) -> list[tuple[int, dict[str, Any]]]:
    """The ``rows`` of ``split``; all of them for ``None`` or ``"all"``, or where the labels give
    no splits."""
    if split in (None, "all") or not has_splits(rows):
        return rows
    return [(number, row) for number, row in rows if row["split"] == split]


# Frames kept of one video: a minute at 30 fps is 1,800 frames (88 MB at 128², 1.1 GB at 448²),
# and every video of the evaluated and calibration splits stays in memory, where detection reads
# a clip of 16 and a few prefixes. A longer video keeps this many, evenly spread (its frame rate
# scaled to match, so a failure's time still lands on its frame).
MAX_FRAMES = 512


def read_labelled_videos(
    folder: str | Path, size: int | None = 128, limit: int | None = None, split: str | None = None
) -> list[Episode]:
    """Every labelled video of ``folder`` (of ``split`` alone where the labels give splits, see
    :func:`in_split`; the first ``limit`` when given; every line is checked first, before any
    video is decoded) as an :class:`Episode` (frames resized to ``size`` × ``size`` when
    given), in the order of ``labels.jsonl``.

    Raises:
        EpisodeFormatError: no ``labels.jsonl``, a line that is not a JSON object with the
            required fields (:func:`read_labels`), a ``failure_time_s`` past its video's end, or
            a video that is missing or unreadable (the message names it).
        ValueError: ``size`` or ``limit`` is not one it takes.
    """
    check_video_size(size)
    if limit is not None and not (is_int(limit) and limit >= 0):
        raise ValueError(
            f"limit={limit!r} must be None (every video) or a count >= 0 of the first videos "
            "to read"
        )
    folder = Path(folder)
    labels = folder / "labels.jsonl"
    episodes = []
    for number, row in in_split(read_labels(folder), split)[:limit]:
        video, failure_time = row["video"], row.get("failure_time_s")
        # a longer video keeps MAX_FRAMES, evenly spread, and only those are ever held; its
        # length is its own (the kept frames over their rate read up to a frame longer)
        frames, fps, length_s = read_video_and_length(
            folder / video, size=size, max_frames=MAX_FRAMES
        )
        if failure_time is not None and failure_time > length_s:
            # clipped to the last frame it would read as a failure caught the moment it happened
            raise EpisodeFormatError(
                f"{labels}:{number}: failure_time_s={failure_time!r} is past the end of {video!r} "
                f"({length_s:g} s long); give the time of the failure within the video"
            )
        steps = np.arange(len(frames))
        episodes.append(
            Episode(
                episode_id=Path(video).stem,
                env_id="external",
                instruction=row["instruction"],
                frames={"video": frames},
                progress=np.full(len(frames), np.nan, dtype=np.float32),
                steps=steps,
                success=row["success"],
                failure_type=None if row["success"] else row.get("failure_type") or "unknown",
                # a failure at the video's very end is its last frame, not one past it
                failure_step=None
                if failure_time is None
                else min(round(failure_time * fps), len(frames) - 1),
                fps=fps,
                seed=number,
            )
        )
    return episodes
