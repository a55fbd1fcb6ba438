"""The transformers engine: batched, left-padded generation with the KV cache, on CPU or GPU.
(Loading the checkpoint it runs: :mod:`rollout.checkpoint`.)"""

from __future__ import annotations

import contextlib
import inspect
import json
from collections.abc import Sequence

from rollout.checkpoint import MODEL_CLASSES, SEGMENTED_MODEL_TYPES, processor_config, video_times
from rollout.engine import Engine, EngineError, InvalidRequestError, Request, SamplingParams
from rollout.imports import require_package
from rollout.request_checks import MAX_GRID, RequestChecks, video_runs

__all__ = ["MAX_GRID", "HFEngine"]


class HFEngine(RequestChecks, Engine):
    """Runs a ``*ForConditionalGeneration`` Qwen-VL model with ``model.generate``.

    Args:
        model: the model (eval mode).
        pad_token_id: id used for left padding.
        eos_token_id: id that ends a completion.
        cache: a video-embedding cache to route the vision tower through (in place of any
            cache attached to ``model`` before), or ``None`` (none: one attached before is taken
            off). Clear it when the weights change (training).
        share_prefix: in :meth:`score`, run the tokens (and videos) that every prompt of the batch
            starts with once and reuse their KV cache (:meth:`shared_prefix`).

    Attributes:
        last_shared_prefix: tokens the last :meth:`score` call ran once for the whole batch (0: it
            ran every prompt in full).
    """

    def __init__(
        self, model, pad_token_id: int, eos_token_id: int, cache=None, share_prefix: bool = True
    ) -> None:
        self.torch = require_package("torch", "vlm", "the transformers engine")
        self.transformers = require_package("transformers", "vlm", "the transformers engine")
        self.model = model
        self.pad_token_id = pad_token_id
        self.eos_token_id = eos_token_id
        self.cache = cache
        self.share_prefix = share_prefix
        self.last_shared_prefix = 0
        from rollout.cache import VideoEmbeddingCache

        if cache is not None:
            cache.attach(model)
        else:  # an earlier engine's cache would answer with what the weights then gave
            VideoEmbeddingCache.detach(model)

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def vision_token_ids(self) -> list[int]:
        """Placeholders of images and videos: never generated (a sampled ``<|video_pad|>`` would
        claim video features that do not exist when the completion is scored or trained on)."""
        config = self.model.config
        names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
        return [int(i) for i in (getattr(config, n, None) for n in names) if i is not None]

    def describe(self) -> dict:
        """What a client needs to build requests for this model: its config as a plain dict, and
        the video processor settings of the folder it was loaded from (:func:`processor_config`;
        ``None`` for the project's presets and checkpoints), which set the client's pixel budget."""
        return {
            "config": json.loads(self.model.config.to_json_string()),
            "processor": processor_config(getattr(self.model, "name_or_path", "")),
            "needs_videos": False,
        }

    def _synced(self) -> bool:
        """Whether every process of a distributed run must take part in each decoding step.
        Under DeepSpeed ZeRO-3 a forward pass gathers each layer's weights from all processes, so
        a process whose completions ended first must go on stepping until all have, or the others
        hang. transformers decides this from a config object this project does not make
        (``HfDeepSpeedConfig``), so the engine says it whenever several processes run: under
        ZeRO-2 it costs a finished process a few idle steps."""
        dist = self.torch.distributed
        return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    def _no_grad(self):
        """The context a forward pass without gradients runs in: ``inference_mode`` (the
        cheapest) in one process, ``no_grad`` when several run. Under DeepSpeed ZeRO-3 the
        forward gathers each layer's weights into tensors made inside it, and those it keeps
        whole (small ones) would stay inference tensors, which the next training forward cannot
        use: "Inference tensors cannot be saved for backward" at the first GRPO update. TRL
        generates under ``no_grad`` for the same reason."""
        return self.torch.no_grad() if self._synced() else self.torch.inference_mode()

    def _batch(self, requests: Sequence[Request], suffix: Sequence[int] = ()) -> dict:
        """Left-pad ids, masks and token types; concatenate video tensors in request order.

        The token types are rebuilt from the ids (2 on video tokens, as the server does,
        :meth:`with_token_types`): the model places videos by them, and a request's own (from
        ``prompts.encode(video_token_type=1)``, or all zeros) made the local engine crash or
        answer other than a served one."""
        torch = self.torch
        suffix_t = torch.tensor(list(suffix), dtype=torch.int64)
        ids = [torch.cat([r.input_ids.to(torch.int64), suffix_t]) for r in requests]
        video_id = self.model.config.video_token_id
        types = [(seq == video_id).to(torch.int32) * 2 for seq in ids]
        width = max(len(i) for i in ids)
        input_ids = torch.full((len(ids), width), self.pad_token_id, dtype=torch.int64)
        attention = torch.zeros((len(ids), width), dtype=torch.int64)
        mm_types = torch.zeros((len(ids), width), dtype=torch.int32)
        for row, (seq, typ) in enumerate(zip(ids, types, strict=True)):
            input_ids[row, width - len(seq) :] = seq
            attention[row, width - len(seq) :] = 1
            mm_types[row, width - len(seq) :] = typ
        batch = {"input_ids": input_ids, "attention_mask": attention, "mm_token_type_ids": mm_types}
        videos = [r for r in requests if r.pixel_values_videos is not None]
        if videos:
            dtype = self.model.dtype  # float64 patches from a client would not meet float32 weights
            batch["pixel_values_videos"] = torch.cat([r.pixel_values_videos for r in videos]).to(
                dtype
            )
            batch["video_grid_thw"] = torch.cat([r.video_grid_thw for r in videos])
            batch.update(video_times(self.model, batch["video_grid_thw"]))
        return {k: v.to(self.device) for k, v in batch.items()}

    def generate(
        self, requests: Sequence[Request], params: SamplingParams
    ) -> list[list[list[int]]]:
        torch = self.torch
        if not requests:
            return []
        self.check_length(requests, params.max_new_tokens)
        batch = self._batch(requests)
        greedy = params.temperature == 0
        # Greedy decoding gives one completion: generate it once and give it n times (vLLM's
        # answer too), where transformers refuses n > 1 without sampling.
        copies, n = (params.n, 1) if greedy else (1, params.n)
        sampling = (
            {} if greedy else {"temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
        )
        # The params alone say how to decode. transformers fills every option a call leaves
        # unset from the model's generation_config (a checkpoint's generation_config.json: Qwen's
        # Instruct releases set a repetition penalty, top_k and top_p), so GRPO would train on
        # another distribution than the one whose log-probabilities it computes: not in a call.
        own = self.model.generation_config
        self.model.generation_config = self.transformers.GenerationConfig()
        # A seeded call draws from its own seed and leaves the caller's generators as they were
        # (the model's device's too, and other GPUs' untouched: a CPU critic had reset a learner's
        # CUDA noise); an unseeded one draws from them and moves them on.
        seeded = contextlib.nullcontext()
        if params.seed is not None:
            device = self.model.device
            seeded = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
        try:
            with seeded, self._no_grad():
                if params.seed is not None:  # the forked ones (manual_seed seeded every GPU's)
                    torch.random.default_generator.manual_seed(params.seed)
                    if device.type == "cuda":
                        with torch.cuda.device(device):
                            torch.cuda.manual_seed(params.seed)
                out = self.model.generate(
                    **batch,
                    synced_gpus=self._synced(),
                    suppress_tokens=self.vision_token_ids,
                    do_sample=not greedy,
                    num_return_sequences=n,
                    max_new_tokens=params.max_new_tokens,
                    pad_token_id=self.pad_token_id,
                    eos_token_id=self.eos_token_id,
                    **sampling,
                )
        finally:
            self.model.generation_config = own
        new = out[:, batch["input_ids"].shape[1] :].tolist()
        completions = []
        for i in range(len(requests)):
            group = []
            for seq in new[i * n : (i + 1) * n]:
                # transformers pads a row only after its EOS: what comes before is the model's,
                # pad tokens it generated included
                group.append(
                    seq[: seq.index(self.eos_token_id)] if self.eos_token_id in seq else seq
                )
            completions.append([list(c) for c in group * copies])
        return completions

    def score(
        self, requests: Sequence[Request], candidates: Sequence[int], prefix: Sequence[int] = ()
    ):
        """See :meth:`Engine.score`; ``prefix`` tokens (e.g. ``<answer>``) are appended first."""
        torch = self.torch
        if not len(candidates):
            raise InvalidRequestError("candidates must name at least one token id")
        self.check_token_ids(list(candidates), "candidates")  # -1 read the last token's logit
        self.check_prefix(list(prefix))
        if not requests:
            return torch.zeros((0, len(candidates)))
        self.check_length(requests, 1, prefix=list(prefix))
        batch = self._batch(requests, prefix)
        shared = self.shared_prefix(requests, batch) if self.share_prefix else None
        self.last_shared_prefix = shared[0] if shared else 0
        with self._no_grad():
            # the last position only: a real checkpoint's vocabulary (~152k) over every position
            # of a batch of video prompts would be gigabytes of logits
            if shared:
                out = self._forward_shared(batch, *shared)
            else:
                out = self.model(**batch, use_cache=False, logits_to_keep=1)
            logits = out.logits[:, -1, :]  # [B, V]
        chosen = logits[:, list(candidates)].float()  # [B, K]
        probs = torch.softmax(chosen, dim=-1).cpu()
        if bad := [i for i, row in enumerate(probs) if not bool(torch.isfinite(row).all())]:
            # a made-up reward is worse than none: overflowing activations (pixels near the
            # dtype's limit, float16 weights) must not read as probabilities
            raise EngineError(
                f"the model's scores of request(s) {bad} are not finite (its activations "
                f"overflowed in {self.model.dtype}): check those requests' pixels, or load the "
                "model in float32 or bfloat16"
            )
        return probs

    def shared_prefix(self, requests: Sequence[Request], batch: dict) -> tuple[int, int] | None:
        """How much of a batch every prompt starts with: ``(tokens, videos)``, or ``None``.

        The reward's queries of one episode differ only after the initial frame (system prompt,
        instruction and initial frame are ~60 % of a Reacher query's 229 tokens), so these run
        once and the batch continues from their KV cache: same logits (float rounding aside), less
        work. A video counts as shared only when it lies wholly inside the common tokens and its
        patches are equal in every prompt; the prefix ends before the first video that is not.
        ``None`` (run in full) for one prompt, padded batches (prompts of different lengths),
        prompts without videos or with different numbers of them, models other than Qwen-VL's,
        and prefixes that would save less than one prompt's worth of tokens.
        """
        torch = self.torch
        ids = batch["input_ids"]
        rows, width = ids.shape
        if (
            rows < 2
            or self.model.config.model_type not in MODEL_CLASSES
            or not bool(batch["attention_mask"].all())
            or any(r.video_grid_thw is None for r in requests)
            or len({len(r.video_grid_thw) for r in requests}) != 1
        ):
            return None
        agree = (ids == ids[:1]).all(0)
        length = width - 1 if bool(agree.all()) else int(agree.int().argmin())
        length = min(length, width - 1)  # the batched pass needs a token of its own
        videos = 0
        spans = _video_spans(
            ids[0] == self.model.config.video_token_id,
            requests[0].video_grid_thw,
            self.model.config.model_type in SEGMENTED_MODEL_TYPES,
        )
        if spans is None:  # runs and grid disagree (a request check_request would refuse)
            return None
        for j, (begin, end) in enumerate(spans):
            if begin >= length:
                break
            same = end <= length and all(
                torch.equal(r.video_grid_thw[j], requests[0].video_grid_thw[j])
                and torch.equal(_video(r, j), _video(requests[0], j))
                for r in requests[1:]
            )
            if not same:
                length = begin
                break
            videos += 1
        if length * (rows - 1) <= width:
            return None
        return length, videos

    def _forward_shared(self, batch: dict, length: int, videos: int):
        """The batch's forward with its first ``length`` tokens (holding the first ``videos``
        videos of each prompt) run once, for the first prompt, and their KV cache repeated."""
        torch = self.torch
        ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["mm_token_type_ids"]
        grid = batch["video_grid_thw"]  # prompt-major: each prompt's videos in turn
        rows = ids.shape[0]
        per_prompt = len(grid) // rows
        # the whole batch's 3-D rope positions, then each pass takes its slice
        times = {k: batch[k] for k in ("second_per_grid_ts",) if k in batch}
        config = self.model.config
        marks = (types, mask, ids == config.vision_start_token_id)
        layouts = [
            grid.view(rows, per_prompt, 3),
            *(t.view(rows, per_prompt) for t in times.values()),
        ]
        if all(bool((m == m[:1]).all()) for m in (*marks, *layouts)):
            # every prompt laid out as the first (a relabelled episode's queries): the positions
            # are the first's, which are integers, so the same bit for bit; 4 % of a call
            one = {k: t[:per_prompt] for k, t in times.items()}
            positions, _ = self.model.model.get_rope_index(
                ids[:1], mm_token_type_ids=types[:1], video_grid_thw=grid[:per_prompt],
                attention_mask=mask[:1], **one,
            )  # fmt: skip
            positions = positions.expand(-1, rows, -1)
        else:
            positions, _ = self.model.model.get_rope_index(
                ids, mm_token_type_ids=types, video_grid_thw=grid, attention_mask=mask, **times
            )
        chunks = torch.split(batch["pixel_values_videos"], grid.prod(-1).tolist())

        def video_inputs(indices: list[int]) -> dict:
            if not indices:
                return {}
            return {
                "pixel_values_videos": torch.cat([chunks[i] for i in indices]),
                "video_grid_thw": grid[indices],
            }

        head = self.model(
            input_ids=ids[:1, :length],
            attention_mask=mask[:1, :length],
            position_ids=positions[:, :1, :length],
            mm_token_type_ids=types[:1, :length],
            use_cache=True,
            logits_to_keep=1,
            **video_inputs(list(range(videos))),
        )
        # transformers 5.24 renamed the KV cache ``past_key_values`` -> ``cache`` (the old name is
        # to go in 5.40); the lower bound of the ``vlm`` extra still takes the old one
        takes = inspect.signature(self.model.forward).parameters
        name = "cache" if "cache" in takes else "past_key_values"
        cache = getattr(head, name)
        cache.batch_repeat_interleave(rows)
        rest = [r * per_prompt + j for r in range(rows) for j in range(videos, per_prompt)]
        return self.model(
            input_ids=ids[:, length:],
            attention_mask=mask,
            position_ids=positions[:, :, length:],
            mm_token_type_ids=types[:, length:],
            use_cache=True,
            **{name: cache},
            logits_to_keep=1,
            **video_inputs(rest),
        )


def _video_spans(is_video, grid, segmented: bool) -> list[tuple[int, int]] | None:
    """``[start, end)`` of each video's tokens in a 1-D boolean mask, from its first run to its
    last: one run a video, or (``segmented``, Qwen3-VL) one run per temporal patch of its grid
    row, the timestamps and segment marks between them included. ``None`` where the runs do not
    make the grid's videos."""
    runs = video_runs(is_video)
    if len(runs) != (int(grid[:, 0].sum()) if segmented else len(grid)):
        return None
    if not segmented:
        return runs
    spans, first = [], 0
    for t in grid[:, 0].tolist():
        spans.append((runs[first][0], runs[first + t - 1][1]))
        first += t
    return spans


def _video(request: Request, index: int):
    """The flat patches of ``request``'s ``index``-th video."""
    sizes = request.video_grid_thw.prod(-1).tolist()
    start = sum(sizes[:index])
    return request.pixel_values_videos[start : start + sizes[index]]
