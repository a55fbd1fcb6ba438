"""experiments/train_critic.py end to end on a tiny model and a tiny synthesised Reacher dataset:
the four stages, exact resume, and typed config errors before any model loads. The data options
are in test_train_critic_data.py; the DeepSpeed and vLLM back ends in
test_train_critic_backends.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.experiments.train_critic_cli import (
    TINY,
    check_overrides,
    load_recipe,
    read_history,
    run_train,
)


def test_four_stage_pipeline(dataset, tmp_path):
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
    assert all(math.isfinite(h["loss"]) for h in history)
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
    done = run_train(resumed, *args, f"resume={checkpoint}")
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
    ]:  # fmt: skip
        with pytest.raises(Exception) as err:
            check_overrides(*TINY, *args, f"resume={checkpoint}", *overrides)
        assert type(err.value).__name__ == "TrainConfigError"
        assert str(err.value) == message
    # where it may differ: the stages around it, how often it saves, and more steps
    check_overrides(*TINY, *args, f"resume={checkpoint}", "pipeline=[sft,readout]", "checkpoint_every=1",
                    "stages.sft.steps=6", "stages.readout.lr=1")  # fmt: skip
    # the same data folder spelled another way is the same run (paths are compared resolved)
    respelled = [f"data=[{dataset}/.]" if a.startswith("data=") else a for a in args]
    check_overrides(*TINY, *respelled, f"resume={checkpoint}")
    # resumed in its own run dir, it continues the run there (another run's dir is refused)
    done = run_train(full, *args, f"resume={checkpoint}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert [h["step"] for h in read_history(full)] == [0, 1, 2, 3, 4, 3, 4]
    done = run_train(resumed, *args, f"resume={checkpoint}")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().endswith(
        f"train_critic: RunDirError: {resumed} already holds history.jsonl, tensorboard, sft from "
        "an earlier run; give a new hydra.run.dir=, or overwrite=true to replace them"
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["grpo.group_size=1"], "grpo: group_size=1 must be an integer >= 2 (GRPO compares completions)"),
        (["stages.pretext.batch_size=10"], "stages.pretext.batch_size=10 completions is not divisible by "
         "grpo.group_size=4; use a multiple of it"),
        (["pipeline=[sft,distill]"], "pipeline=['sft', 'distill'] has unknown stages ['distill']; stages "
         "are ['sft', 'pretext', 'joint', 'outcome', 'readout']"),
        (["stages.outcome.reward_weights=[1.0,1.0]"], "stages.outcome: weights has 2 values for 3 reward "
         "functions; give one weight per function"),
        (["frozen_count=-1"], "frozen_count=-1 must be an integer >= 0 (samples per episode: "
         "critic/data/samples.py)"),
        (["cuts=0"], "cuts=0 must be an integer >= 1 (samples per episode: critic/data/samples.py)"),
        (["frames=0"], "frames=0 must be an integer >= 1 (frames per clip: critic/data/samples.py)"),
        # lr and batch_size reached torch (TypeError, ValueError) or trained on 1 sample per step
        (["stages.sft.lr=abc"], "stages.sft.lr='abc' must be a finite number > 0, e.g. stages.sft.lr=1.0e-4"),
        (["stages.sft.lr=-1"], "stages.sft.lr=-1 must be a finite number > 0, e.g. stages.sft.lr=1.0e-4"),
        (["stages.sft.lr=inf"], "stages.sft.lr=inf must be a finite number > 0, e.g. stages.sft.lr=1.0e-4"),
        (["stages.pretext.batch_size=abc"], "stages.pretext.batch_size='abc' must be an integer >= 1 "
         "(samples per step, or completions per step in a GRPO stage)"),
        (["stages.sft.batch_size=0"], "stages.sft.batch_size=0 must be an integer >= 1 (samples per "
         "step, or completions per step in a GRPO stage)"),
        (["pipeline=[]"], "pipeline is empty; give the stages to run, e.g. pipeline=[sft] (stages are "
         "['sft', 'pretext', 'joint', 'outcome', 'readout'])"),
        (["data=[/nonexistent/data,[1]]"], "data: [[1]] are not folders; give dataset folders, e.g. "
         "data=[data/Reacher-v5] or data=[data/Reacher-v5,data/Lift]"),
        (["data=[/nonexistent/data]"], "data=['/nonexistent/data']: no episodes in ['/nonexistent/data']; "
         "make them with `python experiments/synthesize.py env=<task> out=<folder>`"),
    ],
)  # fmt: skip
def test_bad_configs_fail_before_any_model_loads(dataset, overrides, message):
    with pytest.raises(Exception) as err:
        check_overrides(f"data=[{dataset}]", *overrides)
    assert type(err.value).__name__ == "TrainConfigError"
    assert str(err.value) == message


def test_a_bare_stage_or_folder_is_a_list_of_one(dataset):
    # they were split into characters: "unknown stages ['s', 'f', 't']", "no episodes in ['/', ...]"
    module, cfg = load_recipe(f"data={dataset}", "pipeline=sft")
    assert list(module.check_config(cfg)) == ["sft"]
    # the recipe reads the lists from cfg
    assert list(cfg.pipeline) == ["sft"] and list(cfg.data) == [str(dataset)]
    with pytest.raises(Exception) as err:
        check_overrides("data=/nonexistent/data")
    assert str(err.value).startswith(
        "data=['/nonexistent/data']: no episodes in ['/nonexistent/data']; make them with"
    )
    plans, _ = check_overrides(f"data={dataset}", "pipeline=readout", "stages.readout.kinds=score")
    assert plans["readout"]["kinds"] == ("score",)
    plans, _ = check_overrides(f"data={dataset}", "pipeline=pretext",
                               "stages.pretext.rewards=transform", "stages.pretext.reward_weights=1")  # fmt: skip
    assert plans["pretext"]["reward_names"] == ["transform"]
    # null weights are combine_rewards' "1 each", not an empty list of them
    plans, _ = check_overrides(f"data={dataset}", "pipeline=outcome",
                               "stages.outcome.reward_weights=null")  # fmt: skip
    assert "reward" in plans["outcome"]


def test_the_readout_trains_digit_answers_unless_told_to_add_the_verdict(dataset):
    plans, _ = check_overrides(f"data=[{dataset}]", "pipeline=[readout]")
    assert plans["readout"]["kinds"] == ("score", "frozen")
    plans, _ = check_overrides(
        f"data=[{dataset}]", "pipeline=[readout]", "stages.readout.kinds=[score,frozen,failure]"
    )
    assert plans["readout"]["kinds"] == ("score", "frozen", "failure")
    with pytest.raises(Exception) as err:
        check_overrides(f"data=[{dataset}]", "pipeline=[readout]", "stages.readout.kinds=[pretext]")
    assert str(err.value) == (
        "stages.readout.kinds has ['pretext'], which stage 'readout' cannot train on; pick from "
        "['score', 'frozen', 'failure']"
    )


def test_anneal_recipe_needs_its_starting_weights(dataset):
    module, cfg = load_recipe(f"data=[{dataset}]", config="viscritic_small_anneal")
    with pytest.raises(module.TrainConfigError, match="model=null: give the weights to start from"):
        module.check_config(cfg)
    module, cfg = load_recipe(f"data=[{dataset}]", "model=tiny", config="viscritic_small_anneal")
    plans = module.check_config(cfg)
    assert list(plans) == ["readout"]
    settings = plans["readout"]["settings"]
    assert (settings.steps, settings.schedule, settings.warmup) == (600, "cosine", 30)
    # the last stage inherits the annealed readout and its need for starting weights
    module, cfg = load_recipe(f"data=[{dataset}]", config="viscritic_small_reacher56")
    with pytest.raises(module.TrainConfigError, match="model=null: give the weights to start from"):
        module.check_config(cfg)
    module, cfg = load_recipe(f"data=[{dataset}]", "model=tiny", config="viscritic_small_reacher56")
    plan = module.check_config(cfg)["readout"]
    settings = plan["settings"]
    assert (settings.steps, settings.schedule, settings.warmup, settings.lr) == (
        800,
        "cosine",
        30,
        2e-4,
    )
    assert plan["kinds"] == ("score",)  # the shipped stages before frozen samples existed
    # the stage after it adds frozen samples; a plain readout stage trains on both by default
    module, cfg = load_recipe(f"data=[{dataset}]", "model=tiny", config="viscritic_small_frozen")
    plan = module.check_config(cfg)["readout"]
    assert plan["kinds"] == ("score", "frozen") and cfg.frozen_count == 4
    assert (plan["settings"].steps, plan["settings"].lr, plan["settings"].schedule) == (
        600,
        1e-4,
        "cosine",
    )
    # the measured, unshipped flail stage: the same kinds, 500 steps from the shipped weights
    module, cfg = load_recipe(f"data=[{dataset}]", "model=tiny", config="viscritic_small_flail")
    plan = module.check_config(cfg)["readout"]
    assert plan["kinds"] == ("score", "frozen") and plan["settings"].steps == 500
    # the learned-reward loop's round: the same stage, policy rollouts in the data
    module, cfg = load_recipe(f"data=[{dataset}]", "model=tiny", config="viscritic_small_policy")
    plan = module.check_config(cfg)["readout"]
    assert plan["kinds"] == ("score", "frozen") and plan["settings"].steps == 500
    assert plan["settings"].lr == 1.0e-4 and list(cfg.pipeline) == ["readout"]
    module, cfg = load_recipe(f"data=[{dataset}]", "pipeline=[readout]")
    assert module.check_config(cfg)["readout"]["kinds"] == ("score", "frozen")


def test_bad_config_is_a_message_from_the_script(tmp_path):
    done = run_train(tmp_path, "grpo.group_size=1", "data=[/nonexistent]")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("train_critic: grpo: group_size=1 must be")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["dtype=bf16"], "dtype='bf16' is not supported; pick one of ['float32', 'bfloat16']"),
        (["deepspeed_config=configs/deepspeed/zero9.json"], "deepspeed_config='configs/deepspeed/zero9.json' "
         "is not a file; use configs/deepspeed/zero2.json or zero3.json, or your own DeepSpeed JSON"),
        (["grpo.loss=reg", "grpo.kl_coef=0.1"], "grpo: kl_coef=0.1 has no effect with loss='reg' (Reg-GRPO "
         "has no KL term); set kl_coef=0 or use loss='clip'"),
        (["rollout_engine=sglang"], "rollout_engine='sglang' is not an engine; pick one of ['hf', 'vllm']"),
        (["rollout_engine=vllm"], "rollout_engine=vllm runs on GPUs, and device='cpu'; use device=cuda, or "
         "rollout_engine=hf (transformers) on CPU"),
        (["rollout_engine=vllm", "model=tiny-qwen3vl"], "model=tiny-qwen3vl: the vLLM engine does not "
         "run 'qwen3_vl' models yet (their timestamped video prompts are not handed to vLLM); use "
         "rollout_engine=hf (transformers) for a Qwen3-VL critic"),
        (["stages.sft.schedule=step"], "stages.sft: schedule='step' is not one of ['constant', 'linear', "
         "'cosine']"),
        (["stages.sft.warmup=300"], "stages.sft: warmup=300 must be in [0, steps=300)"),
        # -1 would save a checkpoint at every step ((step + 1) % -1 == 0)
        (["checkpoint_every=-1"], "checkpoint_every=-1 must be an integer >= 0: steps between "
         "checkpoints (0: only the final one)"),
        (["eval_every=-1"], "eval_every=-1 must be an integer >= 0: steps between validations (0: none)"),
        (["eval_max_new_tokens=0"], "eval_max_new_tokens=0 must be an integer >= 1: the generation "
         "budget of a validation answer"),
        (["device=gpu"], "device='gpu' is not a device; use cpu, cuda or cuda:<index>"),
        (["device=cuda:x"], "device='cuda:x' is not a device; use cpu, cuda or cuda:<index>"),
        (["transforms=[none,none,hflip]"], "transforms=['none', 'none', 'hflip'] lists ['none'] "
         "more than once (each would be drawn that many times as often); list each transform once"),
        (["held_out_tasks=[Nope-v0]"], "held_out_tasks names ['Nope-v0'], which no episode of "
         "data= is of (it would hold nothing out); the data's tasks are ['Reacher-v5']"),
        (["held_out_tasks=Reacher"], "held_out_tasks names ['Reacher'], which no episode of "
         "data= is of (it would hold nothing out); the data's tasks are ['Reacher-v5']"),
        (["stages.pretext.rewards=[progress]", "stages.pretext.reward_weights=[1.0]"],
         "stages.pretext.rewards has ['progress'], which score none of the stage's sample kinds "
         "['pretext'] (they add nothing to its reward); progress scores ['frozen', 'joint', "
         "'progress', 'score', 'sft']"),
        (["transforms=[none,none]"], "transforms=['none', 'none'] must name two or more different "
         "ones of ['none', 'rotate_90', 'rotate_180', 'rotate_270', 'hflip', 'reverse', 'shuffle', "
         "'speed_2x'] (the pretext question asks which was applied)"),
        (["transforms=[]"], "transforms=[] must name two or more different ones of ['none', 'rotate_90', "
         "'rotate_180', 'rotate_270', 'hflip', 'reverse', 'shuffle', 'speed_2x'] (the pretext "
         "question asks which was applied)"),
        (["transforms=[none,flip]"], "transforms=['none', 'flip'] must name two or more different ones of ['none', "
         "'rotate_90', 'rotate_180', 'rotate_270', 'hflip', 'reverse', 'shuffle', 'speed_2x'] (the "
         "pretext question asks which was applied); ['flip'] are not transforms"),
    ],
)  # fmt: skip
def test_more_bad_configs(dataset, overrides, message):
    with pytest.raises(Exception) as err:
        check_overrides(f"data=[{dataset}]", *overrides)
    assert str(err.value) == message


def test_one_folder_listed_twice_is_refused_not_counted_twice(dataset):
    with pytest.raises(Exception) as err:
        check_overrides(f"data=[{dataset},{dataset}/]")
    assert str(err.value) == (
        f"data: ['{dataset}', '{dataset}/'] name the same folder more than once; its episodes "
        "would count twice. List each folder once"
    )


def test_a_cuda_device_this_machine_lacks_fails_before_any_model_loads(dataset, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a CPU-only build
    with pytest.raises(Exception) as err:
        check_overrides(f"data=[{dataset}]", "device=cuda")
    assert type(err.value).__name__ == "TrainConfigError"
    assert str(err.value) == (
        f"device='cuda', but this torch ({torch.__version__}) sees no CUDA GPU; use device=cpu, "
        "or install a CUDA build of torch on a machine with a GPU"
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # one GPU, and cuda:3 asked
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(Exception) as err:
        check_overrides(f"data=[{dataset}]", "device=cuda:3")
    assert str(err.value) == (
        "device='cuda:3', but this machine has 1 CUDA GPU(s); use cuda:0 to cuda:0, or device=cpu"
    )


def test_device_cuda_without_cuda_is_a_message_from_the_script(dataset, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    done = run_train(tmp_path, f"data=[{dataset}]", "device=cuda")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("train_critic: device='cuda', but this torch (")
    assert "sees no CUDA GPU; use device=cpu, or install a CUDA build of torch" in done.stderr


def test_a_folder_that_is_not_a_checkpoint_is_named_as_such(dataset, tmp_path):
    empty = tmp_path / "probe"
    empty.mkdir()
    with pytest.raises(Exception) as err:
        check_overrides(f"data=[{dataset}]", f"teacher={empty}")
    assert type(err.value).__name__ == "TrainConfigError"
    assert str(err.value) == (
        f"teacher={str(empty)!r} is a folder but not a checkpoint: it has no config.json; give the "
        "folder a run wrote (<run dir>/<stage>/final) or a shipped critic (['viscritic-small'])"
    )
    # resume= of an empty folder: not taken for a checkpoint of a stage named after the folder
    done = run_train(tmp_path / "run", f"data=[{dataset}]", f"resume={empty}")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr == (
        f"train_critic: resume={str(empty)!r} is not a training checkpoint: it has no "
        "trainer_state.pt; resume from a <run dir>/<stage>/checkpoint-<step> folder a run wrote "
        "(to start afresh from a folder's weights, use model=<folder>)\n"
    )


def test_a_teacher_that_does_not_load_is_a_message(dataset, tmp_path):
    broken = tmp_path / "teacher"  # a config.json, but not a model's: it fails as the stage starts
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    done = run_train(tmp_path / "run", f"data=[{dataset}]", f"teacher={broken}", "pipeline=[sft]",
                     "stages.sft.steps=1", "stages.sft.batch_size=2", "eval_every=0")  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"train_critic: cannot load critic model {broken}: ")
    assert "Pass a local Qwen2.5-VL or Qwen3-VL checkpoint directory" in done.stderr


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
            "grpo.kl_coef=0.1", "checkpoint_every=1", "eval_every=0"]  # fmt: skip
    done = run_train(full, *data, "pipeline=[sft,pretext]")
    assert done.returncode == 0, done.stderr[-3000:]
    history = [h for h in read_history(full) if h["step"] > 0]
    kl = [h["kl"] for h in history if h["stage"] == "pretext"]
    # the policy is its reference at the start (the pre-SFT model would be ~0.1 away); these
    # 4-token completions earn no reward, so the policy stays there and any other reference shows
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

    damaged = tmp_path / "data"
    shutil.copytree(dataset, damaged)
    video = sorted((damaged / "videos").iterdir())[0]
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


def test_no_training_samples_says_how_episodes_are_split(dataset, tmp_path):
    done = run_train(tmp_path, f"data=[{dataset}]", "held_out_tasks=[Reacher-v5]", "pipeline=[sft]")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "train_critic: stage sft: no training samples of kinds" in done.stderr
    assert "episodes are split by seed, about 80 % train" in done.stderr


STAGE_KINDS = "['sft', 'score', 'failure', 'pretext', 'joint']"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # trained every weight to NaN and printed the final as a usable critic
        (["dtype=float16"], "dtype=float16 cannot train here: the recipe has no loss scaling, so its "
         "gradients overflow and every weight turns NaN; use dtype=bfloat16 (GPUs since Ampere) or "
         "dtype=float32"),
        # -1 trained the wrong way, 0 zeroed the gradients, abc failed after the model loaded
        *[([f"max_grad_norm={v}"], f"max_grad_norm={shown} must be a finite number > 0 (each step's "
           "gradient norm is clipped to it), or null (no clipping)")
          for v, shown in (("-1", "-1"), ("0", "0"), ("abc", "'abc'"), ("inf", "inf"))],
        # the second pass wrote over the first, and a resume ran an extra one
        (["pipeline=[sft,sft]"], "pipeline=['sft', 'sft'] lists ['sft'] more than once (a stage "
         "writes <run dir>/<stage>/, so the second pass would write over the first); list each stage "
         "once, and train further in a new run from its weights (model=<run dir>/<stage>/final)"),
        # "off" counted as true
        (["freeze_vision=off"], "freeze_vision='off' must be true or false"),
        (["gradient_checkpointing=no"], "gradient_checkpointing='no' must be true or false"),
        (["progress_bar=off"], "progress_bar='off' must be true or false"),
        (["stages.sft.shuffle_labels=off"], "stages.sft.shuffle_labels='off' must be true or false"),
        # tracebacks
        *[([f"seed={v}"], f"seed={shown} must be an integer in [0, 2**31), e.g. seed=0")
          for v, shown in (("abc", "'abc'"), ("-1", "-1"), ("1.5", "1.5"), ("null", "None"))],
        (["stages.sft.warmup=abc"], "stages.sft: warmup='abc' must be an integer in [0, steps=300)"),
        (["stages.sft.warmup=null"], "stages.sft: warmup=None must be an integer in [0, steps=300)"),
        (["grpo=null", "pipeline=[pretext]"], "grpo=None must be a mapping of the GRPO settings "
         "(group_size, max_new_tokens, ...) for stage 'pretext', as in configs/train_critic.yaml"),
        (["stages=null"], "stages=None must be a mapping of each stage's settings (steps, batch_size, "
         "lr, ...), as in configs/train_critic.yaml"),
        (["resume=1"], "resume=1 must be a path, e.g. resume=outputs/train_critic/<run>/sft/checkpoint-50"),
        (["deepspeed_config=1"], "deepspeed_config=1 must be a path, e.g. "
         "deepspeed_config=configs/deepspeed/zero2.json"),
        # names not in the data did nothing (and the checkpoint recorded a task that does not exist)
        (["teacher=viscritic-small", "teacher_tasks=[Reacher]"], "teacher_tasks names ['Reacher'], "
         "which no episode of data= is of (the teacher would label nothing of it); the data's tasks "
         "are ['Reacher-v5']"),
        (["task_frames={Reacher: 1}"], "task_frames names ['Reacher'], which no episode of data= is "
         "of (it would change nothing, and the checkpoint would record it); the data's tasks are "
         "['Reacher-v5']"),
        (["teacher=viscritic-small", "pipeline=[pretext,outcome]"], "teacher=viscritic-small labels "
         "score and frozen samples, and no stage of pipeline=['pretext', 'outcome'] trains on them "
         "with a supervised loss (sft, readout); add one, or drop teacher="),
        # found only after the model loaded (and earlier stages trained), blaming the seed split
        (["pretext_count=0", "pipeline=[sft,joint]"], "stage 'joint' trains on ['joint'] samples, and "
         "pretext_count=0 makes none of them; set pretext_count= to 1 or more, or give the stage "
         "other kinds (stages.joint.kinds=)"),
        (["stages.sft.kinds=[]"], f"stages.sft.kinds=[] trains on nothing; name some of {STAGE_KINDS}, "
         f"or kinds=null for {STAGE_KINDS}"),
        (["frozen_count=0", "pipeline=[readout]", "stages.readout.kinds=[frozen]"], "stage 'readout' "
         "trains on ['frozen'] samples, and frozen_count=0 makes none of them; set frozen_count= to 1 "
         "or more, or give the stage other kinds (stages.readout.kinds=)"),
    ],
)  # fmt: skip
def test_options_that_trained_wrongly_or_crashed_are_refused_first(dataset, overrides, message):
    with pytest.raises(Exception) as err:
        check_overrides(f"data=[{dataset}]", *overrides)
    assert type(err.value).__name__ == "TrainConfigError"
    assert str(err.value) == message


def test_deepspeed_needs_torchrun_an_even_share_and_one_clipping(dataset, monkeypatch):
    ds = "deepspeed_config=configs/deepspeed/zero2.json"
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(Exception) as err:  # mpi4py's ModuleNotFoundError, after the checks
        check_overrides(f"data=[{dataset}]", ds)
    assert str(err.value) == (
        "deepspeed_config=configs/deepspeed/zero2.json runs one process per GPU, started by "
        "torchrun (RANK and WORLD_SIZE are not set); launch it with `torchrun --nproc_per_node "
        "<processes> experiments/train_critic.py ...`, or drop deepspeed_config= to train in this "
        "one process"
    )
    monkeypatch.setenv("RANK", "0")  # as torchrun --nproc_per_node 2 sets them
    monkeypatch.setenv("WORLD_SIZE", "2")
    check_overrides(f"data=[{dataset}]", ds, "stages.sft.batch_size=4")  # an even share: taken
    # batches were silently cut to 1 per process (3 // 2), and GRPO groups to 1 prompt of 4
    for overrides, message in [
        (["stages.sft.batch_size=3"], "stages.sft.batch_size=3 cannot be shared out evenly over "
         "WORLD_SIZE=2 processes; use a multiple of 2"),
        (["stages.pretext.batch_size=12"], "stages.pretext.batch_size=12 cannot be shared out evenly "
         "over WORLD_SIZE=2 processes in whole groups of grpo.group_size=4; use a multiple of 8"),
        # the JSON's gradient_clipping was used and max_grad_norm ignored
        (["max_grad_norm=0.5"], "deepspeed_config=configs/deepspeed/zero2.json has "
         "gradient_clipping=1.0 and max_grad_norm=0.5; make them agree: max_grad_norm=1.0, or "
         '"gradient_clipping": "auto" in the JSON (the recipe fills it from max_grad_norm)'),
        (["max_grad_norm=null"], "deepspeed_config=configs/deepspeed/zero2.json has "
         "gradient_clipping=1.0 and max_grad_norm=null (no clipping); make them agree: "
         'max_grad_norm=1.0, or "gradient_clipping": "auto" in the JSON (the recipe fills it from '
         "max_grad_norm)"),
    ]:  # fmt: skip
        with pytest.raises(Exception) as err:
            check_overrides(f"data=[{dataset}]", ds, "stages.sft.batch_size=4", *overrides)
        assert type(err.value).__name__ == "TrainConfigError"
        assert str(err.value) == message


def test_max_grad_norm_reaches_deepspeed_where_the_json_leaves_it(tmp_path):
    import json

    from critic.train.recipe import _deepspeed_config

    config = {"optimizer": {"params": {"lr": "auto"}}, "gradient_clipping": "auto"}
    (tmp_path / "auto.json").write_text(json.dumps(config))
    assert (
        _deepspeed_config(str(tmp_path / "auto.json"), 1e-3, False, 2, 0.5)["gradient_clipping"]
        == 0.5
    )
    del config["gradient_clipping"]  # absent: DeepSpeed's default, no clipping, ignored it
    (tmp_path / "none.json").write_text(json.dumps(config))
    assert (
        _deepspeed_config(str(tmp_path / "none.json"), 1e-3, False, 2, 0.5)["gradient_clipping"]
        == 0.5
    )
    assert (
        _deepspeed_config(str(tmp_path / "none.json"), 1e-3, False, 2, None)["gradient_clipping"]
        == 0.0
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
        f"its weights with model={last} and a lower stages.sft.lr= (resume= would repeat the same "
        "steps)"
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
    assert line.startswith("train_critic: interrupted in stage sft at step ")
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


def test_a_save_cut_short_leaves_the_earlier_checkpoint_whole(tmp_path, tiny_model, monkeypatch):
    import copy

    import torch

    from critic.models import load_model
    from critic.train.checkpoint import STATE, latest_checkpoint, save_checkpoint

    model, tokenizer = tiny_model
    optimizer = torch.optim.AdamW(model.parameters())
    path = tmp_path / "sft" / "checkpoint-2"
    save_checkpoint(path, model, tokenizer, optimizer, 2)
    first = {k: v.clone() for k, v in load_model(path)[0].state_dict().items()}
    trained = copy.deepcopy(model)
    with torch.no_grad():
        next(trained.parameters()).add_(1.0)

    def cut_short(*args, **kwargs):  # Ctrl-C, or a full disk, as the state is written
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", cut_short)
    with pytest.raises(KeyboardInterrupt):  # a resumed run's save of the same folder
        save_checkpoint(path, trained, tokenizer, optimizer, 2)
    monkeypatch.undo()
    # before: the new weights lay beside the old trainer_state.pt, a complete-looking mix
    again = load_model(path)[0].state_dict()
    assert all(torch.equal(again[k], v) for k, v in first.items())
    assert latest_checkpoint(tmp_path / "sft") == path
    save_checkpoint(path, trained, tokenizer, optimizer, 2)  # the next save replaces it whole
    again = load_model(path)[0].state_dict()
    assert not all(torch.equal(again[k], v) for k, v in first.items())
    assert (path / STATE).is_file()
    assert sorted(p.name for p in (tmp_path / "sft").iterdir()) == ["checkpoint-2"]
