"""One GRPO step for a Qwen-VL critic: sample G completions per prompt through the rollout engine,
reward them, turn rewards into group advantages, and take a policy-gradient step.

The pieces are plain functions over tensors (see :mod:`critic.train.losses` for the maths); the
recipe in ``experiments/train_critic.py`` loops over them. The same :class:`~rollout.engine.Engine`
that serves rewards in envs produces the rollouts (transformers here; vLLM on GPU nodes, with the
new weights loaded after each step).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from critic import prompts
from critic.train.launch import any_rank, rank_share
from critic.train.losses import (
    ADVANTAGE_SCALES,
    LOSS_AGGREGATIONS,
    group_advantages,
    grpo_loss,
    informative_groups,
    reg_grpo_loss,
    temporal_bonus,
)
from critic.train.sft import on_model_device
from critic.vision import VisionSpec
from rollout.checks import is_int, is_number
from rollout.engine import MIN_TEMPERATURE

LOSSES = ("clip", "reg")


class GRPOConfigError(ValueError):
    """A GRPO setting is out of range (raised before anything loads)."""


@dataclass(frozen=True)
class GRPOConfig:
    """How one GRPO step samples and learns.

    Attributes:
        group_size: completions per prompt, G (>= 2).
        max_new_tokens: generation budget per completion.
        temperature, top_p: sampling.
        loss: ``clip`` (GRPO / DAPO clipped surrogate) or ``reg`` (Reg-GRPO regression).
        advantage_scale: ``std`` (GRPO) or ``none`` (Dr. GRPO).
        aggregation: ``token`` (DAPO: a mean over the batch's tokens), ``sequence`` (GRPO: each
            completion's token mean, averaged) or ``constant`` (Dr. GRPO: the sum over tokens
            divided by completions x ``max_new_tokens``).
        eps_low, eps_high: ratio clip range; ``eps_high > eps_low`` is DAPO's clip-higher. The
            ratio is to the policy that sampled the completions, so the clip binds only from a
            batch's second update on (``updates`` > 1): at one update it is 1 everywhere.
        updates: policy updates on each batch of completions (GRPO's mu, TRL's
            ``num_iterations``); 1 is on-policy GRPO, where the clip has no effect.
        kl_coef: weight of the k3 KL to the reference model (0: no reference needed).
        dynamic_sampling: drop groups whose rewards are all equal (DAPO).
        temporal_bonus: T-GRPO's (Video-R1) alpha: each prompt with a video of two frames or more
            is also sampled with its frames shuffled, and the correct completions of groups whose
            share correct on the ordered video is at least ``temporal_mu`` times the share on
            shuffled frames earn this bonus (0: off, one generation per step; > 0: two). Prompts
            whose videos are single frames, where order cannot matter, earn none.
        temporal_mu: T-GRPO's mu.
        temporal_correct: an accuracy above this counts as a correct completion for T-GRPO (the
            reward without its format part: ``grpo_step``'s ``accuracy_fn``).
    """

    group_size: int = 4
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    loss: str = "clip"
    advantage_scale: str = "std"
    aggregation: str = "token"
    eps_low: float = 0.2
    eps_high: float = 0.2
    updates: int = 1
    kl_coef: float = 0.0
    dynamic_sampling: bool = False
    temporal_bonus: float = 0.0
    temporal_mu: float = 0.8
    temporal_correct: float = 0.5

    def __post_init__(self) -> None:
        reals = ("temperature", "top_p", "eps_low", "eps_high", "kl_coef", "temporal_bonus",
                 "temporal_mu", "temporal_correct")  # fmt: skip
        for name in reals:
            if not is_number(getattr(self, name)):
                raise GRPOConfigError(f"{name}={getattr(self, name)!r} must be a finite number")
        checks = [
            (is_int(self.group_size) and self.group_size >= 2,
             f"group_size={self.group_size!r} must be an integer >= 2 (GRPO compares completions)"),
            (is_int(self.max_new_tokens) and self.max_new_tokens >= 1,
             f"max_new_tokens={self.max_new_tokens!r} must be an integer >= 1"),
            (self.temperature >= MIN_TEMPERATURE,
             f"temperature={self.temperature!r} must be >= {MIN_TEMPERATURE:g}: GRPO needs varied "
             "samples, and below that the sampling probabilities overflow"),
            (0 < self.top_p <= 1, f"top_p={self.top_p!r} must be in (0, 1]"),
            (is_int(self.updates) and self.updates >= 1,
             f"updates={self.updates!r} must be an integer >= 1 (policy updates per batch of "
             "completions; 1: on-policy)"),
            (self.loss in LOSSES, f"loss={self.loss!r} is not a GRPO loss; pick one of {list(LOSSES)}"),
            (self.advantage_scale in ADVANTAGE_SCALES,
             f"advantage_scale={self.advantage_scale!r}; pick one of {list(ADVANTAGE_SCALES)}"),
            (self.aggregation in LOSS_AGGREGATIONS,
             f"aggregation={self.aggregation!r}; pick one of {list(LOSS_AGGREGATIONS)}"),
            (0 <= self.eps_low < 1 and self.eps_high >= 0,
             f"eps_low={self.eps_low!r} must be in [0, 1) and eps_high={self.eps_high!r} >= 0"),
            (self.kl_coef >= 0, f"kl_coef={self.kl_coef!r} must be >= 0"),
            # dynamic_sampling=off was a string, true: sampling stayed on
            (isinstance(self.dynamic_sampling, bool),
             f"dynamic_sampling={self.dynamic_sampling!r} must be true or false"),
            (self.temporal_bonus >= 0 and self.temporal_mu > 0,
             f"temporal_bonus={self.temporal_bonus!r} must be >= 0 (0: T-GRPO off) and "
             f"temporal_mu={self.temporal_mu!r} > 0"),
            (0 <= self.temporal_correct < 1,
             f"temporal_correct={self.temporal_correct!r} must be in [0, 1): a completion whose "
             "accuracy reward is above it counts as correct for T-GRPO"),
            (not (self.loss == "reg" and self.kl_coef > 0),
             f"kl_coef={self.kl_coef!r} has no effect with loss='reg' (Reg-GRPO has no KL term); "
             "set kl_coef=0 or use loss='clip'"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise GRPOConfigError(message)
        for name in ("group_size", "max_new_tokens", "updates"):  # numpy ints as the ints they are
            object.__setattr__(self, name, int(getattr(self, name)))


def sample_fields(samples: Sequence, group_size: int) -> dict[str, list[Any]]:
    """The reward functions' keyword fields: every target key, ``choices`` and ``answer`` of each
    sample, repeated for its ``group_size`` completions."""
    keys = sorted({k for s in samples for k in s.target})
    fields: dict[str, list[Any]] = {k: [] for k in (*keys, "choices", "answer")}
    for s in samples:
        for _ in range(group_size):
            for k in keys:
                fields[k].append(s.target.get(k))
            fields["choices"].append(list(s.prompt.choices) or None)
            fields["answer"].append(s.prompt.answer)
    return fields


def sequences(
    requests: Sequence, completions: Sequence[Sequence[Sequence[int]]], pad_token_id: int,
    eos_token_id: int, max_new_tokens: int,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """Prompt + completion for every completion, right-padded, with the completion mask.

    A completion shorter than ``max_new_tokens`` ended on EOS, which is put back so the model
    learns to stop. Returns ``input_ids``, ``attention_mask``, ``mm_token_type_ids`` ``[N, L]``,
    ``completion_mask`` ``[N, L]`` (1 on completion tokens), and the videos of every sequence.
    """
    rows, types, spans, pixels, grids = [], [], [], [], []
    for request, group in zip(requests, completions, strict=True):
        prompt = request.input_ids.to(torch.int64)
        for completion in group:
            tokens = list(completion) + ([eos_token_id] if len(completion) < max_new_tokens else [])
            rows.append(torch.cat([prompt, torch.tensor(tokens, dtype=torch.int64)]))
            types.append(torch.cat([request.mm_token_type_ids.to(torch.int32),
                                    torch.zeros(len(tokens), dtype=torch.int32)]))  # fmt: skip
            spans.append((len(prompt), len(tokens)))
            if request.pixel_values_videos is not None:
                pixels.append(request.pixel_values_videos)
                grids.append(request.video_grid_thw)
    width = max(len(r) for r in rows)
    n = len(rows)
    batch = {
        "input_ids": torch.full((n, width), pad_token_id, dtype=torch.int64),
        "attention_mask": torch.zeros((n, width), dtype=torch.int64),
        "mm_token_type_ids": torch.zeros((n, width), dtype=torch.int32),
        "completion_mask": torch.zeros((n, width), dtype=torch.int64),
    }
    for i, (row, typ, (start, length)) in enumerate(zip(rows, types, spans, strict=True)):
        batch["input_ids"][i, : len(row)] = row
        batch["attention_mask"][i, : len(row)] = 1
        batch["mm_token_type_ids"][i, : len(row)] = typ
        batch["completion_mask"][i, start : start + length] = 1
    if pixels:
        batch["pixel_values_videos"] = torch.cat(pixels)
        batch["video_grid_thw"] = torch.cat(grids)
    return batch


def token_logprobs(model, batch: dict[str, torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
    """Log-probability of every token given the ones before it, ``[N, L]`` (0 at position 0);
    multiply by ``completion_mask`` to keep the completions'. ``temperature``: the one the
    completions were sampled at (the policy that sampled them is ``softmax(logits / T)``, as
    TRL's GRPO reads it; at T = 0.5 the plain logits' gradients were 7 times off in ratio)."""
    batch = on_model_device(model, batch)
    inputs = {k: v for k, v in batch.items() if k != "completion_mask"}
    logits = model(**inputs, use_cache=False).logits[:, :-1].float()  # [N, L-1, V]
    if temperature != 1.0:
        logits = logits / temperature
    targets = batch["input_ids"][:, 1:]  # [N, L-1]
    picked = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1)
    return torch.nn.functional.pad(picked, (1, 0))  # [N, L], aligned with input_ids


def shuffle_frames(
    prompt: prompts.Prompt | prompts.PackedPrompt, rng: np.random.Generator
) -> prompts.Prompt:
    """The prompt with the frames of each of its multi-frame videos in a random order other than
    their own (single images, such as the anchored prompt's initial and current frames, stay).
    An order drawn the same as the video's would leave nothing for T-GRPO to compare: half of
    all draws for a 2-frame clip. A packed prompt gives an unpacked one."""
    videos = tuple(_reordered(v, rng) for v in prompt.videos)
    return prompts.Prompt(prompt.messages, videos, prompt.answer, prompt.choices)


def _reordered(video: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if len(video) < 2:
        return video
    order = rng.permutation(len(video))
    while (order == np.arange(len(video))).all():
        order = rng.permutation(len(video))
    return video[order]


def _scores(reward_fn, texts, fields) -> torch.Tensor:
    return torch.tensor([0.0 if r is None else float(r) for r in reward_fn(texts, **fields)])


def _temporal_bonus(engine, tokenizer, samples, accuracy_fn, accuracy, fields, params, vision,
                    seed, cfg, by_component) -> torch.Tensor:  # fmt: skip
    """T-GRPO's bonus ``[N]``: a second generation of the prompts that hold a video of two frames
    or more, with those frames shuffled; correct means an accuracy above ``temporal_correct``
    (``accuracy``: ``[N]`` on the ordered videos), on both generations. Logs the shuffled
    generation's mean accuracy and the mean bonus."""
    from rollout.engine import Request

    g = cfg.group_size
    bonus = torch.zeros(len(accuracy))
    orderable = [i for i, s in enumerate(samples) if any(len(v) > 1 for v in s.prompt.videos)]
    if orderable:
        rng = np.random.default_rng(seed)
        videos = bool(getattr(engine, "needs_videos", False))  # vLLM takes frames, not patches
        requests = [Request(**prompts.encode(shuffle_frames(samples[i].prompt, rng), tokenizer,
                                             vision, keep_videos=videos)) for i in orderable]  # fmt: skip
        completions = engine.generate(requests, params)
        shuffled_texts = [tokenizer.decode(c, skip_special_tokens=False)
                          for group in completions for c in group]  # fmt: skip
        rows = [i * g + k for i in orderable for k in range(g)]
        mine = {name: [values[r] for r in rows] for name, values in fields.items()}
        shuffled = _scores(accuracy_fn, shuffled_texts, mine)
        bonus[rows] = temporal_bonus(accuracy[rows], shuffled, g, cfg.temporal_bonus, cfg.temporal_mu,
                                     cfg.temporal_correct)  # fmt: skip
        by_component["shuffled_video_reward"] = float(shuffled.mean())
    by_component["temporal_bonus"] = float(bonus.mean())
    return bonus


@dataclass
class StepResult:
    """What one step did (all plain floats, for logging)."""

    reward_mean: float
    reward_std: float
    rewards_by_component: dict[str, float]
    loss: float
    kl: float
    clip_fraction: float
    completion_tokens: float
    groups_used: int
    groups_total: int


def grpo_step(
    policy,
    update: Callable[[torch.Tensor], None],
    engine,
    tokenizer,
    samples: Sequence,
    reward_fn: Callable[..., list[float | None]],
    cfg: GRPOConfig,
    vision: VisionSpec | None = None,
    reference=None,
    seed: int | None = None,
    components: Callable[..., dict[str, list[float | None]]] | None = None,
    accuracy_fn: Callable[..., list[float | None]] | None = None,
) -> StepResult:
    """Sample, reward, and update ``policy`` on ``samples`` (``cfg.updates`` times).

    Args:
        policy: the model being trained (the engine generates with it); a DeepSpeed engine works.
        update: takes the loss and makes the step: backward, clip, optimizer step
            (:func:`optimizer_update`, or DeepSpeed's ``backward`` + ``step``).
        engine: a rollout engine over ``policy`` (its video cache is cleared: weights change).
        tokenizer: decodes completions for the reward functions.
        samples: :class:`critic.data.samples.Sample` objects.
        reward_fn: TRL-style ``f(completions, **fields) -> list[float | None]``; None counts 0.
        cfg: the step's settings.
        reference: the frozen reference model, needed when ``cfg.kl_coef > 0``.
        seed: seeds the sampling.
        components: optional ``f(completions, **fields) -> {name: values}`` for logging.
        accuracy_fn: the reward without its format part, which decides T-GRPO's correct
            completions (``cfg.temporal_bonus > 0``); default ``reward_fn``.
    """
    from rollout.engine import Request, SamplingParams

    if cfg.kl_coef > 0 and reference is None:
        raise GRPOConfigError(f"kl_coef={cfg.kl_coef} needs a reference model")
    vision = vision or VisionSpec()
    videos = bool(getattr(engine, "needs_videos", False))  # vLLM takes frames, not patches
    requests = [
        Request(**prompts.encode(s.prompt, tokenizer, vision, keep_videos=videos)) for s in samples
    ]
    params = SamplingParams(n=cfg.group_size, max_new_tokens=cfg.max_new_tokens,
                            temperature=cfg.temperature, top_p=cfg.top_p, seed=seed)  # fmt: skip
    if getattr(engine, "cache", None) is not None:
        engine.cache.clear()
    policy.eval()
    completions = engine.generate(requests, params)  # [B][G][tokens]
    texts = [tokenizer.decode(c, skip_special_tokens=False) for group in completions for c in group]
    fields = sample_fields(samples, cfg.group_size)
    rewards = _scores(reward_fn, texts, fields)
    by_component = {}
    if components is not None:
        for name, values in components(texts, **fields).items():
            known = [v for v in values if v is not None]
            by_component[name] = float(sum(known) / len(known)) if known else math.nan
    if cfg.temporal_bonus > 0:
        accuracy = rewards if accuracy_fn is None else _scores(accuracy_fn, texts, fields)
        bonus = _temporal_bonus(engine, tokenizer, samples, accuracy_fn or reward_fn, accuracy,
                                fields, params, vision, seed, cfg, by_component)  # fmt: skip
        rewards = rewards + bonus

    keep = torch.ones(len(samples), dtype=torch.bool)
    if cfg.dynamic_sampling:
        keep = informative_groups(rewards, cfg.group_size)
    result = StepResult(
        reward_mean=float(rewards.mean()), reward_std=float(rewards.std()) if len(rewards) > 1 else 0.0,
        rewards_by_component=by_component, loss=0.0, kl=0.0, clip_fraction=0.0,
        completion_tokens=float(sum(len(c) for g in completions for c in g) / len(texts)),
        groups_used=int(keep.sum()), groups_total=len(samples),
    )  # fmt: skip
    kept_here = bool(keep.any())
    if not any_rank(kept_here):
        # nothing to learn from: every group's rewards were equal, on every process; no loss or
        # KL was computed, so none is logged (a logged 0 read as a policy at its reference)
        result.loss = result.kl = result.clip_fraction = math.nan
        return result
    if not kept_here:
        # other processes learn from theirs, and DeepSpeed's update is a collective: this one
        # takes its part with its whole batch at weight 0 (the same modules run forward, so
        # ZeRO-3 gathers the same weights), adding nothing to the gradients they average
        keep = torch.ones_like(keep)
    rows = keep.repeat_interleave(cfg.group_size)
    advantages = group_advantages(rewards, cfg.group_size, cfg.advantage_scale)[rows]
    kept = [i for i in range(len(samples)) if keep[i]]
    batch = sequences([requests[i] for i in kept], [completions[i] for i in kept],
                      tokenizer.pad_token_id, tokenizer.eos_token_id, cfg.max_new_tokens)  # fmt: skip
    mask = batch["completion_mask"]  # [N, L]
    # this process's loss is a mean over its own tokens (or completions): weighted so that the
    # processes' averaged gradients are those of one mean over all of theirs (1 alone)
    if not kept_here:
        units = 0.0
    elif cfg.loss == "clip" and cfg.aggregation == "token":  # "constant" is a mean over completions
        units = float(mask.sum())
    else:  # a mean over completions
        units = float(len(mask))
    share = rank_share(units)
    policy.train()
    ref = old = None
    if reference is not None and cfg.kl_coef > 0:
        with torch.no_grad():
            ref = token_logprobs(reference, batch, cfg.temperature)
    if cfg.updates > 1:  # the sampling policy's, kept across the batch's updates
        with torch.no_grad():
            old = token_logprobs(policy, batch, cfg.temperature)
    stats_seen = []
    for _ in range(cfg.updates):
        logprobs = token_logprobs(policy, batch, cfg.temperature)  # [N, L]
        sampled = logprobs.detach() if old is None else old  # one update: the current policy
        if cfg.loss == "reg":
            loss, stats = reg_grpo_loss(logprobs, sampled, advantages, mask, cfg.group_size)
        else:
            loss, stats = grpo_loss(logprobs, sampled, advantages, mask, cfg.eps_low,
                                    cfg.eps_high, ref, cfg.kl_coef, cfg.aggregation,
                                    cfg.max_new_tokens)  # fmt: skip
        update(loss * share)  # 0 where this process kept no group
        stats_seen.append(stats)
    policy.eval()
    if not kept_here:
        # nothing of this process's was learned: left out of the run's means (over_ranks)
        result.loss = result.kl = result.clip_fraction = math.nan
        return result
    result.loss = float(np.mean([float(s.policy_loss) for s in stats_seen]))
    result.kl = float(np.mean([float(s.kl) for s in stats_seen]))
    result.clip_fraction = float(np.mean([float(s.clip_fraction) for s in stats_seen]))
    return result


def sync_rollout_weights(engine, policy) -> bool:
    """Give a rollout engine that holds its own copy of the weights (vLLM) the policy's current
    weights, in Hugging Face naming; an engine that generates with the policy itself
    (:class:`rollout.hf.HFEngine`) needs nothing. Call it after every optimizer step, so each
    step's completions come from the weights being trained. Returns whether weights were sent.

    Under DeepSpeed ZeRO-3 call it inside ``deepspeed.zero.GatheredParameters``: the state dict
    of partitioned parameters is empty.
    """
    if getattr(engine, "model", None) is policy or not hasattr(engine, "load_weights"):
        return False
    engine.load_weights([(name, tensor.detach()) for name, tensor in policy.state_dict().items()])
    return True
