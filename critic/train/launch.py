"""How a training run is launched: one process, or several under torchrun with DeepSpeed, and
what that asks of the config (the JSON, the batch shares, a resume written by as many processes).

Split from ``config.py`` (the checked stages) along the line between what a run trains and how
its processes are started; :func:`critic.train.config.check_config` calls :func:`check_launch`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from critic.train.config import DS_STATE, TrainConfigError
from rollout.checks import is_number


def check_launch(cfg: DictConfig, plans: dict[str, dict[str, Any]]) -> None:
    """Several processes train one model only with ``deepspeed_config=``; with it, the JSON is
    a file, a resume is a DeepSpeed checkpoint, and :func:`check_deepspeed` holds.

    Raises:
        TrainConfigError: naming the value and the fix.
    """
    world = os.environ.get("WORLD_SIZE", "1")
    if cfg.deepspeed_config is None and world.isdigit() and int(world) > 1:
        # each process trained its own copy on its share of the batch, rank 0's alone was saved
        raise TrainConfigError(
            f"torchrun started {world} processes (WORLD_SIZE={world}) but deepspeed_config is "
            "null: without DeepSpeed they would not share gradients, and each would train its own "
            "copy on a share of the batch; give deepspeed_config=configs/deepspeed/zero2.json, or "
            "run one process (python experiments/train_critic.py ...)"
        )
    if world.isdigit() and int(world) > 1 and str(cfg.device).startswith("cuda:"):
        # every process would load onto the one GPU named, and run out of its memory
        raise TrainConfigError(
            f"device={cfg.device!r} names one GPU for all {world} processes torchrun started; "
            "give device=cuda, and each process takes the GPU of its LOCAL_RANK"
        )
    if cfg.deepspeed_config is not None:
        if not Path(cfg.deepspeed_config).is_file():
            raise TrainConfigError(
                f"deepspeed_config={cfg.deepspeed_config!r} is not a file; use "
                "configs/deepspeed/zero2.json or zero3.json, or your own DeepSpeed JSON"
            )
        if cfg.resume is not None and not (Path(cfg.resume) / DS_STATE).is_dir():
            raise TrainConfigError(
                f"resume={cfg.resume!r} has no {DS_STATE}/ folder: it was written without "
                "deepspeed_config=, and a DeepSpeed run resumes only from its own checkpoints "
                "(every rank's optimizer shard and sampler); or resume it without deepspeed_config="
            )
        check_deepspeed(cfg, plans)


def process_rank() -> tuple[int, int]:
    """This process's rank and the number of processes (torchrun's; 0 and 1 alone)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def deepspeed_config(
    path: str, lr: float, bf16: bool, micro_batch: int, max_grad_norm: float | None = None
) -> dict:
    """DeepSpeed's JSON with our ``auto`` fields filled (DeepSpeed does not resolve them), and
    ``gradient_clipping`` from ``max_grad_norm`` where the JSON leaves it to us (``auto`` or
    absent; check_config refused a JSON that disagrees with it)."""
    config = json.loads(Path(path).read_text())
    config["train_micro_batch_size_per_gpu"] = micro_batch
    if config.get("gradient_clipping", "auto") == "auto":
        config["gradient_clipping"] = max_grad_norm or 0.0  # DeepSpeed's 0: no clipping
    params = config.get("optimizer", {}).get("params", {})
    if params.get("lr") == "auto":
        params["lr"] = lr
    section = config.setdefault("bf16", {})  # absent: as "auto" (check_deepspeed reads it so)
    if isinstance(section, dict) and section.get("enabled", "auto") == "auto":
        section["enabled"] = bf16
    return config


def bind_local_device(device: str) -> None:
    """Under torchrun, make this process's GPU (``LOCAL_RANK``) the current one before the model
    loads: ``.to("cuda")`` means the current GPU, and DeepSpeed sets it only later, inside
    ``deepspeed.initialize``, so every process would have loaded its copy onto GPU 0."""
    local = os.environ.get("LOCAL_RANK")
    if device == "cuda" and local is not None and local.isdigit():
        import torch

        torch.cuda.set_device(int(local))


def over_ranks(values: dict[str, float | int]) -> dict[str, float | int]:
    """What the processes of a distributed run measured, as one run: each float's mean, NaNs left
    out (a GRPO reward component none of a process's completions had), and each int's sum (counts,
    such as the GRPO groups used). A run of one process gets ``values`` back. Every process must
    call it with the same keys: it is one collective. What a process measures on its own share
    of the batch is logged by rank 0 alone, so without this the history showed rank 0's share."""
    import torch

    dist = torch.distributed
    if not values or not (dist.is_available() and dist.is_initialized()):
        return dict(values)
    if dist.get_world_size() == 1:
        return dict(values)
    keys = sorted(values)
    raw = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    known = torch.isfinite(raw)
    sums = torch.stack([torch.where(known, raw, torch.zeros_like(raw)), known.double()])
    if dist.get_backend() == "nccl":
        sums = sums.cuda()
    dist.all_reduce(sums)
    total, count = sums.cpu().tolist()
    return {
        k: int(t) if isinstance(values[k], int) else (t / c if c > 0 else math.nan)
        for k, t, c in zip(keys, total, count, strict=True)
    }


def rank_share(units: float) -> float:
    """This process's weight on a loss it averaged over its own ``units`` (kept completion tokens,
    or completions), so that the processes' gradients, which DeepSpeed averages, are those of one
    mean over every process's units: ``units * world / total``. 1 in a run of one process; 0 for
    a process with no units (it takes part in the update at weight 0). Without it a short
    completion's tokens weighed more on a process whose completions were short, and a process
    that kept no group halved the others' step. A collective, as :func:`all_ranks`."""
    import torch

    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return 1.0
    total = torch.tensor([float(units)], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        total = total.cuda()
    dist.all_reduce(total)
    total_units = float(total.item())
    return float(units) * dist.get_world_size() / total_units if total_units > 0 else 0.0


def all_ranks(flag: bool) -> bool:
    """Whether ``flag`` holds on every process of a distributed run (``flag`` itself alone).
    Every process must call it at the same point: it is one collective. A process that decides
    alone to skip its part of a collective (a NaN loss it caught, no GRPO group it kept) leaves
    the others waiting in theirs: a hang, not an error."""
    import torch

    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return bool(flag)
    agree = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        agree = agree.cuda()
    dist.all_reduce(agree, op=dist.ReduceOp.MIN)
    return bool(agree.item() > 0)


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` holds on some process of a distributed run (a collective, as
    :func:`all_ranks`)."""
    return not all_ranks(not flag)


def leave_process_group() -> None:
    """At the end of a run that finished, every process waits for the others and leaves the
    process group (PyTorch's documented shutdown). A process that exited with it still there
    aborted now and then as Python shut down (gloo's threads still held tensors: "terminate
    called without an active exception", SIGABRT), failing a 2-process run that had saved its
    last stage. Not after an error: a process still in a collective would hang the others."""
    import torch

    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def check_deepspeed(cfg: DictConfig, plans: dict[str, dict[str, Any]]) -> None:
    """The checks a ``deepspeed_config=`` run adds: launched by torchrun (``RANK`` and
    ``WORLD_SIZE`` set), every stage's batch shared out evenly over the processes (a GRPO stage's
    in whole groups), and the JSON's ``gradient_clipping`` agreeing with ``max_grad_norm``.

    Raises:
        TrainConfigError: naming the value and the fix.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise TrainConfigError(
            f"deepspeed_config={cfg.deepspeed_config} runs one process per GPU, started by "
            "torchrun (RANK and WORLD_SIZE are not set); launch it with `torchrun "
            "--nproc_per_node <processes> experiments/train_critic.py ...`, or drop "
            "deepspeed_config= to train in this one process"
        )
    world = int(os.environ["WORLD_SIZE"])
    for stage, plan in plans.items():
        size = plan["settings"].batch_size
        group = plan["grpo"].group_size if plan["rule"] == "grpo" else 1
        if size % (world * group):
            whole = f" in whole groups of grpo.group_size={group}" if group > 1 else ""
            raise TrainConfigError(
                f"stages.{stage}.batch_size={size} cannot be shared out evenly over "
                f"WORLD_SIZE={world} processes{whole}; use a multiple of {world * group}"
            )
    if cfg.resume is not None:
        # each process restores its own shard: another count is DeepSpeed's raw error after the
        # model has loaded (fewer), or a missing rank state (more)
        written = len(list((Path(cfg.resume) / DS_STATE).glob("rank*.pt")))
        if written and written != world:
            raise TrainConfigError(
                f"resume={str(cfg.resume)!r} was written by {written} processes and "
                f"WORLD_SIZE={world}: DeepSpeed restores one optimizer shard per process; resume "
                f"it with torchrun --nproc_per_node {written}, or start a new run from its "
                f"weights with model={cfg.resume}"
            )
    try:
        options = json.loads(Path(cfg.deepspeed_config).read_text())
        clip = options.get("gradient_clipping", "auto")
    except (ValueError, AttributeError) as exc:
        raise TrainConfigError(
            f"deepspeed_config={cfg.deepspeed_config} is not a DeepSpeed JSON object ({exc})"
        ) from exc
    # "auto" too: deepspeed_config() resolves only the micro batch, clipping, lr and bf16, and
    # DeepSpeed compares an "auto" it is left with to a number (a TypeError)
    left = {"train_batch_size": (None,), "gradient_accumulation_steps": (None, 1)}
    if batch := sorted(k for k, fine in left.items() if options.get(k) not in fine):
        # the recipe steps once per batch: accumulation 2 stepped every second batch, its
        # weights unchanged after one step; train_batch_size was DeepSpeed's raw assertion
        raise TrainConfigError(
            f"deepspeed_config={cfg.deepspeed_config} sets {', '.join(batch)}; the batch comes "
            "from stages.<stage>.batch_size, shared out over the processes, one optimizer step "
            "each: remove them (gradient_accumulation_steps may be 1)"
        )
    if "scheduler" in options:  # the recipe sets each step's rate (stages.<stage>.schedule)
        raise TrainConfigError(
            f'deepspeed_config={cfg.deepspeed_config} has a "scheduler" section, which the '
            "recipe's own schedule would override at every step; remove it and set "
            "stages.<stage>.schedule= and .warmup="
        )
    if not isinstance(options.get("optimizer"), dict):
        # DeepSpeed's ZeRO builds the optimizer from it: without, a raw AssertionError after the
        # model had loaded
        raise TrainConfigError(
            f'deepspeed_config={cfg.deepspeed_config} has no "optimizer" section; add one, e.g. '
            '"optimizer": {"type": "AdamW", "params": {"lr": "auto", "weight_decay": 0.0}} '
            "(configs/deepspeed/zero2.json)"
        )
    params = options["optimizer"].get("params", {})
    # DeepSpeed hands the optimizer's params over as written: Hugging Face's templates' "auto"
    # betas were a ValueError at the first optimizer step, after the model had loaded
    if not isinstance(params, dict) or (auto := sorted(k for k, v in params.items()
                                                       if v == "auto" and k != "lr")):  # fmt: skip
        named = "optimizer.params is not a mapping" if not isinstance(params, dict) else (
            f"optimizer.params {', '.join(auto)} = \"auto\", which only lr may be (the recipe "
            "fills it from stages.<stage>.lr)"
        )  # fmt: skip
        raise TrainConfigError(
            f"deepspeed_config={cfg.deepspeed_config}: {named}; give numbers (AdamW's defaults: "
            '"betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0) or leave them out'
        )
    if "bfloat16" in options:  # DeepSpeed's old name, read where "bf16" is absent
        raise TrainConfigError(
            f'deepspeed_config={cfg.deepspeed_config} has a "bfloat16" block, DeepSpeed\'s old '
            'name for "bf16"; remove it and leave "bf16": {"enabled": "auto"} (the recipe fills '
            "it from dtype=)"
        )
    for section in ("bf16", "fp16"):
        if section in options and not isinstance(options[section], dict):
            raise TrainConfigError(
                f'deepspeed_config={cfg.deepspeed_config} has "{section}": '
                f"{json.dumps(options[section])}, which DeepSpeed reads as a mapping; give "
                f'"{section}": {{"enabled": ...}} ("auto" for bf16: filled from dtype=)'
            )
    for section, wanted_on in (("bf16", cfg.dtype == "bfloat16"), ("fp16", False)):
        block = options.get(section)
        default = "auto" if section == "bf16" else False  # bf16: filled from dtype=
        enabled = block.get("enabled", default) if isinstance(block, dict) else default
        if enabled != "auto" and bool(enabled) != wanted_on:
            # a JSON that turned bf16 on trained and saved bf16 weights where the run recorded
            # dtype=float32
            raise TrainConfigError(
                f'deepspeed_config={cfg.deepspeed_config} has "{section}": {{"enabled": '
                f"{json.dumps(enabled)}}} and dtype={cfg.dtype}; make them agree: set dtype= "
                f'and leave "bf16": {{"enabled": "auto"}} in the JSON (the recipe fills it from '
                "dtype; float16 is refused: no loss scaling here)"
            )
    wanted = cfg.max_grad_norm or 0.0  # DeepSpeed's 0: no clipping
    if clip != "auto" and (not is_number(clip) or float(clip) != float(wanted)):
        norm = "null (no clipping)" if cfg.max_grad_norm is None else cfg.max_grad_norm
        raise TrainConfigError(
            f"deepspeed_config={cfg.deepspeed_config} has gradient_clipping={clip!r} and "
            f"max_grad_norm={norm}; make them agree: max_grad_norm={clip}, or "
            '"gradient_clipping": "auto" in the JSON (the recipe fills it from max_grad_norm)'
        )
