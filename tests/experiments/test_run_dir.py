"""The run-dir guard: a hydra.run.dir= holding an earlier run's results is refused, by script."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from tests.experiments.train_critic_cli import run_train
from tests.zygote import run_python


def test_what_each_script_would_write_over_by_hand(tmp_path):
    from run_dir import RunDirError, RunDirGuard, check_run_dir

    rl = OmegaConf.create({"conditions": ["critic", "oracle"], "seeds": [0, 1], "merge": None})
    check_run_dir("zero_shot_rl", rl, tmp_path)  # an empty dir: nothing to refuse
    (tmp_path / "oracle_seed1").mkdir()  # a run of a run that stopped before its results.json
    with pytest.raises(RunDirError) as err:
        check_run_dir("zero_shot_rl", rl, tmp_path)
    assert str(err.value) == (
        f"{tmp_path} already holds oracle_seed1 from an earlier run; give a new hydra.run.dir=, "
        "or overwrite=true to replace them, or resume=true to keep the runs it finished and "
        "train only the others"
    )
    # another experiment's finished run (its record), not among this command's seeds: a new run
    # beside it left a dir of two configs, which merge= joined as one
    (tmp_path / "ground_truth_seed7").mkdir()
    (tmp_path / "ground_truth_seed7" / "result.json").write_text("{}")
    other = OmegaConf.merge(rl, {"seeds": [2]})
    with pytest.raises(RunDirError) as err:
        check_run_dir("zero_shot_rl", other, tmp_path)
    assert str(err.value) == (  # no resume=true: it refuses runs this command does not ask for
        f"{tmp_path} already holds ground_truth_seed7 from an earlier run; give a new "
        "hydra.run.dir=, or overwrite=true to replace them"
    )
    check_run_dir("zero_shot_rl", OmegaConf.merge(rl, {"overwrite": True}), tmp_path)
    check_run_dir("zero_shot_rl", OmegaConf.merge(rl, {"merge": ["x"]}), tmp_path)  # no runs
    import shutil

    shutil.rmtree(tmp_path / "ground_truth_seed7")
    with pytest.raises(RunDirError, match=r"^overwrite='yes' must be true or false$"):
        check_run_dir("zero_shot_rl", OmegaConf.merge(rl, {"overwrite": "yes"}), tmp_path)
    # resume=true continues the stopped experiment here: its finished runs are kept
    check_run_dir("zero_shot_rl", OmegaConf.merge(rl, {"resume": True}), tmp_path)
    with pytest.raises(RunDirError, match=r"^resume='yes' must be true or false$"):
        check_run_dir("zero_shot_rl", OmegaConf.merge(rl, {"resume": "yes"}), tmp_path)
    with pytest.raises(RunDirError, match=r"would remove the runs resume=true keeps in .*; drop"):
        check_run_dir("zero_shot_rl", OmegaConf.merge(rl, {"resume": True, "overwrite": True}),
                      tmp_path)  # fmt: skip
    with pytest.raises(RunDirError, match=r"^resume=true continues a stopped training run; merge"):
        check_run_dir("zero_shot_rl", OmegaConf.merge(rl, {"resume": True, "merge": ["x"]}),
                      tmp_path)  # fmt: skip
    # train_critic: a stage's folder, unless resume= continues the run in this dir
    train = OmegaConf.create({"pipeline": ["sft", "readout"], "resume": None})
    (tmp_path / "readout").mkdir()
    with pytest.raises(RunDirError, match="already holds readout from an earlier run"):
        check_run_dir("train_critic", train, tmp_path)
    here = str(tmp_path / "readout" / "checkpoint-2")
    check_run_dir("train_critic", OmegaConf.merge(train, {"resume": here}), tmp_path)
    # a report or plot by the names the scripts write, alone (the user's own notes in a dataset
    # folder given as the run dir): replaced or deleted without a word
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "report.md").write_text("MY NOTES")
    with pytest.raises(RunDirError, match=r"already holds report\.md from an earlier run"):
        check_run_dir("eval_critic", OmegaConf.create({}), notes)
    with pytest.raises(RunDirError, match=r"already holds report\.md from an earlier run"):
        check_run_dir("zero_shot_rl", OmegaConf.merge(rl, {"merge": ["x"]}), notes)
    (notes / "report.md").unlink()
    (notes / "calibration.png").write_bytes(b"")
    with pytest.raises(RunDirError, match=r"already holds calibration\.png from an earlier run"):
        check_run_dir("eval_critic", OmegaConf.create({}), notes)
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(RunDirError, match=r"already holds metrics\.json"):
        check_run_dir("eval_critic", OmegaConf.create({}), tmp_path)
    with pytest.raises(ValueError, match="RunDirGuard\\(script='bench'\\): scripts are"):
        RunDirGuard("bench")
    # a run dir that is a file, or cannot be made, was hydra's raw FileExistsError and OSError
    (tmp_path / "a_file").write_text("")
    for script in ("zero_shot_rl", "train_critic", "eval_critic", "synthesize"):
        with pytest.raises(RunDirError) as err:
            check_run_dir(script, rl, tmp_path / "a_file")
        assert str(err.value) == (
            f"hydra.run.dir={tmp_path / 'a_file'} is a file, not a folder; give a folder for the "
            "run's outputs"
        )
        with pytest.raises(RunDirError) as err:
            check_run_dir(script, rl, tmp_path / "a_file" / "below")
        assert str(err.value) == (
            f"hydra.run.dir={tmp_path / 'a_file' / 'below'} cannot be made (Not a directory); "
            "give a folder you can write to"
        )


def test_synthesize_refuses_a_run_dir_it_cannot_make(tmp_path):
    import sys
    from pathlib import Path

    (tmp_path / "a_file").write_text("")
    script = Path(__file__).resolve().parents[2] / "experiments" / "synthesize.py"
    done = run_python([sys.executable, str(script), f"hydra.run.dir={tmp_path / 'a_file'}"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        f"synthesize: RunDirError: hydra.run.dir={tmp_path / 'a_file'} is a file, not a folder; "
        "give a folder for the run's outputs"
    )


def test_train_critic_refuses_any_earlier_run_unless_it_continues_it_here(tmp_path):
    from run_dir import RunDirError, check_run_dir

    train = OmegaConf.create({"pipeline": ["sft"], "resume": None, "model": "tiny"})
    check_run_dir("train_critic", train, tmp_path)
    # another pipeline's stage, or a bare history: the old guard looked at this pipeline's
    # stages alone, and the run appended to history.jsonl
    for name in ("readout", "tensorboard"):
        (tmp_path / name).mkdir()
        with pytest.raises(RunDirError) as err:
            check_run_dir("train_critic", train, tmp_path)
        assert str(err.value) == (
            f"{tmp_path} already holds {name} from an earlier run; give a new hydra.run.dir=, "
            "or overwrite=true to replace them"
        )
        (tmp_path / name).rmdir()
    (tmp_path / "history.jsonl").write_text("{}\n")
    with pytest.raises(RunDirError, match=r"already holds history\.jsonl from an earlier run"):
        check_run_dir("train_critic", train, tmp_path)
    (tmp_path / "sft" / "final").mkdir(parents=True)
    (tmp_path / "readout" / "checkpoint-4").mkdir(parents=True)
    # resume= of another run's checkpoint turned the guard off for any dir
    other = tmp_path.parent / "other" / "readout" / "checkpoint-2"
    with pytest.raises(RunDirError, match=r"already holds history\.jsonl, sft, readout from an"):
        check_run_dir("train_critic", OmegaConf.merge(train, {"resume": str(other)}), tmp_path)
    here = OmegaConf.merge(train, {"resume": str(tmp_path / "readout" / "checkpoint-4")})
    check_run_dir("train_critic", here, tmp_path)  # it continues the run in this dir
    with pytest.raises(RunDirError) as err:
        check_run_dir("train_critic", OmegaConf.merge(here, {"overwrite": True}), tmp_path)
    assert str(err.value) == (
        f"overwrite=true would remove resume={tmp_path / 'readout' / 'checkpoint-4'}, which lies "
        f"in {tmp_path}; drop overwrite=true to continue that run there"
    )
    # overwrite=true: every earlier output goes, not only this pipeline's stages; set aside
    # until the new run has trained a step, and put back if it stops before
    from run_dir import ASIDE, discard_outputs, restore_outputs, set_aside_outputs

    (tmp_path / ".hydra").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError) as err:  # unless the run starts from weights in them
        set_aside_outputs("train_critic", train, tmp_path, keep=[str(tmp_path / "sft" / "final")])
    assert str(err.value) == (
        f"overwrite=true would remove {tmp_path / 'sft'}, and this run reads "
        f"{tmp_path / 'sft' / 'final'} from it; copy it elsewhere first, or give a new "
        "hydra.run.dir="
    )
    before = sorted(p.name for p in tmp_path.iterdir())
    aside = set_aside_outputs("train_critic", train, tmp_path, keep=["tiny", None])
    assert sorted(p.name for p in aside.iterdir()) == ["history.jsonl", "readout", "sft"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ASIDE, ".hydra", "notes.txt"])
    (tmp_path / "sft").mkdir()  # the new run's first output, then it stops before training
    restore_outputs("train_critic", train, tmp_path, aside)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "sft" / "final").is_dir()  # the earlier run's, not the new empty one
    discard_outputs(set_aside_outputs("train_critic", train, tmp_path, keep=["tiny", None]))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hydra", "notes.txt"]
    # a removal cut short (Ctrl-C while a large earlier run is deleted) leaves no earlier run to
    # put back: both were lost, the new run's trained step removed and half the old one moved
    # back, "kept as it was"; the next run in the dir finishes the removal
    import run_dir as module

    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "weights").write_text("earlier")
    aside = set_aside_outputs("train_critic", train, tmp_path)
    remove = module._remove

    def cut_short(paths):
        if any(p.name == module.REMOVING for p in paths) and (tmp_path / module.REMOVING).exists():
            (tmp_path / module.REMOVING / "sft" / "weights").unlink()  # half of it gone
            raise KeyboardInterrupt
        remove(paths)

    module._remove = cut_short
    try:
        with pytest.raises(KeyboardInterrupt):
            discard_outputs(aside)
    finally:
        module._remove = remove
    assert not aside.exists() and (tmp_path / module.REMOVING).is_dir()
    check_run_dir("train_critic", OmegaConf.merge(train, {"overwrite": True}), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hydra", "notes.txt"]
    # a run killed after it set the earlier one aside leaves it there: the next run is refused,
    # where overwrite=true deleted it
    (tmp_path / "sft").mkdir()
    set_aside_outputs("train_critic", train, tmp_path)
    for options in (train, OmegaConf.merge(train, {"overwrite": True})):
        with pytest.raises(RunDirError) as err:
            check_run_dir("train_critic", options, tmp_path)
        assert str(err.value) == (
            f"{tmp_path / ASIDE} holds an earlier run that overwrite=true set aside, and the run "
            f"that replaced it stopped before it finished; move its contents back into {tmp_path} "
            "(its .hydra/ in place of the stopped run's), or delete it, then run again"
        )


def test_a_ctrl_c_while_the_earlier_run_is_set_aside_leaves_it_where_it_was(tmp_path, monkeypatch):
    # half of it moved into .overwritten/: the next run was refused, and the user told to move
    # it back by hand
    from pathlib import Path

    from run_dir import set_aside_outputs

    train = OmegaConf.create({"pipeline": ["sft", "readout"], "resume": None, "model": "tiny"})
    for name in ("sft", "readout"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "weights").write_text(name)
    before = sorted(p.name for p in tmp_path.iterdir())
    rename, moves = Path.rename, []

    def interrupted(self, target):  # the second move, once
        moves.append(self)
        if len(moves) == 2:
            raise KeyboardInterrupt
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", interrupted)
    with pytest.raises(KeyboardInterrupt):
        set_aside_outputs("train_critic", train, tmp_path)
    monkeypatch.setattr(Path, "rename", rename)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no .overwritten/ left
    assert [(tmp_path / n / "weights").read_text() for n in ("sft", "readout")] == [
        "sft",
        "readout",
    ]


def test_a_training_run_stopped_in_a_stage_is_refused_with_the_resume_that_continues_it(tmp_path):
    # the refusal named overwrite=true alone, which discards the checkpoints
    from run_dir import RunDirError, check_run_dir

    from critic.train.checkpoint import STATE

    train = OmegaConf.create({"pipeline": ["sft", "readout"], "resume": None, "model": "tiny"})
    (tmp_path / "sft" / "final").mkdir(parents=True)  # a stage that finished
    for step in (2, 4):
        (tmp_path / "readout" / f"checkpoint-{step}").mkdir(parents=True)
        (tmp_path / "readout" / f"checkpoint-{step}" / STATE).write_bytes(b"")
    with pytest.raises(RunDirError) as err:
        check_run_dir("train_critic", train, tmp_path)
    assert str(err.value).endswith(
        "or overwrite=true to replace them, or resume="
        f"{tmp_path / 'readout' / 'checkpoint-4'} to continue the run it stopped (in stage readout)"
    )
    # stopped after sft finished, before readout's first checkpoint: sft's final continues it
    # (the refusal named overwrite=true alone, which discards the finished stage)
    import shutil

    shutil.rmtree(tmp_path / "readout")
    (tmp_path / "sft" / "final" / STATE).write_bytes(b"")
    with pytest.raises(RunDirError) as err:
        check_run_dir("train_critic", train, tmp_path)
    assert str(err.value).endswith(
        f"or overwrite=true to replace them, or resume={tmp_path / 'sft' / 'final'} to continue "
        "the run after its finished stage"
    )
    (tmp_path / "readout" / "final").mkdir(parents=True)  # every stage finished: nothing left
    (tmp_path / "readout" / "final" / STATE).write_bytes(b"")
    with pytest.raises(RunDirError) as err:
        check_run_dir("train_critic", train, tmp_path)
    assert str(err.value).endswith("or overwrite=true to replace them")


def test_train_critic_refuses_before_hydra_or_a_model_touches_the_dir(tmp_path):
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "final").mkdir()  # hours of training, in a real run
    done = run_train(tmp_path, "pipeline=[sft]", "data=[/nonexistent]")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().endswith(
        f"train_critic: RunDirError: {tmp_path} already holds sft from an earlier run; give a new "
        "hydra.run.dir=, or overwrite=true to replace them"
    )
    assert not (tmp_path / ".hydra").exists()


def test_a_run_dir_named_with_hydra_interpolations_is_guarded_too(tmp_path):
    import sys

    from tests.experiments.train_critic_cli import ROOT

    (tmp_path / "eval_critic").mkdir()
    (tmp_path / "eval_critic" / "metrics.json").write_text("{}")
    done = run_python(
        [sys.executable, str(ROOT / "experiments" / "eval_critic.py"),
         f"hydra.run.dir={tmp_path}/${{hydra:job.name}}", "data=[]"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 1 and done.stderr.strip().endswith(
        f"eval_critic: RunDirError: {tmp_path}/eval_critic already holds metrics.json from an "
        "earlier run; give a new hydra.run.dir=, or overwrite=true to replace them"
    )
    assert (tmp_path / "eval_critic" / "metrics.json").read_text() == "{}"


def test_a_multirun_job_is_refused_a_dir_holding_an_earlier_jobs_results(tmp_path):
    import sys

    from tests.experiments.train_critic_cli import ROOT

    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "metrics.json").write_text("{}")  # job 0 of an earlier sweep
    done = run_python(
        [sys.executable, str(ROOT / "experiments" / "eval_critic.py"), "--multirun",
         f"hydra.sweep.dir={tmp_path}", "data=[]"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().endswith(
        f"eval_critic: RunDirError: {tmp_path}/0 already holds metrics.json from an earlier run; "
        "give a new hydra.sweep.dir=, or overwrite=true to replace them"
    )
    assert (tmp_path / "0" / "metrics.json").read_text() == "{}"
    assert not (tmp_path / "0" / ".hydra").exists()  # refused before the sweep wrote anything
    assert not (tmp_path / "multirun.yaml").exists()


@pytest.mark.parametrize(
    ("config", "override", "message"),
    [
        # hydra's own hint for a misspelled key is "To append to your config use +..."; followed,
        # the run went on without the option (warm-up 0)
        ("train_critic", "+stages.sft.warm_up=1",
         "train_critic: ConfigKeyError: +stages.sft.warm_up=1 adds stages.sft.warm_up, an option "
         "train_critic does not read (a misspelled option would be ignored); the options under "
         "stages.sft are ['batch_size', 'kinds', 'lr', 'schedule', 'shuffle_labels', 'steps', "
         "'warmup']"),
        ("zero_shot_rl", "+test_episode=5", "zero_shot_rl: ConfigKeyError: +test_episode=5 adds "
         "test_episode, an option zero_shot_rl does not read"),
        ("eval_critic", "+episode_per_task=1", "eval_critic: ConfigKeyError: +episode_per_task=1"),
        ("synthesize", "+episode=3", "synthesize: ConfigKeyError: +episode=3 adds episode"),
        # ++ sets an option or adds it where there is none: the misspelled one ran with rc 0
        ("eval_critic", "++probe_episode=3", "eval_critic: ConfigKeyError: ++probe_episode=3 "
         "adds probe_episode, an option eval_critic does not read"),
        ("train_critic", "++stages.sft.warm_up=1", "train_critic: ConfigKeyError: "
         "++stages.sft.warm_up=1 adds stages.sft.warm_up"),
    ],
)  # fmt: skip
def test_an_added_option_the_script_does_not_read_is_refused(config, override, message):
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    configs = Path(__file__).resolve().parents[2] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose(config, overrides=[override], return_hydra_config=True)
        # where a script passes options on to what checks them, a key may be added
        opened = {"train_critic": "+stages.readout.shuffle_labels=true",
                  "zero_shot_rl": "+env.task_kwargs.min_start_distance=0.45",
                  "eval_critic": "+by_state.Door={key: a, bins: [1]}",
                  "synthesize": "+env.task_kwargs.control_freq=10"}[config]  # fmt: skip
        fine = compose(config, overrides=[opened], return_hydra_config=True)
        # ++ on an option the script has sets it (hydra's hint for a + on a key that exists)
        existing = "++seed=3" if config in ("train_critic", "eval_critic") else "++imports=[]"
        forced = compose(config, overrides=[existing, "++hydra.job.chdir=false"],
                         return_hydra_config=True)  # fmt: skip
    guard = instantiate(cfg.hydra.callbacks.added_key_guard)
    with pytest.raises(SystemExit) as stop:
        guard.on_run_start(cfg)
    assert str(stop.value.code).startswith(message)
    guard.on_run_start(fine)
    guard.on_run_start(forced)


def test_a_run_dir_another_run_is_writing_in_is_refused(tmp_path):
    # the guard's check passed both runs while neither had written: the second replaced the
    # first's results.json (zero_shot_rl) or its final weights (train_critic)
    import os
    import sys
    from pathlib import Path

    from rollout.files import lock_folder, release

    root = Path(__file__).resolve().parents[2]
    held = lock_folder(tmp_path, "run")  # a run writing there now
    # ... an overwrite=true run, between keeping the earlier run's record and setting its
    # outputs aside: the refused run's check put that record back over the live run's own
    (tmp_path / ".overwritten" / ".hydra").mkdir(parents=True)
    (tmp_path / ".overwritten" / ".hydra" / "overrides.yaml").write_text("- EARLIER_RUN\n")
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- overwrite=true\n")
    for script in ("zero_shot_rl", "train_critic", "eval_critic"):
        done = run_python([sys.executable, str(root / "experiments" / f"{script}.py"),
                               f"hydra.run.dir={tmp_path}"], capture_output=True, text=True,
                              timeout=120, cwd=root)  # fmt: skip
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert done.stderr.strip() == (
            f"{script}: RunDirError: {tmp_path} is in use by another run (process {os.getpid()}): "
            "two runs writing there would mix or replace each other's files; wait for it to "
            f"end, or give this {script} run (hydra.run.dir=) another folder"
        )
        assert (tmp_path / ".hydra" / "overrides.yaml").read_text() == "- overwrite=true\n"
    release(held)


def test_a_run_dir_where_no_lock_can_be_written_is_refused(tmp_path):
    # hydra turned the lock's error into a warning, and the run went on without a lock
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    (tmp_path / ".lock").mkdir()
    done = run_python([sys.executable, str(root / "experiments" / "eval_critic.py"),
                           f"hydra.run.dir={tmp_path}", "data=[]"], capture_output=True,
                          text=True, timeout=120, cwd=root)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        f"eval_critic: RunDirError: {tmp_path / '.lock'} is a folder where the run's lock file "
        "goes; remove it"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]


def test_under_torchrun_only_the_first_process_checks(tmp_path, monkeypatch):
    # the other processes' checks, after the first had kept the earlier run's record aside for
    # overwrite=true, moved it back (and one later still found .overwritten/ and ended the job)
    from run_dir import RunDirGuard

    (tmp_path / ".overwritten" / ".hydra").mkdir(parents=True)
    (tmp_path / ".hydra").mkdir()
    (tmp_path / "results.json").write_text("{}")
    cfg = OmegaConf.create({"conditions": ["critic"], "seeds": [0], "merge": None,
                            "overwrite": True})  # fmt: skip
    monkeypatch.setenv("RANK", "1")
    RunDirGuard("zero_shot_rl")._check(cfg, tmp_path)  # no exit, nothing moved
    assert (tmp_path / ".overwritten" / ".hydra").is_dir()
    monkeypatch.setenv("RANK", "0")  # the first process's check does (a killed run's record)
    RunDirGuard("zero_shot_rl")._check(cfg, tmp_path)
    assert not (tmp_path / ".overwritten").exists()


def test_a_forced_option_whose_value_is_still_to_be_given_is_one_the_script_reads(tmp_path):
    # ++req=1 on a `req: ???` option was read as adding an unknown one (its value "missing")
    from added_keys import AddedKeyGuard
    from hydra import compose, initialize_config_dir

    (tmp_path / "app.yaml").write_text("req: ???\nnested:\n  deep: ???\n")
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        given = compose("app", overrides=["++req=1", "++nested.deep=2"], return_hydra_config=True)
        typo = compose("app", overrides=["++rq=1"], return_hydra_config=True)
    guard = AddedKeyGuard("app")
    guard.on_run_start(given)
    with pytest.raises(SystemExit, match=r"^app: ConfigKeyError: \+\+rq=1 adds rq, an option app"):
        guard.on_run_start(typo)
