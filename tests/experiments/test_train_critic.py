"""experiments/train_critic.py end to end on a tiny model and a tiny synthesised Reacher dataset:
the four stages, exact resume, checkpoints, and the messages of a model, teacher or episode that
does not load. A NaN loss, Ctrl-C, overwrite= and old checkpoints: test_train_critic_stops.py. The
config checks are in test_train_critic_config.py; the data options in test_train_critic_data.py;
the DeepSpeed and vLLM back ends in test_train_critic_backends.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.experiments.train_critic_cli import (
    TINY,
    check_overrides,
    read_history,
    run_train,
)


def test_every_stage_of_the_pipeline_in_turn(dataset, tmp_path):
    done = run_train(
        tmp_path,
        f"data=[{dataset}]",
        "pipeline=[sft,pretext,joint,outcome,readout]",
        "stages.sft.steps=2",
        "stages.pretext.steps=1",
        "stages.readout.steps=1",
        "stages.joint.steps=1",
        "stages.outcome.steps=1",
        "stages.pretext.batch_size=8",
        "stages.joint.batch_size=8",
        "stages.outcome.batch_size=8",
        "eval_every=1",
        "stages.readout.batch_size=2",
        "grpo.temporal_bonus=0.3",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    history = read_history(tmp_path)
    # step 0 of each stage: the validation metrics it starts from
    assert [(h["stage"], h["step"]) for h in history] == [
        ("sft", 0), ("sft", 1), ("sft", 2), ("pretext", 0), ("pretext", 1), ("joint", 0),
        ("joint", 1), ("outcome", 0), ("outcome", 1), ("readout", 0), ("readout", 1)
    ]  # fmt: skip
    assert "val/progress_mae" in history[-1] and "loss" in history[-1]  # score answers only
    assert "val/progress_mae" in history[7]
    history = [h for h in history if h["step"] > 0]
    assert (
        "reward/transform_reward" in history[2] and "reward/progress_accuracy_reward" in history[4]
    )
    assert "val/progress_mae" in history[4] and "val/transform_accuracy" in history[2]
    assert "reward/temporal_bonus" in history[2]  # T-GRPO on: a shuffled-frame generation too
    assert not any("weights_synced" in h for h in history)  # transformers: the policy itself
    assert all(h["samples_per_s"] > 0 and h["peak_rss_mb"] > 100 for h in history)
    assert all(h["rss_mb"] > 100 for h in history)  # memory now, beside the peak (Linux)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    from critic.factory import make_critic

    critic = make_critic(str(tmp_path / "readout" / "final"))
    assert critic.name.startswith("vlm:")
    assert critic.clip_frames == 2  # frames=2 travels with the checkpoint: the reward sends 2


def test_a_qwen3_vl_critic_trains_through_every_stage(dataset, tmp_path):
    """The same pipeline on Qwen3-VL's architecture (16-px patches, timestamped video segments,
    deepstack features), and the result reads progress as a critic."""
    done = run_train(
        tmp_path,
        f"data=[{dataset}]",
        "model=tiny-qwen3vl",
        "pipeline=[sft,pretext,joint,outcome,readout]",
        "stages.sft.steps=2",
        "stages.pretext.steps=1",
        "stages.joint.steps=1",
        "stages.outcome.steps=1",
        "stages.readout.steps=1",
        "stages.pretext.batch_size=8",
        "stages.joint.batch_size=8",
        "stages.outcome.batch_size=8",
        "stages.readout.batch_size=2",
        "eval_every=0",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    history = [h for h in read_history(tmp_path) if h["step"] > 0]
    assert [h["stage"] for h in history] == ["sft", "sft", "pretext", "joint", "outcome", "readout"]
    # a loss wherever one was computed: every SFT step, and each GRPO step that kept a group
    # (one that kept none logs none)
    learned = [h for h in history if h.get("groups_used", 1) > 0]
    assert learned and all(math.isfinite(h["loss"]) for h in learned)
    assert all(h["loss"] is None for h in history if h.get("groups_used", 1) == 0)
    from critic import ProgressQuery
    from critic.factory import make_critic
    from critic.models import build_preset

    critic = make_critic(str(tmp_path / "readout" / "final"))
    assert critic._model.config.model_type == "qwen3_vl" and critic.vision.segmented
    initial = build_preset("tiny-qwen3vl")[0].state_dict()  # the weights it started from
    trained = critic._model.state_dict()
    assert any(not np.array_equal(trained[k].numpy(), initial[k].numpy()) for k in initial)
    frames = np.zeros((2, 28, 28, 3), dtype=np.uint8)
    estimate = critic.estimate_progress([ProgressQuery("reach the target", frames=frames)])[0]
    assert 0.0 <= estimate.progress <= 1.0


def test_resume_repeats_the_uninterrupted_losses(dataset, tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    args = [f"data=[{dataset}]", "pipeline=[sft]", "stages.sft.steps=4", "stages.sft.batch_size=2",
            "checkpoint_every=2", "eval_every=0", "stages.sft.schedule=cosine",
            "stages.sft.warmup=1"]  # fmt: skip
    assert run_train(full, *args).returncode == 0
    checkpoint = full / "sft" / "checkpoint-2"
    # its samples held as plain arrays (packed in the first run): the same run, the same numbers
    done = run_train(resumed, *args, f"resume={checkpoint}", "pack_samples=false")
    assert done.returncode == 0, done.stderr[-3000:]
    start, *history = read_history(full)
    # eval_every=0 wrote no step-0 line, though it records the stage's samples and shares
    assert start["step"] == 0 and start["train_samples"] > 0 and "data_share/" in str(start)
    losses = [h["loss"] for h in history]
    again = [h["loss"] for h in read_history(resumed)]
    assert [h["step"] for h in read_history(resumed)] == [3, 4]
    assert again == losses[2:]  # exactly the same steps 3 and 4
    # lr 1e-3, 1 warm-up step, then cosine over 3: 1e-3, 1e-3, 0.75e-3, 0.25e-3 (resumed too)
    assert [h["lr"] for h in history] == pytest.approx([1e-3, 1e-3, 0.75e-3, 0.25e-3])
    assert [h["lr"] for h in read_history(resumed)] == pytest.approx([0.75e-3, 0.25e-3])
    # a resume with another option went on with it; steps below the checkpoint's wrote a final
    # whose state said step 1 with two steps' weights
    for overrides, message in [
        (["stages.sft.batch_size=4"], f"resume={str(checkpoint)!r} continues a run trained with "
         "other options (stages.sft.batch_size=2 there, 4 here); resume with the run's options "
         "(they are in its .hydra/config.yaml and in trainer_config.json), or start a new run from "
         f"its weights with model={checkpoint}"),
        (["stages.sft.steps=3", f"resume={full / 'sft' / 'final'}"], "stages.sft.steps=3 is below "
         f"the step of resume={str(full / 'sft' / 'final')!r} (4): give stages.sft.steps=4 or more "
         "(the run it continues had 4)"),
        # the cosine's rate is a function of the stage's length: 6 steps would resume on rates
        # of neither run
        (["stages.sft.steps=6"], "stages.sft.steps=6 differs from the 4 of the run that "
         f"resume={str(checkpoint)!r} continues, and stages.sft.schedule=cosine decays over the "
         "stage's steps: give stages.sft.steps=4, or start a new run from its weights with "
         f"model={checkpoint} (a constant schedule may change its steps)"),
    ]:  # fmt: skip
        with pytest.raises(Exception) as err:
            check_overrides(*TINY, *args, f"resume={checkpoint}", *overrides)
        assert type(err.value).__name__ == "TrainConfigError"
        assert str(err.value) == message
    # where it may differ: the stages around it and how often it saves (and, with a constant
    # schedule, its steps)
    check_overrides(*TINY, *args, f"resume={checkpoint}", "pipeline=[sft,readout]", "checkpoint_every=1",
                    "stages.readout.lr=1")  # fmt: skip
    # the same data folder spelled another way is the same run (paths are compared resolved)
    respelled = [f"data=[{dataset}/.]" if a.startswith("data=") else a for a in args]
    check_overrides(*TINY, *respelled, f"resume={checkpoint}")
    # resumed in its own run dir, it continues the run there (another run's dir is refused)
    done = run_train(full, *args, f"resume={checkpoint}")
    assert done.returncode == 0, done.stderr[-3000:]
    # steps 3 and 4 are in its history once, as trained again: they were there twice
    assert [(h["step"], h.get("loss")) for h in read_history(full)] == [
        (0, None), *((h["step"], h["loss"]) for h in history)]  # fmt: skip
    done = run_train(resumed, *args, f"resume={checkpoint}")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().endswith(
        f"train_critic: RunDirError: {resumed} already holds history.jsonl, tensorboard, sft from "
        "an earlier run; give a new hydra.run.dir=, or overwrite=true to replace them"
    )


def test_a_folder_that_is_not_a_checkpoint_is_named_as_such(dataset, tmp_path, monkeypatch):
    empty = tmp_path / "probe"
    empty.mkdir()
    with pytest.raises(Exception) as err:
        check_overrides(f"data=[{dataset}]", f"teacher={empty}")
    assert type(err.value).__name__ == "TrainConfigError"
    assert str(err.value) == (
        f"teacher={str(empty)!r} is a folder but not a checkpoint: it has no config.json; give the "
        "folder a run wrote (<run dir>/<stage>/final) or a shipped critic (['viscritic-small'])"
    )
    # a folder of the shipped critic's name is read as the folder, as make_critic reads it: the
    # check passed it as the shipped critic, and the run failed once it started
    named = tmp_path / "here" / "viscritic-small"
    named.mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "here")
    with pytest.raises(Exception, match=r"^teacher='viscritic-small' is a folder but not a "):
        check_overrides(f"data=[{dataset}]", "teacher=viscritic-small")
    monkeypatch.chdir(tmp_path)
    # resume= of an empty folder: not taken for a checkpoint of a stage named after the folder
    done = run_train(tmp_path / "run", f"data=[{dataset}]", f"resume={empty}")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr == (
        f"train_critic: resume={str(empty)!r} is not a training checkpoint: it has no "
        "trainer_state.pt; resume from a <run dir>/<stage>/checkpoint-<step> folder a run wrote "
        "(to start afresh from a folder's weights, use model=<folder>)\n"
    )


def test_a_teacher_that_does_not_load_is_refused_before_anything_trains(
    dataset, tmp_path, tiny_model
):
    # it failed as the stage it labels for began: after the stages before it had trained (an
    # hour of SFT in the shipped recipe), with no word of how to keep them
    from critic.models import save_model

    broken = tmp_path / "teacher"  # a config.json, but not a model's
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    args = ("pipeline=[sft,readout]", "stages.sft.kinds=[sft]", "stages.sft.steps=1",
            "stages.sft.batch_size=2", "stages.readout.steps=1", "stages.readout.batch_size=2",
            "eval_every=0")  # fmt: skip
    done = run_train(tmp_path / "run", f"data=[{dataset}]", f"teacher={broken}", *args)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr == (
        f"train_critic: teacher={broken}: {broken}/config.json names no model_type, so it is no "
        "model's config; VisCritic critics are Qwen2.5-VL or Qwen3-VL checkpoints (model_type "
        "'qwen2_5_vl', 'qwen3_vl' or 'qwen3_vl_moe'): copy the checkpoint's own config.json\n"
    )
    assert not (tmp_path / "run" / "sft").exists()
    # weights cut short (a copy that stopped): named with the fix, before the SFT stage trains
    save_model(*tiny_model, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    done = run_train(tmp_path / "run2", f"data=[{dataset}]", f"teacher={broken}", *args)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"train_critic: teacher={broken}: {weights} is damaged or not")
    assert done.stderr.endswith("copy it again, or `git lfs pull`\n")
    assert not (tmp_path / "run2" / "sft").exists()


def test_kl_stage_builds_its_reference_and_a_bad_model_is_a_message(dataset, tmp_path):
    done = run_train(
        tmp_path / "kl",
        f"data=[{dataset}]",
        "pipeline=[pretext]",
        "stages.pretext.steps=1",
        "stages.pretext.batch_size=8",
        "grpo.kl_coef=0.05",
        "eval_every=0",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "kl" in read_history(tmp_path / "kl")[1]
    bad = run_train(tmp_path / "bad", f"data=[{dataset}]", f"model={tmp_path / 'no-model'}")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith(f"train_critic: cannot load critic model {tmp_path / 'no-model'}")


def test_the_kl_reference_is_the_grpo_stages_start_and_a_resume_rebuilds_it(dataset, tmp_path):
    full, resumed, twice = tmp_path / "full", tmp_path / "resumed", tmp_path / "twice"
    data = [f"data=[{dataset}]", "stages.sft.steps=2", "stages.sft.batch_size=2",
            "stages.sft.lr=0.01", "stages.pretext.steps=3", "stages.pretext.batch_size=8",
            "grpo.kl_coef=0.1", "grpo.dynamic_sampling=false", "checkpoint_every=1",
            "eval_every=0"]  # fmt: skip
    done = run_train(full, *data, "pipeline=[sft,pretext]")
    assert done.returncode == 0, done.stderr[-3000:]
    history = [h for h in read_history(full) if h["step"] > 0]
    kl = [h["kl"] for h in history if h["stage"] == "pretext"]
    # the policy is its reference at the start (the pre-SFT model is 0.04-0.07 away); these
    # 4-token completions earn no reward, so the policy stays there and any other reference shows.
    # Every group is kept (dynamic sampling off): with it on none was, and no KL was computed
    assert all(
        h["groups_used"] == h["groups_total"] > 0 for h in history if h["stage"] == "pretext"
    )
    assert kl == pytest.approx([0.0] * 3, abs=1e-6)
    # resumed with a pipeline of the stage alone: the record, not pipeline=, names sft/final
    done = run_train(resumed, *data, "pipeline=[pretext]",
                     f"resume={full / 'pretext' / 'checkpoint-1'}")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    again = read_history(resumed)
    assert [h["step"] for h in again] == [2, 3]
    assert [h["kl"] for h in again] == kl[1:]  # the same reference, loaded from sft/final
    assert [h["loss"] for h in again] == [h["loss"] for h in history][-2:]
    # a resume of the resumed run (a new run dir) keeps it
    done = run_train(twice, *data, "pipeline=[pretext]",
                     f"resume={resumed / 'pretext' / 'checkpoint-2'}")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert [h["kl"] for h in read_history(twice)] == kl[2:]
    record = full / "pretext" / "kl_reference.json"
    good = record.read_text()
    record.write_text("{")
    done = run_train(tmp_path / "damaged", *data, "pipeline=[pretext]",
                     f"resume={full / 'pretext' / 'checkpoint-1'}")  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"resuming pretext: {record} is damaged (JSONDecodeError" in done.stderr
    record.write_text(good)
    import shutil

    shutil.rmtree(full / "sft" / "final")
    done = run_train(tmp_path / "gone", *data, "pipeline=[pretext]",
                     f"resume={full / 'pretext' / 'checkpoint-1'}")  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"needs the weights it started from, {full / 'sft' / 'final'}" in done.stderr


def test_a_damaged_episode_is_a_message_that_says_how_to_record_it_again(dataset, tmp_path):
    import shutil

    from critic.data.episodes import iter_rows
    from critic.data.samples import seed_split

    damaged = tmp_path / "data"
    shutil.copytree(dataset, damaged)
    # a train episode's (training decodes the episodes of its splits alone, chosen by their rows)
    train = next(i for i, row in iter_rows(damaged) if seed_split(row["seed"]) == "train")
    video = next((damaged / "videos").glob(f"{train}.*"))
    video.unlink()
    done = run_train(tmp_path / "run", f"data=[{damaged}]", "pipeline=[sft]", "stages.sft.steps=1")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"train_critic: {video}: no such video file. To record the episode again, delete " in (
        done.stderr
    )


def test_a_damaged_or_mismatched_optimizer_state_is_a_checkpoint_error(tmp_path):
    import torch

    from critic.train.checkpoint import STATE, CheckpointError, load_trainer_state, rng_states

    weights = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(weights.parameters())
    weights(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    (tmp_path / "ck").mkdir()  # what save_checkpoint writes beside the model
    torch.save({"step": 1, "optimizer": optimizer.state_dict(), "rng": rng_states(), "extra": {}},
               tmp_path / "ck" / STATE)  # fmt: skip
    assert load_trainer_state(tmp_path / "ck", optimizer)["step"] == 1
    other = torch.optim.AdamW([*weights.parameters(), torch.nn.Parameter(torch.ones(3))])
    with pytest.raises(CheckpointError, match="optimizer state does not fit this run's parameters"):
        load_trainer_state(tmp_path / "ck", other)
    state = tmp_path / "ck" / STATE
    torch.save(torch.ones(2), state)  # another program's file
    with pytest.raises(CheckpointError, match="is not a trainer state this project wrote"):
        load_trainer_state(tmp_path / "ck", optimizer)
    state.write_bytes(b"\x80\x04c__main__\nNoSuch\n)\x81.")  # a class this process lacks
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_trainer_state(tmp_path / "ck", optimizer)
    torch.save({"step": 1, "optimizer": optimizer.state_dict(), "rng": {"python": 1}, "extra": {}},
               state)  # fmt: skip
    with pytest.raises(CheckpointError, match="random generator states are not this project's"):
        load_trainer_state(tmp_path / "ck", optimizer)
    state.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\n")  # a pointer
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_trainer_state(tmp_path / "ck", optimizer)
    torch.save({"step": 1, "optimizer": optimizer.state_dict(), "rng": rng_states(), "extra": {}},
               state)  # fmt: skip
    state.write_bytes(state.read_bytes()[:100])  # a save cut short
    with pytest.raises(
        CheckpointError, match=r"cannot be read .*resume from an earlier checkpoint"
    ):
        load_trainer_state(tmp_path / "ck", optimizer)


def test_a_resume_whose_data_folder_changed_is_refused(dataset, tmp_path):
    # synthesize.py into the same out= adds episodes: a resume then drew other samples and its
    # losses left the uninterrupted run's, silently
    import shutil

    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    args = [f"data=[{data}]", "pipeline=[sft]", "stages.sft.steps=2", "stages.sft.batch_size=2",
            "checkpoint_every=1", "eval_every=0"]  # fmt: skip
    assert run_train(tmp_path / "run", *args).returncode == 0
    checkpoint = tmp_path / "run" / "sft" / "checkpoint-1"
    check_overrides(*TINY, *args, f"resume={checkpoint}")  # the same folder, as it was: taken
    removed = sorted((data / "episodes").glob("*.parquet"))[0]
    removed.unlink()
    with pytest.raises(Exception) as err:
        check_overrides(*TINY, *args, f"resume={checkpoint}")
    assert type(err.value).__name__ == "TrainConfigError"
    count = len(list((data / "episodes").glob("*.parquet")))
    assert f"data_episodes.{data}='{count + 1} episodes (ids " in str(err.value)
    assert f"there, '{count} episodes (ids " in str(err.value)
