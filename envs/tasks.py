"""The task registry and the environment base every task implements.

A task is a simulator scene plus what VisCritic needs to use it as a critic's subject: the
instruction, true success, privileged progress in [0, 1], the horizon, and the critic's view
(cameras, size, appearance). The view lives here, in the spec, so that data synthesis, critic
training and RL all see the very same frames.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from envs.errors import InvalidActionError, InvalidOptionError, UnknownTaskError
from envs.render import CriticView, FreeCamera, ViewRenderer, check_view
from rollout.checks import is_int


@dataclass(frozen=True)
class TaskSpec:
    """Everything that defines a task.

    Attributes:
        name: registry key, e.g. ``"Lift"`` or ``"Reacher-v5"``.
        instruction: what the critic is told the robot should do.
        horizon: steps per episode (episodes are truncated, never terminated, at the horizon).
        view: what the critic sees.
        make: builds the :class:`TaskEnv` from ``(spec, **kwargs)``.
        family: ``"mujoco"`` (gymnasium MuJoCo) or ``"robosuite"``.
        stages: names of the progress stages, in order (documentation for progress labels).
        goal_distance: the quantity of :meth:`TaskEnv.privileged_state` (in cm) that says how far
            a state is from the goal, e.g. Reacher's ``"fingertip_to_target_cm"``; the RL
            report splits its test starts by it. ``None`` where no distance says it (Lift's goal
            is a height, Door's an angle).
    """

    name: str
    instruction: str
    horizon: int
    view: CriticView
    make: Callable[..., TaskEnv]
    family: str
    stages: tuple[str, ...] = ()
    goal_distance: str | None = None


_TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add ``spec`` to the registry (replacing one of the same name) and return it, and register
    its bare env with gymnasium (:func:`register_bare_env`), so ``gym.make(bare_env_id(name))``
    builds it with this spec's horizon.

    Raises:
        InvalidOptionError: the name makes no gymnasium id (e.g. it has a space or a ``/``).
    """
    check_horizon(spec.horizon)  # gymnasium's TimeLimit took 0 or 50.0 and failed at make
    if not isinstance(spec.view, CriticView):
        raise InvalidOptionError(
            f"task {spec.name!r}: view={spec.view!r:.60} must be an envs.CriticView"
        )
    register_bare_env(spec)
    _TASKS[spec.name] = spec
    return spec


def bare_env_id(task: str) -> str:
    """The gymnasium id of a task's bare env: ``VisCritic/Lift-v0``, ``VisCritic/Reacher-v5``."""
    return f"VisCritic/{task}" if "-v" in task else f"VisCritic/{task}-v0"


def register_bare_env(spec: TaskSpec) -> None:
    """Register ``VisCritic/<task>`` (:func:`bare_env_id`): the bare task env under a
    ``TimeLimit`` of the spec's horizon, replacing an entry of that id (a spec registered again).

    Here rather than in :mod:`envs.registration`, which imports this module: every
    :func:`register_task` registers its bare env, tasks added after ``import envs`` included.
    Registered as :func:`envs.registration.register_envs` says (a string entry point, gymnasium's
    passive env checker off).
    """
    env_id = bare_env_id(spec.name)
    try:
        gym.envs.registration.parse_env_id(env_id)
    except gym.error.Error as exc:
        raise InvalidOptionError(
            f"task name {spec.name!r} makes no gymnasium id ({exc}); name the task with letters, "
            "digits and '_', '-', '.', e.g. 'MyReacher' or 'MyReacher-v1'"
        ) from None
    gym.registry.pop(env_id, None)  # replaced, without gymnasium's warning about overriding it
    gym.register(
        env_id,
        entry_point="envs.tasks:make_registered_task",
        kwargs={"registered_task": spec.name},
        max_episode_steps=spec.horizon,
        disable_env_checker=True,
    )


def task_names() -> list[str]:
    """Registered task names, sorted."""
    return sorted(_TASKS)


def get_task(name: str) -> TaskSpec:
    """The spec registered under ``name``.

    Raises:
        UnknownTaskError: the name is not registered; the message lists the registered names.
    """
    try:
        return _TASKS[name]
    except (KeyError, TypeError):
        raise UnknownTaskError(
            f"unknown task {name!r}; registered tasks: {task_names()}. "
            "Pass one of these as env=..., or register your own with envs.register_task."
        ) from None


def make_registered_task(registered_task: str, **kwargs: Any) -> TaskEnv:
    """``gym.make(bare_env_id(task), ...)``'s entry point: :func:`make_task_env` of the task its
    id names. A ``name=`` there would build another task under this one's time limit."""
    if "name" in kwargs:
        raise InvalidOptionError(
            f"name={kwargs['name']!r}: gym.make({bare_env_id(registered_task)!r}) builds "
            f"{registered_task}; make another task by its own id, e.g. "
            f"gym.make({bare_env_id(str(kwargs['name']))!r})"
        )
    if "horizon" in kwargs:  # VisCriticReward-v0's option, not a task's
        raise InvalidOptionError(
            f"horizon={kwargs['horizon']!r} is an option of VisCriticReward-v0, not of the bare "
            f"task; give gym.make({bare_env_id(registered_task)!r}, "
            f"max_episode_steps={kwargs['horizon']!r}) for its episode length"
        )
    return make_task_env(registered_task, **kwargs)


def make_task_env(
    name: str,
    *,
    camera: str | FreeCamera | list | tuple | None = None,
    image_size: int | tuple[int, int] | None = None,
    render_mode: str | None = None,
    **kwargs: Any,
) -> TaskEnv:
    """Build the bare task environment (no time limit, no critic).

    Args:
        name: a registered task name.
        camera: overrides the spec's camera(s); a list tiles several views.
        image_size: overrides the critic image size: an int for square images, or ``(h, w)``.
        render_mode: ``None`` or ``"rgb_array"`` (renders the critic's view).
        **kwargs: task-specific options passed to the task's constructor.
    """
    spec = get_task(name)
    check_task_kwargs(kwargs)
    view = spec.view
    if camera is not None:
        cams = tuple(camera) if isinstance(camera, list | tuple) else (camera,)
        if not cams:
            raise InvalidOptionError(
                "camera=[] names no camera; pass a camera name, or a list of names to tile"
            )
        view = dataclasses.replace(view, cameras=cams)
    if image_size is not None:
        height, width = _image_size(image_size)
        view = dataclasses.replace(view, height=height, width=width)
    try:
        env = spec.make(spec, view=view, render_mode=render_mode, **kwargs)
    except gym.error.Error:
        raise  # the project's typed errors (InvalidOptionError, ...) say what to fix already
    except (TypeError, ValueError, ArithmeticError, AttributeError, AssertionError, KeyError,
            IndexError, OSError) as exc:  # fmt: skip  # what simulators raise for an option they
        # cannot use (OSError: a model file, xml_file=, that is not there or cannot be read)
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if unknown is None or unknown.group(1) not in kwargs:
            if not kwargs:
                raise
            # a task option of the right name and a wrong value, refused deep in the simulator
            raise InvalidOptionError(
                f"the task {name!r} could not be built with its options {kwargs!r:.200}: "
                f"{type(exc).__name__}: {exc}; check their types and ranges against the task's "
                "constructor (envs/mujoco_tasks.py, envs/robosuite_tasks.py) and its simulator's"
            ) from exc
        key = unknown.group(1)
        own = [
            p.name
            for p in inspect.signature(spec.make).parameters.values()
            if p.name not in ("spec", "view", "render_mode")
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        raise InvalidOptionError(
            f"{key}={kwargs[key]!r} is not an option of the task {name!r} ({exc}); remove it or "
            f"correct its name: task options are {name}'s own ({', '.join(own) or 'none'}) and "
            "its simulator's constructor arguments"
        ) from exc
    try:
        check_view(env.mj_model, view)
    except Exception:
        env.close()
        raise
    return env


def check_task_kwargs(value: Any) -> dict[str, Any]:
    """The task options a wrapper was given (``task_kwargs``) as a dict; ``None`` is none."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise InvalidOptionError(
            f"task_kwargs={value!r} must be a mapping of option names to values, e.g. "
            "{'min_start_distance': 0.15} on Reacher-v5, or None"
        )
    if reserved := sorted(set(value) & _NOT_TASK_OPTIONS):
        raise InvalidOptionError(
            f"task_kwargs names {reserved}, which are not task options: camera=, image_size= and "
            "render_mode= are the environment's own arguments (e.g. "
            "gym.make('VisCriticReward-v0', env=..., image_size=64)), and name, spec and view "
            "are set from env=; remove them from task_kwargs"
        )
    return dict(value)


# What make_task_env and its callers set themselves; in task_kwargs they would be given twice.
_NOT_TASK_OPTIONS = frozenset({"name", "spec", "view", "camera", "image_size", "render_mode"})


def _image_size(value: Any) -> tuple[int, int]:
    """``(height, width)`` from an int or a pair of ints, each in [16, 1024]."""
    if is_int(value):
        sides = (int(value), int(value))
    elif isinstance(value, list | tuple) and len(value) == 2 and all(is_int(v) for v in value):
        sides = (int(value[0]), int(value[1]))
    else:
        sides = None
    if sides is None or not all(16 <= v <= 1024 for v in sides):
        raise InvalidOptionError(
            f"image_size={value!r} is not valid; pass an int or (height, width) with each side "
            "between 16 and 1024 pixels"
        )
    return sides


def check_horizon(value: Any) -> int:
    """Return ``value`` if it is a valid episode length, else raise :class:`InvalidOptionError`."""
    if not is_int(value) or value < 1:
        raise InvalidOptionError(f"horizon={value!r} must be an integer >= 1 (steps per episode)")
    return int(value)


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
        shape = self.action_space.shape
        try:
            array = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            array = None
        if array is None or array.shape != shape:
            raise InvalidActionError(
                f"{self.task_name}: action {action!r:.80} must be an array of shape {shape} "
                f"(env.action_space: {self.action_space})"
            )
        if not np.isfinite(array).all():
            raise InvalidActionError(
                f"{self.task_name}: action {array.tolist()} is not finite; a NaN or inf action "
                "makes the simulation's state NaN (check the policy's outputs)"
            )
        return array

    # -- what subclasses provide -------------------------------------------------------------
    @property
    def mj_model(self):
        """The ``mujoco.MjModel`` being simulated."""
        raise NotImplementedError

    @property
    def mj_data(self):
        """The ``mujoco.MjData`` being simulated."""
        raise NotImplementedError

    def progress(self) -> float:
        """Privileged task progress in [0, 1]; 1 exactly when the task is achieved. This, like
        :meth:`is_success` and :meth:`privileged_state`, raises
        :class:`gymnasium.error.ResetNeeded` before the first :meth:`reset`."""
        raise NotImplementedError

    def is_success(self) -> bool:
        """True task success."""
        raise NotImplementedError

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
        """The privileged fields put into every ``info``."""
        return {"progress": float(self.progress()), "is_success": bool(self.is_success())}

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
        if self._view_renderer is not None:
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
