"""The transformers engine on a real tiny Qwen2.5-VL: batching must not change results."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from critic import prompts
from rollout.engine import Request, SamplingParams
from rollout.hf import HFEngine


@pytest.fixture(scope="module")
def engine_and_requests(tiny_model):
    model, tokenizer = tiny_model
    engine = HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id)
    rng = np.random.default_rng(0)
    # Different video lengths → different prompt lengths → real left padding in the batch.
    requests = [
        Request(**prompts.encode(prompts.stepwise_progress("lift", rng.integers(0, 256, (t, 64, 64, 3), dtype=np.uint8), None), tokenizer))
        for t in (2, 4, 6)
    ]  # fmt: skip
    assert len({len(r.input_ids) for r in requests}) > 1
    return engine, requests


def test_greedy_batched_equals_sequential(engine_and_requests):
    engine, requests = engine_and_requests
    greedy = SamplingParams(temperature=0, max_new_tokens=8)
    batched = engine.generate(requests, greedy)
    sequential = [engine.generate([r], greedy)[0] for r in requests]
    assert batched == sequential
    assert len({tuple(g[0]) for g in batched}) == 3  # the outputs differ by input: a real check


def test_score_batched_equals_sequential(engine_and_requests):
    engine, requests = engine_and_requests
    candidates = list(range(10))
    batched = engine.score(requests, candidates)
    sequential = torch.cat([engine.score([r], candidates) for r in requests])
    assert batched.shape == (3, 10)
    torch.testing.assert_close(batched.sum(-1), torch.ones(3))
    torch.testing.assert_close(batched, sequential, atol=1e-5, rtol=0)
    # the last position's logits alone are computed: the same as the whole sequence's last row
    engine.model.eval()
    with torch.inference_mode():
        full = engine.model(**engine._batch(requests[:1], ()), use_cache=False).logits[:, -1]
    expected = torch.softmax(full[:, candidates].float(), dim=-1)
    torch.testing.assert_close(engine.score(requests[:1], candidates), expected, atol=1e-6, rtol=0)


def test_seeded_sampling_repeats_and_n_groups(engine_and_requests):
    engine, requests = engine_and_requests
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=6, seed=11)
    first = engine.generate(requests, params)
    assert first == engine.generate(requests, params)
    assert [len(g) for g in first] == [3, 3, 3]
    assert first != engine.generate(
        requests, SamplingParams(n=3, temperature=1.0, max_new_tokens=6, seed=12)
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n": 0}, "n=0 must be an integer >= 1 (completions per request)"),
        ({"max_new_tokens": 0}, "max_new_tokens=0 must be an integer >= 1"),
        ({"temperature": -1.0}, "temperature=-1.0 must be >= 0 (0 is greedy)"),
        ({"top_p": 0.0}, "top_p=0.0 must be in (0, 1]"),
    ],
)
def test_bad_sampling_params(options, message):
    with pytest.raises(ValueError) as err:
        SamplingParams(**options)
    assert str(err.value) == message


def test_vision_placeholders_are_never_generated(engine_and_requests):
    engine, requests = engine_and_requests
    banned = set(engine.vision_token_ids)
    assert engine.model.config.video_token_id in banned and len(banned) == 4
    # At temperature 100 sampling is near uniform over the ~640 tokens: 3 x 8 x 24 = 576 draws
    # hit the 4 placeholders about 3.6 times when nothing stops them (the control below).
    hot = SamplingParams(n=8, temperature=100.0, max_new_tokens=24, seed=0)
    out = engine.generate(requests, hot)
    assert not banned & {t for group in out for seq in group for t in seq}
    torch.manual_seed(0)
    with torch.inference_mode():
        control = engine.model.generate(**engine._batch(requests), do_sample=True, temperature=100.0,
                                        top_k=0, num_return_sequences=8, max_new_tokens=24,
                                        pad_token_id=engine.pad_token_id, eos_token_id=-1)  # fmt: skip
    assert banned & set(
        control[:, engine._batch(requests)["input_ids"].shape[1] :].flatten().tolist()
    )
