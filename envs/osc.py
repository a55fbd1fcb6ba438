"""Driving robosuite's ``OSC_POSE`` arm controller from privileged state: the rotation maths and
:class:`OSCExpert`, the base of the scripted robosuite experts (``envs/robosuite_experts.py``).

Each step an expert points the gripper site at a waypoint with a proportional action on the
controller (delta position and axis-angle rotation in the robot base frame, scaled by the
controller's output limits), turns the gripper toward an orientation, and opens or closes the
gripper (``-1`` open, ``+1`` closed).
"""

from __future__ import annotations

import abc
from typing import ClassVar

import numpy as np

from envs.errors import InvalidOptionError
from envs.experts import Expert
from envs.tasks import TaskEnv

OPEN, CLOSED = -1.0, 1.0
UP = np.array([0.0, 0.0, 1.0])

# The gripper pointing straight down, fingers closing along world y: the columns are the grip site's
# axes in the world (x: finger axis, z: approach axis).
DOWN = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])


def about(axis: np.ndarray, angle: float) -> np.ndarray:
    """The rotation by ``angle`` about the unit vector ``axis`` (Rodrigues' formula)."""
    x, y, z = np.asarray(axis, dtype=float)
    cross = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])  # cross @ v = axis × v
    return np.eye(3) + np.sin(angle) * cross + (1.0 - np.cos(angle)) * (cross @ cross)


def rotation_vector(rot: np.ndarray) -> np.ndarray:
    """The rotation vector (unit axis × angle, the angle in [0, π]) of the rotation matrix ``rot``:
    the inverse of :func:`about`."""
    angle = float(np.arccos(np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0)))
    skew = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]])
    if angle < 1e-6:
        return skew / 2.0  # = 2 sin(angle) axis / 2 ≈ angle axis
    if angle > np.pi - 1e-3:
        # Near a half turn the skew part vanishes: take the axis from the symmetric part,
        # (rot + rotᵀ) / 2 = cos(angle) I + (1 - cos(angle)) axis axisᵀ.
        cos = np.cos(angle)
        outer = ((rot + rot.T) / 2.0 - cos * np.eye(3)) / (1.0 - cos)
        axis = outer[:, np.argmax(np.diag(outer))]
        axis = axis / np.linalg.norm(axis)
        return angle * (axis if np.dot(axis, skew) >= 0 else -axis)
    return angle * skew / (2.0 * np.sin(angle))


def gripper_down(yaw: float) -> np.ndarray:
    """The grip site's orientation pointing straight down, the finger axis at ``yaw`` from world y."""
    return about(UP, yaw) @ DOWN


def face_yaw(body_xmat: np.ndarray) -> float:
    """The yaw in [-π/4, π/4] that lines the finger axis up with a side face of a box-like body."""
    yaw = np.arctan2(body_xmat[1, 0], body_xmat[0, 0])
    return float((yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4)


class OSCExpert(Expert):
    """A waypoint expert on robosuite's ``OSC_POSE`` arm controller (shared machinery).

    Subclasses drive :attr:`phase` and call :meth:`_servo` for the action of each step.
    """

    pos_gain: ClassVar[float] = 1.5  # action per (position error / controller's max delta)
    rot_gain: ClassVar[float] = 1.0
    brake_steps: ClassVar[int] = 8  # steps the arm takes to stop from full speed

    def _reset(self, env: TaskEnv) -> None:
        robot = env.robosuite.robots[0]
        self._site_id = robot.eef_site_id[robot.arms[0]]
        self._gripper = robot.gripper[robot.arms[0]]
        arm = robot.composite_controller.part_controllers[robot.arms[0]]
        name = getattr(arm, "name", type(arm).__name__)
        if name != "OSC_POSE" or arm.input_type != "delta":
            raise InvalidOptionError(
                f"the scripted experts drive the arm through OSC_POSE with delta inputs, but this "
                f"{env.spec_task.name} env's arm controller is {name} with "
                f"input_type={getattr(arm, 'input_type', None)!r}; build the task without "
                "controller_configs (robosuite's default for the Panda)"
            )
        # Other OSC_POSE set-ups the expert cannot drive: variable impedance adds gains to the
        # action (13 or 19 values, a numpy broadcast error at the first act), and robosuite 1.5's
        # interpolator reads a base-frame goal as a world position (the arm wandered and every
        # "expert" episode failed without a failure label)
        shape = getattr(env.action_space, "shape", None)
        interpolated = arm.interpolator_pos is not None or arm.interpolator_ori is not None
        problems = [
            f"impedance_mode={arm.impedance_mode!r} (use 'fixed')"
            if getattr(arm, "impedance_mode", "fixed") != "fixed" else None,
            "an interpolator with input_ref_frame='base' (use interpolation=None, or "
            "input_ref_frame='world')"
            if interpolated and arm.input_ref_frame != "world" else None,
            f"an action space of shape {shape} (the expert acts with 7 values: 6 of the arm's, 1 "
            "of the gripper's)" if shape != (7,) else None,
        ]  # fmt: skip
        if problems := [p for p in problems if p]:
            raise InvalidOptionError(
                f"the scripted experts drive the arm through OSC_POSE with fixed gains, but this "
                f"{env.spec_task.name} env has {'; '.join(problems)}; build the task without "
                "controller_configs (robosuite's default for the Panda)"
            )
        self._base_pos = np.asarray(arm.origin_pos)
        # Deltas are read in the robot base frame (or the world frame): world → base is base_rot.T.
        world = arm.input_ref_frame == "world"
        self._base_rot = np.eye(3) if world else np.asarray(arm.origin_ori)
        limits = np.asarray(arm.output_max)
        self._max_delta_pos, self._max_delta_rot = limits[:3], limits[3:]
        self.phase = ""
        self.phase_steps = 0
        self._plan(env)

    def _act(self, env: TaskEnv) -> np.ndarray:
        action = self._step(env)
        self.phase_steps += 1
        return action

    @abc.abstractmethod
    def _plan(self, env: TaskEnv) -> None:
        """Read the initial state, draw the episode's random choices, enter the first phase."""

    @abc.abstractmethod
    def _step(self, env: TaskEnv) -> np.ndarray:
        """The action of the current phase (moving on with :meth:`_switch`)."""

    # -- shared helpers ----------------------------------------------------------------------
    def _enter(self, phase: str) -> None:
        self.phase = phase
        self.phase_steps = 0

    def _switch(self, env: TaskEnv, phase: str) -> np.ndarray:
        """Enter ``phase`` and return its action for this very step (so a failure marked on the
        switch is labelled with the first action that carries it out)."""
        self._enter(phase)
        return self._step(env)

    def _halt(self, env: TaskEnv, grip: float, rot: np.ndarray) -> np.ndarray:
        """Stop for good: no position command while the arm brakes (aiming back at where it was
        when told to stop would swing it back a centimetre or so), then hold where it came to rest.
        """
        if self.phase_steps < self.brake_steps:
            self.hold_at = self._eef(env)
        return self._servo(env, self.hold_at, grip, rot)

    def _eef(self, env: TaskEnv) -> np.ndarray:
        return np.array(env.robosuite.sim.data.site_xpos[self._site_id])

    def _eef_rot(self, env: TaskEnv) -> np.ndarray:
        return np.array(env.robosuite.sim.data.site_xmat[self._site_id]).reshape(3, 3)

    def _servo(
        self,
        env: TaskEnv,
        target: np.ndarray,
        grip: float,
        rot: np.ndarray,
        speed: float = 1.0,
    ) -> np.ndarray:
        """The action moving the grip site toward ``target`` and orientation ``rot`` (world);
        ``speed`` caps the position action (1: the controller's full delta per step)."""
        error = self._base_rot.T @ (np.asarray(target) - self._eef(env))
        move = self.pos_gain * error / self._max_delta_pos
        norm = np.linalg.norm(move)
        if norm > speed:
            move *= speed / norm
        rot_error = self._base_rot.T @ rotation_vector(rot @ self._eef_rot(env).T)
        turn = np.clip(self.rot_gain * rot_error / self._max_delta_rot, -1.0, 1.0)
        return np.concatenate([move, turn, [grip]])

    def _reached(
        self, env: TaskEnv, target: np.ndarray, tol: float, z_tol: float | None = None
    ) -> bool:
        error = np.asarray(target) - self._eef(env)
        z_tol = tol if z_tol is None else z_tol
        return bool(np.linalg.norm(error[:2]) < tol and abs(error[2]) < z_tol)
