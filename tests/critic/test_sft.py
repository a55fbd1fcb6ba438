"""SFT on a real tiny Qwen2.5-VL: prompt tokens masked, every trainable parameter moves, loss falls."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from critic import prompts
from critic.data.episodes import Episode
from critic.data.samples import Sample, progress_samples
from critic.train.sft import IGNORE, SFTDataError, collate, encode_sft, sft_loss


def _samples(n: int = 2, kind: str = "sft") -> list[Sample]:
    t = 12
    episode = Episode(
        "ep", "Reacher-v5", "Touch the red target.",
        {"view": np.random.default_rng(0).integers(0, 256, (t, 56, 56, 3), dtype=np.uint8)},
        np.linspace(0, 1, t, dtype=np.float32), np.arange(t),
        True, state={"fingertip_to_target_cm": np.linspace(10, 1, t)},
    )  # fmt: skip
    return progress_samples(episode, np.random.default_rng(0), cuts=n, frames=4, kind=kind)


def test_labels_cover_exactly_the_completion(tiny_model):
    _, tokenizer = tiny_model
    sample = _samples(1)[0]
    encoded = encode_sft(sample, tokenizer)
    prompt_len = len(prompts.encode(sample.prompt, tokenizer)["input_ids"])
    labels = encoded["labels"]
    assert (labels[:prompt_len] == IGNORE).all() and (labels[prompt_len:] != IGNORE).all()
    text = tokenizer.decode(labels[prompt_len:].tolist())
    assert text == sample.completion + "<|im_end|>"
    no_completion = Sample("progress", sample.prompt, sample.target, None, episode_id="ep")
    with pytest.raises(
        SFTDataError, match="sample of kind 'progress' from episode 'ep' has no reference"
    ):
        encode_sft(no_completion, tokenizer)


def test_collate_right_pads():
    a = {"input_ids": torch.tensor([5, 6, 7]), "labels": torch.tensor([IGNORE, 6, 7]),
         "mm_token_type_ids": torch.zeros(3, dtype=torch.int32),
         "pixel_values_videos": torch.zeros(4, 2), "video_grid_thw": torch.tensor([[1, 2, 2]])}  # fmt: skip
    b = {
        **a,
        "input_ids": torch.tensor([8]),
        "labels": torch.tensor([8]),
        "mm_token_type_ids": torch.zeros(1, dtype=torch.int32),
    }
    batch = collate([a, b], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["pixel_values_videos"].shape == (8, 2) and batch["video_grid_thw"].shape == (2, 3)


def test_one_step_moves_every_trainable_parameter_and_loss_falls(tiny_model):
    model, tokenizer = tiny_model
    model = copy.deepcopy(model).train()
    batch = collate([encode_sft(s, tokenizer) for s in _samples(2)], tokenizer.pad_token_id)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    losses = []
    for step in range(5):
        loss = sft_loss(model, batch)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == 0:  # after one step, every trainable tensor has moved
            unchanged = [
                n
                for n, p in model.named_parameters()
                if p.requires_grad and torch.equal(p, before[n])
            ]
            assert unchanged == []
    assert losses[-1] < losses[0]


def test_a_one_hot_teacher_distribution_is_exactly_the_plain_loss(tiny_model):
    from critic.train.sft import digit_token_ids

    model, tokenizer = tiny_model
    digits = digit_token_ids(tokenizer)
    plain = _samples(3, kind="score")  # digit answers: <answer>D</answer>
    taught = copy.deepcopy(plain)
    for sample in taught:  # the teacher puts all its mass on the true digit
        digit = int(sample.completion.split("<answer>")[1][0])
        sample.target["digit_probs"] = [float(d == digit) for d in range(10)]
    hard = collate([encode_sft(s, tokenizer) for s in plain], tokenizer.pad_token_id)
    soft = collate([encode_sft(s, tokenizer) for s in taught], tokenizer.pad_token_id)
    # the soft target sits where the hard label was, and that label leaves the hard loss
    row, position = int(soft["soft_rows"][0]), int(soft["soft_positions"][0])
    assert int(hard["labels"][row, position]) in digits and soft["labels"][row, position] == IGNORE
    with torch.no_grad():
        assert sft_loss(model, soft, digits).item() == pytest.approx(
            sft_loss(model, hard).item(), rel=1e-5
        )
        # a teacher spreading its mass: -sum q log p at the digit, the other tokens unchanged
        for sample in taught:
            sample.target["digit_probs"] = [0.5 if d in (3, 4) else 0.0 for d in range(10)]
        spread = collate([encode_sft(s, tokenizer) for s in taught], tokenizer.pad_token_id)
        inputs = {k: v for k, v in spread.items() if k != "labels" and not k.startswith("soft_")}
        logits = model(**inputs, use_cache=False).logits.float()
        labels = spread["labels"][:, 1:]
        log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
        kept = labels != IGNORE
        by_hand = -log_probs[kept].gather(1, labels[kept][:, None]).sum()
        for r, p in zip(spread["soft_rows"], spread["soft_positions"], strict=True):
            at = log_probs[r, p - 1]
            by_hand -= 0.5 * (at[digits[3]] + at[digits[4]])
        by_hand /= kept.sum() + len(taught)
        assert sft_loss(model, spread, digits).item() == pytest.approx(by_hand.item(), rel=1e-5)
        with pytest.raises(SFTDataError, match="digit_ids has 0; pass digit_token_ids"):
            sft_loss(model, spread)


def test_a_teacher_distribution_needs_a_digit_answer(tiny_model):
    _, tokenizer = tiny_model
    sample = _samples(1)[0]  # a chain-of-thought completion: no digit right after <answer>
    sample.target["digit_probs"] = [0.1] * 10
    with pytest.raises(SFTDataError, match="has no answer digit after <answer>"):
        encode_sft(sample, tokenizer)


def test_training_on_a_teacher_distribution_moves_the_student_to_it(tiny_model):
    from critic.train.sft import digit_token_ids

    model, tokenizer = tiny_model
    model = copy.deepcopy(model).train()
    digits = digit_token_ids(tokenizer)
    target = torch.tensor([0.0, 0.0, 0.3, 0.0, 0.0, 0.0, 0.0, 0.7, 0.0, 0.0])  # not any label's
    samples = _samples(3, kind="score")
    for sample in samples:
        sample.target["digit_probs"] = target.tolist()
    batch = collate([encode_sft(s, tokenizer) for s in samples], tokenizer.pad_token_id)

    def kl_to_target() -> float:  # KL(target || the student's digits at the answer position)
        with torch.no_grad():
            inputs = {k: v for k, v in batch.items() if k != "labels" and not k.startswith("soft_")}
            logits = model(**inputs, use_cache=False).logits.float()
            at = logits[batch["soft_rows"], batch["soft_positions"] - 1][:, digits]
            log_q = torch.log_softmax(at, dim=-1)
            kept = target > 0
            return float((target[kept] * (target[kept].log() - log_q[:, kept])).sum(1).mean())

    before = kl_to_target()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    for _ in range(15):
        loss = sft_loss(model, batch, digits)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert kl_to_target() < 0.25 * before  # measured: 6.29 -> 0.38


def test_a_batch_of_more_videos_than_tokens_trains(tiny_model):
    # 75 anchored samples (3 videos each, 223 tokens) ended in a bare StopIteration inside
    # transformers' rope (Qwen2.5-VL's seconds per video were drawn from an iterator as long as
    # the sequence); here 8 prompts of 20 one-token videos in 134 tokens
    model, tokenizer = tiny_model
    rng = np.random.default_rng(0)
    frames = tuple(rng.integers(0, 256, (1, 28, 28, 3), dtype=np.uint8) for _ in range(20))
    prompt = prompts.Prompt(({"role": "user", "content": prompts.VIDEO * 20},), frames, "digit")
    sample = Sample("score", prompt, {"progress": 0.5}, "<answer>4</answer>", episode_id="ep")
    encoded = encode_sft(sample, tokenizer)
    assert 8 * len(encoded["video_grid_thw"]) > len(encoded["input_ids"])
    model.eval()  # no dropout: the batch's loss is the one sample's
    with torch.no_grad():
        one = sft_loss(model, collate([encoded], tokenizer.pad_token_id))
        eight = sft_loss(model, collate([encoded] * 8, tokenizer.pad_token_id))
    torch.testing.assert_close(eight, one, atol=1e-5, rtol=0)


def test_a_validation_budget_that_cuts_reference_answers_is_named(tiny_model):
    # eval_max_new_tokens=64 cut 17.5 % of Pusher's chains of thought (up to 68 tokens): a model
    # answering exactly as they do scored MAE 0.077 where it was 0.002
    from critic.train.validation import budget_problem

    _, tokenizer = tiny_model
    samples = _samples(3)
    longest = max(len(tokenizer(s.completion).input_ids) for s in samples)
    assert budget_problem(tokenizer, samples, longest) is None
    problem = budget_problem(tokenizer, samples, longest - 1)
    assert problem.startswith(f"eval_max_new_tokens={longest - 1} cuts ")
    assert problem.endswith(f"give eval_max_new_tokens={longest} or more")
    assert budget_problem(tokenizer, [], 1) is None


def test_trained_tokens_are_what_the_loss_averages_over(tiny_model):
    from critic.train.sft import digit_token_ids, trained_tokens

    model, tokenizer = tiny_model
    plain = _samples(2, kind="score")
    batch = collate([encode_sft(s, tokenizer) for s in plain], tokenizer.pad_token_id)
    kept = int((batch["labels"][:, 1:] != IGNORE).sum())
    assert trained_tokens(batch) == kept
    taught = copy.deepcopy(plain)
    taught[0].target["digit_probs"] = [0.1] * 10  # one hard digit label becomes a soft row
    soft = collate([encode_sft(s, tokenizer) for s in taught], tokenizer.pad_token_id)
    assert trained_tokens(soft) == kept  # kept - 1 hard tokens + 1 soft row
    # the loss is a mean over them: its sum form divided by the count
    with torch.no_grad():
        loss = sft_loss(model, soft, digit_token_ids(tokenizer))
    assert torch.isfinite(loss)


def _sft_grad_on_rank(rank: int, port: int, queue) -> None:
    """Rank 0 trains a chain-of-thought sample, rank 1 a digit answer; each scales its loss by
    its tokens' share as the recipe does, and the gradients are averaged as DeepSpeed does."""
    import torch.distributed as dist

    from critic.train.launch import rank_share
    from critic.train.sft import trained_tokens
    from tests.conftest import _redrawn

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model, tokenizer = _redrawn("tiny")
        sample = [_samples(1, kind="sft"), _samples(1, kind="score")][rank][0]
        batch = collate([encode_sft(sample, tokenizer)], tokenizer.pad_token_id)
        (sft_loss(model, batch) * rank_share(trained_tokens(batch))).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        dist.all_reduce(grads)
        queue.put((rank, (grads / 2).tolist()))
    finally:
        dist.destroy_process_group()


def test_two_processes_train_the_mean_over_all_their_tokens():
    # each process's mean over its own tokens, averaged: a digit answer's 6 tokens on one weighed
    # 7x a 44-token chain of thought on the other. Now one process over both samples' tokens
    from tests.conftest import _redrawn
    from tests.experiments.test_train_critic_backends import _gloo_pair

    results = _gloo_pair(_sft_grad_on_rank)
    torch.manual_seed(0)
    model, tokenizer = _redrawn("tiny")
    both = [_samples(1, kind="sft")[0], _samples(1, kind="score")[0]]
    sft_loss(
        model, collate([encode_sft(s, tokenizer) for s in both], tokenizer.pad_token_id)
    ).backward()
    one = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    for rank in (0, 1):
        torch.testing.assert_close(torch.tensor(results[rank]), one, atol=1e-4, rtol=1e-3)


def test_each_process_takes_its_slice_of_one_draw_of_the_step_s_batch():
    # each process drew from a stream of its own: 397 of 1000 steps of 2 processes over 36
    # samples held one sample twice. Now every process draws the whole batch from one stream
    from types import SimpleNamespace

    from critic.train.draws import draw_batch
    from critic.train.recipe import Trainer

    for step in range(200):
        rng = np.random.default_rng([step, 0])
        whole = draw_batch(rng, 36, 8, None)
        halves = [Trainer._slice(SimpleNamespace(rank=r, world=2), whole) for r in (0, 1)]
        assert sorted(np.concatenate(halves).tolist()) == sorted(set(whole.tolist()))
        assert len(set(np.concatenate(halves).tolist())) == 8
