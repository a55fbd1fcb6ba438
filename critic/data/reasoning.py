"""Chains of thought grounded in privileged state, in the critic's answer format.

Episodes carry privileged quantities per frame (``Episode.state``), named by a small vocabulary that
this module turns into sentences, each in several wordings:

- ``<a>_to_<b>_cm``: a distance, "the gripper is 4.0 cm from the cube";
- ``<a>_over_<b>_cm``: a distance across the table (seen from above), "the red cube is 0.7 cm
  from being over the green cube" (true while the cube is carried high above it, where "0.7 cm
  from the green cube" was not);
- ``<object>_height_cm``: "the cube is 3.2 cm above the table" (a height under its rest by less
  than :data:`SETTLING` reads 0; one far under it, "the cube is 20.0 cm below where it rested");
- ``<object>_grasped`` (0 or 1): "the cube is grasped" / "the cube is not grasped" (said of
  the frame alone: the object may have been released, so no "yet" or "still");
- ``<object>_angle_deg``: "the door has turned 12 degrees";
- anything else: "<name> is <value>".

Example:
    >>> rng = np.random.default_rng(0)
    >>> text = chain_of_thought({"gripper_to_cube_cm": 4.0, "cube_grasped": 0.0}, 0.35, rng)
    >>> text.endswith("<answer>35%</answer>")
    True
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

_DISTANCE = (
    "the {a} is {v:.1f} cm from the {b}",
    "{v:.1f} cm separate the {a} and the {b}",
    "the {a} is about {v:.0f} cm away from the {b}",
)
_OVER = (
    "the {a} is {v:.1f} cm from being over the {b}",
    "seen from above, the {a} is {v:.1f} cm from the {b}",
    "across the table, the {a} is about {v:.0f} cm from the {b}",
)
_HEIGHT = (
    "the {o} is {v:.1f} cm above the table",
    "the {o} has been lifted {v:.1f} cm",
    "the {o} sits {v:.1f} cm higher than at rest",
)
# a height well below where the object rested (it fell off the table): said as such
_BELOW = (
    "the {o} is {v:.1f} cm below where it rested",
    "the {o} has fallen {v:.1f} cm below the table top",
)
# below this much, a height or angle under its rest is the contact's settling (a cube at rest reads
# -0.02 cm, one landing -0.3 cm, a door at rest -0.06 degrees): said as 0, not "-0.0" or "lifted
# -0.3 cm"
SETTLING = {"cm": 0.5, "deg": 1.0}
_GRASPED = ("the {o} is grasped", "the gripper holds the {o}", "the {o} is in the gripper")
_NOT_GRASPED = (
    "the {o} is not grasped",
    "the gripper does not hold the {o}",
    "the {o} is free of the gripper",
)
# true of a door and of its handle alike ("the handle is open 30 degrees" was not)
_ANGLE = (
    "the {o} has turned {v:.0f} degrees",
    "the {o} is at {v:.0f} degrees",
    "the {o} has swung {v:.0f} degrees",
)
_PROGRESS = (
    "so the task is about {p}% done",
    "overall progress: {p}%",
    "I estimate {p}% progress",
    "that puts the task at {p}%",
)
_OPENERS = ("I see that", "In the current frame,", "Looking at the scene,", "Now")


def _name(text: str) -> str:
    return text.replace("_", " ")


def describe(key: str, value: float, rng: np.random.Generator) -> str:
    """One sentence about one privileged quantity (see the module docstring for the names)."""
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    if m := re.fullmatch(r"(\w+?)_over_(\w+)_cm", key):
        return pick(_OVER).format(a=_name(m.group(1)), b=_name(m.group(2)), v=value)
    if key.endswith("_cm") and "_to_" in key:
        a, b = key[: -len("_cm")].split("_to_", 1)
        return pick(_DISTANCE).format(a=_name(a), b=_name(b), v=value)
    if m := re.fullmatch(r"(\w+)_height_cm", key):
        if value < -SETTLING["cm"]:
            return pick(_BELOW).format(o=_name(m.group(1)), v=-value)
        return pick(_HEIGHT).format(o=_name(m.group(1)), v=max(value, 0.0))
    if m := re.fullmatch(r"(\w+)_grasped", key):
        return pick(_GRASPED if value >= 0.5 else _NOT_GRASPED).format(o=_name(m.group(1)))
    if m := re.fullmatch(r"(\w+)_angle_deg", key):
        settled = 0.0 if -SETTLING["deg"] < value < 0 else value
        return pick(_ANGLE).format(o=_name(m.group(1)), v=settled)
    return f"{_name(key)} is {value:.2f}"


def chain_of_thought(state: Mapping[str, float], progress: float, rng: np.random.Generator) -> str:
    """``<think>…</think><answer>NN%</answer>``: the state in words, then the progress.

    Args:
        state: privileged quantities of the frame being judged.
        progress: the true progress in [0, 1]; the answer is its rounded percentage.
        rng: picks the wordings (and their order), so datasets vary but are reproducible.
    """
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress={progress!r} must be in [0, 1]")
    percent = round(100 * progress)
    keys = list(state)
    order = rng.permutation(len(keys)) if len(keys) > 1 else range(len(keys))
    facts = [describe(keys[i], float(state[keys[i]]), rng) for i in order]
    opener = _OPENERS[int(rng.integers(len(_OPENERS)))]
    closing = _PROGRESS[int(rng.integers(len(_PROGRESS)))].format(p=percent)
    if not facts:  # a task that records no state: the progress alone ("the scene has not
        # changed much" was taught beside every answer, 91 % too)
        return f"<think>{closing[0].upper()}{closing[1:]}.</think><answer>{percent}%</answer>"
    return f"<think>{opener} {'; '.join(facts)}; {closing}.</think><answer>{percent}%</answer>"
