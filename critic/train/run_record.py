"""The run record: the resolved options every checkpoint keeps of the run that wrote it
(:data:`RUN_RECORD`), whether a ``resume=`` with today's options continues that run
(:func:`resume_problem`), decided before any model loads, and which weights a GRPO stage's KL term
pulls toward (:data:`KL_RECORD`, :func:`kl_reference_source`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rollout.checks import is_int

# In every checkpoint: the resolved options of the run that wrote it and its step, so a resume=
# that would continue it with other options is refused before any model loads.
RUN_RECORD = "trainer_config.json"
# Options a resume may change: where the run dir is and how it shows progress, which stages run
# before and after the resumed one, the weights it does not start from, how often it saves, and
# how it holds its samples in memory.
RESUME_FREE = ("hydra", "resume", "overwrite", "progress_bar", "pipeline", "model",
               "checkpoint_every", "keep_checkpoints", "pack_samples", "resumed_from")  # fmt: skip
# Options added after runs were recorded, with the value every run before them had: a checkpoint
# that does not record one ran with that value (resume compares it so, not as a change)
ADDED_OPTIONS = {"grpo.updates": 1, "top_digit": "round", "grpo.temporal_correct": 0.5}
# Options that name files or folders: recorded as absolute paths where they exist, so that a
# resume spelling the same folder another way (data/R, ./data/R, /abs/data/R) is the same run.
PATH_OPTIONS = ("data", "teacher", "teacher_data", "deepspeed_config")
# In a GRPO stage's folder: where the weights it started from (its KL reference) were loaded from
KL_RECORD = "kl_reference.json"


def _absolute(value: Any) -> Any:
    """``value`` (a path, or a list of them) with each existing path made absolute."""
    if isinstance(value, list):
        return [_absolute(v) for v in value]
    if isinstance(value, str) and value and Path(value).exists():
        return str(Path(value).resolve())
    return value


def run_record(cfg: DictConfig) -> dict[str, Any]:
    """The resolved options a checkpoint records (:data:`RUN_RECORD`): all but where the run dir
    is, ``resume``, ``overwrite`` and ``progress_bar``; paths (:data:`PATH_OPTIONS`) absolute;
    what each data folder holds (:data:`DATA_EPISODES`); and ``resumed_from``, the checkpoints a
    resumed run continued, latest first (its ``model=`` and ``pipeline=`` are not where its
    weights began)."""
    options = OmegaConf.to_container(cfg, resolve=True)
    resumed = options.get("resume")
    for key in ("hydra", "resume", "overwrite", "progress_bar"):
        options.pop(key, None)
    if resumed is not None:
        options["resumed_from"] = [str(Path(resumed).resolve()), *_resumed_from(Path(resumed))]
    for key in PATH_OPTIONS:
        if key in options:
            options[key] = _absolute(options[key])
    options[DATA_EPISODES] = {
        str(folder): _episodes_of(folder) for folder in options.get("data") or []
    }
    return options


def _resumed_from(folder: Path) -> list[str]:
    """The ``resumed_from`` chain ``folder``'s own record gives (none where it gives none)."""
    import json

    try:
        chain = json.loads((folder / RUN_RECORD).read_text())["options"].get("resumed_from")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []
    return [str(c) for c in chain] if isinstance(chain, list) else []


# What each data folder held: its finished episodes' count and a digest of their ids. A folder
# that synthesize.py extended after the checkpoint gave a resume other draws, silently.
DATA_EPISODES = "data_episodes"


def _episodes_of(folder: Any) -> str:
    import hashlib

    from critic.data.episodes import finished_ids

    ids = sorted(finished_ids(folder)) if isinstance(folder, str) else []
    digest = hashlib.sha1("\n".join(ids).encode()).hexdigest()[:12]
    return f"{len(ids)} episodes (ids {digest})"


def _flat(options: Any, prefix: str = "") -> dict[str, Any]:
    """Nested options as ``{"stages.sft.lr": 0.001, ...}``."""
    if not isinstance(options, dict) or not options:
        return {prefix: options}
    flat: dict[str, Any] = {}
    for key, value in options.items():
        flat.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def resume_problem(cfg: DictConfig, folder: Path) -> str | None:
    """Why ``resume=folder`` cannot continue with ``cfg``'s options, or None: an option that
    differs from the checkpoint's run (:data:`RESUME_FREE` aside), or fewer steps than it has
    trained. A checkpoint written before the record existed is not compared."""
    import json

    record = folder / RUN_RECORD
    if not record.is_file():
        return None
    try:
        saved = json.loads(record.read_text())
        step, before = int(saved["step"]), saved["options"]
    except (ValueError, KeyError, TypeError) as exc:
        return (
            f"resume={str(cfg.resume)!r}: {record} is damaged ({type(exc).__name__}: {exc}); "
            "resume from another checkpoint-<step> folder of the run"
        )
    stage = folder.parent.name
    steps = cfg.stages[stage].steps if stage in cfg.stages else None
    if is_int(steps) and steps < step:
        return (
            f"stages.{stage}.steps={steps} is below the step of resume={str(cfg.resume)!r} "
            f"({step}): give stages.{stage}.steps={step} or more (the run it continues had "
            f"{before.get('stages', {}).get(stage, {}).get('steps')})"
        )

    ran = before.get("stages", {}).get(stage, {})
    schedule = cfg.stages[stage].get("schedule", "constant") if stage in cfg.stages else None
    if (
        is_int(steps)
        and is_int(ran.get("steps"))
        and steps != ran["steps"]
        and schedule != "constant"
    ):
        # the rate is a function of the step and the stage's length: the resumed steps would get
        # rates of neither run (a linear decay's jumped from 2.5e-4 back to 5e-4)
        return (
            f"stages.{stage}.steps={steps} differs from the {ran['steps']} of the run that "
            f"resume={str(cfg.resume)!r} continues, and stages.{stage}.schedule={schedule} decays "
            f"over the stage's steps: give stages.{stage}.steps={ran['steps']}, or start a new run "
            f"from its weights with model={cfg.resume} (a constant schedule may change its steps)"
        )

    def compared(options: dict[str, Any]) -> dict[str, Any]:
        free = (*RESUME_FREE, f"stages.{stage}.steps")
        return {
            key: value
            for key, value in _flat(options).items()
            if not any(key == f or key.startswith(f"{f}.") for f in free)
            and not (key.startswith("stages.") and not key.startswith(f"stages.{stage}."))
        }

    now, then = compared(run_record(cfg)), compared(before)
    then = {**{k: v for k, v in ADDED_OPTIONS.items() if k in now}, **then}
    differ = sorted(
        k for k in now.keys() | then.keys() if now.get(k) != then.get(k)
        # a checkpoint written before the data's episodes were recorded: not compared
        and not (k.startswith(f"{DATA_EPISODES}.") and DATA_EPISODES not in before)
    )  # fmt: skip
    if not differ:
        return None
    shown = "; ".join(f"{k}={then.get(k)!r} there, {now.get(k)!r} here" for k in differ)
    return (
        f"resume={str(cfg.resume)!r} continues a run trained with other options ({shown}); "
        "resume with the run's options (they are in its .hydra/config.yaml and in "
        f"{RUN_RECORD}), or start a new run from its weights with model={cfg.resume}"
    )


def extended_final_problem(cfg: DictConfig, run_dir: Path) -> str | None:
    """Why ``resume=<run>/<stage>/final`` with more steps cannot train on in its own run dir, or
    None: the new final would replace the weights the later stages there were trained from (and
    a GRPO stage's KL term names), so they would no longer follow from them."""
    import json

    from critic.train.config import STAGES

    folder = Path(str(cfg.resume)) if cfg.get("resume") is not None else None
    if folder is None or folder.name != "final":
        return None
    stage, run = folder.parent.name, folder.parent.parent
    if stage not in STAGES or run.resolve() != Path(run_dir).resolve():
        return None  # into another run dir: the final read stays as it is
    try:
        saved = json.loads((folder / RUN_RECORD).read_text())
        step, ran = int(saved["step"]), saved["options"].get("pipeline") or []
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # resume_problem names a damaged record
    steps = cfg.stages[stage].steps if stage in cfg.stages else None
    if not (is_int(steps) and steps > step):
        return None  # nothing to train: the final stays
    later = []
    for pipeline in (list(ran), [str(s) for s in cfg.pipeline]):
        if stage in pipeline:
            later += [s for s in pipeline[pipeline.index(stage) + 1 :] if (run / s).is_dir()]
    if not later:
        return None
    return (
        f"resume={cfg.resume} trains stage {stage} on from its final weights (step {step} to "
        f"{steps}) in its own run dir, which would replace them, and {sorted(set(later))} in "
        f"{run} were trained from them; give a new hydra.run.dir= to train it on there (and "
        "the stages after it again, from its new weights)"
    )


def kl_reference_source(
    stage: str, kl_coef: float, started_from: str, resume: Path | None = None
) -> str:
    """Where the frozen model GRPO's KL term pulls toward is loaded from: the weights ``stage``
    started from (the policy as RL began, as in DeepSeek-R1's GRPO). A new stage gives
    ``started_from`` (the ``final`` folder of the stage run before it, else ``model=``), made
    absolute where it is a folder; a resumed one reads its stage folder's :data:`KL_RECORD`, so a
    resumed stage, and a resume of a resumed run, loads the same weights whatever its own
    ``pipeline=`` and ``model=`` say.

    Raises:
        TrainConfigError: resuming from a checkpoint whose stage folder records no reference
            (written before the record existed), a damaged record, or a reference that is gone.
    """
    import json

    from critic.train.config import TrainConfigError  # config reads this module's checks

    if resume is None:
        return str(Path(started_from).resolve()) if Path(started_from).exists() else started_from
    record = resume.parent / KL_RECORD
    if not record.is_file():
        raise TrainConfigError(
            f"resuming {stage} with grpo.kl_coef={kl_coef:g}: {record} is missing, so the "
            "weights the stage started from (the KL term's reference) are not known; resume "
            "with grpo.kl_coef=0, or run the stage again"
        )
    try:
        source = str(json.loads(record.read_text())["from"])
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise TrainConfigError(
            f"resuming {stage}: {record} is damaged ({type(exc).__name__}: {exc}); it names the "
            "weights the stage started from (the KL term's reference): restore it as "
            '{"from": "<that folder>"}, or resume with grpo.kl_coef=0'
        ) from exc
    if not Path(source).exists() and "/" in source:
        raise TrainConfigError(
            f"resuming {stage} with grpo.kl_coef={kl_coef:g} needs the weights it started "
            f"from, {source} (the KL term's reference), and they are not there; restore them, "
            "or resume with grpo.kl_coef=0"
        )
    return source


def record_kl_reference(stage_dir: Path, source: str, resume: Path | None = None) -> None:
    """Write ``stage_dir``'s :data:`KL_RECORD` naming ``source``. A resume in its own run reads
    the record and leaves it as it is (a rewrite cut short would lose it); a run, or a resume
    into another run dir, writes its own."""
    import json

    from rollout.files import write_atomic

    written = stage_dir / KL_RECORD
    if resume is None or written.resolve() != (resume.parent / KL_RECORD).resolve():
        written.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(written, json.dumps({"from": source}) + "\n")
