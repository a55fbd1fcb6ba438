"""The task registry: specs, their gymnasium ids, and building a task's env by name.

A task is a simulator scene plus what VisCritic needs to use it as a critic's subject: the
instruction, true success, privileged progress in [0, 1], the horizon, and the critic's view
(cameras, size, appearance). The view lives here, in the spec, so that data synthesis, critic
training and RL all see the very same frames. The env base every task implements,
:class:`TaskEnv`, and its contract are in :mod:`envs.task_env` (re-exported here).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import pickle
import re
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from envs.errors import InvalidOptionError, TaskContractError, UnknownTaskError
from envs.render import CriticView, FreeCamera, check_view
from envs.task_env import TaskEnv, check_task_info, check_task_reward
from rollout.checks import is_int

__all__ = [  # TaskEnv and check_task_info live in envs.task_env; imported from here as before
    "TaskEnv",
    "TaskSpec",
    "bare_env_id",
    "check_horizon",
    "check_sendable",
    "check_task_info",
    "check_task_kwargs",
    "check_task_reward",
    "get_task",
    "import_task_modules",
    "make_registered_task",
    "make_task_env",
    "register_bare_env",
    "register_task",
    "registered_spec",
    "task_names",
]


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
        InvalidOptionError: the name is empty or makes no gymnasium id (e.g. it has a space or a
            ``/``) or one another task takes (``Foo`` and ``Foo-v0``); the instruction is empty
            or holds the prompt's own syntax; the family is not one of :data:`FAMILIES`; ``make``
            is not callable; the horizon or the view is not valid (docs/tasks.md).
        TaskContractError: ``make`` is a class but not a :class:`~envs.task_env.TaskEnv`.
    """
    if not isinstance(spec, TaskSpec):
        raise InvalidOptionError(f"register_task({spec!r:.60}) takes an envs.TaskSpec")
    if not isinstance(spec.name, str) or not spec.name.strip():
        raise InvalidOptionError(
            f"task name {spec.name!r} must be a non-empty string, e.g. 'MyReacher-v1'"
        )
    horizon = check_horizon(spec.horizon)  # gymnasium's TimeLimit took 0 or 50.0 and failed
    if type(spec.horizon) is not int:  # np.int64(50): gymnasium's registry takes an int alone
        spec = dataclasses.replace(spec, horizon=horizon)
    if not isinstance(spec.view, CriticView):
        raise InvalidOptionError(
            f"task {spec.name!r}: view={spec.view!r:.60} must be an envs.CriticView"
        )
    _check_instruction(spec)
    if spec.family not in FAMILIES:
        raise InvalidOptionError(
            f"task {spec.name!r}: family={spec.family!r} must be one of {list(FAMILIES)} (the "
            "simulator it runs on; a gymnasium MuJoCo env is 'mujoco')"
        )
    if not callable(spec.make):
        raise InvalidOptionError(
            f"task {spec.name!r}: make={spec.make!r:.60} must build the env from (spec, view=, "
            "render_mode=, **options): a TaskEnv subclass, e.g. make=MyTask"
        )
    if isinstance(spec.make, type) and not issubclass(spec.make, TaskEnv):
        # a gymnasium env class given as it is: gym.make failed with "MujocoEnv.__init__() got
        # an unexpected keyword argument 'view'"
        raise TaskContractError(
            f"task {spec.name!r}: make={spec.make.__name__} is not an envs.TaskEnv subclass; make "
            "a TaskEnv subclass (envs.mujoco_tasks.GymMujocoTask wraps a gymnasium MuJoCo env) "
            "and give it as make="
        )
    taken = next(
        (t for t in _TASKS if t != spec.name and bare_env_id(t) == bare_env_id(spec.name)), None
    )
    if taken is not None:  # 'Foo' and 'Foo-v0' are both VisCritic/Foo-v0
        raise InvalidOptionError(
            f"task {spec.name!r} would take the gymnasium id {bare_env_id(spec.name)!r} of the "
            f"registered task {taken!r}; name it apart, e.g. {spec.name + '2'!r}"
        )
    register_bare_env(spec)
    _TASKS[spec.name] = spec
    return spec


FAMILIES = ("mujoco", "robosuite")  # TaskSpec.family: the simulators tasks run on


def _check_instruction(spec: TaskSpec) -> None:
    """The instruction a critic is given: words, without the prompt's own syntax."""
    from critic.base import prompt_syntax_problem

    instruction = spec.instruction
    problem = None
    if not isinstance(instruction, str) or not instruction.strip():
        problem = (
            f"instruction={instruction!r} must be the task in words, e.g. 'Lift the cube.' (what "
            "the critic is told the robot should do)"
        )
    else:
        problem = prompt_syntax_problem("instruction", instruction)
    if problem:
        raise InvalidOptionError(f"task {spec.name!r}: {problem}")


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


def import_task_modules(modules: Any, option: str = "imports") -> list[str]:
    """Import the modules that register one's own tasks and experts (:func:`register_task`,
    ``envs.experts.register_expert``), as the experiment scripts' ``imports=[my_tasks]`` does.

    Modules are found on ``sys.path`` and in the current directory (added at the end of
    ``sys.path``, where worker processes find it too; a file here that another module of its name
    hides, ``test.py``, is refused). A module imported already is not imported again.

    Args:
        modules: a module name (``"my_tasks"``, ``"lab.tasks"``), a list of them, or ``None``.
        option: the option's name, for messages.

    Returns:
        The names imported.

    Raises:
        InvalidOptionError: a name that is no module name, a module not found, or one whose own
            code raised (the message names the file and line).
    """
    if modules is None:
        return []
    names = [modules] if isinstance(modules, str) else modules
    if not isinstance(names, Sequence) or not all(
        isinstance(n, str) and all(part.isidentifier() for part in n.split(".")) for n in names
    ):
        raise InvalidOptionError(
            f"{option}={modules!r} must be a list of module names, e.g. {option}=[my_tasks] for "
            "my_tasks.py in the current directory (not a file path), or [] for none"
        )
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    for name in names:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name or name.startswith(f"{exc.name}."):  # the module itself
                raise InvalidOptionError(
                    f"{option}=[{name}]: no module named {name!r} in the current directory "
                    f"({os.getcwd()}) or on PYTHONPATH; run from the folder holding "
                    f"{name.replace('.', '/')}.py, or add that folder to PYTHONPATH"
                ) from None
            raise _import_failed(option, name, exc) from exc
        except Exception as exc:  # the module's own code failed: its file and line say where
            raise _import_failed(option, name, exc) from exc
        here = os.path.join(os.getcwd(), *name.split(".")) + ".py"
        found = getattr(module, "__file__", None)
        if os.path.isfile(here) and (found is None or not os.path.samefile(found, here)):
            raise InvalidOptionError(
                f"{option}=[{name}] imported the module {name!r} of {found or 'Python itself'}, "
                f"not {here}, which the name means here: rename that file (e.g. my_tasks.py)"
            )
    return list(names)


def _import_failed(option: str, name: str, exc: BaseException) -> InvalidOptionError:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return InvalidOptionError(
        f"{option}=[{name}]: importing {name!r} failed{where}: {type(exc).__name__}: {exc}"
    )


def specs_for_workers(names: Any) -> dict[str, TaskSpec]:
    """The specs of the tasks ``names``, for worker processes (which import ``envs`` afresh and
    register them from these), checked to pickle.

    Raises:
        UnknownTaskError: a name that is not registered.
        InvalidOptionError: a spec that cannot be sent (a ``make`` that is a lambda or a local
            function).
    """
    specs = {name: get_task(name) for name in names}
    for name, spec in specs.items():
        check_sendable(
            spec,
            f"the task {name!r}",
            "its make= (and view) must be module-level, e.g. make=MyTask, not a lambda or a "
            "function defined inside another",
        )
    return specs


def check_sendable(value: Any, what: str, fix: str) -> None:
    """Refuse ``value`` (``what``: its name in the message) that cannot be pickled to a worker
    process, saying ``fix`` and that ``workers=1`` needs none."""
    try:
        pickle.dumps(value)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise InvalidOptionError(
            f"{what} cannot be sent to worker processes ({type(exc).__name__}: {exc}); {fix}; or "
            "run with workers=1"
        ) from None


def registered_spec(name: str) -> TaskSpec | None:
    """The spec registered under ``name``, or ``None``."""
    return _TASKS.get(name) if isinstance(name, str) else None


def get_task(name: str) -> TaskSpec:
    """The spec registered under ``name``.

    Raises:
        UnknownTaskError: the name is not registered; the message lists the registered names.
    """
    try:
        return _TASKS[name]
    except (KeyError, TypeError):
        import multiprocessing

        # a spawn / forkserver worker (gymnasium's AsyncVectorEnv) imports envs afresh: a task
        # registered under `if __name__ == "__main__":` never ran there
        worker = (
            " This is a worker process: it has the tasks registered when its modules are "
            "imported, so register yours at a module's top level (not under `if __name__ == "
            '"__main__":`), or use envs.vec_env.make_viscritic_vec_env, which hands its workers '
            "the spec."
            if multiprocessing.parent_process() is not None
            else ""
        )
        raise UnknownTaskError(
            f"unknown task {name!r}; registered tasks: {task_names()}. "
            "Pass one of these as env=..., or register your own with envs.register_task "
            "(docs/tasks.md; the experiment scripts import its module with imports=[my_tasks])."
            + worker
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


# gym.make reads it (see envs.registration): "rgb_array_list" and "human" are wrapped
make_registered_task.metadata = {"render_modes": ["rgb_array"]}  # type: ignore[attr-defined]


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
        # a FreeCamera's fields as a mapping: how env.spec.to_json() writes one, and how a
        # config file spells one
        cams = tuple(_free_camera(c) if isinstance(c, Mapping) else c for c in cams)
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
        if unknown is not None and unknown.group(1) in ("view", "render_mode"):
            raise TaskContractError(
                f"task {name!r}: make={getattr(spec.make, '__name__', spec.make)!r} does not take "
                f"{unknown.group(1)}= ({type(exc).__name__}: {exc}); a task's make= builds its env "
                "from (spec, view=, render_mode=, **options): a TaskEnv subclass "
                "(envs.mujoco_tasks.GymMujocoTask wraps a gymnasium MuJoCo env)"
            ) from exc
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
    if not isinstance(env, TaskEnv) or not hasattr(env, "spec_task"):
        what = type(env).__name__
        if isinstance(env, gym.Env) and not isinstance(env, TaskEnv):  # half-built: no close
            env.close()
        raise TaskContractError(
            f"task {name!r}: make={getattr(spec.make, '__name__', spec.make)!r} built a {what}"
            + (
                ", whose __init__ never called TaskEnv.__init__; call "
                "super().__init__(spec, view, render_mode) first"
                if isinstance(env, TaskEnv)
                else ", not an envs.TaskEnv; make a TaskEnv subclass (envs.mujoco_tasks."
                "GymMujocoTask wraps a gymnasium MuJoCo env) and give it as make="
            )
        )
    try:
        check_view(env.mj_model, view)
    except Exception:
        env.close()
        raise
    return env


def _free_camera(fields: Mapping[str, Any]) -> FreeCamera:
    """A :class:`~envs.render.FreeCamera` from its fields (``lookat``, ``distance``, ``azimuth``,
    ``elevation``)."""
    known = {f.name for f in dataclasses.fields(FreeCamera)}
    if not set(fields) <= known or not {"lookat", "distance"} <= set(fields):
        raise InvalidOptionError(
            f"camera={dict(fields)!r} is not a FreeCamera's fields: give lookat and distance, "
            "and azimuth and elevation if you like (degrees), e.g. {'lookat': [0, 0, 0], "
            "'distance': 1.0}, or a camera name"
        )
    return FreeCamera(**{k: tuple(v) if k == "lookat" and isinstance(v, list) else v
                         for k, v in fields.items()})  # fmt: skip


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
