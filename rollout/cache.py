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
        """Route ``model``'s video features through this cache, in place of any cache attached
        before (idempotent per model).

        The patch holds the model weakly (a strong reference, stored on the model, was a
        reference cycle that kept a dropped critic's weights until Python's cycle collector
        ran), replaces an earlier cache's patch rather than wrapping it (wrapped, a fresh cache
        still answered from the earlier one's entries), and a deep copy of the model gets its
        own tower back, uncached (the copy had run the original's weights through the patch)."""
        inner = getattr(model, "model", model)
        current = inner.get_video_features
        if isinstance(current, _CachedVideoFeatures):
            if current.cache is self and current.owner() is inner:
                return
            inner.get_video_features = _CachedVideoFeatures(
                self, inner, current.method, current.plain
            )
        elif getattr(current, "__self__", None) is inner:  # the model's own method
            inner.get_video_features = _CachedVideoFeatures(self, inner, current.__func__)
        else:  # another wrapper of it: called as it is
            inner.get_video_features = _CachedVideoFeatures(self, inner, None, current)

    @staticmethod
    def detach(model) -> None:
        """Take any cache's patch off ``model``: its video features are computed afresh."""
        inner = getattr(model, "model", model)
        current = inner.__dict__.get("get_video_features")
        if isinstance(current, _CachedVideoFeatures):
            if current.plain is None:
                del inner.get_video_features
            else:
                inner.get_video_features = current.plain

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
                # copies of their own: views of the call's one output tensor would each hold
                # the whole batch's memory, past what max_mb counts
                layers = (
                    None if deepstack is None else tuple(f[i].detach().clone() for f in deepstack)
                )
                self._store[k] = (embedding.detach().clone(), layers)
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


class _CachedVideoFeatures:
    """The ``get_video_features`` :meth:`VideoEmbeddingCache.attach` puts on a model: ``cache``
    (``None``: none, a copy's) in front of the model's own ``method`` (its class's function,
    called on the model, held weakly) or of ``plain`` (another wrapper, called as it is)."""

    def __init__(self, cache, owner, method=None, plain=None) -> None:
        import weakref

        self.cache, self.method, self.plain = cache, method, plain
        self.owner = weakref.ref(owner)

    def _call(self, *args, **kwargs):
        if self.plain is not None:
            return self.plain(*args, **kwargs)
        if (target := self.owner()) is None:
            raise RuntimeError(
                "this model's video features go through the cache of a model since freed; "
                "attach a cache to this model itself"
            )
        return self.method(target, *args, **kwargs)

    def __call__(self, pixel_values_videos, video_grid_thw=None, **kwargs):
        if self.cache is None:
            return self._call(pixel_values_videos, video_grid_thw, **kwargs)
        return self.cache._features(self._call, pixel_values_videos, video_grid_thw, **kwargs)

    def __deepcopy__(self, memo):
        # copied with its model: the copy's own tower, with no cache (the entries are the
        # original's, and the copy's weights may change on their own)
        copy = memo.get(id(self.owner()))
        if copy is None:  # copied alone, not with its model
            return self
        return _CachedVideoFeatures(None, copy, self.method, self.plain)


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
