"""vLLM engine: request building on CPU (hand-worked), the engine itself on a GPU (marked)."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from critic import prompts
from critic.vision import VisionSpec, frames_to_patches
from rollout.engine import InvalidRequestError, Request, SamplingParams
from rollout.imports import MissingExtraError
from rollout.vllm_engine import (
    VLLMEngine,
    build_vllm_prompt,
    candidate_probs,
    vllm_launch_kwargs,
    vllm_sampling_kwargs,
    vllm_score_kwargs,
)


def test_video_runs_collapse_to_one_placeholder_per_video():
    a, b = np.zeros((2, 28, 28, 3), np.uint8), np.ones((4, 28, 56, 3), np.uint8)
    ids = torch.tensor([1, 9, 9, 9, 2, 9, 9, 3])
    request = Request(ids, (ids == 9).int() * 2, videos=(a, b))
    prompt = build_vllm_prompt(request, video_token_id=9)
    assert prompt["prompt_token_ids"] == [1, 9, 2, 9, 3]
    (first, first_meta), (second, second_meta) = prompt["multi_modal_data"]["video"]
    assert first is a and second is b
    # Each video comes with its frame rate: 2 frames a second, one temporal patch of 2 frames a
    # second, the spacing the transformers engine's positions have (vLLM's processor reads
    # temporal_patch_size / fps from it; without it, 24 fps: a twelfth of a second)
    assert first_meta == {"fps": 2.0, "total_num_frames": 2, "frames_indices": [0, 1],
                          "duration": 1.0}  # fmt: skip
    assert second_meta == {"fps": 2.0, "total_num_frames": 4, "frames_indices": [0, 1, 2, 3],
                           "duration": 2.0}  # fmt: skip
    # One video is passed as its pair itself; no video, no multi_modal_data.
    one = build_vllm_prompt(Request(ids[:5], ids[:5], videos=(a,)), video_token_id=9)
    assert one == {
        "prompt_token_ids": [1, 9, 2],
        "multi_modal_data": {"video": (a, first_meta)},
        "mm_processor_kwargs": {"min_pixels": 28 * 28, "max_pixels": 28 * 28},
    }
    assert prompt["mm_processor_kwargs"] == {"min_pixels": 28 * 28, "max_pixels": 28 * 56}
    assert build_vllm_prompt(Request(ids[:1], ids[:1]), 9) == {"prompt_token_ids": [1]}
    # a model whose temporal patches hold 4 frames is given 4 frames a second
    four = build_vllm_prompt(Request(ids[:5], ids[:5], videos=(b,)), 9, temporal_patch_size=4)
    assert four["multi_modal_data"]["video"][1]["fps"] == 4.0


def test_under_torchrun_each_process_runs_its_own_vllm_on_its_gpu():
    # vLLM's default executor put every process's engine on GPU 0
    assert vllm_launch_kwargs({"WORLD_SIZE": "4", "RANK": "1", "LOCAL_RANK": "1"}) == {
        "distributed_executor_backend": "external_launcher"
    }
    assert vllm_launch_kwargs({"WORLD_SIZE": "1"}) == vllm_launch_kwargs({}) == {}


def test_runs_and_videos_must_pair_up():
    ids = torch.tensor([1, 9, 9, 2])
    with pytest.raises(InvalidRequestError) as err:
        build_vllm_prompt(Request(ids, ids), video_token_id=9)
    assert str(err.value) == (
        "the request has 1 video placeholder runs but 0 videos; build it with "
        "prompts.encode(..., keep_videos=True) for the vLLM engine"
    )


def test_kept_frames_are_resized_to_the_grid_and_give_the_same_patches(tiny_model):
    _, tokenizer = tiny_model
    spec = VisionSpec()
    frames = np.random.default_rng(0).integers(0, 256, (3, 64, 80, 3), dtype=np.uint8)
    prompt = prompts.stepwise_progress("lift", frames, None)
    kept = prompts.encode(prompt, tokenizer, spec, keep_videos=True)
    plain = prompts.encode(prompt, tokenizer, spec)
    (video,) = kept["videos"]
    t, h, w = kept["video_grid_thw"][0].tolist()
    assert video.shape == (3, h * 14, w * 14, 3)  # 64x80 → smart_resize 56x84 → grid 4x6
    assert (h, w) == (4, 6)
    torch.testing.assert_close(kept["pixel_values_videos"], plain["pixel_values_videos"])
    # Patchifying the kept frames again resizes nothing: another processor makes the same grid.
    again, grid = frames_to_patches(video, spec)
    torch.testing.assert_close(again, kept["pixel_values_videos"], rtol=0, atol=0)
    assert torch.equal(grid, kept["video_grid_thw"])
    vllm_prompt = build_vllm_prompt(
        Request(**kept), tokenizer.convert_tokens_to_ids("<|video_pad|>")
    )
    assert len(vllm_prompt["prompt_token_ids"]) == len(kept["input_ids"]) - t * h * w // 4 + 1


def test_sampling_and_score_parameters():
    params = SamplingParams(n=4, max_new_tokens=32, temperature=0.7, top_p=0.9, seed=5)
    assert vllm_sampling_kwargs(params, eos_token_id=7) == {
        "n": 4,
        "max_tokens": 32,
        "temperature": 0.7,
        "top_p": 0.9,
        "seed": 5,
        "stop_token_ids": [7],
        "skip_special_tokens": False,
    }
    assert vllm_sampling_kwargs(params, 7, banned_token_ids=[3, 4])["logit_bias"] == {
        3: -100.0,
        4: -100.0,
    }
    assert vllm_score_kwargs([3, 4]) == {
        "n": 1,
        "max_tokens": 1,
        "temperature": 1.0,
        "allowed_token_ids": [3, 4],
        "logprobs": 2,
        "seed": 0,
    }


class _FakeLLM:
    """vLLM's ``LLM`` as the engine calls it: records its options and calls; each completion is
    the prompt's index and the seed it was drawn with."""

    def __init__(self, **options):
        self.options, self.calls = options, []

    def generate(self, prompts, sampling, use_tqdm=False):
        self.calls.append(("generate", sampling))
        many = sampling if isinstance(sampling, list) else [sampling] * len(prompts)
        return [
            SimpleNamespace(outputs=[SimpleNamespace(token_ids=[k, s.seed or 0, s.n])
                                     for _ in range(s.n)])
            for k, s in enumerate(many)
        ]  # fmt: skip

    def collective_rpc(self, method, args=()):
        self.calls.append((method,))

    def reset_prefix_cache(self):
        self.calls.append(("reset_prefix_cache",))

    def reset_encoder_cache(self):
        self.calls.append(("reset_encoder_cache",))


@pytest.fixture
def fake_vllm_engine(tiny_model, tmp_path, monkeypatch):
    """A VLLMEngine over a fake ``vllm`` module: what the engine asks of vLLM, on any machine."""
    import sys

    from critic.models import save_model

    save_model(*tiny_model, tmp_path)
    fake = SimpleNamespace(LLM=_FakeLLM, SamplingParams=lambda **k: SimpleNamespace(**k))
    monkeypatch.setitem(sys.modules, "vllm", fake)
    return VLLMEngine(str(tmp_path), video_token_id=9, eos_token_id=99)


def test_what_the_engine_asks_of_vllm(fake_vllm_engine):
    engine = fake_vllm_engine
    # decoding by our SamplingParams alone: vLLM also stopped on the checkpoint's
    # generation_config end tokens, where the transformers engine goes on
    assert engine.llm.options["generation_config"] == "vllm"
    requests = [Request(torch.tensor([1, 3]), torch.zeros(2, dtype=torch.int32))] * 3
    # sampled: one SamplingParams per prompt, prompt k seeded seed + k * n (vLLM seeds
    # completion i with seed + i, so every prompt drew the same numbers)
    groups = engine.generate(requests, SamplingParams(n=2, temperature=0.7, seed=5))
    assert groups == [[[k, 5 + 2 * k, 2]] * 2 for k in range(3)]
    # greedy with n > 1: vLLM refuses it ("n must be 1 when using greedy sampling"); one
    # completion, given n times, as the transformers engine does
    groups = engine.generate(requests[:1], SamplingParams(n=3, temperature=0, seed=1))
    assert groups == [[[0, 1, 1]] * 3]
    groups[0][0].append(99)  # n lists of their own: one changed leaves the others
    assert groups[0][1:] == [[0, 1, 1]] * 2
    assert vllm_sampling_kwargs(SamplingParams(n=3, temperature=0), 2)["n"] == 1
    # new weights: the prefix cache and the vision encoder's outputs (keyed by the video's
    # content alone) are dropped
    engine.llm.calls.clear()
    engine.load_weights([("w", torch.zeros(1))])
    assert engine.llm.calls == [("viscritic_load_weights",), ("reset_prefix_cache",),
                                ("reset_encoder_cache",)]  # fmt: skip
    # more candidates than vLLM returns log-probabilities for: said, not a vLLM error
    with pytest.raises(
        InvalidRequestError,
        match=r"^21 candidates, and this vLLM engine returns at most max_logprobs=20",
    ):
        engine.score(requests[:1], list(range(21)))


def test_a_vllm_that_cannot_drop_its_encoder_outputs_is_refused_before_new_weights_load(
    fake_vllm_engine, monkeypatch
):
    from rollout.engine import EngineError

    engine = fake_vllm_engine
    # reset_mm_cache clears the processor's cache, not the vision encoder's outputs
    monkeypatch.delattr(_FakeLLM, "reset_encoder_cache")
    monkeypatch.setattr(_FakeLLM, "reset_mm_cache", lambda self: None, raising=False)
    engine.llm.calls.clear()
    with pytest.raises(EngineError, match=r"has no reset_encoder_cache: after new weights it would "
                       r"reuse the old vision tower's embeddings"):  # fmt: skip
        engine.load_weights([("w", torch.zeros(1))])
    assert engine.llm.calls == []  # nothing loaded
    assert "train with freeze_vision=true" in engine.encoder_cache_problem()
    # a vision tower that does not train: its embeddings stay right, the weights load
    engine.vision_frozen = True
    engine.load_weights([("w", torch.zeros(1))])
    assert engine.llm.calls == [("viscritic_load_weights",), ("reset_prefix_cache",)]


def test_candidate_probs_renormalise_over_the_candidates():
    logprob = lambda p: SimpleNamespace(logprob=math.log(p))  # noqa: E731
    # 0.2 and 0.6 of the mass, the third candidate absent: renormalised 0.2/0.8, 0.6/0.8, 0.
    probs = candidate_probs({10: logprob(0.2), 11: logprob(0.6)}, [10, 11, 12])
    assert probs == pytest.approx([0.25, 0.75, 0.0])
    with pytest.raises(InvalidRequestError):
        candidate_probs({}, [1])


def test_engine_without_vllm_names_the_extra(tmp_path):
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vllm is installed here")
    (tmp_path / "config.json").write_text('{"model_type": "qwen2_5_vl"}')  # a checkpoint folder
    with pytest.raises(MissingExtraError) as err:
        VLLMEngine(str(tmp_path), video_token_id=1, eos_token_id=2)
    assert str(err.value).startswith("the vLLM engine needs the optional package 'vllm'")
    assert str(err.value).endswith(
        "Install it with: pip install -e '.[vllm]' (in the repository's root)"
    )


@pytest.mark.gpu
def test_vllm_matches_transformers_on_gpu(tiny_model, tmp_path):
    """Greedy completions and scores of vLLM equal the transformers engine's (same weights)."""
    pytest.importorskip("vllm")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from critic.models import save_model
    from rollout.hf import HFEngine

    model, tokenizer = tiny_model
    save_model(model, tokenizer, tmp_path)
    video_id = tokenizer.convert_tokens_to_ids("<|video_pad|>")
    rng = np.random.default_rng(0)
    requests = [
        Request(**prompts.encode(prompts.stepwise_progress("lift", rng.integers(0, 256, (t, 56, 56, 3), dtype=np.uint8), None), tokenizer, keep_videos=True))
        for t in (2, 4)
    ]  # fmt: skip
    # a copy: .cuda() moves in place, and the session's tiny_model is every later test's too
    hf = HFEngine(
        copy.deepcopy(model).cuda().float(), tokenizer.pad_token_id, tokenizer.eos_token_id
    )
    engine = VLLMEngine(str(tmp_path), video_id, tokenizer.eos_token_id, dtype="float32")
    greedy = SamplingParams(temperature=0, max_new_tokens=8)
    assert engine.generate(requests, greedy) == hf.generate(requests, greedy)
    torch.testing.assert_close(
        engine.score(requests, list(range(10, 20))), hf.score(requests, list(range(10, 20))), atol=1e-3, rtol=0
    )  # fmt: skip
    engine.sleep()
    engine.wake_up()
    # other weights, the vision tower's and the language model's alike: reloading the ones it
    # had could not show a sync that did nothing, nor vision outputs cached from the old weights
    changed = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in changed.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    engine.load_weights(changed.state_dict().items())
    hf_changed = HFEngine(changed.cuda().float(), tokenizer.pad_token_id, tokenizer.eos_token_id)
    assert engine.generate(requests, greedy) == hf_changed.generate(requests, greedy)
    torch.testing.assert_close(
        engine.score(requests, list(range(10, 20))), hf_changed.score(requests, list(range(10, 20))), atol=1e-3, rtol=0
    )  # fmt: skip
    assert not torch.allclose(hf_changed.score(requests, list(range(10, 20))),
                              hf.score(requests, list(range(10, 20))), atol=1e-3)  # fmt: skip


def test_a_qwen3_vl_checkpoint_is_refused_before_vllm_is_needed(tmp_path):
    """Qwen3-VL's timestamped prompts are not handed to vLLM: refused by name, on any machine."""
    from critic.models import build_preset, save_model
    from rollout.checkpoint import ModelLoadError

    save_model(*build_preset("tiny-qwen3vl"), tmp_path)
    with pytest.raises(ModelLoadError) as err:
        VLLMEngine(str(tmp_path), video_token_id=0, eos_token_id=0)
    assert str(err.value) == (
        f"{tmp_path}: the vLLM engine does not run 'qwen3_vl' models yet (their timestamped video "
        "prompts are not handed to vLLM); use rollout_engine=hf (transformers) for a Qwen3-VL critic"
    )


def test_an_unreadable_model_config_is_a_load_error(tmp_path):
    from rollout.checkpoint import ModelLoadError

    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"config.json is not a readable model config: "):
        VLLMEngine(str(tmp_path), video_token_id=0, eos_token_id=0)
    # a hub id: nothing downloads at run time (it went on to vLLM, which would fetch it)
    with pytest.raises(ModelLoadError, match=r"^Qwen/Qwen2.5-VL-7B-Instruct: no checkpoint folder"):
        VLLMEngine("Qwen/Qwen2.5-VL-7B-Instruct", video_token_id=0, eos_token_id=0)


def test_an_option_vllm_does_not_take_is_named_before_training():
    # it reached vllm.LLM(**options) at the first GRPO stage, after the stages before had trained
    from dataclasses import dataclass

    from rollout.vllm_engine import vllm_options_problem

    @dataclass
    class EngineArgs:  # where LLM() sends the keywords it does not name itself
        gpu_memory_utilization: float = 0.9
        enable_sleep_mode: bool = False
        max_model_len: int | None = None

    class LLM:
        def __init__(self, model, tokenizer=None, **kwargs):
            pass

    vllm = SimpleNamespace(EngineArgs=EngineArgs, LLM=LLM, __version__="0.99")
    good = {"gpu_memory_utilization": 0.3, "enable_sleep_mode": True, "tokenizer": "t"}
    assert vllm_options_problem(vllm, good) is None
    assert vllm_options_problem(vllm, {"max_model_lenght": 4096}) == (
        "vllm.max_model_lenght=4096 is not an option of this vLLM's LLM() (vLLM 0.99); did you "
        "mean vllm.max_model_len?; drop it, or give one of LLM()'s or EngineArgs' options"
    )
    assert vllm_options_problem(SimpleNamespace(), {"anything": 1}) is None  # cannot list them
