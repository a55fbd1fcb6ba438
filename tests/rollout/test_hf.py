"""The transformers engine on a real tiny Qwen2.5-VL and Qwen3-VL: batching must not change
results."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from critic import prompts
from rollout.engine import Request, SamplingParams
from rollout.hf import HFEngine


@pytest.fixture(scope="module")
def engine_and_requests(vl_model):
    model, tokenizer, spec = vl_model
    engine = HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id)
    rng = np.random.default_rng(0)
    # Different video lengths → different prompt lengths → real left padding in the batch.
    requests = [
        Request(**prompts.encode(prompts.stepwise_progress("lift", rng.integers(0, 256, (t, 64, 64, 3), dtype=np.uint8), None), tokenizer, spec))
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


def _anchored(tokenizer, initial, video, ends, spec=None):
    """The reward's queries of one episode: the same initial frame, the video so far, the current
    frame (all prompts the same length)."""
    return [
        Request(**prompts.encode(prompts.anchored_progress("lift", initial, video[: e + 1][-4:], video[e], "digit"), tokenizer, spec))
        for e in ends
    ]  # fmt: skip


# the KV cache goes back in by the name the installed transformers takes (``cache`` from 5.24;
# the old ``past_key_values`` warns, and is to be removed in 5.40)
@pytest.mark.filterwarnings("error::FutureWarning")
@pytest.mark.parametrize("case", ["one_episode", "different_initial_frames", "identical"])
def test_score_shared_prefix_equals_full_forward(vl_model, case):
    model, tokenizer, spec = vl_model
    rng = np.random.default_rng(3)
    video = rng.integers(0, 256, (12, 64, 64, 3), dtype=np.uint8)
    if case == "one_episode":
        requests = _anchored(tokenizer, video[0], video, [5, 7, 9, 11], spec)
    elif case == "different_initial_frames":
        requests = [_anchored(tokenizer, video[i], video, [11], spec)[0] for i in range(4)]
    else:
        requests = _anchored(tokenizer, video[0], video, [11, 11, 11], spec)
    candidates = list(range(10))
    prefix = [int(tokenizer.convert_tokens_to_ids("<answer>"))]
    full = HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id, share_prefix=False)
    shared = HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id)
    expected = full.score(requests, candidates, prefix=prefix)
    got = shared.score(requests, candidates, prefix=prefix)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert full.last_shared_prefix == 0
    ids = requests[0].input_ids.tolist()
    first_video = ids.index(model.config.video_token_id)
    second_video = ids.index(
        model.config.video_token_id, ids.index(model.config.vision_end_token_id)
    )
    if case == "one_episode":  # the text and the initial frame, up to the video so far
        assert shared.last_shared_prefix == second_video
        assert len({tuple(p.tolist()) for p in expected}) == 4  # the prompts differ: a real check
    elif case == "different_initial_frames":  # the text before the first video only
        assert shared.last_shared_prefix == first_video
    else:  # all but the last token (here the answer prefix, run for every prompt)
        assert shared.last_shared_prefix == len(ids)


def test_prompts_laid_out_alike_take_their_rope_positions_from_the_first(vl_model, monkeypatch):
    # integers, so the same bit for bit: the whole batch's were 4 % of a relabelled call
    model, tokenizer, spec = vl_model
    video = np.random.default_rng(4).integers(0, 256, (12, 64, 64, 3), dtype=np.uint8)
    requests = _anchored(tokenizer, video[0], video, [5, 7, 9, 11], spec)
    rows = []
    rope = model.model.get_rope_index
    monkeypatch.setattr(model.model, "get_rope_index",
                        lambda ids, **k: rows.append(len(ids)) or rope(ids, **k))  # fmt: skip
    engine = HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id)
    got = engine.score(requests, list(range(10)))
    assert rows[0] == 1 and engine.last_shared_prefix > 0
    monkeypatch.setattr(model.model, "get_rope_index", rope)
    # the first prompt's positions are every prompt's, as the whole batch's reading gives them
    batch = engine._batch(requests)
    times = {k: batch[k] for k in ("second_per_grid_ts",) if k in batch}
    every, _ = rope(batch["input_ids"], mm_token_type_ids=batch["mm_token_type_ids"],
                    video_grid_thw=batch["video_grid_thw"], attention_mask=batch["attention_mask"],
                    **times)  # fmt: skip
    per = len(batch["video_grid_thw"]) // len(requests)
    first, _ = rope(batch["input_ids"][:1], mm_token_type_ids=batch["mm_token_type_ids"][:1],
                    video_grid_thw=batch["video_grid_thw"][:per],
                    attention_mask=batch["attention_mask"][:1],
                    **{k: t[:per] for k, t in times.items()})  # fmt: skip
    assert torch.equal(first.expand(-1, len(requests), -1), every)
    full = HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id, share_prefix=False)
    torch.testing.assert_close(got, full.score(requests, list(range(10))), atol=1e-5, rtol=0)


def test_encoding_a_call_s_prompts_with_a_memo_gives_the_same_inputs_once_made(
    tiny_model, monkeypatch
):
    # a relabelled episode's queries share the instruction and the first frame: 11 % of a call
    # was encoding them again for every query
    import critic.prompts as module

    _, tokenizer = tiny_model
    video = np.random.default_rng(5).integers(0, 256, (8, 56, 56, 3), dtype=np.uint8)
    made = [module.anchored_progress("lift", video[0], video[: e + 1][-2:], video[e], "digit")
            for e in (3, 5, 7)]  # fmt: skip
    plain = [module.encode(p, tokenizer) for p in made]
    patched = []
    to_patches = module.frames_to_patches
    monkeypatch.setattr(
        module, "frames_to_patches", lambda v, s: patched.append(1) or to_patches(v, s)
    )
    memo: dict = {}
    memoed = [module.encode(p, tokenizer, memo=memo) for p in made]
    for a, b in zip(plain, memoed, strict=True):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    # 3 prompts of 3 videos each: the first frame once, each clip and current frame once
    assert len(patched) == 1 + 3 + 3


def test_score_shares_nothing_when_padded(engine_and_requests):
    engine, requests = engine_and_requests  # prompts of different lengths: left padding
    engine.score(requests, list(range(10)))
    assert engine.last_shared_prefix == 0


def test_seeded_sampling_repeats_and_n_groups(engine_and_requests):
    engine, requests = engine_and_requests
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=6, seed=11)
    first = engine.generate(requests, params)
    assert first == engine.generate(requests, params)
    assert [len(g) for g in first] == [3, 3, 3]
    assert first != engine.generate(
        requests, SamplingParams(n=3, temperature=1.0, max_new_tokens=6, seed=12)
    )
    # a seeded call leaves the caller's generator as it was; an unseeded one draws from it and
    # moves it on (kept and put back, every unseeded call on a CPU drew the same samples)
    state = torch.get_rng_state()
    engine.generate(requests, params)
    assert torch.equal(torch.get_rng_state(), state)
    unseeded = SamplingParams(n=3, temperature=1.0, max_new_tokens=6)
    drawn = engine.generate(requests, unseeded)
    assert not torch.equal(torch.get_rng_state(), state)
    assert drawn != engine.generate(requests, unseeded)
    torch.set_rng_state(state)  # the caller's seed repeats the unseeded draws
    assert engine.generate(requests, unseeded) == drawn


def test_a_seeded_call_on_the_cpu_leaves_every_gpu_s_generator_alone(
    engine_and_requests, monkeypatch
):
    # torch.manual_seed seeds every CUDA device too, and the fork kept only the CPU's: a CPU
    # critic beside a learner on a GPU reset the learner's exploration noise at every call
    engine, requests = engine_and_requests
    seeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", seeded.append)
    monkeypatch.setattr(torch.cuda, "manual_seed", seeded.append)
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=4, seed=7)
    first = engine.generate(requests, params)
    assert seeded == [] and engine.generate(requests, params) == first


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n": 0}, "n=0 must be an integer >= 1 (completions per request)"),
        ({"max_new_tokens": 0}, "max_new_tokens=0 must be an integer >= 1"),
        ({"temperature": -1.0}, "temperature=-1.0 must be a number >= 0 (0 is greedy)"),
        ({"top_p": 0.0}, "top_p=0.0 must be a number in (0, 1]"),
        ({"n": True}, "n=True must be an integer >= 1 (completions per request)"),
        ({"temperature": "0.5"}, "temperature='0.5' must be a number >= 0 (0 is greedy)"),
        ({"top_p": math.nan}, "top_p=nan must be a number in (0, 1]"),
        ({"seed": -1}, "seed=-1 must be None or an integer in [0, 2**63)"),
        # logits / 1e-40 overflow: a raw RuntimeError from torch.multinomial before
        ({"temperature": 1e-40}, "temperature=1e-40 is too small to sample with (below 1e-05 "
         "the sampling probabilities overflow); use 0 for greedy"),
    ],
)  # fmt: skip
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


def test_describe_hands_a_client_the_checkpoints_processor_settings(tiny_model, tmp_path):
    import json

    from critic.models import save_model
    from rollout.checkpoint import load_checkpoint

    model, tokenizer = tiny_model
    assert HFEngine(model, 0, 1).describe()["processor"] is None  # built in memory: none
    save_model(model, tokenizer, tmp_path)
    loaded, _ = load_checkpoint(tmp_path)
    assert HFEngine(loaded, 0, 1).describe()["processor"] is None  # saved by the project: none
    settings = {"size": {"shortest_edge": 12544, "longest_edge": 602112}}
    (tmp_path / "video_preprocessor_config.json").write_text(json.dumps(settings))
    loaded, _ = load_checkpoint(tmp_path)
    assert HFEngine(loaded, 0, 1).describe()["processor"] == settings


def test_qwen3_vl_requests_are_checked_segment_by_segment(vl_model):
    """A Qwen3-VL grid row of t temporal patches is t runs of video tokens; a prompt with the
    video in one run (Qwen2.5-VL's layout) is refused, not misplaced."""
    from critic.vision import VisionSpec
    from rollout.engine import InvalidRequestError

    model, tokenizer, spec = vl_model
    engine = HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id)
    video = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    prompt = prompts.stepwise_progress("lift", video, None)
    engine.check_request(Request(**prompts.encode(prompt, tokenizer, spec)))  # its own layout
    other = VisionSpec(**{**spec.__dict__, "segmented": not spec.segmented})
    wrong = Request(**prompts.encode(prompt, tokenizer, other))
    with pytest.raises(InvalidRequestError, match="video token runs of lengths"):
        engine.check_request(wrong)
    # an unchecked one is not shared (its runs do not make the grid's videos), not an IndexError
    assert engine.shared_prefix([wrong, wrong], engine._batch([wrong, wrong])) is None


def _own_copy(tiny_model):
    """A copy of the tiny model to change, its engine, and one video request for it."""
    import copy

    model, tokenizer = tiny_model
    model = copy.deepcopy(model)
    engine = HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id)
    frames = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    request = Request(**prompts.encode(prompts.stepwise_progress("lift", frames, None), tokenizer))
    return model, tokenizer, engine, request


def test_the_checkpoint_s_generation_config_does_not_change_decoding(tiny_model):
    # transformers fills every option a call leaves unset from the model's generation_config, so
    # a checkpoint's repetition penalty changed greedy answers and GRPO's sampling distribution
    model, tokenizer, engine, request = _own_copy(tiny_model)
    greedy = SamplingParams(temperature=0, max_new_tokens=12)
    sampled = SamplingParams(n=2, temperature=1.0, max_new_tokens=12, seed=0)
    plain = engine.generate([request], greedy), engine.generate([request], sampled)
    model.generation_config.repetition_penalty = 1.3
    model.generation_config.no_repeat_ngram_size = 2
    model.generation_config.top_k = 5
    assert (engine.generate([request], greedy), engine.generate([request], sampled)) == plain
    assert model.generation_config.repetition_penalty == 1.3  # the model's own is left as it was
    with torch.inference_mode():  # the control: the penalty does change what the model says
        out = model.generate(**engine._batch([request]), do_sample=False, max_new_tokens=12,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=-1,
                             suppress_tokens=engine.vision_token_ids)  # fmt: skip
    assert out[0, len(request.input_ids) :].tolist() != plain[0][0][0]


def test_a_generated_pad_token_stays_in_the_completion(tiny_model):
    # pads come only after a row's EOS, where the completion is cut; one the model says itself
    # was deleted, so the engine returned a sequence the model never produced
    model, tokenizer, engine, request = _own_copy(tiny_model)
    greedy = SamplingParams(temperature=0, max_new_tokens=8)
    (before,) = engine.generate([request], greedy)[0]
    with torch.no_grad():  # the pad where the model said before[1]: the two rows swapped, the
        # pad takes the step's highest logit (3x the row was lower where that logit was negative)
        weights = model.get_output_embeddings().weight
        pad, said = tokenizer.pad_token_id, before[1]
        weights[[pad, said]] = weights[[said, pad]]
    (after,) = engine.generate([request], greedy)[0]
    assert after[1] == tokenizer.pad_token_id and len(after) == 8


def test_the_local_engine_reads_token_types_from_the_ids_as_the_server_does(engine_and_requests):
    # a request's own types placed its videos: video_token_type=1 crashed inside transformers and
    # all-zero types gave another answer than the server, which rebuilds them from the ids
    engine, requests = engine_and_requests
    expected = engine.score(requests, list(range(10)))
    for fill in (0, 1):
        odd = [Request(**{**r.__dict__, "mm_token_type_ids": torch.full_like(r.mm_token_type_ids, fill)})
               for r in requests]  # fmt: skip
        torch.testing.assert_close(engine.score(odd, list(range(10))), expected, atol=1e-6, rtol=0)


def test_score_refuses_what_the_server_refuses(engine_and_requests):
    engine, requests = engine_and_requests
    from rollout.engine import InvalidRequestError

    for candidates, message in (
        ([-1, 28], r"\[-1\]"),
        ([], "at least one token id"),
        ([10**6], "outside"),
    ):
        with pytest.raises(InvalidRequestError, match=message):  # -1 read the last token's
            engine.score(requests, candidates)
    with pytest.raises(InvalidRequestError, match="prefix holds ids outside the vocabulary"):
        engine.score(requests, [1, 2], prefix=[-5])
    empty = Request(requests[0].input_ids, requests[0].mm_token_type_ids,
                    requests[0].pixel_values_videos[:0], requests[0].video_grid_thw[:0])  # fmt: skip
    with pytest.raises(InvalidRequestError, match=r"must be a \[V, 3\] tensor with V >= 1"):
        engine.check_request(empty)  # it passed, then torch.cat([]) inside the model


def test_decoding_steps_in_step_across_processes(tiny_model, monkeypatch):
    # under DeepSpeed ZeRO-3 every forward gathers weights from all processes: a process whose
    # completions ended first must keep stepping, or the others hang. transformers decides this
    # from an HfDeepSpeedConfig the project never makes, so the engine says it itself
    model, _, engine, request = _own_copy(tiny_model)
    asked = []
    generate = model.generate

    def recording(*args, synced_gpus=None, **kwargs):
        asked.append(synced_gpus)
        return generate(*args, **kwargs)

    monkeypatch.setattr(model, "generate", recording)
    greedy = SamplingParams(temperature=0, max_new_tokens=4)
    alone = engine.generate([request], greedy)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 2)
    assert engine.generate([request], greedy) == alone
    assert asked == [False, True]


def _many_videos(tokenizer, spec, videos=20):
    """One prompt of ``videos`` one-frame 28² videos (a merged token each) and little text: the
    batch then holds more videos than tokens per prompt."""
    rng = np.random.default_rng(0)
    frames = tuple(rng.integers(0, 256, (1, 28, 28, 3), dtype=np.uint8) for _ in range(videos))
    prompt = prompts.Prompt(({"role": "user", "content": prompts.VIDEO * videos},), frames, "digit")
    return Request(**prompts.encode(prompt, tokenizer, spec))


@pytest.mark.parametrize("share_prefix", [False, True])
def test_a_batch_of_more_videos_than_tokens_runs(vl_model, share_prefix):
    # Qwen2.5-VL's rope reads each video's seconds per temporal patch; left out, transformers
    # drew its default from an iterator as long as the sequence, not the videos: 8 prompts of 20
    # videos in 134 tokens ended in a bare StopIteration (so did 75 anchored training samples)
    model, tokenizer, spec = vl_model
    request = _many_videos(tokenizer, spec)
    if model.config.model_type == "qwen2_5_vl":  # Qwen3-VL's timestamps make its prompts longer
        assert 8 * len(request.video_grid_thw) > len(request.input_ids)
    engine = HFEngine(
        model, tokenizer.pad_token_id, tokenizer.eos_token_id, share_prefix=share_prefix
    )
    one = engine.score([request], list(range(10)))
    torch.testing.assert_close(
        engine.score([request] * 8, list(range(10))), one.expand(8, -1), atol=1e-5, rtol=0
    )
    greedy = engine.generate([request] * 8, SamplingParams(temperature=0, max_new_tokens=3))
    assert (
        greedy
        == [engine.generate([request], SamplingParams(temperature=0, max_new_tokens=3))[0]] * 8
    )
    sampled = engine.generate(
        [request] * 8, SamplingParams(temperature=1.0, n=2, max_new_tokens=3, seed=0)
    )
    assert len(sampled) == 8 and all(len(group) == 2 for group in sampled)
