"""Files a later run reads back: written whole or not at all, one writer per folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rollout.files import (
    FolderBusyError,
    holds,
    lock_folder,
    release,
    write_atomic,
    written_whole,
)

ROOT = Path(__file__).resolve().parents[2]


def test_a_write_that_fails_midway_leaves_the_earlier_file_whole(tmp_path, monkeypatch):
    # results.json written in place by a run that hit a full disk was half a file, and the
    # merge= after it refused the whole run dir
    target = tmp_path / "results.json"
    target.write_text('{"runs": [1, 2, 3]}')
    real = Path.write_text

    def full_disk(self, text, *args, **kwargs):
        real(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, '{"runs": [4, 5, 6, 7]}')
    monkeypatch.undo()
    assert target.read_text() == '{"runs": [1, 2, 3]}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no .partial left
    write_atomic(target, "{}")
    assert target.read_text() == "{}"


def test_a_file_another_library_writes_is_whole_or_not_there(tmp_path):
    target = tmp_path / "policy.zip"
    target.write_bytes(b"EARLIER")
    with pytest.raises(OSError) as err, written_whole(target) as partial:
        partial.write_bytes(b"half")
        raise OSError(28, "No space left on device")  # the library's write, as a full disk ends
    # the error names the file (a full disk's named none), and the earlier file is as it was
    assert str(err.value) == f"[Errno 28] No space left on device: '{target}'"
    assert target.read_bytes() == b"EARLIER" and sorted(tmp_path.iterdir()) == [target]
    with pytest.raises(FileNotFoundError) as err, written_whole(target) as partial:
        pass  # a writer that made no .partial (a library adding its own extension): named so
    assert err.value.filename == str(partial)
    with pytest.raises(PermissionError) as err, written_whole(target) as partial:
        raise PermissionError(13, "Permission denied", str(partial))  # a folder not writable
    assert str(err.value) == f"[Errno 13] Permission denied: '{target}'"  # not <name>.partial
    with written_whole(target) as partial:
        partial.write_bytes(b"NEW")
    assert target.read_bytes() == b"NEW" and sorted(tmp_path.iterdir()) == [target]


def _lock_elsewhere(folder: Path) -> subprocess.CompletedProcess:
    code = f"from rollout.files import lock_folder; lock_folder({str(folder)!r}, 'test run')"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)  # fmt: skip


def test_a_folder_has_one_writer_at_a_time(tmp_path):
    folder = tmp_path / "run"
    held = lock_folder(folder, "run")  # made if missing
    assert holds(folder) and holds(tmp_path / "x" / ".." / "run") and not holds(tmp_path)
    other = _lock_elsewhere(folder)
    assert other.returncode == 1
    assert other.stderr.strip().splitlines()[-1] == (
        f"rollout.files.FolderBusyError: {folder} is in use by another run (process "
        f"{__import__('os').getpid()}): two runs writing there would mix or replace each other's "
        "files; wait for it to end, or give this test run another folder"
    )
    release(held)
    assert not holds(folder)
    assert _lock_elsewhere(folder).returncode == 0  # given back, and freed when a process ends
    assert _lock_elsewhere(folder).returncode == 0
    with pytest.raises(FolderBusyError):
        held = lock_folder(folder, "run")
        lock_folder(folder, "run")  # another open file of this process is another holder too
    release(held)


def test_a_lock_file_that_is_a_folder_is_named(tmp_path):
    # synthesize said the whole dataset folder "cannot be written to (Is a directory)"
    (tmp_path / ".lock").mkdir()
    with pytest.raises(IsADirectoryError) as err:
        lock_folder(tmp_path, "run")
    assert err.value.strerror == (
        f"{tmp_path / '.lock'} is a folder where the run's lock file goes; remove it"
    )
