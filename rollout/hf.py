"""The transformers engine: batched, left-padded generation with the KV cache, on CPU or GPU.
(Loading the checkpoint it runs: :mod:`rollout.checkpoint`.)"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import itertools
import json
from collections.abc import Sequence

from rollout.checkpoint import MODEL_CLASSES, SEGMENTED_MODEL_TYPES, processor_config, video_times
from rollout.engine import Engine, EngineError, InvalidRequestError, Request, SamplingParams
from rollout.imports import require_package

MAX_GRID = 2**15  # patches along one axis of a video grid: far above any real video's


class HFEngine(Engine):
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

    def check_request(self, request: Request) -> None:
        """Raise :class:`InvalidRequestError` if ``request`` cannot run on this model.

        Checked: integer 1-D ids inside the vocabulary, token types of the same length, one video
        token per merged patch of the grid, and patches of the tower's width.
        """
        torch = self.torch
        config = self.model.config
        vision = config.vision_config
        ids, types = request.input_ids, request.mm_token_type_ids
        if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or len(ids) == 0:
            raise InvalidRequestError(
                f"input_ids must be a non-empty 1-D tensor, got {_shape(ids)}"
            )
        if ids.dtype not in (torch.int64, torch.int32):
            raise InvalidRequestError(f"input_ids must be int64 or int32, got {ids.dtype}")
        self.check_token_ids(ids.tolist(), "input_ids")
        if not isinstance(types, torch.Tensor) or types.shape != ids.shape:
            raise InvalidRequestError(
                f"mm_token_type_ids must be a tensor shaped like input_ids {tuple(ids.shape)}, "
                f"got {_shape(types)}"
            )
        video_tokens = int((ids == config.video_token_id).sum())
        pixels, grid = request.pixel_values_videos, request.video_grid_thw
        if pixels is None or grid is None:
            if pixels is not None or grid is not None:
                raise InvalidRequestError("pixel_values_videos and video_grid_thw come together")
            if video_tokens:
                raise InvalidRequestError(
                    f"{video_tokens} video tokens in input_ids but no pixel_values_videos"
                )
            return
        if (
            not isinstance(grid, torch.Tensor)
            or grid.dim() != 2
            or grid.shape[1] != 3
            or len(grid) == 0
        ):
            raise InvalidRequestError(
                f"video_grid_thw must be a [V, 3] tensor with V >= 1, got {_shape(grid)} (a "
                "request without video gives None for it and for pixel_values_videos)"
            )
        if grid.dtype not in (torch.int64, torch.int32):
            raise InvalidRequestError(f"video_grid_thw must be int64 or int32, got {grid.dtype}")
        merge = vision.spatial_merge_size
        if bool((grid > MAX_GRID).any()):  # the product below would wrap around in int64
            raise InvalidRequestError(
                f"video_grid_thw {grid.tolist()[:4]} holds a value above {MAX_GRID} patches; no "
                "video the processor makes is that long or that large"
            )
        if bool((grid < 1).any()) or bool((grid[:, 1:] % merge).any()):
            raise InvalidRequestError(
                f"video_grid_thw {grid.tolist()} must be positive with h and w multiples of the "
                f"merge size {merge}"
            )
        width = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
        patches = int(grid.prod(-1).sum())
        if not isinstance(pixels, torch.Tensor) or tuple(pixels.shape) != (patches, width):
            raise InvalidRequestError(
                f"pixel_values_videos must be a torch tensor of [{patches}, {width}] for grid "
                f"{grid.tolist()}, got {_shape(pixels)}"
            )
        if not pixels.is_floating_point():
            raise InvalidRequestError(f"pixel_values_videos must be float, got {pixels.dtype}")
        # as the model reads them: 1e300 is finite in float64 and infinite in float32 weights
        if not bool(torch.isfinite(pixels.to(self.model.dtype)).all()):
            raise InvalidRequestError(
                "pixel_values_videos holds NaN or infinite values (or values beyond the model's "
                f"{self.model.dtype}); build them from uint8 frames (critic.prompts.encode)"
            )
        if video_tokens != patches // merge**2:
            raise InvalidRequestError(
                f"input_ids hold {video_tokens} video tokens but grid {grid.tolist()} makes "
                f"{patches // merge**2} (one per {merge}x{merge} merged patch)"
            )
        # One run of video tokens per grid row, each as long as its row makes (Qwen3-VL: one per
        # temporal patch of the row): the model assigns grids to runs in order, across the batch.
        runs = [end - start for start, end in _video_runs(ids == config.video_token_id)]
        if config.model_type in SEGMENTED_MODEL_TYPES:
            expected = [int(h * w) // merge**2 for t, h, w in grid.tolist() for _ in range(t)]
        else:
            expected = [int(row.prod()) // merge**2 for row in grid]
        if runs != expected:
            raise InvalidRequestError(
                f"video token runs of lengths {runs} do not match the grid rows {grid.tolist()}, "
                f"which make runs of {expected}"
            )

    def with_token_types(self, request: Request) -> Request:
        """``request`` with ``mm_token_type_ids`` rebuilt from its ids (2 on video tokens): the
        model reads the types to place videos, so a server does not take a client's word."""
        types = (request.input_ids == self.model.config.video_token_id).to(self.torch.int32) * 2
        return dataclasses.replace(request, mm_token_type_ids=types)

    def check_prefix(self, prefix: Sequence[int]) -> None:
        """Raise :class:`InvalidRequestError` unless ``prefix`` (tokens appended to each prompt
        before scoring) is inside the vocabulary and holds no video placeholder: the model would
        look for more video patches than the request has, and fail the batch (a 500)."""
        self.check_token_ids(prefix, "prefix")
        video = getattr(self.model.config, "video_token_id", None)
        if video is not None and video in prefix:
            raise InvalidRequestError(
                f"prefix holds the video placeholder id {video}; a prefix is text (e.g. <answer>)"
            )

    def check_length(
        self, requests: Sequence[Request], max_new_tokens: int, prefix: Sequence[int] | None = None
    ) -> None:
        """Raise :class:`InvalidRequestError` when the longest prompt and ``max_new_tokens``
        do not fit the model's context: such a call would run for minutes past the positions
        the model was made for, holding the server's batcher the while. A score call gives its
        ``prefix`` instead: the prompt, the prefix and the one token scored after it must fit
        (past them the model reads positions it was never trained on, without a word)."""
        context = getattr(self.model.config.text_config, "max_position_embeddings", None)
        video = getattr(self.model.config, "video_token_id", None)
        # a lower bound on the positions a prompt takes: its text tokens (a video's patches take
        # fewer positions than tokens under M-RoPE: 32 frames at 448² are 4246 tokens and 165
        # positions), so no call that fits is refused
        longest = max((int((r.input_ids != video).sum()) for r in requests), default=0)
        if prefix is not None:
            if context is not None and longest + len(prefix) + 1 > context:
                raise InvalidRequestError(
                    f"a prompt of {longest} text tokens, a prefix of {len(prefix)} and the "
                    f"token scored after it exceed the model's context of {context} positions; "
                    "shorten the prompt (its instruction)"
                )
            return
        if context is not None and longest + max_new_tokens > context:
            room = context - longest
            fix = (
                f"give max_new_tokens <= {room}"
                if room > 0
                else "the prompt's text alone fills it: shorten it"
            )
            raise InvalidRequestError(
                f"a prompt of {longest} text tokens and max_new_tokens={max_new_tokens} exceed "
                f"the model's context of {context} positions; {fix}"
            )

    def check_token_ids(self, ids: Sequence[int], what: str) -> None:
        """Raise :class:`InvalidRequestError` unless every id is inside the vocabulary."""
        vocab = self.model.config.text_config.vocab_size
        bad = [i for i in ids if not 0 <= i < vocab]
        if bad:
            raise InvalidRequestError(
                f"{what} holds ids outside the vocabulary [0, {vocab}): {bad[:5]}"
            )

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


def _video_runs(is_video) -> list[tuple[int, int]]:
    """``[start, end)`` of each run of video tokens in a 1-D boolean mask (one run per video)."""
    runs, start = [], 0
    for key, group in itertools.groupby(is_video.tolist()):
        size = sum(1 for _ in group)
        if key:
            runs.append((start, start + size))
        start += size
    return runs


def _video_spans(is_video, grid, segmented: bool) -> list[tuple[int, int]] | None:
    """``[start, end)`` of each video's tokens in a 1-D boolean mask, from its first run to its
    last: one run a video, or (``segmented``, Qwen3-VL) one run per temporal patch of its grid
    row, the timestamps and segment marks between them included. ``None`` where the runs do not
    make the grid's videos."""
    runs = _video_runs(is_video)
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


def _shape(value) -> str:
    shape = getattr(value, "shape", None)
    return f"{type(value).__name__} of shape {tuple(shape)}" if shape is not None else repr(value)
