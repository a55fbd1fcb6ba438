"""Files a later run reads back: written whole or not at all, and one writer per folder.

A run's records (``results.json``, ``history.jsonl``, a dataset's manifest) are what a resume, a
``merge=`` or the next ``synthesize.py`` reads. Written in place, a kill or a full disk mid-write
left half a file where the whole earlier one had been; two runs in one folder interleaved or
replaced each other's. :func:`write_atomic` writes a sibling ``.partial`` and renames it over the
file (atomic on POSIX), and :func:`lock_folder` holds an exclusive ``flock`` on ``<folder>/.lock``
for as long as a run writes there. The lowest layer has them so that every layer writes alike.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> write_atomic(folder / "a.json", "{}")
    >>> (folder / "a.json").read_text()
    '{}'
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOCK = ".lock"


# The locks this process holds (the folder, resolved → its open lock file), for :func:`holds`;
# weakly, so that a lock file dropped and collected still gives its lock back.
_HELD: weakref.WeakValueDictionary[Path, Any] = weakref.WeakValueDictionary()


class FolderBusyError(RuntimeError):
    """Another process holds the folder's lock: it is writing there now."""


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` whole, or leave the earlier ``path`` as it was.

    Raises:
        OSError: the write failed (a full disk, a folder not writable), naming ``path``; ``path``
            is unchanged and no ``.partial`` file is left.
    """
    with written_whole(path) as partial:
        partial.write_text(text)


@contextlib.contextmanager
def written_whole(path: str | Path) -> Iterator[Path]:
    """The sibling ``<name>.partial`` to write ``path`` through, renamed over ``path`` when the
    block ends and removed when it raises: for files another library writes (a plot, a policy),
    which a full disk left cut short and complete-looking. Give such a writer the format
    explicitly (``savefig(..., format="png")``): it cannot read it from ``.partial``.

    Raises:
        OSError: the write failed, naming ``path`` (a full disk's error named no file).
    """
    path = Path(path)
    partial = path.with_name(f"{path.name}.partial")
    try:
        yield partial
        os.replace(partial, path)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        # the file asked for named (a full disk named none), unless the writer made no .partial
        if (isinstance(exc, OSError) and exc.errno not in (None, errno.ENOENT)
                and exc.filename in (None, str(partial), partial)):  # fmt: skip
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


def lock_folder(folder: str | Path, what: str):
    """Take the exclusive lock of ``folder`` (made if missing) for this process; returns the open
    lock file, held until :func:`release`, the file's collection or the process's end (a killed
    run frees it too).

    Args:
        folder: the run dir or dataset folder.
        what: what this process is, for the message (``"run"``, ``"synthesize.py run"``).

    Raises:
        FolderBusyError: another process holds it (the message names its pid, when it wrote it).
    """
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / LOCK).is_dir():  # "cannot be written to (Is a directory)" named the folder
        raise IsADirectoryError(
            errno.EISDIR, f"{folder / LOCK} is a folder where the run's lock file goes; remove it"
        )
    handle = open(folder / LOCK, "a+")  # noqa: SIM115 - held open: the lock lives with it
    try:
        for wait in (0.05, 0.2, None):  # a reader's shared lock (writer_of) lasts a moment
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if wait is None:
                    raise
                time.sleep(wait)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read(32).strip()
        handle.close()
        pid = f" (process {holder})" if holder.isdigit() else ""
        raise FolderBusyError(
            f"{folder} is in use by another run{pid}: two runs writing there would mix or replace "
            f"each other's files; wait for it to end, or give this {what} another folder"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    _HELD[folder.resolve()] = handle
    return handle


def holds(folder: str | Path) -> bool:
    """Whether this process holds ``folder``'s lock (:func:`lock_folder`, not yet released): a
    second :func:`lock_folder` of it in this process is refused as another run's, so code that
    may run under a holder of its own (a script whose dataset folder is its run dir, which the
    run-dir guard locked) asks first."""
    handle = _HELD.get(Path(folder).resolve())
    return handle is not None and not handle.closed


def writer_of(folder: str | Path) -> str | None:
    """Who else holds ``folder``'s lock now (``"process <pid>"``), or None: a reader of a dataset
    asks first, so that it does not read one half-written (a training run read 95 of the 400
    episodes a synthesis was recording, without a word)."""
    import fcntl

    lock = Path(folder) / LOCK
    if holds(folder) or not lock.is_file():
        return None
    try:
        with open(lock) as handle:  # a shared lock for a moment: refused while a writer holds it
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = handle.read(32).strip()
                return f"process {holder}" if holder.isdigit() else "another process"
    except OSError:  # a lock file that cannot be read: nothing to say who writes
        return None
    return None


def release(handle) -> None:
    """Give back a lock :func:`lock_folder` took (``None``: nothing to give back)."""
    if handle is not None:
        handle.close()  # closing the file releases its flock
        for folder in [f for f, h in _HELD.items() if h is handle]:
            del _HELD[folder]
