"""Critic throughput, as ratios measured side by side in one run.

Queries are real: anchored progress queries over a rendered Reacher episode (frames of the task's
critic view), the way ``VisCriticReward`` builds them.

- queries/s in ``score`` mode at batch 1, 4 and 16 (cache off, so batching alone is measured);
- sliding-window queries (every query of an episode, in order) with and without the video cache;
- an episode's queries one call each (the per-step reward) against one call at the episode's end
  (``relabel=true``, VLM-RM), both cached;
- that end-of-episode call with the shared prefix (:meth:`rollout.hf.HFEngine.shared_prefix`) run
  once against every query in full;
- latency per query of ``score`` (one pass) against ``reason`` (chain of thought, ``samples``);
- where a query's time goes at batch 1 and 16: encoding (template, tokenizer, patchify, done by the
  client), the vision tower, and the language model; and from that the most the video cache can
  give (Amdahl: all tower time saved).

    python experiments/bench_critic.py                 # the `small` preset
    python experiments/bench_critic.py model=tiny reason_tokens=32
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

from rollout.checks import is_int, list_option


class BenchConfigError(ValueError):
    """The bench config cannot run (found before any env or model is built)."""


def batch_sizes(value: Any) -> list:
    """``batches`` as a list: one batch size given bare (``batches=4``) is a list of one."""
    return [value] if is_int(value) else list_option(value)


def check_config(cfg: DictConfig) -> None:
    """Fail before any env or model is built when the config cannot run."""
    import envs
    from critic.vlm import is_server_url

    if not isinstance(cfg.model, str) or is_server_url(cfg.model):
        raise BenchConfigError(
            f"model={cfg.model!r} must be a preset (tiny, small, tiny-qwen3vl, small-qwen3vl) or "
            "a checkpoint folder: the bench times the model in this process, not a critic server"
        )
    if cfg.task not in envs.task_names():
        raise BenchConfigError(
            f"task={cfg.task!r} is not a registered task; pick one of {envs.task_names()}"
        )
    for key, meaning in (
        ("episode_steps", "env steps whose queries are recorded"),
        ("frames_per_query", "frames per query"),
        ("repeats", "timed repeats, the median reported"),
        ("reason_samples", "completions per reason-mode query"),
        ("reason_tokens", "the generation budget of a reason-mode answer"),
    ):
        value = cfg[key]
        if not is_int(value) or value < 1:
            raise BenchConfigError(f"{key}={value!r} must be an integer >= 1 ({meaning})")
    batches = batch_sizes(cfg.batches)
    if not batches or not all(is_int(b) and b >= 1 for b in batches):
        given = cfg.batches
        given = (
            OmegaConf.to_container(given) if isinstance(given, DictConfig | ListConfig) else given
        )
        raise BenchConfigError(
            f"batches={given!r} must be a non-empty list of integers >= 1 (queries per call), "
            "e.g. batches=[1,4,16]"
        )


def _queries(task: str, steps: int, frames_per_query: int, seed: int = 0) -> list:
    """Record the queries the wrapper sends over ``steps`` steps of one episode."""
    from dataclasses import dataclass, field

    import envs
    from critic import OracleCritic

    @dataclass
    class Recorder(OracleCritic):
        needs_frames: bool = True
        seen: list = field(default_factory=list)

        def estimate_progress(self, queries):
            self.seen.extend(queries)
            return super().estimate_progress(queries)

    recorder = Recorder()
    env = envs.make_viscritic_env(task, recorder, frames_per_query=frames_per_query)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        env.step(rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32))
    env.close()
    return recorder.seen


def _breakdown(critic, queries: list, repeats: int) -> dict:
    """Milliseconds per query: encoding, vision tower and the rest of the forward pass."""
    inner = critic.engine.model.model
    original = inner.get_video_features
    tower = []

    def timed(*args, **kwargs):
        start = time.perf_counter()
        out = original(*args, **kwargs)
        tower.append(time.perf_counter() - start)
        return out

    inner.get_video_features = timed
    try:
        encode, forward = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            requests = [critic._request(critic._prompt(q, "digit")) for q in queries]
            encode.append(time.perf_counter() - start)
            start = time.perf_counter()
            critic.engine.score(requests, critic._digits, prefix=critic._answer_prefix)
            forward.append(time.perf_counter() - start)
    finally:
        inner.get_video_features = original
    n = len(queries)
    encode_ms = 1e3 * float(np.median(encode)) / n
    forward_ms = 1e3 * float(np.median(forward)) / n
    tower_ms = 1e3 * float(np.median(tower)) / n
    return {
        "encode_ms": encode_ms,
        "forward_ms": forward_ms,
        "vision_tower_ms": tower_ms,
        "language_model_ms": forward_ms - tower_ms,
        "tokens_per_query": float(
            np.mean([len(critic._request(critic._prompt(q, "digit")).input_ids) for q in queries])
        ),
        "cache_speedup_bound": (encode_ms + forward_ms) / (encode_ms + forward_ms - tower_ms),
    }


def _rate(fn, items: int, repeats: int) -> float:
    """``items`` per second of ``fn``: the median of ``repeats`` timed calls (one side of a
    comparison alone: :func:`_rates` times the sides of one in turn)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return items / float(np.median(times))


def _rates(sides: dict[Any, tuple], repeats: int) -> dict[Any, float]:
    """Each side's ``items`` per second, ``{side: (fn, items)}``: one untimed call of each first
    (a model's first forward pass took 1.7x its later ones), then ``repeats`` rounds that time
    every side once in turn, so a slow spell of a shared machine falls on all of them."""
    for fn, _ in sides.values():
        fn()
    times: dict[Any, list[float]] = {side: [] for side in sides}
    for _ in range(repeats):
        for side, (fn, _) in sides.items():
            start = time.perf_counter()
            fn()
            times[side].append(time.perf_counter() - start)
    return {side: items / float(np.median(times[side])) for side, (_, items) in sides.items()}


def _take(queries: list, count: int) -> list:
    """Exactly ``count`` queries, the recorded ones repeated in order as many times as needed (a
    batch larger than 16 episodes' worth timed fewer queries than its rate was divided by)."""
    return [queries[i % len(queries)] for i in range(count)]


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Check the config, record the queries, time the critic; writes bench_critic.json."""
    from critic.vlm import VLMCritic

    check_config(cfg)
    cfg.batches = [int(b) for b in batch_sizes(cfg.batches)]  # batches=4: a list of one
    queries = _queries(cfg.task, cfg.episode_steps, cfg.frames_per_query)
    # each batch size timed is one model call, not several of the critic's default max_batch
    plain = VLMCritic(model=cfg.model, mode="score", cache=False, max_batch=max(cfg.batches))
    plain.engine.share_prefix = False  # batching alone; the shared prefix is measured below
    # an episode's queries in one call, as the relabelling's is timed
    cached = VLMCritic(
        model=cfg.model,
        mode="score",
        cache=True,
        max_batch=max(*cfg.batches, cfg.episode_steps + 1),
    )
    from rl_results import machine_record

    params = sum(p.numel() for p in plain._model.parameters())
    results: dict = {"model": cfg.model, "parameters": params, "task": cfg.task,
                     "machine": machine_record()}  # fmt: skip

    chunks = {batch: _take(queries, batch) for batch in cfg.batches}
    batch_rates = _rates(
        {batch: (lambda c=chunks[batch]: plain.estimate_progress(c), batch)
         for batch in cfg.batches},
        cfg.repeats,
    )  # fmt: skip
    results["score_queries_per_s"] = batch_rates
    results["batch_speedup"] = {b: r / batch_rates[cfg.batches[0]] for b, r in batch_rates.items()}

    results["per_query_ms"] = {
        batch: _breakdown(plain, _take(queries, batch), cfg.repeats)
        for batch in (cfg.batches[0], cfg.batches[-1])
    }

    window = queries[1:]  # the step queries in order: each shares the initial frame with the rest

    def sliding(critic):
        engine_cache = critic.engine.cache
        if engine_cache is not None:
            engine_cache.clear()
        for q in window:
            critic.estimate_progress([q])

    sides = _rates(
        {"uncached": (lambda: sliding(plain), len(window)),
         "cached": (lambda: sliding(cached), len(window))},
        cfg.repeats,
    )  # fmt: skip
    uncached_rate, cached_rate = sides["uncached"], sides["cached"]
    results["sliding_window"] = {
        "uncached_queries_per_s": uncached_rate,
        "cached_queries_per_s": cached_rate,
        "speedup": cached_rate / uncached_rate,
        "hit_rate": cached.engine.cache.hits
        / max(cached.engine.cache.hits + cached.engine.cache.misses, 1),
    }

    # An episode's queries as the reward sees them (the reset query, then every step): one call
    # per query step (the per-step reward) against one call at the episode's end (relabel=true),
    # both with the video cache the RL critic uses, repeats interleaved.
    def one_by_one():
        cached.engine.cache.clear()
        for q in queries:
            cached.estimate_progress([q])

    def one_call():
        cached.engine.cache.clear()
        cached.estimate_progress(queries)

    per_step_s, relabel_s = [], []
    for _ in range(cfg.repeats):
        per_step_s.append(len(queries) / _rate(one_by_one, len(queries), 1))
        relabel_s.append(len(queries) / _rate(one_call, len(queries), 1))
    results["episode_relabel"] = {
        "queries": len(queries),
        "per_step_s": float(np.median(per_step_s)),
        "relabelled_s": float(np.median(relabel_s)),
        "speedup": float(np.median(per_step_s) / np.median(relabel_s)),
    }

    # The same end-of-episode call with the prefix every query starts with (system prompt,
    # instruction, initial frame) run once and its KV cache reused, against every query in full;
    # repeats interleaved.
    full_s, shared_s = [], []
    for _ in range(cfg.repeats):
        for share, times in ((False, full_s), (True, shared_s)):
            cached.engine.share_prefix = share
            times.append(len(queries) / _rate(one_call, len(queries), 1))
    results["shared_prefix"] = {
        "queries": len(queries),
        "shared_tokens": cached.engine.last_shared_prefix,
        "tokens_per_query": results["per_query_ms"][cfg.batches[0]]["tokens_per_query"],
        "full_s": float(np.median(full_s)),
        "shared_s": float(np.median(shared_s)),
        "speedup": float(np.median(full_s) / np.median(shared_s)),
    }

    # no cache, as the score critic: a repeated query would skip the vision tower in one of them
    reason = VLMCritic(model=cfg.model, mode="reason", samples=cfg.reason_samples, cache=False,
                       max_new_tokens=cfg.reason_tokens, temperature=1.0)  # fmt: skip
    one = queries[-1:]
    latency = _rates(
        {"score": (lambda: plain.estimate_progress(one), 1),
         "reason": (lambda: reason.estimate_progress(one), 1)},
        cfg.repeats,
    )  # fmt: skip
    score_latency, reason_latency = 1.0 / latency["score"], 1.0 / latency["reason"]
    results["latency_s"] = {
        "score": score_latency,
        f"reason ({cfg.reason_samples} x {cfg.reason_tokens} tokens)": reason_latency,
        "reason_over_score": reason_latency / score_latency,
    }
    (out_dir / "bench_critic.json").write_text(json.dumps(results, indent=2))
    return results


@hydra.main(config_path="../configs", config_name="bench_critic", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from critic.base import CriticError
    from critic.models import ModelLoadError
    from envs import InvalidOptionError, UnknownTaskError
    from rollout.engine import EngineError
    from rollout.imports import MissingExtraError

    logging.getLogger("OpenGL").setLevel(logging.WARNING)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        results = run(cfg, out_dir)
    except (BenchConfigError, UnknownTaskError, InvalidOptionError, ModelLoadError, CriticError,
            EngineError, MissingExtraError) as exc:  # fmt: skip
        sys.exit(f"bench_critic: {type(exc).__name__}: {exc}")
    print(json.dumps(results, indent=2))
    print(f"results: {out_dir}")


if __name__ == "__main__":
    main()
