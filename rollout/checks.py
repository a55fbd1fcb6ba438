"""What counts as an integer, a number or a list in a user's option, for every layer.

A count, seed or weight may come from a config (Python's ``int``), from numpy (``np.int64`` from an
array, a ``np.float32`` from a model) or by mistake as a bool (``True`` is an ``int`` in Python).
These two predicates are the one definition the option checks of ``rollout``, ``critic``, ``envs``
and ``experiments`` share, so that an ``np.int64`` seed is taken everywhere a ``3`` is and
``True`` nowhere. A check that accepts a numpy value should store ``int(value)`` or
``float(value)``: numpy scalars do not serialise to JSON.

Example:
    >>> import numpy as np
    >>> is_int(3), is_int(np.int64(3)), is_int(True), is_int(3.0)
    (True, True, False, False)
    >>> is_number(np.float32(0.5)), is_number(float("nan")), is_number(float("nan"), finite=False)
    (True, False, True)
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping, MutableSequence
from pathlib import Path
from typing import Any


def is_int(value: Any) -> bool:
    """An integer of any kind (Python's, numpy's), not a bool."""
    # numpy's bool_ is not registered as numbers.Integral, Python's bool is.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any, finite: bool = True) -> bool:
    """A real number of any kind (int, float, numpy's), not a bool; finite unless told."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        return not finite or math.isfinite(value)
    except OverflowError:  # an int too large for a float (10**400): no finite number here
        return False


def plain_values(value: Any) -> Any:
    """``value`` with numpy scalars and arrays, at any depth of dicts, lists and tuples, turned into
    Python's numbers and lists, and paths (``os.PathLike``) into strings, which JSON holds;
    anything else is kept as it is. For options that are recorded as given (gymnasium's env
    specs), so ``query_every=np.int64(5)`` and ``critic=Path(...)`` serialise."""
    import os

    if isinstance(value, Mapping):
        return {k: plain_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple) or (  # and OmegaConf's lists
        isinstance(value, MutableSequence) and not isinstance(value, bytearray)
    ):
        items = [plain_values(v) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    import numpy as np

    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def list_option(value: Any) -> list:
    """A list option (``critics``, ``data``, ``pipeline``, ``tasks``, ...) as a list: one value
    given bare on the command line (``data=data/Lift``, ``critics={name: oracle}``) is a list of
    one, not its characters or keys; null is none.

    Example:
        >>> list_option("data/Lift"), list_option(["a", "b"]), list_option(None)
        (['data/Lift'], ['a', 'b'], [])
    """
    if value is None:
        return []
    if isinstance(value, str | Mapping) or not hasattr(value, "__iter__"):  # DictConfig: Mapping
        return [value]
    return list(value)


def folder_problem(option: str, values: list) -> str | None:
    """What is wrong with a list of dataset folders given as ``option=``, or None: entries that
    are not paths (a nested list or mapping from a mistyped override), one folder listed twice
    (``data=[ds,ds/]``, or ``ds`` and a link to it: its episodes would count twice), or a folder
    another run is writing now (:func:`rollout.files.writer_of`)."""
    bad = [v for v in values if not isinstance(v, str | Path)]
    if not bad:
        # the same folder named twice: ds, ds/, ./ds, or a link to it
        resolved = [os.path.realpath(v) for v in values]
        twice = sorted({str(v) for v, r in zip(values, resolved, strict=True)
                        if resolved.count(r) > 1})  # fmt: skip
        if twice:
            return (
                f"{option}: {twice} name the same folder more than once; its episodes would "
                "count twice. List each folder once"
            )
        from rollout.files import writer_of

        for value in values:
            if who := writer_of(value):
                return (
                    f"{option}: {value} is being written by another run ({who}, e.g. "
                    "synthesize.py): its episodes so far would be read as the whole dataset. "
                    "Wait for it to end, or copy the episodes written so far to another folder"
                )
        return None
    from omegaconf import OmegaConf

    given = [OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for v in bad]
    return (
        f"{option}: {given} are not folders; give dataset folders, e.g. {option}=[data/Reacher-v5] "
        f"or {option}=[data/Reacher-v5,data/Lift]"
    )
