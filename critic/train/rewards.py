"""Reward functions for GRPO: format, progress accuracy, verdict, transform and joint (ViSS-R1).

Every reward keeps TRL's signature ``f(completions, **sample_fields) -> list[float | None]``:
``completions`` are the generated texts, and each sample field is a list with one entry per
completion, taken from the sample's ``target`` (``progress``, ``success``, ``failure_type``,
``transform``) and prompt (``answer``: the answer format; ``choices``: the allowed labels). A reward
returns ``None`` for a sample it does not apply to (it has no target of the reward's kind), and a
value in [0, 1] otherwise. Answers are read with the strict parsers of :mod:`critic.parse`, so an
unreadable answer (no tag, a hedge, a number out of range) earns 0.0, and no completion text makes
a reward raise.

:func:`combine_rewards` makes one weighted reward of several; :func:`reward_components` gives each
one's values for logging; :data:`REWARDS` names the built-in ones for configs.

Example:
    >>> progress_accuracy_reward(["<think>near</think><answer>30%</answer>"], progress=[0.5])
    [0.8]
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from critic.base import ACHIEVED, ParseStatus
from critic.data.transforms import TRANSFORMS

# Targets are compared the way the parser reads labels (``normalize_label``), reused, not copied.
from critic.parse import normalize_label, parse_progress, parse_transform, parse_verdict

RewardFunction = Callable[..., list[float | None]]


class RewardConfigError(ValueError):
    """A reward is set up or called wrongly: an unknown name or answer format, bad weights or scale,
    a target out of range, or a sample field whose length differs from the completions'."""


# The tags each answer format shows, in order: the prompts of critic.prompts ask for them and the
# reference completions of critic.data.samples have them. The pretext format answers inside
# <transform> alone (prompts.pretext: "Answer inside <transform></transform>").
_LAYOUTS: dict[str, tuple[str, ...]] = {
    "percent": ("think", "answer"),
    "digit": ("think", "answer"),
    "percent_list": ("think", "answer"),
    "verdict": ("think", "answer"),
    "transform": ("think", "transform"),
    "transform+percent": ("think", "transform", "answer"),
}
_TAGS = ("think", "transform", "answer")
_PATTERNS = {
    answer: re.compile(
        r"\s*" + r"\s*".join(rf"<{t}>(?P<{t}>.*?)</{t}>" for t in tags) + r"\s*", re.DOTALL
    )
    for answer, tags in _LAYOUTS.items()
}
# The parse_progress scale of each answer format with a single progress answer.
_PROGRESS_SCALES = {"percent": "percent", "digit": "digit", "transform+percent": "percent"}


def _text(completion: Any) -> str:
    """The completion as text; anything but a string reads as empty (and so earns 0.0)."""
    return completion if isinstance(completion, str) else ""


def _column(name: str, values: Any, n: int) -> list[Any]:
    """A per-sample field as a list of ``n`` entries; an absent field is ``n`` times ``None``."""
    if values is None:
        return [None] * n
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise RewardConfigError(
            f"field {name!r} must be a list with one value per completion, got {values!r}"
        )
    if len(values) != n:
        raise RewardConfigError(
            f"field {name!r} has {len(values)} values for {n} completions; give one per completion"
        )
    return list(values)


def _answer_format(answer: str | None) -> str:
    answer = "percent" if answer is None else answer
    if answer not in _LAYOUTS:
        raise RewardConfigError(
            f"answer={answer!r} is not an answer format; pick one of {list(_LAYOUTS)}"
        )
    return answer


def format_reward(
    completions: Sequence[str], answer: Sequence[str | None] | None = None, **fields: Any
) -> list[float | None]:
    """1.0 when a completion shows exactly the tags its answer format asks for, in order; else 0.0.

    ``r = 1`` iff the whole text is ``<think>…</think><answer>…</answer>`` (formats ``percent``,
    ``digit``, ``percent_list``, ``verdict``), ``<think>…</think><transform>…</transform>``
    (``transform``) or ``<think>…</think><transform>…</transform><answer>…</answer>``
    (``transform+percent``): only whitespace around and between the tags, each of them exactly
    once, none of the other tags, and non-blank answer and transform text (the thought may be
    empty, as in the reference completions). Whether the answer is right, or even readable, is
    left to the accuracy rewards.

    Args:
        completions: generated texts.
        answer: per sample, the prompt's answer format (:attr:`critic.prompts.Prompt.answer`);
            an absent field or a ``None`` entry means ``"percent"``.

    Raises:
        RewardConfigError: an unknown answer format, or ``answer`` of the wrong length.

    Example:
        >>> format_reward(["<think>a</think><answer>30%</answer>", "<answer>30%</answer>"])
        [1.0, 0.0]
    """
    formats = _column("answer", answer, len(completions))
    out: list[float | None] = []
    for completion, fmt in zip(completions, formats, strict=True):
        fmt = _answer_format(fmt)
        text, tags = _text(completion), _LAYOUTS[fmt]
        once = all(
            text.count(f"<{t}>") == text.count(f"</{t}>") == (1 if t in tags else 0) for t in _TAGS
        )
        match = _PATTERNS[fmt].fullmatch(text) if once else None
        filled = match is not None and all(match[t].strip() for t in tags if t != "think")
        out.append(1.0 if filled else 0.0)
    return out


def _progress_target(index: int, target: Any) -> float:
    try:
        value = float(target)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 <= value <= 1.0:  # also false for NaN
        raise RewardConfigError(
            f"progress[{index}] = {target!r} is not a progress target; give a fraction in [0, 1]"
        )
    return value


def _success_target(index: int, target: Any) -> bool:
    # bool() of the text "False" is True: only a truth value (or 0 / 1) says which verdict is right
    if isinstance(target, np.bool_) or (isinstance(target, numbers.Integral) and target in (0, 1)):
        return bool(target)
    raise RewardConfigError(
        f"success[{index}] = {target!r} is not a success target; give True, False or None"
    )


def make_progress_reward(scale: float = 1.0) -> RewardFunction:
    """A progress-accuracy reward with tolerance ``scale`` (the PRIMO R1 / SOLE-R1 outcome reward).

    The reward is ``r = clip(1 - |p - t| / scale, 0, 1)`` for the answered progress p and the target
    t, both fractions in [0, 1]; a smaller scale is stricter.

    Args:
        scale: the error (as a fraction) at which the reward reaches 0; 1.0 gives
            :func:`progress_accuracy_reward`.

    Raises:
        RewardConfigError: ``scale`` is not a positive finite number.

    Example:
        >>> make_progress_reward(0.5)(["<think></think><answer>30%</answer>"], progress=[0.5])
        [0.6]
    """
    try:
        tolerance = float(scale)
    except (TypeError, ValueError):
        tolerance = math.nan
    if not (math.isfinite(tolerance) and tolerance > 0):
        raise RewardConfigError(
            f"scale={scale!r} is not a positive finite number; give the progress error at which "
            "the reward reaches 0 (1.0: r = 1 - |p - t|)"
        )

    def reward(
        completions: Sequence[str],
        progress: Sequence[float | None] | None = None,
        answer: Sequence[str | None] | None = None,
        **fields: Any,
    ) -> list[float | None]:
        """Progress accuracy: ``r = clip(1 - |p - t| / scale, 0, 1)``.

        p is the answer read strictly (:func:`critic.parse.parse_progress`: percent, or one digit
        for the ``digit`` format), t the ``progress`` target. An unreadable answer (no answer tag,
        a hedge, several numbers, out of range) earns 0.0. ``None`` where the target is ``None``
        or the answer format holds no single progress (``verdict``, ``transform``,
        ``percent_list``). A digit answer whose sample's ``top_digit`` field is ``achieved`` has its
        target capped at 8/9 short of the task achieved, so the digit its label has (at most 8
        there, :func:`critic.data.samples.digit_label`) is the one paid most, not 9.

        Raises:
            RewardConfigError: a target outside [0, 1], an unknown answer format, or a field of
                the wrong length.
        """
        n = len(completions)
        targets, formats = _column("progress", progress, n), _column("answer", answer, n)
        rules = _column("top_digit", fields.get("top_digit"), n)
        out: list[float | None] = []
        for i, (completion, target, fmt, rule) in enumerate(
            zip(completions, targets, formats, rules, strict=True)
        ):
            parse_scale = _PROGRESS_SCALES.get(_answer_format(fmt))
            if target is None or parse_scale is None:
                out.append(None)
                continue
            t = _progress_target(i, target)
            if rule == "achieved" and _answer_format(fmt) == "digit" and t < ACHIEVED:
                # the sample's label reads at most 8 short of done (digit_label): capped at 8/9
                t = min(t, 8 / 9)
            parsed = parse_progress(_text(completion), parse_scale)
            if parsed.status is not ParseStatus.OK:
                out.append(0.0)
                continue
            out.append(min(1.0, max(0.0, 1.0 - abs(float(parsed.value) - t) / tolerance)))
        return out

    reward.__name__ = reward.__qualname__ = (
        "progress_accuracy_reward"
        if tolerance == 1.0
        else f"progress_accuracy_reward_scale_{tolerance:g}"
    )
    return reward


progress_accuracy_reward = make_progress_reward(1.0)


def verdict_reward(
    completions: Sequence[str],
    success: Sequence[bool | None] | None = None,
    failure_type: Sequence[str | None] | None = None,
    choices: Sequence[Sequence[str] | None] | None = None,
    **fields: Any,
) -> list[float | None]:
    """Success / failure detection with the failure's type (RoboFail-style).

    ``r = 1`` for the right verdict and, on a failure, the right type (the named type equals the
    target's, case, spaces and ``_`` ignored, or neither names one); ``r = 0.5`` for a right
    failure verdict with a wrong or missing type; ``r = 0`` for a wrong verdict or an unreadable
    answer (:func:`critic.parse.parse_verdict`: a type outside the sample's ``choices`` makes the
    answer unreadable). ``None`` where ``success`` is ``None``.

    Args:
        completions: generated texts.
        success: per sample, whether the episode succeeded.
        failure_type: per sample, the failure's type, or ``None`` (success, or an unknown type;
            a type outside ``choices``, such as a policy rollout's ``"unknown"``, counts as none).
        choices: per sample, the failure types the prompt offered; absent or empty: any type.

    Raises:
        RewardConfigError: a ``success`` target other than a truth value (``True``, ``False``,
            0, 1) or ``None`` (the text ``"False"`` would read as a success), or a field of the
            wrong length.

    Example:
        >>> verdict_reward(["<answer>failure: stall</answer>"], [False], ["missed_grasp"])
        [0.5]
    """
    n = len(completions)
    targets, types = _column("success", success, n), _column("failure_type", failure_type, n)
    offered = _column("choices", choices, n)
    out: list[float | None] = []
    for i, (completion, target, kind, allowed) in enumerate(
        zip(completions, targets, types, offered, strict=True)
    ):
        if target is None:
            out.append(None)
            continue
        target = _success_target(i, target)
        parsed = parse_verdict(_text(completion), tuple(allowed or ()))
        expected = None if kind is None else normalize_label(str(kind))
        if allowed and expected not in {normalize_label(str(c)) for c in allowed}:
            expected = None  # a type the prompt does not offer ("unknown"): plain "failure"
        if parsed.status is not ParseStatus.OK or parsed.value != bool(target):
            out.append(0.0)
        elif bool(target) or parsed.label == expected:
            out.append(1.0)
        else:
            out.append(0.5)
    return out


def transform_reward(
    completions: Sequence[str],
    transform: Sequence[str | None] | None = None,
    choices: Sequence[Sequence[str] | None] | None = None,
    **fields: Any,
) -> list[float | None]:
    """The pretext reward (ViSS-R1, Pretext-GRPO): which transform was applied to the video.

    ``r = 1`` if the ``<transform>`` tag names the target transform (one of the sample's
    ``choices``, or of :data:`critic.data.transforms.TRANSFORMS` when it has none; case ignored, a
    space read as ``_``: ``H_Flip`` and ``h flip`` name ``h_flip``, not ``hflip``), else ``r = 0`` (a wrong name, an unknown one, a hedge, no tag or several).
    ``None`` where the target is ``None``.

    Example:
        >>> transform_reward(["<think></think><transform>hflip</transform>"], ["hflip"])
        [1.0]
    """
    n = len(completions)
    targets, offered = _column("transform", transform, n), _column("choices", choices, n)
    out: list[float | None] = []
    for completion, target, allowed in zip(completions, targets, offered, strict=True):
        if target is None:
            out.append(None)
            continue
        parsed = parse_transform(_text(completion), tuple(allowed or TRANSFORMS))
        right = parsed.status is ParseStatus.OK and normalize_label(
            str(parsed.value)
        ) == normalize_label(str(target))
        out.append(1.0 if right else 0.0)
    return out


def joint_reward(
    completions: Sequence[str],
    transform: Sequence[str | None] | None = None,
    progress: Sequence[float | None] | None = None,
    **fields: Any,
) -> list[float | None]:
    """The ViSS-R1 joint reward: name the transform and answer the real question.

    ``r = (r_transform + r_progress) / 2`` (:func:`transform_reward`,
    :func:`progress_accuracy_reward`), the mean over those that apply: one alone when the other is
    ``None``, and ``None`` when both are.

    Example:
        >>> text = "<think></think><transform>reverse</transform><answer>40%</answer>"
        >>> joint_reward([text], transform=["hflip"], progress=[0.4])
        [0.5]
    """
    named = transform_reward(completions, transform=transform, **fields)
    accurate = progress_accuracy_reward(completions, progress=progress, **fields)
    out: list[float | None] = []
    for pair in zip(named, accurate, strict=True):
        present = [r for r in pair if r is not None]
        out.append(sum(present) / len(present) if present else None)
    return out


REWARDS: dict[str, RewardFunction] = {
    "format": format_reward,
    "progress": progress_accuracy_reward,
    "verdict": verdict_reward,
    "transform": transform_reward,
    "joint": joint_reward,
}
# The sample kinds (critic.data.samples.KINDS) whose targets each built-in reward reads; it
# returns None for the others. None: every kind (the format reward reads the answer's layout).
REWARD_KINDS: dict[str, frozenset[str] | None] = {
    "format": None,
    "progress": frozenset({"progress", "sft", "score", "frozen", "joint"}),
    "verdict": frozenset({"failure"}),
    "transform": frozenset({"pretext", "joint"}),
    "joint": frozenset({"pretext", "joint", "progress", "sft", "score", "frozen"}),
}


def get_reward(name: str) -> RewardFunction:
    """The built-in reward called ``name`` in :data:`REWARDS`.

    Raises:
        RewardConfigError: an unknown name (the message lists the known ones).
    """
    if name not in REWARDS:
        raise RewardConfigError(
            f"reward={name!r} is not a known reward; pick one of {list(REWARDS)}"
        )
    return REWARDS[name]


def _resolve(functions: Sequence[RewardFunction | str]) -> dict[str, RewardFunction]:
    """Callables (or :data:`REWARDS` names) keyed by their ``__name__``, which must be distinct."""
    if isinstance(functions, str) or not functions:
        raise RewardConfigError(
            f"functions={functions!r}; give a list of one or more reward functions or REWARDS names"
        )
    named: dict[str, RewardFunction] = {}
    for function in functions:
        fn = get_reward(function) if isinstance(function, str) else function
        if not callable(fn):
            raise RewardConfigError(f"{fn!r} is not a reward function; give callables or names")
        name = getattr(fn, "__name__", None) or type(fn).__name__
        if name in named:
            raise RewardConfigError(
                f"two reward functions are named {name!r}; give each a distinct __name__ "
                "(the name keys its logged values)"
            )
        named[name] = fn
    return named


def reward_components(
    functions: Sequence[RewardFunction | str], completions: Sequence[str], **fields: Any
) -> dict[str, list[float | None]]:
    """Each reward's values, keyed by its ``__name__``: what to log next to the combined reward.

    Args:
        functions: reward callables, or names in :data:`REWARDS`.
        completions: generated texts.
        **fields: per-sample fields, passed to every function.

    Raises:
        RewardConfigError: duplicate names, or a function returning a list of the wrong length
            or a value that is neither a finite number nor ``None``.
    """
    components: dict[str, list[float | None]] = {}
    for name, fn in _resolve(functions).items():
        values = list(fn(completions, **fields))
        if len(values) != len(completions):
            raise RewardConfigError(
                f"reward function {name!r} returned {len(values)} values for {len(completions)} "
                "completions; return one per completion"
            )
        for i, value in enumerate(values):
            # numpy's scalars too (np.float32, np.int64, np.bool_), which reward code returns
            if value is not None and not (
                isinstance(value, (numbers.Real, np.bool_)) and math.isfinite(float(value))
            ):
                raise RewardConfigError(
                    f"reward function {name!r} returned {value!r} for completion {i}; "
                    "return a finite number or None"
                )
        components[name] = [None if v is None else float(v) for v in values]
    return components


def combine_rewards(
    functions: Sequence[RewardFunction | str], weights: Sequence[float] | None = None
) -> RewardFunction:
    """One reward from several: per completion, ``r = Σ_i w_i r_i`` over the functions whose
    ``r_i`` is not ``None`` (``None`` only when all are).

    The result keeps TRL's signature and is named ``"a+b+…"`` after its parts; log the parts with
    :func:`reward_components`.

    Args:
        functions: reward callables, or names in :data:`REWARDS`, with distinct ``__name__``.
        weights: one finite weight per function; ``None`` gives each weight 1.

    Raises:
        RewardConfigError: no functions, duplicate names, an unknown name, a weight count that
            differs from the function count, or a weight that is not finite.

    Example:
        >>> reward = combine_rewards(["format", "progress"], [1.0, 0.5])
        >>> reward(["<think>a</think><answer>30%</answer>"], progress=[0.5])
        [1.4]
    """
    named = _resolve(functions)
    if weights is None:
        weights = [1.0] * len(named)
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__"):
        raise RewardConfigError(f"weights={weights!r}; give a list with one weight per function")
    if len(weights) != len(named):
        raise RewardConfigError(
            f"weights has {len(weights)} values for {len(named)} reward functions; "
            "give one weight per function"
        )
    scales: list[float] = []
    for i, weight in enumerate(weights):
        try:
            value = float(weight)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            raise RewardConfigError(
                f"weights[{i}] = {weight!r} is not a finite number; give one finite weight per "
                "function"
            )
        scales.append(value)
    parts = list(named.values())

    def combined(completions: Sequence[str], **fields: Any) -> list[float | None]:
        components = reward_components(parts, completions, **fields)
        out: list[float | None] = []
        for values in zip(*components.values(), strict=True):
            present = [(w, r) for w, r in zip(scales, values, strict=True) if r is not None]
            out.append(sum(w * r for w, r in present) if present else None)
        return out

    combined.__name__ = combined.__qualname__ = "+".join(named)
    combined.__doc__ = (
        f"Weighted reward {' + '.join(f'{w:g}·{n}' for w, n in zip(scales, named, strict=True))}."
    )
    return combined
