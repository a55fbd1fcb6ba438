"""experiments/train_critic.py's config checks: what it cannot run is a typed error before any
model loads (or, from the script, a one-line message and exit 1), with the value and the fix. The
runs themselves (stages, resume, checkpoints, interruption) are in test_train_critic.py."""

from __future__ import annotations

import sys

import pytest

from tests.experiments.train_critic_cli import check_overrides, load_recipe, run_train


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


@pytest.mark.parametrize(
    ("module", "overrides", "message"),
    [
        ("tensorboard", [], "train_critic.py's logs (tensorboard) needs the optional package "
         "'tensorboard'"),
        ("deepspeed", ["deepspeed_config=configs/deepspeed/zero2.json"], "deepspeed_config= needs "
         "the optional package 'deepspeed'"),
        ("transformers", [], "train_critic.py needs the optional package 'transformers'"),
    ],
)  # fmt: skip
def test_a_missing_extra_is_said_before_any_model_loads(dataset, monkeypatch, module, overrides,
                                                        message):  # fmt: skip
    # they were tracebacks: tensorboard's ImportError once the model had loaded, deepspeed's and
    # transformers' MissingExtraError inside hydra's
    monkeypatch.setitem(sys.modules, module, None)  # what an import finds where it is not installed
    with pytest.raises(Exception) as err:
        check_overrides(f"data=[{dataset}]", *overrides)
    assert type(err.value).__name__ == "TrainConfigError"
    assert str(err.value).startswith(message)
    assert str(err.value).endswith(
        f"Install it with: pip install 'viscritic[{'vlm' if module == 'transformers' else 'train'}]'"
    )


def test_episodes_recorded_twice_are_said(dataset, tmp_path, caplog):
    # a copied folder trained every episode twice (234 samples where one folder gives 117),
    # without a word
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    check_overrides(f"data=[{dataset},{copy}]")
    assert len(caplog.messages) == 1
    assert caplog.messages[0].startswith("data: 12 episode ids are in more than one folder (")
    assert caplog.messages[0].endswith(
        "another first_seed=); to weigh a folder, data_weights=[...]"
    )


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


@pytest.mark.parametrize("rank", [["--local_rank=1"], ["--local-rank", "0"]])
def test_the_rank_argument_a_launcher_appends_is_left_to_the_environment(tmp_path, rank):
    # `deepspeed --num_gpus 8 experiments/train_critic.py ...` (docs/training.md) passes
    # --local_rank=N before the overrides: hydra refused it, "unrecognized arguments", exit 2
    from train_critic import without_launcher_rank

    assert without_launcher_rank(["x.py", *rank, "a=1"]) == ["x.py", "a=1"]
    done = run_train(tmp_path, *rank, "grpo.group_size=1", "data=[/nonexistent]")
    assert done.returncode == 1 and done.stderr.startswith(
        "train_critic: grpo: group_size=1 must be"
    )


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
        (["keep_checkpoints=0"], "keep_checkpoints=0 must be null (keep every checkpoint) or an "
         "integer >= 1: how many of each stage's latest checkpoints to keep"),
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
        # found after the model had loaded, and blamed on too few seeds
        (["held_out_tasks=[Reacher-v5]"], "held_out_tasks=['Reacher-v5'] holds out every task of "
         "data= (['Reacher-v5']): nothing is left to train on; hold out fewer, or add folders of "
         "other tasks to data="),
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


def test_one_folder_listed_twice_is_refused_not_counted_twice(dataset, tmp_path):
    with pytest.raises(Exception) as err:
        check_overrides(f"data=[{dataset},{dataset}/]")
    assert str(err.value) == (
        f"data: ['{dataset}', '{dataset}/'] name the same folder more than once; its episodes "
        "would count twice. List each folder once"
    )
    link = tmp_path / "link"  # a link to it was taken as another folder: every episode twice
    link.symlink_to(dataset)
    with pytest.raises(Exception) as err:
        check_overrides(f"data=[{dataset},{link}]")
    assert str(err.value).startswith(f"data: ['{dataset}', '{link}'] name the same folder")


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


def test_no_training_samples_says_how_episodes_are_split(tmp_path):
    from envs.plans import plan_episodes
    from envs.synth import synthesize

    test_only = tmp_path / "test_only"  # seed 5 is a test seed: no episode to train on
    synthesize(plan_episodes("Reacher-v5", 1, 0.0, first_seed=5), test_only, progress_bar=False,
               every=10, image_size=28)  # fmt: skip
    done = run_train(tmp_path / "run", f"data=[{test_only}]", "pipeline=[sft]")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "train_critic: stage sft: no training samples of kinds" in done.stderr
    assert "episodes are split by seed, about 80 % train" in done.stderr


def test_validation_that_would_read_nothing_is_said(tmp_path):
    # seeds 1 and 2 are both train: eval_every=1 validated nothing, and the history simply had
    # no val/ keys
    from envs.plans import plan_episodes
    from envs.synth import synthesize

    no_val = tmp_path / "no_val"
    synthesize(plan_episodes("Reacher-v5", 2, 0.0, first_seed=1), no_val, progress_bar=False,
               every=10, image_size=28)  # fmt: skip
    done = run_train(tmp_path / "run", f"data=[{no_val}]", "pipeline=[sft]", "stages.sft.steps=1",
                     "stages.sft.batch_size=2", "eval_every=1")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    said = done.stdout + done.stderr  # hydra logs to the console (stdout) and train_critic.log
    assert "[critic.train.recipe][WARNING] - stage sft: no validation samples of kinds " in said
    assert "so eval_every=1 validates nothing and the history has no val/ figures; record more " \
        "episodes, or give eval_every=0" in said  # fmt: skip


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


def test_deepspeed_needs_an_optimizer_and_the_processes_that_wrote_a_resume(dataset, tmp_path,
                                                                            monkeypatch):  # fmt: skip
    # both were raw errors from DeepSpeed after the model had loaded: an AssertionError ("zero
    # stage 2 requires an optimizer"), and a ZeRORuntimeException for fewer processes
    import json

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"zero_optimization": {"stage": 2}, "gradient_clipping": "auto"}))
    with pytest.raises(Exception, match=r"has no \"optimizer\" section; add one"):
        check_overrides(f"data=[{dataset}]", f"deepspeed_config={bare}", "stages.sft.batch_size=4")
    shards = tmp_path / "ck" / "deepspeed"
    shards.mkdir(parents=True)
    (tmp_path / "ck" / "trainer_state.pt").write_bytes(b"")  # the rest is read after the check
    for rank in range(3):
        (shards / f"rank{rank}.pt").write_bytes(b"")
    with pytest.raises(Exception, match=r"was written by 3 processes and WORLD_SIZE=2: DeepSpeed "
                                        r"restores one optimizer shard per process; resume it "
                                        r"with torchrun --nproc_per_node 3"):  # fmt: skip
        check_overrides(f"data=[{dataset}]", "deepspeed_config=configs/deepspeed/zero2.json",
                        "stages.sft.batch_size=4", f"resume={tmp_path / 'ck'}")  # fmt: skip


def test_max_grad_norm_reaches_deepspeed_where_the_json_leaves_it(tmp_path):
    import json

    from critic.train.launch import deepspeed_config

    config = {"optimizer": {"params": {"lr": "auto"}}, "gradient_clipping": "auto"}
    (tmp_path / "auto.json").write_text(json.dumps(config))
    assert (
        deepspeed_config(str(tmp_path / "auto.json"), 1e-3, False, 2, 0.5)["gradient_clipping"]
        == 0.5
    )
    del config["gradient_clipping"]  # absent: DeepSpeed's default, no clipping, ignored it
    (tmp_path / "none.json").write_text(json.dumps(config))
    assert (
        deepspeed_config(str(tmp_path / "none.json"), 1e-3, False, 2, 0.5)["gradient_clipping"]
        == 0.5
    )
    assert (
        deepspeed_config(str(tmp_path / "none.json"), 1e-3, False, 2, None)["gradient_clipping"]
        == 0.0
    )


def test_torchrun_without_deepspeed_is_refused(dataset, monkeypatch):
    # each process trained its own copy on a share of the batch, and rank 0's alone was saved
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(Exception, match=r"torchrun started 2 processes \(WORLD_SIZE=2\) but "
                                        r"deepspeed_config is null"):  # fmt: skip
        check_overrides(f"data=[{dataset}]")


def test_torchrun_processes_each_take_their_own_gpu(dataset, monkeypatch):
    """``.to("cuda")`` means the current GPU and DeepSpeed sets it only inside ``initialize``, so
    every process loaded its copy onto GPU 0; now each binds LOCAL_RANK's first. One GPU named
    for all processes is refused."""
    import torch

    from critic.train.launch import bind_local_device

    bound = []
    monkeypatch.setattr(torch.cuda, "set_device", bound.append)
    monkeypatch.setenv("LOCAL_RANK", "3")
    bind_local_device("cuda")
    bind_local_device("cpu")
    monkeypatch.delenv("LOCAL_RANK")
    bind_local_device("cuda")  # one process, no torchrun: the current GPU stays
    assert bound == [3]

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(Exception) as err:
        check_overrides(f"data=[{dataset}]", "device=cuda:1",
                        "deepspeed_config=configs/deepspeed/zero2.json")  # fmt: skip
    assert type(err.value).__name__ == "TrainConfigError"
    assert str(err.value) == (
        "device='cuda:1' names one GPU for all 2 processes torchrun started; give device=cuda, "
        "and each process takes the GPU of its LOCAL_RANK"
    )
