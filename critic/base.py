"""The critic contract: what every critic takes and returns.

A critic knows frames and instructions, not simulators. Queries come in batches so that one model
call can serve many environments; a critic returns exactly one answer per query, in order.

Privileged fields (``privileged_progress``, ``privileged_success``...) carry the simulator's ground
truth. Only oracle critics read them; a VLM critic must ignore them, and the wrapper fills them so
that the oracle and a learned critic see the very same queries.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rollout.checks import is_int, is_number
from rollout.warn import warn_user

# The failure vocabulary shared by experts (labels), prompts (choices) and the evaluator.
FAILURE_TYPES = (
    "missed_grasp",
    "drop_after_lift",
    "object_pushed_away",
    "stall",
    "overshoot",
    "wrong_target",
    "flail",
)

ACHIEVED = 1.0 - 1e-6  # privileged progress at or above this means the task is achieved


def active_length(progress: np.ndarray) -> int:
    """Frames up to and including the first at which the task is achieved (all when never)."""
    hits = np.flatnonzero(np.asarray(progress) >= ACHIEVED)
    return int(hits[0]) + 1 if len(hits) else len(progress)


def clip_indices(available: int, count: int) -> np.ndarray:
    """The frame indices of a query's clip: always ``count`` of them, spread uniformly over the
    ``available`` frames so far (``round(linspace(0, available - 1, count))``).

    Early in an episode, with fewer frames than ``count``, frames repeat instead of the clip
    getting shorter: a clip's length must not tell a critic how far into the episode it is (a
    critic trained on shorter early clips learned to read progress from the length, and gave a
    static video rising progress). Training samples, the evaluator and the reward wrappers all
    pick frames here, so a critic sees the same clips offline and online.

    Example: 3 frames, count 8 → linspace(0, 2, 8) = 0, .29, .57, .86, 1.14, 1.43, 1.71, 2
    → [0, 0, 1, 1, 1, 1, 2, 2]; 10 frames, count 4 → [0, 3, 6, 9].
    """
    if not (is_int(available) and is_int(count)) or available < 1 or count < 1:
        # nan gave [-2**63] * count, 2.5 a clip of its own
        raise ValueError(
            f"a clip needs whole numbers of frames and a count >= 1; got {available=}, {count=}"
        )
    return np.linspace(0, available - 1, count).round().astype(int)


def unknown_options(options: Mapping[str, Any], known: Iterable[str]) -> str | None:
    """The options not among ``known`` as ``name=value, ...`` for an error message that names
    them (the critic factory's and the reward wrapper's); None when every one is known."""
    names = set(known)
    return ", ".join(f"{k}={v!r}" for k, v in options.items() if k not in names) or None


class CriticError(ValueError):
    """A critic was asked something it cannot answer (for example a query missing a field)."""


# Prompt syntax an instruction must not carry: the video placeholder critic.prompts fills, the
# chat template's special tokens (<|im_end|>, <|video_pad|>, ...), and the answer format's tags
# (critic.parse), which the project's tokenizers and Qwen's hold as special tokens too.
_PROMPT_SYNTAX = re.compile(
    r"<video>|<\|[^|<>]*\|>|</?(?:think|answer|transform|tool_call|tool_response)>"
)


def prompt_syntax_problem(name: str, text: str) -> str | None:
    """Why ``text`` (the value of ``name``) cannot go into a prompt as it is, or ``None``: it
    holds the prompt's own syntax."""
    if found := _PROMPT_SYNTAX.search(text):
        return (
            f"{name}={text!r} holds {found.group()!r}, the prompt's own syntax (a video "
            "placeholder, a special token or an answer tag); reword it"
        )
    return None


def check_instruction(instruction: Any) -> None:
    """A :class:`CriticError` unless ``instruction`` is text a prompt can hold as it is."""
    if not isinstance(instruction, str):
        raise CriticError(
            f"instruction={instruction!r} must be the task in words (a string), e.g. "
            "'Lift the cube.'"
        )
    if not instruction.strip():
        raise CriticError(
            f"instruction={instruction!r} is empty: give the task in words, e.g. 'Lift the cube.'"
        )
    if problem := prompt_syntax_problem("instruction", instruction):
        raise CriticError(problem)


class ParseStatus(str, enum.Enum):
    """Whether a critic's answer could be read. Parsers return it instead of raising."""

    OK = "ok"
    NO_ANSWER = "no_answer"  # no <answer> tag
    MULTIPLE_ANSWERS = "multiple_answers"  # more than one <answer> tag
    NOT_A_NUMBER = "not_a_number"  # the answer holds no number
    HEDGED = "hedged"  # "30 or 60", "between 20 and 40"
    OUT_OF_RANGE = "out_of_range"  # a number outside the stated range


@dataclass(frozen=True)
class ProgressQuery:
    """One request for task progress.

    Attributes:
        instruction: the task in natural language.
        frames: video so far, uint8 ``[T, H, W, 3]`` (already sampled by the caller).
        initial_frame: the episode's first frame ``[H, W, 3]`` (PRIMO R1 anchor), if any.
        current_frame: the newest frame ``[H, W, 3]`` (PRIMO R1 anchor), if any.
        previous_progress: the last estimate in this episode (SOLE-R1 style), if any.
        privileged_progress: simulator ground truth in [0, 1]; only oracle critics read it.
    """

    instruction: str
    frames: np.ndarray | None = None
    initial_frame: np.ndarray | None = None
    current_frame: np.ndarray | None = None
    previous_progress: float | None = None
    privileged_progress: float | None = None

    def __post_init__(self) -> None:
        check_instruction(self.instruction)
        previous = self.previous_progress
        if previous is not None and not (is_number(previous) and 0.0 <= previous <= 1.0):
            raise CriticError(
                f"previous_progress={previous!r} must be None or a number in [0, 1] (the last "
                "estimate of this episode)"
            )
        truth = self.privileged_progress
        # NaN: no ground truth to read (an external video's), which the oracle reads as unreadable
        if truth is not None and not (
            is_number(truth, finite=False) and (math.isnan(truth) or 0.0 <= truth <= 1.0)
        ):
            raise CriticError(
                f"privileged_progress={truth!r} must be None, NaN (unknown) or a number in "
                "[0, 1] (the simulator's progress, as task_info()['progress'] gives it)"
            )


@dataclass(frozen=True)
class ProgressEstimate:
    """A critic's answer to a :class:`ProgressQuery`.

    Attributes:
        progress: estimated progress in [0, 1], or ``None`` when the answer could not be parsed.
        reasoning: the critic's text (chain of thought), empty when there is none.
        status: whether the answer was readable.
        spread: standard deviation over samples when several were drawn, else ``None``.
        achieved: the probability the critic puts on the task being achieved at the newest frame
            (the top of its progress scale), in [0, 1], or ``None`` when it cannot say. A one-pass
            digit readout gives the top digit's probability; sampled answers the share that read
            100 %; the oracle 1 or 0. Failure detection and ``achieved_weight`` rewards read it.
    """

    progress: float | None
    reasoning: str = ""
    status: ParseStatus = ParseStatus.OK
    spread: float | None = None
    achieved: float | None = None


@dataclass(frozen=True)
class FailureQuery:
    """One request for a success / failure verdict on a whole episode.

    Attributes:
        instruction: the task in natural language.
        frames: the episode video, uint8 ``[T, H, W, 3]``.
        privileged_success: simulator ground truth; only oracle critics read it.
        privileged_failure_type: ground-truth failure label (``None`` on success).
    """

    instruction: str
    frames: np.ndarray | None = None
    privileged_success: bool | None = None
    privileged_failure_type: str | None = None

    def __post_init__(self) -> None:
        check_instruction(self.instruction)
        success = self.privileged_success
        if success is not None and not isinstance(success, (bool, np.bool_)):
            raise CriticError(
                f"privileged_success={success!r} must be None, True or False (the simulator's "
                "success flag); the oracle would read any other value by its truth"
            )
        kind = self.privileged_failure_type
        if kind is not None and not isinstance(kind, str):
            raise CriticError(
                f"privileged_failure_type={kind!r} must be None or a failure label (a string), "
                "e.g. 'stall'"
            )


@dataclass(frozen=True)
class FailureVerdict:
    """A critic's answer to a :class:`FailureQuery`.

    Attributes:
        success: ``True`` if the task was achieved, ``None`` when the answer could not be parsed.
        failure_type: the named failure mode, ``None`` on success or when unknown.
        confidence: probability the critic puts on its verdict, in [0, 1].
        reasoning: the critic's text.
        status: whether the answer was readable.
    """

    success: bool | None
    failure_type: str | None = None
    confidence: float = 1.0
    reasoning: str = ""
    status: ParseStatus = ParseStatus.OK


def checked_answers(answers: Any, queries: int, kind: type, who: str) -> list:
    """``answers`` to ``queries`` queries as a list, if they keep the contract: one ``kind``
    (:class:`ProgressEstimate` or :class:`FailureVerdict`) per query, progress and ``achieved``
    in [0, 1] or None, a verdict's ``success`` a bool or None (a numpy bool is made a bool: it is
    not ``False`` to ``is``, so the evaluator counted no failure call) and its confidence in
    [0, 1]. Else a :class:`CriticError` naming ``who`` (e.g. ``"critic 'vlm:...'"``) and the
    answer: a wrong count was a bare zip or index error, naming no critic, and a reading of 1.5
    was scored.
    """
    try:
        answers = list(answers)
    except TypeError:
        answers = None
    if answers is None or len(answers) != queries or not all(isinstance(a, kind) for a in answers):
        got = "no list" if answers is None else f"{len(answers)} answers"
        if answers is not None and len(answers) == queries:
            wrong = next(type(a).__name__ for a in answers if not isinstance(a, kind))
            got = f"a {wrong} among its answers"
        raise CriticError(
            f"{who} returned {got} for {queries} queries; a critic returns one {kind.__name__} "
            "per query, in order"
        )
    checked = []
    for i, answer in enumerate(answers):
        if isinstance(answer, FailureVerdict):
            fields = {"confidence": answer.confidence}
            if answer.success is not None and not isinstance(answer.success, bool | np.bool_):
                raise CriticError(
                    f"{who} returned success={answer.success!r} for query {i}; a verdict's "
                    "success is True, False, or None when the answer could not be read"
                )
            if isinstance(answer.success, np.bool_):
                answer = dataclasses.replace(answer, success=bool(answer.success))
        else:
            fields = {"progress": answer.progress, "achieved": answer.achieved}
        for name, value in fields.items():
            if value is not None and not (is_number(value) and 0.0 <= value <= 1.0):
                raise CriticError(
                    f"{who} returned {name}={value!r} for query {i}; it must be a finite number "
                    "in [0, 1]"
                    + (", or None when the critic cannot say" if name != "confidence" else "")
                )
        checked.append(answer)
    return checked


def check_queries(queries: Any, kind: type, method: str) -> None:
    """A :class:`CriticError` unless ``queries`` is a list (or tuple) of ``kind`` queries: what a
    critic's ``estimate_progress`` / ``detect_failure`` (named by ``method``) takes.

    Example:
        >>> check_queries(ProgressQuery("lift"), ProgressQuery, "oracle.estimate_progress")
        Traceback (most recent call last):
        ...
        critic.base.CriticError: oracle.estimate_progress takes a list of ProgressQuery, got a ProgressQuery; pass a list of ProgressQuery, e.g. [query]
    """
    if not isinstance(queries, Sequence) or isinstance(queries, str | bytes):
        got = f"a {type(queries).__name__}"
    else:
        bad = [(i, q) for i, q in enumerate(queries) if not isinstance(q, kind)]
        if not bad:
            return
        got = f"a list whose item {bad[0][0]} is a {type(bad[0][1]).__name__}"
    raise CriticError(
        f"{method} takes a list of {kind.__name__}, got {got}; pass a list of {kind.__name__}, "
        "e.g. [query]"
    )


# Frames per progress query for a critic that does not record its own (Critic.clip_frames).
DEFAULT_CLIP_FRAMES = 8


def warn_if_untrained(critic: Any, task: str | None) -> None:
    """Warn, once per critic and task, where ``critic`` records the tasks it was trained on
    (``trained_tasks``) and ``task`` is not one: its readings there may mean little (the shipped
    critic on a task of one's own, docs/tasks.md)."""
    trained = getattr(critic, "trained_tasks", None)
    if not trained or not isinstance(task, str) or task in trained:
        return
    key = (getattr(critic, "name", repr(critic)), task)
    if key in _WARNED_UNTRAINED:
        return
    _WARNED_UNTRAINED.add(key)
    warn_user(
        f"critic {key[0]!r} was trained on {list(trained)}, not on {task!r}: its readings there "
        "may mean little; train one on the task's episodes (docs/tasks.md) and check it with "
        "eval_critic.py beside the oracle"
    )


_WARNED_UNTRAINED: set[tuple[str, str]] = set()


def query_frames(
    critic: Critic | None, requested: int | None = None, task: str | None = None
) -> int:
    """Frames to send per progress query on ``task``: ``requested`` when given, else the critic's
    own clip length for that task (:meth:`Critic.clip_frames_for`), else
    :data:`DEFAULT_CLIP_FRAMES`.

    A critic trained on 1-frame clips (initial + current frame in the prompt) reads an 8-frame
    clip as an input it never saw, so its own length is the default everywhere it is queried,
    and a ``requested`` length other than the one its checkpoint records is warned about.
    """
    per_task = getattr(critic, "clip_frames_for", None)
    if requested is not None:
        try:  # an ensemble whose members read other lengths has none of its own: asked, it reads
            own = per_task(task) if callable(per_task) else getattr(critic, "clip_frames", None)
        except ValueError:  # the length asked for (EnsembleConfigError), as before
            own = None
        if own and int(requested) != int(own):
            warn_user(
                f"frames_per_query={requested}: {getattr(critic, 'name', type(critic).__name__)} "
                f"was trained on clips of {own} "
                f"frames{f' on {task}' if task else ''} and reads {requested} as an input it "
                "never saw; leave frames_per_query unset (null) for its own length"
            )
        return int(requested)
    own = per_task(task) if callable(per_task) else getattr(critic, "clip_frames", None)
    return int(own) if own else DEFAULT_CLIP_FRAMES


@dataclass
class Critic(abc.ABC):
    """The contract every critic implements.

    Attributes:
        needs_frames: whether queries must carry rendered frames. The reward wrapper renders only
            when it is true, so a critic that reads privileged state costs no rendering.
    """

    needs_frames: bool = field(default=True, kw_only=True)

    @property
    def name(self) -> str:
        """A short name for logs and tables."""
        return type(self).__name__

    @property
    def clip_frames(self) -> int | None:
        """Frames per progress query this critic was trained on (its checkpoint says), or
        ``None`` when it reads any clip length; a task trained at another length has its own
        (:meth:`clip_frames_for`, which the reward and the evaluator ask, unless told a length)."""
        return None

    def clip_frames_for(self, task: str | None) -> int | None:
        """Frames per progress query this critic was trained on for ``task`` (a registered task
        name such as ``"Reacher-v5"``; ``None``: unknown). A checkpoint may record a length per
        task (``train_critic.py task_frames=``); otherwise every task reads :attr:`clip_frames`."""
        return self.clip_frames

    @property
    def reads_previous_progress(self) -> bool:
        """Whether its answers depend on :attr:`ProgressQuery.previous_progress` (a stepwise,
        SOLE-R1-style prompt): the evaluator then reads an episode's queries in order, each with
        the critic's last reading, as the reward does (:func:`critic.queries.predict_in_order`)."""
        return False

    @abc.abstractmethod
    def estimate_progress(self, queries: Sequence[ProgressQuery]) -> list[ProgressEstimate]:
        """Estimate progress for a batch of queries: exactly one estimate per query, in order."""

    @abc.abstractmethod
    def detect_failure(self, queries: Sequence[FailureQuery]) -> list[FailureVerdict]:
        """Judge success or failure for a batch of episodes: one verdict per query, in order."""

    def __deepcopy__(self, memo: dict) -> Critic:
        """A critic is a handle on a model, engine or server: a copy shares it. (gymnasium
        deep-copies ``gym.make``'s kwargs into the env spec; a model and its engine cannot be
        copied, and a second model in memory is never what a copied spec wants.)"""
        return self

    def close(self) -> None:  # noqa: B027 - optional hook, most critics hold nothing to release
        """Release models, servers or connections the critic holds."""
