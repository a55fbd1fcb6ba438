"""Training's batches go where the model is. ``collate`` and GRPO's ``sequences`` build them on the
CPU, the rewards and advantages are made there, and neither transformers' forward nor DeepSpeed's
engine moves its inputs: ``train_critic.py device=cuda`` failed at its first step ("Expected all
tensors to be on the same device"). A stand-in model on the meta device (a second device every
machine has) refuses inputs from anywhere else; the ``gpu`` test takes the real steps on CUDA."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from critic.data.episodes import Episode
from critic.data.samples import progress_samples
from critic.train.grpo import GRPOConfig, grpo_step, sequences, token_logprobs
from critic.train.losses import grpo_loss, reg_grpo_loss
from critic.train.optim import optimizer_update
from critic.train.sft import collate, digit_token_ids, encode_sft, sft_loss
from rollout.engine import Request


class _MetaModel(torch.nn.Module):
    """Zero logits on the meta device; an input from another device is an error, as on a GPU."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(vocab, device="meta"))

    def forward(self, use_cache=False, labels=None, **inputs):
        for name, value in {**inputs, "labels": labels}.items():
            if value is not None and value.device != self.bias.device:
                raise RuntimeError(f"{name} on {value.device}, the model on {self.bias.device}")
        logits = self.bias.expand(*inputs["input_ids"].shape, -1)
        return SimpleNamespace(logits=logits, loss=logits.sum())


def _samples(kind: str):
    t = 12
    episode = Episode(
        "ep", "Reacher-v5", "Touch the red target.",
        {"view": np.random.default_rng(0).integers(0, 256, (t, 56, 56, 3), dtype=np.uint8)},
        np.linspace(0, 1, t, dtype=np.float32), np.arange(t), True,
    )  # fmt: skip
    return progress_samples(episode, np.random.default_rng(0), cuts=2, frames=2, kind=kind)


def test_the_sft_loss_runs_on_the_models_device(tiny_model):
    _, tokenizer = tiny_model
    model = _MetaModel(len(tokenizer))
    batch = collate([encode_sft(s, tokenizer) for s in _samples("sft")], tokenizer.pad_token_id)
    assert sft_loss(model, batch).device.type == "meta"
    taught = _samples("score")  # a teacher's distribution over the digits: the other path
    for sample in taught:
        sample.target["digit_probs"] = [0.1] * 10
    soft = collate([encode_sft(s, tokenizer) for s in taught], tokenizer.pad_token_id)
    assert "soft_probs" in soft and soft["soft_probs"].device.type == "cpu"
    assert sft_loss(model, soft, digit_token_ids(tokenizer)).device.type == "meta"


def test_the_grpo_losses_run_on_the_models_device():
    model = _MetaModel(16)
    request = Request(torch.tensor([7, 8, 9]), torch.tensor([0, 0, 0]))
    batch = sequences([request], [[[4], [5, 6]]], pad_token_id=0, eos_token_id=1, max_new_tokens=3)
    logprobs = token_logprobs(model, batch)
    assert logprobs.device.type == "meta"
    advantages, mask = torch.tensor([1.0, -1.0]), batch["completion_mask"]  # made on the CPU
    ref = logprobs.detach()
    for loss, _ in (
        grpo_loss(logprobs, logprobs.detach(), advantages, mask, 0.2, 0.28, ref, 0.1, "token"),
        reg_grpo_loss(logprobs, logprobs.detach(), advantages, mask, group_size=2),
    ):
        assert loss.device.type == "meta"


@pytest.mark.gpu
def test_sft_and_grpo_steps_on_a_gpu(tiny_model):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from rollout.hf import HFEngine

    model, tokenizer = tiny_model
    policy = copy.deepcopy(model).to("cuda")
    optimizer = torch.optim.SGD(policy.parameters(), lr=1e-2)
    batch = collate([encode_sft(s, tokenizer) for s in _samples("sft")], tokenizer.pad_token_id)
    loss = sft_loss(policy, batch)
    loss.backward()
    assert loss.device.type == "cuda" and torch.isfinite(loss)
    optimizer.zero_grad()
    engine = HFEngine(policy, tokenizer.pad_token_id, tokenizer.eos_token_id)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    result = grpo_step(
        policy, optimizer_update(policy, optimizer), engine, tokenizer, _samples("sft"),
        lambda completions, **f: [float(len(c) % 3) / 2 for c in completions],
        GRPOConfig(group_size=4, max_new_tokens=6), seed=0,
    )  # fmt: skip
    assert result.groups_used == result.groups_total == 2
    assert any(not torch.equal(p, before[n]) for n, p in policy.named_parameters())
