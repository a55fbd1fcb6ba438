"""Episode synthesis: scripted experts (with injected failures) or saved RL policies, recorded as
labelled episodes.

One :class:`~envs.plans.EpisodePlan` (task, seed, failure or policy; made by :mod:`envs.plans`)
becomes one :class:`critic.data.episodes.Episode`: the critic's view every ``every`` steps, the
privileged progress and state of each recorded frame, true success, and the failure type and step
the expert reports (``"unknown"`` for a planned failure the episode ended before).
:func:`synthesize` writes plans to a dataset folder with worker processes and skips episodes already
there, so an interrupted run resumes where it stopped. The folder's ``manifest.json``
(:mod:`envs.manifest`) keeps, per task, the options its episodes were recorded with
(:func:`recording_options`); a re-run with other options is refused, not mixed in.

Policy episodes (:func:`envs.plans.plan_policy_episodes`) roll out a stable-baselines3
``policy.zip`` (what ``experiments/zero_shot_rl.py`` saves per run) on the task: the states an RL
learner actually visits, labelled with the simulator's progress, so a critic can be trained on them
(the learned-reward loop; docs/reward_loop.md). Their label is what happened:
``failure_type="unknown"`` when the task was not achieved, ``None`` when it was. With ``hindsight``
the goal is moved, after the rollout (hindsight relabelling, as HER does for goals): ``"near"`` (or
``True``) to near where the policy's arm went, so the same learner poses are seen at and around
success, which a learner's own rollouts rarely reach; ``"uniform"`` to anywhere the task draws its
goals (HER's "random" strategy), so the distance to the goal and the start distance no longer follow
from the learner's pose.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from critic.data.episodes import (
    CODECS,
    Episode,
    episode_of,
    file_in_the_way,
    finished_ids,
)
from envs.errors import InvalidOptionError
from envs.experts import make_expert
from envs.manifest import (
    MANIFEST,
    RECORDING,
    TASK_RECORDING,
    check_folder_options,
    not_writable,
    plain,
)
from envs.plans import (
    EpisodePlan,
    _check_int,
    hindsight_goal,
    hindsight_mode,
    uniform_goal,
)
from envs.policies import check_policy_spaces, load_policy
from envs.tasks import (
    TaskEnv,
    _image_size,
    check_task_kwargs,
    get_task,
    make_task_env,
)
from rollout.files import LOCK, FolderBusyError, holds, lock_folder, release

CAMERA = "view"  # the critic's view (several cameras are already tiled into it by the task)
UNKNOWN_FAILURE = "unknown"  # a failure of no known type (the critic is taught a plain "failure")
POLICY_FAILURE = UNKNOWN_FAILURE  # the label of a policy episode that did not achieve the task

logger = logging.getLogger(__name__)


def _check_recording(
    every: Any = 2, linger: Any = 10, horizon: Any = None, deterministic: Any = False
) -> None:
    """:func:`record_episode`'s counts and switches, checked before any simulator starts."""
    if not isinstance(deterministic, (bool, np.bool_)):
        raise InvalidOptionError(
            f"deterministic={deterministic!r} must be true or false (a policy's mean action, or "
            "actions sampled as in training)"
        )
    _check_int("every", every, 1, " (steps between frames)")
    if linger is not None:
        _check_int("linger", linger, 0, " (steps an expert runs on after success), or null for "
                   "the whole horizon")  # fmt: skip
    if horizon is not None:
        _check_int("horizon", horizon, 1, ", or null for the task's own")


def check_dataset_folder(root: str | Path) -> None:
    """A typed error when the dataset folder cannot be made or written into: it, or the nearest
    of its parents that exists, is a file.

    Raises:
        InvalidOptionError: that file's path, and the fix.
    """
    root = Path(root)
    inside = Path(os.path.abspath(root)).parent
    if (inside / MANIFEST).is_file() and (inside / "episodes").is_dir():
        # out=<dataset>/episodes nested a second dataset among the first's rows
        raise InvalidOptionError(
            f"the dataset folder {str(root)!r} is inside the dataset folder {str(inside)!r} "
            f"(it holds {MANIFEST}); give that folder itself, out={inside}, to add episodes to "
            "it, or a folder outside it"
        )
    existing = file_in_the_way(root)
    if existing is not None:
        where = "is a file" if existing == root else f"cannot be made: {str(existing)!r} is a file"
        raise InvalidOptionError(
            f"the dataset folder {str(root)!r} {where}; pass a folder that does not exist yet or "
            "holds a dataset (out=<folder> in experiments/synthesize.py)"
        )


def _check_tasks_build(plans: Sequence[EpisodePlan], options: dict[str, Any]) -> None:
    """Each task with episodes to record builds with the run's options (its ``task_kwargs``,
    camera and image size), and each plan's policy loads and acts in its task's spaces, before
    any episode is recorded: a bad option value was found at the first episode, after the
    manifest was written and the workers started, and a policy that does not fit stopped a run
    part-way, after the other policies' episodes."""
    by_task: dict[str, dict[str, None]] = {}
    for plan in plans:
        policies = by_task.setdefault(plan.task, {})
        if plan.policy is not None:
            policies[plan.policy] = None
    for task, policies in by_task.items():
        env = make_task_env(task, camera=options.get("camera"), image_size=options.get("image_size"),
                            **check_task_kwargs(options.get("task_kwargs")))  # fmt: skip
        try:
            for path in policies:
                check_policy_spaces(load_policy(path), task, env)
        finally:
            env.close()


def record_episode(
    plan: EpisodePlan,
    every: int = 2,
    image_size: int | tuple[int, int] | None = None,
    linger: int | None = 10,
    horizon: int | None = None,
    camera: Any = None,
    task_kwargs: dict[str, Any] | None = None,
    deterministic: bool = False,
) -> Episode:
    """Run the expert (or the policy) of ``plan`` and record it.

    Args:
        plan: task, seed, failure.
        every: record the critic's view every ``every`` steps (and always the first and last).
        image_size: override the task's view size.
        linger: expert episodes stop this many steps after success (``None``: run the horizon).
            Episodes with an injected failure always run the whole horizon.
        horizon: override the task's horizon.
        camera: override the task's camera(s).
        task_kwargs: task constructor options (e.g. ``{"control_freq": 10}`` for robosuite).
        deterministic: policy plans only: act with the policy's mean action instead of sampling
            (sampling, the default, visits the states a learner explores).

    Raises:
        InvalidOptionError: ``every``, ``linger`` or ``horizon`` is not a count it accepts.
    """
    _check_recording(every, linger, horizon, deterministic)
    spec = get_task(plan.task)
    horizon = horizon or spec.horizon
    expert_run = plan.failure is None and plan.policy is None
    options = check_task_kwargs(task_kwargs)
    env = make_task_env(plan.task, camera=camera, image_size=image_size, **options)
    with contextlib.ExitStack() as scope:
        scope.callback(env.close)
        task = env.unwrapped
        obs, info = env.reset(seed=plan.seed)
        if plan.policy is not None:
            import torch

            # Same plan, same episode; the caller's torch RNG is left as it was.
            scope.enter_context(torch.random.fork_rng(devices=[]))
            model = load_policy(plan.policy)
            check_policy_spaces(model, plan.task, env)
            torch.manual_seed(plan.seed)
            # gSDE (use_sde) drew its exploration noise when the policy was built, from whatever
            # the torch RNG held then: the same plan gave other episodes by load order or worker
            if getattr(getattr(model, "actor", None), "use_sde", False) or getattr(
                model, "use_sde", False
            ):
                model.reset_noise()

            def act() -> np.ndarray:
                return model.predict(obs, deterministic=deterministic)[0]

        else:
            expert = make_expert(plan.task, plan.failure)
            expert.reset(task, seed=plan.seed, horizon=horizon)  # its deadlines fall inside

            def act() -> np.ndarray:
                return expert.act(task)

        frames, progress, steps, states, sims = [], [], [], [], []

        def record(step: int, info: dict) -> None:
            steps.append(step)
            if plan.hindsight:  # drawn and labelled once the goal is known, below
                sims.append(task.sim_state())
                return
            frames.append(task.render_critic_view())
            progress.append(float(info["progress"]))
            states.append(task.privileged_state())

        record(0, info)
        success_at = None
        step = 0
        for step in range(1, horizon + 1):
            obs, _, terminated, truncated, info = env.step(act())
            if info["is_success"] and success_at is None:
                success_at = step
            done = terminated or truncated or step == horizon
            if expert_run and linger is not None and success_at is not None:
                done = done or step - success_at >= linger
            if step % every == 0 or done:
                record(step, info)
            if done:
                break
        success = bool(info["is_success"])
        if plan.hindsight:
            success = _relabel_in_hindsight(
                task, sims, plan.seed, frames, progress, states, hindsight_mode(plan.hindsight)
            )
    failure_step = expert.failure_step if plan.failure is not None else None
    raw = np.asarray(progress, np.float32)
    # An expert that succeeds never regresses on purpose: its label is the running maximum of the
    # privileged progress, whose stage formulas dip briefly where a stage's condition flips
    # (PickPlaceCan's grasp check at release, Door's handle at the swing). So is an injected
    # failure's before its failure step: those frames are the expert's own, pixel for pixel (the
    # raw curve taught them other targets, Door's by up to 0.16, Pusher's 0.06). After it, and in
    # policies and an expert that failed, the raw curve: there a drop is real (a Pusher expert's
    # object sliding from 7.9 to 9.1 cm of the goal read as flat).
    label = np.maximum.accumulate(raw) if expert_run and success else raw.copy()
    if plan.failure is not None and failure_step is not None:
        before = np.asarray(steps) < failure_step  # a prefix: steps rise
        label[before] = np.maximum.accumulate(raw[before])
    if plan.policy is not None:
        failure_type = None if success else POLICY_FAILURE
    elif success:  # an injected failure that did not stop the task is no failure
        failure_type = None
    elif plan.failure is not None and failure_step is None:
        # The planned failure never happened (the episode ended before its trigger: a horizon too
        # short for it), so its type would be a false label; the expert may still have strayed
        # from its plan for it (a missed grasp aims beside the object from the start), so the
        # episode is not an expert's either: a failure of no known type.
        failure_type = UNKNOWN_FAILURE
    elif expert_run:
        # the expert missed the goal by itself (4 % of Pusher's at its horizon): no expert
        # demonstration, so not one for the expert metrics and probes, and no failure it planned
        failure_type = UNKNOWN_FAILURE
    else:
        failure_type = plan.failure
    return Episode(
        episode_id=plan.episode_id,
        env_id=plan.task,
        instruction=spec.instruction,
        frames={CAMERA: np.stack(frames)},
        progress=label,
        steps=np.asarray(steps, np.int64),
        success=success,
        failure_type=failure_type,  # the label is what happened
        failure_step=failure_step if not success else None,
        fps=float(task.metadata.get("render_fps", 20)) / every,
        seed=plan.seed,
        state={k: np.asarray([s[k] for s in states], np.float32) for k in states[0]},
    )


def _relabel_in_hindsight(
    task: TaskEnv,
    sims: list,
    seed: int,
    frames: list,
    progress: list,
    states: list,
    mode: str | None = "near",
) -> bool:
    """Move the goal, then draw and label every recorded state against it; returns the relabelled
    episode's success.

    ``"near"``: the anchor is a recorded state from the second quarter of the episode on (a learner
    that ends at the goal, or passes it on the way), and the goal lies within
    :data:`envs.plans.HINDSIGHT_RADIUS` of what that state achieved. ``"uniform"``: anywhere in
    the goal disc.
    """
    rng = np.random.default_rng([seed, 0x48534754])  # the plan's seed, a stream of its own
    if mode == "uniform":
        goal = uniform_goal(rng)
    else:
        anchor = int(rng.integers(len(sims) // 4, len(sims)))
        task.restore_sim_state(sims[anchor])
        goal = hindsight_goal(task.achieved_goal(), rng)
    for i, sim in enumerate(sims):
        task.restore_sim_state(sim)
        task.move_goal(goal, restart=i == 0)
        frames.append(task.render_critic_view())
        progress.append(task.task_info()["progress"])  # checked, as every recorded label
        states.append(task.privileged_state())
    return task.task_info()["is_success"]


def recording_options(task: str, codec: str = "ffv1", **options: Any) -> dict[str, Any]:
    """What decides the content of an episode of ``task`` beyond its id, as plain JSON values:
    :func:`record_episode`'s options (its defaults where not given; the task's own image size and
    horizon where ``None``; one camera as a list of one) and the video codec.

    The id already names the task, seed, injected failure, policy file (its digest) and hindsight
    mode, so plans that differ in those (``failure_fraction``, ``failures``, ``first_seed``,
    ``policies``, ``hindsight``) are other episodes, recorded beside the ones there.
    """
    defaults = {
        name: p.default
        for name, p in inspect.signature(record_episode).parameters.items()
        if name != "plan"
    }
    given = {**defaults, **options}
    spec = get_task(task)
    size, camera = given["image_size"], given["camera"]
    sides = (spec.view.height, spec.view.width) if size is None else _image_size(size)
    if camera is None:  # the task's own, so naming it gives the same record
        camera = list(spec.view.cameras)
    # the task constructor's own options at their defaults, so naming a default changes nothing
    own = {
        name: p.default
        for name, p in inspect.signature(spec.make).parameters.items()
        if name not in ("spec", "view", "render_mode") and p.default is not p.empty
    }
    return plain(
        {
            "every": given["every"],
            "linger": given["linger"],
            "horizon": given["horizon"] or spec.horizon,  # as record_episode reads it
            "image_size": sides,
            "camera": list(camera) if isinstance(camera, list | tuple) else [camera],
            "task_kwargs": {**own, **check_task_kwargs(given["task_kwargs"])},
            "deterministic": given["deterministic"],
            "codec": codec,
            "recording": TASK_RECORDING.get(task, RECORDING),
            **task_definition(task),
        }
    )


def task_definition(task: str) -> dict[str, Any]:
    """What in this process defines ``task``'s episodes beyond the options: the spec's ``make``,
    instruction and view (a digest), and the scripted expert's class (``None``: none). A task or
    expert of one's own (``imports=``), or a built-in one replaced, records other episodes under
    the same ids."""
    from envs.experts import _EXPERTS, _load_experts

    spec = get_task(task)
    _load_experts()
    expert = _EXPERTS.get(task)
    view = hashlib.sha1(repr(spec.view).encode()).hexdigest()[:10]
    return {
        "definition": f"{_qualname(spec.make)} {spec.instruction!r} view {view}",
        "expert": None if expert is None else _qualname(expert),
    }


def _qualname(obj: Any) -> str:
    """A callable's name, the same in every process: a partial's function and arguments, an
    instance's class (a default repr holds a memory address)."""
    if isinstance(obj, functools.partial):
        arguments = [*map(repr, obj.args), *(f"{k}={v!r}" for k, v in obj.keywords.items())]
        named = f"{_qualname(obj.func)}({', '.join(arguments)})"
    elif hasattr(obj, "__qualname__"):
        named = f"{obj.__module__}.{obj.__qualname__}"
    else:
        named = f"{type(obj).__module__}.{type(obj).__qualname__} instance"
    return re.sub(r" at 0x[0-9a-f]+", "", named)


def _check_h264_sides(task: str, recording: dict[str, Any]) -> None:
    """h264 encodes even frame sides only: a frame is the view's size, its cameras side by
    side (:meth:`envs.tasks.TaskEnv.render_critic_view`)."""
    (height, width), cameras = recording["image_size"], len(recording["camera"])
    if height % 2 or (width * cameras) % 2:
        tiled = f" per camera, {cameras} cameras side by side" if cameras > 1 else ""
        raise InvalidOptionError(
            f"codec='h264' needs even frame sides, but {task}'s frames would be "
            f"{height}x{width * cameras} (image_size [{height}, {width}]{tiled}); use "
            "codec='ffv1' or an even env.image_size"
        )


def _count_of(task: str, episode_ids: set[str]) -> int:
    """How many of ``episode_ids`` are episodes of ``task`` (ids start ``<task>-<seed>-``)."""
    return sum(1 for i in episode_ids if episode_of(task, i))


def synthesize(
    plans: Sequence[EpisodePlan],
    root: str | Path,
    workers: int = 1,
    codec: str = "ffv1",
    progress_bar: bool = True,
    **options: Any,
) -> list[dict[str, Any]]:
    """Record and write every plan not yet in ``root``; returns one summary row per new episode.

    Args:
        plans: what to record.
        root: the dataset folder.
        workers: processes (each builds its own simulators; ``spawn`` keeps GL contexts apart).
        codec: ``ffv1`` (lossless) or ``h264``.
        progress_bar: show tqdm's bar.
        **options: passed to :func:`record_episode` (``every``, ``image_size``, ``linger``, ...).

    ``root``'s manifest (:mod:`envs.manifest`) records, per task, the options its episodes are
    recorded with (:func:`recording_options`), written before the first episode of the task;
    episodes already there are skipped only when they were recorded with this call's options.

    An episode that fails, a worker process that dies (``BrokenProcessPool``) or Ctrl-C
    (``KeyboardInterrupt``) stops the run: plans not yet started are dropped, episodes being
    recorded in other workers finish, and the error is raised. The episodes written are kept; the
    same call again records the rest.

    Raises:
        InvalidOptionError: a bad ``workers``, ``codec`` or count in ``options``, ``h264`` with
            a frame side that is odd (the view's size, its cameras side by side), a ``root``
            that is a file (or lies under one), or ``root`` holding episodes of a planned task
            recorded with other options (each differing option, the folder's value and this
            call's); raised before any episode is recorded.
    """
    _check_int("workers", workers, 1)
    affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere every core
    if workers > (cores := len(affinity(0)) if affinity else os.cpu_count() or 1):
        logger.warning(
            f"workers={workers} is more than the {cores} cores this process may use: the workers "
            "take turns, each holding its own simulators and memory, and record fewer episodes "
            f"a minute than workers={cores} would; use workers={cores}"
        )
    if not isinstance(codec, str) or codec not in CODECS:
        raise InvalidOptionError(f"codec={codec!r} is not supported; pick one of {list(CODECS)}")
    _check_recording(
        **{k: options[k] for k in ("every", "linger", "horizon", "deterministic") if k in options}
    )
    check_task_kwargs(options.get("task_kwargs"))
    check_dataset_folder(root)  # before any episode is recorded, not when the first is written
    root = Path(root)
    tasks = dict.fromkeys(p.task for p in plans)
    recorded_with = {task: recording_options(task, codec, **options) for task in tasks}
    for task, recording in recorded_with.items():  # policy rollouts alone: no expert records
        if all(p.policy is not None for p in plans if p.task == task):
            recording["expert"] = None
    if codec == "h264":
        for task, recording in recorded_with.items():
            _check_h264_sides(task, recording)
    # the folder's lock, from reading what it holds to the last episode written: two runs into
    # one out= both passed the check before either wrote, then mixed their episodes; and a run
    # that read the folder before the lock (its policies load for seconds) took another's
    # finished episodes for none, and wrote its own options over theirs
    made = not root.exists()
    try:  # held already where out= is the run dir: the run-dir guard's lock is the same one
        lock = None if holds(root) else lock_folder(root, "synthesize.py run (out=)")
    except FolderBusyError as exc:
        raise InvalidOptionError(str(exc)) from None
    except OSError as exc:
        raise not_writable(root, exc) from None
    try:
        done = finished_ids(root)
        todo = [p for p in plans if p.episode_id not in done]
        _check_tasks_build(todo, options)
        check_folder_options(root, recorded_with, {task: _count_of(task, done) for task in tasks},
                             {task: recording_options(task, codec) for task in tasks})  # fmt: skip
        from envs.synth_workers import record_all  # its workers import this module

        return record_all(plans, todo, root, codec, workers, progress_bar, options)
    finally:
        if made and not finished_ids(root):  # refused, or stopped before its first episode
            _remove_unused(root)  # under the lock: another run may take it once given back
        release(lock)


def _remove_unused(root: Path) -> None:
    """Remove the folder this run made and recorded no episode in: its lock, its manifest (a
    bad camera was refused after the manifest recorded it) and empty subfolders. Anything
    else in it stays, and so does the folder then."""
    for name in (LOCK, MANIFEST):
        (root / name).unlink(missing_ok=True)
    for sub in (root / "episodes", root / "videos"):
        if sub.is_dir() and not any(sub.iterdir()):
            sub.rmdir()
    if not any(root.iterdir()):
        root.rmdir()
