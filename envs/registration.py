"""Gymnasium registration: ``VisCriticReward-v0`` and one bare env per task.

Gymnasium 1.x has no plugin entry points, so ``import envs`` registers these;
``gym.make("envs:VisCriticReward-v0", ...)`` imports ``envs`` by itself. A task's bare env is
registered by :func:`envs.register_task` itself (:func:`envs.tasks.register_bare_env`), so one
registered later, or again with another spec, has its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym

from critic.base import Critic
from envs.critic_reward import DEFAULT_CRITIC
from envs.tasks import (
    bare_env_id,
    check_horizon,
    check_task_kwargs,
    get_task,
    make_task_env,
    register_bare_env,
    task_names,
)
from envs.wrappers import VisCriticReward


class HorizonLimit(gym.wrappers.TimeLimit):
    """The entry point's own time limit, ``horizon=``. It leaves ``env.spec.max_episode_steps``
    as registered (``None``): that field is gym.make's own limit, put outside the env. A plain
    TimeLimit wrote the horizon there, so ``gym.make(env.spec, horizon=80)`` put a second,
    50-step limit outside and cut every episode at 50; the horizon is in ``env.spec.kwargs``."""

    @property
    def spec(self):
        return self.env.spec


def make_viscritic_env(
    env: str | None = None,
    critic: str | Mapping[str, Any] | Critic = DEFAULT_CRITIC,
    *,
    camera: Any = None,
    image_size: int | tuple[int, int] | None = None,
    horizon: int | None = None,
    render_mode: str | None = None,
    task_kwargs: Mapping[str, Any] | None = None,
    **options: Any,
) -> gym.Env:
    """Build task → ``TimeLimit(horizon)`` → :class:`VisCriticReward`: the entry point of
    ``VisCriticReward-v0``.

    Args:
        env: a registered task name (``envs.task_names()``); required (``None`` raises
            :class:`envs.UnknownTaskError` listing them).
        critic: the critic: a name, ``{"name": ..., **kwargs}``, or a ``critic.Critic``.
        camera: override the task's camera(s); a list tiles several views into one frame.
        image_size: override the critic image size (int or ``(height, width)``).
        horizon: override the task's episode length. Not gym.make's ``max_episode_steps=``:
            that TimeLimit sits outside the reward wrapper, which does not see its episodes end
            (it warns when two in a row are cut at the same step).
        render_mode: ``None`` or ``"rgb_array"`` (the critic's view).
        task_kwargs: options for the task env (e.g. ``{"control_freq": 10}`` on robosuite).
        **options: reward options: the fields of
            :class:`envs.critic_reward.CriticRewardConfig` (``reward_mode``, ``gamma``,
            ``log_floor``, ``query_every``, ``frames_per_query``, ``frame_sampling``,
            ``env_reward_weight``, ``achieved_weight``, ``terminate_on_success``,
            ``success_threshold``, ``between_queries``).
    """
    spec = get_task(env)
    max_steps = check_horizon(spec.horizon if horizon is None else horizon)
    task = make_task_env(
        env,
        camera=camera,
        image_size=image_size,
        render_mode=render_mode,
        **check_task_kwargs(task_kwargs),
    )
    try:
        return VisCriticReward(
            HorizonLimit(task, max_episode_steps=max_steps), critic=critic, **options
        )
    except Exception:
        task.close()
        raise


# What gym.make reads of an entry point before calling it: with the render modes it knows,
# render_mode="rgb_array_list" gets gymnasium's RenderCollection and "human" its HumanRendering
# around an "rgb_array" env, where a function without metadata had them refused
make_viscritic_env.metadata = {"render_modes": ["rgb_array"]}  # type: ignore[attr-defined]


def register_envs() -> None:
    """Register ``VisCriticReward-v0``, and ``VisCritic/<task>`` for every task that lacks it
    (idempotent; :func:`envs.register_task` registers a task's bare env, replacing an old one).

    The entry point is a string, so env specs serialise (``env.spec.to_json()``). gymnasium's
    passive env checker is off for these (the tests run its full ``check_env`` on every task and
    on the wrapper): in gymnasium 1.4 a reset that raises (a typed error for ``seed=-1``) leaves
    it unable to check the next step, which then fails with its own TypeError.
    """
    if "VisCriticReward-v0" not in gym.registry:
        gym.register(
            "VisCriticReward-v0",
            entry_point="envs.registration:make_viscritic_env",
            disable_env_checker=True,
        )
    for name in task_names():
        if bare_env_id(name) not in gym.registry:
            register_bare_env(get_task(name))
