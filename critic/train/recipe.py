"""The critic training recipe behind ``experiments/train_critic.py`` (torchtune style):
:class:`Trainer` runs each stage of a pipeline checked by :mod:`critic.train.config` from the
previous stage's weights (SFT or GRPO, plain PyTorch or DeepSpeed), validates, logs and
checkpoints it.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from critic.train.config import DS_STATE, TrainConfigError, check_config
from critic.train.draws import (
    draw_batch,
    draw_probabilities,
    label_with_teacher,
    load_samples,
    record_draws,
    shuffled_labels,
)
from critic.train.history import RunHistory
from critic.train.launch import (
    all_ranks,
    bind_local_device,
    deepspeed_config,
    over_ranks,
    process_rank,
    rank_share,
)
from critic.train.memory import peak_rss_mb, release_freed_memory, rss_mb
from critic.train.run_record import (
    extended_final_problem,
    kl_reference_source,
    record_kl_reference,
    run_record,
)
from critic.train.validation import budget_problem, evaluate
from rollout.imports import require_package


def make_vllm_engine(folder: Path, video_token_id: int, eos_token_id: int, **options: Any):
    """vLLM's in-process engine over the checkpoint in ``folder`` (``options``: ``vllm.LLM``'s)."""
    from rollout.vllm_engine import VLLMEngine

    return VLLMEngine(str(folder), video_token_id, eos_token_id, **options)


class Trainer:
    """State shared by the stages: the model, tokenizer, writer, run dir (setup / train / cleanup)."""

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.rank, self.world = process_rank()
        self.plans = check_config(cfg)  # before any model loads
        if (problem := extended_final_problem(cfg, run_dir)) is not None:
            raise TrainConfigError(problem)
        self.log = RunHistory(run_dir)  # history.jsonl and tensorboard's events (rank 0)
        self.on_first_step: Any = None  # called once, after the run's first trained step
        self._vllm = None  # the vLLM rollout engine, made at the first GRPO stage
        self._last_final: Path | None = None  # the last stage's weights written by this run
        # where training is, for a message when it stops: the stage, its step, and its latest
        # complete checkpoint (the one it resumed from, or the last it saved)
        self.stage: str | None = None
        self.step = 0
        self.last_checkpoint: Path | None = None

    # -- setup ------------------------------------------------------------------------------
    def setup(self) -> None:
        import torch

        from critic.models import load_model

        cfg = self.cfg
        random.seed(cfg.seed + self.rank)
        np.random.seed(cfg.seed + self.rank)
        torch.manual_seed(cfg.seed)  # same initial weights on every rank
        bind_local_device(str(cfg.device))
        if cfg.deepspeed_config is not None:
            deepspeed = require_package("deepspeed", "train", "deepspeed_config=")
            deepspeed.init_distributed(dist_backend="gloo" if cfg.device == "cpu" else "nccl")
        dtype = getattr(torch, cfg.dtype)
        start = cfg.resume or cfg.model
        self.model, self.tokenizer = load_model(
            start, device=cfg.device, dtype=dtype, seed=cfg.seed
        )
        self.model = self.model.to(dtype)
        record_draws(self.model.config, cfg)  # clip lengths and failure types, for the critic
        if cfg.freeze_vision:
            for p in self.model.model.visual.parameters():
                p.requires_grad_(False)
        if cfg.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        from critic.vision import VisionSpec

        self.vision = VisionSpec.from_config(self.model.config.vision_config)
        self.reference = None  # the KL term's frozen model, set at each GRPO stage's start

    # -- one stage --------------------------------------------------------------------------
    def run_stage(self, stage: str, resume: Path | None = None) -> Path:
        import torch
        from tqdm.auto import tqdm

        from critic.train.checkpoint import keep_earlier_final, load_trainer_state
        from critic.train.grpo import grpo_step, sync_rollout_weights
        from critic.train.optim import (
            NonFiniteError,
            deepspeed_update,
            learning_rate,
            optimizer_update,
            set_learning_rate,
        )
        from critic.train.rewards import reward_components
        from critic.train.sft import (
            collate,
            digit_token_ids,
            encode_sft,
            sft_loss,
            trained_tokens,
        )
        from rollout.hf import HFEngine

        cfg, plan = self.cfg, self.plans[stage]
        settings = plan["settings"]
        self.stage, self.step, self.last_checkpoint = stage, 0, resume
        # SFT stages draw from the run's seed (as the shipped critic's recipe did); each GRPO
        # stage from its own stream, so pretext and joint do not replay each other's clips
        train = load_samples(
            cfg, plan["kinds"], "train", stream=None if plan["rule"] == "sft" else stage
        )
        taught = 0
        if plan["rule"] == "sft":
            train = [s for s in train if s.completion]
            if settings.get("shuffle_labels"):
                train = shuffled_labels(train, np.random.default_rng(cfg.seed))
            elif cfg.get("teacher") is not None:
                # not a format-only stage: its soft targets would teach the teacher's readings
                taught = label_with_teacher(cfg, train)
        if not train:
            raise TrainConfigError(
                f"stage {stage}: no training samples of kinds {plan['kinds']} in {list(cfg.data)}"
                " (episodes are split by seed, about 80 % train, 10 % val and 10 % test "
                "(critic.data.samples.seed_split), and held_out_tasks are left out: a folder of a "
                "few episodes may hold none in train; record more, with other first_seed=)"
            )
        chance, shares = draw_probabilities(cfg, train)
        val = load_samples(cfg, plan["kinds"], "val", limit=cfg.eval_samples)
        if cfg.eval_every and not val and self.rank == 0:  # the history's val/ keys just missed
            logging.getLogger(__name__).warning(
                "stage %s: no validation samples of kinds %s in %s (episodes are split by seed, "
                "about 10 %% val: critic.data.samples.seed_split), so eval_every=%s validates "
                "nothing and the history has no val/ figures; record more episodes, or give "
                "eval_every=0",
                stage, list(plan["kinds"]), list(cfg.data), cfg.eval_every,
            )  # fmt: skip
        validated = cfg.eval_every and self.rank == 0 and resume is None
        if validated and (problem := budget_problem(self.tokenizer, val, cfg.eval_max_new_tokens)):
            logging.getLogger(__name__).warning("stage %s: %s", stage, problem)
        params = [p for p in self.model.parameters() if p.requires_grad]
        model, update = self.model, None
        if cfg.deepspeed_config is not None:
            deepspeed = require_package("deepspeed", "train", "deepspeed_config=")
            micro = settings.batch_size // self.world if plan["rule"] == "sft" else 1
            ds_config = deepspeed_config(cfg.deepspeed_config, settings.lr, cfg.dtype == "bfloat16",
                                          max(micro, 1), cfg.max_grad_norm)  # fmt: skip
            model, optimizer, _, _ = deepspeed.initialize(model=self.model, model_parameters=params,
                                                          config=ds_config)  # fmt: skip
            update = deepspeed_update(model)
        else:
            optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
            update = optimizer_update(self.model, optimizer, cfg.max_grad_norm)
        first = 0
        # draws the batches: one stream on every process, each taking its slice of one draw of
        # the whole batch (a stream per process drew one sample into two processes' halves of a
        # step; one process draws as it did)
        rng = np.random.default_rng([cfg.seed, 0])
        if resume is not None and cfg.deepspeed_config is not None:
            first = self._load_deepspeed_state(model, resume, rng)
        elif resume is not None:
            state = load_trainer_state(resume, optimizer)
            first = state["step"]
            rng.bit_generator.state = state["extra"]["sampler"]
        if resume is not None and self.rank == 0:
            self.log.trim(stage, first, [str(p) for p in cfg.pipeline])
        stage_dir = self.run_dir / stage
        # resume=<this run>/<stage>/final: trained on, it is first kept as checkpoint-<step> (the
        # new final would replace it), and that is what the run resumed from; with no step to
        # train, it stays as it is (rewritten, its record named it resumed from itself)
        own_final = resume is not None and resume.resolve() == (stage_dir / "final").resolve()
        if own_final and first < settings.steps:
            resume = self._keep_resumed_final(stage_dir, first)
            cfg.resume, self.last_checkpoint = str(resume), resume
        if plan["rule"] == "grpo" and cfg.grpo.kl_coef > 0:
            self.reference = self._kl_reference(stage, resume)
        engine = (
            self._rollout_engine()
            if plan["rule"] == "grpo"
            else HFEngine(self.model, self.tokenizer.pad_token_id, self.tokenizer.eos_token_id)
        )
        per_rank = max(1, settings.batch_size // self.world)
        bar = tqdm(range(first, settings.steps), desc=stage, disable=self.rank != 0 or not cfg.progress_bar,
                   initial=first, total=settings.steps)  # fmt: skip
        if first == 0:  # the stage's starting point (validated, so each shows its gain)
            before = (
                evaluate(self.model, self.tokenizer, val, cfg.eval_max_new_tokens, self.vision)
                if cfg.eval_every
                else {}
            )
            self._log(stage, 0, {"stage": stage, "step": 0, "train_samples": len(train),
                                 **({"teacher_samples": taught} if cfg.get("teacher") else {}),
                                 **{f"data_share/{k}": v for k, v in shares.items()},
                                 **{f"val/{k}": v for k, v in before.items()}})  # fmt: skip
        started = time.perf_counter()
        for step in bar:
            self.step = step + 1
            lr = learning_rate(step, settings.steps, settings.lr, settings.get("schedule", "constant"),
                               settings.get("warmup", 0))  # fmt: skip
            set_learning_rate(optimizer, lr)
            record: dict[str, Any] = {"stage": stage, "step": step + 1, "lr": lr}
            try:
                if plan["rule"] == "sft":
                    picks = self._slice(draw_batch(rng, len(train), per_rank * self.world, chance))
                    batch = collate(
                        [encode_sft(train[i], self.tokenizer, self.vision) for i in picks],
                        self.tokenizer.pad_token_id,
                    )
                    model.train()
                    loss = sft_loss(model, batch, digit_token_ids(self.tokenizer))
                    # a mean over this process's tokens, weighed by their share of the step's
                    # (DeepSpeed averages the processes' gradients: a 6-token answer on one
                    # weighed 7x a 44-token chain of thought on another), as GRPO's loss is
                    update(loss * rank_share(trained_tokens(batch)))
                    record["loss"] = float(loss.detach())
                else:
                    grpo = plan["grpo"]
                    prompts_per_step = max(1, per_rank // grpo.group_size)
                    picks = self._slice(
                        draw_batch(rng, len(train), prompts_per_step * self.world, chance)
                    )

                    def components(texts, **fields):
                        return reward_components(plan["reward_names"], texts, **fields)

                    result = grpo_step(model, update, engine, self.tokenizer, [train[i] for i in picks],
                                       plan["reward"], grpo, vision=self.vision, reference=self.reference,
                                       seed=int(rng.integers(2**31)) + self.rank, components=components,
                                       accuracy_fn=plan.get("accuracy"))  # fmt: skip
                    if engine is self._vllm:  # a copy of the weights: give it this step's
                        with self._gathered():
                            record["weights_synced"] = sync_rollout_weights(engine, self.model)
                    record.update(
                        {k: v for k, v in asdict(result).items() if k != "rewards_by_component"}
                    )
                    record.update(
                        {f"reward/{k}": v for k, v in result.rewards_by_component.items()}
                    )
            except NonFiniteError as exc:  # stop before it ruins the weights, and write no final
                bar.close()
                raise NonFiniteError(self._diverged(stage, step + 1, lr, exc)) from None
            # each process measured its own share of the batch: the history logs them as one run
            shared = [k for k, v in record.items() if k not in ("step", "lr", "weights_synced")
                      and isinstance(v, float | int) and not isinstance(v, bool)]  # fmt: skip
            record.update(over_ranks({k: record[k] for k in shared}))
            record["seconds"] = time.perf_counter() - started
            # samples per second over the stage so far (GRPO: completions), and the process's
            # peak memory, so each stage's cost is in the history
            record["samples_per_s"] = (step + 1 - first) * settings.batch_size / record["seconds"]
            release_freed_memory()
            record["peak_rss_mb"] = peak_rss_mb()
            if (rss := rss_mb()) is not None:
                record["rss_mb"] = rss
            if cfg.device != "cpu":
                import torch

                record["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
            if cfg.eval_every and ((step + 1) % cfg.eval_every == 0 or step + 1 == settings.steps):
                record.update(
                    {
                        f"val/{k}": v
                        for k, v in evaluate(
                            self.model, self.tokenizer, val, cfg.eval_max_new_tokens, self.vision
                        ).items()
                    }
                )
            self._log(stage, step + 1, record)
            if self.on_first_step is not None:  # e.g. remove the run overwrite=true replaces
                # unset first: a Ctrl-C while it runs (a large earlier run takes a while to
                # remove) stops a run that has trained, whose step must not be undone
                hook, self.on_first_step = self.on_first_step, None
                hook()
            if (
                cfg.checkpoint_every
                and (step + 1) % cfg.checkpoint_every == 0
                and step + 1 < settings.steps
            ):
                path = stage_dir / f"checkpoint-{step + 1}"
                self.last_checkpoint = self._save(path, optimizer, step + 1, rng, model)
                if self.rank == 0 and cfg.get("keep_checkpoints") is not None:
                    from critic.train.checkpoint import remove_older_checkpoints

                    remove_older_checkpoints(path, cfg.keep_checkpoints)
        bar.close()
        if self.rank == 0 and first < settings.steps:  # an earlier run's final here: kept
            keep_earlier_final(stage_dir / "final", settings.steps)
        if own_final and first >= settings.steps:
            self._last_final = stage_dir / "final"
        else:
            self._last_final = self._save(
                stage_dir / "final", optimizer, settings.steps, rng, model
            )
        if model is not self.model and callable(getattr(model, "destroy", None)):
            # the next stage's engine wraps the same module: this one's hooks and optimizer
            # (fp32 master weights, Adam's state) had stayed alive with it, a copy per stage
            model.destroy()
        return self._last_final

    def _keep_resumed_final(self, stage_dir: Path, step: int) -> Path:
        """Move the ``final`` a stage resumes from in its own run dir to ``checkpoint-<step>``
        (rank 0, once every process has loaded it), unless that checkpoint is there already (the
        same weights); returns the checkpoint."""
        import torch

        kept = stage_dir / f"checkpoint-{step}"
        if self.world > 1:
            torch.distributed.barrier()  # every process has read it
        if self.rank == 0 and not kept.exists():
            (stage_dir / "final").rename(kept)
        if self.world > 1:
            torch.distributed.barrier()  # in place before any process reads it again
        return kept

    def _diverged(self, stage: str, step: int, lr: float, problem: Exception) -> str:
        """What to say when a step's loss or gradient norm is not finite: the step, and the
        checkpoint to start again from."""
        last = self.last_checkpoint
        where = (
            f"the last checkpoint before it is {last}: start again from its weights with "
            f"model={last} and a lower stages.{stage}.lr=, into a new hydra.run.dir= (resume= "
            "would repeat the same steps)"
            if last is not None
            else f"no checkpoint of the stage was written before it (checkpoint_every="
            f"{self.cfg.checkpoint_every}); run it again with a lower stages.{stage}.lr=, into a "
            "new hydra.run.dir= or with overwrite=true"
        )
        return (
            f"stage {stage}, step {step}: {problem} (lr={lr:g}, dtype={self.cfg.dtype}); the run "
            f"stops there and writes no {stage}/final. {where[0].upper()}{where[1:]}"
        )

    def _kl_reference(self, stage: str, resume: Path | None):
        """The frozen model GRPO's KL term pulls toward, loaded from where
        :func:`~critic.train.run_record.kl_reference_source` finds it: the weights ``stage``
        started from (the ``final`` folder of the stage run before it here, else ``model=``), or
        on a resume those its stage folder records.

        Raises:
            TrainConfigError: a resume whose reference is not recorded or is gone.
        """
        import torch

        from critic.models import load_model

        cfg = self.cfg
        started_from = str(self._last_final) if self._last_final is not None else str(cfg.model)
        source = kl_reference_source(stage, cfg.grpo.kl_coef, started_from, resume)
        if self.rank == 0:
            record_kl_reference(self.run_dir / stage, source, resume)
        self.reference = None  # the last stage's, before the next is loaded
        dtype = getattr(torch, cfg.dtype)
        reference, _ = load_model(source, device=cfg.device, dtype=dtype, seed=cfg.seed)
        return reference.to(dtype=dtype).eval().requires_grad_(False)

    def _gathered(self):
        """A context in which every parameter is whole (ZeRO-3 partitions them)."""
        import contextlib

        if self.cfg.deepspeed_config is None:
            return contextlib.nullcontext()
        deepspeed = require_package("deepspeed", "train", "deepspeed_config=")
        return deepspeed.zero.GatheredParameters(list(self.model.parameters()), modifier_rank=None)

    def _rollout_engine(self):
        """The engine GRPO samples with. ``hf``: the policy itself. ``vllm``: made once per run,
        from the starting checkpoint folder (a preset is first written to
        ``<run>/vllm-weights-rank<r>``), then given the current weights at once, at each later
        stage's start and after every step."""
        from critic.train.grpo import sync_rollout_weights
        from rollout.hf import HFEngine

        if self.cfg.rollout_engine == "hf":
            return HFEngine(self.model, self.tokenizer.pad_token_id, self.tokenizer.eos_token_id)
        if self._vllm is None:
            start = Path(str(self.cfg.resume or self.cfg.model))
            folder = start if start.is_dir() else self.run_dir / f"vllm-weights-rank{self.rank}"
            if folder != start:  # a preset: vLLM loads from disk
                with self._gathered():
                    self.model.save_pretrained(folder)
                self.tokenizer.save_pretrained(folder)
            self._vllm = make_vllm_engine(
                folder,
                self.model.config.video_token_id,
                self.tokenizer.eos_token_id,
                **OmegaConf.to_container(self.cfg.vllm, resolve=True),
            )
            self._vllm.vision_frozen = bool(self.cfg.freeze_vision)
            check = getattr(self._vllm, "encoder_cache_problem", None)
            if not self.cfg.freeze_vision and check is not None and (problem := check()):
                raise TrainConfigError(problem)  # before a step, where it was after the first
            if folder == start:  # earlier stages of this run may have changed the weights
                with self._gathered():
                    sync_rollout_weights(self._vllm, self.model)
        else:
            with self._gathered():
                sync_rollout_weights(self._vllm, self.model)
        return self._vllm

    def _save(
        self, path: Path, optimizer, step: int, rng: np.random.Generator, engine=None
    ) -> Path:
        from critic.train.checkpoint import (
            as_write_error,
            save_checkpoint,
            save_rank_state,
            staging_folder,
            unwritten,
        )

        extra = {"sampler": rng.bit_generator.state}
        options = run_record(self.cfg)  # a resume= with other options is refused
        if self.cfg.deepspeed_config is not None:
            import shutil

            import torch

            deepspeed = require_package("deepspeed", "train", "deepspeed_config=")
            # every rank: DeepSpeed's shards, then this rank's generators and sampler, into the
            # staging folder; rank 0 adds the model and moves the folder into place (below)
            staging = staging_folder(path)
            if self.rank == 0:
                shutil.rmtree(staging, ignore_errors=True)  # a save cut short left it
            torch.distributed.barrier()
            problem = None
            try:
                engine.save_checkpoint(str(staging / DS_STATE), tag="state", save_latest=False)
                save_rank_state(staging / DS_STATE, self.rank,
                                {"step": step, "sampler": rng.bit_generator.state})  # fmt: skip
            except Exception as exc:  # a full disk is torch's RuntimeError in DeepSpeed's save
                if not isinstance(problem := as_write_error(exc, staging), OSError):
                    raise
            # every process stops if one could not write: one raising alone left the others
            # waiting at the next collective (a full disk on one node hung the run)
            if not all_ranks(problem is None):
                raise unwritten(path, problem, self.last_checkpoint)
            params = list(self.model.parameters())
            with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                if self.rank == 0:
                    try:
                        save_checkpoint(path, self.model, self.tokenizer, optimizer, step, extra,
                                        options, staged=True)  # fmt: skip
                    except OSError as exc:
                        problem = exc
            if not all_ranks(problem is None):  # in place before any rank goes on
                raise unwritten(path, problem, self.last_checkpoint)
        elif self.rank == 0:
            try:
                save_checkpoint(path, self.model, self.tokenizer, optimizer, step, extra, options)
            except OSError as exc:  # a full disk: a traceback, and no word of what was kept
                raise unwritten(path, exc, self.last_checkpoint) from None
        return path

    def _slice(self, picks: np.ndarray) -> np.ndarray:
        """This process's share of a draw of the whole step's batch."""
        share = len(picks) // self.world
        return picks[self.rank * share : (self.rank + 1) * share]

    def _load_deepspeed_state(self, engine, path: Path, rng: np.random.Generator) -> int:
        """Restore DeepSpeed's shards and this rank's generators and sampler; returns the step."""
        from critic.train.checkpoint import load_rank_state

        state = load_rank_state(path / DS_STATE, self.rank)  # first: it names a missing rank
        engine.load_checkpoint(str(path / DS_STATE), tag="state")
        rng.bit_generator.state = state["sampler"]
        return int(state["step"])

    # -- cleanup ----------------------------------------------------------------------------
    def cleanup(self) -> None:
        self.log.close()

    def _log(self, stage: str, step: int, record: dict[str, Any]) -> None:
        if self.rank == 0:
            self.log.add(stage, step, record)
