"""``VisCriticReward``: the critic watching rendered frames becomes the env's reward.

A stateful reward wrapper (it keeps the episode's frames), so it subclasses ``gym.Wrapper`` and
records its constructor arguments, as Gymnasium's own stateful wrappers do: a critic given by
name or mapping is recorded so, and ``env.spec`` serialises; a critic given as an instance is
recorded as that instance (not copied: ``Critic.__deepcopy__``), so ``gym.make(env.spec)`` rebuilds
this critic (its name alone may name another, or none). ``env.spec.to_json()`` cannot record an
instance: gymnasium writes its fields, not the critic, where JSON holds them (and fails where it
does not), and ``gym.make`` of that JSON refuses it, naming the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, SupportsFloat

import gymnasium as gym

from critic.base import Critic
from critic.factory import make_critic
from envs.critic_reward import DEFAULT_CRITIC, CriticRewardConfig, EpisodeTracker, check_batch
from envs.errors import InvalidOptionError
from envs.tasks import TaskEnv, check_task_info, check_task_reward
from rollout.checks import plain_values
from rollout.warn import warn_user


class VisCriticReward(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Replace the env reward by a critic's judgement of rendered frames.

    The env underneath must be a VisCritic task env (``envs.make_task_env``), usually inside a
    ``TimeLimit``. Frames are rendered only if the critic needs frames: on the steps where it is
    queried, and, for a clip of several frames, after every step (the clip spreads over the
    episode so far, as training's clips do).

    ``info`` gains ``env_reward`` and ``env_return`` (the true reward and its episode sum),
    ``critic_progress``, ``critic_achieved`` (the critic's probability that the task is achieved,
    ``None`` when it gives none), ``critic_queried`` and, on query steps, ``critic_status`` and the
    critic's text (``critic_reasoning``) when there is one. ``is_success`` is the task's true
    success, so ``Monitor(info_keywords=("is_success",))`` and ``evaluate_policy`` report the real
    task.

    Args:
        env: the task env.
        critic: a critic name or ``{"name": ..., **kwargs}`` (see ``critic.make_critic``), or a
            ``critic.Critic`` instance. Defaults to the shipped ``viscritic-small``.
        **options: the fields of :class:`envs.critic_reward.CriticRewardConfig`.

    Example:
        >>> env = gym.make("VisCriticReward-v0", env="Reacher-v5", reward_mode="delta")  # doctest: +SKIP
    """

    def __init__(
        self,
        env: gym.Env,
        critic: str | Mapping[str, Any] | Critic = DEFAULT_CRITIC,
        **options: Any,
    ) -> None:
        # recorded as plain values (a numpy option kept env.spec from serialising)
        gym.utils.RecordConstructorArgs.__init__(
            self, **plain_values({"critic": critic, **options})
        )
        gym.Wrapper.__init__(self, env)
        if not isinstance(env.unwrapped, TaskEnv):
            raise InvalidOptionError(
                f"VisCriticReward needs a VisCritic task env underneath, got "
                f"{type(env.unwrapped).__name__}; build it with envs.make_task_env(name) or "
                "gym.make('VisCriticReward-v0', env=name)"
            )
        self.config = CriticRewardConfig.from_options(**options)
        if self.config.between_queries == "interpolate":
            raise InvalidOptionError(
                "between_queries='interpolate' needs the next query's estimate, which a reward "
                "given at each step cannot wait for; use envs.vec_env.make_viscritic_vec_env(..., "
                "relabel=True) with an off-policy learner, or between_queries='hold'"
            )
        self.critic = make_critic(critic)
        self._task: TaskEnv = env.unwrapped
        self.config = self.config.for_critic(self.critic, self._task.task_name, self._task.view)
        self._tracker = EpisodeTracker(self.config, self._task.instruction, self.critic.name)
        self._ended, self._last_cut, self._warned = True, None, False  # _warn_if_cut_short

    def _frame(self):
        return self._task.render_critic_view() if self.critic.needs_frames else None

    def _estimate(self):
        query = self._tracker.query()
        estimates = check_batch(self.critic.name, self.critic.estimate_progress([query]), 1)
        return self._tracker.check(estimates[0])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._warn_if_cut_short()
        obs, info = self.env.reset(seed=seed, options=options)
        info = check_task_info(info, self._task, "reset")
        self._tracker.start(self._frame(), info["progress"])
        estimate = self._estimate()
        self._tracker.begin(estimate)
        return obs, {**info, **self._tracker.info(0.0, estimate)}

    def step(self, action) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, env_reward, terminated, truncated, info = self.env.step(action)
        info = check_task_info(info, self._task, "step")
        env_reward = check_task_reward(env_reward, self._task)
        estimate = None
        if self.config.is_query_step(self._tracker.step_count + 1, terminated or truncated):
            self._tracker.observe(self._frame(), info["progress"])
            estimate = self._estimate()
        elif self.config.keeps_every_frame:  # a clip spreads over every step, as in training
            self._tracker.keep(self._frame())
        # on a step the critic read: the reset's reading of 0.97 ended step 1 before any read,
        # and so did an unreadable answer, on the reading it held
        if (
            self.config.terminate_on_success
            and estimate is not None
            and estimate.progress is not None
            and float(estimate.progress) >= self.config.success_threshold
        ):
            terminated = True
        reward = self._tracker.reward(float(env_reward), estimate, terminal=terminated)
        self._ended = terminated or truncated
        return (
            obs,
            reward,
            terminated,
            truncated,
            {**info, **self._tracker.info(env_reward, estimate)},
        )

    def _warn_if_cut_short(self) -> None:
        """Warn once when two episodes in a row are reset at the same step before this wrapper
        saw them end: the mark of a time limit outside it (``gym.make("VisCriticReward-v0",
        max_episode_steps=N)`` among them; gymnasium keeps that option from the entry point, so
        it cannot serve as the horizon). Such a limit ends episodes where the critic was not
        queried, and pays their last step an older estimate. One episode ended early on
        purpose, or an env checker's short ones, say nothing."""
        steps, cut = self._tracker.step_count, None
        if steps > 1 and not self._ended:
            cut = steps
            if cut == self._last_cut and not self._warned:
                self._warned = True
                warn_user(
                    f"two episodes in a row were reset at step {steps} of "
                    f"{self._task.task_name} before VisCriticReward saw them end: if a time "
                    f"limit outside it cuts them (gym.make(..., max_episode_steps={steps}), a "
                    "TimeLimit wrapper), their last step is paid an older estimate, not a query; "
                    f"give horizon={steps} to VisCriticReward-v0 instead"
                )
        self._last_cut = cut

    def close(self) -> None:
        self.critic.close()
        super().close()


class TaskStateInfo(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Put the task's privileged state into ``info``, for measuring where episodes end.

    ``info["task_state"]`` is :meth:`envs.tasks.TaskEnv.privileged_state` now (named distances,
    heights and angles, e.g. Reacher's ``fingertip_to_target_cm``) and ``info["task_start_state"]``
    the same at the episode's reset, so an episode's last step says both where it began and where
    it ended (a vectorised env resets the task before the step's info is read). The final test of
    ``experiments/zero_shot_rl.py`` reads both; nothing that learns sees them.
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        if not isinstance(env.unwrapped, TaskEnv):
            raise InvalidOptionError(
                f"TaskStateInfo needs a VisCritic task env underneath, got "
                f"{type(env.unwrapped).__name__}; build it with envs.make_task_env(name)"
            )
        self._task: TaskEnv = env.unwrapped
        self._start: dict[str, float] = {}

    def _info(self, info: dict[str, Any]) -> dict[str, Any]:
        return {**info, "task_state": self._task.privileged_state(),
                "task_start_state": dict(self._start)}  # fmt: skip

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._start = self._task.privileged_state()
        return obs, self._info(info)

    def step(self, action) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._info(info)
