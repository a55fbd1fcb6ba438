"""The project's scripts run as a user runs them, without paying their imports each time.

A script run from the tests (``python experiments/train_critic.py ...``) spent about 5 of its 7
seconds importing torch and transformers' Qwen-VL models, and the suite runs such scripts over a
hundred times. :func:`run_python` takes the arguments of :func:`subprocess.run` and gives its
:class:`subprocess.CompletedProcess`, but the new process is forked from a *zygote*: one Python
started once per test session, with this project's environment, that has imported those libraries
and done nothing else (no torch op, no thread, no simulator, no script of ours). The forked child
takes the run's argv, environment, working folder and standard streams, runs the script in a new
``__main__`` module (as ``python script.py`` does; ``python -m`` through runpy, as python itself
does), and ends as python ends (:func:`_exit`), so ``atexit``, exit codes, ``sys.exit`` messages
and uncaught tracebacks are those of a fresh process.

What a zygote cannot give, a fresh process does: a run whose environment differs from the
zygote's in a variable read at import (``PYTHON*``, thread counts, ``TORCH*``, ``HF_*``, ...), a
command that is not ``python <file>`` or ``python -m <module>`` (a run reads no standard input:
``/dev/null``, as ``subprocess.run`` under pytest), or a ``cwd`` that is not there. Set
``VISCRITIC_TEST_FRESH_PROCESS=1`` to run every script in a fresh process (the suite takes
minutes longer). Scripts that are signalled (Ctrl-C, SIGTERM) or launched by torchrun keep
:class:`subprocess.Popen` in their tests.

Run as a script, this file is the zygote: it reads one JSON request per line on stdin and answers
the child's pid, then its exit status, on stdout.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

# Imported by the zygote before it forks: what every script of ours imports and takes seconds.
# Nothing that reads the environment a script sets first (envs.gl sets MUJOCO_GL before mujoco).
PRELOAD = (
    "numpy",
    "torch",
    "transformers",
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl",
    "transformers.models.qwen3_vl.modeling_qwen3_vl",
    "hydra",
    "omegaconf",
    "stable_baselines3",
)
NEVER_PRELOADED = ("mujoco", "robosuite", "deepspeed", "OpenGL")
# Variables read when a module is imported or the interpreter starts: a run that sets them other
# than the zygote did gets a fresh process.
READ_AT_START = ("PYTHON", "OMP_", "MKL_", "OPENBLAS_", "TORCH", "PYTORCH_", "HF_", "HUGGINGFACE_",
                 "TRANSFORMERS", "TOKENIZERS", "KMP_", "LD_", "MALLOC", "TMPDIR", "TEMP", "TMP",
                 "HOME", "XDG_", "TQDM_", "LANG", "LC_")  # fmt: skip
# ... but for these, read later (torch sets the first itself when it compiles; the child sets its
# sys.path from the second).
READ_LATER = ("TORCHINDUCTOR_CACHE_DIR", "PYTHONPATH")


def _serve() -> None:
    """The zygote's loop: fork a child per request, answer its pid and its exit status."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    loaded = [name for name in NEVER_PRELOADED if name in sys.modules]
    if loaded:
        raise RuntimeError(f"the zygote must not import {loaded}: scripts set their environment")
    if threading.active_count() != 1:  # a fork copies the calling thread alone
        raise RuntimeError(f"the zygote runs threads after its imports: {threading.enumerate()}")
    import gc

    gc.freeze()  # the preloaded objects: a child's collections look only at what it made
    requests, replies = sys.stdin, sys.stdout

    def reply(message: dict) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    reply({"ready": os.getpid()})
    for line in requests:
        request = {**json.loads(line), "zygote": os.getpid()}
        pid = os.fork()
        if pid == 0:
            try:
                _child(request)  # never returns
            finally:  # a child that failed to become the run never goes back to the zygote's loop
                os._exit(1)
        with contextlib.suppress(OSError):  # in its own group before the client may signal it
            os.setpgid(pid, pid)
        reply({"pid": pid})
        _, status = os.waitpid(pid, 0)
        reply({"returncode": os.waitstatus_to_exitcode(status)})


def _child(request: dict) -> None:
    """In the forked child: become the run the request describes, run it, and exit as it does."""
    os.setpgid(0, 0)  # its own group: a timeout ends the run and whatever it started
    _die_with_zygote(request["zygote"])  # a Ctrl-C that ends pytest and the zygote ends the run
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY),
                            (1, request["stdout"], os.O_WRONLY | os.O_TRUNC),
                            (2, request["stderr"], os.O_WRONLY | os.O_TRUNC)):  # fmt: skip
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the zygote's own stdin was the requests
    started = os.environ.get("PYTHONPATH", "")
    os.environ.clear()
    os.environ.update(request["env"])
    given = os.environ.get("PYTHONPATH", "")
    if given != started:  # the folders python puts after the script's own, at its start
        sys.path = (
            [sys.path[0]]
            + [os.path.abspath(p) for p in given.split(os.pathsep) if p]
            + [p for p in sys.path[1:] if p not in started.split(os.pathsep)]
        )
    os.chdir(request["cwd"])
    if "multiprocessing" in sys.modules:  # imported in the zygote's folder: spawn finds a
        import multiprocessing.process  # relative script path from the folder python began in

        multiprocessing.process.ORIGINAL_DIR = os.getcwd()
    if "numpy" in sys.modules:  # seeded once in the zygote: each run draws its own, as fresh
        import numpy

        numpy.random.seed()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import builtins
    import importlib.machinery
    import runpy
    import types

    args = request["args"]
    code, interrupted = 0, False
    # The run's own __main__ module, kept until the process ends, as the interpreter keeps it:
    # runpy.run_path put the zygote's back on return, and a worker's result pickled as
    # __main__.<class> (or __mp_main__.<class>) then failed to load while the run's process pool
    # shut down, which broke the pool.
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    zygote = sys.modules["__main__"]
    for name, module in list(sys.modules.items()):  # __mp_main__ too: multiprocessing's import
        if module is zygote:  # made it the zygote's, where python imports it during the script
            sys.modules[name] = main
    try:
        if args[0] == "-m":
            sys.argv = [args[1], *args[2:]]
            sys.path[0] = os.getcwd()  # as python -m puts it first
            runpy._run_module_as_main(args[1])  # what python -m itself calls
        else:
            sys.argv = list(args)
            sys.path[0] = str(Path(args[0]).resolve().parent)  # as python <file> puts it first
            path = os.path.abspath(args[0])  # python names the script by its absolute path
            main.__file__, main.__cached__ = path, None
            main.__loader__ = importlib.machinery.SourceFileLoader("__main__", path)
            try:
                exec(compile(Path(path).read_bytes(), path, "exec"), main.__dict__)
            finally:  # as python does once the script has run
                main.__dict__.pop("__file__", None), main.__dict__.pop("__cached__", None)
    except SystemExit as stop:  # what python does with it: a message, or the status
        code = stop.code
    except BaseException as error:  # uncaught: its traceback from the script's frame on, status 1
        tb = error.__traceback__
        while tb and tb.tb_frame.f_code.co_filename == __file__:  # the zygote's own frames
            tb = tb.tb_next
        sys.excepthook(type(error), error.with_traceback(tb), tb)  # the script's, if it set one
        code, interrupted = 1, isinstance(error, KeyboardInterrupt)
    _exit(code, main, interrupted)


def _die_with_zygote(zygote: int) -> None:
    """SIGKILL this process when the zygote (its parent) ends (Linux's ``PR_SET_PDEATHSIG``)."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != zygote:  # the zygote ended before the request
        os._exit(1)


def _exit(code, main, interrupted: bool) -> None:
    """End the run as python ends: the status (a message printed for a non-integer), then the
    script's threads joined, ``atexit`` run, the script's globals finalized, the streams flushed;
    after an uncaught Ctrl-C python ends by SIGINT itself. The rest of the teardown (every module
    torch and transformers loaded: 1.3 s a run) is skipped: an object those modules hold is not
    finalized, as no script of ours needs."""
    import atexit
    import gc
    import threading

    if code is None:
        status = 0
    elif isinstance(code, int):  # python's C long, then the status's low byte (-1 on overflow)
        status = (code if -(2**63) <= code < 2**63 else -1) & 0xFF
    else:
        print(code, file=sys.stderr)
        status = 1
    threading._shutdown()  # non-daemon threads, and what registered there (process pools)
    atexit._run_exitfuncs()
    main.__dict__.clear()  # the script's own objects: an unclosed file flushes
    gc.collect()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if interrupted:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(status)


class _Zygote:
    """The client's handle on the zygote process (started on first use, ended at exit)."""

    def __init__(self) -> None:
        self.env = dict(os.environ)
        self.process = subprocess.Popen(
            [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=self.env, cwd=Path(__file__).resolve().parents[1],
        )  # fmt: skip
        self.lock = threading.Lock()
        ready = self.process.stdout.readline()
        if not ready:
            raise RuntimeError(f"the test zygote did not start (exit {self.process.wait()})")
        atexit.register(self.close)

    def serves(self, env) -> bool:
        return self.process.poll() is None and self.same_start(env, self.env)

    @staticmethod
    def same_start(env, other) -> bool:
        """Whether ``env`` and ``other`` agree on every variable read at start or import
        (PYTHONHASHSEED too: unset, each fresh run draws its own, where the zygote has one)."""
        keys = {k for k in {*env, *other} if k.startswith(READ_AT_START)} - set(READ_LATER)
        return all(env.get(k) == other.get(k) for k in keys)

    def run(self, command: list, args: list[str], env, cwd, timeout) -> tuple[int, str, str]:
        with self.lock, tempfile.TemporaryDirectory(prefix="zygote-") as folder:
            out, err = Path(folder, "stdout"), Path(folder, "stderr")
            out.touch(), err.touch()
            request = {"args": args, "env": env, "cwd": str(cwd), "stdout": str(out),
                       "stderr": str(err)}  # fmt: skip
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            pid = json.loads(self.process.stdout.readline())["pid"]
            killed = threading.Event()

            def kill() -> None:  # the run and whatever it started: it is its group's leader
                killed.set()
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)

            timer = threading.Timer(timeout, kill) if timeout else None
            if timer:
                timer.start()
            try:
                line = self.process.stdout.readline()
            except BaseException:  # Ctrl-C, or a test's own timeout: the run ends first, and its
                kill()  # status is read, or the next run would read it as its own
                self.process.stdout.readline()
                raise
            finally:
                if timer:
                    timer.cancel()
            if not line:
                raise RuntimeError("the test zygote ended during a run")
            if killed.is_set():
                raise subprocess.TimeoutExpired(command, timeout, out.read_text(errors="replace"),
                                                err.read_text(errors="replace"))  # fmt: skip
            code = json.loads(line)["returncode"]
            return code, out.read_text(errors="replace"), err.read_text(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=30)


_zygote: _Zygote | None = None


def _python_args(command: list, cwd) -> list[str] | None:
    """The arguments after ``python`` when ``command`` is ``python <file>`` or ``python -m <mod>``."""
    command = [str(c) for c in command]
    if len(command) < 2 or command[0] != sys.executable:
        return None
    if command[1] == "-m" and len(command) >= 3:
        return command[1:]
    script = Path(cwd or ".", command[1])  # where the run looks for it
    return command[1:] if command[1].endswith(".py") and script.is_file() else None


def run_python(
    command: list,
    *,
    capture_output: bool = True,
    text: bool = True,
    timeout: float | None = None,
    cwd=None,
    env: dict[str, str] | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess:
    """:func:`subprocess.run` of ``[sys.executable, script, *args]`` (or ``-m module``), forked
    from the session's zygote when it can serve the run (see the module's docstring)."""
    global _zygote
    env = dict(os.environ if env is None else env)
    args = _python_args(command, cwd)
    fresh = os.environ.get("VISCRITIC_TEST_FRESH_PROCESS") == "1" or not (capture_output and text)
    if args is None or fresh or not Path(cwd or ".").is_dir():  # subprocess names a missing cwd
        return subprocess.run(command, capture_output=capture_output, text=text, timeout=timeout,
                              cwd=cwd, env=env, check=check)  # fmt: skip
    if _zygote and not _zygote.serves(os.environ) and _Zygote.same_start(env, os.environ):
        # the session's own environment moved (importing deepspeed sets PYTORCH_*, cv2 sets
        # LD_LIBRARY_PATH), or the zygote ended: one started anew serves this run and the next
        _zygote.close()
        _zygote = None
    if _zygote is None:
        _zygote = _Zygote()
    if not _zygote.serves(env):  # the run asks for values of its own
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                              env=env, check=check)  # fmt: skip
    code, out, err = _zygote.run(command, args, env, cwd or os.getcwd(), timeout)
    done = subprocess.CompletedProcess(command, code, out, err)
    if check:
        done.check_returncode()
    return done


if __name__ == "__main__":
    _serve()
