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
