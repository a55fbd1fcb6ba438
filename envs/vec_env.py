"""Batched critic rewards for SB3 vector envs: one critic call per vector step.

Workers (``DummyVecEnv`` or ``SubprocVecEnv``) step the task envs and render the critic's frame on
query steps into ``info`` (:class:`CriticFrames`); the main process holds one
:class:`~envs.critic_reward.EpisodeTracker` per env and sends every due query, including the
first query of episodes that just auto-reset, to the critic in a single batch. Rendering inside
the worker is what lets the last frame of an episode reach the critic before the auto-reset.

With ``relabel=True`` (off-policy learners, as VLM-RM does) the critic is called once per finished
episode instead, on all of its queries in one batch; steps return a placeholder reward of 0 and
:class:`RelabelCallback` writes the critic's rewards into the replay buffer before the learner
trains on them.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from critic.base import Critic, ParseStatus, ProgressEstimate, ProgressQuery
from critic.factory import make_critic
from envs.critic_reward import (
    DEFAULT_CRITIC,
    CriticRewardConfig,
    EpisodeTracker,
    check_batch,
    interpolate_progress,
)
from envs.errors import InvalidOptionError
from envs.tasks import TaskEnv
from rollout.checks import is_int
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
        config: the reward options, a :class:`CriticRewardConfig` or a mapping of its fields
            (``terminate_on_success`` is not available here: sub-envs reset themselves).
        relabel: defer the critic to each episode's end: one batched call over all of the
            episode's queries, the rewards in the last step's ``info["critic_rewards"]`` and a
            placeholder 0 from every step (use with :class:`RelabelCallback`; stepping it without
            one warns once, since a learner would see only the zeros). Queries carry no previous
            estimate in this mode.
    """

    def __init__(
        self,
        venv,
        critic: str | Mapping[str, Any] | Critic = DEFAULT_CRITIC,
        config: CriticRewardConfig | None = None,
        relabel: bool = False,
    ) -> None:
        super().__init__(venv)
        if isinstance(config, Mapping):
            config = CriticRewardConfig.from_options(**config)
        elif config is not None and not isinstance(config, CriticRewardConfig):
            raise InvalidOptionError(
                f"config={config!r:.80} must be a CriticRewardConfig, a mapping of its options "
                "(e.g. {'query_every': 10}), or None for the defaults"
            )
        self.config = config or CriticRewardConfig()
        self.check_config(self.config, relabel)
        self.relabel = bool(relabel)
        # set by RelabelCallback; without it, relabelled rewards reach no learner (warned once)
        self.relabel_callback_attached = False
        self._warned_unconsumed = False
        self.critic = make_critic(critic)
        # the clip length is the critic's for each sub-env's task (a checkpoint may record one
        # per task); the query schedule is the same for all
        try:  # names, not specs: worker processes send them back
            tasks = venv.get_attr("task_name")
        except AttributeError:
            raise InvalidOptionError(
                "VisCriticVecEnv needs VisCritic task envs underneath (envs.make_task_env, with "
                "CriticFrames on top); build the stack with envs.vec_env.make_viscritic_vec_env"
            ) from None
        self._configs = [self.config.for_critic(self.critic, task) for task in tasks]
        self.config = self._configs[0]
        self._instructions = venv.get_attr("instruction")
        self._trackers = [self._new_tracker(i) for i in range(self.num_envs)]

    @staticmethod
    def check_config(config: CriticRewardConfig, relabel: bool = False) -> None:
        """Raise :class:`InvalidOptionError` for options a vector of envs cannot honour."""
        if not isinstance(relabel, bool | np.bool_):
            raise InvalidOptionError(f"relabel={relabel!r} must be True or False")
        if config.terminate_on_success:
            raise InvalidOptionError(
                "terminate_on_success=True is not available with VisCriticVecEnv (sub-envs "
                "reset themselves); use envs.VisCriticReward on each env instead"
            )
        if config.between_queries == "interpolate" and not relabel:
            raise InvalidOptionError(
                "between_queries='interpolate' needs the next query's estimate, known only when "
                "rewards are relabelled at the episode's end: set relabel=True, or "
                "between_queries='hold'"
            )

    def _new_tracker(self, index: int) -> EpisodeTracker:
        return EpisodeTracker(self._configs[index], self._instructions[index], self.critic.name)

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
        if self.relabel:
            self._pending = [[(None, t.query())] for t in self._trackers]
            return obs
        estimates = self._estimate(
            [t.query() for t in self._trackers], list(enumerate(self._trackers))
        )
        for tracker, estimate in zip(self._trackers, estimates, strict=True):
            tracker.begin(estimate)
        return obs

    def step_wait(self):
        if self.relabel:
            return self._step_relabel()
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

    def _step_relabel(self):
        """Record each env's step (its query, on query steps); when episodes end, one critic
        call over all their queries, and their rewards replayed through a tracker."""
        obs, env_rewards, dones, infos = self.venv.step_wait()
        finished = []
        for i, (tracker, info, done) in enumerate(zip(self._trackers, infos, dones, strict=True)):
            query = None
            if self.config.is_query_step(tracker.step_count + 1, bool(done)):
                tracker.observe(info.get("critic_frame"), info["progress"])
                query = tracker.query()
            tracker.step_count += 1
            self._pending[i].append((float(env_rewards[i]), query))
            infos[i].pop("critic_frame", None)
            infos[i]["critic_pending"] = True
            if done:
                finished.append(i)
        queries, owners = [], []
        for i in finished:
            queries += [q for _, q in self._pending[i] if q is not None]
            owners += [(i, self._trackers[i])] * sum(q is not None for _, q in self._pending[i])
        if finished and not self.relabel_callback_attached and not self._warned_unconsumed:
            self._warned_unconsumed = True
            warnings.warn(
                "VisCriticVecEnv(relabel=True) returns a reward of 0 at every step and the "
                "critic's rewards in the last step's info['critic_rewards']; no RelabelCallback "
                "is attached to write them into a learner's replay buffer, so a learner trained "
                "on this env sees zeros: pass callback=RelabelCallback() to learn(), or use "
                "relabel=False",
                stacklevel=4,  # the caller of VecEnv.step
            )
        estimates = iter(self._estimate(queries, owners))
        for i in finished:
            replay = self._new_tracker(i)
            # the reset query's estimate, then one per step (None between queries)
            per_step = [next(estimates) if q is not None else None for _, q in self._pending[i]]
            if self.config.between_queries == "interpolate":
                per_step = [
                    None if p is None else ProgressEstimate(p, achieved=a)
                    for p, a in zip(
                        interpolate_progress(per_step),
                        interpolate_progress(per_step, "achieved"),
                        strict=True,
                    )
                ]
            replay.begin(per_step[0] or ProgressEstimate(None, status=ParseStatus.NO_ANSWER))
            rewards = [
                replay.reward(r, estimate)
                for (r, _), estimate in zip(self._pending[i][1:], per_step[1:], strict=True)
            ]
            infos[i]["critic_rewards"] = np.asarray(rewards, dtype=np.float32)
            infos[i]["critic_return"] = replay.critic_return
            infos[i]["critic_progress"] = replay.progress
            infos[i]["critic_achieved"] = replay.achieved
            reset_info = self.venv.reset_infos[i]
            self._trackers[i] = self._new_tracker(i)
            self._trackers[i].start(reset_info.get("critic_frame"), reset_info["progress"])
            self._pending[i] = [(None, self._trackers[i].query())]
        return obs, np.zeros(self.num_envs, dtype=np.float32), dones, infos

    def close(self) -> None:
        self.critic.close()
        super().close()


_callbacks = require_package("stable_baselines3.common.callbacks", "rl", "envs.vec_env")


class RelabelCallback(_callbacks.BaseCallback):
    """Write the critic rewards of finished episodes (``VisCriticVecEnv(relabel=True)``) into an
    off-policy learner's replay buffer, before it trains on them.

    SB3 calls ``_on_step`` just before it stores a step's transition at ``replay_buffer.pos``, and
    ``_on_rollout_end`` after the last store of a rollout: the positions are noted in the first,
    the rewards written in the second. The learner must train per episode
    (``train_freq=(1, "episode")``), so no placeholder reward is ever sampled.

    Raises:
        InvalidOptionError: the learner has no replay buffer or trains per step, or its env has
            no ``VisCriticVecEnv(relabel=True)`` underneath.
    """

    def _on_training_start(self) -> None:
        from stable_baselines3.common.type_aliases import TrainFrequencyUnit

        buffer = getattr(self.model, "replay_buffer", None)
        frequency = getattr(self.model, "train_freq", None)
        if buffer is None or frequency is None:
            raise InvalidOptionError(
                f"relabelling needs an off-policy learner with a replay buffer (SAC, TD3, DQN); "
                f"{type(self.model).__name__} has none: use the per-step critic reward instead"
            )
        if self.training_env.num_envs != 1:
            raise InvalidOptionError(
                f"relabelling trains once per finished episode, which SB3 allows with one env "
                f"only; this one has {self.training_env.num_envs}: use n_envs=1"
            )
        if frequency.unit != TrainFrequencyUnit.EPISODE:
            raise InvalidOptionError(
                f"train_freq=({frequency.frequency}, {frequency.unit.value!r}) trains on steps "
                "whose critic reward is not known "
                "yet; relabel with train_freq=(1, 'episode') and gradient_steps=-1"
            )
        self._positions: list[list[int]] = [[] for _ in range(self.training_env.num_envs)]
        self._ready: list[tuple[int, list[int], np.ndarray]] = []
        env = self.training_env  # through SB3's wrappers (VecMonitor, VecNormalize, ...)
        while not isinstance(env, VisCriticVecEnv) and hasattr(env, "venv"):
            env = env.venv
        if not isinstance(env, VisCriticVecEnv) or not env.relabel:
            raise InvalidOptionError(
                "RelabelCallback needs a VisCriticVecEnv(relabel=True) under the learner's env "
                "(envs.make_viscritic_vec_env(..., relabel=True)); this env gives its rewards "
                "at every step and needs no callback"
            )
        env.relabel_callback_attached = True

    def _on_step(self) -> bool:
        position = self.model.replay_buffer.pos  # where this step's transition is stored next
        for i, info in enumerate(self.locals["infos"]):
            self._positions[i].append(position)
            if "critic_rewards" in info:
                self._ready.append((i, self._positions[i], info["critic_rewards"]))
                self._positions[i] = []
        return True

    def _on_rollout_end(self) -> None:
        buffer = self.model.replay_buffer
        for env_index, positions, rewards in self._ready:
            buffer.rewards[positions, env_index] = rewards
        self._ready = []


class CriticFidelityCallback(_callbacks.BaseCallback):
    """Record, for every episode the learner finishes, the critic's final progress beside the
    simulator's privileged progress and true success: how faithful the reward stays on the
    learner's own states, where a policy that games the critic shows up first.

    Works below any learner on :class:`VisCriticVecEnv` (per-step or relabelled rewards): it reads
    ``critic_return`` (set at each episode's end), ``critic_progress``, ``progress`` and
    ``is_success`` from ``infos``. ``episodes`` holds ``(timestep, critic progress, true progress,
    true success)`` rows in order.
    """

    def _on_training_start(self) -> None:
        self.episodes: list[tuple[int, float, float, bool]] = []

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            if "critic_return" in info and info.get("critic_progress") is not None:
                self.episodes.append(
                    (
                        int(self.num_timesteps),
                        float(info["critic_progress"]),
                        float(info["progress"]),
                        bool(info.get("is_success", False)),
                    )
                )
        return True


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
        relabel: one critic call per finished episode (see :class:`VisCriticVecEnv`).
        **options: the fields of :class:`~envs.critic_reward.CriticRewardConfig`.
    """
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import VecEnv

    from envs.tasks import check_horizon, check_task_kwargs, get_task, make_task_env

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
    max_steps = check_horizon(get_task(env).horizon if horizon is None else horizon)
    VisCriticVecEnv.check_config(config, relabel)  # every option before the critic loads
    built = make_critic(critic)
    config = config.for_critic(built, env)
    render = built.needs_frames  # a bool, so workers never receive (pickle) the critic itself

    def make_one() -> gym.Env:
        task = make_task_env(env, camera=camera, image_size=image_size, **task_options)
        timed = gym.wrappers.TimeLimit(task, max_episode_steps=max_steps)
        monitored = Monitor(timed, info_keywords=("is_success",))
        return CriticFrames(monitored, config, render=render)

    seed = None if seed is None else int(seed)
    venv = make_vec_env(make_one, n_envs=n_envs, seed=seed, vec_env_cls=vec_env_cls)
    return VisCriticVecEnv(venv, built, config, relabel=relabel)
