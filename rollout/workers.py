"""Worker processes that end with the process that started them.

A ``spawn`` worker of :class:`concurrent.futures.ProcessPoolExecutor` waits on its call queue
for ever once its parent is gone: after a ``kill -9`` of ``synthesize.py`` or ``zero_shot_rl.py``
its workers (a few hundred MB each) stayed. The standard library has no option for it, so on
Linux the worker asks the kernel for a SIGTERM when its parent dies (``PR_SET_PDEATHSIG``);
elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

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
