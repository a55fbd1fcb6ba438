"""experiments/train_critic.py stopped on purpose or by a fault: a NaN loss, Ctrl-C, overwrite=
of an earlier run, old checkpoints removed, a checkpoint that cannot be written. The stages and
exact resume are in test_train_critic.py."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.experiments.train_critic_cli import (
    TINY,
    check_overrides,
    load_recipe,
    read_history,
    run_stages,
    run_train,
)


def test_a_nan_loss_stops_the_run_naming_the_step_and_the_last_checkpoint(dataset, tmp_path):
    # lr 1e30: step 1 throws the weights to ~1e30 and step 2's loss is NaN. Before, every weight
    # went NaN, the run exited 0 with a final, and history.jsonl held bare NaN
    done = run_train(tmp_path, f"data=[{dataset}]", "pipeline=[sft]", "stages.sft.steps=4",
                     "stages.sft.batch_size=2", "stages.sft.lr=1e30", "checkpoint_every=1",
                     "eval_every=0")  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = tmp_path / "sft" / "checkpoint-1"
    assert done.stderr.strip().splitlines()[-1] == (
        "train_critic: stage sft, step 2: the loss is nan (lr=1e+30, dtype=float32); the run stops "
        f"there and writes no sft/final. The last checkpoint before it is {last}: start again from "
        f"its weights with model={last} and a lower stages.sft.lr=, into a new hydra.run.dir= "
        "(resume= would repeat the same steps)"
    )
    assert not (tmp_path / "sft" / "final").exists()
    assert not (tmp_path / "sft" / "checkpoint-2").exists()
    assert [h["step"] for h in read_history(tmp_path)] == [0, 1]  # strict JSON


def test_ctrl_c_names_the_checkpoint_to_resume_from(dataset, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.experiments.train_critic_cli import ROOT

    run = subprocess.Popen(
        [sys.executable, str(ROOT / "experiments" / "train_critic.py"), f"hydra.run.dir={tmp_path}",
         *TINY, f"data=[{dataset}]", "pipeline=[sft]", "stages.sft.steps=1000",
         "stages.sft.batch_size=2", "checkpoint_every=1", "eval_every=0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        # SIGINT at its default: a job started in the background (nohup ... &, a CI runner)
        # inherits it ignored, and Ctrl-C would then reach nothing
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not (tmp_path / "sft" / "checkpoint-2" / "trainer_state.pt").is_file():
        assert run.poll() is None and time.monotonic() < deadline, run.stderr.read()[-3000:]
        time.sleep(0.2)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("train_critic: interrupted (Ctrl-C) in stage sft at step ")
    latest = max((tmp_path / "sft").glob("checkpoint-*"), key=lambda p: int(p.name[11:]))
    assert line.endswith(
        f"; continue from its latest checkpoint with resume={latest} (and the same options)"
    )


def test_overwrite_replaces_every_earlier_output_of_the_run_dir(dataset, tmp_path):
    one_step = [f"data=[{dataset}]", "stages.sft.steps=1", "stages.sft.batch_size=2",
                "stages.readout.steps=2", "stages.readout.batch_size=2", "checkpoint_every=1",
                "eval_every=0"]  # fmt: skip
    assert run_train(tmp_path, *one_step, "pipeline=[readout]").returncode == 0
    # another pipeline into the same dir: the guard looked at this pipeline's stages alone, and
    # the run appended to the earlier history
    done = run_train(tmp_path, *one_step, "pipeline=[sft]")
    assert done.returncode == 1 and done.stderr.strip().endswith(
        f"train_critic: RunDirError: {tmp_path} already holds history.jsonl, tensorboard, readout "
        "from an earlier run; give a new hydra.run.dir=, or overwrite=true to replace them"
    )
    # overwrite=true replaced nothing: readout/ and its checkpoint stayed, the history held both
    done = run_train(tmp_path, *one_step, "pipeline=[sft]", "overwrite=true")
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (tmp_path / "readout").exists()
    assert [(h["stage"], h["step"]) for h in read_history(tmp_path)] == [("sft", 0), ("sft", 1)]
    assert len(list((tmp_path / "tensorboard").iterdir())) == 1  # this run's events alone
    assert not (tmp_path / ".overwritten").exists()  # the earlier run, once this one trained
    # a run that starts from weights in the dir keeps them: refused before anything is removed
    done = run_train(tmp_path, *one_step, "pipeline=[sft]", "overwrite=true",
                     f"model={tmp_path / 'sft' / 'final'}")  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().endswith(
        f"train_critic: RunDirError: overwrite=true would remove {tmp_path / 'sft'}, and this run "
        f"reads {tmp_path / 'sft' / 'final'} from it; copy it elsewhere first, or give a new "
        "hydra.run.dir="
    )
    assert (tmp_path / "sft" / "final" / "trainer_state.pt").is_file()
    assert "pipeline=[sft]" in (tmp_path / ".hydra" / "overrides.yaml").read_text()
    assert "model=" not in (tmp_path / ".hydra" / "overrides.yaml").read_text()  # the run's own
    assert not (tmp_path / ".overwritten").exists()
    # a run refused at its start (a model that does not load, no samples left) kept nothing of
    # the run it was to replace: the earlier run stays until this one has trained a step
    before = read_history(tmp_path)
    record = (tmp_path / ".hydra" / "overrides.yaml").read_text()  # the options a resume needs
    from envs.plans import plan_episodes
    from envs.synth import synthesize

    test_only = tmp_path.parent / f"{tmp_path.name}_test_only"  # seed 5: a test seed, no train
    synthesize(plan_episodes("Reacher-v5", 1, 0.0, first_seed=5), test_only, progress_bar=False,
               every=10, image_size=28)  # fmt: skip
    for bad in (f"model={dataset}", f"data=[{test_only}]"):
        done = run_train(tmp_path, *one_step, "pipeline=[sft]", "overwrite=true", bad)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert done.stderr.strip().endswith(
            f"the earlier run in {tmp_path} is kept as it was (nothing was trained)"
        )
        assert read_history(tmp_path) == before and not (tmp_path / ".overwritten").exists()
        assert (tmp_path / ".hydra" / "overrides.yaml").read_text() == record
        assert (tmp_path / "sft" / "final" / "trainer_state.pt").is_file()
        assert len(list((tmp_path / "tensorboard").iterdir())) == 1
    # refused by its config check, before anything was set aside: the record is put back too
    done = run_train(tmp_path, *one_step, "pipeline=[sft]", "overwrite=true", "stages.sft.lr=-1")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert (tmp_path / ".hydra" / "overrides.yaml").read_text() == record
    assert not (tmp_path / ".overwritten").exists()
    # a run that finishes with no step to train (a resume of another run's finished stage)
    # replaces the earlier run too: it stayed in .overwritten/, and every later run was refused
    import shutil

    other = tmp_path.parent / f"{tmp_path.name}_other"
    shutil.copytree(tmp_path, other)
    done = run_train(tmp_path, *one_step, "pipeline=[sft]", "overwrite=true",
                     f"resume={other / 'sft' / 'final'}")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (tmp_path / ".overwritten").exists()


def test_keep_checkpoints_keeps_each_stage_s_latest(dataset, tmp_path):
    # every checkpoint was kept: a 7B ZeRO-3 run's sixteen came to ~1.7 TB
    module, cfg = load_recipe(f"data=[{dataset}]", *TINY, "pipeline=[sft]", "stages.sft.steps=5",
                              "stages.sft.batch_size=2", "eval_every=0", "checkpoint_every=1",
                              "keep_checkpoints=2")  # fmt: skip
    run_stages(module.Trainer(cfg, tmp_path), ("sft",))
    kept = sorted(p.name for p in (tmp_path / "sft").iterdir() if not p.name.startswith("."))
    assert kept == ["checkpoint-3", "checkpoint-4", "final"]
    # resumed from before a later checkpoint of the stopped run: the one just written is kept
    # (counting the later one removed it, and the run's "last checkpoint" was gone)
    import shutil

    from critic.train.checkpoint import remove_older_checkpoints

    for step in (1, 2):
        shutil.copytree(tmp_path / "sft" / "checkpoint-3", tmp_path / "sft" / f"checkpoint-{step}")
    assert remove_older_checkpoints(tmp_path / "sft" / "checkpoint-2", 1) == [
        tmp_path / "sft" / "checkpoint-1"
    ]
    kept = sorted(p.name for p in (tmp_path / "sft").iterdir() if not p.name.startswith("."))
    assert kept == ["checkpoint-2", "checkpoint-3", "checkpoint-4", "final"]


def test_a_checkpoint_that_cannot_be_written_is_named_with_the_one_to_resume(
    dataset, tmp_path, monkeypatch
):
    # a full disk at a checkpoint was a raw OSError traceback, with no word of what was kept
    import critic.train.checkpoint
    from critic.train.checkpoint import CheckpointError

    module, cfg = load_recipe(f"data=[{dataset}]", *TINY, "pipeline=[sft]", "stages.sft.steps=3",
                              "stages.sft.batch_size=2", "eval_every=0", "checkpoint_every=1")  # fmt: skip
    real, calls = critic.train.checkpoint.save_checkpoint, []

    def full_disk(path, *args, **kwargs):
        calls.append(path)
        if len(calls) > 1:  # checkpoint-1 is written, checkpoint-2 is not
            raise OSError(28, "No space left on device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(critic.train.checkpoint, "save_checkpoint", full_disk)
    with pytest.raises(CheckpointError) as err:
        run_stages(module.Trainer(cfg, tmp_path), ("sft",))
    first = tmp_path / "sft" / "checkpoint-1"
    assert str(err.value) == (
        f"cannot write the checkpoint {tmp_path / 'sft' / 'checkpoint-2'} (No space left on "
        f"device); the last checkpoint written is {first}: resume={first} once there is room"
    )
    assert (first / "config.json").is_file()


def test_a_run_that_stops_before_its_first_record_leaves_the_dir_free(dataset, tmp_path):
    # tensorboard/ was made at setup: a run with no samples (here: only a test-split episode) left
    # an events file, and the corrected run in the same dir was refused ("already holds
    # tensorboard from an earlier run")
    from envs.plans import plan_episodes
    from envs.synth import synthesize

    test_only = tmp_path / "test_only"  # seed 5: a test seed, no train episode
    synthesize(plan_episodes("Reacher-v5", 1, 0.0, first_seed=5), test_only, progress_bar=False,
               every=10, image_size=28)  # fmt: skip
    run = tmp_path / "run"
    one = ["pipeline=[sft]", "stages.sft.steps=1", "stages.sft.batch_size=2", "eval_every=0"]
    done = run_train(run, f"data=[{test_only}]", *one)
    assert done.returncode == 1 and "no training samples" in done.stderr, done.stderr[-2000:]
    assert not (run / "tensorboard").exists()
    done = run_train(run, f"data=[{dataset}]", *one)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(list((run / "tensorboard").iterdir())) == 1
    # an episodes/ folder with no finished episode is refused before the model loads
    (tmp_path / "empty" / "episodes").mkdir(parents=True)
    with pytest.raises(Exception, match=r"no episodes in \["):
        check_overrides(f"data=[{tmp_path / 'empty'}]")


def test_a_final_trained_on_in_its_own_run_keeps_the_earlier_and_its_later_stages(
    dataset, tmp_path
):
    # resume=<run>/sft/final with more steps replaced sft/final in place: the 2-step weights were
    # gone, and the readout stage trained from them (its KL reference too, for a GRPO stage)
    # stood beside weights it no longer followed from, without a word
    import hashlib

    def digest(folder):
        return hashlib.sha1((folder / "model.safetensors").read_bytes()).hexdigest()

    args = (f"data=[{dataset}]", "stages.sft.kinds=[sft]", "stages.sft.batch_size=2",
            "stages.readout.steps=1", "stages.readout.batch_size=2", "eval_every=0",
            "stages.sft.schedule=constant")  # fmt: skip
    done = run_train(tmp_path, *args, "pipeline=[sft,readout]", "stages.sft.steps=2")
    assert done.returncode == 0, done.stderr[-3000:]
    two = digest(tmp_path / "sft" / "final")
    final = tmp_path / "sft" / "final"
    done = run_train(tmp_path, *args, "pipeline=[sft]", "stages.sft.steps=3", f"resume={final}")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr == (
        f"train_critic: resume={final} trains stage sft on from its final weights (step 2 to 3) "
        f"in its own run dir, which would replace them, and ['readout'] in {tmp_path} were "
        "trained from them; give a new hydra.run.dir= to train it on there (and the stages "
        "after it again, from its new weights)\n"
    )
    assert digest(final) == two
    # with no stage after it, it trains on there, and the earlier final is kept as a checkpoint
    shutil.rmtree(tmp_path / "readout")
    done = run_train(tmp_path, *args, "pipeline=[sft]", "stages.sft.steps=3", f"resume={final}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert digest(tmp_path / "sft" / "checkpoint-2") == two != digest(final)
    record = json.loads((final / "trainer_config.json").read_text())
    assert record["step"] == 3
    # the record says where its weights began (model= and pipeline= are the resume's own)
    assert record["options"]["resumed_from"] == [str((tmp_path / "sft" / "checkpoint-2").resolve())]


def test_a_stop_after_a_finished_stage_names_its_final_to_continue_from(tmp_path):
    # stopped (Ctrl-C, or an error such as a teacher that does not load) in a stage before its
    # first checkpoint, after the stage before it finished: "nothing of the stage to continue
    # from ... into a new hydra.run.dir=" where resume=<that stage's final> continues it there
    from types import SimpleNamespace

    module, _ = load_recipe()
    final = tmp_path / "sft" / "final"
    trainer = SimpleNamespace(stage="readout", step=3, last_checkpoint=None, _last_final=final,
                              cfg=SimpleNamespace(checkpoint_every=5))  # fmt: skip
    assert module.interrupted(trainer, ["sft", "readout"]) == (
        "interrupted (Ctrl-C) in stage readout at step 3, before its first checkpoint "
        f"(checkpoint_every=5); continue after the stage that finished with resume={final} (and "
        "the same options)"
    )
    problem = ValueError("cannot load critic model /t")
    assert module.continue_hint(trainer, problem) == (
        f"; once that is fixed, continue with resume={final} (and the same options)"
    )
    trainer.last_checkpoint = tmp_path / "readout" / "checkpoint-5"  # the stage's own, first
    assert module.continue_hint(trainer, problem).endswith(f"resume={trainer.last_checkpoint} "
                                                           "(and the same options)")  # fmt: skip
    # an error that names its own resume= (a NaN loss: "resume= would repeat the same steps"),
    # or one before any stage: nothing added
    assert module.continue_hint(trainer, ValueError("(resume= would repeat)")) == ""
    trainer.stage = None
    assert module.continue_hint(trainer, problem) == ""
    trainer.stage, trainer._last_final, trainer.last_checkpoint = "sft", None, None
    assert module.interrupted(trainer, ["sft", "readout"]).endswith(
        "; nothing of the stage to continue from: run pipeline=['sft', 'readout'] again into a "
        "new hydra.run.dir="
    )


def test_a_run_continued_after_its_finished_stage_leaves_that_stage_as_it_was(dataset, tmp_path):
    # resume=<run>/sft/final, as the refusal of a run stopped after sft says: sft has no step left
    # to train, and its final was written again, its record naming it resumed from itself
    import hashlib

    args = (f"data=[{dataset}]", "stages.sft.kinds=[sft]", "stages.sft.batch_size=2",
            "stages.sft.steps=2", "stages.readout.steps=1", "stages.readout.batch_size=2",
            "eval_every=0", "pipeline=[sft,readout]")  # fmt: skip
    assert run_train(tmp_path, *args).returncode == 0
    final = tmp_path / "sft" / "final"
    before = {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in final.iterdir()}
    shutil.rmtree(tmp_path / "readout")  # stopped before readout's first checkpoint
    done = run_train(tmp_path, *args, f"resume={final}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in final.iterdir()} == before
    record = json.loads((tmp_path / "readout" / "final" / "trainer_config.json").read_text())
    assert record["options"]["resumed_from"] == [str(final.resolve())]
