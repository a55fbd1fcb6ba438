"""Validation during critic training: greedy answers on held-out samples, read by the same
parsers as inference (progress MAE, verdict and transform accuracy, the share that parse)."""

from __future__ import annotations

import numpy as np


def evaluate(model, tokenizer, samples: list, max_new_tokens: int, vision=None) -> dict[str, float]:
    """Greedy answers on validation samples: progress MAE, verdict and transform accuracy, and the
    share of answers that parse. An unreadable progress answer counts as an error of 1 (the
    largest a reading can make at a target of 0 or 1), so that a model that stops answering
    does not improve its MAE; the evaluator's MAE (:mod:`critic.eval`) is over readable answers,
    beside the share readable."""
    from critic import prompts
    from critic.base import ParseStatus
    from critic.parse import parse_progress, parse_transform, parse_verdict
    from rollout.engine import Request, SamplingParams
    from rollout.hf import HFEngine

    if not samples:
        return {}
    engine = HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id)
    errors, verdicts, transforms, readable = [], [], [], []
    for start in range(0, len(samples), 8):
        chunk = samples[start : start + 8]
        requests = [Request(**prompts.encode(s.prompt, tokenizer, vision)) for s in chunk]
        outs = engine.generate(
            requests, SamplingParams(temperature=0, max_new_tokens=max_new_tokens)
        )
        for s, out in zip(chunk, outs, strict=True):
            text = tokenizer.decode(out[0], skip_special_tokens=False)
            if "transform" in s.target:
                parsed = parse_transform(text, s.prompt.choices)
                transforms.append(
                    parsed.status is ParseStatus.OK and parsed.value == s.target["transform"]
                )
                readable.append(parsed.status is ParseStatus.OK)
            if "progress" in s.target and s.prompt.answer in (
                "percent",
                "digit",
                "transform+percent",
            ):
                parsed = parse_progress(text, "digit" if s.prompt.answer == "digit" else "percent")
                readable.append(parsed.status is ParseStatus.OK)
                errors.append(
                    abs(parsed.value - s.target["progress"])
                    if parsed.status is ParseStatus.OK
                    else 1.0
                )
            if "success" in s.target:
                parsed = parse_verdict(text, s.prompt.choices)
                readable.append(parsed.status is ParseStatus.OK)
                verdicts.append(
                    parsed.status is ParseStatus.OK and parsed.value == s.target["success"]
                )
    metrics = {"readable": float(np.mean(readable))} if readable else {}
    if errors:
        metrics["progress_mae"] = float(np.mean(errors))
    if verdicts:
        metrics["verdict_accuracy"] = float(np.mean(verdicts))
    if transforms:
        metrics["transform_accuracy"] = float(np.mean(transforms))
    return metrics


def budget_problem(tokenizer, samples: list, max_new_tokens: int) -> str | None:
    """What a validation budget of ``max_new_tokens`` cuts: the samples whose reference answer
    is longer, which a model that answers exactly so would have read as
    unreadable, an error of 1. ``None`` where the budget holds every reference."""
    lengths = [len(tokenizer(s.completion).input_ids) for s in samples if s.completion]
    cut = [n for n in lengths if n > max_new_tokens]
    if not cut:
        return None
    return (
        f"eval_max_new_tokens={max_new_tokens} cuts {len(cut)} of the {len(lengths)} validation "
        f"samples' reference answers (the longest {max(cut)} tokens): a model that answers as "
        f"they do reads as unreadable there, an error of 1 in val/progress_mae; give "
        f"eval_max_new_tokens={max(cut)} or more"
    )
