"""experiments/train_critic.py's training back ends on a tiny model and a tiny synthesised Reacher
dataset: a real 2-process DeepSpeed run on CPU (ZeRO-2 and ZeRO-3 over gloo) and its exact
resume, and the vLLM rollout engine's weight sync (vLLM itself is GPU-only, so a stand-in that
generates through transformers takes its place). The recipe's own stages are in
test_train_critic.py, its config checks in test_train_critic_config.py."""

from __future__ import annotations

import math

import pytest

from tests.experiments.train_critic_cli import (
    TINY,
    check_overrides,
    load_recipe,
    read_history,
    run_stages,
    run_train,
)


@pytest.mark.parametrize(("zero", "sft_steps"), [("zero2", 2), ("zero3", 2), ("zero3", 1)])
def test_deepspeed_two_processes_on_cpu(dataset, tmp_path, zero, sft_steps):
    # zero3 after a 1-step stage: the stage's engine was never destroyed, and its hooks on the
    # same module broke the next stage's first forward ("pop from an empty deque")
    pytest.importorskip("deepspeed")
    done = run_train(
        tmp_path,
        f"data=[{dataset}]",
        "pipeline=[sft,pretext]",
        f"stages.sft.steps={sft_steps}",
        "stages.sft.batch_size=2",
        "stages.pretext.steps=1",
        "stages.pretext.batch_size=8",
        "eval_every=0",
        "checkpoint_every=0",
        f"deepspeed_config=configs/deepspeed/{zero}.json",
        torchrun=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # rank 0 logs
    assert [(h["stage"], h["step"]) for h in read_history(tmp_path)] == [
        *(("sft", step) for step in range(sft_steps + 1)), ("pretext", 0), ("pretext", 1)
    ]  # fmt: skip
    from critic.models import load_model

    model, _ = load_model(tmp_path / "pretext" / "final")  # gathered full weights, not shards
    assert sum(p.numel() for p in model.parameters()) > 100_000


@pytest.mark.parametrize("zero", ["zero3"])  # partitioned weights and optimizer (zero2 passes too)
def test_deepspeed_resume_repeats_the_uninterrupted_losses(dataset, tmp_path, zero):
    pytest.importorskip("deepspeed")
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    args = [f"data=[{dataset}]", "pipeline=[sft]", "stages.sft.steps=4", "stages.sft.batch_size=4",
            "checkpoint_every=2", "eval_every=0", f"deepspeed_config=configs/deepspeed/{zero}.json"]  # fmt: skip
    done = run_train(full, *args, torchrun=True)
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = full / "sft" / "checkpoint-2"
    assert sorted(p.name for p in (checkpoint / "deepspeed").glob("rank*.pt")) == [
        "rank0.pt",
        "rank1.pt",
    ]
    done = run_train(resumed, *args, f"resume={checkpoint}", torchrun=True)
    assert done.returncode == 0, done.stderr[-3000:]
    losses = [h["loss"] for h in read_history(full) if h["step"] > 0]  # rank 0's
    assert [h["step"] for h in read_history(resumed)] == [3, 4]
    assert [h["loss"] for h in read_history(resumed)] == losses[2:]  # exactly steps 3 and 4


def test_deepspeed_resume_needs_a_deepspeed_checkpoint(dataset, tmp_path):
    plain = tmp_path / "plain"
    done = run_train(
        plain,
        f"data=[{dataset}]",
        "pipeline=[sft]",
        "stages.sft.steps=2",
        "stages.sft.batch_size=2",
        "checkpoint_every=1",
        "eval_every=0",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with pytest.raises(Exception) as err:
        check_overrides(
            f"data=[{dataset}]",
            f"resume={plain / 'sft' / 'checkpoint-1'}",
            "deepspeed_config=configs/deepspeed/zero2.json",
        )
    assert "has no deepspeed/ folder: it was written without deepspeed_config=" in str(err.value)


_MADE: list = []  # the FakeVLLM engines a test's recipe made


class FakeVLLM:
    """Stands in for vLLM (GPU only): its own copy of the weights, loaded from the folder the
    recipe wrote and replaced by ``load_weights``; it generates through transformers with it."""

    needs_videos = True

    def __init__(self, folder, video_token_id, eos_token_id, **options):
        from critic.models import load_model
        from rollout.hf import HFEngine

        self.model, tokenizer = load_model(str(folder))
        self.engine = HFEngine(self.model, tokenizer.pad_token_id, eos_token_id)
        self.video_token_id, self.options, self.loads, self.prompts = video_token_id, options, 0, 0
        _MADE.append(self)

    def generate(self, requests, params):
        assert all(r.videos is not None for r in requests)  # vLLM takes frames, not patches
        self.prompts += len(requests)
        return self.engine.generate(requests, params)

    def load_weights(self, weights):
        self.loads += 1
        self.model.load_state_dict(dict(weights))


def test_vllm_rollouts_get_the_weights_after_every_step(dataset, tmp_path, monkeypatch):
    import torch

    module, cfg = load_recipe(
        f"data=[{dataset}]",
        *TINY,
        "pipeline=[pretext,joint]",
        "stages.pretext.steps=2",
        "stages.joint.steps=1",
        "eval_every=0",
        "stages.pretext.batch_size=8",
        "stages.joint.batch_size=8",
        "checkpoint_every=0",
    )
    import critic.train.recipe

    monkeypatch.setattr(critic.train.recipe, "make_vllm_engine", FakeVLLM)
    _MADE.clear()
    trainer = module.Trainer(cfg, tmp_path)
    trainer.cfg.rollout_engine = "vllm"  # after check_config, which asks for a GPU
    run_stages(trainer, ("pretext", "joint"))
    (fake,) = _MADE  # made once, at the first GRPO stage, from the weights then
    assert fake.options == {"gpu_memory_utilization": 0.3, "enable_sleep_mode": False}
    assert fake.video_token_id == trainer.model.config.video_token_id
    assert fake.prompts == 3 * 2  # 3 steps of 8 completions = 2 prompts x G 4
    # synced after each of the 3 steps, and at the joint stage's start
    assert fake.loads == 4
    assert [h.get("weights_synced") for h in read_history(tmp_path) if h["step"] > 0] == [True] * 3
    trained, copy = trainer.model.state_dict(), fake.model.state_dict()
    assert all(torch.equal(trained[name], copy[name]) for name in trained)

    # a vLLM that cannot drop its vision encoder's outputs: refused as the engine is made, before
    # a step, where the tower trains (it was a raw EngineError after the first step)
    class Stale(FakeVLLM):
        def encoder_cache_problem(self):
            return "this vLLM has no reset_encoder_cache"

    monkeypatch.setattr(critic.train.recipe, "make_vllm_engine", Stale)
    cfg.rollout_engine = "hf"  # as check_config takes it on this CPU (the trainer above set it)
    trainer = module.Trainer(cfg, tmp_path / "stale")
    trainer.cfg.rollout_engine = "vllm"
    with pytest.raises(module.TrainConfigError, match="has no reset_encoder_cache"):
        run_stages(trainer, ("pretext",))
    assert not (tmp_path / "stale" / "pretext" / "final").exists()


def _mean_on_rank(rank: int, port: int, queue) -> None:
    import torch.distributed as dist

    from critic.train.launch import over_ranks

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:  # rank 0's share: loss 1, no reward of the component; rank 1's: loss 2, reward 0.5
        queue.put((rank, over_ranks({"loss": 1.0 + rank, "reward/x": [math.nan, 0.5][rank],
                                          "groups_used": 3 * rank})))  # fmt: skip
    finally:
        dist.destroy_process_group()


def _gloo_pair(target) -> dict:
    """``target(rank, port, queue)`` run in 2 spawned processes joined over gloo: what each put."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.get_context("spawn")
    queue = context.Queue()
    procs = [context.Process(target=target, args=(r, port, queue)) for r in (0, 1)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    return results


def test_what_each_process_measured_is_logged_as_one_run():
    # rank 0 logged its own share of every step (its loss, its completions' rewards): now the
    # floats' means over the processes (NaNs left out) and the counts' sums
    from critic.train.launch import over_ranks

    assert over_ranks({"loss": 2.0}) == {"loss": 2.0}  # one process: as it was
    results = _gloo_pair(_mean_on_rank)
    assert results[0] == results[1] == {"loss": 1.5, "reward/x": 0.5, "groups_used": 3}
    assert isinstance(results[0]["groups_used"], int)


def _share_on_rank(rank: int, port: int, queue) -> None:
    import torch.distributed as dist

    from critic.train.launch import rank_share

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:  # rank 0 kept 4 tokens, rank 1 one; then rank 0 none (its groups were flat), rank 1 three
        queue.put((rank, (rank_share([4, 1][rank]), rank_share([0, 3][rank]))))
    finally:
        dist.destroy_process_group()


def test_each_processs_loss_weighs_as_its_share_of_the_runs_tokens():
    # each process averaged its loss over its own tokens and DeepSpeed averaged the gradients:
    # rank 0's 4 tokens weighed 1/8 each and rank 1's one token 1/2, where one mean over the 5
    # weighs each 1/5; and a rank that kept nothing halved the other's step
    from critic.train.launch import rank_share

    assert rank_share(7) == 1.0  # one process: as it was
    results = _gloo_pair(_share_on_rank)
    # (share / world) / own tokens = 1 / all tokens: (1.6 / 2) / 4 = (0.4 / 2) / 1 = 1 / 5
    assert results[0] == pytest.approx((1.6, 0.0)) and results[1] == pytest.approx((0.4, 2.0))


def _grpo_step_on_rank(rank: int, port: int, case: str, queue) -> None:
    """One GRPO step of a real 2-process DeepSpeed ZeRO-3 run over gloo. ``empty``: rank 1's
    rewards are flat, so dynamic sampling keeps none of its groups; ``nan``: rank 1's loss is NaN."""
    import datetime
    import os

    os.environ.update(DS_ACCELERATOR="cpu", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))  # fmt: skip
    import deepspeed
    import torch

    from critic.train.grpo import GRPOConfig, grpo_step
    from critic.train.launch import deepspeed_config
    from critic.train.optim import NonFiniteError, deepspeed_update
    from rollout.hf import HFEngine
    from tests.conftest import _redrawn
    from tests.critic.test_grpo import _reward_by_length, _samples
    from tests.experiments.train_critic_cli import ROOT

    deepspeed.init_distributed(dist_backend="gloo", timeout=datetime.timedelta(seconds=60))
    try:
        torch.manual_seed(0)
        model, tokenizer = _redrawn("tiny")
        config = deepspeed_config(str(ROOT / "configs" / "deepspeed" / "zero3.json"), 1e-2, False, 1, 1.0)  # fmt: skip
        params = [p for p in model.parameters() if p.requires_grad]
        engine, *_ = deepspeed.initialize(model=model, model_parameters=params, config=config)

        def weights() -> float:
            with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
                return float(sum(p.double().sum() for p in model.parameters()))

        update = deepspeed_update(engine)
        reward = _reward_by_length
        if rank == 1 and case == "nan":
            update = lambda loss, inner=update: inner(loss * math.nan)  # noqa: E731
        if rank == 1 and case == "empty":
            reward = lambda completions, **f: [1.0] * len(completions)  # noqa: E731
        cfg = GRPOConfig(group_size=4, max_new_tokens=6, dynamic_sampling=True)
        hf = HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id)
        before = weights()
        try:
            result = grpo_step(engine, update, hf, tokenizer, _samples(2), reward, cfg, seed=0)
        except NonFiniteError as exc:
            queue.put((rank, ("NonFiniteError", str(exc), weights() == before)))
        else:
            queue.put((rank, (result.groups_used, result.loss, before, weights())))
    except Exception:  # the test shows it, where it would wait for a timeout
        import traceback

        queue.put((rank, traceback.format_exc()))
    finally:
        deepspeed.comm.destroy_process_group()


def _two_ranks(case: str) -> dict:
    import queue as queue_module
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.get_context("spawn")
    queue = context.Queue()
    procs = [context.Process(target=_grpo_step_on_rank, args=(r, port, case, queue)) for r in (0, 1)]  # fmt: skip
    for p in procs:
        p.start()
    results, waited = {}, 0
    try:
        while len(results) < len(procs) and waited < 240:
            try:
                rank, result = queue.get(timeout=5)
                results[rank] = result
            except queue_module.Empty:  # a process that died without a word ends the wait
                waited += 5
                if not any(p.is_alive() for p in procs) and queue.empty():
                    break
        assert sorted(results) == [0, 1], results
        assert not any(isinstance(r, str) for r in results.values()), results
        return results
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()


def test_a_process_that_keeps_no_group_still_takes_its_part_in_the_update():
    # rank 1's groups were all flat: it returned before the update while rank 0 waited in
    # DeepSpeed's gradient reduction (a hang; gloo's timeout here). Now it joins at weight 0
    pytest.importorskip("deepspeed")
    results = _two_ranks("empty")
    (used0, loss0, before0, after0), (used1, loss1, before1, after1) = results[0], results[1]
    assert used0 == 2 and used1 == 0
    assert math.isfinite(loss0) and math.isnan(loss1)  # left out of the run's mean loss
    assert before0 == before1 and after0 == after1 != before0  # one step, the same on both


def test_a_non_finite_loss_on_one_process_stops_every_process():
    # rank 1 raised alone before its backward while rank 0 waited in the reduction
    pytest.importorskip("deepspeed")
    results = _two_ranks("nan")
    assert results[1][:2] == ("NonFiniteError", "the loss is nan")
    assert results[0][:2] == ("NonFiniteError", "the loss of another process is not finite")
    assert results[0][2] and results[1][2]  # no step taken on either


def test_a_process_trains_its_slice_of_the_step_s_one_draw_weighed_by_its_tokens(
    dataset, tmp_path, monkeypatch
):
    # Process 1 of 2, in this process (no collective: rank_share is stood in for). Each process
    # drew its own batch from a stream of its own (two could hold one sample), and SFT's loss
    # was each process's token mean, unweighted (a digit answer weighed 7x a chain of thought)
    import numpy as np

    import critic.train.recipe as recipe
    import critic.train.sft as sft

    module, cfg = load_recipe(f"data=[{dataset}]", *TINY, "pipeline=[sft]", "stages.sft.steps=1",
                              "stages.sft.batch_size=8", "eval_every=0", "checkpoint_every=0")  # fmt: skip
    draws, shares, encoded = [], [], []

    def draw(rng, count, size, chance):
        draws.append((size, rng.bit_generator.state["state"]["state"]))
        return np.arange(size)

    def share(tokens):
        shares.append(tokens)
        return 1.0

    monkeypatch.setattr(recipe, "draw_batch", draw)
    monkeypatch.setattr(recipe, "rank_share", share)
    encode = sft.encode_sft
    monkeypatch.setattr(
        sft, "encode_sft", lambda s, *a, **k: encoded.append(s) or encode(s, *a, **k)
    )
    trainers = []
    for rank in (0, 1):
        trainer = module.Trainer(cfg, tmp_path / str(rank))
        trainer.rank, trainer.world = rank, 2
        trainers.append(trainer)
        run_stages(trainer, ("sft",))
    # both drew the whole batch (8) from one stream (the same state), and trained halves of it
    assert [size for size, _ in draws] == [8, 8] and draws[0][1] == draws[1][1]
    assert len(encoded) == 8  # 4 a process: the first half, then the second

    def where(s):
        return (s.episode_id, s.frame, s.kind)

    assert not {where(s) for s in encoded[:4]} & {where(s) for s in encoded[4:]}
    assert shares and all(isinstance(n, int) and n > 0 for n in shares)
