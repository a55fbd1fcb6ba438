"""The transformers engine: batched, left-padded generation with the KV cache, on CPU or GPU."""

from __future__ import annotations

from collections.abc import Sequence

from rollout.engine import Engine, Request, SamplingParams
from rollout.imports import require_package


class HFEngine(Engine):
    """Runs a ``*ForConditionalGeneration`` Qwen-VL model with ``model.generate``.

    Args:
        model: the model (eval mode).
        pad_token_id: id used for left padding.
        eos_token_id: id that ends a completion.
        cache: a video-embedding cache to route the vision tower through, or ``None``. Clear it
            when the weights change (training).
    """

    def __init__(self, model, pad_token_id: int, eos_token_id: int, cache=None) -> None:
        self.torch = require_package("torch", "vlm", "the transformers engine")
        self.model = model
        self.pad_token_id = pad_token_id
        self.eos_token_id = eos_token_id
        self.cache = cache
        if cache is not None:
            cache.attach(model)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def _batch(self, requests: Sequence[Request], suffix: Sequence[int] = ()) -> dict:
        """Left-pad ids, masks and token types; concatenate video tensors in request order."""
        torch = self.torch
        suffix_t = torch.tensor(list(suffix), dtype=torch.int64)
        ids = [torch.cat([r.input_ids.to(torch.int64), suffix_t]) for r in requests]
        types = [torch.cat([r.mm_token_type_ids.to(torch.int32), torch.zeros(len(suffix), dtype=torch.int32)])
                 for r in requests]  # fmt: skip
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
            batch["pixel_values_videos"] = torch.cat([r.pixel_values_videos for r in videos])
            batch["video_grid_thw"] = torch.cat([r.video_grid_thw for r in videos])
        return {k: v.to(self.device) for k, v in batch.items()}

    def generate(
        self, requests: Sequence[Request], params: SamplingParams
    ) -> list[list[list[int]]]:
        torch = self.torch
        if not requests:
            return []
        batch = self._batch(requests)
        greedy = params.temperature == 0
        sampling = (
            {} if greedy else {"temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
        )
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            if params.seed is not None:
                torch.manual_seed(params.seed)
            out = self.model.generate(
                **batch,
                do_sample=not greedy,
                num_return_sequences=params.n,
                max_new_tokens=params.max_new_tokens,
                pad_token_id=self.pad_token_id,
                eos_token_id=self.eos_token_id,
                **sampling,
            )
        new = out[:, batch["input_ids"].shape[1] :].tolist()
        completions = []
        for i in range(len(requests)):
            group = []
            for seq in new[i * params.n : (i + 1) * params.n]:
                if self.eos_token_id in seq:
                    seq = seq[: seq.index(self.eos_token_id)]
                group.append([t for t in seq if t != self.pad_token_id])
            completions.append(group)
        return completions

    def score(
        self, requests: Sequence[Request], candidates: Sequence[int], prefix: Sequence[int] = ()
    ):
        """See :meth:`Engine.score`; ``prefix`` tokens (e.g. ``<answer>``) are appended first."""
        torch = self.torch
        batch = self._batch(requests, prefix)
        with torch.inference_mode():
            logits = self.model(**batch, use_cache=False).logits[:, -1, :]  # [B, V]
        chosen = logits[:, list(candidates)].float()  # [B, K]
        return torch.softmax(chosen, dim=-1).cpu()
