"""A dataset folder's manifest (envs/manifest.py): the options, the task definition and the
expert its episodes were recorded with; a re-run with other ones is refused, naming the fix."""

from __future__ import annotations

import pytest

import envs
from envs import InvalidOptionError
from envs.plans import plan_episodes
from envs.synth import synthesize
from tests.envs.test_synth import _StillExpert


def test_a_rerun_resumes_with_the_same_options_and_refuses_others(tmp_path, caplog):
    import json
    import logging

    from critic.data.episodes import finished_ids
    from envs.manifest import MANIFEST

    caplog.set_level(logging.INFO, logger="envs.synth")
    plans = plan_episodes("Reacher-v5", 2, failure_fraction=0.0)
    synthesize(plans, tmp_path, workers=1, progress_bar=False, every=5)
    manifest = (tmp_path / MANIFEST).read_text()
    assert json.loads(manifest)["tasks"] == {
        "Reacher-v5": {"every": 5, "linger": 10, "horizon": 50, "image_size": [56, 56],
                       "camera": [{"lookat": [0.0, 0.0, 0.0], "distance": 0.75, "azimuth": 90.0,
                                   "elevation": -90.0}],
                       "task_kwargs": {"min_start_distance": 0.05}, "deterministic": False,
                       "codec": "ffv1", "recording": 3,
                       # what defines the task's episodes here: its spec, and its expert
                       "definition": "envs.mujoco_tasks.ReacherTask 'Move the tip of the "
                                     "two-link arm to touch the red target.' view aafcf9524c",
                       "expert": "envs.mujoco_experts.ReacherExpert"}
    }  # fmt: skip
    # the task's own size, horizon, camera and options, given by value, are the same options:
    # nothing to record
    own_camera = envs.get_task("Reacher-v5").view.cameras[0]
    again = synthesize(plans, tmp_path, workers=1, progress_bar=False, every=5, image_size=56,
                       horizon=50, camera=own_camera,
                       task_kwargs={"min_start_distance": 0.05})  # fmt: skip
    assert again == []
    assert caplog.messages == [f"2 of 2 episodes already in {tmp_path}; nothing to record"]
    # other options: refused before anything is recorded, each named with both values and the fix
    more = plan_episodes("Reacher-v5", 3, failure_fraction=0.0)
    with pytest.raises(InvalidOptionError) as excinfo:
        synthesize(more, tmp_path, workers=1, progress_bar=False, every=1, image_size=64)
    assert str(excinfo.value) == (
        f"the dataset folder '{tmp_path}' holds 2 Reacher-v5 episodes recorded with other options "
        "(every: 5 there, 1 now; image_size: [56,56] there, [64,64] now); a re-run records only "
        "the missing episodes, so the dataset would mix the two. Pass a new out=<folder> for "
        "these options, or the folder's own (every=5 env.image_size=[56,56] in "
        "experiments/synthesize.py)"
    )
    assert finished_ids(tmp_path) == {p.episode_id for p in plans}
    assert (tmp_path / MANIFEST).read_text() == manifest
    # other episodes (ids name the failure type) with the same options join the dataset
    flail = plan_episodes("Reacher-v5", 1, failure_fraction=1.0, failures=["flail"])
    assert len(synthesize(flail, tmp_path, workers=1, progress_bar=False, every=5)) == 1
    # a folder without its manifest is refused: it had resumed with a warning, wrote no
    # manifest, and so every later run into it mixed options freely (every=1 into every=5)
    (tmp_path / MANIFEST).unlink()
    with pytest.raises(InvalidOptionError) as excinfo:
        synthesize(more, tmp_path, workers=1, progress_bar=False, every=5)
    assert str(excinfo.value) == (
        f"the dataset folder '{tmp_path}' holds 3 Reacher-v5 episodes but its manifest.json does "
        "not say how they were recorded (a folder from before the manifest, or one whose "
        "manifest was moved away), so a re-run could not tell whether the episodes it adds "
        "match them; pass a new out=<folder>, or restore its manifest.json"
    )
    assert finished_ids(tmp_path) == {p.episode_id for p in plans + flail}


def test_a_manifest_without_episodes_gives_way(tmp_path):
    # a first run that stopped before its first episode left only its options
    import json

    from envs.manifest import MANIFEST, read_manifest

    (tmp_path / MANIFEST).write_text(json.dumps({"tasks": {"Reacher-v5": {"every": 9}}}))
    plans = plan_episodes("Reacher-v5", 1, failure_fraction=0.0)
    assert len(synthesize(plans, tmp_path, workers=1, progress_bar=False, every=5)) == 1
    assert read_manifest(tmp_path)["Reacher-v5"]["every"] == 5
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(InvalidOptionError, match=r"manifest\.json' is not a readable dataset"):
        synthesize(plans, tmp_path, workers=1, progress_bar=False, every=5)


def test_a_folder_recorded_by_one_expert_or_task_refuses_another(tmp_path, monkeypatch):
    # an expert of one's own (imports=) recorded its episodes into the built-in one's folder
    # under the same ids, and the summary mixed the two
    from envs import experts

    experts._load_experts()
    monkeypatch.setattr(experts, "_EXPERTS", dict(experts._EXPERTS))
    options = {"workers": 1, "progress_bar": False, "every": 5, "horizon": 5, "image_size": 16}
    synthesize(plan_episodes("Reacher-v5", 1, failure_fraction=0.0), tmp_path, **options)
    built_in = experts._EXPERTS["Reacher-v5"]
    experts.register_expert("Reacher-v5")(_StillExpert)
    more = plan_episodes("Reacher-v5", 2, failure_fraction=0.0)
    with pytest.raises(InvalidOptionError) as excinfo:
        synthesize(more, tmp_path, **options)
    assert (
        "(expert: envs.mujoco_experts.ReacherExpert there, "
        "tests.envs.test_synth._StillExpert now)" in str(excinfo.value)
    )
    assert str(excinfo.value).endswith(
        "Pass a new out=<folder> for these options, or the expert that recorded them (the "
        "task's make, instruction and view; its scripted expert: registered in this process by "
        "import envs or imports=)"
    )
    experts._EXPERTS["Reacher-v5"] = built_in
    spec = envs.get_task("Reacher-v5")
    try:  # the task's instruction changed
        envs.register_task(envs.TaskSpec(**{**vars(spec), "instruction": "Touch it."}))
        with pytest.raises(InvalidOptionError, match=r"\(definition: envs.mujoco_tasks.ReacherTask "
                           r"'Move the tip .*' view \w+ there, envs.mujoco_tasks.ReacherTask "
                           r"'Touch it.' view \w+ now\)"):  # fmt: skip
            synthesize(more, tmp_path, **options)
    finally:
        envs.register_task(spec)


def test_an_older_manifest_and_the_fix_a_refusal_gives(tmp_path):
    # an older version wrote the task's own camera as null and its default options as {}: the
    # same options were refused, and so was the fix the refusal gave; env.task_kwargs={k:v} is
    # refused by hydra, and a camera given by value is no camera name
    import json

    from envs.manifest import MANIFEST

    plans = plan_episodes("Reacher-v5", 1, failure_fraction=0.0)
    synthesize(plans, tmp_path, workers=1, progress_bar=False, every=5,
               task_kwargs={"min_start_distance": 0.15})  # fmt: skip
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    options = manifest["tasks"]["Reacher-v5"]
    with pytest.raises(InvalidOptionError) as excinfo:  # the default min_start_distance now
        synthesize(plans, tmp_path, workers=1, progress_bar=False, every=5, camera="track")
    assert str(excinfo.value).endswith(
        "Pass a new out=<folder> for these options, or the folder's own (env.camera=null "
        "++env.task_kwargs.min_start_distance=0.15 in experiments/synthesize.py)"
    )
    options.update(camera=None, task_kwargs={})  # as an older version wrote the defaults
    del options["definition"], options["expert"]  # recorded since 2026-12-06
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    assert synthesize(plans, tmp_path, workers=1, progress_bar=False, every=5) == []
    del options["every"]  # an option added after the manifest was written
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(InvalidOptionError) as excinfo:
        synthesize(plans, tmp_path, workers=1, progress_bar=False, every=5)
    assert str(excinfo.value).endswith(
        "(every: (not recorded) there, 5 now); a re-run records only the missing episodes, so "
        "the dataset would mix the two. Pass a new out=<folder> for these options, or, if its "
        "episodes were recorded with every=5, add it to its manifest.json (its version did not "
        "record them)"
    )


def _make_far(spec, view, render_mode=None, goal_m=3.0):
    """A module-level make with an option, for a partial."""


def test_a_task_definition_is_named_alike_in_every_process(tmp_path):
    # a partial's repr holds a memory address: every re-run into its folder was refused
    import functools

    from envs.manifest import check_folder_options, write_manifest
    from envs.synth import _qualname

    far = functools.partial(_make_far, goal_m=5.0)
    assert _qualname(far) == "tests.envs.test_manifest._make_far(goal_m=5.0)"
    assert _qualname(_StillExpert()) == "tests.envs.test_synth._StillExpert instance"
    # no expert recorded a folder of policy rollouts, and a run of those names none: either
    # side's null matches any expert; two experts do not
    options = {"every": 5, "expert": "lab.tasks.CheetahExpert"}
    write_manifest(tmp_path, {"CheetahRun-v1": {**options, "expert": None}})
    check_folder_options(tmp_path, {"CheetahRun-v1": options}, {"CheetahRun-v1": 2})
    write_manifest(tmp_path, {"CheetahRun-v1": options})
    check_folder_options(
        tmp_path, {"CheetahRun-v1": {**options, "expert": None}}, {"CheetahRun-v1": 2}
    )
    with pytest.raises(InvalidOptionError, match=r"expert: lab\.tasks\.CheetahExpert there, "):
        check_folder_options(tmp_path, {"CheetahRun-v1": {**options, "expert": "a.B"}},
                             {"CheetahRun-v1": 2})  # fmt: skip


def test_a_folder_another_version_recorded_is_not_resumed(tmp_path):
    # Lift's cube heights from its spawn and experts drawing from the start's stream (recording
    # 1, a manifest without the key) resumed silently with today's labels: one folder, two kinds
    import json

    from envs.manifest import MANIFEST, RECORDING

    plans = plan_episodes("Reacher-v5", 2, failure_fraction=0.0)
    synthesize(plans[:1], tmp_path, workers=1, progress_bar=False, every=5)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["tasks"]["Reacher-v5"].pop("recording") == RECORDING == 3
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))  # as an older version wrote it
    with pytest.raises(InvalidOptionError) as excinfo:
        synthesize(plans, tmp_path, workers=1, progress_bar=False, every=5)
    assert str(excinfo.value) == (
        f"the dataset folder '{tmp_path}' holds 1 Reacher-v5 episodes recorded by another version "
        "of VisCritic's recording (recording 1 there, 3 now: envs.manifest.RECORDING says what "
        "changed), whose labels or episodes differ from what this one records; a re-run records "
        "only the missing episodes, so the dataset would mix the two. Pass a new out=<folder>, "
        "or move this one away and run again to record it all"
    )
    # Stack's and PickPlaceCan's episodes changed alone (their distances across the table
    # renamed): a version of their own, one above every other task's (3 since the night of
    # 2026-12-07: a failure's frames before its step labelled as the expert's, and more)
    from envs.synth import recording_options

    assert (
        recording_options("Stack")["recording"]
        == recording_options("PickPlaceCan")["recording"]
        == 4
    )
    assert (
        recording_options("Lift")["recording"] == recording_options("Pusher-v5")["recording"] == 3
    )


def test_a_run_reading_an_older_recording_is_told(tmp_path):
    # train_critic.py and eval_critic.py read a version-2 Stack folder without a word: its
    # chains of thought said "the red cube is 0.7 cm from the green cube" of a cube 13 cm above
    import json

    from envs.manifest import MANIFEST, older_recordings

    plans = plan_episodes("Reacher-v5", 1, failure_fraction=0.0)
    synthesize(plans, tmp_path / "now", workers=1, progress_bar=False, every=5)
    assert older_recordings([tmp_path / "now", tmp_path / "no manifest"]) == []
    manifest = json.loads((tmp_path / "now" / MANIFEST).read_text())
    manifest["tasks"]["Stack"] = {**manifest["tasks"]["Reacher-v5"], "recording": 2}
    manifest["tasks"]["Reacher-v5"].pop("recording")  # a manifest from before the key: 1
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / MANIFEST).write_text(json.dumps(manifest))
    assert older_recordings([str(tmp_path / "old")]) == [
        f"{tmp_path / 'old'}: its {task} episodes were recorded by version {then} of the "
        f"recording, and this code records version {now} (envs.manifest.RECORDING says what "
        "changed: labels or chain-of-thought wording); record them again into a new folder "
        "(synthesize.py out=) to train or score on what this code records"
        for task, then, now in (("Reacher-v5", 1, 3), ("Stack", 2, 4))
    ]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / MANIFEST).write_text("not json")  # the readers say what they find
    assert older_recordings([tmp_path / "bad"]) == []
