"""SB3 callbacks for learners on :class:`~envs.vec_env.VisCriticVecEnv`: writing relabelled critic
rewards into an off-policy learner's replay buffer (:class:`RelabelCallback`), and recording how
faithful the critic stays on the learner's own episodes (:class:`CriticFidelityCallback`).

Split from ``envs/vec_env.py`` (the vector wrapper) along the line between the env and the
learner's hooks into it.
"""

from __future__ import annotations

import numpy as np

from envs.errors import InvalidOptionError
from envs.vec_env import VisCriticVecEnv
from rollout.imports import require_package
from rollout.warn import warn_user

_callbacks = require_package("stable_baselines3.common.callbacks", "rl", "envs.vec_env")


class RelabelCallback(_callbacks.BaseCallback):
    """Write the critic rewards of finished episodes (``VisCriticVecEnv(relabel=True)``) into an
    off-policy learner's replay buffer, before it trains on them.

    SB3 calls ``_on_step`` just before it stores a step's transition at ``replay_buffer.pos``, and
    ``_on_rollout_end`` after the last store of a rollout: the positions are noted in the first,
    the rewards written in the second. The learner must train per episode
    (``train_freq=(1, "episode")``), so no placeholder reward is ever sampled.

    When ``learn()`` stops early (a callback such as ``StopTrainingOnMaxEpisodes`` or an
    ``EvalCallback`` with ``StopTrainingOnRewardThreshold`` returns False, which skips
    ``_on_rollout_end``), ``_on_training_end`` writes what is waiting, and gives the steps of an
    episode still running the critic's rewards so far: no stored step keeps its placeholder 0.
    The positions stay with the env's running episode, so a later ``learn(...,
    reset_num_timesteps=False)`` finishes that episode's relabelling.

    Raises:
        InvalidOptionError: the learner has no replay buffer or trains per step, its env has no
            ``VisCriticVecEnv(relabel=True)`` underneath, or a ``VecNormalize`` above it
            normalises rewards (it would learn their scale from the placeholder zeros).
    """

    def _on_training_start(self) -> None:
        from stable_baselines3.common.type_aliases import TrainFrequencyUnit
        from stable_baselines3.common.vec_env import VecNormalize

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
        self._ready: list[tuple[int, list[int], np.ndarray]] = []
        env = self.training_env  # through SB3's wrappers (VecMonitor, VecNormalize, ...)
        while not isinstance(env, VisCriticVecEnv) and hasattr(env, "venv"):
            if isinstance(env, VecNormalize) and env.norm_reward:
                raise InvalidOptionError(
                    "VecNormalize(norm_reward=True) learns the reward's scale from the rewards "
                    "steps return, which are placeholder zeros when the critic's come at the "
                    "episode's end: SAC would train on rewards scaled by ~1/sqrt(its tiny "
                    "variance) and clipped. Use VecNormalize(norm_reward=False), or relabel=False "
                    "(the critic's reward at every step)"
                )
            env = env.venv
        if not isinstance(env, VisCriticVecEnv) or not env.relabel:
            raise InvalidOptionError(
                "RelabelCallback needs a VisCriticVecEnv(relabel=True) under the learner's env "
                "(envs.vec_env.make_viscritic_vec_env(..., relabel=True)); this env gives its "
                "rewards at every step and needs no callback"
            )
        env.relabel_callback_attached = True
        self._env = env

    def _on_step(self) -> bool:
        position = self.model.replay_buffer.pos  # where this step's transition is stored next
        positions = self._env.relabel_positions
        for i, info in enumerate(self.locals["infos"]):
            positions[i].append(position)
            if "critic_rewards" in info:
                self._ready.append((i, positions[i], info["critic_rewards"]))
                positions[i] = []
        return True

    def _on_rollout_end(self) -> None:
        for env_index, positions, rewards in self._ready:
            self._write(env_index, positions, rewards)
        self._ready = []

    def _on_training_end(self) -> None:
        # A callback that stopped learn() did so before SB3 stored the step it was called on:
        # that step's position is the buffer's next (unless it was stored and the rollout ended).
        unstored = self.model.replay_buffer.pos

        def stored(positions: list[int], rewards: np.ndarray) -> tuple[list[int], np.ndarray]:
            # every trailing step at that position went unstored (a resumed learn() stopped on
            # its first step again adds a second one); their rewards end the episode's too
            cut = len(positions)
            while cut and positions[cut - 1] == unstored:
                cut -= 1
            return positions[:cut], rewards[: len(rewards) - (len(positions) - cut)]

        for env_index, positions, rewards in self._ready:
            self._write(env_index, *stored(positions, rewards))
        self._ready = []
        for env_index, positions in enumerate(self._env.relabel_positions):
            if positions:  # an episode still running: its stored steps get the rewards so far
                self._write(env_index, *stored(positions, self._env.rewards_so_far(env_index)))

    def _write(self, env_index: int, positions: list[int], rewards: np.ndarray) -> None:
        """``rewards`` into the buffer at ``positions``; both end at the episode's last stored
        step, so where they differ in length (a callback attached in mid-episode) the last
        ``min`` of each are paired, with a warning."""
        count = min(len(positions), len(rewards))
        if len(positions) != len(rewards):
            warn_user(
                f"RelabelCallback: {len(rewards)} critic rewards for {len(positions)} stored "
                f"steps of env {env_index}'s episode; the last {count} are written"
            )
        # a position twice: a step left unstored by a stopped learn(), then stored there by the
        # next; the later step's reward is the one its transition earned
        latest = dict(
            zip(positions[len(positions) - count :], rewards[len(rewards) - count :], strict=True)
        )
        buffer = self.model.replay_buffer
        for position, reward in latest.items():
            buffer.rewards[position, env_index] = reward


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
