"""The environment base every task implements, and its contract (docs/tasks.md).

:class:`TaskEnv` is a task's simulator as a gymnasium env with privileged progress and success;
:func:`check_task_info` is what the wrappers check of every ``info`` they read. Re-exported by
:mod:`envs.tasks`, where the registry builds these envs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium as gym
import numpy as np

from envs.errors import InvalidActionError, InvalidOptionError, TaskContractError
from envs.render import CriticView, ViewRenderer
from rollout.checks import is_int, is_number, plain_values

if TYPE_CHECKING:
    from gymnasium.envs.registration import EnvSpec

    from envs.tasks import TaskSpec


class TaskEnv(gym.Env):
    """A task's simulator as a gymnasium env with privileged progress and success.

    Subclasses wrap one simulator family. They expose the MuJoCo model and data through
    :attr:`mj_model` / :attr:`mj_data`, so rendering is shared, and implement
    :meth:`progress` and :meth:`is_success` from privileged state.

    ``info`` of ``reset`` and ``step`` carries ``progress`` (privileged, in [0, 1]) and
    ``is_success`` (true task success). A subclass's ``reset`` starts with
    ``seed = self._begin_reset(seed)`` and its ``step`` with ``action =
    self._checked_action(action)``, so every task checks seeds and actions, and refuses a step
    before its first reset, alike.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 20}
    _spec: EnvSpec | None = None

    @property
    def spec(self) -> EnvSpec | None:
        """The spec ``gym.make`` recorded, its kwargs as plain Python values: gymnasium records
        the options as given, and a numpy one (``query_every=np.int64(5)``) made
        ``env.spec.to_json()`` fail."""
        return self._spec

    @spec.setter
    def spec(self, spec: EnvSpec | None) -> None:
        self._spec = spec if spec is None else replace(spec, kwargs=plain_values(spec.kwargs))

    def __init__(self, spec: TaskSpec, view: CriticView, render_mode: str | None = None) -> None:
        if render_mode not in (None, "rgb_array"):
            raise InvalidOptionError(
                f"render_mode={render_mode!r} is not supported; use None or 'rgb_array' "
                "(headless: the critic's view is returned as an image)"
            )
        self.spec_task = spec
        self.view = view
        self.render_mode = render_mode
        self._view_renderer: ViewRenderer | None = None
        self._needs_reset = True

    # -- what subclasses call from reset and step --------------------------------------------
    def _begin_reset(self, seed: Any) -> int | None:
        """Check ``seed`` (None, or an integer >= 0 of any kind), seed :attr:`np_random` with it
        as :meth:`gymnasium.Env.reset` does, and allow :meth:`step`. Returns the seed as a plain
        int, which gymnasium's and robosuite's own seeding require."""
        if seed is not None and (not is_int(seed) or seed < 0):
            raise InvalidOptionError(
                f"seed={seed!r} must be None or an integer >= 0, e.g. env.reset(seed=0)"
            )
        seed = None if seed is None else int(seed)
        self._check_open()
        super().reset(seed=seed)
        self._needs_reset = False
        return seed

    def _checked_action(self, action: Any) -> np.ndarray:
        """``action`` as a float array of the action space's shape, once the env is reset.

        Raises:
            gymnasium.error.ResetNeeded: :meth:`step` before the first :meth:`reset` (the task's
                start state, and what progress is measured from, are set there).
            InvalidActionError: the action is not of the space's shape, or not finite.
        """
        self._check_reset("step()")
        return checked_action(action, self.action_space, self.task_name)

    # -- what subclasses provide -------------------------------------------------------------
    @property
    def mj_model(self):
        """The ``mujoco.MjModel`` being simulated."""
        raise self._left_out("the mj_model property (the mujoco.MjModel the view renders)")

    @property
    def mj_data(self):
        """The ``mujoco.MjData`` being simulated."""
        raise self._left_out("the mj_data property (the mujoco.MjData the view renders)")

    def progress(self) -> float:
        """Privileged task progress in [0, 1]; 1 exactly when the task is achieved. This, like
        :meth:`is_success` and :meth:`privileged_state`, raises
        :class:`gymnasium.error.ResetNeeded` before the first :meth:`reset`."""
        raise self._left_out("progress() (privileged progress in [0, 1], 1 when achieved)")

    def is_success(self) -> bool:
        """True task success."""
        raise self._left_out("is_success() (the task's true success, a bool)")

    def _left_out(self, what: str) -> TaskContractError:
        return TaskContractError(
            f"{type(self).__name__} does not define {what}, which every TaskEnv must "
            "(docs/tasks.md)"
        )

    def privileged_state(self) -> dict[str, float]:
        """Named privileged quantities of the current state, recorded with synthesised episodes
        for grounded chains of thought and read by the final test of zero-shot RL (where its
        policies end). Names follow ``critic.data.reasoning``: ``<a>_to_<b>_cm``,
        ``<object>_height_cm``, ``<object>_grasped`` (0/1), ``<object>_angle_deg``. The one that says
        how far the state is from the goal is named by :attr:`TaskSpec.goal_distance`."""
        return {}

    # -- hindsight goals (optional; docs/data.md) ---------------------------------------------
    def sim_state(self) -> Any:
        """A copy of the simulator state, for :meth:`restore_sim_state`."""
        raise NotImplementedError(f"{self.spec_task.name} cannot save its simulator state")

    def restore_sim_state(self, state: Any) -> None:
        """Put the simulator back into a state :meth:`sim_state` returned (no physics step)."""
        raise NotImplementedError(f"{self.spec_task.name} cannot restore its simulator state")

    def achieved_goal(self) -> np.ndarray:
        """Where the goal would have to be for the current state to achieve the task."""
        raise NotImplementedError(f"{self.spec_task.name} has no movable goal")

    def move_goal(self, goal: np.ndarray, *, restart: bool = False) -> None:
        """Move the goal to ``goal`` and nothing else. ``restart``: progress is measured from the
        current state on, as after a reset. Only tasks whose goal never touches the dynamics can
        do this (Reacher's target is drawn, not simulated), so a recorded trajectory stays valid."""
        raise NotImplementedError(f"{self.spec_task.name} has no movable goal")

    # -- shared ------------------------------------------------------------------------------
    @property
    def instruction(self) -> str:
        """The task instruction given to the critic."""
        return self.spec_task.instruction

    @property
    def task_name(self) -> str:
        """The registered name of the task (a checkpoint's clip length per task is keyed by it)."""
        return self.spec_task.name

    def task_info(self) -> dict[str, Any]:
        """The privileged fields put into every ``info``, checked: every label, reward and
        report is read from them.

        Raises:
            TaskContractError: ``progress()`` is not a number in [0, 1], or not 1 where
                ``is_success()`` is true; ``is_success()`` is not a bool.
        """
        return _checked_fields(self, self.progress(), self.is_success(), "")

    def render_critic_view(self) -> np.ndarray:
        """The critic's frame of the current state: uint8 ``[H, W * n_cameras, 3]``.

        Raises:
            gymnasium.error.ResetNeeded: before the first :meth:`reset` (there is no state yet).
        """
        self._check_reset("render_critic_view()")
        if self._view_renderer is None:
            self._view_renderer = ViewRenderer(self.mj_model, self.view)
        return self._view_renderer.render(self.mj_data)

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles leave the renderer out (a GL context and the mujoco module, which
        do not copy); the copy makes its own at its first frame."""
        state = self.__dict__.copy()
        state["_view_renderer"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A copy starts unreset, as gymnasium's own MuJoCo envs copy (they are rebuilt from
        their constructor's arguments, so the simulator's state is not carried over): stepping
        or rendering it before :meth:`reset` is refused, not run from a state it does not hold."""
        self.__dict__.update(state)
        self._needs_reset = True

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array":
            return self.render_critic_view()
        return None

    def close(self) -> None:
        """Release the renderer and the simulator; a second call does nothing."""
        self._closed = True
        if getattr(self, "_view_renderer", None) is not None:  # None: __init__ never ran
            self._view_renderer.close()
            self._view_renderer = None
        super().close()

    def _check_reset(self, what: str) -> None:
        """Refuse ``what`` (a method call) on a closed env, or before the first :meth:`reset`:
        the task's start state, what progress is measured from and the simulator's derived
        quantities (positions, contacts) exist from there on, and before it every distance reads
        0 (success, from nothing done)."""
        self._check_open()
        if self._needs_reset:
            raise gym.error.ResetNeeded(
                f"{self.task_name}: {what} before reset(); call env.reset(seed=...) first"
            )

    def _check_open(self) -> None:
        if getattr(self, "_closed", False):
            raise gym.error.ClosedEnvironmentError(
                f"{self.task_name}: the env is closed; make a new one (envs.make_task_env or "
                "gym.make)"
            )


def check_task_info(info: Any, task: TaskEnv, method: str) -> dict[str, Any]:
    """``info`` from the task's ``reset`` or ``step`` (``method``), which must carry its
    :meth:`TaskEnv.task_info`: the wrappers read progress and success from there.

    Raises:
        TaskContractError: it does not (a task of one's own that returns its simulator's info).
    """
    if not isinstance(info, Mapping) or not {"progress", "is_success"} <= info.keys():
        raise TaskContractError(
            f"{task.task_name} ({type(task).__name__}): the info of its {method}() has no "
            "'progress' and 'is_success'; a TaskEnv's reset and step return "
            "{**info, **self.task_info()}"
        )
    # checked again here: a task may put them in its info without task_info()
    _checked_fields(task, info["progress"], info["is_success"], f"the info of its {method}() ")
    return info


def check_task_reward(reward: Any, task: TaskEnv) -> float:
    """The reward of the task's ``step`` as a float, which must be a finite number: the critic
    reward adds it (``env_reward_weight``) and reports its return beside the critic's, and an
    infinite one made the critic's reward NaN even at weight 0.

    Raises:
        TaskContractError: it is not a finite number.
    """
    if isinstance(reward, np.ndarray) and reward.ndim == 0:
        reward = reward.item()
    if not is_number(reward):
        raise TaskContractError(
            f"{task.task_name} ({type(task).__name__}): its step() returned reward "
            f"{reward!r:.60} ({type(reward).__name__}); a task's reward must be a finite number"
        )
    return float(reward)


def _checked_fields(task: TaskEnv, progress: Any, success: Any, where: str) -> dict[str, Any]:
    """``progress`` and ``success`` of ``task`` (from its methods, or ``where``: its info), as
    the contract has them, or :class:`TaskContractError`."""
    name = f"{task.task_name} ({type(task).__name__})"
    said = {"": ("is_success() returned", "progress() returned")}.get(
        where, (f"{where}has is_success", f"{where}has progress")
    )
    if not isinstance(success, bool | np.bool_):
        raise TaskContractError(
            f"{name}: {said[0]} {success!r:.60} ({type(success).__name__}); it must be a bool, "
            "e.g. bool(distance < radius)"
        )
    if not is_number(progress) or not 0.0 <= float(progress) <= 1.0:
        raise TaskContractError(
            f"{name}: {said[1]} {progress!r:.60}; it must be a finite number in [0, 1] (the "
            "share of the task done, from privileged state)"
        )
    if success and float(progress) != 1.0:
        raise TaskContractError(
            f"{name}: {said[1]} {float(progress)!r} where is_success is true; it must be exactly 1 "
            "when the task is achieved (the oracle and every report read 'achieved' from it): "
            "return 1.0 first when is_success()"
        )
    return {"progress": float(progress), "is_success": bool(success)}


def checked_action(action: Any, space: Any, name: str) -> np.ndarray:
    """``action`` as a float array of the Box ``space``'s shape (``name``: whose action, for the
    message): what a task env's step and a vector env's step check alike.

    Raises:
        InvalidActionError: the action is not of the space's shape, not finite, or overflows the
            space's dtype.
    """
    shape = space.shape
    try:
        array = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError):
        array = None
    if array is None or array.shape != shape:
        raise InvalidActionError(
            f"{name}: action {action!r:.80} must be an array of shape {shape} "
            f"(env.action_space: {space})"
        )
    if not np.isfinite(array).all():
        raise InvalidActionError(
            f"{name}: action {array.tolist()} is not finite; a NaN or inf action "
            "makes the simulation's state NaN (check the policy's outputs)"
        )
    dtype = np.dtype(space.dtype)
    if np.issubdtype(dtype, np.floating):
        with np.errstate(over="ignore"):
            cast = array.astype(dtype)
        if not np.isfinite(cast).all():  # 1e39 is inf as float32: a task's cost of inf
            raise InvalidActionError(
                f"{name}: action {array.tolist()} overflows the action space's "
                f"{dtype} (env.action_space: {space}); check the policy's outputs"
            )
    return array
