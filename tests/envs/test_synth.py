"""Episode synthesis on the real Reacher sim: plans, labels, frames, and the on-disk round trip."""

from __future__ import annotations

import re

import numpy as np
import pytest

import envs
from critic.data.episodes import read_episode
from envs import InvalidOptionError
from envs.experts import Expert
from envs.plans import EpisodePlan, plan_episodes
from envs.synth import CAMERA, record_episode, synthesize


def test_plans_spread_failures_evenly_and_cycle_types():
    plans = plan_episodes("Reacher-v5", 6, failure_fraction=0.5, first_seed=10)
    # Episode i is a failure while failures so far < round((i + 1) / 2): round(0.5) = 0, round(1)
    # = 1, round(1.5) = 2, round(2) = 2, round(2.5) = 2 (to even), round(3) = 3 → i = 1, 2, 5.
    assert [p.seed for p in plans] == list(range(10, 16))
    # a numpy integer is an integer; the plans hold plain ints
    seeds = [p.seed for p in plan_episodes("Reacher-v5", 2, first_seed=np.int64(10))]
    assert seeds == [10, 11] and all(type(x) is int for x in seeds)
    assert [p.failure for p in plans] == [None, "stall", "overshoot", None, None, "wrong_target"]
    assert plans[0].episode_id == "Reacher-v5-000010-" + (plans[0].failure or "expert")
    assert all(p.failure is None for p in plan_episodes("Reacher-v5", 4, failure_fraction=0.0))
    with pytest.raises(InvalidOptionError, match=r"failure_fraction=1\.5 must be in"):
        plan_episodes("Reacher-v5", 4, failure_fraction=1.5)
    with pytest.raises(InvalidOptionError, match="episodes=0 must be an integer >= 1"):
        plan_episodes("Reacher-v5", 0)


def test_opt_in_failures_are_planned_by_name_only():
    # Reacher's "flail" is not in the default cycle (above), so default plans stay as they were
    plans = plan_episodes("Reacher-v5", 4, failure_fraction=1.0, failures=["flail"])
    assert [p.episode_id for p in plans] == [f"Reacher-v5-00000{i}-flail" for i in range(4)]
    assert plan_episodes("Reacher-v5", 4, 1.0, failures="flail") == plans  # one name alone
    mixed = plan_episodes("Reacher-v5", 4, failure_fraction=1.0, failures=["stall", "flail"])
    assert [p.failure for p in mixed] == ["stall", "flail", "stall", "flail"]
    with pytest.raises(InvalidOptionError) as excinfo:
        plan_episodes("Reacher-v5", 4, failures=["drop_after_lift"])
    assert str(excinfo.value) == (
        "failures=['drop_after_lift'] must be a non-empty list of Reacher-v5's failure types "
        "['stall', 'overshoot', 'wrong_target', 'flail'], or null for the planned ones"
    )
    with pytest.raises(InvalidOptionError, match=r"failures=\[\] must be a non-empty list"):
        plan_episodes("Reacher-v5", 4, failures=[])


def test_expert_episode_is_labelled_and_ends_at_success():
    episode = record_episode(EpisodePlan("Reacher-v5", 0), every=2, linger=4)
    assert episode.success and episode.failure_type is None and episode.failure_step is None
    assert episode.progress[0] == 0.0 and episode.progress[-1] == 1.0
    assert np.all(np.diff(episode.steps) > 0) and episode.steps[0] == 0
    assert np.all(np.diff(episode.steps)[:-1] == 2)  # every 2nd step, and the last step
    assert (
        episode.frames[CAMERA].shape[0] == len(episode) and episode.frames[CAMERA].dtype == np.uint8
    )
    assert set(episode.state) == {"fingertip_to_target_cm"}
    # The recorded distance falls to within the 2 cm success radius.
    assert episode.state["fingertip_to_target_cm"][-1] < 2.0
    assert episode.fps == pytest.approx(50 / 2)  # Reacher runs at 50 steps/s, every 2nd recorded


@pytest.mark.parametrize("failure", ["stall", "overshoot", "wrong_target"])
def test_failure_episodes_carry_type_and_step(failure):
    episode = record_episode(EpisodePlan("Reacher-v5", 1, failure), every=5)
    assert not episode.success
    assert episode.failure_type == failure
    assert 0 < episode.failure_step <= episode.steps[-1]
    assert episode.steps[-1] == 50  # failures run the whole horizon


def test_a_failure_episode_under_a_short_horizon_carries_its_failure():
    # The expert is told the horizon recorded: Pusher's stall falls by 0.7 * 60 = step 42, inside
    # the episode, not at 0.55-0.7 of the task's 150 steps, after it.
    episode = record_episode(EpisodePlan("Pusher-v5", 0, "stall"), horizon=60, image_size=16,
                             every=60)  # fmt: skip
    assert episode.failure_type == "stall" and 0 < episode.failure_step <= 42
    assert episode.steps[-1] == 60


def test_a_planned_failure_that_never_happened_is_no_label_of_its_type():
    # Lift's stall comes after the grasp, dozens of steps in: 4 steps end before it. The episode
    # is a failure of no known type, not a "stall" the expert never carried out.
    pytest.importorskip("robosuite")
    episode = record_episode(EpisodePlan("Lift", 0, "stall"), horizon=4, image_size=16, every=4)
    assert not episode.success and episode.failure_step is None
    assert episode.failure_type == "unknown" and not episode.expert


def test_synthesize_writes_resumes_and_round_trips(tmp_path):
    plans = plan_episodes("Reacher-v5", 3, failure_fraction=0.34)
    rows = synthesize(plans, tmp_path, workers=1, progress_bar=False, every=3)
    assert [r["episode_id"] for r in rows] == [p.episode_id for p in plans]
    again = synthesize(plans, tmp_path, workers=1, progress_bar=False, every=3)
    assert again == []  # everything already there: nothing re-recorded
    fresh = record_episode(plans[0], every=3)
    loaded = read_episode(tmp_path, plans[0].episode_id)
    np.testing.assert_array_equal(
        loaded.frames[CAMERA], fresh.frames[CAMERA]
    )  # lossless, deterministic
    np.testing.assert_array_equal(loaded.progress, fresh.progress)


def test_expert_labels_are_monotone_and_failures_keep_their_drops():
    expert = record_episode(EpisodePlan("Reacher-v5", 3), every=1)
    assert np.all(np.diff(expert.progress) >= 0) and expert.progress[-1] == 1.0
    dropped = record_episode(EpisodePlan("Reacher-v5", 2, "overshoot"), every=1)
    assert dropped.progress.max() > dropped.progress[-1]  # the overshoot's fall is in the label


def test_a_failure_s_frames_before_its_step_are_labelled_as_the_expert_s():
    # the same frames, pixel for pixel, were taught two targets: the expert's running maximum
    # and the failure's raw curve (Pusher seed 42 dips 0.06 in its approach)
    expert = record_episode(EpisodePlan("Pusher-v5", 42), every=2, image_size=16)
    failed = record_episode(EpisodePlan("Pusher-v5", 42, "object_pushed_away"), every=2,
                            image_size=16)  # fmt: skip
    before = failed.steps < failed.failure_step
    assert failed.failure_type == "object_pushed_away"
    # the frames are the expert's until the push away is planned (its step is marked later,
    # once the object is pushed away), and so are their labels
    same = next(i for i, (a, b) in enumerate(zip(failed.frames[CAMERA], expert.frames[CAMERA],
                                                 strict=False)) if not np.array_equal(a, b))  # fmt: skip
    assert 10 < same <= before.sum()
    np.testing.assert_array_equal(failed.progress[:same], expert.progress[:same])
    assert np.all(np.diff(failed.progress[before]) >= 0)  # no dip before the failure
    # after it, what happened: the push away's fall is in the label
    assert failed.progress[~before].min() < failed.progress[before].max() - 0.1


def test_bad_options_are_typed_errors_before_anything_is_recorded(tmp_path):
    from envs.plans import plan_policy_episodes

    with pytest.raises(InvalidOptionError) as excinfo:
        plan_episodes("Reacher-v5", 2, first_seed=-5)
    assert str(excinfo.value) == (
        "first_seed=-5 must be an integer >= 0 (episode seeds are first_seed, first_seed + 1, ...)"
    )
    # checked before the policy files are read
    with pytest.raises(InvalidOptionError, match=r"^first_seed='x' must be an integer >= 0"):
        plan_policy_episodes("Reacher-v5", ["nope.zip"], 2, first_seed="x")
    with pytest.raises(InvalidOptionError, match=r"^failure_fraction='abc' must be in \[0, 1\]"):
        plan_episodes("Reacher-v5", 2, failure_fraction="abc")
    plans = plan_episodes("Reacher-v5", 2)
    with pytest.raises(InvalidOptionError) as excinfo:
        record_episode(plans[0], linger="abc")
    assert str(excinfo.value) == (
        "linger='abc' must be an integer >= 0 (steps an expert runs on after success), or null "
        "for the whole horizon"
    )
    with pytest.raises(InvalidOptionError, match=r"^horizon=0 must be an integer >= 1, or null"):
        record_episode(plans[0], horizon=0)
    # synthesize checks its options and the folder before the first episode
    data = tmp_path / "data"
    for options, message in (
        ({"linger": -1}, r"^linger=-1 must be an integer >= 0"),
        ({"codec": "foo"}, r"^codec='foo' is not supported; pick one of \['ffv1', 'h264'\]"),
        ({"task_kwargs": "abc"}, r"^task_kwargs='abc' must be a mapping of option names"),
    ):
        with pytest.raises(InvalidOptionError, match=message):
            synthesize(plans, data, progress_bar=False, **options)
        assert not data.exists()
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    with pytest.raises(InvalidOptionError) as excinfo:
        synthesize(plans, afile, progress_bar=False)
    assert str(excinfo.value) == (
        f"the dataset folder '{afile}' is a file; pass a folder that does not exist yet or holds "
        "a dataset (out=<folder> in experiments/synthesize.py)"
    )
    with pytest.raises(InvalidOptionError, match=re.escape(f"cannot be made: '{afile}' is a file")):
        synthesize(plans, afile / "sub", progress_bar=False)
    assert afile.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_failed_episode_stops_the_run_without_recording_the_queued_plans(tmp_path):
    # the first plan fails in its worker (no such failure type): the 20 plans queued behind it are
    # cancelled, not recorded before the error surfaces
    from critic.data.episodes import finished_ids

    plans = [EpisodePlan("Reacher-v5", 0, "nope"), *plan_episodes("Reacher-v5", 20, 0.0, 1)]
    with pytest.raises(InvalidOptionError, match=r"^failure='nope' is not a failure type"):
        synthesize(plans, tmp_path, workers=2, progress_bar=False, every=5)
    # at most the episodes the other worker was recording meanwhile
    assert len(finished_ids(tmp_path)) < 10


def test_h264_with_an_odd_frame_side_is_refused_before_recording(tmp_path):
    plans = plan_episodes("Reacher-v5", 2)
    data = tmp_path / "data"
    with pytest.raises(InvalidOptionError) as excinfo:
        synthesize(plans, data, workers=2, codec="h264", progress_bar=False, image_size=57)
    assert str(excinfo.value) == (
        "codec='h264' needs even frame sides, but Reacher-v5's frames would be 57x57 "
        "(image_size [57, 57]); use codec='ffv1' or an even env.image_size"
    )
    assert not data.exists()
    # two cameras side by side: 2 x 57 = 114 wide, so only the height must be even
    camera = envs.get_task("Reacher-v5").view.cameras[0]
    with pytest.raises(InvalidOptionError, match=re.escape(
        "frames would be 57x112 (image_size [57, 56] per camera, 2 cameras side by side)"
    )):  # fmt: skip
        synthesize(plans, data, codec="h264", progress_bar=False, image_size=(57, 56),
                   camera=[camera, camera])  # fmt: skip
    assert not data.exists()
    rows = synthesize(plans[:1], data, codec="h264", progress_bar=False, every=10,
                      image_size=(56, 57), camera=[camera, camera])  # fmt: skip
    assert read_episode(data, rows[0]["episode_id"]).frames[CAMERA].shape[1:] == (56, 114, 3)


def test_seeds_past_what_an_episode_row_stores_are_refused():
    from envs.plans import plan_policy_episodes

    last = 2**63 - 1  # an int64, what the episode row stores
    assert [p.seed for p in plan_episodes("Reacher-v5", 1, first_seed=last)] == [last]
    with pytest.raises(InvalidOptionError) as excinfo:
        plan_episodes("Reacher-v5", 2, first_seed=last)
    assert str(excinfo.value) == (
        f"first_seed={last} with episodes=2 gives seeds up to {last + 1}, past the largest an "
        f"episode stores ({last}); pass first_seed <= {last - 1}"
    )
    # checked before the policy files are read
    with pytest.raises(InvalidOptionError, match=rf"^first_seed={2**63} with episodes=1 gives"):
        plan_policy_episodes("Reacher-v5", ["nope.zip"], 1, first_seed=2**63)


def test_an_expert_that_fails_is_no_expert_and_keeps_its_drop():
    # Pusher's expert misses on seed 5: its object slides from 7.9 back to 9.1 cm of the goal. It
    # was recorded as an expert (for the expert metrics and probes) with a flat running maximum
    episode = record_episode(EpisodePlan("Pusher-v5", 5), every=10, image_size=16)
    assert not episode.success and episode.failure_type == "unknown" and not episode.expert
    assert episode.progress.max() > episode.progress[-1]


def test_workers_record_the_task_as_this_process_registered_it(tmp_path, monkeypatch):
    # spawned workers import envs afresh: they recorded the built-in spec (56x56, 50 steps)
    # where the manifest said the replaced one, and knew no task registered after import
    import dataclasses

    from critic.data.episodes import iter_episodes
    from envs import experts
    from envs.tasks import _TASKS

    experts._load_experts()
    # the registrations end with the test
    monkeypatch.setattr(envs.tasks, "_TASKS", dict(_TASKS))
    monkeypatch.setattr(experts, "_EXPERTS", dict(experts._EXPERTS))
    reacher = envs.get_task("Reacher-v5")
    envs.register_task(dataclasses.replace(reacher, name="ShortReacher", horizon=12))
    experts.register_expert("ShortReacher")(experts._EXPERTS["Reacher-v5"])
    plans = plan_episodes("ShortReacher", 2, failure_fraction=0.0)
    synthesize(plans, tmp_path, workers=2, progress_bar=False, every=4, image_size=24)
    episodes = list(iter_episodes(tmp_path))
    assert [e.frames[CAMERA].shape[1:3] for e in episodes] == [(24, 24)] * 2
    assert all(e.steps[-1] <= 12 for e in episodes)


class _StillExpert(Expert):
    """Holds the arm still: a replacement for Reacher's expert that, like a user's own, does not
    import the built-in experts (module level: spawned workers import it by name)."""

    def _reset(self, env) -> None:
        pass

    def _act(self, env) -> np.ndarray:
        return np.zeros(2)


def test_workers_keep_an_expert_this_process_put_in_place_of_a_built_in_one(tmp_path, monkeypatch):
    # the worker's own import of the built-in experts came after the parent's were put in place,
    # and put the built-in one back
    from critic.data.episodes import iter_episodes
    from envs import experts

    experts._load_experts()
    monkeypatch.setattr(experts, "_EXPERTS", dict(experts._EXPERTS))
    experts.register_expert("Reacher-v5")(_StillExpert)
    plans = plan_episodes("Reacher-v5", 2, failure_fraction=0.0)
    synthesize(plans, tmp_path, workers=2, progress_bar=False, every=5, horizon=10, image_size=16)
    episodes = list(iter_episodes(tmp_path))
    assert len(episodes) == 2
    for episode in episodes:  # the arm never moved: the distance never changed
        distance = episode.state["fingertip_to_target_cm"]
        assert np.ptp(distance) < 0.1 and not episode.success


def test_an_unwritable_out_folder_and_a_hindsight_expert_are_named():
    with pytest.raises(InvalidOptionError, match=r"cannot be written to .*give out= a folder"):
        synthesize(plan_episodes("Reacher-v5", 1), "/proc/viscritic-test-data", workers=1,
                   progress_bar=False)  # fmt: skip
    with pytest.raises(InvalidOptionError, match=r"hindsight='uniform' relabels a policy's"):
        EpisodePlan("Reacher-v5", 0, hindsight="uniform")  # had the plain expert's id


def test_a_dataset_folder_another_run_is_writing_in_is_refused(tmp_path):
    # two runs into one out= both passed the manifest's check before either wrote it, and the
    # folder said every=2 over rows recorded every=1
    from rollout.files import lock_folder, release
    from tests.helpers import held_elsewhere

    with (
        held_elsewhere(tmp_path / "data") as pid,
        pytest.raises(
            InvalidOptionError, match=rf"data is in use by another run \(process {pid}\)"
        ),
    ):
        synthesize(plan_episodes("Reacher-v5", 1), tmp_path / "data", workers=1,
                   progress_bar=False)  # fmt: skip
    # this process's own lock (the run-dir guard's, where out= is the run dir) is no other run's
    held = lock_folder(tmp_path / "data", "synthesize run (hydra.run.dir=)")
    synthesize(plan_episodes("Reacher-v5", 1), tmp_path / "data", workers=1, progress_bar=False)
    release(held)
    # a run refused before it records leaves no folder it made (here: its options)
    with pytest.raises(InvalidOptionError):
        synthesize(plan_episodes("Reacher-v5", 1), tmp_path / "new", workers=1, codec="h264",
                   progress_bar=False, image_size=15)  # fmt: skip
    assert not (tmp_path / "new").exists()
    # nor one refused at its first episode, after its manifest recorded the bad camera
    with pytest.raises(InvalidOptionError, match=r"^unknown camera 'nosuchcam'"):
        synthesize(plan_episodes("Reacher-v5", 1), tmp_path / "new", workers=1,
                   progress_bar=False, camera="nosuchcam")  # fmt: skip
    assert not (tmp_path / "new").exists()


def test_the_recorded_frame_rate_is_the_simulator_s_own():
    # gymnasium rounds render_fps to an int: frame_skip=30 recorded 3 fps (3.33), 200 recorded 0
    fast = record_episode(EpisodePlan("Reacher-v5", 0), every=1, horizon=3, image_size=16,
                          task_kwargs={"frame_skip": 30})  # fmt: skip
    assert fast.fps == pytest.approx(1 / 0.3)


def test_a_dataset_is_not_made_inside_another_s_rows(tmp_path):
    # out=<dataset>/episodes nested a second manifest, videos/ and episodes/ among the first's
    plans = plan_episodes("Reacher-v5", 1, failure_fraction=0.0)
    synthesize(plans, tmp_path, workers=1, progress_bar=False, every=5)
    for inner in ("episodes", "videos"):
        with pytest.raises(InvalidOptionError) as excinfo:
            synthesize(plans, tmp_path / inner, workers=1, progress_bar=False, every=5)
        assert str(excinfo.value) == (
            f"the dataset folder '{tmp_path / inner}' is inside the dataset folder "
            f"'{tmp_path}' (it holds manifest.json); give that folder itself, out={tmp_path}, to "
            "add episodes to it, or a folder outside it"
        )
    assert not (tmp_path / "episodes" / "manifest.json").exists()


def test_an_expert_that_cannot_reach_the_workers_is_named(tmp_path, monkeypatch):
    # a class defined inside a function does not pickle: workers=2 ended in a traceback
    from envs import experts

    experts._load_experts()
    monkeypatch.setattr(experts, "_EXPERTS", dict(experts._EXPERTS))

    @experts.register_expert("Reacher-v5")
    class Local(_StillExpert):
        pass

    plans = plan_episodes("Reacher-v5", 2, failure_fraction=0.0)
    with pytest.raises(InvalidOptionError, match=r"the expert of 'Reacher-v5' cannot be sent to "
                       r"worker processes .*top level, not inside a function; or run with "
                       r"workers=1"):  # fmt: skip
        synthesize(plans, tmp_path, workers=2, progress_bar=False, every=5, horizon=5)


def test_hindsight_labels_are_checked_against_the_task_contract():
    # a relabelled episode's progress was read from progress() directly: a task of one's own
    # whose moved goal gave NaN wrote NaN labels, where every other label is checked
    from envs import TaskContractError
    from envs.mujoco_tasks import ReacherTask
    from envs.synth import _relabel_in_hindsight

    class MovedGoalNaN(ReacherTask):
        def progress(self):
            return float("nan") if getattr(self, "_moved", False) else super().progress()

        def move_goal(self, goal, *, restart=False):
            super().move_goal(goal, restart=restart)
            self._moved = True

    spec = envs.get_task("Reacher-v5")
    task = MovedGoalNaN(spec, spec.view)
    task.reset(seed=0)
    sims = [task.sim_state() for _ in range(4)]
    with pytest.raises(TaskContractError, match=r"progress\(\) returned nan"):
        _relabel_in_hindsight(task, sims, 0, [], [], [], "uniform")
    task.close()


def test_more_workers_than_cores_is_warned_of(tmp_path, caplog, monkeypatch):
    # workers=16 on 2 cores recorded 67 Reacher episodes a minute where workers=2 recorded 540,
    # without a word
    import logging
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    plans = plan_episodes("Reacher-v5", 1, failure_fraction=0.0)
    with caplog.at_level(logging.WARNING, logger="envs.synth"):
        synthesize(plans, tmp_path, workers=2, progress_bar=False, horizon=3)
    assert caplog.messages[0] == (
        "workers=2 is more than the 1 cores this process may use: the workers take turns, each "
        "holding its own simulators and memory, and record fewer episodes a minute than "
        "workers=1 would; use workers=1"
    )


def test_an_injected_failure_that_reached_the_goal_all_the_same_keeps_no_failure_step():
    # random torques onto the target (seed 396 of Reacher's flail plans): a success, with no
    # failure step or type to say otherwise (a kept failure_step passed every test)
    plan = plan_episodes("Reacher-v5", 397, failure_fraction=1.0, failures=["flail"])[396]
    assert plan.episode_id == "Reacher-v5-000396-flail"
    episode = record_episode(plan, every=25, image_size=16)
    assert episode.success and episode.progress[-1] == 1.0
    assert episode.failure_step is None and episode.failure_type is None


def test_a_task_option_value_is_refused_before_the_folder_is_touched(tmp_path, monkeypatch):
    # an expert run found it at its first episode, with its manifest written (then removed) and
    # its workers started; policy runs found it earlier
    import envs.synth_workers

    def started(*args, **kwargs):
        raise AssertionError("the recording started")

    monkeypatch.setattr(envs.synth_workers, "record_all", started)
    out = tmp_path / "out"
    plans = plan_episodes("Reacher-v5", 2, failure_fraction=0.0)
    with pytest.raises(InvalidOptionError, match=r"min_start_distance=5 must be a distance in "
                       r"metres above"):  # fmt: skip
        synthesize(plans, out, progress_bar=False, workers=2,
                   task_kwargs={"min_start_distance": 5})  # fmt: skip
    assert not out.exists()
