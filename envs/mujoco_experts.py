"""Scripted experts for the gymnasium MuJoCo tasks (Reacher-v5, Pusher-v5).

Reacher: analytic two-link inverse kinematics for the fingertip, then PD control of the joint
angles. Pusher: the fork at the end of the arm is driven in Cartesian space (damped least squares
on its Jacobian) behind the object, then pushes it to the goal.

Each failure starts once privileged progress reaches a threshold drawn per episode, or at a drawn
deadline at the latest (:class:`_Trigger`), so every failure episode contains its failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from envs.experts import Expert, register_expert
from envs.tasks import TaskEnv
from rollout.imports import require_package


@dataclass(frozen=True)
class _Trigger:
    """When an injected failure starts: once privileged progress reaches ``progress``, or at step
    ``step`` at the latest, so that every failure episode does contain its failure."""

    progress: float
    step: int

    @classmethod
    def draw(
        cls,
        rng: np.random.Generator,
        progress: tuple[float, float],
        deadline: tuple[float, float],
        horizon: int,
    ) -> _Trigger:
        """A trigger with its progress and its deadline (a fraction of ``horizon``) drawn
        uniformly from the given ranges."""
        return cls(float(rng.uniform(*progress)), int(rng.uniform(*deadline) * horizon))

    def due(self, env: TaskEnv, step: int) -> bool:
        return env.progress() >= self.progress or step >= self.step


def _wrap_angle(angle: np.ndarray | float) -> np.ndarray:
    """Angles mapped to [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


def _rotate(vector: np.ndarray, angle: float) -> np.ndarray:
    """``vector`` (2-D) rotated counter-clockwise by ``angle`` radians."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([c * vector[0] - s * vector[1], s * vector[0] + c * vector[1]])


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 1e-9 else np.array([1.0, 0.0])


@register_expert("Reacher-v5")
class ReacherExpert(Expert):
    """Reacher-v5: inverse kinematics to the target, PD on the two joint angles.

    Failures:

    - ``"stall"``: the arm stops and holds where it is, partway to the target.
    - ``"overshoot"``: the arm keeps going past the target and settles beyond it (in about two
      episodes in three the fingertip passes within the success radius on the way: it does not
      stop there, and the episode ends unsuccessful).
    - ``"wrong_target"``: the arm veers off to a point beside the target and settles there.
    - ``"flail"``: the arm swings under random torques, as an untrained or exploring policy does:
      each step's action is ``rho * previous + (1 - rho) * uniform(-1, 1)``, with ``rho`` drawn per
      episode in [0, 0.9) (from white noise to slow sweeps). It starts early (below 0.4 progress,
      by a fifth of the horizon at the latest); over seeds 0..799, 5 episodes land in the target
      by chance at the end and are recorded as the successes they are. It is not in
      :attr:`planned_failures` (``plan_episodes(..., failures=["flail"])`` asks for it), so the
      default plans, and the datasets built from them, stay as they were.
    """

    failures = ("stall", "overshoot", "wrong_target", "flail")
    planned_failures = ("stall", "overshoot", "wrong_target")

    kp = 2.0  # action per radian of joint error (torque = 200 * action on armature ~1)
    kd = 0.2  # action per rad/s: about critically damped at kp = 2
    reach_margin = 0.005  # keep commanded points this far inside the reachable annulus
    trigger_progress: ClassVar[dict[str, tuple[float, float]]] = {
        "stall": (0.5, 0.8),
        "overshoot": (0.55, 0.75),
        "wrong_target": (0.25, 0.45),
        "flail": (0.0, 0.4),
    }
    trigger_deadline = (0.4, 0.6)  # share of the episode's horizon: the latest a failure starts
    flail_deadline = (0.0, 0.2)

    def _reset(self, env: TaskEnv) -> None:
        model, data = env.mj_model, env.mj_data
        self._joints = [model.joint(name) for name in ("joint0", "joint1")]
        self._qpos_adr = [int(j.qposadr[0]) for j in self._joints]
        self._dof_adr = [int(j.dofadr[0]) for j in self._joints]
        # Link lengths from the model: the elbow body sits L1 from the shoulder, the fingertip L2
        # from the elbow.
        self._l1 = float(np.linalg.norm(model.body("body1").pos[:2]))
        self._l2 = float(np.linalg.norm(model.body("fingertip").pos[:2]))
        elbow_range = model.jnt_range[self._joints[1].id]
        self._elbow_limit = float(min(abs(elbow_range[0]), abs(elbow_range[1])))
        self._base = data.body("body0").xpos[:2].copy()
        target = data.body("target").xpos[:2].copy()
        # The elbow branch nearer the current posture, kept all episode so the arm never flips.
        q = self._q(env)
        dists = [np.abs(_wrap_angle(self._ik(target, sign) - q)).sum() for sign in (1.0, -1.0)]
        self._elbow_sign = 1.0 if dists[0] <= dists[1] else -1.0
        self._goal = target
        self._hold: np.ndarray | None = None
        self._trigger = None
        if self.failure is not None:
            self._trigger = _Trigger.draw(
                self.rng,
                self.trigger_progress[self.failure],
                self.flail_deadline if self.failure == "flail" else self.trigger_deadline,
                self.horizon,
            )
        self._flail: np.ndarray | None = None  # the last random action, once flailing
        self._flail_rho = float(self.rng.uniform(0.0, 0.9)) if self.failure == "flail" else 0.0

    def _q(self, env: TaskEnv) -> np.ndarray:
        return env.mj_data.qpos[self._qpos_adr].copy()

    def _tip(self, env: TaskEnv) -> np.ndarray:
        return env.mj_data.body("fingertip").xpos[:2].copy()

    def _clip_reach(self, point: np.ndarray) -> np.ndarray:
        """``point`` moved radially into the annulus the fingertip can reach."""
        rel = point - self._base
        r_max = self._l1 + self._l2 - self.reach_margin
        r_min = np.sqrt(
            self._l1**2 + self._l2**2 + 2 * self._l1 * self._l2 * np.cos(self._elbow_limit)
        )
        r = float(np.linalg.norm(rel))
        return self._base + _unit(rel) * np.clip(r, r_min + self.reach_margin, r_max)

    def _ik(self, point: np.ndarray, elbow_sign: float) -> np.ndarray:
        """Joint angles putting the fingertip at ``point`` (clipped to the reachable annulus)."""
        rel = self._clip_reach(point) - self._base
        r2 = float(rel @ rel)
        cos_elbow = (r2 - self._l1**2 - self._l2**2) / (2 * self._l1 * self._l2)
        elbow = elbow_sign * np.arccos(np.clip(cos_elbow, -1.0, 1.0))
        elbow = float(np.clip(elbow, -self._elbow_limit, self._elbow_limit))
        shoulder = np.arctan2(rel[1], rel[0]) - np.arctan2(
            self._l2 * np.sin(elbow), self._l1 + self._l2 * np.cos(elbow)
        )
        return np.array([shoulder, elbow])

    def _reachable(self, point: np.ndarray) -> bool:
        return bool(np.allclose(self._clip_reach(point), point))

    def _start_failure(self, env: TaskEnv) -> None:
        tip, target = self._tip(env), self._goal
        if self.failure == "stall":
            self._hold = self._q(env)
        elif self.failure == "overshoot":
            # Beyond the target along the way the fingertip is heading, turned as little as
            # needed to stay reachable.
            ahead = _unit(target - tip)
            distance = self.rng.uniform(0.05, 0.08)
            turns = [s * a for a in np.deg2rad(np.arange(0, 181, 10)) for s in (1.0, -1.0)]
            self._goal = self._first_reachable(target, ahead, distance, turns)
        elif self.failure == "wrong_target":
            # Beside the target on the fingertip's side (turned from the way back to the fingertip
            # by up to 70 degrees, less where that is out of reach), so the way there passes clear
            # of the target.
            back = _unit(tip - target)
            distance = self.rng.uniform(0.07, 0.11)
            side = 1.0 if self.rng.random() < 0.5 else -1.0
            turns = [s * a for a in np.deg2rad(np.arange(70, -1, -10)) for s in (side, -side)]
            self._goal = self._first_reachable(target, back, distance, turns)
        elif self.failure == "flail":
            self._flail = self.rng.uniform(-1.0, 1.0, size=2)
        self._mark_failure()

    def _first_reachable(
        self, origin: np.ndarray, direction: np.ndarray, distance: float, turns: list[float]
    ) -> np.ndarray:
        """``origin + distance * direction`` with ``direction`` turned by the first of ``turns``
        (radians) that puts the point within reach."""
        for turn in turns:
            point = origin + distance * _rotate(direction, turn)
            if self._reachable(point):
                return point
        return self._clip_reach(origin + distance * direction)

    def _act(self, env: TaskEnv) -> np.ndarray:
        if (
            self._trigger is not None
            and self.failure_step is None
            and self._trigger.due(env, self.steps)
        ):
            self._start_failure(env)
            if self._flail is not None:
                return self._flail
        if self._flail is not None:
            noise = self.rng.uniform(-1.0, 1.0, size=2)
            self._flail = self._flail_rho * self._flail + (1.0 - self._flail_rho) * noise
            return self._flail
        q = self._q(env)
        qvel = env.mj_data.qvel[self._dof_adr]
        q_goal = self._hold if self._hold is not None else self._ik(self._goal, self._elbow_sign)
        return self.kp * _wrap_angle(q_goal - q) - self.kd * qvel


# How much farther from the goal than its closest (m) Pusher's object must be for a push away
# to count as begun (object_pushed_away's failure step)
PUSHED_AWAY = 0.005


@register_expert("Pusher-v5")
class PusherExpert(Expert):
    """Pusher-v5: bring the fork at the end of the arm behind the object, then push it to the goal.

    The fingertip body (``tips_arm``, the middle of the fork's cross bar) is driven in Cartesian
    space: damped least squares on its Jacobian turns a position and orientation error into joint
    velocities, and joint torques track those through the mass matrix.

    The object pushes slowly: its contacts are very soft (its 8e-6 kg mass makes MuJoCo's contact
    regularisation huge), the force a contact exerts grows with how deep the fork presses in, and
    one contact moves the object at about 5 cm/s at most. The expert therefore pushes with a
    corner of the fork (the cross bar and one prong, 45 degrees either side of the push): two
    contacts pressed in nearly to the object's centre, about 7 cm/s. It picks the corner that
    keeps the wrist pointing away from the shoulder and the fork within reach; pushes back toward
    the shoulder use the back of the bar. Even so the 100-step (5 s) horizon is short for the
    farthest objects: over seeds 0..49 the expert succeeds within 100 steps in 58% of episodes,
    within 150 in 96%, within 200 in all.

    Failures:

    - ``"stall"``: the arm stops pushing partway and holds still.
    - ``"object_pushed_away"``: the arm goes round the object and shoves it away from the goal.
    - ``"wrong_target"``: the arm steers the object to a spot beside the goal instead.
    """

    failures = ("stall", "object_pushed_away", "wrong_target")

    push_height = -0.27  # fork height while pushing (object centre z -0.275, table top -0.325)
    hover_height = -0.15  # clear of the object top (-0.225) by the fork's radius and a margin
    press_depth = 0.06  # how far each pushing contact is pressed into the object
    clearance = 0.04  # the fork comes down this far back from the object
    stop_distance = 0.02  # the push ends with the object this close to where it is pushed to
    kp_pos = 8.0  # 1/s: Cartesian velocity per metre of error
    kp_rot = 4.0  # 1/s: angular velocity per radian of error
    max_speed = 1.0  # m/s: cap on the commanded fingertip speed
    kv = 15.0  # 1/s: joint velocity tracking gain (through the mass matrix)
    damping = 0.05  # damped least squares regulariser
    rot_weight = 0.3  # metres per radian: orientation errors count less than position errors
    k_nominal = 1.0  # 1/s: null-space pull of the joints toward mid-range
    reach = (0.46, 0.72)  # m from the shoulder axis: where the fork can be posed comfortably
    trigger_progress: ClassVar[dict[str, tuple[float, float]]] = {
        "stall": (0.5, 0.8),
        "object_pushed_away": (0.5, 0.7),
        "wrong_target": (0.35, 0.5),
    }
    trigger_deadline = (0.55, 0.7)  # share of the episode's horizon: the latest a failure starts

    def _reset(self, env: TaskEnv) -> None:
        mujoco = self._mujoco = require_package("mujoco", "sim", "the Pusher-v5 expert")
        model, data = env.mj_model, env.mj_data
        self._tip_id = model.body("tips_arm").id
        joints = [model.joint(i) for i in range(model.njnt) if model.joint(i).name.startswith("r_")]
        self._qpos_adr = np.array([int(j.qposadr[0]) for j in joints])
        self._dof_adr = np.array([int(j.dofadr[0]) for j in joints])
        ranges = model.jnt_range[[j.id for j in joints]]
        self._q_low, self._q_high = ranges[:, 0], ranges[:, 1]
        self._q_nominal = ranges.mean(axis=1)
        self._obj_dofs = [int(model.joint(n).dofadr[0]) for n in ("obj_slidex", "obj_slidey")]
        # Fork geometry from the model: the wrist's collision capsules are the cross bar (centred
        # on the fingertip body) and two prongs either side of it.
        wrist = model.body("r_wrist_roll_link").id
        capsules = [g for g in range(model.ngeom) if model.geom_bodyid[g] == wrist]
        bar = min(capsules, key=lambda g: float(np.linalg.norm(model.geom_pos[g])))
        bar_radius = float(model.geom_size[bar][0])
        self._prong_offset = float(max(abs(model.geom_pos[g][1]) for g in capsules))
        obj_geoms = [
            g for g in range(model.ngeom) if model.geom_bodyid[g] == model.body("object").id
        ]
        cylinder = [g for g in obj_geoms if model.geom_type[g] == mujoco.mjtGeom.mjGEOM_CYLINDER]
        self._touch = bar_radius + float(model.geom_size[cylinder[0]][0])

        self._goal = data.body("goal").xpos[:2].copy()
        self._push_to = self._goal.copy()  # where the object is being pushed
        self._shoulder = data.body("r_shoulder_pan_link").xpos[:2].copy()
        self._direction = _unit(self._goal - data.body("object").xpos[:2])
        self._grip: str | None = None  # chosen afresh on every approach
        self._phase = "approach"  # approach (hover over, come down behind the object) or push
        self._hold: tuple[np.ndarray, np.ndarray] | None = None  # a fork pose held to the end
        self._failing = False  # the failure began (its step is marked when it becomes real)
        self._closest = np.inf  # object_pushed_away: the closest to the goal since it began
        self._trigger = None
        if self.failure is not None:
            self._trigger = _Trigger.draw(
                self.rng,
                self.trigger_progress[self.failure],
                self.trigger_deadline,
                self.horizon,
            )

    # -- grips: how the fork holds the object while pushing ------------------------------------
    # The fork's heading relative to the push: a corner (bar and the prong on the left or right
    # of the push) meets the object at 45 degrees; the back of the bar faces the push head on.
    _GRIP_TURN: ClassVar[dict[str, float]] = {"left": np.pi / 4, "right": -np.pi / 4, "back": np.pi}

    def _contact_point(self, grip: str, depth: float) -> np.ndarray:
        """The object's centre in the fork's frame (x along the prongs, y along the bar) when
        each pushing contact of ``grip`` is pressed ``depth`` in."""
        along = self._touch - depth
        if grip == "back":
            return np.array([-along, 0.0])
        side = 1.0 if grip == "left" else -1.0
        return np.array([along, side * (self._prong_offset - along)])

    def _choose_grip(self, direction: np.ndarray, obj: np.ndarray) -> str:
        """The corner that keeps the wrist pointing away from the shoulder and the fork within
        comfortable reach of it; the back of the bar when both corners would point the wrist
        back at the shoulder."""
        outward = _unit(obj - self._shoulder)
        pointing, scores = {}, {}
        for grip in ("left", "right"):
            pointing[grip] = float(_rotate(direction, self._GRIP_TURN[grip]) @ outward)
            reach = float(np.linalg.norm(self._ready_point(grip, direction, obj) - self._shoulder))
            out_of_reach = max(0.0, self.reach[0] - reach) + max(0.0, reach - self.reach[1])
            scores[grip] = pointing[grip] - 20.0 * out_of_reach
        if max(pointing.values()) < -0.3:
            return "back"
        best = max(scores, key=scores.get)
        if self._grip in scores and scores[self._grip] > scores[best] - 0.3:
            best = self._grip  # hysteresis: no switching between near-equal corners
        return best

    def _fork_frame(self, grip: str, direction: np.ndarray) -> np.ndarray:
        """Columns: the fork's x (prongs) and y (bar) axes in the plane, for ``grip``."""
        heading = _rotate(direction, self._GRIP_TURN[grip])
        return np.column_stack([heading, _rotate(heading, np.pi / 2)])

    def _ready_point(self, grip: str, direction: np.ndarray, obj: np.ndarray) -> np.ndarray:
        """Where the fingertip comes down: in the grip's pose, backed off from the object."""
        frame = self._fork_frame(grip, direction)
        return obj - frame @ self._contact_point(grip, 0.0) - direction * self.clearance

    def _act(self, env: TaskEnv) -> np.ndarray:
        data = env.mj_data
        obj = data.body("object").xpos[:2].copy()
        tip = data.xpos[self._tip_id].copy()
        if self._trigger is not None and not self._failing and self._trigger.due(env, self.steps):
            self._start_failure(env, obj, tip)
        if self._failing and self.failure == "object_pushed_away":
            # real once the object is pushed away: 0.5 cm farther from the goal than the closest
            # it came since the re-plan, which it went on toward for 8-28 steps (seeds 0-9)
            from_goal = float(np.linalg.norm(self._goal - obj))
            self._closest = min(self._closest, from_goal)
            if from_goal > self._closest + PUSHED_AWAY:
                self._mark_failure()
        if self._hold is not None:
            return self._torque(env, self._hold[0], self._hold[1])
        to_goal = float(np.linalg.norm(self._push_to - obj))
        if self._phase != "push" or to_goal > 0.03:  # the direction is ill-defined at the goal
            self._direction = _unit(self._push_to - obj)
        direction = self._direction
        if self._phase == "approach":
            self._grip = self._choose_grip(direction, obj)
        frame = self._fork_frame(self._grip, direction)
        heading = frame[:, 0]
        ready = self._ready_point(self._grip, direction, obj)
        velocity = np.zeros(3)
        if self._phase == "push":
            # Re-approach if the object has slipped out of the grip: off to the side, or behind
            # the fork. Ahead of the pressed-in pose is where it starts (a corner presses in
            # along the push by depth * sqrt(2)).
            offset = obj - tip[:2] - frame @ self._contact_point(self._grip, self.press_depth)
            ahead = float(offset @ direction)
            aside = float(offset @ _rotate(direction, np.pi / 2))
            if abs(aside) > 0.045 or not -0.04 < ahead < self.clearance + 1.5 * self.press_depth:
                self._phase = "approach"
        if self._phase == "approach":
            # Hover over to the ready pose; come down on the last stretch, once behind the object.
            gap = float(np.linalg.norm(tip[:2] - ready))
            behind = float((tip[:2] - obj) @ direction) < -0.03
            lift = float(np.clip((gap - 0.03) / 0.08, 0.0, 1.0)) if behind else 1.0
            target = np.r_[ready, self.push_height + lift * (self.hover_height - self.push_height)]
            if gap < 0.03 and abs(tip[2] - self.push_height) < 0.02:
                self._phase = "push"
        if self._phase == "push":
            if to_goal < self.stop_distance:  # arrived: back off so the object stops, and stay
                self._hold = self._backed_off(env, tip)
                return self._torque(env, *self._hold)
            target = np.r_[obj - frame @ self._contact_point(self._grip, self.press_depth), 0.0]
            target[2] = self.push_height
            velocity[:2] = data.qvel[self._obj_dofs]  # feed forward: move with the object
        rotation = np.column_stack([np.r_[heading, 0.0], np.r_[frame[:, 1], 0.0], [0.0, 0.0, 1.0]])
        return self._torque(env, target, rotation, velocity)

    def _backed_off(self, env: TaskEnv, tip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A pose to hold: the fork's current one, drawn back so it no longer presses on the
        object (which then stops within about a centimetre)."""
        back = tip.copy()
        back[:2] -= self._direction * 1.5 * self.press_depth
        return back, env.mj_data.xmat[self._tip_id].reshape(3, 3).copy()

    def _start_failure(self, env: TaskEnv, obj: np.ndarray, tip: np.ndarray) -> None:
        self._failing = True
        if self.failure == "stall":
            self._hold = self._backed_off(env, tip)
            self._mark_failure()
        elif self.failure == "object_pushed_away":
            # Round the object and push it off sideways-and-back, away from the goal.
            side = 1.0 if self.rng.random() < 0.5 else -1.0
            turn = side * self.rng.uniform(np.deg2rad(100), np.deg2rad(135))
            self._push_to = obj + 0.5 * _rotate(self._direction, turn)
            self._phase = "approach"
        elif self.failure == "wrong_target":
            # A spot beside the goal, across the push, so the object's way there passes clear.
            side = 1.0 if self.rng.random() < 0.5 else -1.0
            across = _rotate(self._direction, side * np.pi / 2)
            self._push_to = self._goal + across * self.rng.uniform(0.10, 0.15)
            # behind the object again for the new direction: pushing on with the corner it had,
            # the object drifted into the goal (seed 21: a success)
            self._phase = "approach"
            self._mark_failure()  # real as it heads for the other spot
        # object_pushed_away is marked once the object is pushed away (in _act): marked here, at
        # the re-plan, the object went on toward the goal for 8-28 steps after its failure step

    def _torque(
        self,
        env: TaskEnv,
        position: np.ndarray,
        rotation: np.ndarray,
        velocity: np.ndarray | None = None,
    ) -> np.ndarray:
        """Joint torques moving the fingertip toward ``position`` with orientation ``rotation``
        (plus a feed-forward ``velocity``).

        Only the cross bar's direction (the fork's y axis) is controlled: the fork may tilt about the
        bar, which the wrist needs near the shoulder and which does not change how the bar pushes.
        """
        mujoco = self._mujoco
        model, data = env.mj_model, env.mj_data
        jacp = np.zeros((3, model.nv))
        jacr = np.zeros((3, model.nv))
        mujoco.mj_jacBody(model, data, jacp, jacr, self._tip_id)
        dofs = self._dof_adr
        jac = np.vstack([jacp[:, dofs], self.rot_weight * jacr[:, dofs]])
        frame = data.xmat[self._tip_id].reshape(3, 3)
        rot_error = np.cross(frame[:, 1], rotation[:, 1])
        linear = self.kp_pos * (position - data.xpos[self._tip_id])
        if velocity is not None:
            linear += velocity
        speed = float(np.linalg.norm(linear))
        if speed > self.max_speed:
            linear *= self.max_speed / speed
        twist = np.r_[linear, self.rot_weight * self.kp_rot * rot_error]
        q = data.qpos[self._qpos_adr]
        qvel_goal = self._joint_velocities(jac, twist, q)
        qvel = data.qvel[dofs]
        mass = np.zeros((model.nv, model.nv))
        mujoco.mj_fullM(model, mass, data.qM)
        mass = mass[np.ix_(dofs, dofs)]
        return (
            mass @ (self.kv * (qvel_goal - qvel))
            + data.qfrc_bias[dofs]
            + model.dof_damping[dofs] * qvel
        )

    def _joint_velocities(self, jac: np.ndarray, twist: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Damped least squares for ``twist``, plus a pull toward mid-range in the null space;
        joints at a limit that the solution would push further are frozen and it is solved again."""
        free = np.ones(len(q), dtype=bool)
        for _ in range(len(q)):
            j = jac * free
            gram = j @ j.T + self.damping**2 * np.eye(len(twist))
            pinv = j.T @ np.linalg.inv(gram)
            null = (np.diag(free.astype(float)) - pinv @ j) @ (
                self.k_nominal * (self._q_nominal - q)
            )
            qvel = pinv @ twist + null
            blocked = free & (
                ((q <= self._q_low + 0.02) & (qvel < 0)) | ((q >= self._q_high - 0.02) & (qvel > 0))
            )
            if not blocked.any():
                break
            free &= ~blocked
        return qvel * free
