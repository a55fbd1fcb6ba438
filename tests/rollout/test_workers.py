"""rollout.workers: a pool's worker processes end when the process that started them is killed
(they waited on their call queue for ever: after a kill -9 of synthesize.py, two idle workers
of about 220 MB each stayed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

PARENT = textwrap.dedent(
    """
    import multiprocessing, os, sys, time
    from concurrent.futures import ProcessPoolExecutor
    from rollout.workers import end_with_parent


    def pid(_):
        time.sleep(0.2)  # each worker takes some of the four
        return os.getpid()


    if __name__ == "__main__":
        initializer = end_with_parent if sys.argv[1] == "ends" else None
        pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=initializer)
        print(*sorted(set(pool.map(pid, range(4)))), flush=True)
        time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (not reaped by its dead parent's reaper yet) is gone as far as memory goes
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_end_with_a_killed_parent(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    proc = subprocess.Popen([sys.executable, str(script), "ends"], stdout=subprocess.PIPE, text=True,
                            cwd=os.getcwd(), env={**os.environ, "PYTHONPATH": os.getcwd()})  # fmt: skip
    workers = [int(p) for p in proc.stdout.readline().split()]
    assert workers and proc.pid not in workers
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.2)
    left = [w for w in workers if _alive(w)]
    for pid in left:
        os.kill(pid, signal.SIGTERM)
    assert left == []  # without end_with_parent (argument "stays") both stay


def test_sigterm_is_an_interrupt_that_says_it_was_a_sigterm():
    from rollout.workers import interrupt_exit, stop_on_sigterm

    before = signal.getsignal(signal.SIGTERM)
    try:
        stop_on_sigterm()
        with pytest.raises(KeyboardInterrupt) as stopped:
            os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's pre-emption
            time.sleep(5)  # the handler runs at the next bytecode
        assert interrupt_exit(stopped.value) == ("SIGTERM", 143)
        assert interrupt_exit(KeyboardInterrupt()) == ("Ctrl-C", 130)
    finally:
        signal.signal(signal.SIGTERM, before)


def _ignores_ctrl_c(_=None) -> bool:
    return signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_workers_start_ignoring_ctrl_c():
    # a Ctrl-C while the workers imported printed a KeyboardInterrupt traceback from each
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from rollout.workers import hear_ctrl_c_as_ignored, workers_start_deaf_to_ctrl_c

    context = multiprocessing.get_context("spawn")
    # as in a terminal: started in the background (CI), this process ignores SIGINT, and so
    # would every child of it
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _started_children_ignore_ctrl_c_only_inside(context)
    finally:
        signal.signal(signal.SIGINT, outer)
    with (
        workers_start_deaf_to_ctrl_c(),
        ProcessPoolExecutor(1, mp_context=context, initializer=hear_ctrl_c_as_ignored) as pool,
    ):
        assert pool.submit(_ignores_ctrl_c).result(timeout=60) is True


def _started_children_ignore_ctrl_c_only_inside(context) -> None:
    from rollout.workers import workers_start_deaf_to_ctrl_c

    handler = signal.getsignal(signal.SIGINT)
    with workers_start_deaf_to_ctrl_c():
        child = context.Process(target=_report, args=(queue := context.Queue(),))
        child.start()
    assert signal.getsignal(signal.SIGINT) is handler  # this process hears Ctrl-C again
    assert queue.get(timeout=60) is True  # ignored from the worker's first line: its import too
    child.join(60)
    plain = context.Process(target=_report, args=(queue,))
    plain.start()
    assert queue.get(timeout=60) is False  # started outside: Python's KeyboardInterrupt handler
    plain.join(60)


def _report(queue) -> None:
    queue.put(_ignores_ctrl_c())
