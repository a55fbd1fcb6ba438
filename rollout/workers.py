"""Worker processes that end with the process that started them.

A ``spawn`` worker of :class:`concurrent.futures.ProcessPoolExecutor` waits on its call queue
for ever once its parent is gone: after a ``kill -9`` of ``synthesize.py`` or ``zero_shot_rl.py``
its workers (a few hundred MB each) stayed. The standard library has no option for it, so on
Linux the worker asks the kernel for a SIGTERM when its parent dies (``PR_SET_PDEATHSIG``);
elsewhere this does nothing.

And how a script and its workers hear a stop: SIGTERM as Ctrl-C in the script's main process
(:func:`stop_on_sigterm`), and no Ctrl-C in a worker while it starts
(:func:`workers_start_deaf_to_ctrl_c`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Iterator

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def end_with_parent() -> bool:
    """Have this process get SIGTERM when its parent dies (call it first thing in a worker's
    initializer). Returns whether it could (Linux with a C library at hand)."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:  # the parent died before the request: nothing would send it
        os.kill(os.getpid(), signal.SIGTERM)
    return True


def stop_on_sigterm() -> None:
    """Have SIGTERM (a scheduler's pre-emption, ``kill``) raise :class:`KeyboardInterrupt` in the
    main thread, as Ctrl-C does, so that a script keeps what finished and says so; its default
    action ended the process with nothing written. Call it in a script's main process only: a
    worker that :func:`end_with_parent` set up is meant to die of it."""
    signal.signal(signal.SIGTERM, _interrupted)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def interrupt_exit(exc: KeyboardInterrupt) -> tuple[str, int]:
    """What stopped the script (``"Ctrl-C"`` or ``"SIGTERM"``) and the exit status a shell gives
    for it (130 or 143): the script's last words and ``sys.exit`` code after an interrupt."""
    if exc.args == ("SIGTERM",):
        return "SIGTERM", 128 + signal.SIGTERM
    return "Ctrl-C", 128 + signal.SIGINT


@contextlib.contextmanager
def workers_start_deaf_to_ctrl_c() -> Iterator[None]:
    """Around where a process pool starts its workers: SIGINT is ignored meanwhile, and a worker
    started so starts ignoring it (Python installs its KeyboardInterrupt handler only where
    SIGINT is at its default), so that a Ctrl-C while the workers import, before their
    initializer (:func:`hear_ctrl_c_as_ignored`) runs, is not a traceback from each. (A signal
    mask would not do: a spawned worker does not keep its parent's.) This process's own handler
    is back when the block ends; a Ctrl-C in the few milliseconds between is not heard."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers are the main thread's to set
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def hear_ctrl_c_as_ignored() -> None:
    """A worker's initializer: ignore Ctrl-C (the parent stops the run), whether or not it
    was started by :func:`workers_start_deaf_to_ctrl_c`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
