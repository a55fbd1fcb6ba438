"""experiments/zero_shot_rl.py stopped: by SIGTERM (a scheduler's pre-emption), by Ctrl-C while
the report is made, by a worker that dies, and with overwrite=true before a run of its own
finished. What finished is kept, the earlier run is not lost, and the run says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.experiments.rl_runs import ROOT, SCRIPT, TINY


def _config(*overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("zero_shot_rl", overrides=[*TINY, *overrides])


def _start(run_dir: Path, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *TINY, f"hydra.run.dir={run_dir}", *overrides],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
        start_new_session=True,  # SIGINT at its default: started in the background, it is ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def _wait_for_a_policy(run: subprocess.Popen, run_dir: Path, count: int = 1) -> None:
    deadline = time.monotonic() + 240
    while len(list(run_dir.glob("*/policy.zip"))) < count and time.monotonic() < deadline:
        assert run.poll() is None, run.communicate()[1][-3000:]
        time.sleep(0.2)


@pytest.mark.parametrize("stop", ["Ctrl-C", "SIGTERM"])
def test_an_interrupt_keeps_the_runs_that_finished_and_says_so(tmp_path, stop):
    # Ctrl-C printed the main process's and the idle workers' KeyboardInterrupt tracebacks;
    # SIGTERM (to the main process alone, as a scheduler may send it) ended the experiment at
    # once with no results.json: every finished run was lost, and merge= refused the dir
    run = _start(tmp_path, "total_timesteps=400", "conditions=[ground_truth]",
                 "seeds=[0,1,2,3,4,5]", "workers=2")  # fmt: skip
    # a third policy: a worker has finished a run whole (a policy is saved before its test, and
    # a Ctrl-C in the test stops that run too; the queued runs no longer start after it)
    _wait_for_a_policy(run, tmp_path, count=3)
    time.sleep(0.5)  # its result reaches the main process
    if stop == "Ctrl-C":
        os.killpg(run.pid, signal.SIGINT)  # as a terminal sends it: to the whole process group
    else:
        run.send_signal(signal.SIGTERM)
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == {"Ctrl-C": 130, "SIGTERM": 143}[stop], stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    # the resume it names gives the run dir: resume=true alone started a new, dated one
    assert stderr.strip().endswith(
        f"zero_shot_rl: interrupted ({stop}); the runs that finished, if any, are in {tmp_path}; "
        f"to train the rest, run the same command with hydra.run.dir={tmp_path} resume=true"
    )
    assert f"run the same command again with hydra.run.dir={tmp_path} resume=true" in stdout
    kept = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert 1 <= len(kept) < 6
    assert all((tmp_path / f"ground_truth_seed{r['seed']}" / "policy.zip").is_file() for r in kept)


def test_a_stopped_experiment_starts_no_run_and_stops_a_running_one(tmp_path):
    # a run the pool had already handed to a worker started after the stop, and a worker told
    # of a SIGTERM by the main process alone trained on for minutes
    import zero_shot_rl as module  # experiments/ is on the test path (pyproject)

    cfg = _config("conditions=[ground_truth]", "seeds=[0]")
    stop = threading.Event()
    stop.set()
    with pytest.raises(module.RunCancelled):
        module.train_one(cfg, "ground_truth", 0, tmp_path, stop=stop)  # at its first step
    previous = module._stop
    module._stop = stop
    try:
        with pytest.raises(module.RunCancelled, match="before this run started"):
            module._train_in_worker(cfg, "ground_truth", 0, tmp_path)
    finally:
        module._stop = previous


def test_an_interrupt_while_the_report_is_made_keeps_every_run(tmp_path, monkeypatch):
    # a Ctrl-C in the second after the last run finished (summarise, the report) lost them all
    import zero_shot_rl as module

    summarise, calls = module.summarise, []

    def interrupted_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return summarise(*args, **kwargs)

    monkeypatch.setattr(module, "summarise", interrupted_once)
    cfg = _config("conditions=[ground_truth]", "seeds=[0,1]", "workers=1")
    with pytest.raises(KeyboardInterrupt):
        module.run(cfg, tmp_path)
    kept = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert [(r["condition"], r["seed"]) for r in kept] == [("ground_truth", 0), ("ground_truth", 1)]


def test_a_resume_that_finds_no_earlier_run_says_so(tmp_path, caplog):
    # from the default run dir, resume=true is a new, dated folder: it retrained every run
    # without a word
    import zero_shot_rl as module

    cfg = _config("conditions=[ground_truth]", "seeds=[0]", "workers=1", "resume=true")
    with caplog.at_level("WARNING"):
        module.run(cfg, tmp_path)
    assert (
        f"resume=true: no run of this experiment finished in {tmp_path} before, so every run "
        "trains; to continue a stopped experiment, give its folder: hydra.run.dir=<its dir> "
        "resume=true" in caplog.messages
    )


def _earlier_run(run_dir: Path) -> dict[str, str]:
    files = {"results.json": '{"earlier": true}', "report.md": "# earlier",
             "ground_truth_seed0/evaluations.npz": "earlier"}  # fmt: skip
    for name, text in files.items():
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text(text)
    return files


def test_overwrite_stopped_before_a_run_finished_puts_the_earlier_run_back(tmp_path, monkeypatch):
    # the earlier results stayed beside the stopped run's files (and its record), and merge=
    # reported them as this run's
    import zero_shot_rl as module

    earlier = _earlier_run(tmp_path)

    def stopped(cfg, condition, seed, out_dir, stop=None):
        (out_dir / f"{condition}_seed{seed}").mkdir(exist_ok=True)  # as EvalCallback makes it
        (out_dir / f"{condition}_seed{seed}" / "evaluations.npz").write_text("this run's")
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "train_one", stopped)
    cfg = _config("conditions=[ground_truth]", "seeds=[0]", "workers=1", "overwrite=true")
    with pytest.raises(KeyboardInterrupt):
        module.run(cfg, tmp_path)
    assert {n: (tmp_path / n).read_text() for n in earlier} == earlier
    assert not (tmp_path / ".overwritten").exists()
    monkeypatch.undo()  # a run that finishes replaces the earlier one, and keeps nothing aside
    module.run(cfg, tmp_path)
    assert "earlier" not in (tmp_path / "results.json").read_text()
    assert not (tmp_path / ".overwritten").exists()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in command:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers in /proc")
def test_a_worker_that_dies_is_named_and_the_finished_runs_are_kept(tmp_path):
    # an OOM-killed worker was hydra's "Error executing job" and a BrokenProcessPool traceback
    run = _start(tmp_path, "total_timesteps=400", "conditions=[ground_truth]",
                 "seeds=[0,1,2,3,4,5]", "workers=2")  # fmt: skip
    # a third policy: one worker has finished a run whole (its policy is saved before its test)
    _wait_for_a_policy(run, tmp_path, count=3)
    time.sleep(0.5)  # its result reaches the main process
    workers = _children(run.pid)
    assert workers, "no worker process found"
    os.kill(workers[0], signal.SIGKILL)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert stderr.strip().endswith(
        f"zero_shot_rl: a worker process died (killed, out of memory, or failed to start: see "
        f"above); the runs that finished, if any, are in {tmp_path} (workers=1 needs less memory)"
    )
    assert json.loads((tmp_path / "results.json").read_text())["runs"]


def test_a_main_process_killed_leaves_records_merge_and_resume_read(tmp_path):
    # a SIGKILL of the main process (a node lost, the OOM killer) left policies and no record:
    # merge= refused the dir ("not a results.json"), and every finished run was to train again
    from tests.experiments.rl_runs import rl_cli

    killed = tmp_path / "killed"
    run = _start(killed, "total_timesteps=400", "conditions=[ground_truth]",
                 "seeds=[0,1,2,3,4,5]", "workers=2")  # fmt: skip
    _wait_for_a_policy(run, killed, count=3)  # a worker has finished a run whole
    time.sleep(0.5)
    os.killpg(run.pid, signal.SIGKILL)  # the main process and its workers, as an OOM kill
    run.communicate(timeout=60)
    assert not (killed / "results.json").exists()
    records = sorted(p.parent.name for p in killed.glob("*/result.json"))
    assert 1 <= len(records) < 6
    merged = rl_cli(f"merge=[{killed}]", f"hydra.run.dir={tmp_path / 'merged'}")
    assert merged.returncode == 0, merged.stderr[-3000:]
    results = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert sorted(f"{r['condition']}_seed{r['seed']}" for r in results["runs"]) == records
    assert results["config"]["seeds"] == sorted(int(r.split("seed")[1]) for r in records)
    # the same command again with resume=true trains only the runs the killed one had not
    # finished; one with other options is refused, and the killed run's record stays
    kept = {p.parent.name: p.stat().st_mtime_ns for p in killed.glob("*/policy.zip")
            if (p.parent / "result.json").exists()}  # fmt: skip
    command = [*TINY, f"hydra.run.dir={killed}", "total_timesteps=400",
               "conditions=[ground_truth]", "seeds=[0,1,2,3,4,5]", "resume=true"]  # fmt: skip
    overrides = (killed / ".hydra" / "overrides.yaml").read_text()
    other = rl_cli(*command, "algo.learning_rate=0.002")
    assert other.returncode == 1 and "Traceback" not in other.stderr
    assert f"ExperimentConfigError: resume=true: {killed}/ground_truth_seed" in other.stderr
    assert "with algo.learning_rate=0.001, this command gives algo.learning_rate=0.002" in (
        other.stderr
    )
    assert "resume with the stopped run's options" in other.stderr
    assert (killed / ".hydra" / "overrides.yaml").read_text() == overrides
    resumed = rl_cli(*command)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resume=true: {len(records)} of the 6 runs finished before (" in resumed.stdout
    runs = json.loads((killed / "results.json").read_text())["runs"]
    assert [r["seed"] for r in runs] == [0, 1, 2, 3, 4, 5]
    assert {n: (killed / n / "policy.zip").stat().st_mtime_ns for n in kept} == kept
    assert "resume=true" in (killed / ".hydra" / "overrides.yaml").read_text()
    assert not (killed / ".overwritten").exists()
    # each record is the run results.json holds when the experiment ends
    assert [json.loads((killed / f"ground_truth_seed{r['seed']}" / "result.json").read_text())
            ["run"] for r in runs] == runs  # fmt: skip


def test_a_full_disk_names_the_file_and_leaves_no_policy_cut_short_nor_sb3_logs(tmp_path):
    # a full disk as the policy was saved: "OSError: [Errno 28] No space left on device" named
    # no file, and policy.zip stayed cut short (a later load said "not a stable-baselines3
    # model save")
    import resource

    def small_files():  # files past 100 kB cannot be written (EFBIG), as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    # ... and SB3's own logger left an empty $TMPDIR/SB3-<time> folder per run
    temp = tmp_path / "temp"
    temp.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(temp)}
    env.pop("SB3_LOGDIR", None)
    done = subprocess.run([sys.executable, str(SCRIPT), *TINY, f"hydra.run.dir={tmp_path}",
                           "conditions=[ground_truth]", "seeds=[0]", "workers=1"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env=env,
                          preexec_fn=small_files)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    policy = tmp_path / "ground_truth_seed0" / "policy.zip"
    assert done.stderr.strip().endswith(
        f"zero_shot_rl: OSError: [Errno 27] File too large: '{policy}'"
    )
    assert not policy.exists() and not list(policy.parent.glob("*.partial"))
    assert not list(temp.glob("SB3-*"))
