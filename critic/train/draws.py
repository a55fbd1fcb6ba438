"""What a training stage draws its batches from: the samples of the ``data`` folders, a teacher's
labels on them, each folder's share of the draws, and the format-only warm start's shuffled
labels. :class:`critic.train.recipe.Trainer` calls these once per stage.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from omegaconf import DictConfig


def load_samples(
    cfg: DictConfig,
    kinds: tuple[str, ...],
    split: str,
    limit: int | None = None,
    stream: str | None = None,
) -> list:
    """Samples of ``kinds`` from the episodes of ``split`` (by seed), held-out tasks excluded.

    The draws (cuts, windows, transforms) come from ``cfg.seed``, or, given a ``stream`` name
    (a GRPO stage's), from a stream of their own: the pretext and joint stages drew the same
    windows and transforms from the run's seed, so the second replayed the first's clips.

    ``limit`` (the validation set) is shared out evenly over the ``data`` folders, in their
    order, so a mixed run validates on every dataset and not only the first. Each sample's
    ``meta["data_folder"]`` is the index of its folder in ``cfg.data``. An episode's clips have
    ``cfg.task_frames[its task]`` frames, else ``cfg.frames``. With ``cfg.pack_samples`` (the
    default) each sample's videos are held zlib-packed (:func:`critic.prompts.pack`, lossless).
    """
    from critic import prompts
    from critic.data.episodes import iter_rows, read_episode
    from critic.data.samples import build_samples, seed_split
    from rollout.checks import is_int

    pack = bool(cfg.get("pack_samples", True))

    rng = np.random.default_rng(cfg.seed if stream is None else [int(cfg.seed), *stream.encode()])
    held = set(cfg.get("held_out_tasks") or [])
    task_frames = dict(cfg.get("task_frames") or {})
    vocabulary = data_failure_types(cfg)  # the same list in every prompt, whatever its episode
    samples = []
    for index, folder in enumerate(cfg.data):
        quota = None if limit is None else limit // len(cfg.data) + (index < limit % len(cfg.data))
        taken: list = []
        episodes = kept = chosen = 0  # in the folder; of a task not held out; in the split
        # rows first, videos only of the episodes chosen: every episode was decoded, then most
        # dropped (a validation load decoded 177 of 200 episodes for its 64 samples)
        for episode_id, row in iter_rows(folder):
            if quota is not None and len(taken) >= quota:
                break
            episodes += 1
            env_id, seed = row.get("env_id"), row.get("seed")
            if not (isinstance(env_id, str) and is_int(seed)):  # read_episode names the field
                read_episode(folder, episode_id)
            if env_id in held:
                continue
            kept += 1
            if seed_split(seed) != split:
                continue
            chosen += 1
            episode = read_episode(folder, episode_id)
            frames = task_frames.get(episode.env_id, cfg.frames)
            built = build_samples(episode, kinds, rng, frames=frames, cuts=cfg.cuts,
                                  frozen_count=cfg.frozen_count, pretext_count=cfg.pretext_count,
                                  transforms=tuple(cfg.transforms), failure_types=vocabulary,
                                  top_digit=cfg.get("top_digit", "round"))  # fmt: skip
            for sample in built:
                sample.meta["data_folder"] = index
                if pack:  # each episode's clips packed as built: the set's peak is the packed size
                    sample.prompt = prompts.pack(sample.prompt)
            taken += built
        if split == "train" and len(cfg.data) > 1 and not taken and (kept or not episodes):
            # with other folders to draw from it was left out without a word, its data_weights
            # share going to them (one folder alone: the recipe's own message); a folder of
            # held-out tasks alone is left out as asked
            from critic.train.config import TrainConfigError

            weight = cfg.get("data_weights")
            asked = "" if weight is None else f" (data_weights gives it {weight[index]})"
            why = (
                f"its {chosen} train episodes give no samples of kinds {list(kinds)}"
                if chosen
                else f"of its {episodes} episodes, {kept} are of tasks not held out and none of "
                "those is in the train split (episodes are split by seed, about 80 % train, "
                "10 % val and 10 % test: critic.data.samples.seed_split); record more there "
                "with other first_seed="
            )
            raise TrainConfigError(
                f"data[{index}]={folder} gives no train samples{asked}: {why}; or leave it out "
                "of data="
            )
        samples += taken[:quota]
    return samples


def label_with_teacher(cfg: DictConfig, samples: list, batch: int = 64) -> int:
    """Give the digit-answer (``score``, ``frozen``) samples of ``cfg.teacher_tasks`` (``null``:
    every task) and of ``cfg.teacher_data`` (``data`` folders; ``null``: every folder) the
    teacher's distribution over the ten answer digits, read from the same prompt
    (``sample.target["digit_probs"]``); SFT then distils it (:mod:`critic.train.sft`). Returns
    how many samples it labelled.

    The teacher (``cfg.teacher``, a checkpoint folder) keeps what it reads on those tasks while
    the student learns others: a student trained further on true labels alone drifts from it.
    The samples of the other folders keep their true labels, so a round can keep the teacher's
    reading of one dataset and correct it on another of the same task.
    """
    from critic.factory import make_critic

    tasks = None if cfg.get("teacher_tasks") is None else set(cfg.teacher_tasks)
    folders = None if cfg.get("teacher_data") is None else teacher_folders(cfg)
    chosen = [s for s in samples if s.kind in ("score", "frozen")
              and (tasks is None or s.env_id in tasks)
              and (folders is None or s.meta["data_folder"] in folders)]  # fmt: skip
    if not chosen:
        return 0
    teacher = make_critic({"name": str(cfg.teacher), "device": cfg.device, "cache": False})
    own = {str(t): int(n) for t, n in (cfg.get("task_frames") or {}).items()}
    known = getattr(teacher, "trained_tasks", None)  # None: not recorded (any task may be)
    for task in sorted({s.env_id for s in chosen}):
        theirs, mine = teacher.clip_frames_for(task), own.get(task, int(cfg.frames))
        if theirs is None or theirs == mine or (known is not None and task not in known):
            continue
        matched = ", ".join(f"{t}: {n}" for t, n in {**own, task: theirs}.items())
        logging.getLogger(__name__).warning(  # read at a length it never learned
            "the teacher %s was trained on %s at %d frames per clip and reads this run's clips "
            "of %d (frames=, task_frames=): its readings there may mean little; give "
            "'task_frames={%s}' to read it as it was trained",
            cfg.teacher, task, theirs, mine, matched,
        )  # fmt: skip
    try:
        for start in range(0, len(chosen), batch):
            part = chosen[start : start + batch]
            probs = teacher.digit_probs([s.prompt for s in part])
            for sample, row in zip(part, probs, strict=True):
                sample.target["digit_probs"] = [float(p) for p in row]
    finally:
        teacher.close()
    return len(chosen)


def teacher_folders(cfg: DictConfig) -> set[int]:
    """The indices in ``cfg.data`` of the folders ``cfg.teacher_data`` names (each as written in
    ``data``; :func:`critic.train.config.check_config` has checked that every one is there)."""
    data = [str(d) for d in cfg.data]
    return {data.index(str(folder)) for folder in cfg.teacher_data}


def draw_probabilities(
    cfg: DictConfig, samples: list
) -> tuple[np.ndarray | None, dict[str, float]]:
    """Each training sample's chance per batch draw, and each ``data`` folder's share of the draws.

    ``data_weights`` (one per folder) multiplies the chance of that folder's samples: weight 3
    draws them three times as often as weight 1. Without it every sample is equally likely, and
    the chances are ``None`` (the draws are the unweighted ones, so earlier runs repeat exactly).
    """
    folders = np.asarray([s.meta["data_folder"] for s in samples], dtype=int)
    weights = cfg.get("data_weights")
    chance = np.ones(len(samples)) if weights is None else np.asarray(list(weights), float)[folders]
    chance = chance / chance.sum()
    shares = {str(folder): float(chance[folders == i].sum()) for i, folder in enumerate(cfg.data)}
    return (None if weights is None else chance), shares


def draw_batch(rng: np.random.Generator, count: int, size: int, chance: np.ndarray | None):
    """The indices of one batch's ``size`` samples out of ``count``, drawn with
    :func:`draw_probabilities`'s ``chance``. Weighted draws are with replacement: drawn without,
    a small folder of high weight cannot fill its share of a batch (40 samples at weight 10
    beside 200 at weight 1 got 60 % of the draws, not 67 %). Unweighted ones are without, where
    there are enough samples (the draws of earlier runs)."""
    return rng.choice(count, size=size, replace=count < size or chance is not None, p=chance)


def shuffled_labels(samples: list, rng: np.random.Generator) -> list:
    """Format-only warm start: each sample gets the completion of a random sample of the same
    kind, so SFT teaches the answer format but not the answers (the model stays at chance, and a
    later GRPO stage has to learn the answers from its rewards)."""
    from dataclasses import replace

    by_kind: dict[str, list] = {}
    for s in samples:
        by_kind.setdefault(s.kind, []).append(s.completion)
    return [
        replace(s, completion=by_kind[s.kind][int(rng.integers(len(by_kind[s.kind])))])
        for s in samples
    ]


def data_failure_types(cfg: DictConfig, rows: list | None = None) -> tuple[str, ...]:
    """The failure types the run's prompts offer (:func:`critic.data.samples.failure_vocabulary`
    of its ``data`` folders' labels; ``rows``: :func:`_trained_rows`, read already)."""
    from critic.data.samples import failure_vocabulary

    return failure_vocabulary(row.get("failure_type") for row in rows or _trained_rows(cfg))


def _trained_rows(cfg: DictConfig, by_folder: list[list] | None = None) -> list:
    """The table rows of the ``data`` folders' episodes (no video decoding), held-out tasks left
    out: their tasks and failure types stay unseen (``by_folder``: :func:`_folder_rows`, read
    already)."""
    held = set(cfg.get("held_out_tasks") or [])
    rows = (row for rows in by_folder or _folder_rows(cfg) for row in rows)
    return [row for row in rows if row.get("env_id") not in held]


def _folder_rows(cfg: DictConfig) -> list[list]:
    """Each ``data`` folder's table rows, in ``data`` order."""
    from critic.data.episodes import read_table

    return [read_table(folder) for folder in cfg.data]


def data_views(
    cfg: DictConfig, tasks: set[str], by_folder: list[list] | None = None
) -> dict[str, dict[str, Any]]:
    """The view (``image_size`` and ``camera``) each of ``tasks`` was recorded at in the ``data``
    folders, as their ``manifest.json`` gives it (envs.manifest writes it; read here as JSON, so
    the critic does not import the simulators). A task with a folder that gives no view, or two
    folders that give two, or a manifest that names none (an older one's ``camera: null``), has
    none: no view to hold an env to (``by_folder``:
    :func:`_folder_rows`, read already)."""
    import json
    from pathlib import Path

    seen: dict[str, list] = {}
    for folder, rows in zip(cfg.data, by_folder or _folder_rows(cfg), strict=True):
        try:
            recorded = json.loads((Path(str(folder)) / "manifest.json").read_text())["tasks"]
        except (OSError, ValueError, KeyError, TypeError):
            recorded = {}
        for task in {str(row.get("env_id")) for row in rows} & tasks:
            options = recorded.get(task) if isinstance(recorded, dict) else None
            view = (
                {key: options.get(key) for key in ("image_size", "camera")}
                if isinstance(options, dict)
                else None
            )
            if view is not None and not all(isinstance(v, list) for v in view.values()):
                # a manifest from before 2026-12-05 wrote the task's own camera as null: which
                # one is the simulators' to say, not the critic's (every env was warned of)
                view = None
            seen.setdefault(task, []).append(view)
    return {
        task: found[0]
        for task, found in seen.items()
        if found[0] is not None and all(v == found[0] for v in found)
    }


def record_draws(config: Any, cfg: DictConfig) -> None:
    """Record in a model's ``config`` (saved with every checkpoint) how its samples were drawn,
    replacing what the starting checkpoint recorded: its clip length and the tasks trained at
    another (the reward and the evaluator send as many frames per query unless told otherwise:
    :meth:`critic.Critic.clip_frames_for`; a task only the starting checkpoint was trained on
    keeps its length), and the failure types its prompts offered (:func:`data_failure_types`),
    which a critic loaded from it offers too; and the tasks it was trained on, added to the
    starting checkpoint's (held-out ones left out)."""
    from critic.models import (
        CLIP_FRAMES_KEY,
        FAILURE_TYPES_KEY,
        TASK_CLIP_FRAMES_KEY,
        TASK_VIEWS_KEY,
        TRAINED_TASKS_KEY,
    )

    by_folder = _folder_rows(cfg)  # one read of the tables for all
    rows = _trained_rows(cfg, by_folder)
    before = getattr(config, TRAINED_TASKS_KEY, None) or []  # the starting checkpoint's
    trained = {row.get("env_id") for row in rows} - {None, ""}
    # A task the starting checkpoint was trained on and this run's data lacks keeps the clip
    # length it was trained at: it had been recorded at frames=, and a run on Pusher alone from
    # a checkpoint reading Reacher at 1 frame sent Reacher 8 (task_frames= cannot name a task
    # without data, so it could not be restated)
    old_frames = getattr(config, CLIP_FRAMES_KEY, None)
    old_task_frames = dict(getattr(config, TASK_CLIP_FRAMES_KEY, None) or {})
    kept = {
        str(task): int(old_task_frames.get(task, old_frames))
        for task in sorted({*before, *old_task_frames})  # a length recorded before the task list
        if task not in trained and old_task_frames.get(task, old_frames) is not None
    }
    task_frames = {str(task): int(n) for task, n in (cfg.get("task_frames") or {}).items()}
    task_frames = {
        **{t: n for t, n in kept.items() if n != int(cfg.frames)},
        **task_frames,
    }
    setattr(config, CLIP_FRAMES_KEY, int(cfg.frames))
    setattr(config, TASK_CLIP_FRAMES_KEY, task_frames)
    setattr(config, FAILURE_TYPES_KEY, list(data_failure_types(cfg, rows)))
    setattr(config, TRAINED_TASKS_KEY, sorted({*before, *trained}))
    # the view of each task trained here; a task only the starting checkpoint was trained on
    # keeps the view it recorded
    views = {
        task: view
        for task, view in (getattr(config, TASK_VIEWS_KEY, None) or {}).items()
        if task not in trained
    }
    setattr(config, TASK_VIEWS_KEY, {**views, **data_views(cfg, trained, by_folder)})
