"""GRPO's pure functions with hand-worked numbers (worked out in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from critic.train.losses import (
    group_advantages,
    grpo_loss,
    informative_groups,
    k3_kl,
    reg_grpo_loss,
    temporal_bonus,
)


def test_group_advantages_grpo_and_dr_grpo():
    # Group 1: [1, 0, 0, 1] mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.57735.
    # Group 2: [0.2, 0.2, 0.2, 0.2]: all equal → 0 (no signal).
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.2, 0.2, 0.2, 0.2])
    grpo = group_advantages(rewards, 4, scale="std", eps=0.0 + 1e-12)
    expected = 0.5 / math.sqrt(1 / 3)  # 0.8660
    torch.testing.assert_close(grpo[:4], torch.tensor([expected, -expected, -expected, expected]))
    torch.testing.assert_close(grpo[4:], torch.zeros(4))
    dr = group_advantages(rewards, 4, scale="none")
    torch.testing.assert_close(dr, torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="group_size=1 must be >= 2"):
        group_advantages(rewards, 1)
    with pytest.raises(ValueError, match="multiple of group_size=3"):
        group_advantages(rewards, 3)
    with pytest.raises(ValueError, match=r"scale='max' is not an advantage scale"):
        group_advantages(rewards, 4, scale="max")


def test_dynamic_sampling_drops_uniform_groups():
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.5, 0.5])
    assert informative_groups(rewards, 2).tolist() == [False, True, False]


def test_dynamic_sampling_reads_float_noise_as_a_uniform_group():
    # the same reward computed twice can differ in its last float32 bit (0.5 and 0.50000012):
    # that group teaches nothing and is dropped; a group 1e-3 apart is kept
    rewards = torch.tensor([0.5, 0.5 + 1e-7, 0.5, 0.501], dtype=torch.float32)
    assert rewards[1] != rewards[0]  # the noise is there in float32
    assert informative_groups(rewards, 2).tolist() == [False, True]
    assert informative_groups(rewards, 2, tol=1e-2).tolist() == [False, False]


def test_temporal_bonus_by_hand():
    # Two prompts, G = 4. Prompt 0: 3/4 correct ordered, 1/4 shuffled → 0.75 >= 0.8 * 0.25: bonus
    # 0.3 to its 3 correct completions. Prompt 1: 1/4 ordered vs 3/4 shuffled → 0.25 < 0.6: none.
    ordered = torch.tensor([1.0, 0.9, 0.0, 0.8, 1.0, 0.0, 0.0, 0.0])
    shuffled = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    bonus = temporal_bonus(ordered, shuffled, 4, alpha=0.3, mu=0.8)
    torch.testing.assert_close(bonus, torch.tensor([0.3, 0.3, 0.0, 0.3, 0, 0, 0, 0]))


def test_temporal_bonus_needs_mu_times_the_shuffled_share_and_pays_at_it():
    # G = 4 ordered, G' = 5 shuffled: p = 3/4 = 0.75 against p~ = 4/5 = 0.8. 0.75 >= 0.8 × 0.8 =
    # 0.64: bonus 0.3 to the 3 correct completions (p >= p~ alone would pay none)
    ordered = torch.tensor([1.0, 1.0, 1.0, 0.0])
    shuffled = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0])
    bonus = temporal_bonus(ordered, shuffled, 4, alpha=0.3, mu=0.8)
    torch.testing.assert_close(bonus, torch.tensor([0.3, 0.3, 0.3, 0.0]))
    # exactly at the boundary: p = 0.75 = 0.75 × p~ (1.0, every shuffled answer right) earns it
    at = temporal_bonus(ordered, torch.ones(4), 4, alpha=0.3, mu=0.75)
    torch.testing.assert_close(at, torch.tensor([0.3, 0.3, 0.3, 0.0]))


def test_k3_kl_by_hand():
    # r = ref - lp = log 0.5 - log 0.25 = log 2: exp(log 2) - log 2 - 1 = 2 - 0.6931 - 1 = 0.3069.
    lp, ref = torch.log(torch.tensor([[0.25, 0.5]])), torch.log(torch.tensor([[0.5, 0.5]]))
    torch.testing.assert_close(k3_kl(lp, ref), torch.tensor([[2 - math.log(2) - 1, 0.0]]))


def test_clipped_surrogate_by_hand():
    # Two completions, two tokens each; the second has one padding token.
    # Ratios: exp(log 1.5) = 1.5, exp(log 0.5) = 0.5, exp(0) = 1.
    old = torch.zeros(2, 2)
    lp = torch.tensor([[math.log(1.5), 0.0], [math.log(0.5), 0.0]], requires_grad=True)
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1, 1], [1, 0]])
    loss, stats = grpo_loss(lp, old, adv, mask, eps_low=0.2, eps_high=0.2)
    # Token terms -min(r A, clip(r) A): (1.5, A=1) → -min(1.5, 1.2) = -1.2 (clipped);
    # (1.0, A=1) → -1.0; (0.5, A=-1) → -min(-0.5, -0.8) = 0.8 (clipped). Token mean: (-1.2 - 1 + 0.8)/3.
    assert loss.item() == pytest.approx((-1.2 - 1.0 + 0.8) / 3)
    assert stats.clip_fraction.item() == pytest.approx(2 / 3)
    assert stats.ratio_mean.item() == pytest.approx((1.5 + 1.0 + 0.5) / 3)
    # Sequence-level: mean of per-sequence means: ((-1.2 - 1) / 2 + 0.8 / 1) / 2 = -0.15.
    seq, _ = grpo_loss(lp, old, adv, mask, aggregation="sequence")
    assert seq.item() == pytest.approx(-0.15)
    # Clip-higher (DAPO): eps_high 0.6 lets ratio 1.5 through: (-1.5 - 1 + 0.8) / 3.
    higher, _ = grpo_loss(lp, old, adv, mask, eps_low=0.2, eps_high=0.6)
    assert higher.item() == pytest.approx((-1.5 - 1.0 + 0.8) / 3)
    # Gradients flow only where the clip does not bind: token (0, 1) gets d/dlp(-r A) = -1 / 3.
    loss.backward()
    torch.testing.assert_close(lp.grad, torch.tensor([[0.0, -1 / 3], [0.0, 0.0]]))


def test_a_ratio_past_the_clip_on_the_side_the_min_ignores_is_not_clipped():
    # ratio 0.5 with A = +1: min(0.5, clip 0.8) = 0.5, the unclipped term; ratio 1.5 with A = -1:
    # min(-1.5, clip -1.2) = -1.5, unclipped too. The clip binds neither: clip fraction 0, loss
    # (-0.5 + 1.5) / 2 = 0.5, and both tokens get the gradient d/dlp(-r A) = -r A / 2: -0.25, 0.75
    lp = torch.tensor([[math.log(0.5)], [math.log(1.5)]], requires_grad=True)
    loss, stats = grpo_loss(lp, torch.zeros(2, 1), torch.tensor([1.0, -1.0]), torch.ones(2, 1),
                            eps_low=0.2, eps_high=0.2)  # fmt: skip
    assert loss.item() == pytest.approx(0.5)
    assert stats.clip_fraction.item() == 0.0
    loss.backward()
    torch.testing.assert_close(lp.grad, torch.tensor([[-0.25], [0.75]]))


def test_kl_term_by_hand():
    lp = torch.log(torch.tensor([[0.25]]))
    ref = torch.log(torch.tensor([[0.5]]))
    # Ratio 1 (old = lp), A = 0: surrogate 0, so the loss is kl_coef * k3 = 0.1 * 0.3069.
    loss, stats = grpo_loss(lp, lp.detach(), torch.tensor([0.0]), torch.ones(1, 1), ref_logprobs=ref,
                            kl_coef=0.1)  # fmt: skip
    assert loss.item() == pytest.approx(0.1 * (1 - math.log(2)))
    assert stats.kl.item() == pytest.approx(1 - math.log(2))
    with pytest.raises(ValueError, match=r"kl_coef=0\.1 needs ref_logprobs"):
        grpo_loss(lp, lp, torch.tensor([0.0]), torch.ones(1, 1), kl_coef=0.1)


def test_reg_grpo_by_hand():
    # One group of 2, one token each: log-ratios 0.1 and -0.1, centred (mean 0) and / beta 0.1:
    # +1 and -1. Advantages ±0.7071 (GRPO's for rewards 1, 0): each term (1 - 0.7071)² = 0.08579.
    lp = torch.tensor([[0.1], [-0.1]])
    adv = group_advantages(torch.tensor([1.0, 0.0]), 2, eps=0.0)
    loss, _ = reg_grpo_loss(lp, torch.zeros(2, 1), adv, torch.ones(2, 1), 2, beta=0.1)
    assert loss.item() == pytest.approx((1 - 1 / math.sqrt(2)) ** 2)
    # Swapped advantages: (1 + 0.7071)² = 2.9142 each.
    loss, _ = reg_grpo_loss(lp, torch.zeros(2, 1), -adv, torch.ones(2, 1), 2, beta=0.1)
    assert loss.item() == pytest.approx((1 + 1 / math.sqrt(2)) ** 2)
    # At pi = pi_old the gradient points along the advantage: d/dlp_i = -2 A_i / beta · (1/2) / N...
    # worked: centred_i = (lp_i - mean)/beta; dL/dlp_0 = (2/N) Σ_j (c_j - A_j) dc_j/dlp_0 with
    # c = 0: dc_0/dlp_0 = 0.5/beta, dc_1/dlp_0 = -0.5/beta → (2/2)(-A_0·5 + A_1·5) = -10 A_0 (A_1 = -A_0).
    at_old = torch.zeros(2, 1, requires_grad=True)
    loss, _ = reg_grpo_loss(at_old, torch.zeros(2, 1), adv, torch.ones(2, 1), 2, beta=0.1)
    loss.backward()
    torch.testing.assert_close(at_old.grad, torch.tensor([[-10 * 0.70710678], [10 * 0.70710678]]))


def test_constant_aggregation_weighs_a_token_alike_whatever_the_other_lengths():
    # Dr. GRPO: the loss is a sum over tokens / (N * budget). At ratio 1 the loss is -sum(A * mask)
    # / (N * T), so d loss / d lp of a token of completion 0 (A = +1) is -1 / (2 * 8) = -0.0625,
    # whether its partner (A = -1) has 2 tokens or 8. The token mean (DAPO) gives -1/4 and -1/10.
    grads = {}
    for how in ("constant", "token"):
        for partner in (2, 8):
            lp = torch.zeros(2, 8, requires_grad=True)
            mask = torch.zeros(2, 8)
            mask[0, :2], mask[1, :partner] = 1, 1
            loss, _ = grpo_loss(lp, lp.detach(), torch.tensor([1.0, -1.0]), mask,
                                aggregation=how, max_tokens=8)  # fmt: skip
            loss.backward()
            grads[how, partner] = float(lp.grad[0, 0])
    assert grads["constant", 2] == pytest.approx(-0.0625) == grads["constant", 8]
    assert (grads["token", 2], grads["token", 8]) == pytest.approx((-0.25, -0.1))
    with pytest.raises(ValueError, match=r"max_tokens=None must be the generation budget"):
        grpo_loss(lp, lp.detach(), torch.tensor([1.0, -1.0]), mask, aggregation="constant")
