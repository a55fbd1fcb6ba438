"""Scripted experts for the robosuite tasks (Lift, Stack, Door, PickPlaceCan).

Every expert is a waypoint state machine on privileged state, driving the arm through robosuite's
``OSC_POSE`` controller with :class:`envs.osc.OSCExpert`: each phase has a waypoint, a gripper
orientation (pointing down at a yaw that suits the object; at the door, pointing into it) and a
gripper command.

Failures follow the expert's plan as far as they can (a missed grasp aims beside the object from
the start; the others branch off late, after most of the progress), and
:meth:`~envs.experts.Expert._mark_failure` is called at the step the failure becomes real: the
first action that closes the gripper beside the object, opens it mid-air or at the wrong place,
stops the arm for good or pushes the wrong way, or the first step that sees the gripper touch the
object it knocks away.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from envs.errors import InvalidOptionError
from envs.experts import register_expert
from envs.osc import CLOSED, DOWN, OPEN, UP, OSCExpert, about, face_yaw, gripper_down
from envs.tasks import TaskEnv


class _PickExpert(OSCExpert):
    """A top-down pick shared by Lift, Stack and PickPlaceCan: above the object (``approach``),
    down to it (``descend``), close (``grasp``), then on to ``lift``, the subclass's own phases.

    Subclasses set :attr:`rot` (the gripper's orientation), :attr:`offset` (from the object, for
    a missed grasp) and :attr:`after_approach` in ``_plan``.
    """

    hover: ClassVar[float] = 0.06  # above the object's origin before descending
    grasp_z: ClassVar[float] = 0.0  # grip site above the object's origin when closing
    close_steps: ClassVar[int] = 8  # the fingers close in about 5 steps, then squeeze

    def _pick(self, env: TaskEnv, obj: np.ndarray) -> np.ndarray | None:
        """The action of the pick phases for the object at ``obj``; ``None`` past them."""
        if self.phase == "approach":
            target = obj + self.offset + self.hover * UP
            if self._reached(env, target, 0.01, 0.02):
                return self._switch(env, self.after_approach)
            return self._servo(env, target, OPEN, self.rot)
        if self.phase == "descend":
            target = obj + self.offset + self.grasp_z * UP
            if self._reached(env, target, 0.008) or self.phase_steps >= 30:
                self.grasp_at = self._eef(env)
                if self.failure == "missed_grasp":
                    self._mark_failure()  # the fingers close here, beside the object
                return self._switch(env, "grasp")
            return self._servo(env, target, OPEN, self.rot)
        if self.phase == "grasp":
            if self.phase_steps >= self.close_steps:
                return self._switch(env, "lift")
            return self._servo(env, self.grasp_at, CLOSED, self.rot)
        return None

    def _missed_grasp_offset(self, away_from: np.ndarray | None = None) -> np.ndarray:
        """Where a missed grasp closes, from the object: 4.5-6 cm across the finger axis (the
        fingers then close on air beside it), on the side away from ``away_from`` if given."""
        across = self.rot[:, 1]
        side = self.rng.choice([-1.0, 1.0])
        if away_from is not None:
            side = -np.sign(np.dot(across[:2], away_from[:2])) or 1.0
        return across * side * self.rng.uniform(0.045, 0.06)

    def _fail_after_lift(self, env: TaskEnv) -> np.ndarray:
        """Mark the injected failure and start it: open the gripper (``drop_after_lift``) or stop
        moving with it held (``stall``)."""
        self._mark_failure()
        return self._switch(env, "drop" if self.failure == "drop_after_lift" else "stall")

    def _failed(self, env: TaskEnv) -> np.ndarray:
        """The action of the ``drop`` / ``stall`` phases: brake, then hold, gripper open or shut."""
        return self._halt(env, OPEN if self.phase == "drop" else CLOSED, self.rot)


@register_expert("Lift")
class LiftExpert(_PickExpert):
    """Lift: above the cube, down, close, lift 12 cm and hold.

    Failures:
        missed_grasp: descends beside the cube (4.5-6 cm off, across the fingers), closes there
            (marked) and lifts empty.
        drop_after_lift: opens the gripper (marked) once the cube is 30-60 % of the way up to the
            success height, and stops.
        object_pushed_away: lowers the closed gripper beside the cube and sweeps through it (20 cm
            along the finger axis); marked at the first touch.
        stall: stops for good (marked) after grasping, with the cube 0-60 % of the way up to the
            success height.
    """

    failures = ("missed_grasp", "drop_after_lift", "object_pushed_away", "stall")

    lift_height: ClassVar[float] = 0.12
    lift_speed: ClassVar[float] = 0.15  # slow: the success height is only ~2 cm up

    def _cube(self, env: TaskEnv) -> np.ndarray:
        return np.array(env.robosuite.sim.data.body_xpos[env.robosuite.cube_body_id])

    def _plan(self, env: TaskEnv) -> None:
        rs = env.robosuite
        self.rot = gripper_down(face_yaw(rs.sim.data.body_xmat[rs.cube_body_id].reshape(3, 3)))
        # from where the cube rests, as the task measures its height (af76296): from its spawn,
        # 1 cm higher, a stall planned 16 % of the way up stalled 72 % of the way
        self.start_z = env._start_z
        self.success_z = rs.model.mujoco_arena.table_offset[2] + 0.04  # robosuite's threshold
        self.offset = np.zeros(3)
        if self.failure == "missed_grasp":
            self.offset = self._missed_grasp_offset()
        pushing = self.failure == "object_pushed_away"
        self.after_approach = "push_side" if pushing else "descend"
        self.push_dir = self.rot[:, 0] * self.rng.choice([-1.0, 1.0])  # along the finger axis
        # How far up toward the success height the cube is when the drop or stall happens.
        span = {"drop_after_lift": (0.3, 0.6), "stall": (0.0, 0.6)}.get(self.failure)
        self.fraction = None if span is None else float(self.rng.uniform(*span))
        self._enter("approach")

    def _step(self, env: TaskEnv) -> np.ndarray:
        cube = self._cube(env)
        action = self._pick(env, cube)
        if action is not None:
            return action
        if self.phase == "lift":
            if self.fraction is not None:
                height = self.start_z + self.fraction * (self.success_z - self.start_z)
                if cube[2] >= height:
                    return self._fail_after_lift(env)
            target = self.grasp_at + self.lift_height * UP
            return self._servo(env, target, CLOSED, self.rot, speed=self.lift_speed)
        if self.phase in ("drop", "stall"):
            return self._failed(env)
        if self.phase in ("push_side", "push_down"):
            # Beside the cube at hover height, then down to the cube's height: never through it.
            target = cube - 0.08 * self.push_dir + self.hover * UP
            if self.phase == "push_down":
                target[2] = cube[2]
            if self._reached(env, target, 0.01):
                if self.phase == "push_side":
                    return self._switch(env, "push_down")
                self.push_from = self._eef(env)
                return self._switch(env, "push")
            return self._servo(env, target, CLOSED, self.rot)
        if self.phase == "push":
            if env.robosuite.check_contact(self._gripper, env.robosuite.cube):
                self._mark_failure()
            target = self.push_from + 0.2 * self.push_dir
            if self._reached(env, target, 0.01):
                return self._switch(env, "retreat")
            return self._servo(env, target, CLOSED, self.rot, speed=0.5)
        # retreat: up and away, and stay there
        target = self.push_from + 0.2 * self.push_dir + 0.1 * UP
        return self._servo(env, target, CLOSED, self.rot)


@register_expert("PickPlaceCan")
class PickPlaceCanExpert(_PickExpert):
    """PickPlaceCan: grasp the can from above, lift it over the bin walls (drawing it in toward the
    robot if it lies at the edge of the arm's reach), carry it over its quadrant of the target
    bin, lower it, release, and rise clear of it.

    Failures:
        missed_grasp: descends beside the can (4.5-6 cm off, across the fingers), closes there
            (marked) and goes on empty.
        drop_after_lift: opens the gripper (marked) 25-45 % of the way through the carry, around
            the gap between the bins.
        wrong_target: carries the can to another quadrant of the target bin and releases it there
            (marked at the release).
        stall: stops for good (marked), holding the can, 50-80 % of the way through the carry.
    """

    failures = ("missed_grasp", "drop_after_lift", "wrong_target", "stall")

    hover: ClassVar[float] = 0.08
    grasp_z: ClassVar[float] = 0.0  # the can's middle
    # Lifting pulls the can in to this horizontal distance from the robot's base (if farther):
    # straight up from the far side of the bin, the elbow locks straight and the arm can no longer
    # move the can inward.
    reach: ClassVar[float] = 0.66
    # Grip site heights: for the carry, the can's bottom 5 cm over the bin walls (top at 0.90);
    # at release, the can's bottom 2-3 cm above the bin floor.
    carry_z: ClassVar[float] = 1.0
    place_z: ClassVar[float] = 0.91
    open_steps: ClassVar[int] = 8

    def _place_xy(self, env: TaskEnv, quadrant: int) -> np.ndarray:
        """Where to release over ``quadrant`` of the target bin: its corner nearest the robot, 6 cm
        in from both edges (the quadrant's centre lies at the edge of the Panda's reach).
        Quadrants are numbered as robosuite's ``PickPlace.not_in_bin`` numbers them."""
        rs = env.robosuite
        half = np.asarray(rs.bin_size[:2]) / 2
        low = np.asarray(rs.bin2_pos[:2]) - half * [quadrant in (0, 2), quadrant < 2]
        corners = [low + half * [i, j] for i in (0, 1) for j in (0, 1)]
        nearest = min(corners, key=lambda c: np.linalg.norm(c - self._base_pos[:2]))
        return nearest + np.where(nearest > low, -0.06, 0.06)

    def _plan(self, env: TaskEnv) -> None:
        rs = env.robosuite
        self.rot = DOWN  # the can is round: any yaw grasps it
        self.after_approach = "descend"
        self.offset = np.zeros(3)
        if self.failure == "missed_grasp":
            # Toward the bin's middle, away from its walls.
            self.offset = self._missed_grasp_offset(away_from=env._can_pos() - rs.bin1_pos)
        quadrant = rs.object_id
        if self.failure == "wrong_target":
            quadrant = (quadrant + self.rng.integers(1, 4)) % 4  # any of the three others
        self.target = self._place_xy(env, quadrant)
        # Stall short of the target quadrant: a can slipping from the fingers there would land in it.
        span = {"drop_after_lift": (0.25, 0.45), "stall": (0.5, 0.8)}.get(self.failure)
        self.fraction = None if span is None else float(self.rng.uniform(*span))
        self._enter("approach")

    def _step(self, env: TaskEnv) -> np.ndarray:
        action = self._pick(env, env._can_pos())
        if action is not None:
            return action
        if self.phase == "lift":
            out = self.grasp_at[:2] - self._base_pos[:2]
            inward = out * min(1.0, self.reach / np.linalg.norm(out))
            target = np.array([*(self._base_pos[:2] + inward), self.carry_z])
            if self._reached(env, target, 0.02, 0.02):
                self.carry_from = self._eef(env)
                return self._switch(env, "carry")
            return self._servo(env, target, CLOSED, self.rot)
        if self.phase == "carry":
            target = np.array([*self.target, self.carry_z])
            arrived = self._reached(env, target, 0.01, 0.02)
            carried = _carried(self.carry_from, self._eef(env), target)
            if self.fraction is not None and (carried >= self.fraction or arrived):
                return self._fail_after_lift(env)
            if arrived:
                return self._switch(env, "lower")
            return self._servo(env, target, CLOSED, self.rot)
        if self.phase in ("drop", "stall"):
            return self._failed(env)
        if self.phase == "lower":
            target = np.array([*self.target, self.place_z])
            if self._reached(env, target, 0.01, 0.01) or self.phase_steps >= 30:
                self.release_at = self._eef(env)
                if self.failure == "wrong_target":
                    self._mark_failure()
                return self._switch(env, "release")
            return self._servo(env, target, CLOSED, self.rot)
        if self.phase == "release":
            if self.phase_steps >= self.open_steps:
                return self._switch(env, "retreat")
            return self._servo(env, self.release_at, OPEN, self.rot)
        # retreat: straight up, clear of the can (robosuite counts the can placed only once the
        # gripper is 4 cm or more from it), and stay there
        return self._servo(env, np.array([*self.release_at[:2], self.carry_z]), OPEN, self.rot)


def _carried(start: np.ndarray, now: np.ndarray, target: np.ndarray) -> float:
    """The fraction of the horizontal way from ``start`` to ``target`` covered at ``now``."""
    total = np.linalg.norm(target[:2] - start[:2])
    return float(np.linalg.norm(now[:2] - start[:2]) / total) if total > 1e-6 else 1.0


@register_expert("Stack")
class StackExpert(_PickExpert):
    """Stack: grasp the red cube A from above, lift it, carry it over the green cube B, lower it
    until it rests on B, release, and rise clear.

    Of the two grasps on A's side faces, the expert takes the one whose finger axis lies most
    across the line from A to B, so the open fingers do not come down on B.

    Failures:
        missed_grasp: descends beside A (4.5-6 cm off, across the fingers, away from B), closes
            there (marked) and goes on empty.
        drop_after_lift: opens the gripper (marked) after the lift, 0-40 % of the way through the
            carry but while A is still 12 cm or more from B (so it cannot land on B), and stops.
        wrong_target: carries A to the table 9-11 cm beside B, sets it down and releases it
            (marked at the release).
        stall: stops for good (marked), holding A, 60-95 % of the way through the carry.
    """

    failures = ("missed_grasp", "drop_after_lift", "wrong_target", "stall")

    carry_z: ClassVar[float] = 0.96  # grip site height for the carry: A's bottom 9 cm over B's top
    open_steps: ClassVar[int] = 8

    def _cube(self, env: TaskEnv, body_id: int) -> np.ndarray:
        return np.array(env.robosuite.sim.data.body_xpos[body_id])

    def _plan(self, env: TaskEnv) -> None:
        rs = env.robosuite
        a, b = self._cube(env, rs.cubeA_body_id), self._cube(env, rs.cubeB_body_id)
        yaw = face_yaw(rs.sim.data.body_xmat[rs.cubeA_body_id].reshape(3, 3))
        to_b = (b - a) / np.linalg.norm((b - a)[:2])
        self.rot = min(
            (gripper_down(yaw), gripper_down(yaw - np.sign(yaw or 1.0) * np.pi / 2)),
            key=lambda rot: abs(np.dot(rot[:2, 0], to_b[:2])),
        )
        self.after_approach = "descend"
        self.half_a = float(rs.cubeA.size[2])
        self.offset = np.zeros(3)
        if self.failure == "missed_grasp":
            self.offset = self._missed_grasp_offset(away_from=to_b)
        self.aside = None  # where A goes instead of onto B (wrong_target)
        if self.failure == "wrong_target":
            angle = self.rng.uniform(0, 2 * np.pi)
            distance = self.rng.uniform(0.09, 0.11)
            self.aside = b[:2] + distance * np.array([np.cos(angle), np.sin(angle)])
        span = {"drop_after_lift": (0.0, 0.4), "stall": (0.6, 0.95)}.get(self.failure)
        self.fraction = None if span is None else float(self.rng.uniform(*span))
        self._enter("approach")

    def _place(self, env: TaskEnv) -> np.ndarray:
        """Where A's centre rests once placed: on B (read live: the cubes settle after reset), or
        on the table beside it."""
        rs = env.robosuite
        if self.aside is not None:
            return np.array([*self.aside, rs.table_offset[2] + self.half_a])
        b = self._cube(env, rs.cubeB_body_id)
        return b + (float(rs.cubeB.size[2]) + self.half_a) * UP

    def _step(self, env: TaskEnv) -> np.ndarray:
        rs = env.robosuite
        a = self._cube(env, rs.cubeA_body_id)
        action = self._pick(env, a)
        if action is not None:
            return action
        # The grip site sits at A's centre while A is held: aim it where A's centre should go.
        place = self._place(env)
        if self.phase == "lift":
            target = np.array([*self.grasp_at[:2], self.carry_z])
            if self._reached(env, target, 0.02, 0.015):
                self.carry_from = self._eef(env)
                return self._switch(env, "carry")
            return self._servo(env, target, CLOSED, self.rot)
        if self.phase == "carry":
            target = np.array([*place[:2], self.carry_z])
            arrived = self._reached(env, target, 0.006, 0.015)
            if self.fraction is not None:
                # A carry ending within the tolerance short of the failure's fraction still fails.
                due = arrived or _carried(self.carry_from, self._eef(env), target) >= self.fraction
                # A let go of mid-carry flies on a few centimetres: drop it 12 cm or more from B.
                near_b = np.linalg.norm(a[:2] - self._cube(env, rs.cubeB_body_id)[:2]) < 0.12
                if due or (near_b and self.failure == "drop_after_lift"):
                    return self._fail_after_lift(env)
            if arrived:
                return self._switch(env, "lower")
            return self._servo(env, target, CLOSED, self.rot)
        if self.phase in ("drop", "stall"):
            return self._failed(env)
        if self.phase == "lower":
            # Release once A rests on its target (the aim is a little lower, so it gets there):
            # released higher, A falls, and progress dips while it falls.
            if a[2] < place[2] + 0.002 or self.phase_steps >= 40:
                self.release_at = self._eef(env)
                if self.failure == "wrong_target":
                    self._mark_failure()
                return self._switch(env, "release")
            return self._servo(env, place - 0.005 * UP, CLOSED, self.rot, speed=0.3)
        if self.phase == "release":
            if self.phase_steps >= self.open_steps:
                return self._switch(env, "retreat")
            return self._servo(env, self.release_at, OPEN, self.rot)
        # retreat: straight up, clear of the stack, and stay there
        return self._servo(env, np.array([*self.release_at[:2], self.carry_z]), OPEN, self.rot)


@register_expert("Door")
class DoorExpert(OSCExpert):
    """Door: grasp the lever handle from the front (gripper pointing at the door, fingers closing
    across the bar from above and below), turn it up until the latch clears the frame, then pull
    the door open along its arc about the hinge, turning the gripper with the door.

    Failures:
        missed_grasp: closes the gripper just past the free end of the handle, 5.5-7 cm along the
            bar from the grasp point (marked), and goes through the turn and the pull empty.
        stall: stops for good (marked), holding the handle, once the door is 20-80 % of the way to
            the success angle.
        wrong_target: after turning the handle, pushes the door (shut, against its stop) instead of
            pulling it (marked as the push starts).
    """

    failures = ("missed_grasp", "stall", "wrong_target")

    standoff: ClassVar[float] = 0.08  # in front of the handle before reaching in
    # rad, the lever turned up until the latch clears the frame (at -1.0 it still catches); turning
    # it down instead would run the wrist into its joint limit.
    turn_angle: ClassVar[float] = -1.45
    turn_rate: ClassVar[float] = 0.05  # rad per step
    open_angle: ClassVar[float] = 0.36  # rad (success above 0.3, joint limit 0.4)
    pull_lead: ClassVar[float] = 0.05  # rad: how far ahead of the door the pull aims
    pull_speed: ClassVar[float] = 0.3  # faster, the handle slips out of the fingers
    success_angle: ClassVar[float] = 0.3  # robosuite's Door._check_success

    def _joint(self, env: TaskEnv, name: str) -> tuple[np.ndarray, np.ndarray, float]:
        """A joint's world anchor, world axis and position."""
        model, data = env.mj_model, env.mj_data
        joint = model.joint(name)
        return (
            np.array(data.xanchor[joint.id]),
            np.array(data.xaxis[joint.id]),
            float(data.qpos[joint.qposadr[0]]),
        )

    def _handle(self, env: TaskEnv) -> np.ndarray:
        return np.array(env.mj_data.site_xpos[env.robosuite.door_handle_site_id])

    def _plan(self, env: TaskEnv) -> None:
        door = env.robosuite.door
        if not env.robosuite.use_latch:
            raise InvalidOptionError(
                "Door's scripted expert turns the handle's latch, and this door has none "
                "(use_latch=False); record Door episodes with its default use_latch=True"
            )
        self.hinge_joint, self.latch_joint = door.joints[0], door.joints[1]
        pivot, into_door, _ = self._joint(env, self.latch_joint)  # the lever's axis
        # Columns: finger axis vertical, approach axis into the door.
        fingers = np.array([0.0, 0.0, -1.0])
        self.rot = np.column_stack([fingers, np.cross(into_door, fingers), into_door])
        self.out = -into_door  # out of the door, toward the robot
        self.offset = np.zeros(3)
        if self.failure == "missed_grasp":
            along = self._handle(env) - pivot
            along -= np.dot(along, into_door) * into_door
            self.offset = along / np.linalg.norm(along) * self.rng.uniform(0.055, 0.07)
        self.fraction = float(self.rng.uniform(0.2, 0.8)) if self.failure == "stall" else None
        self._enter("approach")

    def _step(self, env: TaskEnv) -> np.ndarray:
        handle = self._handle(env)
        if self.phase == "approach":
            target = handle + self.offset + self.standoff * self.out
            if self._reached(env, target, 0.01, 0.01):
                return self._switch(env, "reach_in")
            return self._servo(env, target, OPEN, self.rot)
        if self.phase == "reach_in":
            target = handle + self.offset
            if self._reached(env, target, 0.008) or self.phase_steps >= 30:
                self.grasp_at = self._eef(env)
                self.lever = self._joint(env, self.latch_joint)[:2]  # pivot, axis
                if self.failure == "missed_grasp":
                    self._mark_failure()
                return self._switch(env, "grasp")
            return self._servo(env, target, OPEN, self.rot)
        if self.phase == "grasp":
            if self.phase_steps >= 8:
                return self._switch(env, "turn")
            return self._servo(env, self.grasp_at, CLOSED, self.rot)
        if self.phase == "turn":
            # Lead the grip along the lever's arc, turning the gripper with the lever; then hold
            # the lever turned a little longer while the arm catches up.
            pivot, axis = self.lever
            angle = max(self.turn_angle, -self.turn_rate * (self.phase_steps + 1))
            turn = about(axis, angle)
            if angle <= self.turn_angle and self.phase_steps >= 30:
                self.turned = (self._eef(env), turn @ self.rot)
                if self.failure == "wrong_target":
                    self._mark_failure()
                return self._switch(env, "push" if self.failure == "wrong_target" else "pull")
            target = pivot + turn @ (self.grasp_at - pivot)
            return self._servo(env, target, CLOSED, turn @ self.rot)
        if self.phase in ("pull", "push"):
            hinge, axis, angle = self._joint(env, self.hinge_joint)
            if self.fraction is not None and angle >= self.fraction * self.success_angle:
                self._mark_failure()
                self.stall_rot = about(axis, angle) @ self.turned[1]  # turned with the door
                return self._switch(env, "stall")
            # Lead the grip along the door's arc about the hinge, turning the gripper with it.
            if self.phase == "pull":
                goal = min(self.open_angle, angle + self.pull_lead)
            else:
                goal = angle - self.pull_lead
            swing = about(axis, goal)
            grip_at, grip_rot = self.turned
            target = hinge + swing @ (grip_at - hinge)
            return self._servo(env, target, CLOSED, swing @ grip_rot, speed=self.pull_speed)
        # stall: stop, and hold the handle where the arm came to rest
        return self._halt(env, CLOSED, self.stall_rot)
