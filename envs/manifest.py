"""A dataset folder's ``manifest.json``: per task, the options its episodes were recorded with.

:func:`envs.synth.synthesize` skips episodes already in its folder, so a re-run resumes where an
interrupted one stopped; with other options (another ``every``, image size, camera...) it would
mix two settings in one dataset. The manifest, written before a task's first episode, lets
:func:`check_folder_options` refuse that, naming each difference and the fix. The options
themselves are :func:`envs.synth.recording_options`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from envs.errors import InvalidOptionError
from rollout.checks import is_int
from rollout.files import write_atomic

MANIFEST = "manifest.json"  # in a dataset folder: per task, the options of its episodes
ENV_OPTIONS = ("image_size", "horizon", "camera", "task_kwargs")  # env.<name> in synthesize.py

# What this version of the recording code records, beside the options: a folder recorded by
# another is not resumed into (its labels or episodes differ; a manifest without it is 1).
#   1: until 2026-12-07.
#   2: Lift's and Stack's cube heights from where the cube rests, not its spawn 1 cm above; each
#      scripted expert draws from a stream of its own, not the one the start was drawn from.
#   3: Stack and PickPlaceCan alone (TASK_RECORDING: other tasks' folders stay readable): their
#      distances across the table named <a>_over_<b>_cm (red_cube_to_green_cube_cm, can_to_bin_cm).
#   Since the night of 2026-12-07, every task one higher (3; Stack and PickPlaceCan 4): an
#      injected failure's frames before its failure step labelled as the expert's (the running
#      maximum), Door's handle credited from 0.05 rad (its sag under gravity passed 0.01 with the
#      gripper 27 cm away), Pusher's object_pushed_away failure step once the object is pushed
#      away, 0.5 cm farther from the goal than the closest it came (it was where the expert
#      re-planned: 13-42 steps before on seeds 0-9).
RECORDING = 3
TASK_RECORDING = {"Stack": 4, "PickPlaceCan": 4}

logger = logging.getLogger("envs.synth")  # one logger for a synthesis run's messages


def plain(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples as lists, numpy scalars as Python's)."""

    def default(obj: Any) -> Any:
        if isinstance(obj, np.generic):
            return obj.item()
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.asdict(obj)
        return repr(obj)

    return json.loads(json.dumps(value, default=default))


def _override(value: Any) -> str:
    """``value`` as a hydra command-line override writes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_override(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_override(v)}" for k, v in value.items()) + "}"
    return str(value)


def read_manifest(root: str | Path) -> dict[str, dict[str, Any]]:
    """The recording options of each task in the dataset folder ``root`` (:data:`MANIFEST`);
    empty when it has none.

    Raises:
        InvalidOptionError: the manifest is there but not one this module wrote.
    """
    path = Path(root) / MANIFEST
    if not path.is_file():
        return {}
    try:
        tasks = json.loads(path.read_text())["tasks"]
        if not isinstance(tasks, dict) or not all(isinstance(v, dict) for v in tasks.values()):
            raise TypeError("'tasks' is not a mapping of task names to options")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidOptionError(
            f"{str(path)!r} is not a readable dataset manifest ({exc!r}); restore it, or pass a "
            "new out=<folder>"
        ) from exc
    return tasks


def write_manifest(root: Path, tasks: dict[str, dict[str, Any]]) -> None:
    """Write ``root``'s manifest (through a temporary file and a rename).

    Raises:
        InvalidOptionError: ``root`` cannot be made or written to (the message names it).
    """
    manifest = {
        "about": "the options each task's episodes here were recorded with (envs/synth.py "
        "recording_options); a re-run into this folder must use the same",
        "tasks": tasks,
    }
    try:
        root.mkdir(parents=True, exist_ok=True)
        write_atomic(root / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    except OSError as exc:
        raise not_writable(root, exc) from None


def not_writable(root: Path, exc: OSError) -> InvalidOptionError:
    """The error for a dataset folder that cannot be made or written to."""
    return InvalidOptionError(
        f"the dataset folder {str(root)!r} cannot be written to ({exc.strerror or exc}); give "
        "out= a folder this user can write"
    )


def check_folder_options(
    root: Path,
    wanted: dict[str, dict[str, Any]],
    present: dict[str, int],
    defaults: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Compare each task's options (``wanted``, :func:`envs.synth.recording_options`) with those
    its ``present`` episodes in ``root`` were recorded with; record them for a task with no
    episodes there yet. A task with episodes there but no manifest entry (a folder made before
    the manifest, or one whose manifest was moved away) is refused: it had resumed with a
    warning, and every later run then mixed freely. ``defaults``: each task's options with nothing given
    (its own camera and constructor options), which an older manifest's ``camera: null`` and
    ``task_kwargs: {}`` stand for.

    Raises:
        InvalidOptionError: a task's episodes in ``root`` were recorded with other options (each
            differing option, the folder's value and this call's, and the fix), by another
            version of the recording (:data:`envs.manifest.RECORDING`), or with none recorded.
    """
    tasks = read_manifest(root)
    new: dict[str, dict[str, Any]] = {}
    for task, options in wanted.items():
        count = present.get(task, 0)
        if not count:
            if tasks.get(task) != options:  # none recorded yet: whatever was planned before
                new[task] = options
            continue
        if task not in tasks:
            raise InvalidOptionError(
                f"the dataset folder {str(root)!r} holds {count} {task} episodes but its "
                f"{MANIFEST} does not say how they were recorded (a folder from before the "
                "manifest, or one whose manifest was moved away), so a re-run could not tell "
                "whether the episodes it adds match them; pass a new out=<folder>, or restore "
                f"its {MANIFEST}"
            )
        own = (defaults or {}).get(task, {})
        recorded = _as_now(tasks[task], own)
        if recorded.get("recording", 1) != options.get("recording", 1):
            raise InvalidOptionError(
                f"the dataset folder {str(root)!r} holds {count} {task} episodes recorded by "
                f"another version of VisCritic's recording (recording {recorded.get('recording', 1)}"
                f" there, {options.get('recording', 1)} now: envs.manifest.RECORDING says what "
                "changed), whose labels or episodes differ from what this one records; a re-run "
                "records only the missing episodes, so the dataset would mix the two. Pass a new "
                "out=<folder>, or move this one away and run again to record it all"
            )
        differ = [
            k
            for k in options
            if recorded.get(k, "(not recorded)") != options[k]
            # no expert recorded its episodes, or records these (policy rollouts alone)
            and not (k == "expert" and None in (recorded.get(k), options[k]))
        ]
        if differ:
            there = "; ".join(
                f"{k}: {_override(recorded.get(k, '(not recorded)'))} there, "
                f"{_override(options[k])} now"
                for k in differ
            )
            fix = " ".join(
                _fix(k, recorded[k], options[k], own.get(k))
                for k in differ
                if k in recorded and k not in DEFINITION
            )
            unknown = [k for k in differ if k not in recorded]
            instead = f"or the folder's own ({fix} in experiments/synthesize.py)" if fix else ""
            if redefined := [k for k in differ if k in DEFINITION]:
                instead += (" and " if fix else "or ") + (
                    f"the {' and '.join(redefined)} that recorded them (the task's make, "
                    "instruction and view; its scripted expert: registered in this process by "
                    "import envs or imports=)"
                )
            if unknown:  # a manifest written before these options were recorded
                instead += (" " if fix else "") + (
                    f"{'and ' if fix else 'or, '}if its episodes were recorded with "
                    + ", ".join(f"{k}={_override(options[k])}" for k in unknown)
                    + f", add {'those' if len(unknown) > 1 else 'it'} to its {MANIFEST} (its "
                    "version did not record them)"
                )
            raise InvalidOptionError(
                f"the dataset folder {str(root)!r} holds {count} {task} episodes recorded with "
                f"other options ({there}); a re-run records only the missing episodes, so the "
                f"dataset would mix the two. Pass a new out=<folder> for these options, {instead}"
            )
        if tasks[task].get("expert") is None and options.get("expert") is not None:
            # policy rollouts recorded alone, experts now: the expert is recorded, so that a
            # later run's other expert is refused (a null stayed, and any expert was taken)
            new[task] = {**tasks[task], "expert": options["expert"]}
    if new:
        write_manifest(root, {**tasks, **new})


def older_recordings(folders: Any) -> list[str]:
    """For each of ``folders`` (dataset folders a run reads: ``data=``), the tasks its manifest
    says were recorded by an older version of the recording than this code's
    (:data:`envs.manifest.RECORDING`, :data:`envs.manifest.TASK_RECORDING`), worded for a warning: their
    labels or chains of thought are the old ones (an old Stack folder trains "the red cube is
    0.7 cm from the green cube" of a cube carried 13 cm above it). A folder without a manifest,
    or one this module cannot read, is not judged here (the readers say what they find)."""
    found = []
    for folder in folders or []:
        try:
            tasks = read_manifest(str(folder))
        except InvalidOptionError:
            continue
        for task, options in sorted(tasks.items()):
            then, now = options.get("recording", 1), TASK_RECORDING.get(task, RECORDING)
            if is_int(then) and then < now:
                found.append(
                    f"{folder}: its {task} episodes were recorded by version {then} of the "
                    f"recording, and this code records version {now} (envs.manifest.RECORDING says "
                    "what changed: labels or chain-of-thought wording); record them again into a "
                    "new folder (synthesize.py out=) to train or score on what this code records"
                )
    return found


def warn_older_recordings(folders: Any, script: str) -> None:
    """Warn, for ``script``, of each :func:`older_recordings` of ``folders``."""
    from rollout.warn import warn_user

    for said in older_recordings(folders):
        warn_user(f"{script}: {said}")


# What defines a task's episodes beyond the options (envs.synth.task_definition)
DEFINITION = ("definition", "expert")


def _as_now(recorded: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """A manifest's options as :func:`envs.synth.recording_options` writes them now: an older
    version wrote the task's own camera as ``null`` and its constructor's defaults as ``{}``, so
    a re-run with the same options was refused, and so was the fix the refusal gave."""
    recorded = dict(recorded)
    for key in DEFINITION:  # recorded since 2026-12-06: an older manifest cannot say
        if key not in recorded and key in own:
            recorded[key] = own[key]
    if "camera" in recorded and recorded["camera"] is None and "camera" in own:
        recorded["camera"] = own["camera"]
    if isinstance(recorded.get("task_kwargs"), dict) and isinstance(own.get("task_kwargs"), dict):
        recorded["task_kwargs"] = {**own["task_kwargs"], **recorded["task_kwargs"]}
    return recorded


def _fix(key: str, there: Any, now: Any, own: Any) -> str:
    """The synthesize.py override that gives ``key`` the folder's value ``there`` (``now``: this
    run's; ``own``: the task's default). ``env.task_kwargs={k:v}`` was refused by hydra (a key
    not in the config) and a camera given by value is no camera name: each part is said as the
    command line takes it."""
    if key == "camera" and there == own:
        return "env.camera=null"  # the task's own: a free camera is no name the option takes
    if key == "task_kwargs" and isinstance(there, dict) and isinstance(now, dict):
        parts = [f"++env.task_kwargs.{k}={_override(v)}" for k, v in there.items()
                 if now.get(k, object()) != v]  # fmt: skip
        parts += [f"(without +env.task_kwargs.{k})" for k in now if k not in there]
        return " ".join(parts)
    return f"{'env.' if key in ENV_OPTIONS else ''}{key}={_override(there)}"
