"""Scripted experts and labelled failure injection: the policies behind synthesised episodes.

An expert reads the privileged state of a :class:`~envs.tasks.TaskEnv` (MuJoCo data, robosuite
internals) and returns an action. A *failure* is a named way the expert goes wrong on purpose (a
missed grasp, a drop after lifting, a stall, ...): the expert then behaves like the expert until the
failure's trigger and reports the step at which the failure actually happened, so episodes carry the
failure type and time as labels. Near-misses are the most useful negatives, so failures trigger late
where the task allows it (after most of the progress has been made).

Experts are registered per task name (:func:`register_expert`) and built by :func:`make_expert`.

Example:
    >>> from envs import make_task_env
    >>> env = make_task_env("Reacher-v5")  # doctest: +SKIP
    >>> expert = make_expert("Reacher-v5", failure="overshoot")  # doctest: +SKIP
    >>> obs, info = env.reset(seed=0); expert.reset(env, seed=0)  # doctest: +SKIP
    >>> action = expert.act(env)  # doctest: +SKIP
"""

from __future__ import annotations

import abc
import sys
from collections.abc import Callable
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from envs.errors import InvalidOptionError
from envs.tasks import TaskEnv, get_task
from rollout.checks import is_int


class Expert(abc.ABC):
    """A scripted policy for one task, optionally with one injected failure.

    Subclasses set :attr:`failures` (the failure types they can inject) and implement
    :meth:`_reset` and :meth:`_act`. When the injected failure happens, they call
    :meth:`_mark_failure` once; :attr:`failure_step` is then the env step (0-based count of
    actions taken before it) at which it happened.

    Args:
        failure: a failure type from :attr:`failures`, or ``None`` for the expert itself.
    """

    failures: ClassVar[tuple[str, ...]] = ()
    # the failures default plans cycle through (:func:`envs.plans.plan_episodes`); the others are
    # asked for by name
    planned_failures: ClassVar[tuple[str, ...] | None] = None  # None: all of ``failures``

    def __init__(self, failure: str | None = None) -> None:
        if failure is not None and failure not in self.failures:
            raise InvalidOptionError(
                f"failure={failure!r} is not a failure type of {type(self).__name__}; "
                f"pick one of {list(self.failures)} or None for the expert itself"
            )
        self.failure = failure
        self.failure_step: int | None = None
        self.steps = 0
        self.horizon = 0  # the episode's length, set by reset
        self.rng = np.random.default_rng(0)
        self._planned = False

    def reset(self, env: TaskEnv, seed: int | None = None, horizon: int | None = None) -> None:
        """Start a new episode; call right after ``env.reset``. ``seed`` varies the failure's
        timing and the expert's small random choices (same seed, same episode). ``horizon`` is
        the number of steps the episode will run (``None``: the task's own): a failure's deadline
        is drawn as a share of it, so that it falls inside the episode. A wrapped env
        (``gym.make``'s) is read through its ``unwrapped`` task."""
        env = self._task_env(env)
        # it plans from the env's state: before the env's reset there is none (robosuite's
        # experts read the state robosuite was built in)
        env._check_reset(f"{type(self).__name__}.reset()")
        if seed is not None and (not is_int(seed) or seed < 0):
            raise InvalidOptionError(f"seed={seed!r} must be None or an integer >= 0")
        if horizon is not None and (not is_int(horizon) or horizon < 1):
            raise InvalidOptionError(
                f"horizon={horizon!r} must be None (the task's own) or an integer >= 1: the steps "
                "the episode will run"
            )
        self.horizon = env.spec_task.horizon if horizon is None else int(horizon)
        # a stream of its own: drawn from default_rng(seed), the stream env.reset(seed=seed)
        # draws the start from, a failure's timing was a function of the start (Reacher's first
        # joint offset and its stall's trigger correlated at 1.0), which a critic could read
        self.rng = np.random.default_rng(None if seed is None else [int(seed), 0x45585054])
        self.failure_step = None
        self.steps = 0
        self._planned = False
        self._reset(env)
        self._planned = True

    def act(self, env: TaskEnv) -> np.ndarray:
        """The action for the env's current state, inside ``env.action_space``."""
        env = self._task_env(env)
        if not self._planned:
            raise gym.error.ResetNeeded(
                f"{type(self).__name__}.act() before its reset(); call expert.reset(env, seed=...) "
                "right after env.reset(...)"
            )
        action = np.asarray(self._act(env), dtype=np.float32)
        low, high = env.action_space.low, env.action_space.high
        self.steps += 1
        return np.clip(action, low, high)

    def _task_env(self, env: Any) -> TaskEnv:
        task = getattr(env, "unwrapped", env)
        if not isinstance(task, TaskEnv):
            raise InvalidOptionError(
                f"{type(self).__name__} drives a VisCritic task env, got {type(task).__name__}; "
                "pass the env of envs.make_task_env(<task>), or its gym.make env"
            )
        own = next((k for k in type(self).__mro__ if k in _EXPERTS.values()), None)
        mine = [name for name, cls in _EXPERTS.items() if cls is own]
        if mine and task.task_name not in mine:  # an unregistered expert drives any task
            raise InvalidOptionError(
                f"{type(self).__name__} is the expert of {', '.join(mine)}, and the env is "
                f"{task.task_name}; use envs.make_expert({task.task_name!r})"
            )
        return task

    def _mark_failure(self) -> None:
        if self.failure_step is None:
            self.failure_step = self.steps

    @abc.abstractmethod
    def _reset(self, env: TaskEnv) -> None:
        """Plan the episode (read the initial state; pick failure timing with ``self.rng``, within
        the :attr:`horizon` steps the episode runs)."""

    @abc.abstractmethod
    def _act(self, env: TaskEnv) -> np.ndarray:
        """The raw action (clipped to the action space by :meth:`act`)."""


_EXPERTS: dict[str, Callable[..., Expert]] = {}


def register_expert(task: str) -> Callable[[type[Expert]], type[Expert]]:
    """Class decorator: ``cls`` is the expert of ``task``."""

    def decorate(cls: type[Expert]) -> type[Expert]:
        _EXPERTS[task] = cls
        return cls

    return decorate


def expert_tasks() -> list[str]:
    """Tasks that have a scripted expert."""
    _load_experts()
    return sorted(_EXPERTS)


def failure_types(task: str) -> tuple[str, ...]:
    """The failure types the expert of ``task`` can inject."""
    return _expert_class(task).failures


def planned_failure_types(task: str) -> tuple[str, ...]:
    """The failure types default plans of ``task`` cycle through."""
    cls = _expert_class(task)
    planned = getattr(cls, "planned_failures", None)
    return cls.failures if planned is None else planned


def make_expert(task: str, failure: str | None = None) -> Expert:
    """The scripted expert of ``task``, injecting ``failure`` (``None``: no failure)."""
    return _expert_class(task)(failure=failure)


def _expert_class(task: str) -> Callable[..., Expert]:
    get_task(task)  # unknown task names get the registry's typed error
    _load_experts()
    if task not in _EXPERTS:
        raise InvalidOptionError(
            f"task {task!r} has no scripted expert yet; tasks with one: {sorted(_EXPERTS)}"
        )
    return _EXPERTS[task]


def _load_experts() -> None:
    """Import the modules that register experts (kept out of ``import envs``). An expert
    registered before they load (one's own, for a built-in task) stays: theirs do not replace it.
    """
    if "envs.mujoco_experts" in sys.modules and "envs.robosuite_experts" in sys.modules:
        return
    own = dict(_EXPERTS)
    from envs import mujoco_experts, robosuite_experts  # noqa: F401

    _EXPERTS.update(own)
