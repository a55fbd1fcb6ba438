"""A tiny end-to-end run of experiments/synthesize.py, as a user runs it (two worker processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.zygote import run_python

ROOT = Path(__file__).resolve().parents[2]


def _command(tmp_path: Path, *overrides: str) -> list[str]:
    out = [] if any(o.startswith("out=") for o in overrides) else [f"out={tmp_path / 'data'}"]
    return [sys.executable, str(ROOT / "experiments" / "synthesize.py"),
            f"hydra.run.dir={tmp_path / 'run'}", *out, "progress_bar=false", *overrides]  # fmt: skip


def _run(tmp_path: Path, *overrides: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return run_python(
        _command(tmp_path, *overrides), capture_output=True, text=True, timeout=600, cwd=cwd
    )


def test_synthesize_reacher_with_two_workers_then_resume(tmp_path):
    done = _run(tmp_path, "env=Reacher-v5", "episodes=4", "workers=2", "every=5")
    assert done.returncode == 0, done.stderr[-3000:]
    data = tmp_path / "data"
    summary = json.loads((data / "summary.json").read_text())
    assert summary["this_run"]["episodes"] == 4 and summary["skipped_existing"] == 0
    assert summary["dataset_total"]["expert"]["success_rate"] == 1.0
    assert set(summary["dataset_total"]["failures"]) == {"stall", "overshoot"}
    assert all(f["failed_rate"] == 1.0 for f in summary["dataset_total"]["failures"].values())
    assert (data / "contact_sheet_Reacher-v5.png").stat().st_size > 10_000
    assert (tmp_path / "run" / "contact_sheet_Reacher-v5.png").exists()
    assert len(list((data / "episodes").glob("*.parquet"))) == 4
    # Re-running with more episodes records only the new ones.
    again = _run(tmp_path, "env=Reacher-v5", "episodes=5", "workers=1", "every=5")
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((data / "summary.json").read_text())
    assert summary["skipped_existing"] == 4 and summary["this_run"]["episodes"] == 1
    assert summary["dataset_total"]["episodes"] == 5
    assert f"4 of 5 episodes already in {data}; recording the other 1" in again.stdout
    # Nothing new to record: said so.
    same = _run(tmp_path, "env=Reacher-v5", "episodes=5", "workers=1", "every=5")
    assert same.returncode == 0, same.stderr[-3000:]
    assert f"5 of 5 episodes already in {data}; nothing to record" in same.stdout
    # Other options are refused before anything is recorded: not skipped, not mixed in.
    summary = (data / "summary.json").read_text()
    other = _run(tmp_path, "env=Reacher-v5", "episodes=6", "workers=1", "every=1",
                 "env.image_size=64")  # fmt: skip
    assert other.returncode == 1 and "Traceback" not in other.stderr
    assert other.stderr.strip().endswith(
        f"synthesize: the dataset folder '{data}' holds 5 Reacher-v5 episodes recorded with other "
        "options (every: 5 there, 1 now; image_size: [56,56] there, [64,64] now); a re-run "
        "records only the missing episodes, so the dataset would mix the two. Pass a new "
        "out=<folder> for these options, or the folder's own (every=5 env.image_size=[56,56] in "
        "experiments/synthesize.py)"
    )
    assert len(list((data / "episodes").glob("*.parquet"))) == 5
    assert (data / "summary.json").read_text() == summary
    manifest = json.loads((data / "manifest.json").read_text())["tasks"]["Reacher-v5"]
    assert manifest["every"] == 5 and manifest["image_size"] == [56, 56]


def test_the_dataset_folder_may_be_the_run_dir(tmp_path):
    # the run-dir guard's lock and the dataset's are one file: synthesize refused itself
    # ("in use by another run (process <its own pid>)")
    same = tmp_path / "same"
    done = _run(tmp_path, "env=Reacher-v5", "episodes=1", "workers=1", "every=10",
                "env.horizon=20", f"out={same}", f"hydra.run.dir={same}")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list((same / "episodes").glob("*.parquet"))) == 1
    assert (same / "summary.json").is_file() and (same / ".hydra").is_dir()


def test_a_run_dir_holding_another_dataset_s_summary_is_refused_unless_overwrite(tmp_path):
    # a second run into one hydra.run.dir= for another out= replaced the first's summary copies
    # and its record without a word; a re-run for the same dataset resumes it (the test above)
    tiny = ["episodes=1", "workers=1", "every=10", "env.horizon=20"]
    assert _run(tmp_path, "env=Reacher-v5", *tiny).returncode == 0
    run = tmp_path / "run"
    summary, record = (
        (run / "summary.json").read_text(),
        (run / ".hydra" / "overrides.yaml").read_text(),
    )
    other = _run(tmp_path, "env=Pusher-v5", f"out={tmp_path / 'pusher'}", *tiny)
    assert other.returncode == 1 and "Traceback" not in other.stderr
    assert f"RunDirError: {run} already holds summary.json, summary.md, contact_sheet_Reacher-v5.png" \
        " from an earlier run; give a new hydra.run.dir=, or overwrite=true" in other.stderr  # fmt: skip
    assert (run / "summary.json").read_text() == summary
    assert (run / ".hydra" / "overrides.yaml").read_text() == record
    assert not (tmp_path / "pusher").exists()
    done = _run(tmp_path, "env=Pusher-v5", f"out={tmp_path / 'pusher'}", "overwrite=true", *tiny)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["task"] == "Pusher-v5"
    assert sorted(p.name for p in run.glob("contact_sheet_*")) == ["contact_sheet_Pusher-v5.png"]
    assert not (run / ".overwritten").exists()


def test_a_relative_out_is_compared_from_where_each_run_started_and_a_sweep_resumes(tmp_path):
    # summary.json gave out= as typed: the same folder named from elsewhere was refused, and
    # another folder of the same relative name replaced the run dir's summary and record
    tiny = ["episodes=1", "workers=1", "every=10", "env.horizon=20", "out=data"]
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir(), there.mkdir()
    assert _run(tmp_path, *tiny, cwd=here).returncode == 0
    same = _run(tmp_path, *tiny[:-1], f"out={os.path.relpath(here / 'data', there)}", cwd=there)
    assert same.returncode == 0, same.stderr[-2000:]  # ../here/data: the same dataset, resumed
    other = _run(tmp_path, *tiny, cwd=there)  # there/data: another dataset
    assert other.returncode == 1 and "already holds summary.json" in other.stderr
    # a sweep run again resumes each job's own dataset: the sweep's config (out= of the default
    # Reacher-v5) was compared with the Pusher job's summary, and the re-run refused
    sweep = [str(ROOT / "experiments" / "synthesize.py"), "-m", "env=Pusher-v5,Reacher-v5", *tiny[:-1],
             f"hydra.sweep.dir={tmp_path / 'sweep'}", f"out={tmp_path}/sw/${{env.name}}",
             "progress_bar=false"]  # fmt: skip
    for _ in range(2):
        done = run_python([sys.executable, *sweep], timeout=600, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-2000:]
    assert "1 of 1 episodes already in" in done.stdout


def _small_files() -> None:
    """In a child process: files past 20 kB cannot be written (EFBIG), as on a full disk."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails, the process goes on
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


def test_a_full_disk_is_named_and_the_episodes_are_kept(tmp_path):
    # the contact sheet failed with a traceback and stayed cut short, complete-looking
    done = subprocess.run(_command(tmp_path, "env=Reacher-v5", "episodes=1", "workers=1",
                                   "every=10", "env.horizon=20"),
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          preexec_fn=_small_files)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    data = tmp_path / "data"
    sheet = data / "contact_sheet_Reacher-v5.png"
    assert done.stderr.strip().endswith(
        f"synthesize: [Errno 27] File too large: '{sheet}'; the episodes are recorded in {data}: "
        "the summary and the contact sheet were not written (the same command again writes them)"
    )
    assert not sheet.exists() and not list(data.glob("*.partial"))
    assert len(list((data / "episodes").glob("*.parquet"))) == 1


def test_synthesize_bad_option_is_a_message(tmp_path):
    done = _run(tmp_path, "failure_fraction=2")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "synthesize: failure_fraction=2 must be in [0, 1]" in done.stderr


def test_synthesize_takes_scalar_and_list_view_overrides(tmp_path):
    # an int size and a camera name (not lists) reach the task as given
    done = _run(tmp_path, "env=Reacher-v5", "episodes=1", "workers=1", "every=10",
                "env.image_size=56", "env.horizon=20")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    from critic.data.episodes import iter_episodes

    (episode,) = iter_episodes(tmp_path / "data")
    assert episode.frames[episode.cameras[0]].shape[1:] == (56, 56, 3)
    assert episode.steps[-1] <= 20


def test_synthesize_records_saved_policies(tmp_path):
    from stable_baselines3 import SAC

    from envs import make_task_env

    env = make_task_env("Reacher-v5")
    SAC("MlpPolicy", env, seed=0, policy_kwargs={"net_arch": [8]}).save(tmp_path / "policy.zip")
    env.close()
    policy = tmp_path / "policy.zip"
    done = _run(tmp_path, "env=Reacher-v5", "episodes=2", "workers=1", "every=10",
                f"policies=[{policy}]")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "data" / "summary.json").read_text())
    rollouts = summary["dataset_total"]["policy"]
    assert rollouts["episodes"] == 2 and rollouts["success_rate"] == 0.0
    assert "expert" not in summary["dataset_total"] and summary["dataset_total"]["failures"] == {}
    assert "policy rollouts: 2, success 0%" in done.stdout
    # The same rollouts relabelled in hindsight (near, then anywhere) join the policy group: 2 more
    # each, none re-recorded.
    for mode, total in (("true", 4), ("uniform", 6)):
        moved = _run(tmp_path, "env=Reacher-v5", "episodes=2", "workers=1", "every=10",
                     f"policies=[{policy}]", f"hindsight={mode}")  # fmt: skip
        assert moved.returncode == 0, moved.stderr[-3000:]
        summary = json.loads((tmp_path / "data" / "summary.json").read_text())
        assert summary["this_run"]["policy"]["episodes"] == 2
        assert summary["dataset_total"]["policy"]["episodes"] == total
        assert summary["dataset_total"]["failures"] == {}
    pusher = _run(tmp_path, "env=Pusher-v5", f"policies=[{policy}]", "hindsight=true")
    assert pusher.returncode == 1 and "Traceback" not in pusher.stderr
    assert "hindsight=true needs a task whose goal can move" in pusher.stderr
    missing = _run(tmp_path, "env=Reacher-v5", f"policies=[{tmp_path / 'nope.zip'}]")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "cannot be read" in missing.stderr


def test_sheet_frames_and_a_file_as_out_fail_before_any_episode(tmp_path):
    # sheet_frames is used once the episodes are written (the contact sheet): checked first
    done = _run(tmp_path, "episodes=2", "workers=1", "sheet_frames=0")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().endswith(
        "synthesize: sheet_frames=0 must be an integer >= 1 (frames per row of the contact sheet)"
    )
    assert not (tmp_path / "data").exists()  # nothing recorded, nothing half-written
    assert not (tmp_path / "run" / "summary.json").exists()
    done = _run(tmp_path, "episodes=2", "workers=1", "progress_bar=maybe")  # was taken as true
    assert done.returncode == 1 and done.stderr.strip().endswith(
        "synthesize: progress_bar='maybe' must be true or false"
    )
    # out names a file: refused before recording, and the file is left as it was
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    done = _run(tmp_path, "episodes=2", "workers=1", f"out={afile}")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().endswith(
        f"synthesize: the dataset folder '{afile}' is a file; pass a folder that does not exist "
        "yet or holds a dataset (out=<folder> in experiments/synthesize.py)"
    )
    assert afile.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "run"]


def test_linger_and_first_seed_are_checked_up_front(tmp_path):
    for override, message in (
        ("linger=abc", "linger='abc' must be an integer >= 0 (steps an expert runs on after "
                       "success), or null for the whole horizon"),
        ("linger=-1", "linger=-1 must be an integer >= 0"),
        ("first_seed=-5", "first_seed=-5 must be an integer >= 0 (episode seeds are first_seed, "
                          "first_seed + 1, ...)"),
    ):  # fmt: skip
        done = _run(tmp_path, "episodes=2", "workers=2", override)
        assert done.returncode == 1 and "Traceback" not in done.stderr, override
        assert f"synthesize: {message}" in done.stderr
        assert not (tmp_path / "data").exists()


def test_empty_policies_is_an_error_not_expert_episodes(tmp_path):
    done = _run(tmp_path, "env=Reacher-v5", "episodes=2", "workers=1", "policies=[]")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().endswith(
        "synthesize: policies=[] names no policy; pass one or more policy.zip paths, or leave it "
        "out (null) for expert episodes"
    )
    assert not (tmp_path / "data").exists()


def _recorded(data: Path) -> int:
    return len(list((data / "episodes").glob("*.parquet")))


def _wait_until_recorded(data: Path, count: int, run: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while _recorded(data) < count:
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, f"{_recorded(data)} episodes after 300 s"
        time.sleep(0.02)


def _worker_pids(parent: int) -> list[int]:
    """The pool's worker processes of ``parent`` (not multiprocessing's resource tracker)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # a process that ended meanwhile
        if ppid == parent and b"spawn_main" in cmdline:
            pids.append(int(stat.parent.name))
    return pids


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_a_killed_worker_or_ctrl_c_stops_the_run_and_the_same_command_resumes(tmp_path):
    data = tmp_path / "data"
    # failures run the whole horizon: 100 episodes take the two workers ~10 s
    args = ("env=Reacher-v5", "episodes=100", "failure_fraction=1.0", "workers=2", "every=5")

    def start() -> subprocess.Popen:
        # SIGINT at its default: a job started in the background (nohup ... &, a CI runner)
        # inherits it ignored, and Ctrl-C would then reach nothing
        return subprocess.Popen(_command(tmp_path, *args), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                start_new_session=True, preexec_fn=_default_sigint)  # fmt: skip

    # a worker killed (as the OOM killer does): a message, not BrokenProcessPool's traceback
    run = start()
    _wait_until_recorded(data, 3, run)
    os.kill(_worker_pids(run.pid)[0], signal.SIGKILL)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert stderr.strip().endswith(
        "synthesize: a worker process died (killed, or out of memory); the episodes recorded so "
        f"far are kept in {data}, and re-running the same command records the rest (workers=1 "
        "needs less memory)"
    )
    # Ctrl-C (SIGINT to the whole process group, as a terminal sends it): the run stops at once,
    # the workers do not go on through the queued plans
    before = _recorded(data)
    assert before < 100
    run = start()
    _wait_until_recorded(data, before + 3, run)
    os.killpg(run.pid, signal.SIGINT)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    assert stderr.strip().endswith(
        "synthesize: interrupted (Ctrl-C); the episodes recorded so far are kept in "
        f"{data}, and re-running the same command records the rest"
    )
    stopped = _recorded(data)
    assert stopped <= before + 3 + 6  # + the two being recorded, and a few polls' worth
    # the same command records only the rest
    done = _run(tmp_path, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((data / "summary.json").read_text())
    assert (
        summary["skipped_existing"] == stopped and summary["this_run"]["episodes"] == 100 - stopped
    )
    assert summary["dataset_total"]["episodes"] == 100 and summary["unreadable"] == []


def test_unreadable_episodes_are_named_and_left_out_of_the_summary(tmp_path):
    args = ("env=Reacher-v5", "workers=1", "every=10", "failure_fraction=0")
    assert _run(tmp_path, "episodes=3", *args).returncode == 0
    data = tmp_path / "data"
    ids = sorted(p.name[: -len(".parquet")] for p in (data / "episodes").glob("*.parquet"))
    garbage = data / "episodes" / f"{ids[0]}.parquet"
    garbage.write_bytes(b"not parquet")
    video = data / "videos" / f"{ids[1]}.view.mkv"
    video.unlink()
    # another task's damaged row in the same folder is not this summary's business
    (data / "episodes" / "Pusher-v5-000000-expert.parquet").write_bytes(b"not parquet")
    done = _run(tmp_path, "episodes=4", *args)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    summary = json.loads((data / "summary.json").read_text())
    assert summary["this_run"]["episodes"] == 1 and summary["skipped_existing"] == 3
    assert summary["dataset_total"]["episodes"] == 2  # the 2 readable of the 4
    first, second = summary["unreadable"]
    assert first.startswith(f"{garbage}: not a readable parquet file (")
    assert second == f"{video}: no such video file"
    assert (
        f"2 Reacher-v5 episodes in {data} cannot be read and are left out of the summary and the "
        f"contact sheet: {first}; {second}. To record one again, delete its row "
        "(episodes/<id>.parquet) and re-run the same command (it records only what is missing)"
    ) in done.stdout
    assert "unreadable episodes (left out): 2" in (data / "summary.md").read_text()
    assert (data / "contact_sheet_Reacher-v5.png").exists()
    # the fix the warning gives
    garbage.unlink()
    (data / "episodes" / f"{ids[1]}.parquet").unlink()
    again = _run(tmp_path, "episodes=4", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((data / "summary.json").read_text())
    assert summary["this_run"]["episodes"] == 2 and summary["dataset_total"]["episodes"] == 4
    assert summary["unreadable"] == []


def test_out_must_name_a_folder(tmp_path):
    # run from tmp_path: out='' was the current folder
    for value, shown in (("null", "null"), ("''", "''")):
        done = _run(tmp_path, "episodes=1", "workers=1", f"out={value}", cwd=tmp_path)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
        assert done.stderr.strip().endswith(
            f"synthesize: out={shown} must name the dataset folder (out=<folder>, e.g. "
            "out=data/Reacher-v5)"
        )
        assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_policy_options_without_policies_are_refused(tmp_path):
    for override, message in (
        ("hindsight=maybe", "hindsight='maybe' must be false, true (the same as near) or one of "
                            "['near', 'uniform']: near moves the goal to near where the arm went, "
                            "uniform to anywhere the task draws its goals"),
        ("hindsight=true", "hindsight=true moves the goal of policy rollouts; pass "
                           "policies=[<policy.zip>,...], or hindsight=false for the experts' "
                           "episodes"),
        ("hindsight=uniform", "hindsight=uniform moves the goal of policy rollouts; pass "
                              "policies=[<policy.zip>,...], or hindsight=false for the experts' "
                              "episodes"),
        ("deterministic=true", "deterministic=true picks a policy's mean action; pass "
                               "policies=[<policy.zip>,...], or deterministic=false for the "
                               "experts' episodes"),
    ):  # fmt: skip
        done = _run(tmp_path, "env=Reacher-v5", "episodes=1", "workers=1", override)
        assert done.returncode == 1 and "Traceback" not in done.stderr, override
        assert done.stderr.strip().endswith(f"synthesize: {message}"), done.stderr[-3000:]
        assert not (tmp_path / "data").exists()


def test_the_contact_sheet_shows_no_lucky_failure_as_the_expert():
    # an injected failure that reached the goal all the same (flail onto Reacher's target) has no
    # failure type and succeeded: it had been drawn in the sheet's "expert" row
    from synthesize import sheet_kind

    def row(episode_id, success, failure_type=None):
        return {"episode_id": episode_id, "success": success, "failure_type": failure_type}

    assert sheet_kind(row("Reacher-v5-000001-expert", True)) == "expert"
    assert sheet_kind(row("Reacher-v5-1000268-flail", True)) is None
    assert sheet_kind(row("Reacher-v5-000002-stall", False, "stall")) == "stall"
    assert sheet_kind(row("Reacher-v5-000003-policy_4f8f09d4", True)) == "policy"
    assert sheet_kind(row("Reacher-v5-000004-expert", False, "unknown")) == "unknown"
