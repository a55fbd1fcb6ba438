"""How critic estimates become rewards: validated options and per-episode bookkeeping.

Shared by the single-env :class:`envs.wrappers.VisCriticReward` and the batched
:class:`envs.vec_env.VisCriticVecEnv`, so both give the same rewards for the same estimates.

Reward modes, with ``p_t`` the critic's progress after step ``t`` (held between queries) and
``p_0`` its estimate at reset:

- ``progress``: ``r_t = p_t`` (dense, VLM-RM style);
- ``delta``: ``r_t = p_t - p_{t-1}`` (sums to ``p_T - p_0`` over an episode);
- ``potential``: ``r_t = gamma * p_t - p_{t-1}`` (potential-based shaping, Ng et al. 1999), with
  ``p_T = 0`` on a step that terminates the episode (not on a time limit's truncation, which the
  learner bootstraps through): the return then telescopes to ``-p_0`` whatever the policy does,
  where ending early at high progress had earned ``gamma * p_T`` more;
- ``success``: ``r_t = 1`` if ``p_t >= success_threshold`` else ``0``;
- ``log``: ``r_t = log((1 + e) / (1 - p_t + e)) / log((1 + e) / e)`` with ``e = log_floor``: 0 at
  ``p_t = 0`` and 1 at ``p_t = 1``, like ``progress``, but paying the last stretch most. Where
  progress is the share of a start distance closed (Reacher), ``1 - p_t`` is the distance left
  over the start distance, so up to a constant per episode the reward is ``-log`` of the distance
  left: every halving of it pays the same, from any start.

``achieved_weight * a_t`` is added to each, with ``a_t`` the critic's probability that the task is
achieved (:attr:`critic.ProgressEstimate.achieved`, held between queries like ``p_t``; 0 by default),
and ``env_reward_weight * env_reward`` (0 by default: the critic is the only reward).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from critic.base import (
    ParseStatus,
    ProgressEstimate,
    ProgressQuery,
    clip_indices,
    query_frames,
    unknown_options,
    warn_if_untrained,
)
from envs.errors import CriticOutputError, InvalidOptionError
from envs.render import warn_if_other_view
from rollout.checks import is_int, is_number

# The critic a reward wrapper uses when none is named: the shipped, trained VLM critic
# (critic/weights/viscritic-small). critic="oracle" reads the simulator's privileged progress.
DEFAULT_CRITIC = "viscritic-small"
REWARD_MODES = ("progress", "delta", "potential", "success", "log")
FRAME_SAMPLING = ("uniform", "last")
BETWEEN_QUERIES = ("hold", "interpolate")


@dataclass(frozen=True)
class CriticRewardConfig:
    """Options of the critic reward; every value is checked here, once.

    Attributes:
        reward_mode: one of ``progress``, ``delta``, ``potential``, ``success``, ``log``
            (module doc).
        gamma: discount of the ``potential`` mode, in (0, 1].
        log_floor: ``e`` of the ``log`` mode, in (0, 1]: the share of the task left below which
            the reward stops growing as fast (smaller pays the last stretch more).
        query_every: query the critic every k steps (and at the episode's last step); the reward
            is held in between. k >= 1.
        frames_per_query: frames sent per query, >= 1; ``None``: the critic's own clip length
            (:meth:`critic.Critic.clip_frames_for` the task, from its checkpoint), or 8 for a
            critic that does not record one (:meth:`for_critic` settles it once the critic is
            built).
        frame_sampling: ``uniform`` (spread over the episode so far) or ``last`` (the newest N).
        env_reward_weight: weight of the true env reward mixed in; 0 means critic only.
        achieved_weight: weight of the critic's probability that the task is achieved, added to
            the reward (>= 0; 0: none). A progress reading is noisiest near the goal, where a
            one-pass readout still puts a sharp probability on its top digit. The critic must
            give the probability (:attr:`critic.ProgressEstimate.achieved`).
        terminate_on_success: end the episode when the critic's progress reaches
            ``success_threshold`` on a step it read (off by default: the true task decides
            nothing here).
        success_threshold: progress counted as success by the ``success`` mode and termination.
        between_queries: the progress of steps between two queries: ``hold`` the last estimate,
            or ``interpolate`` linearly to the next one (known only once the episode has ended:
            relabelled rewards, ``VisCriticVecEnv(relabel=True)``, only).
    """

    reward_mode: str = "progress"
    gamma: float = 0.99
    log_floor: float = 0.05
    query_every: int = 1
    frames_per_query: int | None = None
    frame_sampling: str = "uniform"
    env_reward_weight: float = 0.0
    achieved_weight: float = 0.0
    terminate_on_success: bool = False
    success_threshold: float = 0.95
    between_queries: str = "hold"

    @classmethod
    def from_options(cls, **options: Any) -> CriticRewardConfig:
        """The config of a wrapper's reward options, an unknown name refused by name with the
        names there are (a dataclass would raise a bare ``TypeError``)."""
        names = [f.name for f in fields(cls)]
        unknown = unknown_options(options, names)
        if unknown:
            raise InvalidOptionError(
                f"{unknown}: not a reward option; the reward options are {names} (the env's "
                "camera, image size, horizon and task options are not the reward's: camera=, "
                "image_size=, horizon= and task_kwargs= beside them in gym.make, env.* in the "
                "experiments' configs)"
            )
        return cls(**options)

    def __post_init__(self) -> None:
        if self.reward_mode not in REWARD_MODES:
            raise InvalidOptionError(
                f"reward_mode={self.reward_mode!r} is not a reward mode; "
                f"pick one of {list(REWARD_MODES)}"
            )
        if not is_int(self.query_every) or self.query_every < 1:
            raise InvalidOptionError(
                f"query_every={self.query_every!r} must be an integer >= 1 "
                "(1 queries the critic every step; k holds the reward for k steps)"
            )
        if self.frames_per_query is not None and (
            not is_int(self.frames_per_query) or self.frames_per_query < 1
        ):
            raise InvalidOptionError(
                f"frames_per_query={self.frames_per_query!r} must be an integer >= 1, or None "
                "for the critic's own clip length"
            )
        if self.frame_sampling not in FRAME_SAMPLING:
            raise InvalidOptionError(
                f"frame_sampling={self.frame_sampling!r} is not a sampling; "
                f"pick one of {list(FRAME_SAMPLING)}"
            )
        if self.between_queries not in BETWEEN_QUERIES:
            raise InvalidOptionError(
                f"between_queries={self.between_queries!r} is not an option; pick one of "
                f"{list(BETWEEN_QUERIES)}"
            )
        if not is_number(self.gamma) or not 0.0 < self.gamma <= 1.0:
            raise InvalidOptionError(f"gamma={self.gamma!r} must be a number in (0, 1]")
        if not is_number(self.log_floor) or not 0.0 < self.log_floor <= 1.0:
            raise InvalidOptionError(
                f"log_floor={self.log_floor!r} must be a number in (0, 1] (the log mode's floor "
                "on the share of the task left; 0.05 by default)"
            )
        if not is_number(self.env_reward_weight):
            raise InvalidOptionError(
                f"env_reward_weight={self.env_reward_weight!r} must be a finite number "
                "(0 gives the critic reward alone)"
            )
        if not is_number(self.achieved_weight) or self.achieved_weight < 0:
            raise InvalidOptionError(
                f"achieved_weight={self.achieved_weight!r} must be a finite number >= 0 "
                "(0 adds nothing for the task achieved)"
            )
        if not is_number(self.success_threshold) or not 0.0 < self.success_threshold <= 1.0:
            raise InvalidOptionError(
                f"success_threshold={self.success_threshold!r} must be a number in (0, 1]"
            )
        if not isinstance(self.terminate_on_success, bool | np.bool_):
            raise InvalidOptionError(
                f"terminate_on_success={self.terminate_on_success!r} must be True or False"
            )
        # numpy numbers pass the checks; plain ones are kept (a config is logged and compared)
        for name in (
            "gamma",
            "log_floor",
            "env_reward_weight",
            "achieved_weight",
            "success_threshold",
        ):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "query_every", int(self.query_every))
        object.__setattr__(self, "terminate_on_success", bool(self.terminate_on_success))
        if self.frames_per_query is not None:
            object.__setattr__(self, "frames_per_query", int(self.frames_per_query))

    def for_critic(
        self, critic: Any, task: str | None = None, view: Any = None
    ) -> CriticRewardConfig:
        """These options with ``frames_per_query`` settled for ``critic`` (``None``: no critic
        known) on ``task`` (a registered task name) by :func:`critic.base.query_frames`: as
        given, else the critic's clip length for the task, else 8. Warns where the critic was
        not trained on ``task``, or on another ``view`` of it (the env's
        :class:`~envs.render.CriticView`; :func:`warn_if_other_view`)."""
        warn_if_untrained(critic, task)
        if view is not None:
            warn_if_other_view(critic, task, view)
        return replace(self, frames_per_query=query_frames(critic, self.frames_per_query, task))

    @property
    def keeps_every_frame(self) -> bool:
        """Whether a frame is kept after every step, not only on query steps: a clip of several
        frames is spread over the episode so far, as training spreads its clips over every
        recorded frame (:func:`critic.base.clip_indices`). From the query steps' frames alone,
        query 2 of ``query_every=10`` sent ``[0,0,10,10,10,10,20,20]`` for the training clip's
        ``[0,3,6,9,11,14,17,20]``: repeated frames, which in training mark an episode's first
        steps. One frame (with the first) needs no more than the query step's."""
        return self.frames_per_query is not None and self.frames_per_query > 1

    def is_query_step(self, step: int, done: bool) -> bool:
        """Whether the critic is queried after ``step`` (1-based): every k-th step and the last.

        Example: k = 5 over a 12-step episode queries after steps 5, 10 and 12.
        """
        return done or step % self.query_every == 0


def interpolate_progress(
    estimates: list[ProgressEstimate | None], field: str = "progress"
) -> list[float | None]:
    """Progress (or another number of the estimates: ``field="achieved"``) for every step of a
    finished episode from the estimates of its query steps.

    ``estimates[0]`` is the reset query's, then one entry per step: an estimate on query steps,
    ``None`` between them. Steps between two readable estimates get the straight line between
    them; steps after the last readable one hold it; unreadable estimates count as missing. The
    result has one value per entry (``None`` until the first readable estimate).

    Example: [0.0, None, None, 0.6, None, 0.8] → [0.0, 0.2, 0.4, 0.6, 0.7, 0.8].
    """
    known = [
        (i, float(getattr(e, field)))
        for i, e in enumerate(estimates)
        if e is not None and e.progress is not None and getattr(e, field) is not None
    ]
    if not known:
        return [None] * len(estimates)
    steps, values = zip(*known, strict=True)
    filled = np.interp(np.arange(len(estimates)), steps, values).tolist()
    return [None] * steps[0] + filled[steps[0] :]


def sample_frames(frames: list[np.ndarray], count: int, sampling: str) -> np.ndarray:
    """Pick ``count`` frames, in time order, as one ``[T, H, W, 3]`` array: ``uniform`` spreads
    them over the episode so far, ``last`` takes the newest. With fewer frames than ``count``,
    frames repeat (``uniform``) or the first is repeated in front (``last``), so every query has
    the same length, as in training (:func:`critic.base.clip_indices`).

    Example: 10 frames, count 4, uniform → indices round(linspace(0, 9, 4)) = [0, 3, 6, 9].
    """
    return np.stack(_chosen_frames(frames, count, sampling))


def _chosen_frames(frames: list[np.ndarray], count: int, sampling: str) -> list[np.ndarray]:
    """:func:`sample_frames`' choice, as references to the arrays of ``frames`` (no copy)."""
    if sampling == "last":
        chosen = frames[-count:]
        return [chosen[0]] * (count - len(chosen)) + chosen
    return [frames[i] for i in clip_indices(len(frames), count)]


@dataclass(frozen=True)
class DeferredQuery:
    """A :class:`~critic.base.ProgressQuery` whose clip is stacked only when :meth:`build` is
    called. It holds references to the tracker's kept frames, not a copy: a relabelled episode
    keeps one query per query step until its end, and stacked clips cost ``frames_per_query``
    frames each (354 MB per env at 800 steps of 128² with ``query_every=1`` and 8 frames, against
    40 MB for the frames themselves)."""

    frames: tuple[np.ndarray, ...] | None
    fields: dict[str, Any]

    def build(self) -> ProgressQuery:
        clip = None if self.frames is None else np.stack(self.frames)
        return ProgressQuery(frames=clip, **self.fields)


class EpisodeTracker:
    """One env's episode as the critic reward sees it: frames, held progress, returns.

    Args:
        config: the reward options.
        instruction: the task instruction put into every query.
        critic_name: for error messages.
    """

    def __init__(self, config: CriticRewardConfig, instruction: str, critic_name: str) -> None:
        self.config = config.for_critic(None)  # unsettled (no critic given): the default length
        self.instruction = instruction
        self.critic_name = critic_name
        self.start(None, 0.0)

    def start(self, frame: np.ndarray | None, privileged_progress: float) -> None:
        """Begin an episode from the reset state."""
        self.step_count = 0
        self.frames: list[np.ndarray] = [] if frame is None else [frame]
        self.initial_frame = frame
        self.privileged_progress = float(privileged_progress)
        self.progress: float | None = None  # unknown until the first estimate
        self.achieved: float | None = None  # the critic's P(task achieved), when it gives one
        self.env_return = 0.0
        self.critic_return = 0.0

    def observe(self, frame: np.ndarray | None, privileged_progress: float) -> None:
        """Record the state of a query step."""
        self.keep(frame)
        self.privileged_progress = float(privileged_progress)

    def keep(self, frame: np.ndarray | None) -> None:
        """Keep a step's frame for later clips (every step's when
        :attr:`CriticRewardConfig.keeps_every_frame`, else the query steps')."""
        if frame is not None:
            if (
                self.config.frame_sampling == "last"
                and len(self.frames) >= self.config.frames_per_query
            ):
                self.frames.pop(0)  # "last" never looks further back: keep memory flat
            self.frames.append(frame)

    def query(self) -> ProgressQuery:
        """The query for the current state."""
        return self.deferred_query().build()

    def deferred_query(self) -> DeferredQuery:
        """The query for the current state, its clip stacked later (:class:`DeferredQuery`)."""
        has_frames = bool(self.frames)
        chosen = (
            _chosen_frames(self.frames, self.config.frames_per_query, self.config.frame_sampling)
            if has_frames
            else None
        )
        return DeferredQuery(
            None if chosen is None else tuple(chosen),
            {
                "instruction": self.instruction,
                "initial_frame": self.initial_frame,
                "current_frame": self.frames[-1] if has_frames else None,
                "previous_progress": self.progress,
                "privileged_progress": self.privileged_progress,
            },
        )

    def check(self, estimate: Any, env_index: int = 0) -> ProgressEstimate:
        """Return ``estimate`` if it keeps the contract, else raise :class:`CriticOutputError`."""
        if not isinstance(estimate, ProgressEstimate):
            raise CriticOutputError(
                f"critic {self.critic_name!r} returned {type(estimate).__name__} for env "
                f"{env_index}; estimate_progress must return critic.ProgressEstimate objects"
            )
        try:
            ParseStatus(estimate.status)
        except ValueError:
            raise CriticOutputError(
                f"critic {self.critic_name!r} returned status {estimate.status!r} for env "
                f"{env_index}; use one of {[s.value for s in ParseStatus]}"
            ) from None
        value = estimate.progress
        if value is not None and not (is_number(value) and 0.0 <= value <= 1.0):
            raise CriticOutputError(
                f"critic {self.critic_name!r} returned progress {value!r} for env {env_index}; "
                "progress must be a finite number in [0, 1], or None with a parse status when "
                "the answer could not be read"
            )
        achieved = estimate.achieved
        if achieved is not None and not (is_number(achieved) and 0.0 <= achieved <= 1.0):
            raise CriticOutputError(
                f"critic {self.critic_name!r} returned achieved={achieved!r} for env "
                f"{env_index}; the probability that the task is achieved must be a number in "
                "[0, 1], or None when the critic cannot say"
            )
        if self.config.achieved_weight and value is not None and achieved is None:
            raise CriticOutputError(
                f"achieved_weight={self.config.achieved_weight} rewards the critic's probability "
                f"that the task is achieved, and critic {self.critic_name!r} gives none "
                "(ProgressEstimate.achieved); use a one-pass digit readout (mode=score), the "
                "oracle, or achieved_weight=0"
            )
        return estimate

    def begin(self, estimate: ProgressEstimate) -> None:
        """Take the critic's estimate of the reset state as ``p_0`` (0 if unreadable)."""
        self.progress = 0.0 if estimate.progress is None else float(estimate.progress)
        self.achieved = estimate.achieved if estimate.progress is not None else None

    def reward(
        self, env_reward: float, estimate: ProgressEstimate | None, terminal: bool = False
    ) -> float:
        """Advance one step and return its reward; ``estimate`` is ``None`` between queries.

        An unreadable estimate (``progress is None``) holds the previous progress. ``terminal``:
        the step terminates the episode (not a truncation), where the ``potential`` mode's
        potential is 0.
        """
        self.step_count += 1
        previous = 0.0 if self.progress is None else self.progress
        current = previous
        if estimate is not None and estimate.progress is not None:
            current = float(estimate.progress)
            self.achieved = estimate.achieved
        self.progress = current
        mode = self.config.reward_mode
        if mode == "progress":
            reward = current
        elif mode == "delta":
            reward = current - previous
        elif mode == "potential":
            reward = (0.0 if terminal else self.config.gamma * current) - previous
        elif mode == "log":
            floor = self.config.log_floor
            reward = math.log((1.0 + floor) / (1.0 - current + floor)) / math.log(
                (1.0 + floor) / floor
            )
        else:  # "success", the only mode left after validation
            reward = float(current >= self.config.success_threshold)
        if self.config.achieved_weight:
            reward += self.config.achieved_weight * (self.achieved or 0.0)
        reward += self.config.env_reward_weight * float(env_reward)
        if not math.isfinite(reward):  # each term is checked finite; their weighted sum may not be
            raise InvalidOptionError(
                f"the reward at step {self.step_count} is {reward}: env_reward_weight="
                f"{self.config.env_reward_weight:g} times the task's reward {float(env_reward):g}"
                f" (plus achieved_weight={self.config.achieved_weight:g} times P(achieved)) "
                "overflows a float; give weights of the size of the rewards, e.g. "
                "env_reward_weight=0.1"
            )
        self.env_return += float(env_reward)
        self.critic_return += reward
        return reward

    def critic_success(self) -> bool:
        """Whether the critic's progress has reached the success threshold."""
        return self.progress is not None and self.progress >= self.config.success_threshold

    def info(self, env_reward: float, estimate: ProgressEstimate | None) -> dict[str, Any]:
        """What a step adds to ``info`` (the true ``is_success`` comes from the task itself)."""
        info: dict[str, Any] = {
            "env_reward": float(env_reward),
            "env_return": self.env_return,
            "critic_progress": self.progress,
            "critic_achieved": self.achieved,
            "critic_queried": estimate is not None,
        }
        if estimate is not None:
            info["critic_status"] = ParseStatus(estimate.status).value
            if estimate.reasoning:
                info["critic_reasoning"] = estimate.reasoning
            if estimate.spread is not None:
                info["critic_spread"] = estimate.spread
        return info


def check_batch(critic_name: str, estimates: Any, n_queries: int) -> list:
    """Raise :class:`CriticOutputError` unless the critic returned one estimate per query."""
    try:
        n_estimates = len(estimates)
    except TypeError:
        n_estimates = None
    if n_estimates != n_queries:
        raise CriticOutputError(
            f"critic {critic_name!r} returned {n_estimates} estimates for {n_queries} queries; "
            "a critic must return exactly one estimate per query, in order"
        )
    return list(estimates)


__all__ = [
    "BETWEEN_QUERIES",
    "FRAME_SAMPLING",
    "REWARD_MODES",
    "CriticRewardConfig",
    "DeferredQuery",
    "EpisodeTracker",
    "check_batch",
    "interpolate_progress",
    "sample_frames",
]
