"""Simulators, task specs, the VisCriticReward wrapper and registration.

``import envs`` registers ``VisCriticReward-v0`` and one bare env per task (``VisCritic/<task>``).
It imports no simulator: MuJoCo and robosuite load when an env is built.
"""

from envs.gl import select_gl_backend

select_gl_backend()  # before anything imports mujoco: it reads MUJOCO_GL at import time

from envs import mujoco_tasks, robosuite_tasks  # noqa: E402, F401  (register the tasks)
from envs.critic_reward import CriticRewardConfig  # noqa: E402
from envs.errors import (  # noqa: E402
    CriticOutputError,
    InvalidActionError,
    InvalidOptionError,
    TaskContractError,
    UnknownTaskError,
)
from envs.registration import bare_env_id, make_viscritic_env, register_envs  # noqa: E402
from envs.render import Appearance, CriticView, FreeCamera, RenderError  # noqa: E402
from envs.tasks import TaskEnv, TaskSpec, get_task, make_task_env, register_task, task_names  # noqa: E402
from envs.wrappers import VisCriticReward  # noqa: E402

register_envs()

__all__ = [
    "Appearance",
    "CriticOutputError",
    "CriticRewardConfig",
    "CriticView",
    "FreeCamera",
    "InvalidActionError",
    "InvalidOptionError",
    "RenderError",
    "TaskContractError",
    "TaskEnv",
    "TaskSpec",
    "UnknownTaskError",
    "VisCriticReward",
    "bare_env_id",
    "get_task",
    "make_task_env",
    "make_viscritic_env",
    "register_envs",
    "register_task",
    "task_names",
]
