"""VLMCritic as the reward of VisCriticReward-v0, with a real tiny Qwen2.5-VL."""

from __future__ import annotations

import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the env)
from critic import CriticError, FailureQuery, ProgressQuery, make_critic
from critic.base import ParseStatus

pytest.importorskip("transformers")
FRAMES = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["score", "reason"])
def test_tiny_vlm_critic_drives_the_reward(mode):
    critic = {"name": "tiny", "mode": mode, "samples": 2, "max_new_tokens": 8}
    env = gym.make(
        "VisCriticReward-v0", env="Reacher-v5", critic=critic, query_every=5, frames_per_query=4
    )
    _, info = env.reset(seed=0)
    for _ in range(5):
        _, reward, _, _, info = env.step(env.action_space.sample())
    assert info["critic_queried"] and np.isfinite(reward)
    if mode == "score":
        assert info["critic_status"] == "ok" and 0.0 <= info["critic_progress"] <= 1.0
        assert info["critic_spread"] > 0
    else:  # random weights rarely write a valid answer: the status says so and progress holds
        assert info["critic_status"] in {s.value for s in ParseStatus}
        assert "critic_reasoning" in info
    env.close()


def test_a_sure_top_digit_reads_progress_1_not_just_above(monkeypatch):
    import torch

    # float32's softmax rounds a sure 9 to p9 = 1.0 beside digits still above 0: the expected
    # digit read 1.0000000079, which the reward refused the moment a learner succeeded
    critic = make_critic("tiny")
    sure = torch.tensor([[1e-9] * 9 + [1.0]], dtype=torch.float32)
    monkeypatch.setattr(critic._engine, "score", lambda requests, *a, **k: sure)
    assert float(sure.double() @ (torch.arange(10) / 9).double()) > 1  # what it read
    (estimate,) = critic.estimate_progress([ProgressQuery("lift", frames=FRAMES)])
    assert estimate.progress == 1.0 and estimate.achieved == 1.0


def test_score_readout_is_the_expected_digit():
    critic = make_critic("tiny")
    estimate = critic.estimate_progress([ProgressQuery("lift", frames=FRAMES)])[0]
    # Expected digit / 9 from the engine's probabilities, recomputed by hand here.
    from critic import prompts
    from rollout.engine import Request

    request = Request(**prompts.encode(prompts.anchored_progress("lift", FRAMES[0], FRAMES, FRAMES[-1], "digit"),
                                       critic.tokenizer))  # fmt: skip
    probs = np.asarray(
        critic.engine.score([request], critic._digits, prefix=critic._answer_prefix)
    )[0]
    assert estimate.progress == pytest.approx(float(probs @ (np.arange(10) / 9)))
    assert estimate.achieved == pytest.approx(float(probs[9]))  # the top digit: progress 1
    # what it scores is the trained answer's digit: a score sample's completion (pinned in
    # test_samples) tokenizes as the critic's prefix, then digit d's token, then the rest; a
    # prefix or digit ids of its own (another prompt format, a "▁5" token) would read noise
    for d in range(10):
        trained = critic.tokenizer(f"<think></think><answer>{d}</answer>",
                                   add_special_tokens=False).input_ids  # fmt: skip
        prefix = len(critic._answer_prefix)
        assert trained[:prefix] == list(critic._answer_prefix)
        assert trained[prefix] == critic._digits[d]


def test_failure_detection_returns_one_verdict_per_query():
    critic = make_critic({"name": "tiny", "max_new_tokens": 6})
    verdicts = critic.detect_failure([FailureQuery("lift", frames=FRAMES)] * 2)
    assert len(verdicts) == 2 and all(isinstance(v.status, ParseStatus) for v in verdicts)


def test_verdict_confidence_is_the_answers_first_token_probability():
    import torch

    from critic import prompts
    from rollout.engine import Request

    critic = make_critic("tiny")
    tok = critic.tokenizer
    request = Request(**prompts.encode(prompts.failure_detection("lift", FRAMES, ["stall"]), tok))
    generated = tok("<think>it stops</think><answer>", add_special_tokens=False).input_ids
    confidence = critic._verdict_confidence(request, [*generated, 7], success=False)
    # By hand: one forward pass over prompt + generated prefix; the next token's probabilities of
    # "success" and of "failure"'s first token ("f"), renormalised over the two.
    ids = torch.cat([request.input_ids, torch.tensor(generated)])[None]
    types = torch.cat([request.mm_token_type_ids, torch.zeros(len(generated), dtype=torch.int32)])
    with torch.no_grad():
        logits = critic._model(input_ids=ids, mm_token_type_ids=types[None],
                               pixel_values_videos=request.pixel_values_videos,
                               video_grid_thw=request.video_grid_thw).logits[0, -1]  # fmt: skip
    first = [tok("success", add_special_tokens=False).input_ids[0],
             tok("failure", add_special_tokens=False).input_ids[0]]  # fmt: skip
    p = torch.softmax(logits[first], dim=0)
    assert confidence == pytest.approx(float(p[1]), abs=1e-5)
    assert critic._verdict_confidence(request, generated, success=None) == 1.0  # no verdict
    assert critic._verdict_confidence(request, [7, 8], success=True) == 1.0  # no answer tag


def test_bad_options_and_missing_frames():
    with pytest.raises(CriticError) as err:
        make_critic({"name": "tiny", "mode": "vibes"})
    assert str(err.value) == "mode='vibes' is not a critic mode; pick one of ['score', 'reason']"
    with pytest.raises(CriticError) as err:
        make_critic("tiny").estimate_progress([ProgressQuery("lift")])
    assert str(err.value) == (
        "vlm:tiny:score needs frames in every query; build queries through envs.VisCriticReward "
        "(which renders them) or set ProgressQuery.frames"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temperature": -1}, "temperature=-1 must be a finite number >= 0 (0: greedy answers); "
         "e.g. temperature=0.7"),
        ({"temperature": float("nan")}, "temperature=nan must be a finite number >= 0 (0: greedy "
         "answers); e.g. temperature=0.7"),
        ({"temperature": float("inf")}, "temperature=inf must be a finite number >= 0 (0: greedy "
         "answers); e.g. temperature=0.7"),
        ({"max_new_tokens": 0}, "max_new_tokens=0 must be an integer >= 1 (the generation budget "
         "of a reason-mode answer or a failure verdict), e.g. max_new_tokens=96"),
        ({"temperature": 1e-300}, "temperature=1e-300 is too small to sample with (below 1e-05 "
         "the sampling probabilities overflow); use temperature=0 for greedy answers, or one >= "
         "1e-05, e.g. temperature=0.7"),
        ({"seed": -1}, "seed=-1 must be an integer in [0, 2**63)"),
        ({"samples": True}, "samples=True must be an integer >= 1"),
        ({"cache": "no"}, "cache='no' must be True or False"),  # stored, and read as true
        ({"needs_frames": "false"}, "needs_frames='false' must be True or False"),
        ({"device": "gpu"}, "device='gpu' is not a device; use cpu, cuda or cuda:<index>"),
    ],
)  # fmt: skip
def test_bad_sampling_options_fail_before_the_model_loads(options, message):
    with pytest.raises(CriticError) as err:
        make_critic({"name": "vlm", "model": "tiny", "mode": "reason", **options})
    assert str(err.value) == message


def test_a_cuda_critic_without_cuda_is_a_critic_error(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a CPU-only build
    with pytest.raises(CriticError) as err:
        make_critic({"name": "vlm", "model": "tiny", "device": "cuda"})
    assert str(err.value) == (
        f"device='cuda', but this torch ({torch.__version__}) sees no CUDA GPU; use device=cpu, "
        "or install a CUDA build of torch on a machine with a GPU"
    )
    critic = make_critic({"name": "tiny", "mode": "reason", "temperature": 0, "max_new_tokens": 2})
    assert critic.temperature == 0  # 0 is greedy, and allowed
    # numpy integers are integers (a seed or budget computed with numpy), kept as plain ints
    critic = make_critic({"name": "tiny", "mode": "reason", "samples": np.int64(2),
                          "max_new_tokens": np.int64(2), "seed": np.int64(3)})  # fmt: skip
    assert (critic.samples, critic.max_new_tokens, critic.seed) == (2, 2, 3)
    assert all(type(v) is int for v in (critic.samples, critic.max_new_tokens, critic.seed))


def test_the_video_cache_is_on_by_default_and_changes_nothing():
    from rollout.cache import VideoEmbeddingCache

    cached, plain = make_critic("tiny"), make_critic({"name": "tiny", "cache": False})
    assert isinstance(cached.engine.cache, VideoEmbeddingCache) and plain.engine.cache is None
    queries = [
        ProgressQuery("lift", frames=FRAMES[: t + 1], initial_frame=FRAMES[0]) for t in range(3)
    ]
    for _ in range(2):
        got = [e.progress for e in cached.estimate_progress(queries)]
        assert got == pytest.approx(
            [e.progress for e in plain.estimate_progress(queries)], abs=1e-6
        )
    assert cached.engine.cache.hits > 0


def _answering(critic, monkeypatch, texts: list[str]) -> None:
    """Make ``critic``'s engine give ``texts`` as the samples of every query."""
    ids = [critic.tokenizer.encode(t, add_special_tokens=False) for t in texts]
    monkeypatch.setattr(critic._engine, "generate", lambda requests, params: [ids] * len(requests))


def test_sampled_answers_give_the_share_at_100_percent_as_achieved(monkeypatch):
    critic = make_critic({"name": "tiny", "mode": "reason", "samples": 4})
    _answering(critic, monkeypatch, ["<answer>100%</answer>", "<answer>100</answer>",
                                     "<answer>50%</answer>", "<answer>90%</answer>"])  # fmt: skip
    estimate = critic.estimate_progress([ProgressQuery("lift", frames=FRAMES)])[0]
    # progress: the mean of 1, 1, 0.5, 0.9; achieved: 2 of the 4 samples say 100 %
    assert estimate.progress == pytest.approx(0.85) and estimate.achieved == pytest.approx(0.5)


def test_reason_mode_spread_and_reasoning_come_from_readable_samples(monkeypatch):
    critic = make_critic({"name": "tiny", "mode": "reason", "samples": 4})
    _answering(critic, monkeypatch, ["<answer>maybe</answer>", "no tags at all",
                                     "<answer>40%</answer>", "<answer>30 or 60</answer>"])  # fmt: skip
    estimate = critic.estimate_progress([ProgressQuery("lift", frames=FRAMES)])[0]
    # one readable sample (40 %): no spread to speak of, and the reasoning is that sample's
    assert estimate.progress == pytest.approx(0.4) and estimate.spread is None
    assert estimate.reasoning == "<answer>40%</answer>"
    _answering(critic, monkeypatch, ["<answer>x</answer>", "<answer>40%</answer>",
                                     "<answer>60%</answer>", "none"])  # fmt: skip
    estimate = critic.estimate_progress([ProgressQuery("lift", frames=FRAMES)])[0]
    # two readable: 0.4 and 0.6, mean 0.5, population SD 0.1
    assert estimate.spread == pytest.approx(0.1) and estimate.reasoning == "<answer>40%</answer>"


def test_greedy_answers_have_no_spread(monkeypatch):
    critic = make_critic({"name": "tiny", "mode": "reason", "samples": 4, "temperature": 0})
    ids = critic.tokenizer.encode("<answer>100%</answer>", add_special_tokens=False)
    # the engine gives a greedy answer n times (HFEngine.generate): copies, nothing sampled
    monkeypatch.setattr(
        critic._engine, "generate", lambda requests, params: [[ids] * params.n for _ in requests]
    )
    estimate = critic.estimate_progress([ProgressQuery("lift", frames=FRAMES)])[0]
    assert estimate.progress == pytest.approx(1.0) and estimate.spread is None


@pytest.mark.parametrize(
    ("failure_types", "message"),
    [
        ("stall", "failure_types='stall' is one string, not a list of labels (it would be read "
         "letter by letter); pass a list, e.g. failure_types=['stall']"),
        (None, "failure_types=None must be a list or tuple of one or more failure labels "
         "(non-empty strings), e.g. failure_types=['stall', 'missed_grasp']"),
        ((), "failure_types=() must be a list or tuple of one or more failure labels (non-empty "
         "strings), e.g. failure_types=['stall', 'missed_grasp']"),
        (["stall", 3], "failure_types[1]=3 must be a non-empty string (a failure label), e.g. "
         "failure_types=['stall', 'missed_grasp']"),
        (["stall", " "], "failure_types[1]=' ' must be a non-empty string (a failure label), e.g. "
         "failure_types=['stall', 'missed_grasp']"),
        (("a<video>",), "failure_types[0]='a<video>' holds '<video>', the prompt's own syntax (a "
         "video placeholder, a special token or an answer tag); reword it"),
        # every verdict naming it was unreadable: the parser reads letters, digits, _, - and spaces
        (["stall", "cube fell off!"], "failure_types[1]='cube fell off!' holds characters a "
         "verdict naming it cannot be read back with: use letters, digits, spaces, '_' and '-', "
         "e.g. 'cube_fell_off'"),
        (["stall: x"], "failure_types[0]='stall: x' holds characters a verdict naming it cannot "
         "be read back with: use letters, digits, spaces, '_' and '-', e.g. 'cube_fell_off'"),
    ],
)  # fmt: skip
def test_bad_failure_types_fail_before_the_model_loads(failure_types, message):
    with pytest.raises(CriticError) as err:
        make_critic({"name": "tiny", "failure_types": failure_types})
    assert str(err.value) == message


def test_failure_types_are_kept_as_a_tuple_and_offered_whole():
    critic = make_critic({"name": "tiny", "failure_types": ["stall"], "max_new_tokens": 2})
    assert critic.failure_types == ("stall",)
    verdict = critic.detect_failure([FailureQuery("lift", frames=FRAMES)])[0]
    assert isinstance(verdict.status, ParseStatus)


@pytest.mark.parametrize("model", [None, 123])
def test_a_model_that_is_not_a_name_or_path_is_refused_before_any_download(model):
    with pytest.raises(CriticError) as err:
        make_critic({"name": "vlm", "model": model})
    assert str(err.value) == (
        f"model={model!r} names no critic model; pass a preset (['small', 'small-qwen3vl', 'tiny', 'tiny-qwen3vl']), a shipped "
        "critic (['viscritic-small']), a checkpoint folder (a str or os.PathLike), or "
        "a critic server URL ('http://host:port')"
    )


@pytest.mark.parametrize("method", ["estimate_progress", "detect_failure"])
def test_one_query_or_the_wrong_kind_is_a_critic_error(method):
    critic = make_critic("tiny")
    kind = "ProgressQuery" if method == "estimate_progress" else "FailureQuery"
    progress, failure = ProgressQuery("lift", frames=FRAMES), FailureQuery("lift", frames=FRAMES)
    one, other = (progress, failure) if method == "estimate_progress" else (failure, progress)
    with pytest.raises(CriticError) as err:
        getattr(critic, method)(one)
    assert str(err.value) == (
        f"vlm:tiny:score.{method} takes a list of {kind}, got a {kind}; pass a list of {kind}, "
        "e.g. [query]"
    )
    with pytest.raises(CriticError) as err:
        getattr(critic, method)([one, other])
    assert str(err.value) == (
        f"vlm:tiny:score.{method} takes a list of {kind}, got a list whose item 1 is a "
        f"{type(other).__name__}; pass a list of {kind}, e.g. [query]"
    )


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (ProgressQuery("lift", frames=[FRAMES[0], FRAMES[1, :32, :48]]),
         "query 1's frames hold frames of different sizes [(64, 64, 3), (32, 48, 3)]; resize "
         "them to one size (e.g. each to the first frame's) before building the query"),
        (ProgressQuery("lift", frames=FRAMES / 255.0),
         "query 1's frames are float64 of shape (3, 64, 64, 3); they must be uint8 RGB [T, H, W, "
         "3] (a video): from floats in [0, 1]: (x * 255).round().astype(np.uint8)"),
        (ProgressQuery("lift", frames=FRAMES[..., 0]),
         "query 1's frames are uint8 of shape (3, 64, 64); they must be uint8 RGB [T, H, W, 3] "
         "(a video): from grey frames: np.repeat(x[..., None], 3, axis=-1)"),
        (ProgressQuery("lift", frames=FRAMES[0]),
         "query 1's frames are uint8 of shape (64, 64, 3); they must be uint8 RGB [T, H, W, 3] (a "
         "video): from one frame: x[None]"),
        (ProgressQuery("lift", frames=FRAMES, initial_frame=FRAMES[0, ..., :1]),
         "query 1's initial_frame is uint8 of shape (64, 64, 1); it must be uint8 RGB [H, W, 3] "
         "(one frame): from grey frames: np.repeat(x, 3, axis=-1)"),
        # floats in [0, 255] (an .astype of uint8 frames): the hint scaled them by 255, which wraps
        (ProgressQuery("lift", frames=FRAMES, current_frame=FRAMES[-1].astype(np.float32)),
         "query 1's current_frame is float32 of shape (64, 64, 3); it must be uint8 RGB [H, W, 3] "
         "(one frame): from floats in [0, 255]: x.round().clip(0, 255).astype(np.uint8)"),
        (ProgressQuery("lift", frames=FRAMES.transpose(0, 3, 1, 2)),
         "query 1's frames are uint8 of shape (3, 3, 64, 64); they must be uint8 RGB [T, H, W, 3] "
         "(a video): from channels-first frames: np.moveaxis(x, -3, -1)"),
        (ProgressQuery("lift", frames=np.concatenate([FRAMES, FRAMES[..., :1]], -1)),
         "query 1's frames are uint8 of shape (3, 64, 64, 4); they must be uint8 RGB [T, H, W, 3] "
         "(a video): from RGBA frames: x[..., :3]"),
        (ProgressQuery("lift", frames=FRAMES.astype(np.uint16) * 257),
         "query 1's frames are uint16 of shape (3, 64, 64, 3); they must be uint8 RGB [T, H, W, 3] "
         "(a video): from 16-bit frames: (x >> 8).astype(np.uint8)"),
        (ProgressQuery("lift", frames=np.where(FRAMES > 250, np.nan, FRAMES / 255.0)),
         "query 1's frames are float64 of shape (3, 64, 64, 3); they must be uint8 RGB [T, H, W, "
         "3] (a video): from floats in [0, 1]: (x * 255).round().astype(np.uint8), after "
         "replacing their NaN or infinite values"),
        # a raw TypeError (len() of a 0-d array), and two errors that named neither the query nor
        # the fix, raised after the calls before the query's had run
        (ProgressQuery("lift", frames=np.uint8(0)),
         "query 1's frames are uint8 of shape (); they must be uint8 RGB [T, H, W, 3] (a video): "
         "e.g. a uint8 array of shape (8, 64, 64, 3)"),
        (ProgressQuery("lift", frames=np.zeros((2, 0, 5, 3), np.uint8)),
         "query 1's frames are 0x5 pixels, with nothing to read; render them at a size of 1x1 or "
         "more (e.g. 64x64)"),
        (ProgressQuery("lift", frames=FRAMES, current_frame=np.zeros((2, 600, 3), np.uint8)),
         "query 1's current_frame is 2x600 pixels, an aspect ratio over 200 (the vision tower's "
         "limit); crop or pad them toward a square"),
    ],
)  # fmt: skip
def test_bad_frames_are_named_by_field_and_query_with_the_fix(query, message):
    from critic.vision import FrameError

    critic = make_critic("tiny")
    with pytest.raises(FrameError) as err:
        critic.estimate_progress([ProgressQuery("lift", frames=FRAMES), query])
    assert str(err.value) == message


def test_failure_query_frames_are_checked_too():
    from critic.vision import FrameError

    with pytest.raises(FrameError) as err:
        make_critic("tiny").detect_failure([FailureQuery("lift", frames=FRAMES / 255.0)])
    assert str(err.value) == (
        "query 0's frames are float64 of shape (3, 64, 64, 3); they must be uint8 RGB [T, H, W, "
        "3] (a video): from floats in [0, 1]: (x * 255).round().astype(np.uint8)"
    )


def test_a_tensor_numpy_cannot_read_is_named_and_read_only_frames_read_without_a_warning():
    import warnings

    import torch

    from critic.vision import FrameError

    critic = make_critic("tiny")
    tensor = torch.from_numpy(FRAMES).float().requires_grad_()  # torch's own RuntimeError
    with pytest.raises(FrameError) as err:
        critic.estimate_progress([ProgressQuery("lift", frames=tensor)])
    assert str(err.value).startswith("query 0's frames cannot be read as an array (Can't call")
    assert str(err.value).endswith("e.g. x.detach().cpu().numpy() for a torch tensor")
    frozen = FRAMES.copy()
    frozen.flags.writeable = False  # a memory map's, a decoded video's
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch.from_numpy warned "not writable"
        [read] = critic.estimate_progress([ProgressQuery("lift", frames=frozen)])
    assert read == critic.estimate_progress([ProgressQuery("lift", frames=FRAMES)])[0]


def test_a_long_list_of_queries_is_read_in_calls_of_max_batch(monkeypatch):
    # one call for a whole replay buffer was one batch of thousands of video prompts: a GPU's
    # memory ran out (here: the engine's calls are counted and the readings compared)
    queries = [
        ProgressQuery("lift", frames=FRAMES[: t % 3 + 1], initial_frame=FRAMES[0]) for t in range(7)
    ]
    whole = make_critic({"name": "tiny", "max_batch": 64}).estimate_progress(queries)
    critic = make_critic({"name": "tiny", "max_batch": 3})
    sizes, score = [], critic._engine.score
    monkeypatch.setattr(
        critic._engine, "score", lambda r, *a, **k: sizes.append(len(r)) or score(r, *a, **k)
    )
    encode = critic._request  # each call's queries encoded as it is made, not all first (their
    monkeypatch.setattr(
        critic, "_request", lambda p, memo=None: sizes.append("e") or encode(p, memo)
    )  # pixels)
    split = critic.estimate_progress(queries)
    assert sizes == ["e", "e", "e", 3, "e", "e", "e", 3, "e", 1]
    assert [e.progress for e in split] == pytest.approx([e.progress for e in whole], abs=1e-6)
    assert [e.achieved for e in split] == pytest.approx([e.achieved for e in whole], abs=1e-6)
    assert critic.digit_probs([]).shape == (0, 10)


def test_sampled_calls_of_one_list_take_their_own_seeds(monkeypatch):
    # the engine reseeds every call: two calls with one seed drew the same numbers for their
    # k-th queries, so a split list's samples were correlated across its calls
    critic = make_critic({"name": "tiny", "mode": "reason", "samples": 2, "max_batch": 2,
                          "seed": 5, "max_new_tokens": 4})  # fmt: skip
    calls = []
    monkeypatch.setattr(
        critic._engine,
        "generate",
        lambda requests, params: (
            calls.append((len(requests), params.seed)) or [[[1]] * params.n for _ in requests]
        ),
    )
    estimates = critic.estimate_progress([ProgressQuery("lift", frames=FRAMES)] * 5)
    assert calls == [(2, 5), (2, 6), (1, 7)] and len(estimates) == 5
    # the next list goes on from there: the reward's queries, a list each, had drawn the same
    # numbers at every step of an episode
    calls.clear()
    critic.estimate_progress([ProgressQuery("lift", frames=FRAMES)])
    critic.estimate_progress([ProgressQuery("lift", frames=FRAMES)])
    assert calls == [(1, 8), (1, 9)]
    calls.clear()
    encode = critic._request  # a call's whole-episode clips encoded as the call is made
    monkeypatch.setattr(
        critic, "_request", lambda p, memo=None: calls.append("e") or encode(p, memo)
    )
    assert len(critic.detect_failure([FailureQuery("lift", frames=FRAMES)] * 3)) == 3
    assert calls == ["e", "e", (2, 5), "e", (1, 5)]  # greedy: no numbers drawn, none counted


@pytest.mark.parametrize("max_batch", [0, 2.5, True, "8"])
def test_a_bad_max_batch_fails_before_the_model_loads(max_batch):
    with pytest.raises(CriticError) as err:
        make_critic({"name": "tiny", "max_batch": max_batch})
    assert str(err.value) == (
        f"max_batch={max_batch!r} must be an integer >= 1 (queries per model call), "
        "e.g. max_batch=64"
    )


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"name": "http://127.0.0.1:1", "timeout_s": 0}, "timeout_s=0 must be a number of seconds"),
        ({"name": "http://127.0.0.1:1", "timeout_s": "600"}, "timeout_s='600' must be a number"),
        ({"name": "tiny", "timeout_s": 600}, "timeout_s=600 is a critic server's time limit, "
         "and model='tiny' runs here, with none; leave timeout_s out, or give a server URL"),
    ],
)  # fmt: skip
def test_a_time_limit_is_a_servers_and_checked_before_anything_loads(spec, says):
    from critic.factory import critic_spec_problem

    assert says in critic_spec_problem(spec)
    with pytest.raises(CriticError, match=re.escape(says)):
        make_critic(spec)


@pytest.mark.parametrize("name", ["viscritic-small", "qwen2_5_vl_7b", "qwen3_vl_8b"])
def test_the_critic_configs_name_options_the_critic_takes(name):
    # the GPU nodes' configs run nowhere here: a key the critic lost would fail only there
    from omegaconf import OmegaConf

    from critic.vlm import VLMCritic

    path = Path(__file__).resolve().parents[2] / "configs" / "critic" / f"{name}.yaml"
    options = OmegaConf.to_container(OmegaConf.load(path))
    assert options.pop("_target_") == "critic.vlm.VLMCritic"
    VLMCritic.check_options(**{**options, "device": "cpu"})  # the GPU's device checked apart
    assert options["device"] in ("cpu", "cuda")


def test_a_stepwise_critic_says_it_reads_its_last_estimate():
    # the evaluator then reads its queries in order, each with its last reading, as RL does
    from critic.ensemble import EnsembleCritic
    from critic.oracle import OracleCritic

    stepwise = make_critic({"name": "tiny", "prompt": "stepwise"})
    assert stepwise.reads_previous_progress and not make_critic("tiny").reads_previous_progress
    assert not OracleCritic().reads_previous_progress
    assert EnsembleCritic([stepwise, OracleCritic()]).reads_previous_progress
