"""Shared fixtures: one tiny Qwen2.5-VL per test session (building it trains the offline tokenizer)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model():
    """The ``tiny`` preset with weights re-drawn at std 0.5, so greedy outputs vary by input
    (at the default init every prompt decodes to the same token, and equality tests prove nothing)."""
    pytest.importorskip("transformers")
    import torch

    from critic.models import build_preset

    model, tokenizer = build_preset("tiny")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return model, tokenizer
