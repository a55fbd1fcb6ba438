"""Batched critic rewards for SB3 vector envs: one critic call per vector step.

Workers (``DummyVecEnv`` or ``SubprocVecEnv``) step the task envs and render the critic's frame on
query steps into ``info`` (:class:`CriticFrames`); the main process holds one
:class:`~envs.critic_reward.EpisodeTracker` per env and sends every due query, including the
first query of episodes that just auto-reset, to the critic in a single batch. Rendering inside
the worker is what lets the last frame of an episode reach the critic before the auto-reset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from critic.base import Critic, ProgressQuery
from critic.factory import make_critic
from envs.critic_reward import CriticRewardConfig, EpisodeTracker, check_batch
from envs.errors import InvalidOptionError
from envs.tasks import TaskEnv
from rollout.imports import require_package

_vec_env = require_package("stable_baselines3.common.vec_env", "rl", "envs.vec_env")


class CriticFrames(gym.Wrapper):
    """Worker side: put the critic's frame into ``info["critic_frame"]`` on query steps and reset.

    Args:
        env: a task env (usually inside a ``TimeLimit``).
        config: the reward options; only the query schedule is used here.
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

    def _frame(self) -> np.ndarray | None:
        return self.env.unwrapped.render_critic_view() if self._render else None

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._steps = 0
        return obs, {**info, "critic_frame": self._frame()}

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._steps += 1
        if self._config.is_query_step(self._steps, terminated or truncated):
            info = {**info, "critic_frame": self._frame()}
        return obs, reward, terminated, truncated, info


class VisCriticVecEnv(_vec_env.VecEnvWrapper):
    """Critic rewards for a vector of task envs, with one batched critic call per step.

    Sub-envs must be wrapped in :class:`CriticFrames` with the same config; use
    :func:`make_viscritic_vec_env` to build the whole stack. ``infos`` carry the same keys as
    :class:`~envs.wrappers.VisCriticReward`, plus ``critic_return`` at an episode's end (the
    ``episode`` entry of an SB3 ``Monitor`` below this wrapper holds the true return).

    Args:
        venv: the vector of ``CriticFrames``-wrapped task envs.
        critic: a critic name, ``{"name": ..., **kwargs}`` mapping, or instance.
        config: the reward options (``terminate_on_success`` is not available here: sub-envs
            reset themselves).
    """

    def __init__(
        self,
        venv,
        critic: str | Mapping[str, Any] | Critic = "oracle",
        config: CriticRewardConfig | None = None,
    ) -> None:
        super().__init__(venv)
        self.config = config or CriticRewardConfig()
        if self.config.terminate_on_success:
            raise InvalidOptionError(
                "terminate_on_success=True is not available with VisCriticVecEnv (sub-envs "
                "reset themselves); use envs.VisCriticReward on each env instead"
            )
        self.critic = make_critic(critic)
        self._instructions = venv.get_attr("instruction")
        self._trackers = [self._new_tracker(i) for i in range(self.num_envs)]

    def _new_tracker(self, index: int) -> EpisodeTracker:
        return EpisodeTracker(self.config, self._instructions[index], self.critic.name)

    def _estimate(
        self, queries: list[ProgressQuery], owners: list[tuple[int, EpisodeTracker]]
    ) -> list:
        """One critic call for all ``queries``; ``owners`` are their (env index, tracker)."""
        if not queries:
            return []
        estimates = check_batch(
            self.critic.name, self.critic.estimate_progress(queries), len(queries)
        )
        return [
            tracker.check(est, env_index)
            for (env_index, tracker), est in zip(owners, estimates, strict=True)
        ]

    def reset(self):
        obs = self.venv.reset()
        for i, info in enumerate(self.venv.reset_infos):
            self._trackers[i] = self._new_tracker(i)
            self._trackers[i].start(info.get("critic_frame"), info["progress"])
        estimates = self._estimate(
            [t.query() for t in self._trackers], list(enumerate(self._trackers))
        )
        for tracker, estimate in zip(self._trackers, estimates, strict=True):
            tracker.begin(estimate)
        return obs

    def step_wait(self):
        obs, env_rewards, dones, infos = self.venv.step_wait()
        queries, owners, asks = [], [], []  # asks: (env index, "step" | "start") per query
        fresh: dict[int, EpisodeTracker] = {}
        for i, (tracker, info, done) in enumerate(zip(self._trackers, infos, dones, strict=True)):
            if self.config.is_query_step(tracker.step_count + 1, bool(done)):
                tracker.observe(info.get("critic_frame"), info["progress"])
                queries.append(tracker.query())
                owners.append((i, tracker))
                asks.append((i, "step"))
            if done:
                reset_info = self.venv.reset_infos[i]
                fresh[i] = self._new_tracker(i)
                fresh[i].start(reset_info.get("critic_frame"), reset_info["progress"])
                queries.append(fresh[i].query())
                owners.append((i, fresh[i]))
                asks.append((i, "start"))
        answers: dict[tuple[int, str], Any] = dict(
            zip(asks, self._estimate(queries, owners), strict=True)
        )
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        for i, tracker in enumerate(self._trackers):
            estimate = answers.get((i, "step"))
            rewards[i] = tracker.reward(float(env_rewards[i]), estimate)
            infos[i].pop("critic_frame", None)
            infos[i].update(tracker.info(env_rewards[i], estimate))
            if i in fresh:
                infos[i]["critic_return"] = tracker.critic_return
                fresh[i].begin(answers[(i, "start")])
                self._trackers[i] = fresh[i]
        return obs, rewards, dones, infos

    def close(self) -> None:
        self.critic.close()
        super().close()


def make_viscritic_vec_env(
    env: str,
    n_envs: int = 1,
    critic: str | Mapping[str, Any] | Critic = "oracle",
    *,
    seed: int | None = None,
    vec_env_cls: type | None = None,
    camera: Any = None,
    image_size: int | tuple[int, int] | None = None,
    horizon: int | None = None,
    task_kwargs: Mapping[str, Any] | None = None,
    **options: Any,
):
    """Build task → ``TimeLimit`` → ``Monitor`` (true return) → ``CriticFrames`` in each worker,
    then :class:`VisCriticVecEnv` on top. The stack is built here, in one visible place.

    Args:
        env: a registered task name.
        n_envs: number of envs, >= 1.
        critic: the critic (name, mapping or instance); it lives in the main process.
        seed: base seed; env ``i`` gets ``seed + i``.
        vec_env_cls: ``DummyVecEnv`` (default) or ``SubprocVecEnv``.
        camera, image_size: override the task's critic view.
        horizon: override the task's episode length.
        task_kwargs: options for the task env constructor.
        **options: the fields of :class:`~envs.critic_reward.CriticRewardConfig`.
    """
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.monitor import Monitor

    from envs.tasks import check_horizon, get_task, make_task_env

    if not isinstance(n_envs, int) or isinstance(n_envs, bool) or n_envs < 1:
        raise InvalidOptionError(f"n_envs={n_envs!r} must be an integer >= 1")
    config = CriticRewardConfig(**options)
    built = make_critic(critic)
    render = built.needs_frames  # a bool, so workers never receive (pickle) the critic itself
    max_steps = check_horizon(get_task(env).horizon if horizon is None else horizon)

    def make_one() -> gym.Env:
        task = make_task_env(env, camera=camera, image_size=image_size, **dict(task_kwargs or {}))
        timed = gym.wrappers.TimeLimit(task, max_episode_steps=max_steps)
        monitored = Monitor(timed, info_keywords=("is_success",))
        return CriticFrames(monitored, config, render=render)

    venv = make_vec_env(make_one, n_envs=n_envs, seed=seed, vec_env_cls=vec_env_cls)
    return VisCriticVecEnv(venv, built, config)
