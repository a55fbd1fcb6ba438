"""Strict parsing of critic completions: ``<think>…</think><answer>…</answer>``.

Never raises on any string: every parser returns a parse status. Strict means: exactly one answer
tag, one number, inside the stated range; hedges ("30 or 60", "30-60", "between 20 and 40") and
several numbers are rejected rather than guessed at, so a reward never comes from an ambiguous answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from critic.base import ParseStatus

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_TRANSFORM = re.compile(r"<transform>(.*?)</transform>", re.DOTALL)
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?|[-+]?\.\d+")
_HEDGE = re.compile(r"\b(or|to|between|and|maybe|either|about|around)\b|[~≈±/]|\d\s*-\s*\d", re.I)


@dataclass(frozen=True)
class Parsed:
    """What a parser read.

    Attributes:
        value: progress in [0, 1], a verdict (``True`` success), or a label; ``None`` unless OK.
        status: whether the answer was readable.
        reasoning: the ``<think>`` text, or the text before the answer when there is no think tag.
        label: a failure type or transform name, when the format has one.
    """

    value: float | bool | str | None
    status: ParseStatus
    reasoning: str = ""
    label: str | None = None


def _reasoning(text: str) -> str:
    think = _THINK.findall(text)
    if think:
        return think[0].strip()
    return text.split("<answer>", 1)[0].strip()


def _tagged(text: object, pattern: re.Pattern, open_tag: str) -> tuple[str | None, Parsed | None]:
    """The one tagged answer in ``text``, or a finished :class:`Parsed` saying why there is none."""
    if not isinstance(text, str):
        return None, Parsed(None, ParseStatus.NO_ANSWER)
    found = pattern.findall(text)
    if text.count(open_tag) > 1 or len(found) > 1:
        return None, Parsed(None, ParseStatus.MULTIPLE_ANSWERS, _reasoning(text))
    if not found:
        return None, Parsed(None, ParseStatus.NO_ANSWER, _reasoning(text))
    return found[0].strip(), None


SCALES = {"percent": 100.0, "fraction": 1.0, "digit": 9.0}  # scale → the answer's top value


def parse_progress(text: str, scale: str = "percent") -> Parsed:
    """Read a progress answer.

    Args:
        text: the completion.
        scale: ``"percent"`` (0–100, an optional ``%``), ``"fraction"`` (0–1) or ``"digit"``
            (one digit 0–9, read as d / 9: the answer space of the one-pass score readout).

    Returns:
        :class:`Parsed` with ``value`` in [0, 1] when the status is OK.

    Example:
        >>> parse_progress("<think>gripper at cube</think><answer>35%</answer>").value
        0.35
    """
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r} is not a progress scale; pick one of {list(SCALES)}")
    answer, failed = _tagged(text, _ANSWER, "<answer>")
    if failed is not None:
        return failed
    reasoning = _reasoning(text)
    body = answer.strip().removesuffix("%").strip() if scale == "percent" else answer
    numbers = _NUMBER.findall(body)
    if _HEDGE.search(body) or len(numbers) > 1:
        return Parsed(None, ParseStatus.HEDGED, reasoning)
    if len(numbers) != 1 or not re.fullmatch(r"\s*" + re.escape(numbers[0]) + r"\s*", body):
        return Parsed(None, ParseStatus.NOT_A_NUMBER, reasoning)
    number = float(numbers[0])
    if scale == "digit" and not re.fullmatch(r"\s*\d\s*", body):
        return Parsed(None, ParseStatus.OUT_OF_RANGE, reasoning)
    top = SCALES[scale]
    if not 0.0 <= number <= top:
        return Parsed(None, ParseStatus.OUT_OF_RANGE, reasoning)
    return Parsed(number / top, ParseStatus.OK, reasoning)


def parse_verdict(text: str, failure_types: Sequence[str] = ()) -> Parsed:
    """Read ``success`` or ``failure`` (optionally ``failure: <type>``) from the answer tag.

    With ``failure_types`` given, a named type must be one of them.
    """
    answer, failed = _tagged(text, _ANSWER, "<answer>")
    if failed is not None:
        return failed
    reasoning = _reasoning(text)
    # "failure: <type>", "failure - <type>" or "failure (<type>)", its bracket closed
    match = re.fullmatch(
        r"(success|failure)\s*(?:[:\-]\s*([\w \-]+?)|\(\s*([\w \-]+?)\s*\))?\s*",
        answer.strip().lower(),
    )
    if match is None:
        return Parsed(
            None,
            ParseStatus.HEDGED if _HEDGE.search(answer) else ParseStatus.NOT_A_NUMBER,
            reasoning,
        )
    success = match.group(1) == "success"
    named = match.group(2) or match.group(3)
    offered = {normalize_label(t) for t in failure_types}
    # "success - or failure"; a failure's type read as two ("stall or flail") unless offered
    hedged = named and (_HEDGE.search(named) if success else re.search(r"\bor\b", named))
    if hedged and normalize_label(named) not in offered:
        return Parsed(None, ParseStatus.HEDGED, reasoning)
    if success and named:  # "success: stall" names a failure: no verdict to read
        return Parsed(None, ParseStatus.NOT_A_NUMBER, reasoning)
    label = None if success else normalize_label(named)
    if label is not None and failure_types and label not in offered:
        return Parsed(None, ParseStatus.OUT_OF_RANGE, reasoning)
    return Parsed(success, ParseStatus.OK, reasoning, label)


def parse_transform(text: str, transforms: Sequence[str]) -> Parsed:
    """Read the ``<transform>`` tag; the name must be one of ``transforms`` (case, spaces and
    underscores ignored)."""
    answer, failed = _tagged(text, _TRANSFORM, "<transform>")
    if failed is not None:
        return failed
    reasoning = _reasoning(text)
    allowed = {normalize_label(t): t for t in transforms}
    label = normalize_label(answer)
    if label not in allowed:
        return Parsed(
            None,
            ParseStatus.HEDGED if _HEDGE.search(answer) else ParseStatus.OUT_OF_RANGE,
            reasoning,
        )
    return Parsed(allowed[label], ParseStatus.OK, reasoning, allowed[label])


def normalize_label(name: str | None) -> str | None:
    """A label as the parsers compare it: lower case, runs of spaces, ``_`` and ``-`` as ``_``."""
    return None if name is None else re.sub(r"[\s_\-]+", "_", name.strip().lower())


def answer_start(tokenizer, generated: Sequence[int], tag: str = "<answer>") -> int | None:
    """How many of the ``generated`` tokens end with ``tag`` (the position its answer's first
    token is predicted after), or None where the text never reaches it, or a token runs past it.
    A tag may be one token (this project's tokenizer) or several (Qwen's: ``<``, ``answer``,
    ``>``), so the decoded text is read, not a token id.

    Example: tokens decoding to ``"<think>x</think>"``, ``"<answer>"``, ``"success"`` → 2.
    """
    for end in range(1, len(generated) + 1):
        text = tokenizer.decode(list(generated[:end]), skip_special_tokens=False)
        if tag in text:
            return end if text.endswith(tag) else None
    return None
