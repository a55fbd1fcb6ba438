"""One GRPO step on a real tiny Qwen2.5-VL through the transformers engine."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from critic import prompts
from critic.data.episodes import Episode
from critic.data.samples import pretext_samples
from critic.train.grpo import (
    GRPOConfig,
    GRPOConfigError,
    grpo_step,
    sample_fields,
    sequences,
    token_logprobs,
)
from critic.train.losses import reg_grpo_loss
from critic.train.optim import learning_rate, optimizer_update
from rollout.engine import Request
from rollout.hf import HFEngine


def _samples(n: int = 2):
    t = 12
    episode = Episode(
        "ep", "Reacher-v5", "Touch the red target.",
        {"view": np.random.default_rng(0).integers(0, 256, (t, 28, 28, 3), dtype=np.uint8)},
        np.linspace(0, 1, t, dtype=np.float32), np.arange(t), True,
    )  # fmt: skip
    return pretext_samples(episode, np.random.default_rng(0), count=n, frames=2)


def test_config_errors_are_typed_and_exact():
    with pytest.raises(GRPOConfigError) as err:
        GRPOConfig(group_size=1)
    assert str(err.value) == "group_size=1 must be an integer >= 2 (GRPO compares completions)"
    with pytest.raises(GRPOConfigError, match="loss='ppo' is not a GRPO loss"):
        GRPOConfig(loss="ppo")
    with pytest.raises(GRPOConfigError, match=r"temperature=0 must be >= 1e-05: GRPO needs"):
        GRPOConfig(temperature=0)
    # below it the engine refuses to sample: it was a ValueError at the first GRPO step, after
    # the model loaded and the stages before had trained
    with pytest.raises(GRPOConfigError, match=r"temperature=1e-06 must be >= 1e-05"):
        GRPOConfig(temperature=1e-6)
    with pytest.raises(GRPOConfigError, match=r"^temporal_correct=1.0 must be in \[0, 1\): a "):
        GRPOConfig(temporal_correct=1.0)
    # numpy ints are the ints they are: a ValueError mid-step from the constant aggregation
    cfg = GRPOConfig(group_size=np.int64(2), max_new_tokens=np.int64(8), updates=np.int32(1),
                     aggregation="constant")  # fmt: skip
    assert [type(v) for v in (cfg.group_size, cfg.max_new_tokens, cfg.updates)] == [int] * 3


def test_sample_fields_repeat_per_completion():
    samples = _samples(2)
    fields = sample_fields(samples, 3)
    assert (
        fields["transform"]
        == [samples[0].target["transform"]] * 3 + [samples[1].target["transform"]] * 3
    )
    assert fields["answer"] == ["transform"] * 6 and len(fields["choices"]) == 6


def test_sequences_layout_by_hand():
    request = Request(torch.tensor([7, 8, 9]), torch.tensor([0, 2, 0]))
    # G = 2: one completion stopped early (EOS put back), one hit max_new_tokens = 3 (no EOS).
    batch = sequences(
        [request], [[[4], [5, 6, 7]]], pad_token_id=0, eos_token_id=1, max_new_tokens=3
    )
    assert batch["input_ids"].tolist() == [[7, 8, 9, 4, 1, 0], [7, 8, 9, 5, 6, 7]]
    assert batch["completion_mask"].tolist() == [[0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0], [1] * 6]
    assert batch["mm_token_type_ids"].tolist() == [[0, 2, 0, 0, 0, 0], [0, 2, 0, 0, 0, 0]]


def test_token_logprobs_match_the_logits(tiny_model):
    model, _ = tiny_model
    ids = torch.tensor([[3, 4, 5, 6]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
             "mm_token_type_ids": torch.zeros_like(ids, dtype=torch.int32)}  # fmt: skip
    with torch.no_grad():
        got = token_logprobs(model, batch)
        logits = model(**batch).logits
    expected = torch.log_softmax(logits[0, 1], -1)[5]  # token 5 given tokens 3, 4
    torch.testing.assert_close(got[0, 2], expected)
    assert got[0, 0] == 0
    # sampled at T = 0.5, the sampling policy is softmax(logits / T): its log-probabilities
    with torch.no_grad():
        cooler = token_logprobs(model, batch, temperature=0.5)
    torch.testing.assert_close(cooler[0, 2], torch.log_softmax(logits[0, 1] / 0.5, -1)[5])
    assert not torch.allclose(cooler[0, 1:], got[0, 1:])


def _reward_by_length(completions, **fields):
    return [float(len(c) % 3) / 2 for c in completions]  # varied within groups


def test_step_updates_the_policy_and_dynamic_sampling_skips_flat_groups(tiny_model):
    model, tokenizer = tiny_model
    policy = copy.deepcopy(model)
    engine = HFEngine(policy, tokenizer.pad_token_id, tokenizer.eos_token_id)
    optimizer = torch.optim.SGD(policy.parameters(), lr=1e-2)
    cfg = GRPOConfig(group_size=4, max_new_tokens=6)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    update = optimizer_update(policy, optimizer)
    result = grpo_step(
        policy, update, engine, tokenizer, _samples(2), _reward_by_length, cfg, seed=0
    )
    assert result.groups_total == 2 and result.groups_used == 2
    assert 0 < result.completion_tokens <= 6
    assert any(not torch.equal(p, before[n]) for n, p in policy.named_parameters())
    # Constant rewards: every group is flat; with dynamic sampling nothing is learned.
    flat = GRPOConfig(group_size=4, max_new_tokens=6, dynamic_sampling=True)
    snapshot = {n: p.detach().clone() for n, p in policy.named_parameters()}
    result = grpo_step(policy, optimizer_update(policy, optimizer), engine, tokenizer, _samples(2),
                       lambda completions, **f: [1.0] * len(completions), flat, seed=1)  # fmt: skip
    assert result.groups_used == 0 and result.reward_std == 0.0
    assert all(torch.equal(p, snapshot[n]) for n, p in policy.named_parameters())
    # no loss or KL was computed: none is reported (a 0 read as a policy at its reference)
    assert all(math.isnan(v) for v in (result.loss, result.kl, result.clip_fraction))


def test_the_clip_binds_from_a_batchs_second_update(tiny_model):
    # one update per batch: the ratio to the sampling policy is 1, and eps_low / eps_high (the
    # config's clip-higher) did nothing; with updates=2 the second update's ratio moves off 1
    model, tokenizer = tiny_model
    results, calls = {}, {}
    for updates in (1, 2):
        policy = copy.deepcopy(model)
        engine = HFEngine(policy, tokenizer.pad_token_id, tokenizer.eos_token_id)
        inner = optimizer_update(policy, torch.optim.SGD(policy.parameters(), lr=0.5))
        calls[updates] = 0

        def update(loss, inner=inner, updates=updates):
            calls[updates] += 1
            inner(loss)

        cfg = GRPOConfig(group_size=4, max_new_tokens=6, eps_low=0.0, eps_high=0.0,
                         updates=updates)  # fmt: skip
        results[updates] = grpo_step(policy, update, engine, tokenizer, _samples(2),
                                     _reward_by_length, cfg, seed=0)  # fmt: skip
    assert calls == {1: 1, 2: 2}
    assert results[1].clip_fraction == 0.0  # at one update the clip cannot bind, whatever eps
    assert results[2].clip_fraction > 0.0  # the second update's ratio is off 1: clipped at 0
    with pytest.raises(GRPOConfigError, match=r"updates=0 must be an integer >= 1"):
        GRPOConfig(updates=0)


def test_a_step_reads_its_samples_at_their_temperature_and_weights_its_loss_by_its_share(
    tiny_model, monkeypatch
):
    # the completions sampled at T = 0.5 were scored by the plain logits; and under DeepSpeed
    # each process's token mean weighed its own tokens, whatever the others held
    from critic.train import grpo as grpo_module

    model, tokenizer = tiny_model
    policy = copy.deepcopy(model)
    engine = HFEngine(policy, tokenizer.pad_token_id, tokenizer.eos_token_id)
    temperatures, units, losses = [], [], []
    real = grpo_module.token_logprobs

    def spy(model, batch, temperature=1.0):
        temperatures.append(temperature)
        return real(model, batch, temperature)

    monkeypatch.setattr(grpo_module, "token_logprobs", spy)
    monkeypatch.setattr(grpo_module, "rank_share", lambda n: units.append(n) or 2.0)
    cfg = GRPOConfig(group_size=4, max_new_tokens=6, temperature=0.5, kl_coef=0.1)
    result = grpo_step(policy, lambda loss: losses.append(float(loss.detach())), engine, tokenizer,
                       _samples(2), _reward_by_length, cfg, reference=copy.deepcopy(model),
                       seed=0)  # fmt: skip
    assert temperatures == [0.5, 0.5]  # the reference's log-probabilities and the policy's
    # its kept tokens (8 completions of 1 to 6 tokens, each with its EOS where it stopped)
    (tokens,) = units
    assert tokens == int(tokens) and 8 <= tokens <= 8 * 7
    assert losses == [pytest.approx(2.0 * result.loss)]  # the loss weighted by the share


def test_kl_to_a_reference_and_reg_grpo(tiny_model, monkeypatch):
    model, tokenizer = tiny_model
    policy, reference = copy.deepcopy(model), copy.deepcopy(model)
    with torch.no_grad():  # a reference that differs from the policy: the KL must be positive
        for p in reference.parameters():
            p.add_(0.05 * torch.randn_like(p))
    engine = HFEngine(policy, tokenizer.pad_token_id, tokenizer.eos_token_id)
    update = optimizer_update(policy, torch.optim.SGD(policy.parameters(), lr=1e-2))
    cfg = GRPOConfig(group_size=2, max_new_tokens=4, kl_coef=0.1)
    result = grpo_step(policy, update, engine, tokenizer, _samples(1), _reward_by_length, cfg,
                       reference=reference, seed=0)  # fmt: skip
    assert np.isfinite(result.loss) and result.kl > 1e-4
    with pytest.raises(GRPOConfigError, match=r"kl_coef=0\.1 needs a reference model"):
        grpo_step(policy, update, engine, tokenizer, _samples(1), _reward_by_length, cfg)
    reg = GRPOConfig(group_size=2, max_new_tokens=4, loss="reg")
    from critic.train import grpo as grpo_module

    seen = []

    def spy(logprobs, old, advantages, mask, group_size):
        seen.append(advantages.detach().clone())
        return reg_grpo_loss(logprobs, old, advantages, mask, group_size)

    monkeypatch.setattr(grpo_module, "reg_grpo_loss", spy)

    def apart(completions, **fields):  # each group's two completions rewarded apart, whatever
        return [float(i % 2) for i in range(len(completions))]  # they say (by length, they tied)

    result = grpo_step(policy, update, engine, tokenizer, _samples(1), apart, reg, seed=1)
    # one update per rollout: pi = pi_old, so every centred log-ratio is 0 and Reg-GRPO's loss is
    # mean(A^2); the clipped surrogate's would be -mean(A) over tokens
    (advantages,) = seen
    assert advantages.abs().min() > 0  # the group's completions were rewarded apart
    assert result.loss == pytest.approx(float((advantages**2).mean()), rel=1e-5)
    with pytest.raises(GRPOConfigError, match="has no effect with loss='reg'"):
        GRPOConfig(loss="reg", kl_coef=0.1)


def test_t_grpo_pays_the_bonus_when_order_helps(tiny_model):
    from critic.train.grpo import shuffle_frames

    model, tokenizer = tiny_model
    policy = copy.deepcopy(model)
    engine = HFEngine(policy, tokenizer.pad_token_id, tokenizer.eos_token_id)
    generate, sent = engine.generate, []

    def recorded(requests, params):  # what each generation is given
        sent.append([r.pixel_values_videos.numpy().copy() for r in requests])
        return generate(requests, params)

    engine.generate = recorded
    calls = []

    def ordered_right_shuffled_wrong(completions, **fields):
        calls.append(len(completions))  # 1st call: the ordered videos; 2nd: shuffled frames
        return [1.0 if len(calls) == 1 else 0.0] * len(completions)

    cfg = GRPOConfig(group_size=2, max_new_tokens=4, temporal_bonus=0.3)
    update = optimizer_update(policy, torch.optim.SGD(policy.parameters(), lr=1e-2))
    result = grpo_step(policy, update, engine, tokenizer, _samples(2),
                       ordered_right_shuffled_wrong, cfg, seed=0)  # fmt: skip
    # p = 1 on the ordered video >= 0.8 x p~ = 0: every correct completion earns alpha = 0.3
    assert calls == [4, 4]
    assert result.rewards_by_component == pytest.approx(
        {"shuffled_video_reward": 0.0, "temporal_bonus": 0.3}
    )
    assert result.reward_mean == pytest.approx(1.3)
    # the second generation saw the same prompts' frames in another order: other patches, the
    # same pixel values
    (ordered, shuffled_sent) = sent
    assert any(not np.array_equal(a, b) for a, b in zip(ordered, shuffled_sent, strict=True))
    for a, b in zip(ordered, shuffled_sent, strict=True):
        assert np.array_equal(np.sort(a, axis=None), np.sort(b, axis=None))
    prompt = _samples(1)[0].prompt
    rng = np.random.default_rng(0)
    orders = set()
    for _ in range(8):
        shuffled = shuffle_frames(prompt, rng)
        for before, after in zip(prompt.videos, shuffled.videos, strict=True):
            # same frames, as a multiset; single images stay where they are
            assert sorted(map(bytes, before)) == sorted(map(bytes, after))
            if len(before) == 1:
                np.testing.assert_array_equal(before, after)
            else:
                orders.add(tuple(next(i for i, f in enumerate(before) if np.array_equal(f, g))
                                 for g in after))  # fmt: skip
    assert orders == {(1, 0)}  # a 2-frame clip comes back reversed, never as it was
    # a training set's packed prompt shuffles as its plain one does, with the same draws
    packed = shuffle_frames(prompts.pack(prompt), np.random.default_rng(5))
    plain = shuffle_frames(prompt, np.random.default_rng(5))
    assert isinstance(packed, prompts.Prompt) and packed.messages == plain.messages
    for a, b in zip(plain.videos, packed.videos, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(GRPOConfigError, match=r"temporal_bonus=-1 must be >= 0"):
        GRPOConfig(temporal_bonus=-1)


def test_learning_rate_schedules():
    # 10 steps, lr 1.0, 2 warm-up steps: 0.5, 1.0, then 8 steps of decay from 1 toward 0
    warm = [learning_rate(s, 10, 1.0, "cosine", 2) for s in range(2)]
    assert warm == [0.5, 1.0]
    assert [learning_rate(s, 10, 1.0, "linear", 2) for s in (2, 4, 6, 9)] == pytest.approx(
        [1.0, 0.75, 0.5, 0.125]
    )
    # cosine: 0.5 (1 + cos(pi k / 8)); k = 4 → 0.5
    assert learning_rate(6, 10, 1.0, "cosine", 2) == pytest.approx(0.5)
    assert learning_rate(9, 10, 1.0, "cosine", 2) == pytest.approx(
        0.5 * (1 + np.cos(np.pi * 7 / 8))
    )
    assert {learning_rate(s, 10, 3e-4) for s in range(10)} == {3e-4}
    with pytest.raises(ValueError, match="schedule='step'"):
        learning_rate(0, 10, 1.0, "step")
    with pytest.raises(ValueError, match=r"warmup=10 must be in \[0, steps=10\)"):
        learning_rate(0, 10, 1.0, "cosine", 10)


def test_a_non_number_option_is_a_typed_error_not_a_type_error():
    with pytest.raises(GRPOConfigError, match="temperature='1' must be a finite number"):
        GRPOConfig(temperature="1")
    with pytest.raises(GRPOConfigError, match=r"top_p=1.5 must be in \(0, 1\]"):
        GRPOConfig(top_p=1.5)
    assert GRPOConfig(group_size=np.int64(3)).group_size == 3


def test_optimizer_update_refuses_a_non_finite_loss_or_gradient_norm():
    from critic.train.optim import NonFiniteError, optimizer_update

    weights = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        weights.weight.fill_(1e-3)
    before = weights.weight.detach().clone()
    optimizer = torch.optim.SGD(weights.parameters(), lr=1.0)
    update = optimizer_update(weights, optimizer, max_grad_norm=None)
    with pytest.raises(NonFiniteError, match=r"^the loss is nan$"):
        update(weights(torch.ones(1, 2)).sum() * float("nan"))
    # loss 2e-3 * 3e38 = 6e35 is finite; each gradient is 3e38, the norm sqrt(2) * 3e38
    # overflows float32 (max 3.4e38): clipping, or a step, would write inf or NaN weights
    for norm in (None, 1.0):
        update = optimizer_update(weights, optimizer, max_grad_norm=norm)
        with pytest.raises(NonFiniteError, match=r"^the gradient norm is inf$"):
            update(weights(torch.full((1, 2), 3e38)).sum())
        assert torch.equal(weights.weight, before)  # no step taken
    update(weights(torch.ones(1, 2)).sum())  # a finite one steps
    assert not torch.equal(weights.weight, before)


def test_t_grpo_reads_correct_from_accuracy_and_skips_prompts_whose_order_cannot_matter(
    tiny_model,
):
    import dataclasses

    model, tokenizer = tiny_model
    policy = copy.deepcopy(model)
    engine = HFEngine(policy, tokenizer.pad_token_id, tokenizer.eos_token_id)
    generate, sent = engine.generate, []

    def recorded(requests, params):
        sent.append(len(requests))
        return generate(requests, params)

    engine.generate = recorded
    two = _samples(1)[0]  # a 2-frame clip
    one = dataclasses.replace(two, prompt=prompts.pretext(two.prompt.videos[0][:1], ["none"]))
    calls = []

    def total(completions, **fields):  # a format reward's 0.1 on top of a wrong answer's 0.45
        return [0.55] * len(completions)

    def accuracy(completions, **fields):  # wrong on the ordered video, right on shuffled frames
        calls.append(len(completions))
        return [0.45 if len(calls) == 1 else 1.0] * len(completions)

    cfg = GRPOConfig(group_size=2, max_new_tokens=4, temporal_bonus=0.3)
    update = optimizer_update(policy, torch.optim.SGD(policy.parameters(), lr=1e-2))
    result = grpo_step(policy, update, engine, tokenizer, [two, one], total, cfg, seed=0,
                       accuracy_fn=accuracy)  # fmt: skip
    # the ordered answers' total (0.55) is above temporal_correct = 0.5, their accuracy is not:
    # p = 0 on the ordered video earns nothing (it earned 0.3 when the total decided)
    assert result.rewards_by_component == pytest.approx(
        {"shuffled_video_reward": 1.0, "temporal_bonus": 0.0}
    )
    # the single-frame prompt, the same video shuffled, was not generated a second time
    assert sent == [2, 1] and calls == [4, 2]

    def right(completions, **fields):
        return [1.0] * len(completions)

    sent.clear()
    result = grpo_step(policy, update, engine, tokenizer, [two, one], right, cfg, seed=0)
    # p = 1 >= 0.8 p~ = 0.8 on the 2-frame prompt: its two completions earn 0.3; the 1-frame
    # prompt's none (it had earned 0.3 on a shuffle that changed nothing)
    assert result.rewards_by_component["temporal_bonus"] == pytest.approx(0.15)
    assert sent == [2, 1]
