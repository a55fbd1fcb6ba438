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
        # a typo in a config of one's own trained on the default schedule without a word; a
        # stage without steps was a raw ConfigAttributeError
        (["+stages.sft.shedule=cosine"], "stages.sft has ['shedule'], which no stage reads; a "
         "stage's settings are ['batch_size', 'kinds', 'lr', 'reward_weights', 'rewards', "
         "'schedule', 'shuffle_labels', 'steps', 'warmup']"),
        (["~stages.sft.steps"], "stages.sft.steps=None must be an integer >= 1"),
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
        f"Install it with: pip install -e '.[{'vlm' if module == 'transformers' else 'train'}]' (in the repository's root)"
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
        (["top_digit=top"], "top_digit='top' must be one of ['round', 'achieved']: round, d = "
         "round(9 p) (the shipped critic's); achieved, 9 for the task achieved alone"),
        # T-GRPO's "correct" reads the answers' accuracy: a format reward alone has none
        (["stages.pretext.rewards=[format]", "stages.pretext.reward_weights=[1.0]",
          "grpo.temporal_bonus=0.3"], "stages.pretext: grpo.temporal_bonus=0.3 counts a completion "
         "correct by its accuracy, the rewards other than format, and the stage's rewards are "
         "['format']; add one, or set grpo.temporal_bonus=0"),
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
        # a pretext question without two answers at this clip length: no samples, found after
        # the model loaded and sft trained; or every answer "none"
        (["pipeline=[sft,pretext]", "frames=1", "transforms=[reverse,shuffle]"], "transforms="
         "['reverse', 'shuffle'] leave [] for clips of 1 frame (frames=1): reversing or speeding up "
         "one frame changes nothing and 2 frames shuffled are 2 reversed, so the pretext question "
         "would have one answer or none; add transforms that change such a clip (none, rotate_180, "
         "hflip), or give longer clips"),
        (["pipeline=[pretext]", "frames=2", "transforms=[none,shuffle]"], "transforms=['none', "
         "'shuffle'] leave ['none'] for clips of 2 frames (frames=2): reversing or speeding up one "
         "frame changes nothing and 2 frames shuffled are 2 reversed, so the pretext question "
         "would have one answer or none; add transforms that change such a clip (none, rotate_180, "
         "hflip), or give longer clips"),
        (["pipeline=[joint]", "task_frames={Reacher-v5: 1}", "transforms=[none,reverse]"],
         "transforms=['none', 'reverse'] leave ['none'] for clips of 1 frame (task_frames."
         "Reacher-v5=1): reversing or speeding up one frame changes nothing and 2 frames shuffled "
         "are 2 reversed, so the pretext question would have one answer or none; add transforms "
         "that change such a clip (none, rotate_180, hflip), or give longer clips"),
        # counted twice: the verdict's samples drawn twice as often
        (["pipeline=[readout]", "stages.readout.kinds=[score,failure,failure]"], "stages.readout."
         "kinds names ['failure'] more than once; list each kind once"),
        # a string, so true: dynamic sampling stayed on
        (["pipeline=[pretext]", "grpo.dynamic_sampling=off"], "grpo: dynamic_sampling='off' must "
         "be true or false"),
    ],
)  # fmt: skip
def test_options_that_trained_wrongly_or_crashed_are_refused_first(dataset, overrides, message):
    with pytest.raises(Exception) as err:
        check_overrides(f"data=[{dataset}]", *overrides)
    assert type(err.value).__name__ == "TrainConfigError"
    assert str(err.value) == message


def test_t_grpo_reads_correct_from_the_rewards_other_than_format(dataset):
    plans, _ = check_overrides(f"data=[{dataset}]", "grpo.temporal_bonus=0.3")
    outcome = plans["outcome"]
    assert outcome["reward"].__name__ == "progress_accuracy_reward+verdict_reward+format_reward"
    assert outcome["accuracy"].__name__ == "progress_accuracy_reward+verdict_reward"
    # with the stage's own weights: a right verdict (1.0) weighs as the stage weighs it
    text = "<think>x</think><answer>success</answer>"
    weight = dict(zip(outcome["reward_names"], outcome["settings"].reward_weights, strict=True))
    assert outcome["accuracy"]([text], success=[True]) == [weight["verdict"]]
    assert "accuracy" not in check_overrides(f"data=[{dataset}]")[0]["outcome"]
    # the threshold for "correct" is a documented option (it was refused as one no stage reads)
    plans, _ = check_overrides(f"data=[{dataset}]", "grpo.temporal_bonus=0.3",
                               "grpo.temporal_correct=0.9")  # fmt: skip
    assert plans["outcome"]["grpo"].temporal_correct == 0.9
