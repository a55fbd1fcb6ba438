"""Typed errors a user of ``envs`` can cause. Each message names the bad value and the fix."""

from __future__ import annotations

from gymnasium import error as gym_error


class UnknownTaskError(gym_error.Error, ValueError):
    """The task name is not registered."""


class InvalidOptionError(gym_error.Error, ValueError):
    """A wrapper or task option has a value outside what it accepts."""


class CriticOutputError(gym_error.Error, RuntimeError):
    """A critic broke its contract: wrong batch size, or a progress that is not a finite number
    in [0, 1]. Raised rather than turned into a reward, so a broken critic never trains a policy."""


class InvalidActionError(gym_error.Error, ValueError):
    """An action the task cannot take: not of the action space's shape, or not finite (a NaN
    action would make every later observation and reward NaN)."""


class TaskContractError(gym_error.Error, RuntimeError):
    """A task broke the contract of :class:`envs.TaskEnv` (usually a task of your own,
    ``envs.register_task``): a progress that is not a number in [0, 1], or not 1 on success, an
    ``is_success`` that is not a bool, an info without them, a method left out. Raised where the
    value is made, so no wrong label is recorded and no wrong reward trains a policy."""
