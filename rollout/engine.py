"""The generation engine interface shared by GRPO training and reward serving.

Engines know token ids and tensors, not tasks or prompts: a :class:`Request` is one encoded
sequence with its video inputs. The same engine produces training rollouts and in-env rewards, so
what is measured offline is what RL sees online.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rollout.checks import is_int, is_number

# Below this, logits / temperature overflow float32 and sampling fails (torch.multinomial).
MIN_TEMPERATURE = 1e-5


@dataclass(frozen=True)
class Request:
    """One encoded prompt.

    Attributes:
        input_ids: int64 ``[L]``.
        mm_token_type_ids: int ``[L]``, 2 on video tokens, else 0.
        pixel_values_videos: float ``[N, D]`` flat patches of all the prompt's videos, or ``None``.
        video_grid_thw: int64 ``[V, 3]``, one row per video, or ``None``.
        videos: the uint8 ``[T, H, W, 3]`` frames each video was patchified from, for engines that
            run the model's own video processor (vLLM); ``None`` where not kept.
    """

    input_ids: Any
    mm_token_type_ids: Any
    pixel_values_videos: Any = None
    video_grid_thw: Any = None
    videos: tuple | None = None


@dataclass(frozen=True)
class SamplingParams:
    """How to sample.

    Attributes:
        n: completions per request.
        max_new_tokens: generation budget per completion.
        temperature: 0 means greedy.
        top_p: nucleus sampling mass.
        seed: seeds the sampling, so the same call gives the same completions.
    """

    n: int = 1
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not is_int(self.n) or self.n < 1:
            raise ValueError(f"n={self.n!r} must be an integer >= 1 (completions per request)")
        if not is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens!r} must be an integer >= 1")
        if not is_number(self.temperature) or self.temperature < 0:
            raise ValueError(
                f"temperature={self.temperature!r} must be a number >= 0 (0 is greedy)"
            )
        if 0 < self.temperature < MIN_TEMPERATURE:
            raise ValueError(
                f"temperature={self.temperature!r} is too small to sample with (below "
                f"{MIN_TEMPERATURE:g} the sampling probabilities overflow); use 0 for greedy"
            )
        if not is_number(self.top_p) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p!r} must be a number in (0, 1]")
        if self.seed is not None and (not is_int(self.seed) or not 0 <= self.seed < 2**63):
            raise ValueError(f"seed={self.seed!r} must be None or an integer in [0, 2**63)")
        # Plain Python numbers from here: numpy's do not serialise to JSON (rollout.wire).
        plain = {"n": int, "max_new_tokens": int, "temperature": float, "top_p": float}
        if self.seed is not None:
            plain["seed"] = int
        for name, kind in plain.items():
            object.__setattr__(self, name, kind(getattr(self, name)))


class EngineError(RuntimeError):
    """An engine could not serve a call (base of the engine errors below)."""


class InvalidRequestError(EngineError, ValueError):
    """A request is malformed for this model (wrong dtype or shape, ids out of the vocabulary,
    video tokens that do not match the video grid, ...). Nothing was run."""


class ServerUnavailableError(EngineError, ConnectionError):
    """A remote engine's server did not answer within the bounded retries."""


class Engine(abc.ABC):
    """Generates completions and scores candidate answers for batches of requests."""

    @abc.abstractmethod
    def generate(
        self, requests: Sequence[Request], params: SamplingParams
    ) -> list[list[list[int]]]:
        """``params.n`` completions (new token ids, without padding or EOS) per request."""

    @abc.abstractmethod
    def score(
        self, requests: Sequence[Request], candidates: Sequence[int], prefix: Sequence[int] = ()
    ) -> Any:
        """Next-token probabilities of ``candidates`` after each request followed by ``prefix``
        (e.g. ``<answer>``), renormalised over the candidates: float
        ``[len(requests), len(candidates)]``. One forward pass, no generation."""
