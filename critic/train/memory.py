"""The training process's memory, logged each step: peak and current resident memory, and
handing freed memory back to the system between steps of different batch shapes."""

from __future__ import annotations


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def release_freed_memory() -> None:
    """Hand memory the process has freed back to the system (glibc's ``malloc_trim``; nothing
    elsewhere). Batches of different sizes (one Reacher frame, eight Lift frames) leave freed
    blocks that glibc keeps: measured on the shipped critic's readout round, resident memory
    climbed 4.8 → 7.8 GB over 220 steps without it and stayed at 3.9 GB with it, at the same
    1.7 s a step (2-core CPU)."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        import ctypes
        import ctypes.util

        try:
            _MALLOC_TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM = None  # glibc's malloc_trim, False where there is none; looked up on first use


def rss_mb() -> float | None:
    """Resident memory of this process now (None where ``/proc`` does not say): unlike the peak,
    it falls when memory is freed, so a leak shows as a climb step after step."""
    import os

    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None
