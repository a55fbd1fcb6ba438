"""Shared fixtures: one tiny Qwen2.5-VL (and one tiny Qwen3-VL) per test session (building one
trains the offline tokenizer)."""

from __future__ import annotations

import functools

import pytest


@pytest.fixture(scope="session", autouse=True)
def _sb3_logs_in_pytest_tmp(tmp_path_factory):
    """SB3's learners that the tests build log (nothing) into pytest's temporary folder, not into
    a new ``/tmp/SB3-<time>`` per ``learn()``, which nothing removed."""
    import os

    os.environ["SB3_LOGDIR"] = str(tmp_path_factory.mktemp("sb3"))


@functools.cache
def _redrawn(preset: str):
    """The preset with weights re-drawn at std 0.5, so greedy outputs vary by input (at the
    default init every prompt decodes to the same token, and equality tests prove nothing)."""
    import torch

    from critic.models import build_preset

    model, tokenizer = build_preset(preset)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return model, tokenizer


@pytest.fixture(scope="session")
def tiny_model():
    """The ``tiny`` preset (Qwen2.5-VL), weights re-drawn: ``(model, tokenizer)``."""
    pytest.importorskip("transformers")
    return _redrawn("tiny")


@pytest.fixture(scope="session", params=["tiny", "tiny-qwen3vl"])
def vl_model(request):
    """Each architecture's tiny preset, weights re-drawn: ``(model, tokenizer, vision spec)``.
    Qwen3-VL's differs in patches, normalisation, prompt segments and deepstack features."""
    pytest.importorskip("transformers")
    from critic.vision import VisionSpec

    model, tokenizer = _redrawn(request.param)
    return model, tokenizer, VisionSpec.from_config(model.config.vision_config)
