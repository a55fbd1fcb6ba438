"""Tiny end-to-end runs of the two benchmark scripts, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.zygote import run_python

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run_python(
        [sys.executable, str(ROOT / "experiments" / script), f"hydra.run.dir={tmp_path}", *overrides],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip


def test_bench_tiny_run(tmp_path):
    # a bare task (not a list) is one task: it was split into characters, "unknown tasks ['R', ...]"
    done = _run("bench.py", tmp_path, "tasks=Reacher-v5", "steps=5", "rounds=1",
                "modes=[raw,camera,'oracle k=2','oracle+frames k=2']")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "bench.json").read_text())
    assert set(results["Reacher-v5"]) == {"raw", "camera", "oracle k=2", "oracle+frames k=2"}
    assert all(rate > 0 for rate in results["Reacher-v5"].values())
    assert "| Reacher-v5 |" in (tmp_path / "bench.md").read_text()
    # which machine: the figures were a machine's and its thread count's, said nowhere
    assert (
        results["machine"]["cores"]
        and "cores, torch threads" in (tmp_path / "bench.md").read_text()
    )
    # and which OpenGL renderer drew the camera columns (EGL on a GPU or in software)
    assert results["machine"]["gl"] in ("egl", "osmesa")
    assert results["machine"]["gl_renderer"] not in ("", "none")
    assert f"OpenGL {results['machine']['gl']} (" in (tmp_path / "bench.md").read_text()


def test_the_gymnasium_baseline_resets_at_the_task_s_horizon():
    # Pusher's registered limit is 100 steps, its task's 150: the baseline reset 1.5x as often
    from bench import _gymnasium_default_loop

    _, close = _gymnasium_default_loop("Pusher-v5")
    env = close.__self__  # the loop's env, whose close it hands back
    try:
        assert env.spec.max_episode_steps == 150
    finally:
        close()


def test_the_sides_of_a_comparison_are_warmed_then_timed_in_turn():
    from bench_critic import _rates

    calls = []
    rates = _rates({"a": (lambda: calls.append("a"), 2), "b": (lambda: calls.append("b"), 1)}, 3)
    # one untimed call of each (a model's first forward pass took 1.7x its later ones), then
    # rounds in turn (all of a's repeats, then all of b's, met different spells of the machine)
    assert calls == ["a", "b"] + ["a", "b"] * 3
    assert set(rates) == {"a", "b"} and rates["a"] > 0


def test_bench_bad_mode_is_a_message(tmp_path):
    done = _run("bench.py", tmp_path, "tasks=[Reacher-v5]", "modes=warp")  # a bare mode: one
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "bench: BenchConfigError: unknown modes ['warp']; use raw, camera" in done.stderr


@pytest.mark.parametrize("script", ["bench.py", "bench_critic.py", "bench_gpu.py"])
def test_a_bench_refuses_an_added_key_it_does_not_read(tmp_path, script):
    # +tsks=[Lift] ran the default tasks with rc 0: the benches had no key guard
    done = _run(script, tmp_path, "+tsks=[Lift]")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "+tsks=[Lift] adds tsks, an option" in done.stderr
    assert not (tmp_path / "bench.json").exists()


def _compose(config: str, *overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config, overrides=list(overrides))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # 0 divided by zero, abc was a TypeError, -5 reported negative steps/s, 0 rounds a NaN
        ("steps=0", "steps=0 must be an integer >= 1 (env steps per mode per round)"),
        ("steps=abc", "steps='abc' must be an integer >= 1 (env steps per mode per round)"),
        ("steps=-5", "steps=-5 must be an integer >= 1 (env steps per mode per round)"),
        ("rounds=0", "rounds=0 must be an integer >= 1 (interleaved rounds, the median reported)"),
        ("tasks=Reacher-v", "unknown tasks ['Reacher-v']; registered tasks: ["),
        ("tasks=[]", "tasks is empty; give at least one, e.g. tasks=[Reacher-v5]"),
        ("modes=rew", "unknown modes ['rew']; use raw, camera, 'baseline camera', 'oracle k=<int>' "
         "or 'oracle+frames k=<int>'"),
        # passed the check, then a bare ValueError when the loops were built
        ("modes=[' oracle k=1']", "unknown modes [' oracle k=1']; use raw"),
        ("modes=['oracle k=0']", "unknown modes ['oracle k=0']; use raw"),
        # a duplicate column, or row, of the table
        ("modes=[raw,camera,raw]", "modes name ['raw'] more than once; give each once"),
        ("tasks=[Reacher-v5,Reacher-v5]", "tasks name ['Reacher-v5'] more than once; give each"),
    ],
)  # fmt: skip
def test_bench_config_is_checked_before_any_env_is_built(override, message):
    from bench import BenchConfigError, check_config

    with pytest.raises(BenchConfigError) as err:
        check_config(_compose("bench", override))
    assert str(err.value).startswith(message)


def test_bench_critic_times_exactly_the_batch_it_divides_by():
    # (queries * 16)[:batch] held 16 episodes' queries: batch 64 over a 1-step episode (2 queries)
    # timed 32 queries and reported twice the rate
    from bench_critic import _take

    assert _take(["a", "b", "c"], 7) == ["a", "b", "c", "a", "b", "c", "a"]
    assert _take(["a", "b"], 64) == ["a", "b"] * 32


def test_bench_critic_tiny_run(tmp_path):
    done = _run("bench_critic.py", tmp_path, "model=tiny", "episode_steps=3", "batches=[1,2]",
                "repeats=1", "reason_samples=2", "reason_tokens=4")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "bench_critic.json").read_text())
    assert set(results["score_queries_per_s"]) == {"1", "2"}
    assert 0.0 < results["sliding_window"]["hit_rate"] < 1.0
    assert results["latency_s"]["score"] > 0 and results["machine"]["cores"]
    relabel = results["episode_relabel"]  # the reset query and 3 steps
    assert relabel["queries"] == 4 and relabel["per_step_s"] > 0 and relabel["relabelled_s"] > 0
    shared = results["shared_prefix"]  # text and initial frame, run once for the 4 queries
    assert 100 < shared["shared_tokens"] < shared["tokens_per_query"] and shared["shared_s"] > 0
    split = results["per_query_ms"]["2"]
    # The tower really ran inside the forward pass, and every query had its tokens counted.
    assert 0 < split["vision_tower_ms"] < split["forward_ms"] and split["encode_ms"] > 0
    assert split["tokens_per_query"] > 100  # anchored prompt: text plus three videos


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("task=Reachr", "task='Reachr' is not a registered task; pick one of ["),
        # each of these was a traceback (int not iterable, ConfigIndexError, ZeroDivisionError)
        # or a NaN in the results
        ("batches=[]", "batches=[] must be a non-empty list of integers >= 1 (queries per call), "
         "e.g. batches=[1,4,16]"),
        ("batches=[1,0]", "batches=[1, 0] must be a non-empty list of integers >= 1"),
        ("batches=abc", "batches='abc' must be a non-empty list of integers >= 1"),
        ("episode_steps=0", "episode_steps=0 must be an integer >= 1 (env steps whose queries are "
         "recorded)"),
        ("repeats=0", "repeats=0 must be an integer >= 1 (timed repeats, the median reported)"),
        ("frames_per_query=abc", "frames_per_query='abc' must be an integer >= 1 (frames per query)"),
        ("reason_samples=0", "reason_samples=0 must be an integer >= 1"),
        ("reason_tokens=-1", "reason_tokens=-1 must be an integer >= 1"),
        ("model=http://localhost:8000", "model='http://localhost:8000' must be a preset (tiny, small, "
         "tiny-qwen3vl, small-qwen3vl) or a checkpoint folder: the bench times the model in this "
         "process, not a critic server"),
    ],
)  # fmt: skip
def test_bench_critic_config_is_checked_before_anything_is_built(override, message):
    from bench_critic import BenchConfigError, check_config

    with pytest.raises(BenchConfigError) as err:
        check_config(_compose("bench_critic", override))
    assert str(err.value).startswith(message)


def test_bench_critic_takes_a_bare_batch_size():
    from bench_critic import batch_sizes, check_config

    cfg = _compose("bench_critic", "batches=4")  # was: TypeError: 'int' object is not iterable
    check_config(cfg)
    assert batch_sizes(cfg.batches) == [4]


def test_bench_critic_a_model_that_does_not_load_is_a_message(tmp_path):
    (tmp_path / "model").mkdir()  # a folder, but not a checkpoint
    done = _run("bench_critic.py", tmp_path, f"model={tmp_path / 'model'}", "episode_steps=1")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"bench_critic: ModelLoadError: cannot load critic model {tmp_path / 'model'}" in (
        done.stderr
    )


def _bench_gpu_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_gpu", ROOT / "experiments" / "bench_gpu.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Attention by hand. Both tiny presets: text 2 layers, d_attn 64 (4 heads x 16); vision depth 2,
# width 32; 4 frames → grid (2, 4, 4): 32 patches, 8 video tokens.
# tiny (Qwen2.5-VL, 56² frames): seq = 32 + 8 = 40; text 4 · batch 2 · (2 · 40² · 64) = 1,638,400;
#   window (112/14)² = 64 patches, block 1 full: each patch attends min(64, 16) = 16 in block 0
#   and 16 in block 1 → 4 · 2 · 32 · 32 · 32 = 262,144.
# tiny-qwen3vl (64² frames): the 2 temporal patches are 2 prompt segments with a timestamp token
#   between, seq = 41; text 4 · 2 · (2 · 41² · 64) = 1,721,344; every tower block attends over
#   the 16 patches of a frame pair → 262,144; deepstack mergers run on merged tokens.
@pytest.mark.parametrize(
    ("shape", "frame_size", "seq", "attention"),
    [("tiny", 56, 40, 1_638_400 + 262_144), ("tiny-qwen3vl", 64, 41, 1_721_344 + 262_144)],
)
def test_bench_gpu_flop_count(shape, frame_size, seq, attention):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    bench = _bench_gpu_module()
    model = bench.build_model(shape, "cpu", "float32")
    inputs, grid = bench._inputs(model, batch=2, text_len=32, frames=4, frame_size=frame_size, device="cpu")  # fmt: skip
    assert grid == (2, 4, 4) and inputs["input_ids"].shape == (2, seq)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(**inputs, use_cache=False)
    flops = bench.forward_flops(model, 2, 32, grid)
    # The weight matmuls are exactly what torch counts (it does not count CPU sdpa).
    assert flops["matmul"] == counter.get_total_flops()
    assert flops["attention"] == attention
    assert flops["total"] == flops["matmul"] + flops["attention"]


def test_bench_gpu_qwen3_8b_shape_has_the_released_size():
    """Built without memory (the meta device): 8.77 B parameters, Qwen3-VL-8B's published size,
    0.58 B of them in the vision tower."""
    model = _bench_gpu_module().build_model("qwen3-8b", "meta", "bfloat16")
    assert sum(p.numel() for p in model.parameters()) == 8_767_123_696
    assert sum(p.numel() for p in model.model.visual.parameters()) == 576_388_336


def test_bench_gpu_7b_shape_has_the_released_size():
    """Qwen2.5-VL-7B-Instruct's 8.29 B parameters, 0.68 B in the vision tower, with an untied head.
    transformers' default Qwen2_5_VLConfig is the 72B language model (75.8 B in all)."""
    model = _bench_gpu_module().build_model("7b", "meta", "bfloat16")
    assert sum(p.numel() for p in model.parameters()) == 8_292_166_656
    assert sum(p.numel() for p in model.model.visual.parameters()) == 676_550_144
    assert model.lm_head.weight is not model.model.language_model.embed_tokens.weight


def test_bench_gpu_cpu_smoke_run(tmp_path):
    done = _run("bench_gpu.py", tmp_path, "shape=tiny", "device=cpu", "dtype=float32",
                "peak_tflops=1", "batch=2", "frames=4", "frame_size=56", "text_tokens=16",
                "new_tokens=3", "repeats=1")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert results["tokens_per_prompt"] == 16 + 8
    assert results["prefill_tokens_per_s"] > 0
    # a tiny model's 3 decode steps may take no longer than its prefill: no rate, not 2e9
    decode = results["decode_tokens_per_s"]
    assert decode is None or 0 < decode < 1e7
    assert 0 < results["mfu"] < 1
    # what it ran on and what it read, as the other benches say
    assert results["machine"]["cores"] and results["machine"]["cuda"]
    assert (results["frames"], results["frame_size"]) == (4, 56)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("shape=7B", "shape='7B' is not a bench shape; pick one of ['7b', 'qwen3-8b', 'tiny', "
                     "'tiny-qwen3vl']"),
        ("dtype=float17", "dtype='float17' must be float32, bfloat16 or float16"),
        ("device=gpu", "device='gpu' is not a device; use cpu, cuda or cuda:<index>"),
        ("batch=0", "batch=0 must be an integer >= 1"),
        ("frames=abc", "frames='abc' must be an integer >= 1"),
        # raw reshape errors after the model was built; 3 frames ran as 2
        ("frames=3", "frames=3 must be a multiple of 2 (a video is read 2 frames to a patch); "
                     "use 2 or 4"),
        ("frame_size=434", "frame_size=434 must be a multiple of 28 for shape=7b (patches of 14 "
                           "px, merged 2 × 2); use 420 or 448"),
        ("frame_size=20", "frame_size=20 must be a multiple of 28 for shape=7b (patches of 14 px, "
                          "merged 2 × 2); use 28"),
        ("peak_tflops=-1", "peak_tflops=-1 must be a number > 0 (the GPU's dense TFLOP/s at "
                           "dtype), or null to look it up from the GPU's name"),
        # a GPU index or name it cannot run on was taken, and failed after the model was built
        ("device=cudafoo", "device='cudafoo' is not a device; use cpu, cuda or cuda:<index>"),
    ],
)  # fmt: skip
def test_bench_gpu_bad_options_are_messages(override, message):
    # each was a raw ValueError, AttributeError, RuntimeError or TypeError
    bench = _bench_gpu_module()
    with pytest.raises(bench.BenchConfigError) as err:
        bench.check_config(_compose("bench_gpu", override))
    assert str(err.value) == message
    bench.check_config(_compose("bench_gpu", "device=cpu", "shape=tiny"))


def test_bench_gpu_peak_is_the_card_s_own_at_its_dtype_and_the_head_reads_one_position():
    bench = _bench_gpu_module()
    # every H100 and H200 read the SXM card's 989: a PCIe card's MFU read 0.76 of its own
    names = ["NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100 NVL", "NVIDIA H200",
             "NVIDIA H200 NVL", "NVIDIA A100-SXM4-80GB", "NVIDIA L4"]  # fmt: skip
    assert [bench.peak_tflops(n, "bfloat16") for n in names] == [
        989.0, 756.0, 835.0, 989.0, 835.0, 312.0, None
    ]  # fmt: skip
    # float32's peak hangs on TF32: none looked up (the bf16 peak made MFU 15x too low)
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3", "float32") is None
    # the score readout's prefill runs the output head on the last position of each prompt
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = bench.build_model("tiny", "cpu", "float32")
    inputs, grid = bench._inputs(model, batch=2, text_len=32, frames=4, frame_size=56, device="cpu")  # fmt: skip
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(**inputs, use_cache=False, logits_to_keep=1)
    kept = bench.forward_flops(model, 2, 32, grid, logits_to_keep=1)
    assert kept["matmul"] == counter.get_total_flops()
    assert kept["matmul"] < bench.forward_flops(model, 2, 32, grid)["matmul"]


def test_bench_gpu_without_gpu_is_a_message(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    done = _run("bench_gpu.py", tmp_path, "shape=tiny")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "bench_gpu: no CUDA GPU here" in done.stderr
