"""Episode plans: what :func:`envs.synth.synthesize` records, one :class:`EpisodePlan` per
episode (task, seed, and an injected failure or a saved policy), checked before any simulator
starts; and the hindsight goals a policy episode's goal may be moved to."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from critic.data.episodes import POLICY_MARK
from envs.errors import InvalidOptionError
from envs.experts import failure_types, planned_failure_types
from envs.policies import policy_digest
from envs.tasks import TaskEnv, get_task, task_names
from rollout.checks import is_int, is_number

HINDSIGHT_RADIUS = 0.05  # m: hindsight goals lie within this of the reached point (Reacher: 2.5×
# its 2 cm success radius, so a near miss is as likely as a success)
HINDSIGHT_MODES = ("near", "uniform")  # where a hindsight goal goes (True means "near")
GOAL_BOUND = 0.2  # m: Reacher draws its targets uniformly in this disc around the arm's base
_FIRST_SEED_FIX = " (episode seeds are first_seed, first_seed + 1, ...)"
MAX_SEED = 2**63 - 1  # an episode's row stores its seed as an int64


def _point_in_disc(rng: np.random.Generator, radius: float) -> np.ndarray:
    """A point uniform over the area of the disc of ``radius`` around the origin."""
    distance = radius * np.sqrt(rng.uniform())
    angle = rng.uniform(0.0, 2.0 * np.pi)
    return distance * np.array([np.cos(angle), np.sin(angle)])


def hindsight_goal(
    reached: np.ndarray, rng: np.random.Generator, bound: float = GOAL_BOUND
) -> np.ndarray:
    """A goal uniform in the disc of :data:`HINDSIGHT_RADIUS` around a reached point, pulled into
    the task's goal disc of radius ``bound`` (Reacher samples its targets within 0.2 m)."""
    goal = np.asarray(reached, np.float64)[:2] + _point_in_disc(rng, HINDSIGHT_RADIUS)
    norm = float(np.linalg.norm(goal))
    return goal * (bound / norm) if norm > bound else goal


def uniform_goal(rng: np.random.Generator, bound: float = GOAL_BOUND) -> np.ndarray:
    """A goal uniform over the area of the task's goal disc of radius ``bound`` (how Reacher-v5
    draws its targets: uniform in the square, rejected outside the disc)."""
    return _point_in_disc(rng, bound)


def hindsight_mode(value: Any) -> str | None:
    """``hindsight`` as given (``False``/``None``, ``True``, ``"near"``, ``"uniform"``) as the
    strategy's name, ``None`` for none.

    Raises:
        InvalidOptionError: anything else.
    """
    if isinstance(value, np.bool_):  # numpy's bools are not `is True`
        value = bool(value)
    if value is None or value is False:
        return None
    if value is True:
        return "near"
    if isinstance(value, str) and value in HINDSIGHT_MODES:
        return value
    raise InvalidOptionError(
        f"hindsight={value!r} must be false, true (the same as near) or one of "
        f"{list(HINDSIGHT_MODES)}: near moves the goal to near where the arm went, uniform to "
        f"anywhere the task draws its goals"
    )


def _check_int(name: str, value: Any, minimum: int, fix: str = "") -> None:
    """A typed error unless ``value`` is an integer (Python's or numpy's, not a bool) of at least
    ``minimum``."""
    if not is_int(value) or value < minimum:
        raise InvalidOptionError(f"{name}={value!r} must be an integer >= {minimum}{fix}")


def _check_seeds(first_seed: Any, episodes: Any) -> None:
    """``first_seed`` and ``episodes`` as counts, and the last seed they give one an episode's row
    can store."""
    _check_int("episodes", episodes, 1)
    _check_int("first_seed", first_seed, 0, _FIRST_SEED_FIX)
    last = int(first_seed) + int(episodes) - 1
    if last > MAX_SEED:
        raise InvalidOptionError(
            f"first_seed={first_seed} with episodes={episodes} gives seeds up to {last}, past the "
            f"largest an episode stores ({MAX_SEED}); pass first_seed <= {MAX_SEED - episodes + 1}"
        )


@dataclass(frozen=True)
class EpisodePlan:
    """What to record: ``failure=None`` is an expert episode; ``policy`` (a saved SB3 model's path)
    replaces the expert with that policy; ``hindsight`` (policies only) moves the goal afterwards:
    ``True`` or ``"near"`` to near a point the policy reached (:func:`hindsight_goal`),
    ``"uniform"`` to anywhere in the task's goal disc (:func:`uniform_goal`)."""

    task: str
    seed: int
    failure: str | None = None
    policy: str | None = None
    hindsight: bool | str = False

    def __post_init__(self) -> None:
        # an expert plan with hindsight had the plain expert's id, and relabelled nothing
        if self.policy is None and hindsight_mode(self.hindsight) is not None:
            raise InvalidOptionError(
                f"hindsight={self.hindsight!r} relabels a policy's rollouts: give policy=<a "
                "saved SB3 model> with it, or leave hindsight out for an expert episode"
            )

    @property
    def episode_id(self) -> str:
        if self.policy is not None:
            mode = hindsight_mode(self.hindsight)
            tail = {None: "", "near": "-hindsight", "uniform": "-hindsight_uniform"}[mode]
            return f"{self.task}-{self.seed:06d}{POLICY_MARK}{policy_digest(self.policy)}{tail}"
        return f"{self.task}-{self.seed:06d}-{self.failure or 'expert'}"


def plan_policy_episodes(
    task: str,
    policies: Sequence[str],
    episodes: int,
    first_seed: int = 0,
    hindsight: bool | str = False,
) -> list[EpisodePlan]:
    """``episodes`` plans per policy, on seeds ``first_seed, first_seed + 1, ...`` (every policy
    meets the same targets).

    Args:
        hindsight: move each episode's goal, after the rollout (tasks with a movable goal:
            Reacher-v5): ``True`` or ``"near"`` to near a point the policy reached, ``"uniform"``
            to anywhere the task draws its goals; ``False`` keeps the goal.

    Raises:
        InvalidOptionError: a bad count or first seed (the last seed must be at most
            :data:`MAX_SEED`), no policies, a policy file that cannot be read or is listed twice, or ``hindsight`` on a task whose goal cannot move. Whether
            each policy acts in the task's spaces (built with the run's ``task_kwargs``) is
            checked by :func:`envs.synth.synthesize`, before it records anything.
    """
    get_task(task)  # the registry's typed error for an unknown task
    mode = hindsight_mode(hindsight)
    if mode is not None and not _goal_movable(task):
        movable = [t for t in task_names() if _goal_movable(t)]
        raise InvalidOptionError(
            f"hindsight={str(hindsight).lower()} needs a task whose goal can move without changing the dynamics; "
            f"{task}'s cannot. Tasks that can: {movable}"
        )
    _check_seeds(first_seed, episodes)
    if isinstance(policies, (str, os.PathLike)):
        policies = [policies]
    elif not isinstance(policies, Sequence):
        raise InvalidOptionError(
            f"policies={policies!r} must be a policy.zip path or a list of them"
        )
    policies = list(policies)
    if not policies:
        raise InvalidOptionError(
            "policies=[] names no policy; pass one or more policy.zip paths, or leave it out "
            "(null) for expert episodes"
        )
    digests: dict[str, str] = {}
    for path in policies:
        digest = policy_digest(str(path))
        if digest in digests:
            raise InvalidOptionError(
                f"policies lists {path} and {digests[digest]}, one file: each episode would be "
                "recorded twice under one id; list each policy once"
            )
        digests[digest] = str(path)
    return [EpisodePlan(task, int(first_seed) + i, policy=str(path), hindsight=mode or False)
            for path in policies for i in range(episodes)]  # fmt: skip


def _goal_movable(task: str) -> bool:
    make = get_task(task).make
    return isinstance(make, type) and make.move_goal is not TaskEnv.move_goal


def plan_episodes(
    task: str,
    episodes: int,
    failure_fraction: float = 0.5,
    first_seed: int = 0,
    failures: Sequence[str] | None = None,
) -> list[EpisodePlan]:
    """``episodes`` plans on consecutive seeds; a ``failure_fraction`` share inject failures,
    cycling through ``failures`` so each gets its share.

    Args:
        failures: the failure types (or one type) to cycle through; ``None``: the task's planned ones
            (:func:`envs.experts.planned_failure_types`; opt-in types such as Reacher's
            ``"flail"`` are asked for by name).

    Raises:
        InvalidOptionError: a bad count, first seed (the last seed must be at most
            :data:`MAX_SEED`), fraction or failure type, or a task without an expert.
    """
    _check_seeds(first_seed, episodes)
    if not (is_number(failure_fraction) and 0.0 <= failure_fraction <= 1.0):
        raise InvalidOptionError(f"failure_fraction={failure_fraction!r} must be in [0, 1]")
    if failures is None:
        kinds = planned_failure_types(task)
    else:
        kinds = (failures,) if isinstance(failures, str) else tuple(failures)  # one name, or many
        unknown = [k for k in kinds if k not in failure_types(task)]
        if unknown or not kinds:
            raise InvalidOptionError(
                f"failures={list(kinds)!r} must be a non-empty list of {task}'s failure types "
                f"{list(failure_types(task))}, or null for the planned ones"
            )
    plans = []
    failures = 0
    for i in range(episodes):
        # Spread failures evenly: episode i is a failure when the running share falls behind.
        inject = kinds and failures < round((i + 1) * failure_fraction)
        failure = kinds[failures % len(kinds)] if inject else None
        failures += bool(inject)
        plans.append(EpisodePlan(task, int(first_seed) + i, failure))
    return plans
