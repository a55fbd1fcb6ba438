"""``VLMCritic``: a Qwen-VL model as a critic, over a rollout engine.

Two ways to read progress:

- ``reason``: generate ``<think>…</think><answer>…</answer>`` (``samples`` of them), parse each
  strictly, and report the mean of the readable answers with their spread;
- ``score``: one forward pass, no chain of thought: after ``<think></think><answer>`` read the
  probabilities of the digits 0–9 and report the expected digit / 9 (fast dense rewards).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import MISSING, dataclass, field, fields
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
    check_queries,
)
from critic.frames import checked_frames, no_frames
from critic.models import (
    CLIP_FRAMES_KEY,
    FAILURE_TYPES_KEY,
    PRESETS,
    TASK_CLIP_FRAMES_KEY,
    TASK_VIEWS_KEY,
    TRAINED_TASKS_KEY,
    device_problem,
    is_preset,
    task_views,
    unrecorded_pixel_budget,
)
from critic.parse import answer_start, parse_progress, parse_verdict
from critic.prompts import checked_failure_types
from critic.vision import ProcessorConfigError, VisionSpec
from rollout.checkpoint import processor_config
from rollout.checks import is_int, is_number
from rollout.engine import MIN_TEMPERATURE, Request
from rollout.warn import warn_user

MODES = ("score", "reason")


def is_server_url(model: str) -> bool:
    """Whether ``model`` names a critic server rather than a preset or checkpoint."""
    return isinstance(model, str) and model.strip().lower().startswith(("http://", "https://"))


PROMPTS = ("anchored", "stepwise")

# Below this a temperature divides logits into inf and the sampling probabilities into nan.


@dataclass
class VLMCritic(Critic):
    """A Qwen2.5-VL or Qwen3-VL critic (the video input each takes: ``critic.vision``).

    Args:
        model: a preset name (``tiny``, ``small``, ``tiny-qwen3vl``, ``small-qwen3vl``), a
            shipped critic (``viscritic-small``), a checkpoint folder (a string or
            ``os.PathLike``; a hub model is downloaded to a folder first: nothing downloads at
            run time), or the URL of a critic server (``http://host:port``, see ``python -m
            rollout.serve``): prompts are then built here and the server batches the model calls
            of many workers.
        mode: ``score`` (one pass, expected digit) or ``reason`` (chain of thought, sampled).
        prompt: ``anchored`` (PRIMO R1) or ``stepwise`` (SOLE-R1).
        samples: completions per query in ``reason`` mode; the spread of the readable ones is
            reported (when 2 or more are readable and the answers are sampled).
        temperature: sampling temperature in ``reason`` mode: 0 (greedy) or a finite number
            >= 1e-5 (smaller ones overflow the sampling probabilities and are refused).
        max_new_tokens: generation budget in ``reason`` mode and of failure verdicts (>= 1).
        seed: seeds sampling (an integer in ``[0, 2**63)``).
        device: ``cpu``, ``cuda`` or ``cuda:<index>``, one this machine has (a server URL
            ignores it: the server's own ``--device`` holds the model).
        cache: reuse vision-tower outputs of videos seen before (exact; see rollout.cache). A
            server keeps its own cache (``--no-cache`` turns it off there).
        max_batch: most queries per model call (an integer >= 1): a longer list is read in calls
            of this size, so relabelling a whole replay buffer in one call does not need the
            memory of one batch of thousands of video prompts. Score readings and greedy answers
            do not depend on it (up to float rounding); sampled answers do (a call's rows share
            one generator, seeded seed + k in the critic's k-th sampled call).
        failure_types: labels the failure-detection prompt offers: a list or tuple of one or
            more non-empty strings (a bare string is refused, not split into letters), kept as a
            tuple.
        timeout_s: a critic server's time limit for one call's answer, in seconds (``None``: the
            client's 300 s); give one longer than the server's ``--timeout-s`` when that is
            raised. Only for a server URL: a local model has no time limit, and refuses one.
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
    max_batch: int = 64
    failure_types: tuple[str, ...] = FAILURE_TYPES
    # keyword-only, as Critic's: the first positional argument is model
    needs_frames: bool = field(default=True, kw_only=True)
    timeout_s: float | None = None
    _engine: Any = field(default=None, init=False, repr=False)
    _clip_frames: int | None = field(default=None, init=False, repr=False)
    _task_clip_frames: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _default_failure_types: bool = field(default=True, init=False, repr=False)
    # the tasks its checkpoint records it was trained on; None: not recorded (any task)
    trained_tasks: tuple[str, ...] | None = field(default=None, init=False, repr=False)
    # the view each of those tasks was recorded at ({task: {"image_size", "camera"}}); where a
    # task has none recorded, any view
    trained_views: dict[str, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def check_options(cls, **options: Any) -> None:
        """Refuse, with the :class:`CriticError` the critic would raise, options it cannot run
        with, without loading or connecting to a model: a script checks its critic before other
        work starts (``zero_shot_rl.py`` trains the other conditions first)."""
        names = {f.name for f in fields(cls) if f.init}
        if unknown := sorted(set(options) - names):
            raise CriticError(
                f"{', '.join(unknown)}: not an option of the VLM critic; its options are "
                f"{sorted(names)}"
            )
        critic = cls.__new__(cls)
        for f in fields(cls):
            default = f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]
            setattr(critic, f.name, options.get(f.name, default))
        critic._check_options()
        if not is_server_url(os.fspath(critic.model)) and (
            problem := device_problem(critic.device)
        ):
            raise CriticError(problem)

    def __post_init__(self) -> None:
        self._check_options()
        self.model = os.fspath(self.model)
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

    def __reduce__(self):
        """A pickled critic (an env holding it handed to ``SubprocVecEnv``, a spec sent to a
        worker) is built again from its options where it is loaded: its model is read there
        again from the preset, checkpoint folder (by its absolute path) or server it names, as
        ``gym.make`` of a critic's name builds it. A model and its engine do not pickle (a raw
        ``TypeError`` on a weakref before). ``copy.deepcopy`` still shares the critic
        (:meth:`Critic.__deepcopy__`); sampled calls are seeded afresh in the copy."""
        options = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        if not is_server_url(self.model) and os.path.isdir(self.model):
            options["model"] = os.path.abspath(self.model)  # a worker may start elsewhere
        if self._default_failure_types:  # the checkpoint's own, read again
            options["failure_types"] = FAILURE_TYPES
        return _built_again, (type(self), options)

    def _check_options(self) -> None:
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
        if 0 < temperature < MIN_TEMPERATURE:
            raise CriticError(
                f"temperature={temperature!r} is too small to sample with (below "
                f"{MIN_TEMPERATURE:g} the sampling probabilities overflow); use temperature=0 for "
                "greedy answers, or one >= 1e-05, e.g. temperature=0.7"
            )
        if not is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise CriticError(
                f"max_new_tokens={self.max_new_tokens!r} must be an integer >= 1 (the generation "
                "budget of a reason-mode answer or a failure verdict), e.g. max_new_tokens=96"
            )
        if not is_int(self.seed) or not 0 <= self.seed < 2**63:
            raise CriticError(f"seed={self.seed!r} must be an integer in [0, 2**63)")
        if not is_int(self.max_batch) or self.max_batch < 1:
            raise CriticError(
                f"max_batch={self.max_batch!r} must be an integer >= 1 (queries per model call), "
                "e.g. max_batch=64"
            )
        for key in ("cache", "needs_frames"):  # "no" was stored, and read as true
            if not isinstance(getattr(self, key), bool | np.bool_):
                raise CriticError(f"{key}={getattr(self, key)!r} must be True or False")
            setattr(self, key, bool(getattr(self, key)))
        self._sampled_calls = 0  # sampled model calls made: the next one's seed is seed + this
        # numpy integers are integers too; the engine and the config record plain ints
        self.samples, self.max_new_tokens, self.seed, self.max_batch = (
            int(self.samples),
            int(self.max_new_tokens),
            int(self.seed),
            int(self.max_batch),
        )
        # left at the default (this very tuple), a checkpoint's recorded types replace it
        self._default_failure_types = self.failure_types is FAILURE_TYPES
        self.failure_types = checked_failure_types(self.failure_types)
        if not isinstance(self.model, str | os.PathLike):
            from critic.weights import SHIPPED

            raise CriticError(
                f"model={self.model!r} names no critic model; pass a preset ({sorted(PRESETS)}), "
                f"a shipped critic ({sorted(SHIPPED)}), a checkpoint folder (a str or "
                "os.PathLike), or a critic server URL ('http://host:port')"
            )
        if self.timeout_s is not None:
            if not is_number(self.timeout_s) or self.timeout_s <= 0:
                raise CriticError(
                    f"timeout_s={self.timeout_s!r} must be a number of seconds > 0 (a critic "
                    "server's time limit for one call), or None for the client's 300 s"
                )
            if not is_server_url(os.fspath(self.model)):
                raise CriticError(
                    f"timeout_s={self.timeout_s!r} is a critic server's time limit, and "
                    f"model={os.fspath(self.model)!r} runs here, with none; leave timeout_s out, "
                    "or give a server URL (http://host:port)"
                )
            self.timeout_s = float(self.timeout_s)

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
        # a checkpoint's own pixel budget, where its folder has a processor config (real Qwen
        # checkpoints); the project's presets and the checkpoints it saves have none
        processor = (
            None
            if is_preset(self.model, warn=False)
            else processor_config(self._model.name_or_path)
        )
        if processor is None and (said := unrecorded_pixel_budget(self._model.config, self.model)):
            warn_user(said)
        self.vision = _vision(self._model.config.vision_config, processor, self.model)
        self._read_training_record(lambda key: getattr(self._model.config, key, None))

    def _connect(self, url: str) -> None:
        from critic.models import load_served_tokenizer
        from rollout.remote import RemoteEngine

        self._model = None
        self._engine = (
            RemoteEngine(url)
            if self.timeout_s is None
            else RemoteEngine(url, timeout_s=self.timeout_s)
        )
        info = self._engine.model_info()
        if not info.get("tokenizer") or "vision_config" not in info.get("config", {}):
            raise CriticError(
                f"the server at {url} does not describe its model (no tokenizer or vision config); "
                "start it with `python -m rollout.serve --model PATH`"
            )
        self.tokenizer = load_served_tokenizer(info["tokenizer"])
        served = f"the checkpoint served at {url}"  # warned of here: the server said nothing
        if info.get("processor") is None and (
            said := unrecorded_pixel_budget(info["config"], served)
        ):
            warn_user(said)
        self.vision = _vision(info["config"]["vision_config"], info.get("processor"), url)
        self._read_training_record(info["config"].get)

    def _read_training_record(self, recorded: Callable[[str], Any]) -> None:
        """What the checkpoint's config records of its training (``recorded(key)``, a local or
        a served config alike): its clip lengths, the tasks and views it was trained on, and
        the failure types its prompts offered (its data's own beyond the built-in ones, taken
        where ``failure_types`` was left at the default)."""
        self._clip_frames = recorded(CLIP_FRAMES_KEY)
        self._task_clip_frames = dict(recorded(TASK_CLIP_FRAMES_KEY) or {})
        if (types := recorded(FAILURE_TYPES_KEY)) and self._default_failure_types:
            self.failure_types = checked_failure_types(list(types))
        self.trained_tasks = tuple(recorded(TRAINED_TASKS_KEY) or ()) or None
        self.trained_views = task_views(recorded(TASK_VIEWS_KEY))

    @property
    def name(self) -> str:
        return f"vlm:{self.model}:{self.mode}"

    @property
    def clip_frames(self) -> int | None:
        return self._clip_frames

    @property
    def reads_previous_progress(self) -> bool:
        return self.prompt == "stepwise"  # its prompt states the last estimate

    def clip_frames_for(self, task: str | None) -> int | None:
        return self._task_clip_frames.get(task, self._clip_frames)

    @property
    def engine(self):
        """The rollout engine (shared with training)."""
        return self._engine

    def _prompt(self, query: ProgressQuery, scale: str, index: int = 0) -> prompts.Prompt:
        if no_frames(query.frames):
            raise CriticError(
                f"{self.name} needs frames in every query; build queries through "
                "envs.VisCriticReward (which renders them) or set ProgressQuery.frames"
            )
        frames = checked_frames(query.frames, "frames", index)
        if self.prompt == "anchored":
            initial, current = frames[0], frames[-1]
            if query.initial_frame is not None:
                initial = checked_frames(query.initial_frame, "initial_frame", index)
            if query.current_frame is not None:
                current = checked_frames(query.current_frame, "current_frame", index)
            return prompts.anchored_progress(query.instruction, initial, frames, current, scale)
        return prompts.stepwise_progress(query.instruction, frames, query.previous_progress, scale)

    def _request(self, prompt: prompts.Prompt, memo: dict | None = None) -> Request:
        return Request(
            **prompts.encode(
                prompt, self.tokenizer, self.vision, keep_videos=self._keep_videos, memo=memo
            )
        )

    def digit_probs(self, prompts_: Sequence[prompts.Prompt | prompts.PackedPrompt]) -> np.ndarray:
        """The one-pass readout of digit-answer prompts: ``[B, 10]``, the probability of each
        answer digit ``d`` (progress ``d / 9``) right after ``<answer>``. Training distils these
        into another critic (``train_critic.py teacher=``)."""
        if not prompts_:
            return np.zeros((0, len(self._digits)))
        return np.concatenate(
            [
                np.asarray(self._engine.score(part, self._digits, prefix=self._answer_prefix))
                for part in self._calls(prompts_)
            ]
        )

    def _calls(self, prompts_: Sequence) -> Iterator[list]:
        """``prompts_`` (or requests already made) as model calls of at most ``max_batch``
        requests, each call's encoded when it is made: encoded all at once, their pixels (2.8 MB
        a query at 128²) came to tens of GB for the queries of 16 envs' long episodes that
        relabelling sends together, before the first forward pass."""
        for i in range(0, len(prompts_), self.max_batch):
            part = prompts_[i : i + self.max_batch]
            memo: dict = {}  # the call's shared instruction and first frame, encoded once
            yield [p if isinstance(p, Request) else self._request(p, memo) for p in part]

    def _generate(self, prompts_: Sequence, params) -> list:
        """The engine's completion groups for ``prompts_``, in calls of at most ``max_batch``."""
        return [group for _, groups in self._generate_calls(prompts_, params) for group in groups]

    def _generate_calls(self, prompts_: Sequence, params) -> Iterator[tuple[list, list]]:
        """Each call's requests and completion groups, a call at a time (:meth:`_calls`); the
        critic's k-th sampled call samples with ``seed + k``, so no two draw the same numbers (the
        reward's queries, a call each, drew the same at every step); greedy calls count none."""
        for part in self._calls(prompts_):
            seed = params.seed
            if seed is not None and params.temperature > 0:
                seed = (seed + self._sampled_calls) % 2**63
                self._sampled_calls += 1
            yield part, self._engine.generate(part, dataclasses.replace(params, seed=seed))

    def estimate_progress(self, queries: Sequence[ProgressQuery]) -> list[ProgressEstimate]:
        check_queries(queries, ProgressQuery, f"{self.name}.estimate_progress")
        if not queries:
            return []
        if self.mode == "score":
            probs = self.digit_probs([self._prompt(q, "digit", i) for i, q in enumerate(queries)])
            levels = np.arange(10) / 9.0  # digit d means progress d / 9
            # a sure 9 rounds to p9 = 1.0 in float32 beside digits still above 0: the expected
            # digit came out 1 + 1e-8, which the reward refuses (at the moment a learner succeeds)
            expected = np.clip(probs @ levels, 0.0, 1.0)  # [B]
            spread = np.sqrt((probs * (levels[None, :] - expected[:, None]) ** 2).sum(axis=1))
            return [  # the top digit (progress 1) is the task achieved
                ProgressEstimate(float(e), spread=float(s), achieved=float(a))
                for e, s, a in zip(expected, spread, probs[:, -1], strict=True)
            ]
        from rollout.engine import SamplingParams

        prompts_ = [self._prompt(q, "percent", i) for i, q in enumerate(queries)]
        params = SamplingParams(
            n=self.samples,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            seed=self.seed,
        )
        estimates = []
        for group in self._generate(prompts_, params):
            texts = [self.tokenizer.decode(ids, skip_special_tokens=False) for ids in group]
            parsed = [parse_progress(t, "percent") for t in texts]
            readable = [i for i, p in enumerate(parsed) if p.status == ParseStatus.OK]
            values = [parsed[i].value for i in readable]
            if values:
                # a spread needs two readable answers that were drawn, not copies of one greedy
                sampled = self.temperature > 0 and len(values) > 1
                estimates.append(
                    ProgressEstimate(
                        float(np.mean(values)),
                        reasoning=texts[readable[0]],  # the text of an answer that was read
                        spread=float(np.std(values)) if sampled else None,
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

        check_queries(queries, FailureQuery, f"{self.name}.detect_failure")
        if not queries:
            return []
        prompts_ = []
        for i, q in enumerate(queries):
            if no_frames(q.frames):
                raise CriticError(f"{self.name} needs the episode's frames in every failure query")
            frames = checked_frames(q.frames, "frames", i)
            prompts_.append(prompts.failure_detection(q.instruction, frames, self.failure_types))
        params = SamplingParams(max_new_tokens=self.max_new_tokens, temperature=0.0, seed=self.seed)
        verdicts = []
        # a call at a time: a call's requests (whole episodes' clips) kept for their confidence
        for part, groups in self._generate_calls(prompts_, params):
            for request, group in zip(part, groups, strict=True):
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
        # (convert_tokens_to_ids("<answer>") found it only where it is one token: this
        # project's tokenizer, not Qwen's, where every verdict's confidence read 1.0)
        end = answer_start(self.tokenizer, generated)
        if success is None or end is None:
            return 1.0
        first = [
            self.tokenizer(word, add_special_tokens=False).input_ids[0]
            for word in ("success", "failure")
        ]
        prefix = generated[:end]
        p_success, p_failure = np.asarray(self._engine.score([request], first, prefix=prefix))[0]
        return float(p_success if success else p_failure)


def _built_again(cls: type[VLMCritic], options: dict[str, Any]) -> VLMCritic:
    """A pickled :class:`VLMCritic`, built again from its options (:meth:`VLMCritic.__reduce__`)."""
    return cls(**options)


def _vision(vision_config: Any, processor: dict | None, source: str) -> VisionSpec:
    """The model's :class:`VisionSpec`; a processor setting it cannot read with is a
    :class:`CriticError` naming where it came from."""
    try:
        return VisionSpec.from_config(vision_config, processor)
    except ProcessorConfigError as exc:
        raise CriticError(
            f"{source}'s video processor config cannot be read: {exc}; fix it in the checkpoint's "
            "video_preprocessor_config.json (or processor_config.json / preprocessor_config.json)"
        ) from None
