"""Supervised fine-tuning pieces: samples with reference completions → masked batches → a loss.

The prompt is encoded exactly as at inference (:func:`critic.prompts.encode`, chat template with
the generation prompt), the completion and ``<|im_end|>`` are appended, and only the completion's
tokens carry labels: the model learns to answer, not to repeat the question.

A digit-answer sample may carry a teacher's distribution over the ten answer digits
(``sample.target["digit_probs"]``, :func:`critic.train.draws.label_with_teacher`): its digit's
loss is then the cross-entropy against that distribution (distillation, Hinton et al. 2015), and a
one-hot distribution gives exactly the plain loss.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch

from critic import prompts
from critic.vision import VisionSpec
from rollout.checkpoint import video_times

IGNORE = -100  # label of tokens the loss skips (transformers' convention)


class SFTDataError(ValueError):
    """A sample cannot be trained on (no reference completion)."""


def encode_sft(sample, tokenizer, spec: VisionSpec | None = None) -> dict[str, Any]:
    """One sample → ``input_ids``, ``labels`` (prompt masked), ``mm_token_type_ids`` and video
    tensors.

    Raises:
        SFTDataError: the sample has no reference completion.
    """
    if not sample.completion:
        raise SFTDataError(
            f"sample of kind {sample.kind!r} from episode {sample.episode_id!r} has no reference "
            "completion; SFT trains on 'sft' (or other kinds with completions) samples"
        )
    encoded = prompts.encode(sample.prompt, tokenizer, spec)
    answer = tokenizer(sample.completion + "<|im_end|>", add_special_tokens=False).input_ids
    answer = torch.tensor(answer, dtype=encoded["input_ids"].dtype)
    prompt_ids = encoded["input_ids"]
    labels = torch.cat([torch.full_like(prompt_ids, IGNORE), answer])
    soft = None
    if "digit_probs" in sample.target:
        position = len(prompt_ids) + _digit_index(tokenizer, sample.completion)
        soft = (position, torch.tensor(sample.target["digit_probs"], dtype=torch.float32))
        labels[position] = IGNORE  # the soft target replaces it
    return {
        "input_ids": torch.cat([prompt_ids, answer]),
        "labels": labels,
        "soft_target": soft,
        "mm_token_type_ids": torch.cat(
            [
                encoded["mm_token_type_ids"],
                torch.zeros(len(answer), dtype=encoded["mm_token_type_ids"].dtype),
            ]
        ),
        "pixel_values_videos": encoded["pixel_values_videos"],
        "video_grid_thw": encoded["video_grid_thw"],
    }


def digit_token_ids(tokenizer) -> list[int]:
    """The token ids of the answer digits 0-9, in order."""
    return [tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)]


def _digit_index(tokenizer, completion: str) -> int:
    """Where the answer digit sits in a digit completion's tokens
    (``<think></think><answer>D</answer>``)."""
    answer = re.search(r"<answer>\d</answer>", completion)
    prefix = completion[: answer.start() + len("<answer>")] if answer else ""
    index = len(tokenizer(prefix, add_special_tokens=False).input_ids)
    ids = tokenizer(completion, add_special_tokens=False).input_ids
    if not answer or index >= len(ids) or ids[index] not in digit_token_ids(tokenizer):
        raise SFTDataError(
            f"completion {completion!r} has no answer digit after <answer>; a teacher's digit "
            "distribution trains digit-answer (score, frozen) samples only"
        )
    return index


def collate(encoded: Sequence[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of :func:`encode_sft` outputs into one batch (video tensors concatenated
    in order)."""
    width = max(len(e["input_ids"]) for e in encoded)
    n = len(encoded)
    batch = {
        "input_ids": torch.full((n, width), pad_token_id, dtype=torch.int64),
        "labels": torch.full((n, width), IGNORE, dtype=torch.int64),
        "attention_mask": torch.zeros((n, width), dtype=torch.int64),
        "mm_token_type_ids": torch.zeros((n, width), dtype=torch.int32),
    }
    for row, e in enumerate(encoded):
        length = len(e["input_ids"])
        batch["input_ids"][row, :length] = e["input_ids"]
        batch["labels"][row, :length] = e["labels"]
        batch["attention_mask"][row, :length] = 1
        batch["mm_token_type_ids"][row, :length] = e["mm_token_type_ids"]
    batch["pixel_values_videos"] = torch.cat([e["pixel_values_videos"] for e in encoded])
    batch["video_grid_thw"] = torch.cat([e["video_grid_thw"] for e in encoded])
    soft = [(row, e["soft_target"]) for row, e in enumerate(encoded) if e.get("soft_target")]
    if soft:
        batch["soft_rows"] = torch.tensor([row for row, _ in soft])
        batch["soft_positions"] = torch.tensor([target[0] for _, target in soft])
        batch["soft_probs"] = torch.stack([target[1] for _, target in soft])
    return batch


def on_model_device(model, batch: dict[str, Any]) -> dict[str, Any]:
    """``batch`` with its tensors on ``model``'s device. :func:`collate` and GRPO's sequences
    build batches on the CPU, and neither transformers' forward nor DeepSpeed's engine moves its
    inputs: a run with ``device=cuda`` failed at its first step ("Expected all tensors to be on
    the same device"). A Qwen2.5-VL model's batch also gets its videos' times
    (:func:`rollout.checkpoint.video_times`)."""
    device = next(model.parameters()).device
    batch = {**batch, **video_times(model, batch.get("video_grid_thw"))}
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def trained_tokens(batch: dict[str, torch.Tensor]) -> int:
    """The tokens :func:`sft_loss` averages over: completion tokens after the shift, and one per
    teacher's distribution."""
    labels = batch["labels"][:, 1:]
    return int((labels != IGNORE).sum()) + len(batch.get("soft_rows", ()))


def sft_loss(model, batch: dict[str, torch.Tensor], digit_ids: Sequence[int] = ()) -> torch.Tensor:
    """Mean cross-entropy over the completion tokens of ``batch``. Tokens with a teacher's digit
    distribution (``soft_*`` from :func:`collate`; ``digit_ids``: the digits' token ids) count as
    one token each, scored against that distribution."""
    batch = on_model_device(model, batch)
    if "soft_probs" not in batch:
        return model(**batch, use_cache=False).loss  # shifted inside the model
    if len(digit_ids) != batch["soft_probs"].shape[1]:
        raise SFTDataError(
            f"the batch carries a teacher's distribution over {batch['soft_probs'].shape[1]} "
            f"digits and digit_ids has {len(digit_ids)}; pass digit_token_ids(tokenizer)"
        )
    rows, positions, probs = (batch[k] for k in ("soft_rows", "soft_positions", "soft_probs"))
    inputs = {k: v for k, v in batch.items() if k != "labels" and not k.startswith("soft_")}
    logits = model(**inputs, use_cache=False).logits.float()
    labels = batch["labels"][:, 1:]  # the token at t + 1 is predicted at t
    hard = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE,
        reduction="sum",
    )  # fmt: skip
    log_probs = torch.log_softmax(logits[rows, positions - 1], dim=-1)[:, list(digit_ids)]
    soft = -(probs.to(log_probs.dtype) * log_probs).sum()
    return (hard + soft) / ((labels != IGNORE).sum() + len(rows))
