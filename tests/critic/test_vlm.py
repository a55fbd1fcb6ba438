"""VLMCritic as the reward of VisCriticReward-v0, with a real tiny Qwen2.5-VL."""

from __future__ import annotations

import json
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
        ({"seed": -1}, "seed=-1 must be an integer in [0, 2**63)"),
        ({"samples": True}, "samples=True must be an integer >= 1"),
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


def test_a_saved_checkpoint_directory_is_a_critic(tmp_path, tiny_model):
    from critic.models import save_model

    save_model(*tiny_model, tmp_path / "ckpt")
    env = gym.make("VisCriticReward-v0", env="Reacher-v5", critic=str(tmp_path / "ckpt"))
    env.reset(seed=0)
    _, reward, *_ = env.step(env.action_space.sample())
    assert 0.0 <= reward <= 1.0
    env.close()


def _frames_sent(critic, task: str, **options) -> tuple[int, list[int]]:
    """The reward's clip length for ``critic`` on ``task``, and the frames of the queries it sent
    over a reset and one step."""
    sent = []
    score = critic.estimate_progress

    def spy(queries):
        sent.extend(len(q.frames) for q in queries)
        return score(queries)

    critic.estimate_progress = spy
    env = gym.make("VisCriticReward-v0", env=task, critic=critic, **options)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    env.close()
    critic.estimate_progress = score
    return env.get_wrapper_attr("config").frames_per_query, sent


def _record(folder: Path, **keys) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **keys}))


def test_the_clip_length_a_checkpoint_records_is_what_the_reward_sends(tmp_path, tiny_model):
    from critic.models import CLIP_FRAMES_KEY, save_model

    save_model(*tiny_model, tmp_path / "ckpt")
    assert make_critic(str(tmp_path / "ckpt")).clip_frames is None  # a model from elsewhere
    _record(tmp_path / "ckpt", **{CLIP_FRAMES_KEY: 2})
    critic = make_critic(str(tmp_path / "ckpt"))
    assert critic.clip_frames == 2
    assert _frames_sent(critic, "Reacher-v5") == (2, [2, 2])  # the reset query and the step's
    assert _frames_sent(critic, "Reacher-v5", frames_per_query=4) == (4, [4, 4])  # asked: wins


def test_a_checkpoint_may_record_a_clip_length_per_task(tmp_path, tiny_model):
    from critic.models import CLIP_FRAMES_KEY, TASK_CLIP_FRAMES_KEY, save_model

    save_model(*tiny_model, tmp_path / "ckpt")
    _record(tmp_path / "ckpt", **{CLIP_FRAMES_KEY: 2, TASK_CLIP_FRAMES_KEY: {"Reacher-v5": 1}})
    critic = make_critic(str(tmp_path / "ckpt"))
    assert critic.clip_frames == 2  # every task not named reads the checkpoint's clip length
    assert [critic.clip_frames_for(t) for t in ("Reacher-v5", "Pusher-v5", None)] == [1, 2, 2]
    assert _frames_sent(critic, "Reacher-v5") == (1, [1, 1])
    assert _frames_sent(critic, "Pusher-v5") == (2, [2, 2])


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


def test_sampled_answers_give_the_share_at_100_percent_as_achieved(monkeypatch):
    critic = make_critic({"name": "tiny", "mode": "reason", "samples": 4})
    texts = ["<answer>100%</answer>", "<answer>100</answer>", "<answer>50%</answer>",
             "<answer>90%</answer>"]  # fmt: skip
    ids = [critic.tokenizer.encode(t, add_special_tokens=False) for t in texts]
    monkeypatch.setattr(critic._engine, "generate", lambda requests, params: [ids] * len(requests))
    estimate = critic.estimate_progress([ProgressQuery("lift", frames=FRAMES)])[0]
    # progress: the mean of 1, 1, 0.5, 0.9; achieved: 2 of the 4 samples say 100 %
    assert estimate.progress == pytest.approx(0.85) and estimate.achieved == pytest.approx(0.5)
