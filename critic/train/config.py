"""What a critic training config may say, checked before any model loads: the stages a pipeline may
hold and :func:`check_config`, which turns ``configs/train_critic.yaml`` into per-stage plans for
:class:`critic.train.recipe.Trainer` or a :class:`TrainConfigError` that names the value and the fix.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from critic.train.run_record import resume_problem
from critic.train.stages import (  # noqa: F401 (imported from here by others)
    DEFAULT_KINDS,
    STAGE_KEYS,
    STAGES,
    TrainConfigError,
    stage_plan,
)
from rollout.checks import folder_problem, is_int, is_number, list_option
from rollout.imports import MissingExtraError, require_package

DTYPES = ("float32", "bfloat16")  # float16 needs loss scaling, which the recipe lacks
# Options that must be true or false: a string ("off", "no") would count as true.
BOOL_OPTIONS = ("freeze_vision", "gradient_checkpointing", "progress_bar", "pack_samples")
# DeepSpeed runs add this folder to each checkpoint: DeepSpeed's own save (every rank's optimizer
# shard) and every rank's random generators and batch sampler, for an exact resume.
DS_STATE = "deepspeed"
# What GRPO samples completions with: the policy itself through transformers, or a vLLM copy of it
# on the GPU whose weights are synced after every optimizer step.
ROLLOUT_ENGINES = ("hf", "vllm")


def check_config(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """Validate everything that can be checked without a model; returns per-stage plans.

    Raises:
        TrainConfigError: unknown stage or one listed twice, bad GRPO settings, a batch not
            divisible by the group size (and the processes, under DeepSpeed), unknown rewards or
            weights of the wrong length, missing data, a stage whose kinds make no samples, a
            task name the data lacks, a teacher= or resume= folder that is not a checkpoint, a
            resume= whose run had other options, a bool that is not true or false, a bad seed or
            max_grad_norm, dtype=float16, a negative checkpoint_every / eval_every, or a device
            this machine lacks.
    """

    for name, example in (("resume", "outputs/train_critic/<run>/sft/checkpoint-50"),
                          ("deepspeed_config", "configs/deepspeed/zero2.json")):  # fmt: skip
        if cfg.get(name) is not None and not isinstance(cfg.get(name), str):
            raise TrainConfigError(
                f"{name}={cfg.get(name)!r} must be a path, e.g. {name}={example}"
            )
    if cfg.model is None and cfg.resume is None:
        raise TrainConfigError(
            "model=null: give the weights to start from, a preset (tiny, small) or a checkpoint "
            "folder, e.g. model=outputs/viscritic_small/run/readout/final"
        )
    # One stage or folder given bare is a list of one; the recipe reads the lists from cfg.
    for key in ("pipeline", "data", "held_out_tasks"):
        if key in cfg and not isinstance(cfg[key], ListConfig):
            cfg[key] = list_option(cfg[key])  # held_out_tasks=null: none
    if not cfg.pipeline:
        raise TrainConfigError(
            f"pipeline is empty; give the stages to run, e.g. pipeline=[sft] (stages are "
            f"{list(STAGES)})"
        )
    unknown = [s for s in cfg.pipeline if s not in STAGES]
    if unknown:
        raise TrainConfigError(f"pipeline={list(cfg.pipeline)} has unknown stages {unknown}; "
                               f"stages are {list(STAGES)}")  # fmt: skip
    twice = sorted({s for s in cfg.pipeline if list(cfg.pipeline).count(s) > 1})
    if twice:
        raise TrainConfigError(
            f"pipeline={list(cfg.pipeline)} lists {twice} more than once (a stage writes "
            "<run dir>/<stage>/, so the second pass would write over the first); list each stage "
            "once, and train further in a new run from its weights (model=<run dir>/<stage>/final)"
        )
    if not isinstance(cfg.get("stages"), DictConfig):
        raise TrainConfigError(
            f"stages={cfg.get('stages')!r} must be a mapping of each stage's settings (steps, "
            "batch_size, lr, ...), as in configs/train_critic.yaml"
        )
    seed = cfg.get("seed")
    if not is_int(seed) or not 0 <= seed < 2**31:
        raise TrainConfigError(f"seed={seed!r} must be an integer in [0, 2**31), e.g. seed=0")
    for name in BOOL_OPTIONS:
        if not isinstance(cfg.get(name), bool):
            raise TrainConfigError(f"{name}={cfg.get(name)!r} must be true or false")
    norm = cfg.get("max_grad_norm")
    if norm is not None and (not is_number(norm) or norm <= 0):
        raise TrainConfigError(
            f"max_grad_norm={norm!r} must be a finite number > 0 (each step's gradient norm is "
            "clipped to it), or null (no clipping)"
        )
    plans = {stage: stage_plan(cfg, stage) for stage in cfg.pipeline}
    if problem := folder_problem("data", list(cfg.data)):
        raise TrainConfigError(problem)
    from critic.data.episodes import finished_ids

    folders = [Path(d) for d in cfg.data]
    # no finished episode (an episodes/ folder a recording made and never filled): found after
    # the model loaded, blaming the seed split
    missing = [str(d) for d in folders if not finished_ids(d)]
    if not folders or missing:
        raise TrainConfigError(
            f"data={[str(d) for d in folders]}: no episodes in {missing or 'an empty list'}; make "
            "them with `python experiments/synthesize.py env=<task> out=<folder>`"
        )
    from critic.data.episodes import repeated_episodes

    if twice := repeated_episodes("data", folders):  # said, not refused: it may be meant
        logging.getLogger(__name__).warning("%s; to weigh a folder, data_weights=[...]", twice)
    present: list[str] = []

    def data_tasks() -> list[str]:  # the tasks of data='s episodes, read once when needed
        from critic.data.episodes import read_table

        if not present:
            present.extend(
                sorted({str(row.get("env_id")) for f in folders for row in read_table(f)})
            )
        return present

    held = list(cfg.get("held_out_tasks") or [])
    if held:
        if not all(isinstance(t, str) for t in held):
            raise TrainConfigError(f"held_out_tasks={held!r} must be a list of task names")
        absent = [t for t in held if t not in data_tasks()]
        if absent:
            raise TrainConfigError(
                f"held_out_tasks names {absent}, which no episode of data= is of (it would hold "
                f"nothing out); the data's tasks are {present}"
            )
        if set(held) >= set(data_tasks()):  # said after the model had loaded, as too few seeds
            raise TrainConfigError(
                f"held_out_tasks={held} holds out every task of data= ({present}): nothing is "
                "left to train on; hold out fewer, or add folders of other tasks to data="
            )
    weights = cfg.get("data_weights")
    if weights is not None:
        listed = isinstance(weights, Sequence | ListConfig) and not isinstance(weights, str)
        values = list(weights) if listed else weights
        if (
            not listed
            or len(values) != len(folders)
            or not all(is_number(w) and w > 0 for w in values)
        ):
            raise TrainConfigError(
                f"data_weights={values!r} needs one positive number per data folder "
                f"({len(folders)}: {[str(d) for d in folders]}), e.g. "
                f"data_weights={[1] * (len(folders) - 1) + [3]} draws the last folder's samples "
                "three times as often; data_weights=null draws every sample alike"
            )
    for name, low, meaning in (
        ("frames", 1, "frames per clip"),
        ("cuts", 1, "samples per episode"),
        ("frozen_count", 0, "samples per episode"),
        ("pretext_count", 0, "samples per episode"),
    ):
        value = cfg.get(name)
        if not is_int(value) or value < low:
            raise TrainConfigError(
                f"{name}={value!r} must be an integer >= {low} ({meaning}: critic/data/samples.py)"
            )
    from critic.data.samples import TOP_DIGIT_RULES

    if (top := cfg.get("top_digit", "round")) not in TOP_DIGIT_RULES:
        raise TrainConfigError(
            f"top_digit={top!r} must be one of {list(TOP_DIGIT_RULES)}: round, d = round(9 p) (the "
            "shipped critic's); achieved, 9 for the task achieved alone"
        )
    counts = {"pretext": "pretext_count", "joint": "pretext_count", "frozen": "frozen_count"}
    for stage, plan in plans.items():  # kinds whose count is 0 make no samples
        if all(cfg.get(counts.get(k, "cuts")) == 0 for k in plan["kinds"]):
            zero = sorted({counts[k] for k in plan["kinds"]})
            raise TrainConfigError(
                f"stage {stage!r} trains on {list(plan['kinds'])} samples, and "
                f"{' and '.join(f'{n}=0' for n in zero)} makes none of them; set "
                f"{' and '.join(f'{n}=' for n in zero)} to 1 or more, or give the stage other "
                f"kinds (stages.{stage}.kinds=)"
            )
    from critic.data.transforms import TRANSFORMS

    transforms = list_option(cfg.get("transforms"))
    unknown = [t for t in transforms if t not in TRANSFORMS]
    if len(set(transforms)) < 2 or unknown:
        raise TrainConfigError(
            f"transforms={transforms} must name two or more different ones of {list(TRANSFORMS)} (the pretext "
            f"question asks which was applied){f'; {unknown} are not transforms' if unknown else ''}"
        )
    if len(set(transforms)) < len(transforms):
        twice = sorted({t for t in transforms if transforms.count(t) > 1})
        raise TrainConfigError(
            f"transforms={transforms} lists {twice} more than once (each would be drawn that "
            "many times as often); list each transform once"
        )
    task_frames = cfg.get("task_frames") or {}
    if not isinstance(task_frames, Mapping | DictConfig) or not all(
        is_int(n) and n >= 1 for n in task_frames.values()
    ):
        raise TrainConfigError(
            f"task_frames={task_frames!r} needs a mapping of task name to frames per clip "
            "(an integer >= 1), e.g. 'task_frames={Reacher-v5: 1}' trains Reacher's clips at one "
            "frame and every other task's at frames=; task_frames={} uses frames= for all"
        )
    absent = [str(t) for t in task_frames if str(t) not in (data_tasks() if task_frames else [])]
    if absent:
        raise TrainConfigError(
            f"task_frames names {absent}, which no episode of data= is of (it would change "
            f"nothing, and the checkpoint would record it); the data's tasks are {data_tasks()}"
        )
    if any({"pretext", "joint"} & set(plan["kinds"]) for plan in plans.values()):
        from critic.data.samples import clip_transforms

        # the clip lengths the pretext question is asked at: frames=, and task_frames' for its
        # tasks (a stage of them found no samples only after the model loaded and earlier stages
        # trained, or asked a question with one answer)
        lengths = {int(n): f"task_frames.{t}={n}" for t, n in task_frames.items()}
        if not task_frames or set(data_tasks()) - {str(t) for t in task_frames}:
            lengths[int(cfg.frames)] = f"frames={cfg.frames}"
        for length, option in sorted(lengths.items()):
            if len(usable := clip_transforms(transforms, length)) < 2:
                raise TrainConfigError(
                    f"transforms={transforms} leave {usable} for clips of {length} frame"
                    f"{'s' if length > 1 else ''} ({option}): reversing or speeding up one frame "
                    "changes nothing and 2 frames shuffled are 2 reversed, so the pretext question "
                    "would have one answer or none; add transforms that change such a clip "
                    "(none, rotate_180, hflip), or give longer clips"
                )
    teacher, tasks = cfg.get("teacher"), cfg.get("teacher_tasks")
    if teacher is not None:
        from critic.weights import SHIPPED

        # a folder of a shipped critic's name is read as the folder (rollout.checkpoint_path)
        shipped = str(teacher) in SHIPPED and not Path(str(teacher)).is_dir()
        if not (shipped or Path(str(teacher)).is_dir()):
            raise TrainConfigError(
                f"teacher={teacher!r} is not a checkpoint folder or a shipped critic "
                f"({sorted(SHIPPED)}); give the folder of the critic whose readout to distil"
            )
        if not shipped and not (Path(str(teacher)) / "config.json").is_file():
            raise TrainConfigError(
                f"teacher={teacher!r} is a folder but not a checkpoint: it has no config.json; "
                "give the folder a run wrote (<run dir>/<stage>/final) or a shipped critic "
                f"({sorted(SHIPPED)})"
            )
        from critic.factory import model_source_problem

        # its weights' headers, tokenizer and processor too: a damaged teacher failed only when
        # the stage it labels for began, after the stages before it had trained
        if not shipped and (problem := model_source_problem(str(teacher))) is not None:
            raise TrainConfigError(f"teacher={teacher}: {problem}")
    if tasks is not None and (
        not isinstance(tasks, Sequence | ListConfig)
        or isinstance(tasks, str)
        or not tasks
        or not all(isinstance(t, str) and t for t in tasks)
    ):
        raise TrainConfigError(
            f"teacher_tasks={tasks!r} needs a list of task names, e.g. teacher_tasks=[Reacher-v5]; "
            "null: every task"
        )
    if tasks is not None and teacher is None:
        raise TrainConfigError(
            f"teacher_tasks={list(tasks)} has no teacher; set teacher=<checkpoint folder>"
        )
    if tasks is not None and (absent := [t for t in tasks if t not in data_tasks()]):
        raise TrainConfigError(
            f"teacher_tasks names {absent}, which no episode of data= is of (the teacher would "
            f"label nothing of it); the data's tasks are {data_tasks()}"
        )
    taught = [  # a format-only stage (shuffle_labels) is not labelled by the teacher
        s for s, p in plans.items() if p["rule"] == "sft" and {"score", "frozen"} & set(p["kinds"])
        and not p["settings"].get("shuffle_labels")
    ]  # fmt: skip
    if teacher is not None and not taught:
        raise TrainConfigError(
            f"teacher={teacher} labels score and frozen samples, and no stage of "
            f"pipeline={list(cfg.pipeline)} trains on them with a supervised loss (sft, readout); "
            "add one, or drop teacher="
        )
    chosen = cfg.get("teacher_data")
    if chosen is not None:
        folders = [str(d) for d in (cfg.data or [])]
        listed = isinstance(chosen, Sequence | ListConfig) and not isinstance(chosen, str)
        missing = [str(f) for f in chosen if str(f) not in folders] if listed else []
        if not listed or not chosen or missing:
            raise TrainConfigError(
                f"teacher_data={chosen!r} needs a non-empty list of data folders, each written as "
                f"in data= ({folders}); "
                + (f"{missing} are not among them; " if missing else "")
                + "null: the teacher labels every folder"
            )
        if teacher is None:
            raise TrainConfigError(
                f"teacher_data={list(chosen)} has no teacher; set teacher=<checkpoint folder>"
            )
    if cfg.resume is not None:
        from critic.train.checkpoint import STATE

        if not Path(cfg.resume).is_dir():
            raise TrainConfigError(f"resume={cfg.resume!r} is not a checkpoint folder")
        if not (Path(cfg.resume) / STATE).is_file():
            raise TrainConfigError(
                f"resume={cfg.resume!r} is not a training checkpoint: it has no {STATE}; resume "
                "from a <run dir>/<stage>/checkpoint-<step> folder a run wrote (to start afresh "
                "from a folder's weights, use model=<folder>)"
            )
    keep = cfg.get("keep_checkpoints")
    if keep is not None and (not is_int(keep) or keep < 1):
        raise TrainConfigError(
            f"keep_checkpoints={keep!r} must be null (keep every checkpoint) or an integer >= 1: "
            "how many of each stage's latest checkpoints to keep"
        )
    for name, low, meaning in (
        ("checkpoint_every", 0, "steps between checkpoints (0: only the final one)"),
        ("eval_every", 0, "steps between validations (0: none)"),
        ("eval_samples", 0, "validation samples"),
        ("eval_max_new_tokens", 1, "the generation budget of a validation answer"),
    ):
        value = cfg.get(name)
        if not is_int(value) or value < low:
            raise TrainConfigError(f"{name}={value!r} must be an integer >= {low}: {meaning}")
    if cfg.dtype == "float16":
        raise TrainConfigError(
            "dtype=float16 cannot train here: the recipe has no loss scaling, so its gradients "
            "overflow and every weight turns NaN; use dtype=bfloat16 (GPUs since Ampere) or "
            "dtype=float32"
        )
    if cfg.dtype not in DTYPES:
        raise TrainConfigError(f"dtype={cfg.dtype!r} is not supported; pick one of {list(DTYPES)}")
    from critic.models import device_problem

    if (problem := device_problem(cfg.device)) is not None:
        raise TrainConfigError(problem)
    if cfg.rollout_engine not in ROLLOUT_ENGINES:
        raise TrainConfigError(
            f"rollout_engine={cfg.rollout_engine!r} is not an engine; pick one of "
            f"{list(ROLLOUT_ENGINES)}"
        )
    if cfg.rollout_engine == "vllm" and any(p["rule"] == "grpo" for p in plans.values()):
        from critic.models import model_type
        from rollout.vllm_engine import vllm_model_problem

        if (problem := vllm_model_problem(model_type(cfg.resume or cfg.model))) is not None:
            name = f"resume={cfg.resume}" if cfg.resume else f"model={cfg.model}"
            raise TrainConfigError(f"{name}: {problem}")
        if not str(cfg.device).startswith("cuda"):
            raise TrainConfigError(
                f"rollout_engine=vllm runs on GPUs, and device={cfg.device!r}; use device=cuda, "
                "or rollout_engine=hf (transformers) on CPU"
            )
        try:
            vllm = require_package("vllm", "vllm", "rollout_engine=vllm")
        except MissingExtraError as exc:
            raise TrainConfigError(str(exc)) from None
        from rollout.vllm_engine import vllm_options_problem

        if problem := vllm_options_problem(vllm, OmegaConf.to_container(cfg.vllm) or {}):
            raise TrainConfigError(problem)
    # a missing extra said here, not as a traceback after the model has loaded
    needed = [("transformers", "vlm", "train_critic.py"),
              ("tensorboard", "train", "train_critic.py's logs (tensorboard)")]  # fmt: skip
    if cfg.deepspeed_config is not None:
        needed.append(("deepspeed", "train", "deepspeed_config="))
    for module, extra, purpose in needed:
        try:
            require_package(module, extra, purpose)
        except MissingExtraError as exc:
            raise TrainConfigError(str(exc)) from None
    from critic.train.launch import check_launch

    check_launch(cfg, plans)
    if cfg.resume is not None and (problem := resume_problem(cfg, Path(cfg.resume))):
        raise TrainConfigError(problem)
    return plans
