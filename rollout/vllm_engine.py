"""The vLLM engine (GPU only): the same :class:`~rollout.engine.Engine` interface on vLLM's ``LLM``.

vLLM expands each video placeholder itself from the frames it is given, so a request is turned
into a ``TokensPrompt`` whose ``<|video_pad|>`` runs are collapsed to one token per video, with the
frames in ``multi_modal_data``. The frames are the ones our patchifier saw, already resized to
the grid (``prompts.encode(..., keep_videos=True)``), and ``mm_processor_kwargs`` bound the
processor's resize to their areas, so that it keeps their size and makes the same grid and number
of video tokens (to be confirmed by the ``gpu`` test: it has not run yet).

For RL the engine can sleep (free GPU memory while the trainer steps) and load new weights.
This module is named ``vllm_engine`` rather than ``vllm`` so that it never shadows the package.
vLLM's wheels need CUDA torch: nothing here runs on the CPU machines, except the pure functions
that build requests, which are tested there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rollout.checkpoint import SEGMENTED_MODEL_TYPES, ModelLoadError
from rollout.engine import Engine, EngineError, InvalidRequestError, Request, SamplingParams
from rollout.imports import require_package


def vllm_options_problem(vllm: Any, options: dict[str, Any]) -> str | None:
    """An option of ``vllm.LLM`` this vLLM does not take (neither ``LLM()``'s own argument nor an
    ``EngineArgs`` field, where its other keywords go), or None; found before training, where it
    failed as the first GRPO stage built the engine, after the stages before it had trained. A
    vLLM whose options cannot be listed is not checked."""
    import contextlib
    import dataclasses
    import difflib
    import inspect

    known: set[str] = set()
    if dataclasses.is_dataclass(args := getattr(vllm, "EngineArgs", None)):
        known |= {f.name for f in dataclasses.fields(args)}
    if (llm := getattr(vllm, "LLM", None)) is not None:
        with contextlib.suppress(TypeError, ValueError):  # a signature it cannot read
            known |= set(inspect.signature(llm).parameters) - {"self", "kwargs"}
    unknown = sorted(set(options) - known) if known else []
    if not unknown:
        return None
    near = difflib.get_close_matches(unknown[0], sorted(known), n=1)
    return (
        f"vllm.{unknown[0]}={options[unknown[0]]!r} is not an option of this vLLM's LLM() (vLLM "
        f"{getattr(vllm, '__version__', '?')})"
        + (f"; did you mean vllm.{near[0]}?" if near else "")
        + "; drop it, or give one of LLM()'s or EngineArgs' options"
    )


def vllm_model_problem(model_type: str | None) -> str | None:
    """Why the vLLM engine cannot run a model of ``model_type``, or ``None``.

    Qwen3-VL's prompts hold one timestamped segment per temporal patch, which vLLM's processor
    writes itself from video metadata: :func:`build_vllm_prompt` hands it Qwen2.5-VL's layout
    only, and no GPU run has checked the two against each other.
    """
    if model_type in SEGMENTED_MODEL_TYPES:
        return (
            f"the vLLM engine does not run {model_type!r} models yet (their timestamped video "
            "prompts are not handed to vLLM); use rollout_engine=hf (transformers) for a "
            "Qwen3-VL critic"
        )
    return None


def build_vllm_prompt(
    request: Request, video_token_id: int, temporal_patch_size: int = 2
) -> dict[str, Any]:
    """One :class:`Request` as a vLLM ``TokensPrompt`` dict.

    Each run of ``video_token_id`` becomes one placeholder token, and ``multi_modal_data["video"]``
    holds the request's videos in order, each as vLLM's ``(frames, metadata)`` pair: the uint8
    ``[T, H, W, 3]`` frames and a frame rate of ``temporal_patch_size`` frames a second.

    That rate keeps the temporal positions the model was trained with. Qwen2.5-VL spaces its
    temporal patches ``second_per_grid_ts`` apart in its rotary positions; the transformers
    engine (training, scoring, the reward) passes none, which the model reads as 1 second, while
    the processor vLLM calls reads ``temporal_patch_size / fps`` from the metadata, with 24 fps
    for frames that come without (1/12 second).

    Raises:
        InvalidRequestError: the request has video tokens but no frames, or the runs and the
            videos do not pair up.

    Example:
        ids [1, 9, 9, 9, 2] with video id 9 and one video → prompt_token_ids [1, 9, 2].
    """
    ids = [int(i) for i in request.input_ids.tolist()]
    collapsed: list[int] = []
    runs = 0
    for i, token in enumerate(ids):
        if token == video_token_id:
            if i == 0 or ids[i - 1] != video_token_id:
                collapsed.append(token)
                runs += 1
        else:
            collapsed.append(token)
    videos = list(request.videos or ())
    if runs != len(videos):
        raise InvalidRequestError(
            f"the request has {runs} video placeholder runs but {len(videos)} videos; build it "
            "with prompts.encode(..., keep_videos=True) for the vLLM engine"
        )
    prompt: dict[str, Any] = {"prompt_token_ids": collapsed}
    if videos:
        fps = float(temporal_patch_size)  # one temporal patch a second, as the model trained
        items = [
            (v, {"fps": fps, "total_num_frames": len(v), "frames_indices": list(range(len(v))),
                 "duration": len(v) / fps})
            for v in videos
        ]  # fmt: skip
        prompt["multi_modal_data"] = {"video": items[0] if len(items) == 1 else items}
        # The frames are already at their grid size: bound the processor's resize to their areas
        # so it keeps them (its defaults would enlarge small frames).
        areas = [int(v.shape[1]) * int(v.shape[2]) for v in videos]
        prompt["mm_processor_kwargs"] = {"min_pixels": min(areas), "max_pixels": max(areas)}
    return prompt


def vllm_launch_kwargs(environ: Any = os.environ) -> dict[str, Any]:
    """``vllm.LLM`` options for how this process runs vLLM: under torchrun (``WORLD_SIZE`` > 1)
    each process keeps its own engine on its own GPU through vLLM's ``external_launcher``
    executor, which reads ``RANK`` and ``LOCAL_RANK`` (as TRL's colocate mode does). vLLM's
    default executor places every process's engine on GPU 0."""
    world = str(environ.get("WORLD_SIZE", "1"))
    if world.isdigit() and int(world) > 1:
        return {"distributed_executor_backend": "external_launcher"}
    return {}


def vllm_sampling_kwargs(
    params: SamplingParams, eos_token_id: int, banned_token_ids: Sequence[int] = ()
) -> dict[str, Any]:
    """Our :class:`SamplingParams` as ``vllm.SamplingParams`` keyword arguments; the banned ids
    (image/video placeholders) get a -100 logit bias, as the transformers engine suppresses them.
    Greedy decoding asks for one completion (vLLM refuses ``n > 1`` without sampling: "n must be
    1 when using greedy sampling"); :meth:`VLLMEngine.generate` gives it ``n`` times, as the
    transformers engine does."""
    kwargs: dict[str, Any] = {
        "n": 1 if params.temperature == 0 else params.n,
        "max_tokens": params.max_new_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "seed": params.seed,
        "stop_token_ids": [eos_token_id],
        "skip_special_tokens": False,
    }
    if banned_token_ids:
        kwargs["logit_bias"] = {int(i): -100.0 for i in banned_token_ids}
    return kwargs


def vllm_score_kwargs(candidates: Sequence[int]) -> dict[str, Any]:
    """``vllm.SamplingParams`` kwargs that read the candidates' next-token distribution.

    One token is generated with only the candidates allowed; with the engine's
    ``logprobs_mode="processed_logprobs"`` the returned log-probabilities are those over the
    candidates, so all of them are in the top ``len(candidates)``.
    """
    return {
        "n": 1,
        "max_tokens": 1,
        "temperature": 1.0,
        "allowed_token_ids": [int(c) for c in candidates],
        "logprobs": len(candidates),
        "seed": 0,
    }


def candidate_probs(logprobs: dict[int, Any], candidates: Sequence[int]) -> list[float]:
    """Renormalised probabilities of ``candidates`` from one position's ``{id: Logprob}``."""
    import math

    values = [getattr(logprobs.get(c), "logprob", -math.inf) for c in candidates]
    top = max(values)
    if top == -math.inf:
        raise InvalidRequestError(
            f"none of the candidates {list(candidates)} got a log-probability"
        )
    weights = [math.exp(v - top) for v in values]
    total = sum(weights)
    return [w / total for w in weights]


class WeightLoaderExtension:
    """Mixed into vLLM's GPU workers (``worker_extension_cls``) to take new weights for RL."""

    def viscritic_load_weights(self, weights: list[tuple[str, Any]]) -> None:
        self.model_runner.model.load_weights(weights=weights)  # type: ignore[attr-defined]


class VLLMEngine(Engine):
    """vLLM's in-process ``LLM`` behind the engine interface.

    Args:
        model: a Qwen2.5-VL checkpoint folder (a hub id is refused: nothing downloads at run
            time; Qwen3-VL is refused, :func:`vllm_model_problem`).
        video_token_id: the model's ``<|video_pad|>`` id (``config.video_token_id``).
        eos_token_id: id that ends a completion.
        gpu_memory_utilization: share of GPU memory vLLM may take.
        enable_sleep_mode: allow :meth:`sleep` / :meth:`wake_up` (RL colocated with training).
        **llm_kwargs: passed on to ``vllm.LLM`` (``tensor_parallel_size``, ``max_model_len``,
            ``dtype``, ``limit_mm_per_prompt``, ...).
    """

    needs_videos = True

    def __init__(
        self,
        model: str,
        video_token_id: int,
        eos_token_id: int,
        gpu_memory_utilization: float = 0.5,
        enable_sleep_mode: bool = True,
        **llm_kwargs: Any,
    ) -> None:
        local = Path(model) / "config.json"  # a folder's model is refused before vLLM is needed
        if not local.is_file():
            raise ModelLoadError(
                f"{model}: no checkpoint folder (no config.json in it) on this machine; nothing "
                "downloads at run time: download a hub model to a folder first and name it"
            )
        try:
            kind = json.loads(local.read_text()).get("model_type")
        except (OSError, ValueError, AttributeError) as exc:
            raise ModelLoadError(f"{local} is not a readable model config: {exc}") from None
        if (problem := vllm_model_problem(kind)) is not None:
            raise ModelLoadError(f"{model}: {problem}")
        vllm = require_package("vllm", "vllm", "the vLLM engine")
        self.vllm = vllm
        self.video_token_id = video_token_id
        self.eos_token_id = eos_token_id
        config = require_package(
            "transformers", "vlm", "the vLLM engine"
        ).AutoConfig.from_pretrained(model)
        names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
        self.banned_token_ids = [
            int(i) for i in (getattr(config, n, None) for n in names) if i is not None
        ]
        vision = getattr(config, "vision_config", None)
        self.temporal_patch_size = int(getattr(vision, "temporal_patch_size", 2))
        # vLLM runs its engine core in a child process by default, and :meth:`load_weights`
        # would then send every tensor through a socket, which its decoder does not rebuild as
        # tensors (vllm-project/vllm#16434): the engine stays in this process, as RL needs.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        # decode by our SamplingParams alone, as the transformers engine does: by default vLLM
        # also stops on the checkpoint's generation_config.json end tokens (Qwen2.5-VL's list
        # 151643 beside 151645), so completions ended where the transformers engine's go on
        llm_kwargs = {"generation_config": "vllm", **vllm_launch_kwargs(), **llm_kwargs}
        # candidates scored at once: vLLM returns at most max_logprobs log-probabilities
        self.max_logprobs = int(llm_kwargs.get("max_logprobs", 20))
        self.llm = vllm.LLM(
            model=model,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_sleep_mode=enable_sleep_mode,
            logprobs_mode="processed_logprobs",
            worker_extension_cls=f"{__name__}.WeightLoaderExtension",
            **llm_kwargs,
        )

    def _prompts(self, requests: Sequence[Request]) -> list[dict[str, Any]]:
        return [
            build_vllm_prompt(r, self.video_token_id, self.temporal_patch_size) for r in requests
        ]

    def generate(
        self, requests: Sequence[Request], params: SamplingParams
    ) -> list[list[list[int]]]:
        if not requests:
            return []
        kwargs = vllm_sampling_kwargs(params, self.eos_token_id, self.banned_token_ids)
        # one SamplingParams per prompt: vLLM seeds completion i of a prompt with seed + i, the
        # same for every prompt, so each prompt's draws would repeat the others'
        sampling = [
            self.vllm.SamplingParams(
                **{
                    **kwargs,
                    "seed": None if params.seed is None else (params.seed + k * params.n) % 2**63,
                }
            )
            for k in range(len(requests))
        ]
        outputs = self.llm.generate(self._prompts(requests), sampling, use_tqdm=False)
        copies = params.n if params.temperature == 0 else 1  # greedy: one completion, n times
        return [
            [  # n lists of their own, as HFEngine gives (not n references to one list)
                [t for t in c.token_ids if t != self.eos_token_id]
                for _ in range(copies)
                for c in out.outputs
            ]
            for out in outputs
        ]

    def score(
        self, requests: Sequence[Request], candidates: Sequence[int], prefix: Sequence[int] = ()
    ):
        import torch

        if len(candidates) > self.max_logprobs:  # vLLM refuses more log-probabilities
            raise InvalidRequestError(
                f"{len(candidates)} candidates, and this vLLM engine returns at most "
                f"max_logprobs={self.max_logprobs} log-probabilities; score fewer, or make the "
                f"engine with max_logprobs={len(candidates)} (+vllm.max_logprobs= in training)"
            )
        prompts = self._prompts(requests)
        for prompt in prompts:
            prompt["prompt_token_ids"] = prompt["prompt_token_ids"] + [int(p) for p in prefix]
        sampling = self.vllm.SamplingParams(**vllm_score_kwargs(candidates))
        outputs = self.llm.generate(prompts, sampling, use_tqdm=False)
        rows = [candidate_probs(out.outputs[0].logprobs[0], candidates) for out in outputs]
        return torch.tensor(rows, dtype=torch.float32).reshape(len(requests), len(candidates))

    def sleep(self, level: int = 1) -> None:
        """Free the GPU memory of weights (level 1 keeps a CPU copy) and KV cache."""
        self.llm.sleep(level=level)

    def wake_up(self) -> None:
        """Undo :meth:`sleep`."""
        self.llm.wake_up()

    # a trainer whose vision tower does not train sets this: its old embeddings stay right
    vision_frozen = False

    def _encoder_cache_reset(self):
        # reset_mm_cache clears the processor's cache, not the encoder's outputs
        owners = (self.llm, getattr(self.llm, "llm_engine", None))
        return next((r for o in owners if callable(r := getattr(o, "reset_encoder_cache", None))),
                    None)  # fmt: skip

    def encoder_cache_problem(self) -> str | None:
        """Why new weights would be read with the old vision tower's embeddings, or None."""
        if self._encoder_cache_reset() is not None:
            return None
        return (
            f"this vLLM ({getattr(self.vllm, '__version__', 'of unknown version')}) has no "
            "reset_encoder_cache: after new weights it would reuse the old vision tower's "
            "embeddings of every video it has seen (keyed by content alone); install a vLLM "
            "whose LLM has reset_encoder_cache, train with freeze_vision=true, or with "
            "rollout_engine=hf"
        )

    def load_weights(self, weights: Iterable[tuple[str, Any]]) -> None:
        """Load ``(name, tensor)`` pairs in Hugging Face naming (a trainer's ``state_dict``),
        then drop what was computed with the old weights: cached prefixes, and the vision
        encoder's outputs, which vLLM keys by the video's content alone (GRPO sends the same
        videos again, and a trained vision tower's old embeddings would be reused)."""
        if (problem := self.encoder_cache_problem()) is not None and not self.vision_frozen:
            raise EngineError(problem)
        self.llm.collective_rpc("viscritic_load_weights", args=(list(weights),))
        self.llm.reset_prefix_cache()
        if problem is None:
            self._encoder_cache_reset()()
        if callable(reset := getattr(self.llm, "reset_mm_cache", None)):
            reset()
