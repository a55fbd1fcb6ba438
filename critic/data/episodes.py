"""Episodes on disk: video files through PyAV plus one parquet row per episode.

A dataset is a folder::

    <root>/episodes/<episode_id>.parquet   one row: instruction, env id, success, failure type and
                                           step, fps, seed, per-frame env steps, progress and state
    <root>/videos/<episode_id>.<camera>.mkv

The row is written last (through a temporary file and a rename), so an episode whose row exists
is complete: a synthesis run that stops half-way is resumed by skipping those ids. The videos
are written and read by :mod:`critic.data.video` (its ``CODECS``: ``ffv1``, lossless, the
default, or ``h264``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from critic.data.errors import EpisodeFormatError
from critic.data.video import CODECS, read_video, write_video
from rollout.checks import is_int, is_number
from rollout.files import written_whole
from rollout.imports import require_package

POLICY_MARK = (
    "-policy_"  # in the id of a saved policy's rollout: <task>-<seed>-policy_<digest>[...]
)


# the id of a recorded episode: <task>-<seed, 6 digits or more>-<its plan: expert, or the
# failure injected> (envs.plans.EpisodePlan.episode_id; seeds from 1,000,000 have 7 digits)
_PLANNED = re.compile(r"-\d{6,}-(?P<plan>[\w\- ]+)$")


def episode_of(task: str, episode_id: str) -> bool:
    """Whether ``episode_id`` is a recorded episode of ``task`` (ids ``<task>-<seed>-...``)."""
    return re.match(rf"{re.escape(task)}-\d{{6,}}-", episode_id) is not None


def injected_failure(episode_id: str) -> str | None:
    """The failure its plan injected into a recorded episode (``envs.synth``: the id ends
    ``<seed>-<failure>``), whatever then happened; ``None`` for an expert's plan, a policy's
    rollout, or an id of another form."""
    match = _PLANNED.search(episode_id)
    if match is None or is_policy_rollout(episode_id) or match["plan"] == "expert":
        return None
    return match["plan"]


def is_policy_rollout(episode_id: str) -> bool:
    """Whether an episode id is a saved RL policy's rollout (``envs.synth``), not a scripted
    expert's or an injected failure's episode."""
    return POLICY_MARK in episode_id


@dataclass
class Episode:
    """One recorded episode.

    Attributes:
        episode_id: unique name inside its dataset (also its file names).
        env_id: the task it was recorded on.
        instruction: the task instruction.
        frames: camera name → uint8 ``[T, H, W, 3]``; every camera has the same ``T``.
        progress: privileged progress in [0, 1] of each frame, float32 ``[T]``.
        steps: env step of each frame, int64 ``[T]`` (frames are every k-th step).
        success: whether the task was achieved.
        failure_type: the injected failure, or ``None`` for expert episodes (and for a policy
            rollout that achieved the task; ``"unknown"`` when it did not).
        failure_step: env step at which the failure happened, or ``None``.
        fps: frames per second of the recording (env rate / k).
        seed: the env and expert seed.
        state: privileged quantities per frame, name → float32 ``[T]`` (for grounded reasoning).
    """

    episode_id: str
    env_id: str
    instruction: str
    frames: dict[str, np.ndarray]
    progress: np.ndarray
    steps: np.ndarray
    success: bool
    failure_type: str | None = None
    failure_step: int | None = None
    fps: float = 20.0
    seed: int = 0
    state: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.frames:
            raise EpisodeFormatError(f"episode {self.episode_id!r} has no camera frames")
        for name, f in self.frames.items():
            if not isinstance(f, np.ndarray):
                raise EpisodeFormatError(
                    f"episode {self.episode_id!r} camera {name!r}: frames must be a numpy array, "
                    f"got a {type(f).__name__}; pass np.asarray(frames, np.uint8)"
                )
        lengths = {name: len(f) for name, f in self.frames.items()}
        for name, f in self.frames.items():
            if f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3:
                raise EpisodeFormatError(
                    f"episode {self.episode_id!r} camera {name!r}: frames must be uint8 "
                    f"[T, H, W, 3], got {f.dtype} {f.shape}"
                )
        if not isinstance(self.success, (bool, np.bool_)):
            raise EpisodeFormatError(
                f"episode {self.episode_id!r}: success={self.success!r} must be True or False"
            )
        try:
            progress = np.asarray(self.progress, dtype=float)
        except (TypeError, ValueError) as exc:  # strings, None
            raise EpisodeFormatError(
                f"episode {self.episode_id!r}: progress must be numbers, one per frame ({exc})"
            ) from None
        if ((progress < 0) | (progress > 1)).any():  # NaN: unknown (an external video's)
            raise EpisodeFormatError(
                f"episode {self.episode_id!r}: progress holds values outside [0, 1] "
                f"({progress[(progress < 0) | (progress > 1)][:3].tolist()}); progress is the "
                "share of the task done, NaN where unknown"
            )
        per_frame = {"progress": len(self.progress), "steps": len(self.steps)}
        per_frame.update({f"state[{k}]": len(v) for k, v in self.state.items()})
        if len({*lengths.values(), *per_frame.values()}) != 1:
            raise EpisodeFormatError(
                f"episode {self.episode_id!r}: per-frame fields disagree in length: "
                f"{ {**lengths, **per_frame} }"
            )

    def __len__(self) -> int:
        return len(self.progress)

    @property
    def expert(self) -> bool:
        """A scripted expert's episode: no failure, not a policy's rollout that succeeded, and
        not one with a failure injected that succeeded all the same (random torques that hit
        Reacher's target: a success, but no demonstration, and its label keeps its dips)."""
        return (
            self.failure_type is None
            and not is_policy_rollout(self.episode_id)
            and injected_failure(self.episode_id) is None
        )

    @property
    def cameras(self) -> list[str]:
        return list(self.frames)

    @property
    def step_seconds(self) -> float:
        """Seconds per env step: frames are ``fps`` per second, each ``every`` env steps apart,
        the largest gap of ``steps``. Not their mean: the last frame is recorded where the
        episode ends, often fewer steps after the one before (the mean read expert episodes
        4 % fast). An episode of one gap shorter than ``every`` (``every`` past its end) still
        reads fast: the row does not record ``every``."""
        gaps = np.diff(self.steps)
        return 1.0 / (self.fps * (float(gaps.max()) if len(gaps) else 1.0))


def file_in_the_way(folder: str | Path) -> Path | None:
    """The file that keeps ``folder`` from being made or written into: the folder itself, or the
    nearest of its parents that exists, when that is not a folder; None when nothing is in the
    way. Checked before long work that ends by writing there (a dataset, an export)."""
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    return existing if existing is not None and not existing.is_dir() else None


def write_episode(episode: Episode, root: str | Path, codec: str = "ffv1") -> Path:
    """Write ``episode`` into the dataset at ``root``; returns its row file.

    Raises:
        EpisodeFormatError: an unknown codec, or frame sides ``h264`` cannot encode.
    """
    if codec not in CODECS:
        raise EpisodeFormatError(f"codec={codec!r} is not supported; pick one of {list(CODECS)}")
    root = Path(root)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    (root / "episodes").mkdir(parents=True, exist_ok=True)
    videos = {}
    for camera, frames in episode.frames.items():
        path = root / "videos" / f"{episode.episode_id}.{camera}.mkv"
        try:
            write_video(path, frames, episode.fps, codec)
        except OSError as exc:  # PyAV's named no file ("[Errno 30] Read-only file system")
            if exc.filename is not None:
                raise
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        videos[camera] = path.name
    pa = require_package("pyarrow", "data", "writing episodes")
    pq = require_package("pyarrow.parquet", "data", "writing episodes")
    row = {
        "episode_id": episode.episode_id,
        "env_id": episode.env_id,
        "instruction": episode.instruction,
        "success": bool(episode.success),
        "failure_type": episode.failure_type,
        "failure_step": episode.failure_step,
        "fps": float(episode.fps),
        "seed": int(episode.seed),
        "num_frames": len(episode),
        "codec": codec,
        "videos": json.dumps(videos),
        "progress": np.asarray(episode.progress, np.float32).tolist(),
        "steps": np.asarray(episode.steps, np.int64).tolist(),
        "state": json.dumps(
            {k: np.asarray(v, np.float32).tolist() for k, v in episode.state.items()}
        ),
    }
    schema = pa.schema(
        [
            ("episode_id", pa.string()),
            ("env_id", pa.string()),
            ("instruction", pa.string()),
            ("success", pa.bool_()),
            ("failure_type", pa.string()),
            ("failure_step", pa.int64()),
            ("fps", pa.float64()),
            ("seed", pa.int64()),
            ("num_frames", pa.int64()),
            ("codec", pa.string()),
            ("videos", pa.string()),
            ("progress", pa.list_(pa.float32())),
            ("steps", pa.list_(pa.int64())),
            ("state", pa.string()),
        ]
    )
    table = pa.Table.from_pylist([row], schema=schema)
    final = root / "episodes" / f"{episode.episode_id}.parquet"
    # the row appears only once the episode is whole; a failed write names it (pyarrow's did not)
    with written_whole(final) as partial:
        pq.write_table(table, partial)
    return final


def finished_ids(root: str | Path) -> set[str]:
    """Ids of the complete episodes under ``root`` (empty if there is no dataset yet)."""
    folder = Path(root) / "episodes"
    return (
        {p.name[: -len(".parquet")] for p in folder.glob("*.parquet")} if folder.is_dir() else set()
    )


def repeated_episodes(option: str, folders: Sequence[str | Path]) -> str | None:
    """A warning when episodes of the same id are in several of ``folders``, or None. An id names
    the task, seed and plan (and a policy's digest), so such an episode was recorded twice: a
    copied folder, or the same seeds at another image size, camera or task option. Its samples
    count once per folder, and an evaluation scores it once per folder: meant for a folder
    re-rendered another way, not for a copy (weigh a folder with ``data_weights=`` instead)."""
    where: dict[str, list[str]] = {}
    for folder in folders:
        for episode_id in finished_ids(folder):
            where.setdefault(episode_id, []).append(str(folder))
    repeated = {i: f for i, f in sorted(where.items()) if len(f) > 1}
    if not repeated:
        return None
    first, places = next(iter(repeated.items()))
    return (
        f"{option}: {len(repeated)} episode ids are in more than one folder ({first} in "
        f"{places}): the same task, seed and plan, recorded twice (a copied folder, or the same "
        "seeds at another image size or camera); each counts once per folder. If that is not "
        "meant, list one folder of each (record more episodes with another first_seed=)"
    )


def _record_again(row_path: Path) -> str:
    return (
        f"To record the episode again, delete {row_path} and re-run synthesize.py with the same "
        "out= and options (it records only what is missing)"
    )


# What read_episode reads from an episode's row (besides ``videos``).
_ROW_FIELDS = ("episode_id", "env_id", "instruction", "num_frames", "progress", "steps", "success",
               "failure_type", "failure_step", "fps", "seed", "state")  # fmt: skip


def read_episode(root: str | Path, episode_id: str, cameras: list[str] | None = None) -> Episode:
    """Load one episode (all cameras, or ``cameras``).

    Raises:
        EpisodeFormatError: its row or a video is missing, unreadable or inconsistent; the
            message names the file.
    """
    root = Path(root)
    row_path = root / "episodes" / f"{episode_id}.parquet"
    try:
        row, fields = _checked_row(row_path)
        try:
            videos = json.loads(row["videos"])
        except (TypeError, ValueError) as exc:
            raise EpisodeFormatError(f"{row_path}: its videos field is not JSON ({exc})") from exc
        if not isinstance(videos, dict) or not all(isinstance(v, str) for v in videos.values()):
            raise EpisodeFormatError(f"{row_path}: its videos field is not a camera → file map")
    except EpisodeFormatError as exc:
        raise EpisodeFormatError(f"{exc}. {_record_again(row_path)}") from exc
    wanted = cameras or list(videos)
    unknown = [c for c in wanted if c not in videos]
    if unknown:  # the episode is whole; the caller asked for a camera it was not recorded with
        raise EpisodeFormatError(f"{row_path}: no camera {unknown}; it has {list(videos)}")
    try:
        frames = {c: _read_video(root / "videos" / videos[c], row["num_frames"]) for c in wanted}
        return Episode(episode_id=row["episode_id"], frames=frames, **fields)
    except EpisodeFormatError as exc:
        raise EpisodeFormatError(f"{exc}. {_record_again(row_path)}") from exc


def _typed_fields(row: Mapping[str, Any], row_path: Path) -> dict[str, Any]:
    """The row's fields as :class:`Episode` holds them; a field of the wrong type (a row edited by
    hand or by another program: a null progress value, a text seed) is named."""
    typed: dict[str, Any] = {}

    def convert(name: str, make: Any) -> None:
        try:
            typed[name] = make(row[name])
        except (TypeError, ValueError, OverflowError) as exc:
            value = repr(row[name])
            value = value if len(value) <= 60 else value[:57] + "..."
            raise EpisodeFormatError(
                f"{row_path}: its {name} field {value} is not valid ({exc})"
            ) from exc

    def text(value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(f"a string is needed, not {type(value).__name__}")
        return value

    def per_frame(dtype: Any) -> Any:
        def make(values: Any) -> np.ndarray:
            if not isinstance(values, list) or any(
                v is None or isinstance(v, (bool, str)) for v in values
            ):
                raise TypeError("a list of numbers is needed, one per frame")
            return np.asarray(values, dtype)

        return make

    def optional(make: Any) -> Any:
        return lambda value: None if value is None else make(value)

    def state(value: Any) -> dict[str, np.ndarray]:
        named = json.loads(value) if isinstance(value, str) else value
        if not isinstance(named, dict):
            raise TypeError("a JSON map of name -> per-frame values is needed")
        return {str(k): per_frame(np.float32)(v) for k, v in named.items()}

    def whole(value: Any) -> int:
        if not is_int(value):
            raise TypeError(f"an integer is needed, not {type(value).__name__}")
        return int(value)

    def boolean(value: Any) -> bool:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"true or false is needed, not {type(value).__name__}")
        return bool(value)

    def number(value: Any) -> float:
        if not is_number(value):
            raise TypeError(f"a number is needed, not {type(value).__name__}")
        return float(value)

    convert("env_id", text)
    convert("instruction", text)
    convert("progress", per_frame(np.float32))
    convert("steps", per_frame(np.int64))
    convert("success", boolean)
    convert("failure_type", optional(text))
    convert("failure_step", optional(whole))
    convert("fps", number)
    convert("seed", whole)
    convert("state", state)
    return typed


def iter_episodes(root: str | Path, cameras: list[str] | None = None) -> Iterator[Episode]:
    """Every complete episode under ``root``, in id order."""
    for episode_id in sorted(finished_ids(root)):
        yield read_episode(root, episode_id, cameras)


def read_table(root: str | Path) -> list[dict[str, Any]]:
    """The metadata rows of all episodes (no video decoding), in id order.

    Raises:
        EpisodeFormatError: a row that cannot be read, and how to record it again (as
            :func:`read_episode` says; eval_critic's listing said only that it was unreadable).
    """
    return [row for _, row in iter_rows(root)]


def iter_rows(root: str | Path) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(episode id, metadata row)`` of every complete episode under ``root``, in id order, read
    as they are asked for: a reader that decodes only some episodes picks them by their rows.

    Raises:
        EpisodeFormatError: as :func:`read_table`.
    """
    for episode_id in sorted(finished_ids(root)):
        path = Path(root) / "episodes" / f"{episode_id}.parquet"
        try:
            row = _read_row(path)
        except EpisodeFormatError as exc:
            raise EpisodeFormatError(f"{exc}. {_record_again(path)}") from exc
        yield episode_id, row


def _read_row(path: Path) -> Mapping[str, Any]:
    """``path``'s episode row, every field checked (:func:`_checked_row`)."""
    return _checked_row(path)[0]


def _checked_row(path: Path) -> tuple[Mapping[str, Any], dict[str, Any]]:
    """``path``'s episode row and its fields as :class:`Episode` holds them (:func:`_typed_fields`)."""
    pq = require_package("pyarrow.parquet", "data", "reading episodes")
    if not path.is_file():
        raise EpisodeFormatError(f"{path}: no such episode file")
    try:
        # one file, no partitions: a folder named like one (.../seed=0/) had pyarrow add its
        # value as a column, and every row of the folder failed to read
        rows = pq.read_table(path, partitioning=None).to_pylist()
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise EpisodeFormatError(f"{path}: not a readable parquet file ({exc})") from exc
    if len(rows) != 1:
        raise EpisodeFormatError(f"{path}: expected one episode row, found {len(rows)}")
    # every field, checked before any reader takes one (a row edited by hand had ended in a
    # KeyError or TypeError inside the evaluator, which lists rows without reading episodes)
    missing = [k for k in ("videos", *_ROW_FIELDS) if k not in rows[0]]
    if missing:
        raise EpisodeFormatError(f"{path}: the episode row lacks {missing}")
    return rows[0], _typed_fields(rows[0], path)


def _read_video(path: Path, expected: int) -> np.ndarray:
    frames, _ = read_video(path)
    if len(frames) != expected:
        raise EpisodeFormatError(
            f"{path}: {len(frames)} frames decoded, the episode row says {expected} "
            "(truncated or replaced file)"
        )
    return frames
