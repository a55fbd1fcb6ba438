"""The worker side of :class:`~envs.vec_env.VisCriticVecEnv`, and the stack built in one place.

:class:`CriticFrames` runs in each worker (``DummyVecEnv`` or ``SubprocVecEnv``) and renders the
critic's frame into ``info`` on query steps; :func:`make_viscritic_vec_env` builds task →
``TimeLimit`` → ``CriticFrames`` → ``Monitor`` in every worker and the batched critic wrapper on
top. Split from ``envs/vec_env.py`` (which keeps the main process's side and re-exports both
names) along the line between the worker processes and the main one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from critic.base import Critic
from critic.factory import make_critic
from envs.critic_reward import DEFAULT_CRITIC, CriticRewardConfig
from envs.errors import InvalidOptionError
from envs.tasks import TaskEnv, check_task_info, check_task_reward
from envs.vec_env import VisCriticVecEnv, _vec_env
from rollout.checks import is_int


class CriticFrames(gym.Wrapper):
    """Worker side: put the critic's frame into ``info["critic_frame"]`` on query steps and reset
    (after every step for a clip of several frames, :attr:`CriticRewardConfig.keeps_every_frame`).

    Args:
        env: a task env (usually inside a ``TimeLimit``).
        config: the reward options, settled for the critic (``config.for_critic``); only the query
            schedule and the clip length are used here.
        render: ``False`` for critics that need no frames (nothing is rendered).
    """

    def __init__(self, env: gym.Env, config: CriticRewardConfig, render: bool = True) -> None:
        super().__init__(env)
        if not isinstance(env.unwrapped, TaskEnv):
            raise InvalidOptionError(
                f"CriticFrames needs a VisCritic task env underneath, got "
                f"{type(env.unwrapped).__name__}; build it with envs.make_task_env(name)"
            )
        self._config = config
        self._render = render
        self._steps = 0

    @property
    def critic_query_every(self) -> int:
        """The query schedule this worker renders frames on (the wrapper above must share it)."""
        return self._config.query_every

    @property
    def critic_keeps_every_frame(self) -> bool:
        """Whether this worker sends a frame after every step (a clip critic's), not only on
        query steps."""
        return self._config.keeps_every_frame

    @property
    def renders_critic_frames(self) -> bool:
        """Whether this worker renders the critic's frames at all."""
        return self._render

    def _frame(self) -> np.ndarray | None:
        return self.env.unwrapped.render_critic_view() if self._render else None

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        info = check_task_info(info, self.env.unwrapped, "reset")
        self._steps = 0
        return obs, {**info, "critic_frame": self._frame()}

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = check_task_info(info, self.env.unwrapped, "step")
        reward = check_task_reward(reward, self.env.unwrapped)
        self._steps += 1
        if self._config.keeps_every_frame or self._config.is_query_step(
            self._steps, terminated or truncated
        ):
            info = {**info, "critic_frame": self._frame()}
        return obs, reward, terminated, truncated, info


def make_viscritic_vec_env(
    env: str,
    n_envs: int = 1,
    critic: str | Mapping[str, Any] | Critic = DEFAULT_CRITIC,
    *,
    seed: int | None = None,
    vec_env_cls: type | None = None,
    camera: Any = None,
    image_size: int | tuple[int, int] | None = None,
    horizon: int | None = None,
    task_kwargs: Mapping[str, Any] | None = None,
    relabel: bool = False,
    render_mode: str | None = None,
    **options: Any,
):
    """Build task → ``TimeLimit`` → ``CriticFrames`` → ``Monitor`` (true return and success) in each
    worker, then :class:`VisCriticVecEnv` on top. The stack is built here, in one visible place.

    Args:
        env: a registered task name.
        n_envs: number of envs, >= 1.
        critic: the critic (name, mapping or instance); it lives in the main process.
        seed: base seed; env ``i`` gets ``seed + i``.
        vec_env_cls: ``DummyVecEnv`` (default) or ``SubprocVecEnv``.
        camera, image_size: override the task's critic view.
        horizon: override the task's episode length.
        task_kwargs: options for the task env constructor.
        relabel: the critic called when episodes end (see :class:`VisCriticVecEnv`).
        render_mode: ``None`` or ``"rgb_array"``: each env renders the critic's view, so
            ``venv.render()`` and SB3's ``VecVideoRecorder`` show what the critic reads.
        **options: the fields of :class:`~envs.critic_reward.CriticRewardConfig`.
    """
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecEnv

    from envs.tasks import (
        check_horizon,
        check_task_kwargs,
        get_task,
        make_task_env,
        register_task,
        registered_spec,
    )

    if not is_int(n_envs) or n_envs < 1:
        raise InvalidOptionError(f"n_envs={n_envs!r} must be an integer >= 1")
    if seed is not None and (not is_int(seed) or seed < 0):
        raise InvalidOptionError(f"seed={seed!r} must be None or an integer >= 0")
    if vec_env_cls is not None and not (
        isinstance(vec_env_cls, type) and issubclass(vec_env_cls, VecEnv)
    ):
        raise InvalidOptionError(
            f"vec_env_cls={vec_env_cls!r} must be an SB3 VecEnv class, e.g. "
            "stable_baselines3.common.vec_env.SubprocVecEnv, or None for DummyVecEnv"
        )
    config = CriticRewardConfig.from_options(**options)
    task_options = check_task_kwargs(task_kwargs)
    spec = get_task(env)
    max_steps = check_horizon(spec.horizon if horizon is None else horizon)
    VisCriticVecEnv.check_config(config, relabel)  # every option before the critic loads
    built = make_critic(critic)
    config = config.for_critic(built, env)
    render = built.needs_frames  # a bool, so workers never receive (pickle) the critic itself

    def make_one() -> gym.Env:
        # a worker process imports envs afresh: the task registered (or replaced) here is not
        # there, or is the built-in one, so it gets this process's spec
        if registered_spec(env) is not spec:  # (not !=: a view may hold numpy arrays)
            register_task(spec)
        task = make_task_env(env, camera=camera, image_size=image_size, render_mode=render_mode,
                             **task_options)  # fmt: skip
        timed = gym.wrappers.TimeLimit(task, max_episode_steps=max_steps)
        return CriticFrames(timed, config, render=render)  # make_vec_env adds the Monitor

    seed = None if seed is None else int(seed)
    if vec_env_cls is not None and vec_env_cls is not _vec_env.DummyVecEnv:
        # workers in other processes would report a bad camera, image size or task option as a
        # lost connection: build one env here first, so the typed error reaches the caller
        make_one().close()
    # make_vec_env wraps each env in a Monitor, below the critic reward: the true return and
    # success (a Monitor of make_one's own was wrapped in a second, whose episode info had no
    # is_success)
    venv = make_vec_env(
        make_one,
        n_envs=n_envs,
        seed=seed,
        vec_env_cls=vec_env_cls,
        monitor_kwargs={"info_keywords": ("is_success",)},
    )
    return VisCriticVecEnv(venv, built, config, relabel=relabel)
