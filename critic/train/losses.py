"""GRPO's pieces as pure functions (torchtune style): advantages, the clipped token loss, KL,
and the variants the critic recipes use. Shapes in comments: ``B`` prompts, ``G`` completions per
prompt, ``N = B * G`` completions (grouped consecutively: completions ``g*G .. g*G+G-1`` answer
prompt ``g``), ``T`` completion tokens.

- GRPO (DeepSeekMath): advantage = (r - group mean) / (group std + eps); PPO's clipped surrogate.
- Dr. GRPO: no std division (it over-weights near-uniform groups), and the loss summed over tokens
  and divided by a constant, completions times the generation budget (``constant``), so a token's
  weight does not depend on the other completions' lengths.
- DAPO: clip-higher (``eps_high > eps_low``), dynamic sampling (drop groups whose rewards are all
  equal: their advantages are zero and they only dilute the batch), token-level averaging (the
  loss's mean over the batch's tokens, ``token``).
- Reg-GRPO (DeepVideo-R1): regress the advantage with the group-normalised policy ratio instead of
  clipping it.
- T-GRPO (Video-R1): a bonus for the correct answers of groups whose share correct on the ordered
  video, ``p``, is at least ``mu`` times the share on shuffled frames, ``p~`` (``mu < 1`` pays
  ties too, as Video-R1's 0.8 does), so the model is paid for using temporal order.
- k3 KL estimator to a reference policy (Schulman): ``exp(ref - lp) - (ref - lp) - 1`` per token.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

ADVANTAGE_SCALES = ("std", "none")
LOSS_AGGREGATIONS = ("token", "sequence", "constant")


def _grouped(values: torch.Tensor, group_size: int) -> torch.Tensor:
    if group_size < 2:
        raise ValueError(f"group_size={group_size} must be >= 2 (GRPO compares completions)")
    if values.dim() != 1 or values.numel() % group_size:
        raise ValueError(
            f"expected a flat tensor whose length is a multiple of group_size={group_size}, got "
            f"shape {tuple(values.shape)}"
        )
    return values.view(-1, group_size)  # [B, G]


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: str = "std", eps: float = 1e-4
) -> torch.Tensor:
    """Advantages ``[N]`` of rewards ``[N]``: centred on the group mean, divided by the group's
    (unbiased) std for ``scale="std"`` (GRPO) or not for ``"none"`` (Dr. GRPO)."""
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(
            f"scale={scale!r} is not an advantage scale; pick one of {list(ADVANTAGE_SCALES)}"
        )
    groups = _grouped(rewards.float(), group_size)  # [B, G]
    centred = groups - groups.mean(dim=1, keepdim=True)
    if scale == "std":
        centred = centred / (groups.std(dim=1, keepdim=True) + eps)
    return centred.reshape(-1)  # [N]


def informative_groups(rewards: torch.Tensor, group_size: int, tol: float = 1e-6) -> torch.Tensor:
    """DAPO's dynamic sampling: bool ``[B]``, true for groups whose rewards are not all equal."""
    groups = _grouped(rewards.float(), group_size)  # [B, G]
    return (groups.max(dim=1).values - groups.min(dim=1).values) > tol


def temporal_bonus(
    rewards: torch.Tensor,
    shuffled_rewards: torch.Tensor,
    group_size: int,
    alpha: float = 0.3,
    mu: float = 0.8,
    correct: float = 0.5,
) -> torch.Tensor:
    """T-GRPO (Video-R1): ``[N]`` bonus ``alpha`` for the correct completions (reward > ``correct``)
    of groups whose share correct on the ordered video, ``p``, is at least ``mu`` times the share on
    shuffled frames, ``p~``; zero elsewhere. Give it the answers' accuracy, not a total with a
    format reward in it (Video-R1 thresholds the accuracy reward alone): a well-formatted wrong
    answer would count as correct.

    Args:
        rewards: ``[N]`` accuracy rewards on the ordered video.
        shuffled_rewards: ``[M]`` accuracy rewards of completions for the same prompts with
            shuffled frames, grouped the same way (``M = B * G'``).
    """
    ordered = _grouped(rewards.float(), group_size) > correct  # [B, G]
    shuffled = shuffled_rewards.float().view(ordered.shape[0], -1) > correct  # [B, G']
    p, p_shuffled = ordered.float().mean(dim=1), shuffled.float().mean(dim=1)  # [B]
    earns = (p >= mu * p_shuffled) & (p > 0)  # [B]
    return (alpha * (ordered & earns[:, None]).float()).reshape(-1)  # [N]


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(policy || reference): ``exp(r) - r - 1``, ``r = ref - lp``;
    unbiased, always >= 0. Shapes ``[N, T]``."""
    delta = ref_logprobs - logprobs
    return torch.exp(delta) - delta - 1.0


class PolicyLossStats(NamedTuple):
    """Detached statistics of one loss call (for logging)."""

    policy_loss: torch.Tensor
    kl: torch.Tensor
    clip_fraction: torch.Tensor
    ratio_mean: torch.Tensor


def _aggregate(
    per_token: torch.Tensor, mask: torch.Tensor, how: str, max_tokens: int | None = None
) -> torch.Tensor:
    if how == "token":  # every token of the batch weighs the same (DAPO)
        return (per_token * mask).sum() / mask.sum().clamp(min=1)
    if how == "constant":  # every token weighs 1 / (N * budget), whatever the others' lengths
        return (per_token * mask).sum() / (len(mask) * max_tokens)
    # every sequence weighs the same (the original GRPO)
    lengths = mask.sum(dim=1).clamp(min=1)  # [N]
    return ((per_token * mask).sum(dim=1) / lengths).mean()


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    ref_logprobs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    aggregation: str = "token",
    max_tokens: int | None = None,
) -> tuple[torch.Tensor, PolicyLossStats]:
    """The clipped surrogate per token, plus ``kl_coef`` times k3 KL to the reference.

    Args:
        logprobs: ``[N, T]`` log-probabilities of the sampled tokens under the policy (with grad).
        old_logprobs: ``[N, T]`` the same under the policy that sampled them (no grad).
        advantages: ``[N]`` one per completion, broadcast over its tokens.
        mask: ``[N, T]`` 1 on completion tokens, 0 on padding.
        eps_low, eps_high: the ratio is clipped to ``[1 - eps_low, 1 + eps_high]``
            (``eps_high > eps_low`` is DAPO's clip-higher).
        ref_logprobs: ``[N, T]`` reference log-probabilities, needed when ``kl_coef > 0``.
        aggregation: ``token`` (DAPO: a mean over the batch's tokens), ``sequence`` (GRPO: a
            mean over completions of each one's token mean) or ``constant`` (Dr. GRPO: the sum
            over tokens divided by ``N * max_tokens``).
        max_tokens: the generation budget per completion, needed for ``constant``.

    Returns:
        the scalar loss to minimise, and detached stats.
    """
    if aggregation not in LOSS_AGGREGATIONS:
        raise ValueError(
            f"aggregation={aggregation!r} is not a loss aggregation; pick one of {list(LOSS_AGGREGATIONS)}"
        )
    if kl_coef > 0 and ref_logprobs is None:
        raise ValueError(f"kl_coef={kl_coef} needs ref_logprobs (the reference policy's)")
    if aggregation == "constant" and not (isinstance(max_tokens, int) and max_tokens >= 1):
        raise ValueError(
            f"aggregation='constant' divides by completions x max_tokens; max_tokens={max_tokens!r} "
            "must be the generation budget, an integer >= 1"
        )
    # the rewards, advantages and mask are made on the CPU, the log-probabilities where the model is
    mask = mask.to(logprobs.device, logprobs.dtype)
    ratio = torch.exp(logprobs - old_logprobs)  # [N, T]
    adv = advantages.to(logprobs.device, logprobs.dtype)[:, None]  # [N, 1]
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * adv
    per_token = -torch.minimum(unclipped, clipped)  # [N, T]
    kl = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    if ref_logprobs is not None:
        kl_tokens = k3_kl(logprobs, ref_logprobs)  # [N, T]
        kl = _aggregate(kl_tokens, mask, aggregation, max_tokens)
        if kl_coef > 0:
            per_token = per_token + kl_coef * kl_tokens
    loss = _aggregate(per_token, mask, aggregation, max_tokens)
    was_clipped = (clipped < unclipped).to(logprobs.dtype)  # the clip bound the objective
    stats = PolicyLossStats(
        policy_loss=loss.detach(),
        kl=kl.detach(),
        clip_fraction=_aggregate(was_clipped, mask, "token").detach(),
        ratio_mean=_aggregate(ratio, mask, "token").detach(),
    )
    return loss, stats


def reg_grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    group_size: int,
    beta: float = 0.1,
) -> tuple[torch.Tensor, PolicyLossStats]:
    """Reg-GRPO (DeepVideo-R1): ``mean(((rho - mean_g rho) / beta - A)^2)``.

    ``rho_i`` is completion ``i``'s mean per-token log-ratio ``log pi/pi_old`` (a length-normalised
    sequence log-ratio); centred within its group and divided by ``beta`` it is regressed onto the
    advantages ``A``: no clipping, so no gradient vanishes where PPO's clip would bind. At
    ``pi = pi_old`` the gradient is ``-2 A / beta`` times that of the centred log-ratio, the
    policy gradient's direction. (Dividing by the group's std of ``rho`` instead would be 0/0 on
    the first update of every rollout.)
    """
    if beta <= 0:
        raise ValueError(f"beta={beta!r} must be > 0")
    mask = mask.to(logprobs.device, logprobs.dtype)
    log_ratio = ((logprobs - old_logprobs) * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)  # [N]
    groups = _grouped(log_ratio, group_size)  # [B, G]
    centred = (groups - groups.mean(dim=1, keepdim=True)) / beta
    loss = ((centred.reshape(-1) - advantages.to(logprobs.device, logprobs.dtype)) ** 2).mean()
    ratio = torch.exp(logprobs - old_logprobs)
    stats = PolicyLossStats(
        policy_loss=loss.detach(),
        kl=torch.zeros(()),
        clip_fraction=torch.zeros(()),
        ratio_mean=_aggregate(ratio, mask, "token").detach(),
    )
    return loss, stats
