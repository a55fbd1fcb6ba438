"""The checks a Qwen-VL engine makes of a request before it runs (:class:`RequestChecks`): ids in
the vocabulary, one video token per merged patch, one run of them per video (or, for Qwen3-VL,
per temporal patch), patches of the tower's width, finite pixels, a prompt that fits the context.
A request that fails one is refused as malformed (an :class:`InvalidRequestError`, a 400 from the
server) before anything runs: the model would fail the whole batch, or answer from garbage."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

from rollout.checkpoint import SEGMENTED_MODEL_TYPES
from rollout.engine import InvalidRequestError, Request

MAX_GRID = 2**15  # patches along one axis of a video grid: far above any real video's


class RequestChecks:
    """The request checks of an engine that holds a transformers Qwen-VL ``model`` (its config
    and dtype) and ``torch`` (:class:`rollout.hf.HFEngine`)."""

    model: object
    torch: object

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
        runs = [end - start for start, end in video_runs(ids == config.video_token_id)]
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


def video_runs(is_video) -> list[tuple[int, int]]:
    """``[start, end)`` of each run of video tokens in a 1-D boolean mask (one run per video)."""
    runs, start = [], 0
    for key, group in itertools.groupby(is_video.tolist()):
        size = sum(1 for _ in group)
        if key:
            runs.append((start, start + size))
        start += size
    return runs


def _shape(value) -> str:
    shape = getattr(value, "shape", None)
    return f"{type(value).__name__} of shape {tuple(shape)}" if shape is not None else repr(value)
