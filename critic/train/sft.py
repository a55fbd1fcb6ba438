"""Supervised fine-tuning pieces: samples with reference completions → masked batches → a loss.

The prompt is encoded exactly as at inference (:func:`critic.prompts.encode`, chat template with
the generation prompt), the completion and ``<|im_end|>`` are appended, and only the completion's
tokens carry labels: the model learns to answer, not to repeat the question.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from critic import prompts
from critic.vision import VisionSpec

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
    return {
        "input_ids": torch.cat([prompt_ids, answer]),
        "labels": torch.cat([torch.full_like(prompt_ids, IGNORE), answer]),
        "mm_token_type_ids": torch.cat(
            [
                encoded["mm_token_type_ids"],
                torch.zeros(len(answer), dtype=encoded["mm_token_type_ids"].dtype),
            ]
        ),
        "pixel_values_videos": encoded["pixel_values_videos"],
        "video_grid_thw": encoded["video_grid_thw"],
    }


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
    return batch


def sft_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the completion tokens of ``batch`` (shifted inside the model)."""
    return model(**batch, use_cache=False).loss
