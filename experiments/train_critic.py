"""Train a critic: CoT-SFT, then Pretext-GRPO, ViSS-R1 joint GRPO and outcome GRPO, in order.

    python experiments/synthesize.py env=Reacher-v5 episodes=200          # data first
    python experiments/train_critic.py data=[data/Reacher-v5]            # tiny model, this CPU
    python experiments/train_critic.py pipeline=[pretext] stages.pretext.steps=300
    torchrun --nproc_per_node 8 experiments/train_critic.py model=/ckpt/Qwen2.5-VL-7B-Instruct \\
        deepspeed_config=configs/deepspeed/zero3.json device=cuda dtype=bfloat16 freeze_vision=true \\
        stages.pretext.batch_size=32 stages.joint.batch_size=32 stages.outcome.batch_size=32 \\
        hydra.run.dir=outputs/train_critic/qwen7b   # one folder for every process's part

A plain recipe (torchtune style): ``setup`` checks the whole config before any model loads, then
each stage of ``pipeline`` runs from the previous stage's weights and writes
``<run dir>/<stage>/checkpoint-<step>`` (safetensors + optimizer + RNG: ``resume=`` continues one
exactly) and ``<run dir>/<stage>/final``. Tensorboard logs (``tensorboard --logdir <run dir>``):
loss, rewards by component, KL, clip fraction, completion length, validation accuracy / MAE,
learning rate. The recipe itself is :mod:`critic.train.recipe`; this file is its command line.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

# The recipe's names, importable from here too.
from critic.train.config import STAGES, TrainConfigError, check_config  # noqa: F401
from critic.train.recipe import Trainer, make_vllm_engine  # noqa: F401


@hydra.main(config_path="../configs", config_name="train_critic", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from rollout.workers import stop_on_sigterm

    logging.getLogger("transformers").setLevel(logging.ERROR)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if (problem := shared_dir_problem(HydraConfig.get())) is not None:
        print(f"train_critic: {problem}", file=sys.stderr)
        sys.exit(1)
    stop_on_sigterm()  # a scheduler's pre-emption says where to resume, as Ctrl-C does
    try:
        _main(cfg, run_dir)
    except KeyboardInterrupt as exc:  # in its start (imports, the config check), or a second
        # one while the first was handled: no traceback
        from rollout.workers import interrupt_exit

        stopped, code = interrupt_exit(exc)
        print(f"train_critic: interrupted ({stopped}) "
              + (f"as the run ended; what it wrote is in {run_dir}" if _STARTED else
                 "before training began; nothing was trained"), file=sys.stderr)  # fmt: skip
        sys.exit(code)
    finally:  # a run that stopped before it set the earlier run aside: its record back in place
        from run_dir import put_back_record

        if os.environ.get("RANK", "0") == "0":
            put_back_record(run_dir)


_STARTED = False  # whether _main reached training (set once; one run per process)


def shared_dir_problem(hydra_config) -> str | None:
    """Why several processes (``WORLD_SIZE`` > 1) cannot share this run's folder, or None: the
    default folder is named by each process's own clock, so processes that started in different
    seconds (or on nodes whose clocks differ) wrote one run into several folders, each holding
    its own optimizer shard; the run's folder must be given."""
    world = os.environ.get("WORLD_SIZE", "1")
    if not world.isdigit() or int(world) <= 1:
        return None
    given = [o for o in hydra_config.overrides.hydra if str(o).startswith("hydra.run.dir=")]
    if given or hydra_config.mode.name == "MULTIRUN":
        return None
    import re

    # a config of one's own may name a fixed folder: only the timestamped default splits
    if not re.search(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}", str(hydra_config.run.dir)):
        return None
    return (
        f"a run of WORLD_SIZE={world} processes needs its folder given: each process names the "
        "default one by its own clock, and processes that start a second apart split the run "
        "(and its optimizer shards) across folders; add hydra.run.dir=outputs/train_critic/<name>"
    )


def _main(cfg: DictConfig, run_dir: Path) -> None:
    from critic.base import CriticError
    from critic.data.episodes import EpisodeFormatError
    from critic.models import ModelLoadError
    from critic.train.checkpoint import CheckpointError
    from critic.train.optim import NonFiniteError
    from rollout.imports import MissingExtraError

    try:
        trainer = Trainer(cfg, run_dir)
    except (TrainConfigError, EpisodeFormatError) as exc:
        print(f"train_critic: {exc}", file=sys.stderr)
        sys.exit(1)
    if trainer.rank == 0:
        from recordings import older_recordings_warned

        older_recordings_warned(cfg.data, "train_critic")
    pipeline = list(cfg.pipeline)
    resume = Path(cfg.resume) if cfg.resume is not None else None
    if resume is not None:  # <run>/<stage>/checkpoint-<step>: skip the stages before it
        stage = resume.parent.name
        if stage not in STAGES:
            print(f"train_critic: resume={cfg.resume} is not in a <run dir>/<stage>/ folder (its "
                  f"parent {stage!r} is not a stage of {list(STAGES)}); resume from the "
                  "checkpoint-<step> folder where its run wrote it", file=sys.stderr)  # fmt: skip
            sys.exit(1)
        if stage not in pipeline:
            print(f"train_critic: resume={cfg.resume} is a checkpoint of stage {stage!r}, not in "
                  f"pipeline {pipeline}; add {stage} to pipeline= (it resumes there and runs the "
                  "stages after it)", file=sys.stderr)  # fmt: skip
            sys.exit(1)
        pipeline = pipeline[pipeline.index(stage) :]
    aside = None
    if cfg.overwrite and trainer.rank == 0:  # the dir holds this run's outputs alone
        from run_dir import RunDirError, discard_outputs, set_aside_outputs

        try:
            aside = set_aside_outputs("train_critic", cfg, run_dir, keep=[cfg.model, cfg.teacher])
        except RunDirError as exc:
            print(f"train_critic: RunDirError: {exc}", file=sys.stderr)
            sys.exit(1)
        # the earlier run is removed once this one has trained a step; kept until then
        trainer.on_first_step = lambda: discard_outputs(aside)
    global _STARTED
    _STARTED = True  # from here on, _main's own handlers say where the run stopped
    try:
        trainer.setup()
        final = None
        for i, stage in enumerate(pipeline):
            final = trainer.run_stage(stage, resume if i == 0 else None)
        if aside is not None and trainer.on_first_step is not None:
            # finished without a step to train (a resume of a finished stage): its outputs
            # replace the earlier run's all the same, which stayed aside and blocked the dir
            trainer.on_first_step = None
            discard_outputs(aside)
    except (TrainConfigError, CheckpointError, ModelLoadError, CriticError, EpisodeFormatError,
            NonFiniteError, MissingExtraError) as exc:  # fmt: skip
        # a model or teacher= that does not load, a checkpoint a run did not finish, a NaN loss
        print(f"train_critic: {exc}{continue_hint(trainer, exc)}"
              f"{_kept(cfg, run_dir, trainer, aside)}", file=sys.stderr)  # fmt: skip
        sys.exit(1)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM: where to continue from, no traceback
        from rollout.workers import interrupt_exit

        stopped, code = interrupt_exit(exc)
        if trainer.rank == 0:
            print(f"train_critic: {interrupted(trainer, pipeline, stopped)}"
                  f"{_kept(cfg, run_dir, trainer, aside)}", file=sys.stderr)  # fmt: skip
        sys.exit(code)
    except BaseException:  # any other stop before a step trained keeps the earlier run too
        if kept := _kept(cfg, run_dir, trainer, aside):
            print(f"train_critic: {kept[2:]}", file=sys.stderr)
        raise
    finally:
        trainer.cleanup()
    from critic.train.launch import leave_process_group

    leave_process_group()  # finished: no process is left in a collective
    if trainer.rank == 0:
        print(f"critic: {final}  (load it with make_critic({str(final)!r}))")
        print(f"logs: {run_dir}")


def _kept(cfg: DictConfig, run_dir: Path, trainer: Trainer, aside: Path | None) -> str:
    """A run that stops before it trained a step puts back the earlier run ``overwrite=true``
    set aside, and says so."""
    if aside is None or trainer.on_first_step is None:  # nothing set aside, or trained
        return ""
    from run_dir import restore_outputs

    trainer.cleanup()  # its tensorboard writer holds a file in the folder put back
    restore_outputs("train_critic", cfg, run_dir, aside)
    return f"; the earlier run in {run_dir} is kept as it was (nothing was trained)"


def interrupted(trainer: Trainer, pipeline: list[str], by: str = "Ctrl-C") -> str:
    """What to say when Ctrl-C (or ``by``, a SIGTERM) stops a run: where it was, and the
    ``resume=`` that continues it."""
    stage, last = trainer.stage, trainer.last_checkpoint
    if stage is None:
        return f"interrupted ({by}) before training began; nothing was trained"
    done = f"interrupted ({by}) in stage {stage} at step {trainer.step}"
    if last is not None:
        return (
            f"{done}; continue from its latest checkpoint with resume={last} (and the same options)"
        )
    before = (
        f"{done}, before its first checkpoint (checkpoint_every={trainer.cfg.checkpoint_every})"
    )
    if trainer._last_final is not None:  # the stage before it finished: its final continues
        return (
            f"{before}; continue after the stage that finished with resume={trainer._last_final} "
            "(and the same options)"
        )
    return (
        f"{before}; nothing of the stage to continue from: run "
        f"pipeline={pipeline[pipeline.index(stage) :]} again into a new hydra.run.dir="
    )


def continue_hint(trainer: Trainer, problem: Exception) -> str:
    """For a run stopped by an error in a stage: the ``resume=`` that continues it once the
    error is fixed (its latest checkpoint, or the final weights of the stage before it), unless
    the error names one itself."""
    where = trainer.last_checkpoint or trainer._last_final
    if trainer.stage is None or where is None or "resume=" in str(problem):
        return ""
    return f"; once that is fixed, continue with resume={where} (and the same options)"


def without_launcher_rank(argv: list[str]) -> list[str]:
    """``argv`` without the ``--local_rank=N`` that DeepSpeed's launcher (``deepspeed ...
    train_critic.py``) and torch's legacy ``torch.distributed.launch`` append: hydra refused it
    ("unrecognized arguments"). Both launchers also set ``LOCAL_RANK``, which the run reads."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--local_rank", "--local-rank"):
            skip = True  # "--local_rank 0"
        elif not arg.startswith(("--local_rank=", "--local-rank=")):
            kept.append(arg)
    return kept


if __name__ == "__main__":
    sys.argv = without_launcher_rank(sys.argv)
    main()
