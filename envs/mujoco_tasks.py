"""Gymnasium MuJoCo tasks: Reacher-v5 and Pusher-v5 with privileged progress and a critic's view.

The gymnasium env is held inside (composition), so its dynamics, observation and reward are exactly
gymnasium's; this module adds success, progress and what the critic sees.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.errors import InvalidOptionError
from envs.gl import require_simulator
from envs.render import Appearance, CriticView, FreeCamera
from envs.tasks import TaskEnv, TaskSpec, register_task
from rollout.checks import is_int, is_number

# gymnasium MujocoEnv's render arguments, which the critic's view replaces: what to set instead
_SIZE_FIX = "set the frame size with image_size= (an int, or (height, width))"
_CAMERA_FIX = "set the camera with camera= (a camera name, an envs.FreeCamera, or a list to tile)"
_VIEW_FIX = "what is drawn is the task spec's view (envs.CriticView, see envs.register_task)"
_RENDER_ARGUMENTS = {
    "width": _SIZE_FIX,
    "height": _SIZE_FIX,
    "camera_name": _CAMERA_FIX,
    "camera_id": _CAMERA_FIX,
    "default_camera_config": _CAMERA_FIX,
    "max_geom": _VIEW_FIX,
    "visual_options": _VIEW_FIX,
}


class GymMujocoTask(TaskEnv):
    """A gymnasium MuJoCo env as a :class:`TaskEnv`.

    Args:
        spec: the task spec.
        view: the critic's view.
        render_mode: ``None`` or ``"rgb_array"``.
        **env_kwargs: passed to the gymnasium env class (e.g. ``frame_skip``), but for its
            render arguments (``width``, ``camera_name``, ...): the critic's view replaces them.
    """

    env_class_path: str = ""

    def __init__(
        self, spec: TaskSpec, view: CriticView, render_mode: str | None = None, **env_kwargs: Any
    ) -> None:
        super().__init__(spec, view, render_mode)
        if render_arguments := sorted(set(env_kwargs) & set(_RENDER_ARGUMENTS)):
            key = render_arguments[0]
            raise InvalidOptionError(
                f"{key}={env_kwargs[key]!r} is an argument of gymnasium's own renderer, which "
                f"{spec.name} does not use: its frames are the critic's view. Remove it; "
                f"{_RENDER_ARGUMENTS[key]}"
            )
        skip = env_kwargs.get("frame_skip", 1)
        if not is_int(skip) or skip < 1:
            raise InvalidOptionError(
                f"frame_skip={skip!r} must be an integer >= 1 (simulator steps per action)"
            )
        for key in sorted(k for k in env_kwargs if k.endswith("_weight")):
            # gymnasium takes any value here and fails on it at the first step's reward
            if not is_number(env_kwargs[key]):
                raise InvalidOptionError(
                    f"{key}={env_kwargs[key]!r} must be a finite number (a weight in gymnasium's "
                    f"reward of {spec.name}), e.g. 1.0"
                )
        require_simulator("mujoco", f"the MuJoCo task {spec.name!r}")
        module_name, class_name = self.env_class_path.rsplit(":", 1)
        module = require_simulator(module_name, f"the MuJoCo task {spec.name!r}")
        self._inner = getattr(module, class_name)(**env_kwargs)
        self.observation_space = self._inner.observation_space
        self.action_space = self._inner.action_space
        # actions a second: gymnasium's render_fps is rounded to an int (3 for frame_skip=30's
        # 3.33, 0 for frame_skip=200's 0.5), the dt is exact
        self.metadata = {**self.metadata, "render_fps": 1.0 / self._inner.dt}

    @property
    def mj_model(self):
        return self._inner.model

    @property
    def mj_data(self):
        return self._inner.data

    def _body_xy(self, body: str) -> np.ndarray:
        return self._inner.data.body(body).xpos[:2].copy()

    def _start_episode(self) -> None:
        """Record what progress is measured against (called after every reset)."""

    def sim_state(self) -> tuple[np.ndarray, np.ndarray]:
        data = self._inner.data
        return data.qpos.copy(), data.qvel.copy()

    def restore_sim_state(self, state: tuple[np.ndarray, np.ndarray]) -> None:
        self._inner.set_state(*state)  # gymnasium's MujocoEnv: copies, then mj_forward

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        seed = self._begin_reset(seed)
        obs, info = self._inner.reset(seed=seed, options=options)
        self._start_episode()
        return obs, {**info, **self.task_info()}

    def step(self, action):
        action = self._checked_action(action).astype(self.action_space.dtype)
        obs, reward, terminated, truncated, info = self._inner.step(action)
        return obs, float(reward), terminated, truncated, {**info, **self.task_info()}

    def close(self) -> None:
        self._inner.close()
        super().close()


def _fraction_closed(start: float, now: float, goal: float) -> float:
    """How much of the way from ``start`` to ``goal`` a distance has closed, clipped to [0, 1].

    Example: start 0.20, goal 0.02, now 0.11 → (0.20 - 0.11) / (0.20 - 0.02) = 0.5.
    """
    return float(np.clip((start - now) / (start - goal), 0.0, 1.0))


class ReacherTask(GymMujocoTask):
    """Reacher-v5: touch the target with the fingertip.

    Success: fingertip centre within 2 cm of the target centre (the two spheres touch).
    Progress: the fraction of the initial fingertip-target distance closed, reaching 1 at success.

    Args:
        min_start_distance: a floor (m) on the start distance progress is measured from, so
            progress stays well defined when the target spawns close (default 5 cm). Under a larger
            floor a near start's progress is its absolute closeness, ``(floor - now) / (floor -
            2 cm)``, not a ratio of two short distances.
        **env_kwargs: as :class:`GymMujocoTask`.
    """

    env_class_path = "gymnasium.envs.mujoco.reacher_v5:ReacherEnv"
    success_radius = 0.02

    def __init__(
        self,
        spec: TaskSpec,
        view: CriticView,
        render_mode: str | None = None,
        min_start_distance: float = 0.05,
        **env_kwargs: Any,
    ) -> None:
        if not (is_number(min_start_distance) and self.success_radius < min_start_distance < 1.0):
            raise InvalidOptionError(
                f"min_start_distance={min_start_distance!r} must be a distance in metres above "
                f"the {self.success_radius} m success radius and below 1, e.g. 0.05 (the default)"
            )
        self.min_start_distance = float(min_start_distance)
        super().__init__(spec, view, render_mode, **env_kwargs)

    def _distance(self) -> float:
        return float(np.linalg.norm(self._body_xy("fingertip") - self._body_xy("target")))

    def _start_episode(self) -> None:
        # A floor on the start distance keeps progress well defined when the target spawns close.
        self._start_distance = max(self._distance(), self.min_start_distance)

    def achieved_goal(self) -> np.ndarray:
        self._check_reset("achieved_goal()")
        return self._body_xy("fingertip")

    def move_goal(self, goal: np.ndarray, *, restart: bool = False) -> None:
        self._check_reset("move_goal()")
        # The target's two slide joints are the last entries of qpos and qvel; its geom collides
        # with nothing, so the arm's trajectory is the same wherever it is.
        qpos, qvel = self.sim_state()
        qpos[-2:] += np.asarray(goal, np.float64)[:2] - self._body_xy("target")
        qvel[-2:] = 0.0
        self.restore_sim_state((qpos, qvel))
        if restart:
            self._start_episode()

    def is_success(self) -> bool:
        self._check_reset("is_success()")
        return self._distance() < self.success_radius

    def progress(self) -> float:
        self._check_reset("progress()")
        if self.is_success():
            return 1.0
        return _fraction_closed(self._start_distance, self._distance(), self.success_radius)

    def privileged_state(self) -> dict[str, float]:
        self._check_reset("privileged_state()")
        return {"fingertip_to_target_cm": 100 * self._distance()}


class PusherTask(GymMujocoTask):
    """Pusher-v5: push the white cylinder onto the red goal disc.

    Stages: reach (fingertip to object, 25 %), push (object to goal, 75 %).
    Success: object centre within 5 cm of the goal centre (the 8 cm disc mostly covered).
    """

    env_class_path = "gymnasium.envs.mujoco.pusher_v5:PusherEnv"
    success_radius = 0.05
    reach_radius = 0.07  # fingertip touching the 5 cm cylinder
    reach_weight = 0.25

    def _distances(self) -> tuple[float, float]:
        obj = self._body_xy("object")
        reach = float(np.linalg.norm(self._body_xy("tips_arm") - obj))
        push = float(np.linalg.norm(obj - self._body_xy("goal")))
        return reach, push

    def _start_episode(self) -> None:
        reach, push = self._distances()
        self._start_reach = max(reach, self.reach_radius + 0.05)
        self._start_push = max(push, self.success_radius + 0.05)

    def is_success(self) -> bool:
        self._check_reset("is_success()")
        return self._distances()[1] < self.success_radius

    def progress(self) -> float:
        self._check_reset("progress()")
        if self.is_success():
            return 1.0
        reach, push = self._distances()
        pushed = _fraction_closed(self._start_push, push, self.success_radius)
        if pushed > 0.0:  # the object has moved toward the goal: the reach stage is done
            return self.reach_weight + (1.0 - self.reach_weight) * pushed
        return self.reach_weight * _fraction_closed(self._start_reach, reach, self.reach_radius)

    def privileged_state(self) -> dict[str, float]:
        self._check_reset("privileged_state()")
        reach, push = self._distances()
        return {"fingertip_to_object_cm": 100 * reach, "object_to_goal_cm": 100 * push}


_RED = (0.9, 0.1, 0.1, 1.0)
_GREEN = (0.1, 0.85, 0.1, 1.0)
_BLUE = (0.1, 0.2, 0.95, 1.0)

register_task(
    TaskSpec(
        name="Reacher-v5",
        instruction="Move the tip of the two-link arm to touch the red target.",
        horizon=50,
        # Top-down; target and fingertip enlarged and flat-coloured (render-only): measured to make
        # progress learnable for a small critic (DESIGN.md). 56²: a side the vision tower takes as
        # it is (multiples of 28, critic.vision.smart_resize), where 64² was resampled to 56².
        view=CriticView(
            cameras=(FreeCamera(lookat=(0.0, 0.0, 0.0), distance=0.75),),
            height=56,
            width=56,
            appearance=(
                Appearance("target", rgba=_RED, size_scale=3.0),
                Appearance("fingertip", rgba=_GREEN, size_scale=3.0),
            ),
        ),
        make=ReacherTask,
        family="mujoco",
        stages=("reach",),
        goal_distance="fingertip_to_target_cm",
    )
)

register_task(
    TaskSpec(
        name="Pusher-v5",
        instruction="Push the blue cylinder onto the red goal disc with the arm.",
        # gymnasium's 100 steps cannot fit the longest pushes: the near-massless object's soft
        # contacts cap it at ~7 cm/s (measured), and pushes are up to 0.30 m after ~30 steps of
        # reaching. The scripted expert succeeds in 58 % of seeds at 100 steps, 96 % at 150.
        horizon=150,
        view=CriticView(
            cameras=(FreeCamera(lookat=(0.2, -0.25, -0.3), distance=1.5, elevation=-90.0),),
            height=96,
            width=96,
            appearance=(
                Appearance("body:object", rgba=_BLUE),
                Appearance("body:goal", rgba=_RED),
                Appearance("body:tips_arm", rgba=_GREEN, size_scale=1.5),
            ),
        ),
        make=PusherTask,
        family="mujoco",
        stages=("reach", "push"),
        goal_distance="object_to_goal_cm",
    )
)
