"""Video-embedding cache: vision-tower outputs keyed by the video's content.

Queries share videos: the initial frame of an episode is in every anchored query, and GRPO draws G
completions of one prompt (transformers' ``generate`` repeats the video for each). The tower sees
each video on its own (attention never crosses videos), so its output for a video depends on that
video alone and can be reused exactly. The cache wraps ``get_video_features`` of a Qwen-VL model
instance: known videos are looked up, the rest go through the tower in one call. Qwen3-VL's
deepstack features (the tower's intermediate layers, added inside the language model) are kept
beside each embedding.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

from rollout.checks import is_int, is_number


class VideoEmbeddingCache:
    """An LRU map from (video patches, grid) to the tower's merged embeddings.

    Args:
        max_videos: how many videos' embeddings to keep.
        max_mb: how many megabytes (2**20 bytes) of embeddings to keep, where the model holds
            them (a GPU's memory for a model there); ``None``: no limit but ``max_videos``. A
            7B model's video embeddings take about 2 MB each (256 tokens of 3584 bfloat16
            values), so 4096 videos alone could hold 7 GB of a GPU.

    Example:
        >>> cache = VideoEmbeddingCache()
        >>> cache.attach(model)  # a Qwen-VL *ForConditionalGeneration  # doctest: +SKIP
    """

    def __init__(self, max_videos: int = 4096, max_mb: float | None = 1024.0) -> None:
        if not is_int(max_videos) or max_videos < 1:
            raise ValueError(f"max_videos={max_videos!r} must be an integer >= 1")
        if max_mb is not None and (not is_number(max_mb) or max_mb <= 0):
            raise ValueError(f"max_mb={max_mb!r} must be a number of megabytes > 0, or None")
        self.max_videos = int(max_videos)
        self.max_bytes = None if max_mb is None else int(float(max_mb) * 2**20)
        self._store: OrderedDict[bytes, Any] = OrderedDict()
        self._sizes: dict[bytes, int] = {}
        self.nbytes = 0  # of the embeddings kept
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    @staticmethod
    def key(patches, grid) -> bytes:
        """Content key of one video: its grid and a digest of its patch values (their bytes, so
        bfloat16 patches, which numpy cannot hold, hash too)."""
        import torch

        raw = patches.detach().cpu().contiguous().flatten()
        digest = hashlib.blake2b(raw.view(torch.uint8).numpy().tobytes(), digest_size=16)
        digest.update(str(tuple(int(x) for x in grid)).encode())
        return digest.digest()

    def attach(self, model) -> None:
        """Route ``model``'s video features through this cache (idempotent per model).

        The patch holds the model weakly: the model's own bound method in its closure, stored
        on the model, was a reference cycle, so a critic closed and dropped (an env re-made in
        a notebook) kept its weights, on a GPU too, until Python's cycle collector ran."""
        import weakref

        inner = getattr(model, "model", model)
        original = inner.get_video_features
        if getattr(original, "_viscritic_cache", None) is self:
            return
        call = original
        if getattr(original, "__self__", None) is inner:  # the model's own method, bound weakly
            owner, method = weakref.ref(inner), original.__func__

            def call(*args, **kwargs):
                if (target := owner()) is None:  # a deep copy of the model calls the patch
                    raise RuntimeError(
                        "this model's video features go through the cache of a model since "
                        "freed (a copy of a patched model shares its patch); copy the model "
                        "before attaching a cache, and attach one to each"
                    )
                return method(target, *args, **kwargs)

        def cached_video_features(pixel_values_videos, video_grid_thw=None, **kwargs):
            return self._features(call, pixel_values_videos, video_grid_thw, **kwargs)

        cached_video_features._viscritic_cache = self
        inner.get_video_features = cached_video_features

    def _features(self, original, pixel_values_videos, video_grid_thw, **kwargs):
        import torch

        chunks = torch.split(pixel_values_videos, video_grid_thw.prod(-1).tolist())
        keys = [self.key(c, g) for c, g in zip(chunks, video_grid_thw, strict=True)]
        missing = list(dict.fromkeys(k for k in keys if k not in self._store))  # unique, in order
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        if missing:
            rows = [keys.index(k) for k in missing]
            out = original(torch.cat([chunks[i] for i in rows]), video_grid_thw[rows], **kwargs)
            # Qwen3-VL's tower also gives deepstack features (one split per layer it feeds),
            # which the language model adds at the video's positions: kept with the embedding
            deepstack = getattr(out, "deepstack_features", None)
            for i, (k, embedding) in enumerate(zip(missing, out.pooler_output, strict=True)):
                layers = None if deepstack is None else tuple(f[i].detach() for f in deepstack)
                self._store[k] = (embedding.detach(), layers)
                self._sizes[k] = sum(t.nelement() * t.element_size()
                                     for t in (embedding, *(layers or ())))  # fmt: skip
                self.nbytes += self._sizes[k]
        entries = []
        for k in keys:
            self._store.move_to_end(k)
            entries.append(self._store[k])
        # the least recently used go first; this call's own entries are already in hand
        while len(self._store) > self.max_videos or (
            self.max_bytes is not None and self.nbytes > self.max_bytes and self._store
        ):
            gone, _ = self._store.popitem(last=False)
            self.nbytes -= self._sizes.pop(gone)
        return _output(entries)

    def clear(self) -> None:
        """Forget every stored embedding (after the model's weights change)."""
        self._store.clear()
        self._sizes.clear()
        self.nbytes = 0


def _output(entries: list[tuple[Any, tuple | None]]):
    """The tower's output for cached ``(embedding, deepstack layers)`` entries, shaped as the
    model's ``get_video_features`` returns it: Qwen2.5-VL's pooled embeddings per video, or
    Qwen3-VL's with ``deepstack_features`` (per layer, a tuple over the videos)."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    pooled = tuple(embedding for embedding, _ in entries)
    if entries[0][1] is None:
        return BaseModelOutputWithPooling(pooler_output=pooled)
    from transformers.models.qwen3_vl.modeling_qwen3_vl import (
        BaseModelOutputWithDeepstackFeatures,
    )

    layers = [tuple(layers[j] for _, layers in entries) for j in range(len(entries[0][1]))]
    return BaseModelOutputWithDeepstackFeatures(pooler_output=pooled, deepstack_features=layers)
