"""The video-embedding cache changes nothing but the work done."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from critic import prompts
from rollout.cache import VideoEmbeddingCache
from rollout.engine import Request, SamplingParams
from rollout.hf import HFEngine


def _requests(tokenizer, seed: int = 0, spec=None) -> list[Request]:
    rng = np.random.default_rng(seed)
    episode = rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    # Sliding windows over one episode: the initial frame is shared by every anchored query.
    return [
        Request(**prompts.encode(prompts.anchored_progress("lift", episode[0], episode[: t + 2], episode[t + 1]), tokenizer, spec))
        for t in range(4)
    ]  # fmt: skip


def test_cached_outputs_equal_uncached(vl_model):
    model, tokenizer, spec = vl_model  # Qwen3-VL's cache keeps its deepstack features too
    requests = _requests(tokenizer, spec=spec)
    plain = HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id)
    greedy = SamplingParams(temperature=0, max_new_tokens=6)
    expected_gen = plain.generate(requests, greedy)
    expected_score = plain.score(requests, list(range(10)))

    import copy

    cached_model = copy.deepcopy(model)
    cache = VideoEmbeddingCache()
    engine = HFEngine(cached_model, tokenizer.pad_token_id, tokenizer.eos_token_id, cache=cache)
    for _ in range(2):  # the second round is served from the cache
        assert engine.generate(requests, greedy) == expected_gen
        torch.testing.assert_close(
            engine.score(requests, list(range(10))), expected_score, atol=1e-6, rtol=0
        )
    # 4 queries x 3 videos = 12; distinct: 1 initial image + 4 windows + 4 current images = 9.
    assert len(cache) == 9
    assert cache.misses == 9 and cache.hits == 4 * 12 - 9


def test_g_samples_of_one_prompt_encode_the_video_once(vl_model):
    import copy

    model, tokenizer, spec = vl_model
    cache = VideoEmbeddingCache()
    engine = HFEngine(
        copy.deepcopy(model), tokenizer.pad_token_id, tokenizer.eos_token_id, cache=cache
    )
    engine.generate(
        _requests(tokenizer, spec=spec)[:1],
        SamplingParams(n=4, temperature=1.0, max_new_tokens=4, seed=0),
    )
    assert cache.misses == 3  # the prompt's 3 videos, though generate repeats them for 4 samples


def test_lru_evicts_the_least_recently_used(tiny_model):
    import copy

    model, tokenizer = tiny_model
    rng = np.random.default_rng(1)
    videos = [rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8) for _ in range(3)]
    requests = [
        Request(**prompts.encode(prompts.stepwise_progress("lift", v, None), tokenizer))
        for v in videos
    ]
    cache = VideoEmbeddingCache(max_videos=2)
    engine = HFEngine(
        copy.deepcopy(model), tokenizer.pad_token_id, tokenizer.eos_token_id, cache=cache
    )
    for request in requests:  # A, B, C: A is evicted when C arrives
        engine.score([request], [0, 1])
    assert len(cache) == 2 and cache.misses == 3
    engine.score([requests[2]], [0, 1])  # C: hit
    engine.score([requests[0]], [0, 1])  # A: evicted before, a miss again
    assert (cache.hits, cache.misses) == (1, 4)
    with pytest.raises(ValueError, match=r"max_videos=0 must be an integer >= 1"):
        VideoEmbeddingCache(max_videos=0)
    # a cap in megabytes (where a 7B model's 4,096 videos could hold 7 GB of a GPU) evicts alike
    one = cache.nbytes // len(cache)
    assert one == 4 * model.config.text_config.hidden_size * 4  # 4 tokens of float32 values
    by_size = VideoEmbeddingCache(max_mb=2.5 * one / 2**20)  # room for two videos
    engine = HFEngine(
        copy.deepcopy(model), tokenizer.pad_token_id, tokenizer.eos_token_id, cache=by_size
    )
    for request in [*requests, requests[2], requests[0]]:
        engine.score([request], [0, 1])
    assert (len(by_size), by_size.nbytes, by_size.hits, by_size.misses) == (2, 2 * one, 1, 4)
    # what it counts is what it holds: each entry its own copy, not a view of its call's whole
    # output (9 videos in one call, one kept, held the memory of all 9, past the cap)
    one_call = VideoEmbeddingCache(max_mb=1.5 * one / 2**20)
    engine = HFEngine(
        copy.deepcopy(model), tokenizer.pad_token_id, tokenizer.eos_token_id, cache=one_call
    )
    engine.score(_requests(tokenizer), [0, 1])
    held = {e.untyped_storage().data_ptr(): e.untyped_storage().nbytes()
            for e, _ in one_call._store.values()}  # fmt: skip
    assert len(one_call) == 1 and sum(held.values()) == one_call.nbytes == one
    by_size.clear()
    assert (len(by_size), by_size.nbytes) == (0, 0)
    with pytest.raises(ValueError, match=r"max_mb=0 must be a number of megabytes > 0, or None"):
        VideoEmbeddingCache(max_mb=0)


def test_bfloat16_patches_are_cached(vl_model):
    """Real Qwen checkpoints ship in bfloat16, which numpy cannot hold: the key hashes the bytes."""
    import copy

    model, tokenizer, spec = vl_model
    half = copy.deepcopy(model).to(torch.bfloat16)
    requests = _requests(tokenizer, spec=spec)
    plain = HFEngine(half, tokenizer.pad_token_id, tokenizer.eos_token_id).score(requests, [0, 1])
    cache = VideoEmbeddingCache()
    cached = HFEngine(
        copy.deepcopy(half), tokenizer.pad_token_id, tokenizer.eos_token_id, cache=cache
    )
    for _ in range(2):
        torch.testing.assert_close(cached.score(requests, [0, 1]), plain, atol=0, rtol=0)
    assert cache.misses == 9 and cache.hits == 2 * 12 - 9


def test_a_dropped_critic_frees_its_model_without_the_cycle_collector():
    # the patch held the model's bound method and was stored on the model: a reference cycle,
    # so each closed env's critic (~8 MB here, a 7B model's weights on a GPU) stayed until
    # Python's cycle collector happened to run (about every 20 re-makes in a notebook)
    import gc
    import weakref

    from critic import make_critic

    gc.disable()
    try:
        critic = make_critic("viscritic-small")
        model = weakref.ref(critic._model)
        assert critic._engine.cache is not None  # the patch is on
        del critic
        assert model() is None
    finally:
        gc.enable()


def _scaled_tower(model, factor: float) -> None:
    with torch.no_grad():
        for p in model.model.visual.parameters():
            p.mul_(factor)


def test_a_fresh_cache_or_none_reads_the_current_weights(tiny_model):
    # a second attach wrapped the first cache's patch, so a new engine with a fresh cache (or
    # with none) still answered from the first cache's entries, made by the weights before
    import copy

    model, tokenizer = tiny_model
    model = copy.deepcopy(model)
    requests = _requests(tokenizer)
    first = HFEngine(
        model, tokenizer.pad_token_id, tokenizer.eos_token_id, cache=VideoEmbeddingCache()
    )
    first.score(requests, [0, 1])
    used = (first.cache.hits, first.cache.misses)
    _scaled_tower(model, -3.0)
    fresh = VideoEmbeddingCache()
    again = HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id, cache=fresh)
    now = again.score(requests, [0, 1])
    # the first cache is out of the way: every video read afresh, through the new one alone
    assert fresh.misses == 9 and (first.cache.hits, first.cache.misses) == used
    plain = HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id)  # cache=None
    torch.testing.assert_close(plain.score(requests, [0, 1]), now, atol=1e-6, rtol=0)
    assert "get_video_features" not in vars(model.model)  # no cache's patch left on it
    assert fresh.misses == 9  # nothing went through the cache


def test_a_copy_of_a_cached_model_runs_its_own_tower(tiny_model):
    # the copy kept the patch, which held the original model: the copy ran the original's
    # vision weights, and shared its cache
    import copy

    model, tokenizer = tiny_model
    original = copy.deepcopy(model)
    cache = VideoEmbeddingCache()
    engine = HFEngine(original, tokenizer.pad_token_id, tokenizer.eos_token_id, cache=cache)
    requests = _requests(tokenizer)
    before = engine.score(requests, [0, 1])
    clone = copy.deepcopy(original)
    _scaled_tower(clone, -3.0)
    expected = copy.deepcopy(model)
    _scaled_tower(expected, -3.0)
    on_clone = HFEngine(clone, tokenizer.pad_token_id, tokenizer.eos_token_id).score(
        requests, [0, 1]
    )
    truth = HFEngine(expected, tokenizer.pad_token_id, tokenizer.eos_token_id).score(
        requests, [0, 1]
    )
    torch.testing.assert_close(on_clone, truth, atol=1e-6, rtol=0)
    assert not torch.allclose(on_clone, before, atol=1e-3)
    torch.testing.assert_close(engine.score(requests, [0, 1]), before, atol=0, rtol=0)
