"""A tiny end-to-end run of experiments/synthesize.py, as a user runs it (two worker processes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "synthesize.py"), f"hydra.run.dir={tmp_path / 'run'}",
         f"out={tmp_path / 'data'}", "progress_bar=false", *overrides],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip


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
