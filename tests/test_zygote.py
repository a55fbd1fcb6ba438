"""The test zygote runs a script as a fresh ``python`` would: the same argv, ``__name__``,
``sys.path``, environment, folder, streams, exit status and ``atexit`` (tests/zygote.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import zygote
from tests.zygote import run_python

SCRIPT = """\
import atexit, json, os, sys
atexit.register(lambda: print("atexit ran", file=sys.stderr))
print(json.dumps({"name": __name__, "argv": sys.argv, "path0": sys.path[0],
                  "path1": sys.path[1], "cwd": os.getcwd(), "marker": os.environ.get("MARKER"),
                  "stdin": sys.stdin.read(), "hashseed": os.environ.get("PYTHONHASHSEED"),
                  "hash": hash("viscritic"), "main_file": sys.modules["__main__"].__file__}))
print("to stderr", file=sys.stderr)
if len(sys.argv) > 1 and sys.argv[1] == "fail":
    raise ValueError("the run's own error")
if len(sys.argv) > 1 and sys.argv[1] == "exit":
    sys.exit("a message for the user")
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""


def _both(command, **kwargs):
    """The same command run fresh and from the zygote."""
    fresh = subprocess.run(command, capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL, **kwargs)  # fmt: skip
    forked = run_python(command, timeout=60, **kwargs)
    return fresh, forked


def test_a_script_runs_as_it_does_in_a_fresh_process(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "MARKER": "on", "PYTHONHASHSEED": "0",
           "PYTHONPATH": str(tmp_path / "extra")}  # fmt: skip
    for args in ([], ["3"], ["fail"], ["exit"]):
        fresh, forked = _both([sys.executable, str(script), *args], cwd=tmp_path, env=env)
        assert forked.returncode == fresh.returncode == {(): 0, ("3",): 3}.get(tuple(args), 1)
        assert forked.stdout == fresh.stdout  # name, argv, sys.path, folder, env, hash seed
        assert forked.stderr == fresh.stderr  # the traceback, the exit message, atexit's line
    assert (
        '"name": "__main__"' in forked.stdout
        and f'"path1": "{tmp_path / "extra"}"' in forked.stdout
    )
    assert "ValueError: the run's own error" not in forked.stderr  # the last run: sys.exit(str)
    assert forked.stderr.startswith("to stderr\na message for the user\natexit ran")


def test_a_module_runs_as_python_dash_m_runs_it(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "__init__.py").write_text("")
    (tmp_path / "mine" / "__main__.py").write_text(SCRIPT)
    fresh, forked = _both([sys.executable, "-m", "mine", "4"], cwd=tmp_path)
    assert forked.returncode == fresh.returncode == 4
    assert forked.stdout == fresh.stdout and '"path0": "' + str(tmp_path) in forked.stdout


def test_a_run_past_its_timeout_is_killed_with_what_it_started(tmp_path):
    script = tmp_path / "hang.py"
    marker = tmp_path / "child.pid"
    script.write_text(
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(marker)!r}, 'w').write(str(child.pid))\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as stopped:
        run_python([sys.executable, str(script)], timeout=3)
    assert time.monotonic() - start < 30  # killed at 3 s, not left to its minute
    assert stopped.value.output == "started\n"
    pid = int(marker.read_text())
    for _ in range(50):
        if not _alive(pid):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the run's own child {pid} outlived the timeout")


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a parent to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_what_a_zygote_cannot_give_runs_fresh(tmp_path, monkeypatch):
    script = tmp_path / "threads.py"
    script.write_text("import os, torch; print(os.getpid(), torch.get_num_threads())")
    forked = run_python([sys.executable, str(script)])
    zygote_pid = zygote._zygote.process.pid
    fresh = run_python([sys.executable, str(script)], env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert fresh.stdout.split()[1] == "1"  # OpenMP read it at torch's import
    assert forked.returncode == fresh.returncode == 0
    calls = []
    monkeypatch.setattr(zygote.subprocess, "run", lambda *a, **k: calls.append(a) or fresh)
    run_python([sys.executable, str(script)], env={**os.environ, "OMP_NUM_THREADS": "1"})
    run_python([sys.executable, str(script)], env={**os.environ, "TMPDIR": str(tmp_path)})
    run_python([sys.executable, "-c", "print(1)"])
    run_python([sys.executable, str(tmp_path / "missing.py")])  # python's own message and status 2
    monkeypatch.setenv("VISCRITIC_TEST_FRESH_PROCESS", "1")
    run_python([sys.executable, str(script)])
    assert len(calls) == 5 and zygote._zygote.process.pid == zygote_pid


def test_the_script_stays_main_until_the_process_ends(tmp_path):
    # runpy.run_path put the zygote's __main__ back when the script returned, and a process
    # pool's result pickled as __main__.<class> (zero_shot_rl's RunCancelled) failed to load
    # while the pool shut down: the pool broke and killed a run that was to finish
    script = tmp_path / "late.py"
    script.write_text(
        "import atexit, pickle, sys\n"
        "class Late(Exception):\n"
        "    pass\n"
        "data = pickle.dumps(Late('after main'))\n"
        "import multiprocessing\n"  # imported before the script ran: it names __main__ __mp_main__
        "class Later(Exception):\n"
        "    pass\n"
        "Later.__module__ = '__mp_main__'\n"  # as a spawned worker's class is named
        "late = pickle.dumps(Later('after main'))\n"
        "atexit.register(lambda: print(repr(pickle.loads(data)), repr(pickle.loads(late)),"
        " type(__loader__).__name__, __spec__, '__file__' in vars(sys.modules['__main__'])))\n"
    )
    fresh, forked = _both([sys.executable, str(script)], cwd=tmp_path)
    assert forked.returncode == fresh.returncode == 0, forked.stderr
    # python removes __main__.__file__ once the script has run
    assert (
        forked.stdout
        == fresh.stdout
        == ("Late('after main') Later('after main') SourceFileLoader None False\n")
    )


def test_python_s_shutdown_is_kept_joins_threads_and_flushes_unclosed_files(tmp_path):
    # the zygote's child skips the teardown of torch's and transformers' modules (1.3 s a run);
    # what a script can see of python's shutdown stays
    script = tmp_path / "shutdown.py"
    script.write_text(
        "import sys, threading, time\n"
        "def late():\n"
        "    time.sleep(0.5)\n"
        "    print('thread done', flush=True)\n"
        "threading.Thread(target=late).start()\n"
        f"log = open({str(tmp_path / 'log.txt')!r}, 'w')\n"
        "log.write('never closed')\n"
        "sys.exit(int(sys.argv[1]))\n"
    )
    for status in ("0", "3", "300"):
        (tmp_path / "log.txt").unlink(missing_ok=True)
        fresh = subprocess.run([sys.executable, str(script), status], capture_output=True,
                               text=True, timeout=60)  # fmt: skip
        assert (tmp_path / "log.txt").read_text() == "never closed"
        (tmp_path / "log.txt").unlink()
        forked = run_python([sys.executable, str(script), status], timeout=60)
        assert (tmp_path / "log.txt").read_text() == "never closed"
        assert forked.returncode == fresh.returncode == int(status) % 256
        assert forked.stdout == fresh.stdout == "thread done\n"


def test_a_relative_script_path_reaches_spawned_workers(tmp_path):
    # the script's __file__ was the relative path, and multiprocessing's folder python began in
    # was the zygote's: a spawned worker looked for the script there (the pool's workers failed
    # for ever, and the run hung)
    (tmp_path / "pool.py").write_text(
        "import multiprocessing\n"
        "def double(x):\n"
        "    return 2 * x\n"
        "if __name__ == '__main__':\n"
        "    with multiprocessing.get_context('spawn').Pool(1) as pool:\n"
        "        print(pool.map(double, [1, 2]))\n"
    )
    fresh, forked = _both([sys.executable, "pool.py"], cwd=tmp_path)
    assert forked.returncode == fresh.returncode == 0, forked.stderr
    assert forked.stdout == fresh.stdout == "[2, 4]\n"


def test_a_hook_and_a_status_are_python_s(tmp_path):
    script = tmp_path / "hooked.py"
    script.write_text(
        "import sys\n"
        "if sys.argv[1] == 'hook':\n"
        "    sys.excepthook = lambda *exc: print('my hook:', exc[1], file=sys.stderr)\n"
        "    raise ValueError('raised')\n"
        "sys.exit(int(sys.argv[1]))\n"
    )
    for arg in ("hook", str(2**70), "-1", "256"):
        fresh, forked = _both([sys.executable, str(script), arg])
        assert (forked.returncode, forked.stderr) == (fresh.returncode, fresh.stderr), arg
    assert forked.returncode == 0 and fresh.stderr == ""  # 256: the status's low byte


def test_a_run_interrupted_while_waited_on_ends_and_the_next_run_is_its_own(tmp_path):
    # a Ctrl-C (here SIGALRM's exception) while the client waited left the run going and its
    # status unread: the next run read it as its own
    import signal

    slow = tmp_path / "slow.py"
    slow.write_text("import time\ntime.sleep(3)\nprint('slow done')\n")
    fast = tmp_path / "fast.py"
    fast.write_text("print('fast')\n")
    run_python([sys.executable, str(fast)])  # the zygote up before the alarm is set

    def interrupt(*_):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            run_python([sys.executable, str(slow)])
        assert time.monotonic() - start < 2.5  # the run was ended, not waited for
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    done = run_python([sys.executable, str(fast)])
    assert (done.returncode, done.stdout) == (0, "fast\n")


def test_the_session_s_own_environment_moving_starts_a_new_zygote(tmp_path, monkeypatch):
    # importing deepspeed in the tests' process sets PYTORCH_NVML_BASED_CUDA_CHECK (and cv2 sets
    # LD_LIBRARY_PATH): every later run went fresh, the zygote unused for the rest of the suite
    (tmp_path / "ok.py").write_text("print('ok')\n")
    script = [sys.executable, str(tmp_path / "ok.py")]
    run_python(script)
    first = zygote._zygote.process
    monkeypatch.setenv("PYTORCH_SET_BY_A_LIBRARY", "1")
    assert run_python(script).returncode == 0
    assert zygote._zygote.process is not first and first.poll() is not None
    assert zygote._zygote.serves(os.environ)
