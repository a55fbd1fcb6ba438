"""Critic throughput on a GPU: a Qwen2.5-VL-7B- or Qwen3-VL-8B-shaped model with random weights.

Prefill (the ``score`` readout is one prefill) tokens/s and its model FLOPs utilisation (MFU), and
decode tokens/s of ``reason``-style generation, for a batch of video prompts.

    python experiments/bench_gpu.py                       # 7B shapes, bf16, on cuda
    python experiments/bench_gpu.py shape=qwen3-8b        # Qwen3-VL: 8B language model, 27-block tower
    python experiments/bench_gpu.py shape=tiny device=cpu dtype=float32 peak_tflops=1   # smoke run

FLOPs of one forward pass (counted from the model's own linear layers, so any shape works):
``2 · P_text · T + 4 · L_text · T² · d_attn`` per prompt for the language model (matmuls, plus
attention: QKᵀ and AV are 2·T²·d each, counted in full as PaLM's MFU does, although the causal mask
could skip half) and ``2 · P_vision · N + 2 · P_merger · N/m² + 4 · Σ_layers N · S · d_vision`` for
the vision tower (N patches, m the merge size, S the patches each one attends to: a window, or a
whole frame pair in the full-attention blocks; Qwen3-VL's tower attends over the whole frame pair in
every block). ``P``: weights of the linear layers (and the patch embedding) each token or patch goes
through; Qwen3-VL's deepstack mergers run on merged tokens, as the merger does. Qwen3-VL's prompt
holds each temporal patch in its own segment: one text token between segments stands for the
timestamp. A test checks the matmul part against ``torch.utils.flop_counter`` on both tiny models.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

log = logging.getLogger(__name__)

# bf16 / fp16 dense peak (no sparsity) by device name, the most specific name first (the PCIe and
# NVL cards run slower clocks than the SXM ones); MFU = achieved FLOP/s / this. float32's peak
# hangs on TF32 being allowed: give it as peak_tflops=.
PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H200 NVL", 835.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("A100", 312.0),
)


def peak_tflops(name: str, dtype: str) -> float | None:
    """The dense bf16/fp16 peak of the GPU ``name`` (:data:`PEAK_TFLOPS`), or None: float32, or a
    GPU not in the table."""
    if dtype == "float32":
        return None
    return next((value for key, value in PEAK_TFLOPS if key in name), None)


SHAPES = ("7b", "qwen3-8b", "tiny", "tiny-qwen3vl")
# Each shape's vision patch side (Qwen2.5-VL 14, Qwen3-VL 16), merged 2 × 2 into one token, read
# 2 frames to a temporal patch: a clip the bench builds is a whole number of each.
PATCH_SIDES = {"7b": 14, "qwen3-8b": 16, "tiny": 14, "tiny-qwen3vl": 16}
MERGE, TEMPORAL_PATCH = 2, 2
# Qwen2.5-VL-7B's sizes, from its released config.json (transformers' Qwen2_5_VLConfig defaults are
# the 72B language model, 8192 wide and 80 layers deep, with a 3584-wide vision tower: 75.8 B).
QWEN2_5_7B = {
    "text_config": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                    "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
                    "max_position_embeddings": 128000, "rope_parameters": {"rope_type": "default",
                    "rope_theta": 1e6, "mrope_section": [16, 24, 24]}},
    "vision_config": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                      "out_hidden_size": 3584, "fullatt_block_indexes": [7, 15, 23, 31],
                      "tokens_per_second": 2},
    "tie_word_embeddings": False,
}  # fmt: skip
# Qwen3-VL-8B's sizes: Qwen3-8B's language model and the 27-block, 1152-wide vision tower
# (transformers' Qwen3VLConfig defaults are no released size).
QWEN3_8B = {
    "text_config": {"hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
                    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
                    "vocab_size": 151936, "rope_parameters": {"rope_type": "default",
                    "rope_theta": 5e6, "mrope_section": [24, 20, 20], "mrope_interleaved": True}},
    "vision_config": {"depth": 27, "hidden_size": 1152, "intermediate_size": 4304,
                      "num_heads": 16, "out_hidden_size": 4096,
                      "deepstack_visual_indexes": [8, 16, 24]},
}  # fmt: skip


def build_model(shape: str, device: str, dtype: str):
    """A model with random weights: ``7b`` (Qwen2.5-VL, :data:`QWEN2_5_7B`),
    ``qwen3-8b`` (Qwen3-VL, :data:`QWEN3_8B`), or the project's tiny presets ``tiny`` and
    ``tiny-qwen3vl``."""
    import torch
    import transformers

    if shape in ("tiny", "tiny-qwen3vl"):
        from critic.models import build_preset

        model, _ = build_preset(shape)
        return model.to(device=device, dtype=getattr(torch, dtype)).eval()
    if shape == "7b":
        config = transformers.Qwen2_5_VLConfig(**QWEN2_5_7B)
        model_cls = transformers.Qwen2_5_VLForConditionalGeneration
    elif shape == "qwen3-8b":
        config = transformers.Qwen3VLConfig(**QWEN3_8B)
        model_cls = transformers.Qwen3VLForConditionalGeneration
    else:
        raise ValueError(f"shape={shape!r} is not a bench shape; pick one of {list(SHAPES)}")
    config._attn_implementation = "sdpa"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        with torch.device(device):
            model = model_cls(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def _segmented(model) -> bool:
    """Qwen3-VL: one prompt segment per temporal patch (critic.vision.VisionSpec.video_text)."""
    return model.config.model_type in ("qwen3_vl", "qwen3_vl_moe")


def linear_params(module) -> int:
    """Weights of the linear maps (and the conv patch embedding) inside ``module``."""
    import torch

    return sum(
        m.weight.numel()
        for m in module.modules()
        if isinstance(m, torch.nn.Linear | torch.nn.Conv3d)
    )


def forward_flops(
    model,
    batch: int,
    text_len: int,
    grid_thw: tuple[int, int, int],
    logits_to_keep: int | None = None,
) -> dict[str, float]:
    """FLOPs of one forward pass over ``batch`` prompts of ``text_len`` text tokens, each with one
    video of ``grid_thw`` patches, split into ``matmul`` (weights) and ``attention`` parts, with
    their ``total`` (see the module docstring for the formula); ``logits_to_keep``: the output
    head runs on that many last positions of each prompt (the score readout's 1), not all."""
    config = model.config
    text, vision = config.text_config, config.vision_config
    t, h, w = grid_thw
    patches = t * h * w
    video_tokens = patches // vision.spatial_merge_size**2
    seq = text_len + video_tokens + (t - 1 if _segmented(model) else 0)  # + timestamp tokens
    visual = model.model.visual
    mergers = [visual.merger, *getattr(visual, "deepstack_merger_list", [])]
    p_merger = sum(linear_params(m) for m in mergers)  # run on merged tokens, not patches
    p_vision = linear_params(visual) - p_merger
    p_head = linear_params(model.lm_head)
    p_text = linear_params(model) - p_vision - p_merger - p_head
    head_positions = seq if logits_to_keep is None else min(logits_to_keep, seq)
    matmul = (
        2
        * batch
        * (p_text * seq + p_head * head_positions + p_vision * patches + p_merger * video_tokens)
    )
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    d_attn = text.num_attention_heads * head_dim
    if _segmented(model):  # every block attends over the frame pair
        attended = vision.depth * h * w
    else:
        window = (vision.window_size // vision.patch_size) ** 2  # patches per attention window
        full = set(vision.fullatt_block_indexes)
        attended = sum(h * w if i in full else min(window, h * w) for i in range(vision.depth))
    attention = (
        4
        * batch
        * (text.num_hidden_layers * seq**2 * d_attn + patches * attended * vision.hidden_size)
    )
    return {
        "matmul": float(matmul),
        "attention": float(attention),
        "total": float(matmul + attention),
    }


def _inputs(model, batch: int, text_len: int, frames: int, frame_size: int, device: str):
    import torch

    config = model.config
    vision = config.vision_config
    side = frame_size // vision.patch_size
    grid = (frames // vision.temporal_patch_size, side, side)
    patches = grid[0] * grid[1] * grid[2]
    video_tokens = patches // vision.spatial_merge_size**2
    generator = torch.Generator().manual_seed(0)
    special = {config.video_token_id, config.image_token_id, config.vision_start_token_id,
               config.vision_end_token_id}  # fmt: skip
    words = torch.tensor(
        [i for i in range(min(config.text_config.vocab_size, 4096)) if i not in special]
    )
    text = words[torch.randint(0, len(words), (batch, text_len), generator=generator)]
    video = torch.full((batch, video_tokens), config.video_token_id)
    if _segmented(model):  # one segment per temporal patch, a text token (its time) between
        per_patch = video_tokens // grid[0]
        stamps = words[torch.randint(0, len(words), (batch, grid[0]), generator=generator)]
        pieces = [video[:, :per_patch]]
        for k in range(1, grid[0]):
            pieces += [stamps[:, k : k + 1], video[:, :per_patch]]
        video = torch.cat(pieces, dim=1)
    ids = torch.cat([text[:, : text_len // 2], video, text[:, text_len // 2 :]], dim=1)
    width = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
    dtype = next(model.parameters()).dtype
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "mm_token_type_ids": (ids == config.video_token_id).int() * 2,
        "pixel_values_videos": torch.randn(batch * patches, width, generator=generator).to(dtype),
        "video_grid_thw": torch.tensor([grid] * batch),
    }
    return {k: v.to(device) for k, v in inputs.items()}, grid


def _timed(fn, repeats: int, device: str) -> float:
    import numpy as np
    import torch

    times = []
    for _ in range(repeats + 1):  # the first is warm-up
        if device.startswith("cuda"):  # the model's GPU: a bare synchronize() waits on cuda:0
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


class BenchConfigError(ValueError):
    """A bench_gpu option it cannot run with; the message names the value and the fix."""


def check_config(cfg: DictConfig) -> None:
    """Refuse, before any model is built, what the bench cannot run."""
    from rollout.checkpoint import device_problem
    from rollout.checks import is_int, is_number

    if cfg.shape not in SHAPES:
        raise BenchConfigError(
            f"shape={cfg.shape!r} is not a bench shape; pick one of {list(SHAPES)}"
        )
    if cfg.dtype not in ("float32", "bfloat16", "float16"):
        raise BenchConfigError(f"dtype={cfg.dtype!r} must be float32, bfloat16 or float16")
    # "cuda" on a machine without one is said as the run starts (the bench's own message)
    if (problem := device_problem(cfg.device)) and not (
        cfg.device == "cuda" and "sees no CUDA GPU" in problem
    ):
        raise BenchConfigError(problem)
    for key in ("batch", "text_tokens", "frames", "frame_size", "new_tokens", "repeats"):
        if not is_int(cfg[key]) or cfg[key] < 1:
            raise BenchConfigError(f"{key}={cfg[key]!r} must be an integer >= 1")
    # a raw reshape error after the model was built (minutes, for 8 B parameters); an odd
    # number of frames ran as one fewer
    if cfg.frames % TEMPORAL_PATCH:
        raise BenchConfigError(
            f"frames={cfg.frames} must be a multiple of {TEMPORAL_PATCH} (a video is read "
            f"{TEMPORAL_PATCH} frames to a patch); use {max(2, cfg.frames - 1)} or "
            f"{cfg.frames + 1}"
        )
    unit = PATCH_SIDES[cfg.shape] * MERGE
    if cfg.frame_size % unit:
        below = cfg.frame_size // unit * unit
        nearest = f"{below} or {below + unit}" if below else str(unit)
        raise BenchConfigError(
            f"frame_size={cfg.frame_size} must be a multiple of {unit} for shape={cfg.shape} "
            f"(patches of {PATCH_SIDES[cfg.shape]} px, merged {MERGE} × {MERGE}); use {nearest}"
        )
    peak = cfg.peak_tflops
    if peak is not None and (not is_number(peak) or peak <= 0):
        raise BenchConfigError(
            f"peak_tflops={peak!r} must be a number > 0 (the GPU's dense TFLOP/s at dtype), or "
            "null to look it up from the GPU's name"
        )


@hydra.main(config_path="../configs", config_name="bench_gpu", version_base="1.3")
def main(cfg: DictConfig) -> None:
    import torch
    from hydra.core.hydra_config import HydraConfig

    logging.getLogger("transformers").setLevel(logging.ERROR)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        check_config(cfg)
    except BenchConfigError as exc:
        raise SystemExit(f"bench_gpu: BenchConfigError: {exc}") from None
    if str(cfg.device).startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(
            "bench_gpu: no CUDA GPU here; run it on a GPU node (or device=cpu shape=tiny)"
        )
    model = build_model(cfg.shape, cfg.device, cfg.dtype)
    inputs, grid = _inputs(
        model, cfg.batch, cfg.text_tokens, cfg.frames, cfg.frame_size, cfg.device
    )
    tokens = inputs["input_ids"].numel()

    def generate(new_tokens: int):
        return model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                              do_sample=False)  # fmt: skip

    with torch.inference_mode():
        # the score readout's prefill: the output head on the last position alone (logits at
        # every position were 5 GiB and 5 % of the FLOPs that the critic never computes)
        prefill_s = _timed(
            lambda: model(**inputs, use_cache=False, logits_to_keep=1), cfg.repeats, cfg.device
        )
        # decoding alone: generate's time for N tokens less its time for 1 (its own prefill and
        # first token), over the N - 1 tokens decoded after them
        generate_s = _timed(lambda: generate(cfg.new_tokens), max(1, cfg.repeats // 2), cfg.device)
        first_s = _timed(lambda: generate(1), max(1, cfg.repeats // 2), cfg.device)
    flops = forward_flops(model, cfg.batch, cfg.text_tokens, grid, logits_to_keep=1)["total"]
    gpu = torch.device(cfg.device) if cfg.device.startswith("cuda") else None
    name = torch.cuda.get_device_name(gpu) if gpu is not None else "cpu"
    peak = cfg.peak_tflops or peak_tflops(name, cfg.dtype)
    if peak is None and gpu is not None:
        log.warning("no peak TFLOP/s for %s at %s: no MFU; give peak_tflops=", name, cfg.dtype)
    # too short to time (a tiny model on a CPU): no rate
    decode_s = generate_s - first_s
    from rl_results import machine_record

    results = {
        "device": name,
        "machine": {
            **machine_record(),
            "cuda": torch.version.cuda or "none",
            "attention": getattr(model.config, "_attn_implementation", None) or "?",
        },
        "shape": cfg.shape,
        "dtype": cfg.dtype,
        "frames": cfg.frames,
        "frame_size": cfg.frame_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch": cfg.batch,
        "tokens_per_prompt": tokens // cfg.batch,
        "video_grid_thw": list(grid),
        "prefill_s": prefill_s,
        "prefill_tokens_per_s": tokens / prefill_s,
        "prefill_tflops_per_s": flops / prefill_s / 1e12,
        "mfu": flops / prefill_s / (peak * 1e12) if peak else None,
        "peak_tflops": peak,
        "decode_tokens_per_s": cfg.batch * (cfg.new_tokens - 1) / decode_s
        if decode_s > 0 and cfg.new_tokens > 1
        else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated(gpu) / 2**30
        if gpu is not None
        else None,
    }
    (out_dir / "bench_gpu.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print(f"results: {out_dir}")


if __name__ == "__main__":
    main()
