"""What the ``data=`` folders a script reads say of themselves, before it reads them."""

from __future__ import annotations

from typing import Any


def older_recordings_warned(folders: Any, script: str) -> None:
    """Warn, for ``script``, of ``folders`` recorded by an older version of the recording than
    this code's (:func:`envs.manifest.older_recordings`: their labels or chains of thought are
    the old ones). Not judged without the simulators installed (the ``sim`` extra), where the
    run reads recorded files alone."""
    try:
        from envs.manifest import warn_older_recordings
    except ImportError:
        return
    warn_older_recordings(folders, script)


def views_warned(critic: Any, folders: Any, tasks: Any) -> None:
    """Warn where ``critic`` records a view for one of ``tasks`` and a folder of ``folders``
    recorded its episodes at another (:func:`envs.render.warn_if_other_view`: the
    evaluator scored the shipped critic on 64² Reacher episodes without a word). Not judged
    without the simulators installed."""
    try:
        from envs.errors import InvalidOptionError
        from envs.manifest import read_manifest
        from envs.render import warn_if_other_view
    except ImportError:
        return
    for folder in folders or []:
        try:
            recorded = read_manifest(str(folder))
        except InvalidOptionError:
            continue
        for task, options in recorded.items():
            if task in tasks:
                warn_if_other_view(critic, task, options, source=str(folder))
