"""Batched critic rewards for SB3 vector envs: one critic call per vector step.

Workers (``DummyVecEnv`` or ``SubprocVecEnv``) step the task envs and render the critic's frame on
query steps into ``info`` (:class:`~envs.vec_stack.CriticFrames`); the main process holds one
:class:`~envs.critic_reward.EpisodeTracker` per env and sends every due query, including the
first query of episodes that just auto-reset, to the critic in a single batch. Rendering inside
the worker is what lets the last frame of an episode reach the critic before the auto-reset.

With ``relabel=True`` (off-policy learners, as VLM-RM does) the critic is called when episodes
end instead, on all of their queries at once (up to 256 per call); steps return a placeholder
reward of 0 and :class:`envs.callbacks.RelabelCallback` writes the critic's rewards into the
replay buffer before the learner trains on them.

This module is the main process's side; the workers' wrapper and the stack builder are in
:mod:`envs.vec_stack` (``CriticFrames`` and ``make_viscritic_vec_env`` are importable from here
too, where they were before the split).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from critic.base import Critic, ParseStatus, ProgressEstimate, ProgressQuery
from critic.factory import make_critic
from critic.queries import read_in_order, reads_in_order
from envs.critic_reward import (
    DEFAULT_CRITIC,
    CriticRewardConfig,
    DeferredQuery,
    EpisodeTracker,
    check_batch,
    interpolate_progress,
)
from envs.errors import InvalidOptionError
from envs.task_env import checked_action
from rollout.imports import require_package
from rollout.warn import warn_user

_vec_env = require_package("stable_baselines3.common.vec_env", "rl", "envs.vec_env")


class VisCriticVecEnv(_vec_env.VecEnvWrapper):
    """Critic rewards for a vector of task envs, with one batched critic call per step.

    Sub-envs must be wrapped in :class:`~envs.vec_stack.CriticFrames` with the same config; use
    :func:`~envs.vec_stack.make_viscritic_vec_env` to build the whole stack. ``infos`` carry the same keys as
    :class:`~envs.wrappers.VisCriticReward`, plus ``critic_return`` at an episode's end (the
    ``episode`` entry of an SB3 ``Monitor`` below this wrapper holds the true return).

    Args:
        venv: the vector of ``CriticFrames``-wrapped task envs.
        critic: a critic name, ``{"name": ..., **kwargs}`` mapping, or instance.
        config: the reward options, a :class:`CriticRewardConfig` or a mapping of its fields
            (``terminate_on_success`` is not available here: sub-envs reset themselves).
        relabel: defer the critic to each episode's end: batched calls over all of the
            episode's queries (:attr:`RELABEL_CHUNK` at most per call), the rewards in the last
            step's ``info["critic_rewards"]`` and a placeholder 0 from every step (use with
            :class:`envs.callbacks.RelabelCallback`; stepping it without one warns once, since a
            learner would see only the zeros). A critic that reads its last estimate (a stepwise
            prompt) is given it, each episode's queries read in order.
            Every step's info has ``env_reward``, ``env_return``, ``critic_pending`` and
            ``critic_queried`` (the critic reads this step's frame at the episode's end); the
            critic's own keys (``critic_progress``, ``critic_achieved``, ``critic_return``,
            ``critic_rewards``) come with the episode's last step.
    """

    # relabel: most queries stacked and sent to the critic in one call (a critic splits a call
    # further by its own batch size, e.g. VLMCritic's max_batch)
    RELABEL_CHUNK = 256

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
            tasks, views = venv.get_attr("task_name"), venv.get_attr("view")
        except AttributeError:
            raise InvalidOptionError(
                "VisCriticVecEnv needs VisCritic task envs underneath (envs.make_task_env, with "
                "CriticFrames on top); build the stack with envs.vec_env.make_viscritic_vec_env"
            ) from None
        self._tasks = list(tasks)
        self._configs = [
            self.config.for_critic(self.critic, task, view)
            for task, view in zip(tasks, views, strict=True)
        ]
        self.config = self._configs[0]
        self._check_workers(venv)
        self._instructions = venv.get_attr("instruction")
        self._trackers = [self._new_tracker(i) for i in range(self.num_envs)]
        self._pending: list | None = None  # relabel mode's queries per env, from reset()
        self._was_reset = False  # a step before the first reset() is refused here
        # relabel: where the learner stored each step of every env's running episode in its
        # replay buffer (RelabelCallback keeps it here, with the episode, across learn() calls)
        self.relabel_positions: list[list[int]] = [[] for _ in range(self.num_envs)]

    def _check_workers(self, venv) -> None:
        """A critic that reads frames needs them on every query step: the workers must render,
        and on a schedule that holds this wrapper's (a worker rendering every 5th step under a
        wrapper querying every step sent no frame to 4 queries in 5, which then showed an old
        frame while their reward was paid)."""
        if not self.critic.needs_frames:  # nothing to render: any task workers will do
            return
        fix = "build the stack with envs.vec_env.make_viscritic_vec_env, or give both one config"
        try:
            schedules = venv.get_attr("critic_query_every")
            renders = venv.get_attr("renders_critic_frames")
        except AttributeError:
            raise InvalidOptionError(
                "VisCriticVecEnv needs CriticFrames workers directly underneath (each task env "
                f"wrapped in envs.vec_stack.CriticFrames); {fix}"
            ) from None
        if not all(renders):
            raise InvalidOptionError(
                f"the critic {self.critic.name!r} reads frames, but the CriticFrames workers were "
                f"built with render=False; {fix}"
            )
        every = self.config.query_every
        if any(every % k for k in schedules):
            raise InvalidOptionError(
                f"the CriticFrames workers render every {sorted(set(schedules))} steps, and this "
                f"wrapper queries every {every}: queries on steps without a frame would show an "
                f"old one; {fix}"
            )
        every_step = [c.keeps_every_frame for c in self._configs]
        sent = venv.get_attr("critic_keeps_every_frame")
        if any(want and not has for want, has in zip(every_step, sent, strict=True)):
            clips = sorted({c.frames_per_query for c in self._configs})
            raise InvalidOptionError(
                f"the critic {self.critic.name!r} reads clips of {clips} frames spread over the "
                "episode, but the CriticFrames workers send frames on query steps alone (their "
                "config's frames_per_query is 1, or unset where this critic's clip is longer); "
                f"{fix}"
            )

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

    def _estimate_deferred(
        self, episodes: list[list[DeferredQuery]], owners: list[tuple[int, EpisodeTracker]]
    ) -> list[list]:
        """:meth:`_estimate` of relabelled episodes' queries (``owners``: each episode's env
        index and tracker), each episode's estimates in a list, their clips stacked
        :attr:`RELABEL_CHUNK` queries at a time: at once, 16 envs' 800-step episodes ending
        together at ``query_every=1`` would hold 5.6 GB of clips (8 frames of 128²).

        A critic that reads its last estimate (a stepwise prompt) has each episode's queries read
        in order, each with its last reading, as it would be online (:func:`read_in_order`);
        every other critic, all queries in as few calls as the chunks allow."""
        if reads_in_order(self.critic):
            return read_in_order(
                episodes,
                lambda asked, chunk: self._estimate(asked, [owners[k] for k in chunk]),
                self.RELABEL_CHUNK,
                build=DeferredQuery.build,
            )
        queries = [q for episode in episodes for q in episode]
        mine = [owner for owner, episode in zip(owners, episodes, strict=True) for _ in episode]
        estimates = []
        for start in range(0, len(queries), self.RELABEL_CHUNK):
            part = slice(start, start + self.RELABEL_CHUNK)
            estimates += self._estimate([q.build() for q in queries[part]], mine[part])
        answers = iter(estimates)
        return [[next(answers) for _ in episode] for episode in episodes]

    def _reset_info(self, index: int) -> dict:
        """Env ``index``'s info from its last reset, which must carry the task's progress."""
        info = self.venv.reset_infos[index]
        if "progress" not in info:
            raise InvalidOptionError(
                f"the reset info of env {index} has no 'progress': an SB3 VecEnvWrapper "
                f"({type(self.venv).__name__}) sits between VisCriticVecEnv and its CriticFrames "
                "workers, and passes no reset infos up; put SB3's wrappers (VecMonitor, "
                "VecNormalize, ...) above VisCriticVecEnv"
            )
        return info

    def _report_reset(self, index: int, estimate: ProgressEstimate | None) -> None:
        """Set env ``index``'s ``reset_infos`` entry as the single-env wrapper's reset returns
        it: the task's info (its frame left out) and the critic's reading of the reset state, or
        ``critic_pending`` where it is read at the episode's end (relabelling). SB3's VecEnv
        left it empty."""
        info = {k: v for k, v in self._reset_info(index).items() if k != "critic_frame"}
        tracker = self._trackers[index]
        critic = {"critic_pending": True} if estimate is None else tracker.info(0.0, estimate)
        self.reset_infos[index] = {**info, **critic}

    def reset(self):
        obs = self.venv.reset()
        self._was_reset = True
        self.relabel_positions = [[] for _ in range(self.num_envs)]
        for i in range(self.num_envs):
            info = self._reset_info(i)
            self._trackers[i] = self._new_tracker(i)
            self._trackers[i].start(info.get("critic_frame"), info["progress"])
        if self.relabel:
            self._pending = [[(None, t.deferred_query())] for t in self._trackers]
            self._terminal = [False] * self.num_envs  # whether each pending episode terminated
            for i in range(self.num_envs):
                self._report_reset(i, None)
            return obs
        estimates = self._estimate(
            [t.query() for t in self._trackers], list(enumerate(self._trackers))
        )
        for i, (tracker, estimate) in enumerate(zip(self._trackers, estimates, strict=True)):
            tracker.begin(estimate)
            self._report_reset(i, estimate)
        return obs

    def step_async(self, actions) -> None:
        # SB3's vec envs read action i for env i and leave any past the last without a word
        count = len(actions) if np.ndim(actions) else None
        if count != self.num_envs:
            raise InvalidOptionError(
                f"{count if count is not None else 'no'} action{'' if count == 1 else 's'} for "
                f"{self.num_envs} envs "
                f"(shape {np.shape(actions)}); give one per env, e.g. shape "
                f"({self.num_envs}, *action_space.shape)"
            )
        # checked here, as each task env checks its own: in a SubprocVecEnv worker the typed
        # error killed the worker, and the caller got a bare EOFError (a NaN from the policy)
        if not self._was_reset:
            raise gym.error.ResetNeeded("step() before venv.reset(): call reset() first")
        for i, (action, task) in enumerate(zip(actions, self._tasks, strict=True)):
            checked_action(action, self.action_space, f"env {i} ({task})")
        self.venv.step_async(actions)

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
            else:  # a clip critic's frame between queries (CriticFrames sends one)
                tracker.keep(info.get("critic_frame"))
            if done:
                reset_info = self._reset_info(i)
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
            rewards[i] = tracker.reward(
                float(env_rewards[i]), estimate, _terminal(dones[i], infos[i])
            )
            infos[i].pop("critic_frame", None)
            infos[i].update(tracker.info(env_rewards[i], estimate))
            if i in fresh:
                infos[i]["critic_return"] = tracker.critic_return
                fresh[i].begin(answers[(i, "start")])
                self._trackers[i] = fresh[i]
                self._report_reset(i, answers[(i, "start")])
        return obs, rewards, dones, infos

    def _step_relabel(self):
        """Record each env's step (its query, on query steps); when episodes end, the critic
        on all their queries (:meth:`_estimate_deferred`), and their rewards replayed through a
        tracker."""
        obs, env_rewards, dones, infos = self.venv.step_wait()
        finished = []
        for i, (tracker, info, done) in enumerate(zip(self._trackers, infos, dones, strict=True)):
            query = None
            if self.config.is_query_step(tracker.step_count + 1, bool(done)):
                tracker.observe(info.get("critic_frame"), info["progress"])
                query = tracker.deferred_query()  # its clip stacked at the episode's end
            else:
                tracker.keep(info.get("critic_frame"))
            tracker.step_count += 1
            self._pending[i].append((float(env_rewards[i]), query))
            self._terminal[i] = _terminal(done, info)
            tracker.env_return += float(env_rewards[i])  # the replay at the end keeps its own
            infos[i].pop("critic_frame", None)
            infos[i].update(critic_pending=True, critic_queried=query is not None,
                            env_reward=float(env_rewards[i]), env_return=tracker.env_return)  # fmt: skip
            if done:
                finished.append(i)
        queries = [[q for _, q in self._pending[i] if q is not None] for i in finished]
        owners = [(i, self._trackers[i]) for i in finished]
        if finished and not self.relabel_callback_attached and not self._warned_unconsumed:
            self._warned_unconsumed = True
            warn_user(
                "VisCriticVecEnv(relabel=True) returns a reward of 0 at every step and the "
                "critic's rewards in the last step's info['critic_rewards']; no RelabelCallback "
                "is attached to write them into a learner's replay buffer, so a learner trained "
                "on this env sees zeros: pass callback=envs.callbacks.RelabelCallback() to "
                "learn(), or use relabel=False"
            )
        read = self._estimate_deferred(queries, owners)
        for i, answers in zip(finished, read, strict=True):
            # the reset query's estimate, then one per step (None between queries)
            estimates = iter(answers)
            per_step = [next(estimates) if q is not None else None for _, q in self._pending[i]]
            rewards, replay = self._replay(i, per_step)
            infos[i]["critic_rewards"] = rewards
            infos[i]["critic_return"] = replay.critic_return
            infos[i]["critic_progress"] = replay.progress
            infos[i]["critic_achieved"] = replay.achieved
            reset_info = self._reset_info(i)
            self._trackers[i] = self._new_tracker(i)
            self._trackers[i].start(reset_info.get("critic_frame"), reset_info["progress"])
            self._pending[i] = [(None, self._trackers[i].deferred_query())]
            self._report_reset(i, None)
        return obs, np.zeros(self.num_envs, dtype=np.float32), dones, infos

    def _replay(self, index: int, per_step: list) -> tuple[np.ndarray, EpisodeTracker]:
        """Env ``index``'s pending steps replayed through a fresh tracker with ``per_step``
        estimates (the reset query's first): the rewards, one per step, and the tracker."""
        if self.config.between_queries == "interpolate":
            per_step = [
                None if p is None else ProgressEstimate(p, achieved=a)
                for p, a in zip(
                    interpolate_progress(per_step),
                    interpolate_progress(per_step, "achieved"),
                    strict=True,
                )
            ]
        replay = self._new_tracker(index)
        replay.begin(per_step[0] or ProgressEstimate(None, status=ParseStatus.NO_ANSWER))
        steps = list(zip(self._pending[index][1:], per_step[1:], strict=True))
        rewards = [
            # the last step of an episode that terminated (the running one's has not)
            replay.reward(r, estimate, terminal=self._terminal[index] and k == len(steps) - 1)
            for k, ((r, _), estimate) in enumerate(steps)
        ]
        return np.asarray(rewards, dtype=np.float32), replay

    def rewards_so_far(self, index: int) -> np.ndarray:
        """The critic rewards of env ``index``'s running episode so far, one per step (relabel
        mode; one critic call over the queries it made): for an episode that a learner's
        ``learn()`` stops in the middle of, whose steps are in the replay buffer. The current step
        is not queried as a last step would be: the steps after the last query hold its reading."""
        # unset, SB3's wrapper forwarded the lookup: "'DummyVecEnv' object has no attribute"
        if not self.relabel:
            raise InvalidOptionError(
                "rewards_so_far() reads the queries a relabel=True env defers; this env rewards "
                "each step as it goes (relabel=False): its rewards are the ones step() returned"
            )
        if self._pending is None:
            raise gym.error.ResetNeeded("rewards_so_far() before venv.reset(): call reset() first")
        pending = self._pending[index]
        queries = [q for _, q in pending if q is not None]
        (read,) = self._estimate_deferred([queries], [(index, self._trackers[index])])
        estimates = iter(read)
        per_step = [next(estimates) if q is not None else None for _, q in pending]
        return self._replay(index, per_step)[0]

    def close(self) -> None:
        self.critic.close()
        try:
            super().close()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            # a SubprocVecEnv whose worker died: SB3's close waited on its pipe, raised, and
            # left the other workers running
            for process in getattr(self.venv, "processes", []):
                process.terminate()
                process.join()
            self.venv.closed = True


def _terminal(done, info: dict) -> bool:
    """Whether a vector env's step ended its episode by termination, not by a time limit's
    truncation (which SB3 marks in ``info["TimeLimit.truncated"]``)."""
    return bool(done) and not info.get("TimeLimit.truncated", False)


# names that moved out of this module, served from where they live now (both modules import
# this one, hence not imported above)
_MOVED = {
    "RelabelCallback": "envs.callbacks",
    "CriticFidelityCallback": "envs.callbacks",
    "CriticFrames": "envs.vec_stack",
    "make_viscritic_vec_env": "envs.vec_stack",
}


def __getattr__(name: str):
    """``envs.vec_env.RelabelCallback``, ``CriticFidelityCallback`` (now :mod:`envs.callbacks`),
    ``CriticFrames`` and ``make_viscritic_vec_env`` (now :mod:`envs.vec_stack`), where they were
    before they moved."""
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
