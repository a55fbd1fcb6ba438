"""Prompt formats: each one function that builds chat messages plus the videos they show.

A :class:`Prompt` holds ChatML messages whose text marks each visual input with ``<video>``, the
videos in order (single images are one-frame videos), and how to read the answer. :func:`encode`
turns it into what a Qwen-VL model takes: token ids with one ``<|video_pad|>`` per merged patch,
``mm_token_type_ids``, ``pixel_values_videos`` and ``video_grid_thw``.

Formats: anchored progress (initial image, video, current image; PRIMO R1), step-wise progress with
the previous estimate (SOLE-R1), shuffled per-frame progress (GVL), failure detection, pretext
("which transform was applied"; ViSS-R1) and joint (transform and the real question; ViSS-R1).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from critic.base import CriticError, prompt_syntax_problem
from critic.vision import VisionSpec, frames_to_patches, resize_frames

VIDEO = "<video>"
SYSTEM = (
    "You are a critic of robot videos. Reason step by step inside <think></think>, then give "
    "exactly one answer inside <answer></answer>."
)
# The pretext question answers inside <transform> alone: its format reward pays nothing for an
# <answer> tag, so its system message must not ask for one.
PRETEXT_SYSTEM = (
    "You are a critic of robot videos. Reason step by step inside <think></think>, then name "
    "exactly one transform inside <transform></transform>."
)


@dataclass(frozen=True)
class Prompt:
    """Messages with ``<video>`` markers, the videos in order, and the answer format.

    Attributes:
        messages: ChatML messages ``{"role", "content"}``.
        videos: uint8 ``[T, H, W, 3]`` arrays, one per ``<video>`` marker, in order.
        answer: ``"percent"``, ``"digit"``, ``"percent_list"``, ``"verdict"``, ``"transform"``
            or ``"transform+percent"``.
        choices: allowed labels (failure types or transform names), when the format has them.
    """

    messages: tuple[dict, ...]
    videos: tuple[np.ndarray, ...]
    answer: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class PackedPrompt:
    """A :class:`Prompt` whose videos are held zlib-compressed, for a training set's many samples.

    It reads as the prompt it packs: ``messages``, ``answer`` and ``choices`` as they were, and
    ``videos`` unpacked on each read (new, writable arrays equal to the originals). Rendered
    frames are flat colour, so a training set packs 5-14x at zlib level 1 (measured on this
    project's recorded episodes: docs/training.md), and a batch of 32 unpacks in about 20 ms.
    Make one with :func:`pack`.
    """

    messages: tuple[dict, ...]
    packed: tuple[tuple[bytes, tuple[int, ...]], ...]  # (zlib bytes of the uint8 array, shape)
    answer: str
    choices: tuple[str, ...] = ()

    @property
    def videos(self) -> tuple[np.ndarray, ...]:
        import zlib

        return tuple(
            np.frombuffer(bytearray(zlib.decompress(data)), np.uint8).reshape(shape)
            for data, shape in self.packed
        )

    def unpacked(self) -> Prompt:
        return Prompt(self.messages, self.videos, self.answer, self.choices)


def pack(prompt: Prompt | PackedPrompt, level: int = 1) -> PackedPrompt:
    """``prompt`` with its videos compressed (:class:`PackedPrompt`; one already packed as it is).

    Raises:
        ValueError: a video is not uint8 (every prompt of this module holds uint8 frames).
    """
    import zlib

    if isinstance(prompt, PackedPrompt):
        return prompt
    packed = []
    for video in prompt.videos:
        video = np.asarray(video)
        if video.dtype != np.uint8:
            raise ValueError(f"pack() holds uint8 frames; this video is {video.dtype}")
        packed.append((zlib.compress(np.ascontiguousarray(video).data, level), video.shape))
    return PackedPrompt(prompt.messages, tuple(packed), prompt.answer, prompt.choices)


def _image(frame: np.ndarray) -> np.ndarray:
    return np.asarray(frame)[None]


def _user(
    text: str, videos: Sequence[np.ndarray], answer: str, choices=(), system: str = SYSTEM
) -> Prompt:
    if text.count(VIDEO) != len(videos):
        raise ValueError(f"{text.count(VIDEO)} video markers for {len(videos)} videos")
    messages = ({"role": "system", "content": system}, {"role": "user", "content": text})
    # A prompt owns its pixels: a view (the anchor frame ``video[0]``) would keep the whole decoded
    # episode alive for as long as the sample, 3x the memory of a training set's samples.
    owned = tuple(v if v.flags.owndata else v.copy() for v in map(np.asarray, videos))
    return Prompt(messages, owned, answer, tuple(choices))


_SCALES = {
    "percent": "Answer a percentage from 0 to 100.",
    "digit": "Answer one digit from 0 (not started) to 9 (done).",
}


def _scale(scale: str) -> str:
    if scale not in _SCALES:
        raise ValueError(f"scale={scale!r} is not an answer scale; pick one of {list(_SCALES)}")
    return _SCALES[scale]


def anchored_progress(
    instruction: str,
    initial_frame: np.ndarray,
    frames: np.ndarray,
    current_frame: np.ndarray,
    scale: str = "percent",
) -> Prompt:
    """PRIMO R1: progress of the current state, anchored between the first and current images.

    ``scale="digit"`` asks for one digit 0–9: the answer space of the one-pass score readout.
    """
    return _user(
        f"Task: {instruction}\nInitial state: {VIDEO}\nVideo so far: {VIDEO}\n"
        f"Current state: {VIDEO}\nHow far is the task from the initial to the current state? "
        + _scale(scale),
        [_image(initial_frame), frames, _image(current_frame)],
        scale,
    )


def stepwise_progress(
    instruction: str, frames: np.ndarray, previous_progress: float | None, scale: str = "percent"
) -> Prompt:
    """SOLE-R1: progress given the video so far and the previous estimate."""
    previous = "none yet" if previous_progress is None else f"{100 * previous_progress:.0f}%"
    return _user(
        f"Task: {instruction}\nVideo so far: {VIDEO}\nYour previous estimate: {previous}.\n"
        "What is the task progress now? " + _scale(scale),
        [frames],
        scale,
    )


def shuffled_progress(instruction: str, frames: np.ndarray, seed: int) -> tuple[Prompt, np.ndarray]:
    """GVL: frames in a random order; answer each frame's progress in the order shown.

    Returns:
        the prompt and the permutation (shown position → original index).
    """
    order = np.random.default_rng(seed).permutation(len(frames))
    images = [_image(frames[i]) for i in order]
    shown = "\n".join(f"Frame {k + 1}: {VIDEO}" for k in range(len(images)))
    prompt = _user(
        f"Task: {instruction}\nThese frames of one episode are shuffled.\n{shown}\n"
        "Give each frame's task progress, in the order shown, as comma-separated percentages.",
        images,
        "percent_list",
    )
    return prompt, order


def failure_detection(instruction: str, frames: np.ndarray, failure_types: Sequence[str]) -> Prompt:
    """Whole episode → ``success`` or ``failure: <type>``."""
    return _user(
        f"Task: {instruction}\nEpisode: {VIDEO}\nDid the robot succeed? Answer 'success' or "
        f"'failure: <type>' with a type from: {', '.join(failure_types)}.",
        [frames],
        "verdict",
        failure_types,
    )


def pretext(frames: np.ndarray, transforms: Sequence[str]) -> Prompt:
    """ViSS-R1 pretext: which transform was applied to this video."""
    return _user(
        f"Video: {VIDEO}\nWhich transform was applied to this video? One of: "
        f"{', '.join(transforms)}. Answer inside <transform></transform>.",
        [frames],
        "transform",
        transforms,
        system=PRETEXT_SYSTEM,
    )


def joint(instruction: str, frames: np.ndarray, transforms: Sequence[str]) -> Prompt:
    """ViSS-R1 joint: name the transform, then the progress of the *original* video."""
    return _user(
        f"Task: {instruction}\nVideo: {VIDEO}\nThis video may be transformed. First name the "
        f"transform inside <transform></transform> (one of: {', '.join(transforms)}), then give the "
        "task progress the original video shows, a percentage from 0 to 100, inside <answer></answer>.",
        [frames],
        "transform+percent",
        transforms,
    )


def encode(
    prompt: Prompt | PackedPrompt,
    tokenizer,
    spec: VisionSpec | None = None,
    video_token_type: int = 2,
    keep_videos: bool = False,
    memo: dict | None = None,
) -> dict:
    """Prompt → model inputs for one sequence (no batch dimension on the token tensors).

    Args:
        keep_videos: also return the frames (uint8 ``[T, h, w, 3]``, already resized to the
            grid), for engines that run the model's own video processor (vLLM).
        memo: a dict shared by the prompts of one call (one tokenizer and ``spec``): a video
            already patched and a text already tokenised are taken from it, not made again
            (a relabelled episode's queries share their instruction and first frame; 11 % of a
            critic call was encoding). The same tensors are returned, so read them only.

    Returns:
        ``{"input_ids": [L], "mm_token_type_ids": [L], "pixel_values_videos": [N, D],
        "video_grid_thw": [V, 3]}`` (torch tensors), plus ``"videos"`` if ``keep_videos``.
    """
    import torch

    spec = spec or VisionSpec()
    videos = prompt.videos
    if keep_videos:  # resized once here: the patches then come from exactly these frames
        videos = [resize_frames(v, spec).permute(0, 2, 3, 1).numpy() for v in videos]

    def patched(video: np.ndarray):
        if memo is None:
            return frames_to_patches(video, spec)
        frames = np.ascontiguousarray(video)
        digest = hashlib.blake2b(frames.data, digest_size=16).digest()
        key = ("patches", id(spec), frames.shape, frames.dtype.str, digest)
        if key not in memo:
            memo[key] = frames_to_patches(video, spec)
        return memo[key]

    # a text-only prompt has no patches (zip of nothing was a bare unpacking error)
    patches, grids = tuple(zip(*(patched(v) for v in videos), strict=True)) or ((), ())
    messages = [dict(m) for m in prompt.messages]
    pieces = messages[-1]["content"].split(VIDEO)
    text = pieces[0]
    for video, grid, piece in zip(videos, grids, pieces[1:], strict=True):
        text += spec.video_text(tuple(grid[0].tolist()), len(video)) + piece
    messages[-1]["content"] = text
    key = ("ids", id(tokenizer), tuple(tuple(sorted(m.items())) for m in messages))
    if memo is not None and key in memo:
        ids = memo[key]
    else:
        rendered = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        ids = torch.tensor(tokenizer(rendered, add_special_tokens=False).input_ids)
        if memo is not None:
            memo[key] = ids
    video_id = tokenizer.convert_tokens_to_ids("<|video_pad|>")
    encoded = {
        "input_ids": ids,
        "mm_token_type_ids": (ids == video_id).to(torch.int32) * video_token_type,
        "pixel_values_videos": torch.cat(patches) if patches else None,
        "video_grid_thw": torch.cat(grids) if grids else None,
    }
    if keep_videos:
        encoded["videos"] = tuple(videos)
    return encoded


def checked_failure_types(failure_types: Any) -> tuple[str, ...]:
    """``failure_types`` as a tuple of labels, or a :class:`CriticError` naming what is wrong."""
    example = "e.g. failure_types=['stall', 'missed_grasp']"
    if isinstance(failure_types, str):
        raise CriticError(
            f"failure_types={failure_types!r} is one string, not a list of labels (it would be "
            f"read letter by letter); pass a list, e.g. failure_types=[{failure_types!r}]"
        )
    if not isinstance(failure_types, Sequence) or len(failure_types) == 0:
        raise CriticError(
            f"failure_types={failure_types!r} must be a list or tuple of one or more failure "
            f"labels (non-empty strings), {example}"
        )
    for i, label in enumerate(failure_types):
        if not isinstance(label, str) or not label.strip():
            raise CriticError(
                f"failure_types[{i}]={label!r} must be a non-empty string (a failure label), "
                f"{example}"
            )
        if problem := prompt_syntax_problem(f"failure_types[{i}]", label):
            raise CriticError(problem)
        if not re.fullmatch(r"[\w \-]+", label.strip()):
            # "stall: x", "cube fell off!": every verdict naming it was unreadable
            raise CriticError(
                f"failure_types[{i}]={label!r} holds characters a verdict naming it cannot be "
                "read back with: use letters, digits, spaces, '_' and '-', e.g. 'cube_fell_off'"
            )
    return tuple(failure_types)
