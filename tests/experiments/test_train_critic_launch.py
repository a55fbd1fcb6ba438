"""experiments/train_critic.py's checks of where and how it is launched: a CUDA device this
machine has, DeepSpeed under torchrun with an even share of the batch, one gradient clipping, and
one GPU per process. (The other config checks are in test_train_critic_config.py; DeepSpeed runs
themselves in test_train_critic_backends.py.)"""

from __future__ import annotations

import pytest

from tests.experiments.train_critic_cli import check_overrides, run_train


@pytest.mark.parametrize("rank", [["--local_rank=1"], ["--local-rank", "0"]])
def test_the_rank_argument_a_launcher_appends_is_left_to_the_environment(tmp_path, rank):
    # `deepspeed --num_gpus 8 experiments/train_critic.py ...` (docs/training.md) passes
    # --local_rank=N before the overrides: hydra refused it, "unrecognized arguments", exit 2
    from train_critic import without_launcher_rank

    assert without_launcher_rank(["x.py", *rank, "a=1"]) == ["x.py", "a=1"]
    done = run_train(tmp_path, *rank, "grpo.group_size=1", "data=[/nonexistent]")
    assert done.returncode == 1 and done.stderr.startswith(
        "train_critic: grpo: group_size=1 must be"
    )


def test_a_cuda_device_this_machine_lacks_fails_before_any_model_loads(dataset, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a CPU-only build
    with pytest.raises(Exception) as err:
        check_overrides(f"data=[{dataset}]", "device=cuda")
    assert type(err.value).__name__ == "TrainConfigError"
    assert str(err.value) == (
        f"device='cuda', but this torch ({torch.__version__}) sees no CUDA GPU; use device=cpu, "
        "or install a CUDA build of torch on a machine with a GPU"
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # one GPU, and cuda:3 asked
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(Exception) as err:
        check_overrides(f"data=[{dataset}]", "device=cuda:3")
    assert str(err.value) == (
        "device='cuda:3', but this machine has 1 CUDA GPU(s); use cuda:0 to cuda:0, or device=cpu"
    )


def test_device_cuda_without_cuda_is_a_message_from_the_script(dataset, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    done = run_train(tmp_path, f"data=[{dataset}]", "device=cuda")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("train_critic: device='cuda', but this torch (")
    assert "sees no CUDA GPU; use device=cpu, or install a CUDA build of torch" in done.stderr


def test_deepspeed_needs_torchrun_an_even_share_and_one_clipping(dataset, monkeypatch):
    ds = "deepspeed_config=configs/deepspeed/zero2.json"
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(Exception) as err:  # mpi4py's ModuleNotFoundError, after the checks
        check_overrides(f"data=[{dataset}]", ds)
    assert str(err.value) == (
        "deepspeed_config=configs/deepspeed/zero2.json runs one process per GPU, started by "
        "torchrun (RANK and WORLD_SIZE are not set); launch it with `torchrun --nproc_per_node "
        "<processes> experiments/train_critic.py ...`, or drop deepspeed_config= to train in this "
        "one process"
    )
    monkeypatch.setenv("RANK", "0")  # as torchrun --nproc_per_node 2 sets them
    monkeypatch.setenv("WORLD_SIZE", "2")
    check_overrides(f"data=[{dataset}]", ds, "stages.sft.batch_size=4")  # an even share: taken
    # batches were silently cut to 1 per process (3 // 2), and GRPO groups to 1 prompt of 4
    for overrides, message in [
        (["stages.sft.batch_size=3"], "stages.sft.batch_size=3 cannot be shared out evenly over "
         "WORLD_SIZE=2 processes; use a multiple of 2"),
        (["stages.pretext.batch_size=12"], "stages.pretext.batch_size=12 cannot be shared out evenly "
         "over WORLD_SIZE=2 processes in whole groups of grpo.group_size=4; use a multiple of 8"),
        # the JSON's gradient_clipping was used and max_grad_norm ignored
        (["max_grad_norm=0.5"], "deepspeed_config=configs/deepspeed/zero2.json has "
         "gradient_clipping=1.0 and max_grad_norm=0.5; make them agree: max_grad_norm=1.0, or "
         '"gradient_clipping": "auto" in the JSON (the recipe fills it from max_grad_norm)'),
        (["max_grad_norm=null"], "deepspeed_config=configs/deepspeed/zero2.json has "
         "gradient_clipping=1.0 and max_grad_norm=null (no clipping); make them agree: "
         'max_grad_norm=1.0, or "gradient_clipping": "auto" in the JSON (the recipe fills it from '
         "max_grad_norm)"),
    ]:  # fmt: skip
        with pytest.raises(Exception) as err:
            check_overrides(f"data=[{dataset}]", ds, "stages.sft.batch_size=4", *overrides)
        assert type(err.value).__name__ == "TrainConfigError"
        assert str(err.value) == message


def test_deepspeed_needs_an_optimizer_and_the_processes_that_wrote_a_resume(dataset, tmp_path,
                                                                            monkeypatch):  # fmt: skip
    # both were raw errors from DeepSpeed after the model had loaded: an AssertionError ("zero
    # stage 2 requires an optimizer"), and a ZeRORuntimeException for fewer processes
    import json

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"zero_optimization": {"stage": 2}, "gradient_clipping": "auto"}))
    with pytest.raises(Exception, match=r"has no \"optimizer\" section; add one"):
        check_overrides(f"data=[{dataset}]", f"deepspeed_config={bare}", "stages.sft.batch_size=4")
    # a batch or a schedule of its own: accumulation 2 stepped every second batch (one step's
    # run kept its first weights), train_batch_size was DeepSpeed's raw assertion after the model
    # loaded, and a scheduler was overridden at every step
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    zero2 = json.loads((root / "configs" / "deepspeed" / "zero2.json").read_text())
    for extra, said in [({"gradient_accumulation_steps": 2}, "sets gradient_accumulation_steps; "),
                        ({"train_batch_size": 8}, "sets train_batch_size; "),
                        # DeepSpeed does not resolve it: a TypeError after the model loaded
                        ({"train_batch_size": "auto"}, "sets train_batch_size; "),
                        ({"gradient_accumulation_steps": "auto"}, "sets gradient_accumulation"),
                        ({"scheduler": {"type": "WarmupLR"}}, 'has a "scheduler" section'),
                        # Hugging Face's templates: a ValueError at the first optimizer step
                        ({"optimizer": {"type": "AdamW", "params": {
                            "lr": "auto", "betas": "auto", "eps": "auto"}}},
                         r'optimizer.params betas, eps = "auto", which only lr may be'),
                        # bf16 weights saved where the run recorded float32
                        ({"bf16": {"enabled": True}},
                         r'has "bf16": \{"enabled": true\} and dtype=float32; make them agree'),
                        ({"fp16": {"enabled": True}},
                         r'has "fp16": \{"enabled": true\} and dtype=float32'),
                        # a TypeError in DeepSpeed; null read as bf16 off
                        ({"bf16": True}, r'has "bf16": true, which DeepSpeed reads as a mapping'),
                        ({"bf16": None}, r'has "bf16": null, which DeepSpeed reads as a mapping'),
                        ({"bfloat16": {"enabled": True}}, r'has a "bfloat16" block')]:  # fmt: skip
        own = tmp_path / "own.json"
        own.write_text(json.dumps({**zero2, **extra}))
        with pytest.raises(Exception, match=said):
            check_overrides(f"data=[{dataset}]", f"deepspeed_config={own}",
                            "stages.sft.batch_size=4")  # fmt: skip
    shards = tmp_path / "ck" / "deepspeed"
    shards.mkdir(parents=True)
    (tmp_path / "ck" / "trainer_state.pt").write_bytes(b"")  # the rest is read after the check
    for rank in range(3):
        (shards / f"rank{rank}.pt").write_bytes(b"")
    with pytest.raises(Exception, match=r"was written by 3 processes and WORLD_SIZE=2: DeepSpeed "
                                        r"restores one optimizer shard per process; resume it "
                                        r"with torchrun --nproc_per_node 3"):  # fmt: skip
        check_overrides(f"data=[{dataset}]", "deepspeed_config=configs/deepspeed/zero2.json",
                        "stages.sft.batch_size=4", f"resume={tmp_path / 'ck'}")  # fmt: skip


def test_max_grad_norm_reaches_deepspeed_where_the_json_leaves_it(tmp_path):
    import json

    from critic.train.launch import deepspeed_config

    config = {"optimizer": {"params": {"lr": "auto"}}, "gradient_clipping": "auto"}
    (tmp_path / "auto.json").write_text(json.dumps(config))
    assert (
        deepspeed_config(str(tmp_path / "auto.json"), 1e-3, False, 2, 0.5)["gradient_clipping"]
        == 0.5
    )
    del config["gradient_clipping"]  # absent: DeepSpeed's default, no clipping, ignored it
    (tmp_path / "none.json").write_text(json.dumps(config))
    assert (
        deepspeed_config(str(tmp_path / "none.json"), 1e-3, False, 2, 0.5)["gradient_clipping"]
        == 0.5
    )
    assert (
        deepspeed_config(str(tmp_path / "none.json"), 1e-3, False, 2, None)["gradient_clipping"]
        == 0.0
    )
    # no "bf16" block is "auto", as the check reads it: filled from dtype= (DeepSpeed ran bf16
    # weights with bf16 off)
    assert deepspeed_config(str(tmp_path / "none.json"), 1e-3, True, 2)["bf16"] == {"enabled": True}
    assert deepspeed_config(str(tmp_path / "none.json"), 1e-3, False, 2)["bf16"] == {
        "enabled": False
    }


def test_torchrun_without_deepspeed_is_refused(dataset, monkeypatch):
    # each process trained its own copy on a share of the batch, and rank 0's alone was saved
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(Exception, match=r"torchrun started 2 processes \(WORLD_SIZE=2\) but "
                                        r"deepspeed_config is null"):  # fmt: skip
        check_overrides(f"data=[{dataset}]")


def test_torchrun_processes_each_take_their_own_gpu(dataset, monkeypatch):
    """``.to("cuda")`` means the current GPU and DeepSpeed sets it only inside ``initialize``, so
    every process loaded its copy onto GPU 0; now each binds LOCAL_RANK's first. One GPU named
    for all processes is refused."""
    import torch

    from critic.train.launch import bind_local_device

    bound = []
    monkeypatch.setattr(torch.cuda, "set_device", bound.append)
    monkeypatch.setenv("LOCAL_RANK", "3")
    bind_local_device("cuda")
    bind_local_device("cpu")
    monkeypatch.delenv("LOCAL_RANK")
    bind_local_device("cuda")  # one process, no torchrun: the current GPU stays
    assert bound == [3]

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(Exception) as err:
        check_overrides(f"data=[{dataset}]", "device=cuda:1",
                        "deepspeed_config=configs/deepspeed/zero2.json")  # fmt: skip
    assert type(err.value).__name__ == "TrainConfigError"
    assert str(err.value) == (
        "device='cuda:1' names one GPU for all 2 processes torchrun started; give device=cuda, "
        "and each process takes the GPU of its LOCAL_RANK"
    )


def test_several_processes_need_the_run_s_folder_given(monkeypatch):
    # each process named the default folder by its own clock: a second apart, one run's parts
    # (and optimizer shards) landed in two folders, and resuming it blamed the process count
    from types import SimpleNamespace

    from train_critic import shared_dir_problem

    def hydra(*overrides, mode="RUN", run_dir="outputs/train_critic/2026-12-07_12-00-00"):
        return SimpleNamespace(overrides=SimpleNamespace(hydra=list(overrides)),
                               mode=SimpleNamespace(name=mode),
                               run=SimpleNamespace(dir=run_dir))  # fmt: skip

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert shared_dir_problem(hydra()).startswith(
        "a run of WORLD_SIZE=2 processes needs its folder given: each process names the default "
        "one by its own clock"
    )
    assert shared_dir_problem(hydra("hydra.run.dir=outputs/x")) is None
    # a config of one's own that names a fixed folder: every process names the same
    assert shared_dir_problem(hydra(run_dir="/shared/runs/qwen7b")) is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert shared_dir_problem(hydra()) is None


def test_a_vllm_option_this_vllm_does_not_take_is_refused_by_the_config_check(dataset, monkeypatch):
    import sys
    from dataclasses import dataclass
    from types import SimpleNamespace

    import torch

    @dataclass
    class EngineArgs:
        gpu_memory_utilization: float = 0.9
        enable_sleep_mode: bool = False

    monkeypatch.setitem(sys.modules, "vllm", SimpleNamespace(EngineArgs=EngineArgs,
                                                             __version__="0.99"))  # fmt: skip
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(Exception, match=r"vllm\.bogus=1 is not an option of this vLLM's LLM\(\)"):
        check_overrides(f"data=[{dataset}]", "device=cuda", "rollout_engine=vllm", "+vllm.bogus=1")
