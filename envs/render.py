"""Render what the critic sees: one or more cameras, small buffers, render-only appearance edits.

Every task (gymnasium MuJoCo or robosuite) renders through :class:`ViewRenderer` on its own
``MjModel``/``MjData``, so one code path decides what the critic sees. Appearance changes are applied
to the ``mjvScene`` after ``mjv_updateScene`` and before drawing: they touch only the rendered
geometry, never the model, so dynamics cannot change (tested).

Choices that make CPU rendering fast (measured in docs/rendering.md):
- shadows, reflections and multi-sample anti-aliasing off; the offscreen buffer is exactly the size
  asked for, not robosuite's default;
- a task can draw only some geom groups: robosuite's collision geoms (group 0) show the arm, gripper,
  cube and table in flat colours at a fraction of the cost of the detailed visual meshes.
"""

from __future__ import annotations

import atexit
import contextlib
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from envs.errors import InvalidOptionError
from rollout.checks import is_int, is_number
from rollout.warn import warn_user


class RenderError(RuntimeError):
    """The offscreen OpenGL context could not be created, or the view names what the model has
    not."""


class UnknownCameraError(RenderError, InvalidOptionError):
    """The view names a camera the model does not have: an option error (the experiment scripts
    report it as one), and a render error as before."""


@dataclass(frozen=True)
class FreeCamera:
    """A camera placed by look-at point, distance and angles (degrees), for models without one."""

    lookat: tuple[float, float, float]
    distance: float
    azimuth: float = 90.0
    elevation: float = -90.0

    def __post_init__(self) -> None:
        lookat = self.lookat
        if (
            isinstance(lookat, (str, bytes))
            or not hasattr(lookat, "__len__")
            or len(lookat) != 3
            or not all(is_number(v) for v in lookat)
        ):
            raise InvalidOptionError(
                f"FreeCamera lookat={lookat!r} must be three finite numbers (x, y, z in metres)"
            )
        if not is_number(self.distance) or self.distance <= 0:
            raise InvalidOptionError(
                f"FreeCamera distance={self.distance!r} must be a number of metres > 0"
            )
        for name in ("azimuth", "elevation"):
            if not is_number(getattr(self, name)):
                raise InvalidOptionError(
                    f"FreeCamera {name}={getattr(self, name)!r} must be a finite number of degrees"
                )
        # held as plain floats: numpy values (a lookat read from MuJoCo's data) made the camera
        # unhashable, its == ambiguous, and env.spec.to_json() fail
        object.__setattr__(self, "lookat", tuple(float(v) for v in lookat))
        for name in ("distance", "azimuth", "elevation"):
            object.__setattr__(self, name, float(getattr(self, name)))


@dataclass(frozen=True)
class Appearance:
    """A render-only change to every geom of a body, or to one named geom.

    Attributes:
        target: a geom name, or ``"body:<name>"`` for all geoms of that body.
        rgba: flat colour to draw with, or ``None`` to keep the model's.
        size_scale: factor on the drawn size (the collision size is untouched).
    """

    target: str
    rgba: tuple[float, float, float, float] | None = None
    size_scale: float = 1.0

    def __post_init__(self) -> None:
        # checked here, not at the first render (a 3-number rgba was a numpy broadcast error)
        if not isinstance(self.target, str) or not self.target:
            raise InvalidOptionError(
                f"Appearance target={self.target!r} must be a geom name or 'body:<name>'"
            )
        rgba = self.rgba
        if rgba is not None and (
            isinstance(rgba, (str, bytes))
            or not hasattr(rgba, "__len__")
            or len(rgba) != 4
            or not all(is_number(v) and 0 <= v <= 1 for v in rgba)
        ):
            raise InvalidOptionError(
                f"Appearance rgba={rgba!r} must be four numbers in [0, 1] (red, green, blue, "
                "alpha), or None to keep the model's colour"
            )
        if not is_number(self.size_scale) or self.size_scale <= 0:
            raise InvalidOptionError(
                f"Appearance size_scale={self.size_scale!r} must be a number > 0"
            )


@dataclass(frozen=True)
class CriticView:
    """What the critic sees. Cameras are tiled left to right into one frame (SOLE-R1 style).

    Attributes:
        cameras: named model cameras or :class:`FreeCamera` placements.
        height: pixel height of each camera image.
        width: pixel width of each camera image.
        geom_groups: which geom groups are drawn; ``None`` keeps MuJoCo's default (0, 1, 2).
        appearance: render-only appearance edits.
    """

    cameras: tuple[str | FreeCamera, ...]
    height: int = 128
    width: int = 128
    geom_groups: tuple[int, ...] | None = None
    appearance: tuple[Appearance, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        # checked here, not at the first render (a float height was a raw TypeError in MuJoCo,
        # a height of 0 an "install the GL packages" message, cameras="top" camera 't')
        cameras = self.cameras
        if isinstance(cameras, (str, FreeCamera)) or not isinstance(cameras, (tuple, list)):
            raise InvalidOptionError(
                f"CriticView cameras={cameras!r} must be a tuple of camera names or FreeCameras, "
                f"e.g. ({cameras!r},)"
            )
        if not cameras:  # what each names is checked against the model (check_view)
            raise InvalidOptionError(
                "CriticView cameras=() must hold one or more camera names or FreeCameras"
            )
        for side in ("height", "width"):
            value = getattr(self, side)
            if not is_int(value) or not 16 <= value <= 1024:
                raise InvalidOptionError(
                    f"CriticView {side}={value!r} must be an integer number of pixels in [16, 1024]"
                )
        groups = self.geom_groups
        if groups is not None and (
            not isinstance(groups, (tuple, list))
            or not groups  # (): nothing drawn, a blank frame every step
            or not all(is_int(g) and 0 <= g < 6 for g in groups)
        ):
            raise InvalidOptionError(
                f"CriticView geom_groups={groups!r} must be None or a tuple of one or more MuJoCo "
                "geom groups (integers 0-5), e.g. (0,) for collision geoms"
            )

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """Shape of the tiled uint8 frame."""
        return (self.height, self.width * len(self.cameras), 3)


class ViewRenderer:
    """Renders a :class:`CriticView` of a MuJoCo model.

    Args:
        model: the ``mujoco.MjModel``; its visual settings (offscreen size, samples) are adjusted.
        view: what to draw.

    Example:
        >>> renderer = ViewRenderer(env.model, CriticView(cameras=("agentview",)))  # doctest: +SKIP
        >>> frame = renderer.render(env.data)  # uint8 [128, 128, 3]  # doctest: +SKIP
    """

    def __init__(self, model, view: CriticView) -> None:
        import mujoco

        from envs.gl import bind_mujoco_backend, forked_gl_problem, note_gl_context

        if problem := forked_gl_problem():  # a typed error, not a hang
            raise RenderError(problem)
        bind_mujoco_backend()
        self._mujoco = mujoco
        self.view = view
        self._model = model
        check_view(model, view)
        # Visual settings only; nothing here enters the dynamics.
        model.vis.quality.offsamples = 0
        model.vis.global_.offwidth = view.width
        model.vis.global_.offheight = view.height
        try:
            self._renderer = mujoco.Renderer(model, height=view.height, width=view.width)
        except Exception as exc:  # the GL backends raise a variety of types
            raise RenderError(
                f"could not create an offscreen OpenGL context with MUJOCO_GL="
                f"{_gl_backend()!r}: {exc}. Install the system packages with "
                "`bash scripts/install.sh` (Mesa EGL and OSMesa), or try "
                "MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa."
            ) from exc
        note_gl_context()
        _register_exit_close()  # after the first GL context exists: see _register_exit_close
        _LIVE_RENDERERS.add(self)
        scene = self._renderer.scene
        scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        scene.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
        self._option = mujoco.MjvOption()
        if view.geom_groups is not None:
            self._option.geomgroup[:] = 0
            for group in view.geom_groups:
                self._option.geomgroup[group] = 1
        self._cameras = [self._make_camera(cam) for cam in view.cameras]
        self._edits = self._resolve_appearance(view.appearance)

    def _make_camera(self, cam: str | FreeCamera):
        mujoco = self._mujoco
        if isinstance(cam, FreeCamera):
            free = mujoco.MjvCamera()
            free.type = mujoco.mjtCamera.mjCAMERA_FREE
            free.lookat[:] = cam.lookat
            free.distance = cam.distance
            free.azimuth = cam.azimuth
            free.elevation = cam.elevation
            return free
        return cam

    def _resolve_appearance(
        self, appearance: Sequence[Appearance]
    ) -> dict[int, tuple[np.ndarray | None, float]]:
        mujoco, model = self._mujoco, self._model
        edits: dict[int, tuple[np.ndarray | None, float]] = {}
        for item in appearance:
            rgba = None if item.rgba is None else np.asarray(item.rgba, dtype=np.float32)
            if item.target.startswith("body:"):
                body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, item.target[5:])
                geoms = [g for g in range(model.ngeom) if model.geom_bodyid[g] == body]
            else:
                geoms = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, item.target)]
            for g in geoms:
                edits[g] = (rgba, item.size_scale)
        return edits

    def render(self, data) -> np.ndarray:
        """Draw every camera of the view and tile them: uint8 ``[H, W * n_cameras, 3]``."""
        images = []
        geom_type = self._mujoco.mjtObj.mjOBJ_GEOM
        for cam in self._cameras:
            self._renderer.update_scene(data, camera=cam, scene_option=self._option)
            if self._edits:
                scene = self._renderer.scene
                for i in range(scene.ngeom):
                    vgeom = scene.geoms[i]
                    edit = self._edits.get(vgeom.objid) if vgeom.objtype == geom_type else None
                    if edit is not None:
                        rgba, scale = edit
                        if rgba is not None:
                            vgeom.rgba[:] = rgba
                        if scale != 1.0:
                            vgeom.size[:] = vgeom.size * scale
            images.append(self._renderer.render())
        return images[0] if len(images) == 1 else np.concatenate(images, axis=1)

    def close(self) -> None:
        """Free the GL context."""
        renderer, self._renderer = getattr(self, "_renderer", None), None
        if renderer is not None:
            renderer.close()


def check_view(model, view: CriticView) -> None:
    """Raise :class:`RenderError` if a camera or appearance target of ``view`` is not in ``model``.

    Needs no GL context, so envs check their view when built rather than at the first render.
    """
    import mujoco

    for cam in view.cameras:
        if isinstance(cam, FreeCamera):
            continue
        if (
            not isinstance(cam, str)
            or mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, cam) < 0
        ):
            names = [model.camera(i).name for i in range(model.ncam)]
            raise UnknownCameraError(
                f"unknown camera {cam!r}; this model has cameras {names}. Pass one of these, "
                "a list of them to tile, or an envs.FreeCamera"
                if names
                else f"unknown camera {cam!r}; this model has no named camera: leave the task's "
                "default camera, or pass an envs.FreeCamera"
            )
    for item in view.appearance:
        kind, name = (
            (mujoco.mjtObj.mjOBJ_BODY, item.target[5:])
            if item.target.startswith("body:")
            else (mujoco.mjtObj.mjOBJ_GEOM, item.target)
        )
        if mujoco.mj_name2id(model, kind, name) < 0:
            raise RenderError(f"appearance target {item.target!r} is not in this model")


# Renderers still open at interpreter exit are closed while EGL is still up; left to the garbage
# collector they fail noisily during teardown. mujoco registers eglTerminate at exit when it makes
# its first EGL context; our hook is registered after that, so it runs first (atexit is LIFO).
_LIVE_RENDERERS: weakref.WeakSet[ViewRenderer] = weakref.WeakSet()
_EXIT_HOOK = []


def _register_exit_close() -> None:
    if not _EXIT_HOOK:
        _EXIT_HOOK.append(atexit.register(_close_live_renderers))


def _close_live_renderers() -> None:
    for renderer in list(_LIVE_RENDERERS):
        with contextlib.suppress(Exception):
            renderer.close()


def _gl_backend() -> str | None:
    import os

    return os.environ.get("MUJOCO_GL")


def warn_if_other_view(critic: Any, task: str | None, view: Any, source: str | None = None) -> None:
    """Warn, once per critic, task and view, where ``critic`` records the view ``task``'s
    episodes were recorded at (``trained_views``) and the env renders another ``view`` (its
    ``image_size=`` or ``camera=``; a :class:`~envs.render.CriticView`, or a dataset manifest's
    ``{"image_size", "camera"}`` for the episodes of ``source``, a folder): a critic's reading
    does not carry over (the shipped critic read 0.02 of a Reacher start at 56² and 0.25 at
    112², true progress 0)."""
    from envs.manifest import plain

    recorded = (getattr(critic, "trained_views", None) or {}).get(task)
    if not isinstance(recorded, dict):
        return
    if isinstance(view, dict):
        size, camera = plain(view.get("image_size")), plain(view.get("camera"))
        if not isinstance(size, list) or not isinstance(camera, list):
            return  # an older manifest names no view
    else:
        size, camera = [view.height, view.width], plain(list(view.cameras))
    other = []
    if plain(recorded.get("image_size")) != size:
        other.append(f"{size[0]}x{size[1]} pixels where it was trained on "
                     f"{'x'.join(map(str, recorded.get('image_size') or ['?']))}")  # fmt: skip
    if plain(recorded.get("camera")) != camera:
        other.append(f"from camera {camera} where it was trained from {recorded.get('camera')}")
    key = (getattr(critic, "name", repr(critic)), task, repr((other, source)))
    if not other or key in _WARNED_VIEW:
        return
    _WARNED_VIEW.add(key)
    if source is None:
        warn_user(
            f"critic {key[0]!r} reads {task} rendered {' and '.join(other)}: its readings may "
            "mean little there; leave image_size= and camera= at the task's, or record episodes "
            "at this view (synthesize.py env.image_size=, env.camera=) and train a critic on them"
        )
        return
    warn_user(
        f"critic {key[0]!r} reads the {task} episodes of {source}, recorded {' and '.join(other)}:"
        " its readings may mean little there; score it on episodes recorded at its view "
        "(synthesize.py with env.image_size= and env.camera= left at the task's)"
    )


_WARNED_VIEW: set[tuple[str, str | None, str]] = set()
