"""Training and evaluation samples built from episodes, one builder per kind of DESIGN.md.

- ``progress``: a video anchored between the initial and the current frame (PRIMO R1), at several
  cut points per episode; target: the current frame's progress.
- ``sft``: the same, with a reference completion whose chain of thought is grounded in privileged
  state (:mod:`critic.data.reasoning`).
- ``score``: the same query in the digit scale with an empty chain of thought,
  ``<think></think><answer>d</answer>`` with ``d = round(9 p)``: what ``VLMCritic``'s one-pass
  ``score`` readout reads (the expected digit / 9), so SFT trains the readout the RL reward uses.
  The readout's ``achieved`` is the probability of digit 9, which ``round`` also teaches on frames
  a little short of done (p >= 17/18: a Reacher arm 3 cm off); ``top_digit="achieved"`` keeps 9
  for achieved frames alone (:func:`digit_label`).
- ``frozen``: the ``score`` query on a video frozen after partial progress (frames after a freeze
  point repeat it: the evaluator's frozen-arm probe, as training data); target: the progress of the
  frozen frame, not of the time elapsed. A critic trained only on moving experts learns that a
  still arm late in a clip means done, and pays a stalled policy for waiting.
- ``failure``: the whole episode; target: success, or failure and its type.
- ``pretext``: a transformed clip; target: the transform's name (ViSS-R1, Pretext-GRPO).
- ``joint``: a transformed clip; targets: the transform and the progress the original clip shows.

Splits are by seed (:func:`seed_split`), so every sample of an episode lands in one split, and
:func:`task_split` holds whole tasks out for zero-shot evaluation.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from critic import prompts
from critic.base import ACHIEVED, FAILURE_TYPES, active_length, clip_indices
from critic.data.episodes import Episode
from critic.data.reasoning import chain_of_thought
from critic.data.transforms import (
    QUARTER_TURNS,
    TEMPORAL,
    TRANSFORMS,
    apply_transform,
    window_length,
)
from critic.parse import normalize_label

KINDS = ("progress", "sft", "score", "frozen", "failure", "pretext", "joint")
# How a progress becomes the score answer's digit (digit_label); "round" trained the shipped critic.
TOP_DIGIT_RULES = ("round", "achieved")


def digit_label(progress: float, top_digit: str = "round") -> int:
    """The score answer's digit for ``progress``: ``round(9 p)`` (``round``), or the same with 9
    kept for the task achieved (``achieved``: ``p >= ACHIEVED``; a frame short of it reads at
    most 8), so that the readout's probability of 9 is its probability that the task is done.

    Example:
        >>> digit_label(0.957), digit_label(0.957, "achieved"), digit_label(1.0, "achieved")
        (9, 8, 9)
    """
    if top_digit not in TOP_DIGIT_RULES:
        raise ValueError(f"top_digit={top_digit!r}; pick one of {list(TOP_DIGIT_RULES)}")
    digit = round(9 * progress)
    return digit if top_digit == "round" or progress >= ACHIEVED else min(8, digit)


@dataclass
class Sample:
    """One prompt with its ground truth.

    Attributes:
        kind: one of :data:`KINDS`.
        prompt: messages and videos (:class:`critic.prompts.Prompt`).
        target: the ground truth the rewards read: ``progress`` (float in [0, 1]), ``success`` and
            ``failure_type``, ``transform``.
        completion: a reference completion in the answer format (SFT), or ``None``.
        episode_id, env_id, seed: where it came from.
        frame: the episode frame the target refers to (the cut point), or ``None``.
    """

    kind: str
    prompt: prompts.Prompt | prompts.PackedPrompt
    target: dict[str, Any]
    completion: str | None = None
    episode_id: str = ""
    env_id: str = ""
    seed: int = 0
    frame: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def cut_points(num_frames: int, cuts: int, rng: np.random.Generator) -> list[int]:
    """``cuts`` frame indices in [1, T-1], one drawn from each of ``cuts`` equal bins (so early,
    middle and late progress are all covered); the last bin always ends at the last frame."""
    if num_frames < 2:
        return []
    edges = np.linspace(1, num_frames, min(cuts, num_frames - 1) + 1)
    points = [
        int(rng.integers(int(lo), max(int(lo) + 1, int(hi))))
        for lo, hi in itertools.pairwise(edges)
    ]
    return sorted({min(p, num_frames - 1) for p in points})


def clip(frames: np.ndarray, end: int, count: int) -> np.ndarray:
    """``count`` frames spread uniformly over ``frames[0..end]``, repeating frames when there are
    fewer (:func:`critic.base.clip_indices`: the clip's length never gives the time away)."""
    return frames[clip_indices(end + 1, count)]


def camera_frames(episode: Episode, camera: str | None = None) -> np.ndarray:
    """The episode's frames from ``camera`` (its first camera when ``None``).

    Raises:
        ValueError: the episode has no such camera (the message names the ones it has).
    """
    name = camera or episode.cameras[0]
    if name not in episode.frames:
        raise ValueError(
            f"episode {episode.episode_id!r} has no camera {name!r}; it has {episode.cameras}"
        )
    return episode.frames[name]


def _meta(episode: Episode) -> dict[str, Any]:
    return {"episode_id": episode.episode_id, "env_id": episode.env_id, "seed": episode.seed}


def _anchored_sample(
    episode: Episode,
    video: np.ndarray,
    cut: int,
    shown: int,
    frames: int,
    kind: str,
    rng: np.random.Generator,
    top_digit: str = "round",
) -> Sample:
    """The anchored query at ``cut`` of ``video``, whose current frame is the episode's frame
    ``shown`` (``cut`` itself unless the video is frozen): target ``progress[shown]``."""
    target = float(episode.progress[shown])
    prompt = prompts.anchored_progress(
        episode.instruction, video[0], clip(video, cut, frames), video[cut],
        "percent" if kind in ("progress", "sft") else "digit",
    )  # fmt: skip
    completion = None
    if kind == "sft":
        state = {k: float(v[shown]) for k, v in episode.state.items()}
        completion = chain_of_thought(state, target, rng)
    elif kind in ("score", "frozen"):
        completion = f"<think></think><answer>{digit_label(target, top_digit)}</answer>"
    meta = {"freeze": shown, "cut": cut} if shown != cut else {}
    goal = {"progress": target}
    if kind in ("score", "frozen") and top_digit != "round":  # the rule its rewards must pay by
        goal["top_digit"] = top_digit
    return Sample(kind, prompt, goal, completion, frame=shown, meta=meta, **_meta(episode))


def progress_samples(
    episode: Episode,
    rng: np.random.Generator,
    cuts: int = 4,
    frames: int = 8,
    camera: str | None = None,
    kind: str = "progress",
    top_digit: str = "round",
) -> list[Sample]:
    """Anchored progress queries at ``cuts`` points, as ``kind``: ``progress`` (no completion),
    ``sft`` (the grounded chain of thought) or ``score`` (digit scale, answer only: its digit by
    :func:`digit_label`'s ``top_digit`` rule)."""
    if kind not in ("progress", "sft", "score"):
        raise ValueError(f"kind={kind!r} is not a progress kind; pick progress, sft or score")
    video = camera_frames(episode, camera)
    return [
        _anchored_sample(episode, video, c, c, frames, kind, rng, top_digit)
        for c in cut_points(len(episode), cuts, rng)
    ]


def frozen_samples(
    episode: Episode,
    rng: np.random.Generator,
    count: int = 2,
    frames: int = 8,
    camera: str | None = None,
    top_digit: str = "round",
) -> list[Sample]:
    """``count`` score queries on the episode frozen after partial progress.

    Each draws a freeze point ``f`` in the active part (before the task is achieved: later, a
    frozen video looks like the real one) and a later cut ``c``; frames ``f..c`` all show frame
    ``f``, and the target is ``progress[f]``. An episode with no frame to freeze (fewer than 3
    frames, or the task achieved by frame 1) gives none.

    Example:
        ``f = 3, c = 6``: the clip is drawn from frames ``0 1 2 3 3 3 3``; target ``progress[3]``.
    """
    video = camera_frames(episode, camera)
    # f <= last: before the first achieved frame, and before the last frame (c > f must exist)
    last = min(active_length(episode.progress) - 1, len(video) - 1) - 1
    if last < 1:
        return []
    samples = []
    for _ in range(count):
        freeze = int(rng.integers(1, last + 1))
        cut = int(rng.integers(freeze + 1, len(video)))
        frozen = video[np.minimum(np.arange(cut + 1), freeze)]
        samples.append(
            _anchored_sample(episode, frozen, cut, freeze, frames, "frozen", rng, top_digit)
        )
    return samples


def failure_vocabulary(types: Iterable[str | None]) -> tuple[str, ...]:
    """The failure types prompts offer for data labelled with ``types``: the built-in
    :data:`critic.base.FAILURE_TYPES`, then those of the data beyond them, sorted (an expert of
    one's own injects its own; a policy rollout's ``unknown`` is none)."""
    offered = {normalize_label(t): t for t in FAILURE_TYPES}
    for kind in sorted({t for t in types if isinstance(t, str) and t.strip()}):
        if normalize_label(kind) not in (*offered, "unknown"):
            offered[normalize_label(kind)] = kind  # one spelling of each
    return tuple(offered.values())


def failure_sample(
    episode: Episode,
    frames: int = 16,
    camera: str | None = None,
    failure_types: Sequence[str] = FAILURE_TYPES,
) -> Sample:
    """The whole episode → ``success`` or ``failure: <type>``, with a short grounded rationale."""
    video = camera_frames(episode, camera)
    prompt = prompts.failure_detection(
        episode.instruction, clip(video, len(video) - 1, frames), failure_types
    )
    peak, final = (
        round(100 * float(episode.progress.max())),
        round(100 * float(episode.progress[-1])),
    )
    if episode.success:
        answer, why = "success", f"progress rises to {final}% and the task is achieved"
    else:
        kind = (episode.failure_type or "unknown").replace("_", " ")
        when = ""
        if episode.failure_step is not None and episode.fps:
            when = f" at {episode.failure_step * episode.step_seconds:.1f} s"
        # The type is named only where the prompt offers it: a policy rollout's "unknown" (or a
        # type outside failure_types) is a plain "failure", the answer the parser takes.
        offered = {normalize_label(t) for t in failure_types}
        named = episode.failure_type is not None and (
            not offered or normalize_label(episode.failure_type) in offered
        )
        answer = f"failure: {episode.failure_type}" if named else "failure"
        why = f"progress peaks at {peak}% and ends at {final}%; {kind}{when}"
    return Sample(
        "failure",
        prompt,
        {"success": bool(episode.success), "failure_type": episode.failure_type},
        f"<think>{why}.</think><answer>{answer}</answer>",
        frame=len(episode) - 1,
        **_meta(episode),
    )


# windows drawn for a pretext transform before a clip it does not change is shown as "none"
STILL_TRIES = 8


def _window(num_frames: int, length: int, rng: np.random.Generator) -> tuple[int, int]:
    length = min(length, num_frames)
    start = int(rng.integers(0, num_frames - length + 1))
    return start, start + length


def clip_transforms(transforms: Sequence[str], length: int) -> list[str]:
    """The ``transforms`` that change a clip of ``length`` frames (the rest would give the answer
    away): reversing or speeding one frame changes nothing, and 2 frames shuffled are the 2
    reversed. :func:`pretext_samples` also leaves out, per episode, a window longer than the
    video and quarter turns of non-square frames."""
    return [
        t for t in transforms
        if (length > 1 or t not in TEMPORAL) and (length > 2 or t != "shuffle")
    ]  # fmt: skip


def pretext_samples(
    episode: Episode,
    rng: np.random.Generator,
    count: int = 2,
    frames: int = 8,
    camera: str | None = None,
    transforms: Sequence[str] = TRANSFORMS,
    joint: bool = False,
) -> list[Sample]:
    """``count`` transformed clips; ``joint`` also asks the progress of the original clip's end."""
    video = camera_frames(episode, camera)
    # Only transforms that keep the clip's shape and change it where the episode allows: a
    # speed_2x clip shorter than the others would give its label away, as would a quarter turn
    # of non-square frames (the tower's grid turns with it); reversing one frame changes nothing,
    # and 2 frames shuffled are the 2 reversed.
    length = min(frames, len(video))
    square = video.shape[1] == video.shape[2]
    usable = [
        t for t in clip_transforms(transforms, length)
        if window_length(t, length) <= len(video) and (square or t not in QUARTER_TURNS)
    ]  # fmt: skip
    samples = []
    for _ in range(count if usable else 0):
        name = usable[int(rng.integers(len(usable)))]
        for _ in range(STILL_TRIES):
            start, end = _window(len(video), window_length(name, length), rng)
            shown = apply_transform(name, video[start:end], rng)
            # a still stretch (a stall, frames byte for byte alike) reversed or shuffled is the
            # clip as it was: labelled with the transform, its only right reading was "none";
            # and a shuffle of one with still frames can show the clip reversed ([4, 5, 5] as
            # [5, 5, 4]): the same pixels under two labels
            window = video[start : start + length]
            if name == "none" or not (
                np.array_equal(shown, window)
                or (name == "shuffle" and np.array_equal(shown, window[::-1]))
            ):
                break
        else:  # no window of this episode shows the transform: the clip is shown as it is,
            if "none" not in transforms:  # where "none" is an answer the prompt offers
                continue
            name, end = "none", start + length
            shown = video[start:end].copy()
        # the original clip's last frame the model is shown (speed_2x keeps every second one)
        last = start + 2 * (length - 1) if name == "speed_2x" else end - 1
        target: dict[str, Any] = {"transform": name}
        if joint:
            target["progress"] = float(episode.progress[last])
            prompt = prompts.joint(episode.instruction, shown, transforms)
            completion = (
                f"<think></think><transform>{name}</transform>"
                f"<answer>{round(100 * target['progress'])}%</answer>"
            )
        else:
            prompt = prompts.pretext(shown, transforms)
            completion = f"<think></think><transform>{name}</transform>"
        samples.append(
            Sample(
                "joint" if joint else "pretext",
                prompt,
                target,
                completion,
                frame=last,
                meta={"window": (start, end)},
                **_meta(episode),
            )
        )
    return samples


def build_samples(
    episode: Episode, kinds: Sequence[str], rng: np.random.Generator, **options: Any
) -> list[Sample]:
    """Samples of every kind in ``kinds`` from one episode.

    Options (all optional): ``cuts``, ``frames``, ``camera``, ``frozen_count``,
    ``pretext_count``, ``transforms``, ``failure_frames``, ``failure_types``, ``top_digit``.

    Raises:
        ValueError: an unknown kind (the message lists them).
    """
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown sample kinds {unknown}; pick from {list(KINDS)}")
    frames, camera = options.get("frames", 8), options.get("camera")
    top_digit = options.get("top_digit", "round")
    out: list[Sample] = []
    for kind in kinds:
        if kind in ("progress", "sft", "score"):
            out += progress_samples(episode, rng, options.get("cuts", 4), frames, camera, kind,
                                    top_digit)  # fmt: skip
        elif kind == "frozen":
            out += frozen_samples(episode, rng, options.get("frozen_count", 2), frames, camera,
                                  top_digit)  # fmt: skip
        elif kind == "failure":
            out.append(failure_sample(episode, options.get("failure_frames", 16), camera,
                                      options.get("failure_types", FAILURE_TYPES)))  # fmt: skip
        else:
            out += pretext_samples(episode, rng, options.get("pretext_count", 2), frames, camera,
                                   options.get("transforms", TRANSFORMS), joint=kind == "joint")  # fmt: skip
    return out


def seed_split(seed: int, val: float = 0.1, test: float = 0.1) -> str:
    """``train``, ``val`` or ``test`` for an episode seed: a fixed hash, so a seed's split never
    changes as datasets grow, and all samples of an episode share it."""
    u = (int(seed) * 2654435761 % 2**32) / 2**32  # Knuth's multiplicative hash → [0, 1)
    return "test" if u < test else "val" if u < test + val else "train"


def task_split(env_id: str, held_out: Sequence[str]) -> str:
    """``zero_shot`` for tasks held out of training, else ``train``."""
    return "zero_shot" if env_id in held_out else "train"
