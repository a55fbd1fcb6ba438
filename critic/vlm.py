"""``VLMCritic``: a Qwen-VL model as a critic, over a rollout engine.

Two ways to read progress:

- ``reason``: generate ``<think>…</think><answer>…</answer>`` (``samples`` of them), parse each
  strictly, and report the mean of the readable answers with their spread;
- ``score``: one forward pass, no chain of thought: after ``<think></think><answer>`` read the
  probabilities of the digits 0–9 and report the expected digit / 9 (fast dense rewards).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from critic import prompts
from critic.base import (
    ACHIEVED,
    FAILURE_TYPES,
    Critic,
    CriticError,
    FailureQuery,
    FailureVerdict,
    ParseStatus,
    ProgressEstimate,
    ProgressQuery,
)
from critic.models import CLIP_FRAMES_KEY, TASK_CLIP_FRAMES_KEY, device_problem
from critic.parse import parse_progress, parse_verdict
from critic.vision import VisionSpec
from rollout.checks import is_int, is_number

MODES = ("score", "reason")


def is_server_url(model: str) -> bool:
    """Whether ``model`` names a critic server rather than a preset or checkpoint."""
    return isinstance(model, str) and model.startswith(("http://", "https://"))


PROMPTS = ("anchored", "stepwise")


@dataclass
class VLMCritic(Critic):
    """A Qwen2.5-VL / Qwen3-VL critic.

    Args:
        model: a preset name (``tiny``, ``small``), a checkpoint path / hub id, or the URL of a
            critic server (``http://host:port``, see ``python -m rollout.serve``): prompts are then
            built here and the server batches the model calls of many workers.
        mode: ``score`` (one pass, expected digit) or ``reason`` (chain of thought, sampled).
        prompt: ``anchored`` (PRIMO R1) or ``stepwise`` (SOLE-R1).
        samples: completions per query in ``reason`` mode; their spread is reported.
        temperature: sampling temperature in ``reason`` mode: a finite number >= 0 (0: greedy).
        max_new_tokens: generation budget in ``reason`` mode and of failure verdicts (>= 1).
        seed: seeds sampling (an integer in ``[0, 2**63)``).
        device: ``cpu``, ``cuda`` or ``cuda:<index>``, one this machine has (a server URL
            ignores it: the server's own ``--device`` holds the model).
        cache: reuse vision-tower outputs of videos seen before (exact; see rollout.cache). A
            server keeps its own cache (``--no-cache`` turns it off there).
        failure_types: labels the failure-detection prompt offers.
    """

    model: str = "tiny"
    mode: str = "score"
    prompt: str = "anchored"
    samples: int = 1
    temperature: float = 0.7
    max_new_tokens: int = 96
    seed: int = 0
    device: str = "cpu"
    cache: bool = True
    failure_types: tuple[str, ...] = FAILURE_TYPES
    needs_frames: bool = True
    _engine: Any = field(default=None, init=False, repr=False)
    _clip_frames: int | None = field(default=None, init=False, repr=False)
    _task_clip_frames: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise CriticError(f"mode={self.mode!r} is not a critic mode; pick one of {list(MODES)}")
        if self.prompt not in PROMPTS:
            raise CriticError(
                f"prompt={self.prompt!r} is not a prompt format; pick one of {list(PROMPTS)}"
            )
        if not is_int(self.samples) or self.samples < 1:
            raise CriticError(f"samples={self.samples!r} must be an integer >= 1")
        temperature = self.temperature
        if not is_number(temperature) or temperature < 0:
            raise CriticError(
                f"temperature={temperature!r} must be a finite number >= 0 (0: greedy answers); "
                "e.g. temperature=0.7"
            )
        if not is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise CriticError(
                f"max_new_tokens={self.max_new_tokens!r} must be an integer >= 1 (the generation "
                "budget of a reason-mode answer or a failure verdict), e.g. max_new_tokens=96"
            )
        if not is_int(self.seed) or not 0 <= self.seed < 2**63:
            raise CriticError(f"seed={self.seed!r} must be an integer in [0, 2**63)")
        # numpy integers are integers too; the engine and the config record plain ints
        self.samples, self.max_new_tokens, self.seed = (
            int(self.samples),
            int(self.max_new_tokens),
            int(self.seed),
        )
        if is_server_url(self.model):
            self._connect(self.model)  # the server's device holds the model; ours is unused
        else:
            if (problem := device_problem(self.device)) is not None:
                raise CriticError(problem)
            self._load_local()
        self._keep_videos = bool(getattr(self._engine, "needs_videos", False))
        self._digits = [self.tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)]
        self._answer_prefix = self.tokenizer(
            "<think></think><answer>", add_special_tokens=False
        ).input_ids

    def _load_local(self) -> None:
        from critic.models import load_model
        from rollout.cache import VideoEmbeddingCache
        from rollout.hf import HFEngine

        self._model, self.tokenizer = load_model(self.model, device=self.device)
        self._engine = HFEngine(
            self._model,
            self.tokenizer.pad_token_id,
            self.tokenizer.eos_token_id,
            cache=VideoEmbeddingCache() if self.cache else None,
        )
        self.vision = VisionSpec.from_config(self._model.config.vision_config)
        self._clip_frames = getattr(self._model.config, CLIP_FRAMES_KEY, None)
        self._task_clip_frames = dict(getattr(self._model.config, TASK_CLIP_FRAMES_KEY, None) or {})

    def _connect(self, url: str) -> None:
        from critic.models import load_served_tokenizer
        from rollout.remote import RemoteEngine

        self._model = None
        self._engine = RemoteEngine(url)
        info = self._engine.model_info()
        if not info.get("tokenizer") or "vision_config" not in info.get("config", {}):
            raise CriticError(
                f"the server at {url} does not describe its model (no tokenizer or vision config); "
                "start it with `python -m rollout.serve --model PATH`"
            )
        self.tokenizer = load_served_tokenizer(info["tokenizer"])
        self.vision = VisionSpec.from_config(info["config"]["vision_config"])
        self._clip_frames = info["config"].get(CLIP_FRAMES_KEY)
        self._task_clip_frames = dict(info["config"].get(TASK_CLIP_FRAMES_KEY) or {})

    @property
    def name(self) -> str:
        return f"vlm:{self.model}:{self.mode}"

    @property
    def clip_frames(self) -> int | None:
        return self._clip_frames

    def clip_frames_for(self, task: str | None) -> int | None:
        return self._task_clip_frames.get(task, self._clip_frames)

    @property
    def engine(self):
        """The rollout engine (shared with training)."""
        return self._engine

    def _prompt(self, query: ProgressQuery, scale: str) -> prompts.Prompt:
        if query.frames is None or len(query.frames) == 0:
            raise CriticError(
                f"{self.name} needs frames in every query; build queries through "
                "envs.VisCriticReward (which renders them) or set ProgressQuery.frames"
            )
        frames = np.asarray(query.frames)
        if self.prompt == "anchored":
            initial = frames[0] if query.initial_frame is None else query.initial_frame
            current = frames[-1] if query.current_frame is None else query.current_frame
            return prompts.anchored_progress(query.instruction, initial, frames, current, scale)
        return prompts.stepwise_progress(query.instruction, frames, query.previous_progress, scale)

    def _request(self, prompt: prompts.Prompt):
        from rollout.engine import Request

        return Request(
            **prompts.encode(prompt, self.tokenizer, self.vision, keep_videos=self._keep_videos)
        )

    def digit_probs(self, prompts_: Sequence[prompts.Prompt]) -> np.ndarray:
        """The one-pass readout of digit-answer prompts: ``[B, 10]``, the probability of each
        answer digit ``d`` (progress ``d / 9``) right after ``<answer>``. Training distils these
        into another critic (``train_critic.py teacher=``)."""
        requests = [self._request(p) for p in prompts_]
        return np.asarray(self._engine.score(requests, self._digits, prefix=self._answer_prefix))

    def estimate_progress(self, queries: Sequence[ProgressQuery]) -> list[ProgressEstimate]:
        if not queries:
            return []
        if self.mode == "score":
            probs = self.digit_probs([self._prompt(q, "digit") for q in queries])
            levels = np.arange(10) / 9.0  # digit d means progress d / 9
            expected = probs @ levels  # [B]
            spread = np.sqrt((probs * (levels[None, :] - expected[:, None]) ** 2).sum(axis=1))
            return [  # the top digit (progress 1) is the task achieved
                ProgressEstimate(float(e), spread=float(s), achieved=float(a))
                for e, s, a in zip(expected, spread, probs[:, -1], strict=True)
            ]
        from rollout.engine import SamplingParams

        requests = [self._request(self._prompt(q, "percent")) for q in queries]
        params = SamplingParams(
            n=self.samples,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            seed=self.seed,
        )
        estimates = []
        for group in self._engine.generate(requests, params):
            texts = [self.tokenizer.decode(ids, skip_special_tokens=False) for ids in group]
            parsed = [parse_progress(t, "percent") for t in texts]
            values = [p.value for p in parsed if p.status == ParseStatus.OK]
            if values:
                estimates.append(
                    ProgressEstimate(
                        float(np.mean(values)),
                        reasoning=texts[0],
                        spread=float(np.std(values)) if len(group) > 1 else None,
                        achieved=float(np.mean([v >= ACHIEVED for v in values])),
                    )
                )
            else:
                estimates.append(
                    ProgressEstimate(None, reasoning=texts[0], status=parsed[0].status)
                )
        return estimates

    def detect_failure(self, queries: Sequence[FailureQuery]) -> list[FailureVerdict]:
        from rollout.engine import SamplingParams

        if not queries:
            return []
        requests = []
        for q in queries:
            if q.frames is None or len(q.frames) == 0:
                raise CriticError(f"{self.name} needs the episode's frames in every failure query")
            requests.append(
                self._request(
                    prompts.failure_detection(q.instruction, q.frames, self.failure_types)
                )
            )
        params = SamplingParams(max_new_tokens=self.max_new_tokens, temperature=0.0, seed=self.seed)
        verdicts = []
        for request, group in zip(requests, self._engine.generate(requests, params), strict=True):
            text = self.tokenizer.decode(group[0], skip_special_tokens=False)
            parsed = parse_verdict(text, self.failure_types)
            success = parsed.value if parsed.status == ParseStatus.OK else None
            verdicts.append(
                FailureVerdict(
                    success=success,
                    failure_type=parsed.label,
                    confidence=self._verdict_confidence(request, list(group[0]), success),
                    reasoning=text,
                    status=parsed.status,
                )
            )
        return verdicts

    def _verdict_confidence(self, request, generated: list[int], success: bool | None) -> float:
        """The probability of the given verdict at the answer's first token: the model's
        ``success`` against ``failure`` after its own chain of thought, renormalised over the two
        (the failure-detection AUROC ranks episodes by it). 1.0 when there is no verdict."""
        answer = self.tokenizer.convert_tokens_to_ids("<answer>")
        if success is None or answer not in generated:
            return 1.0
        first = [
            self.tokenizer(word, add_special_tokens=False).input_ids[0]
            for word in ("success", "failure")
        ]
        prefix = generated[: generated.index(answer) + 1]
        p_success, p_failure = np.asarray(self._engine.score([request], first, prefix=prefix))[0]
        return float(p_success if success else p_failure)
