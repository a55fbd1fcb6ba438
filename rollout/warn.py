"""Warnings that point at the user's line, for every layer.

A warning raised deep in a wrapper stack (``gym.make`` → gymnasium's checkers → our wrapper →
``reset``) or under a learner (``model.learn`` → SB3's rollout loop → our vec env) has no fixed
depth: a fixed ``stacklevel`` names gymnasium's or SB3's line, not the one the user can change.
:func:`warn_user` walks up past this project's packages and the libraries that call into them,
and names the first frame outside them (Python 3.12's ``skip_file_prefixes``, on 3.10 too).

Example:
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_user("a message")
    >>> caught[0].filename.startswith("<doctest")  # the example's own line, not this module's
    True
"""

from __future__ import annotations

import os
import sys
import warnings
from importlib.util import find_spec
from pathlib import Path

# What calls into the project on a user's behalf: its own packages, and the libraries whose loops
# and wrappers sit between a user's line and ours.
_PACKAGES = ("critic", "envs", "rollout", "gymnasium", "stable_baselines3")


def _package_dirs() -> tuple[str, ...]:
    dirs = []
    for name in _PACKAGES:
        spec = find_spec(name) if name not in sys.modules else sys.modules[name].__spec__
        if spec is not None and spec.submodule_search_locations:
            dirs += [
                os.path.join(str(Path(p).resolve()), "") for p in spec.submodule_search_locations
            ]
    return tuple(dirs)


_SKIPPED: tuple[str, ...] | None = None


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message, category)`` at the first caller outside this project's packages,
    gymnasium and stable-baselines3 (the caller of ``warn_user`` where every frame is inside)."""
    global _SKIPPED
    if _SKIPPED is None:
        _SKIPPED = _package_dirs()
    level, frame = 2, sys._getframe(1)
    while frame is not None and _inside(frame.f_code.co_filename, _SKIPPED):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level if frame is not None else 2)


def _inside(filename: str, dirs: tuple[str, ...]) -> bool:
    try:
        path = str(Path(filename).resolve())
    except (OSError, ValueError):  # "<string>", "<doctest ...>"
        return False
    return path.startswith(dirs)
