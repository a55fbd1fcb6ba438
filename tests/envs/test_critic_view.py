"""The critic's view options: image sizes, free cameras, body-wide appearance, view checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import envs
from envs import Appearance, FreeCamera, InvalidOptionError, RenderError
from envs.render import CriticView, ViewRenderer, check_view

_SIZE_MESSAGE = (
    "image_size={!r} is not valid; pass an int or (height, width) with each side between 16 and "
    "1024 pixels"
)


@pytest.fixture(scope="module")
def reacher():
    env = envs.make_task_env("Reacher-v5")
    env.reset(seed=0)
    yield env
    env.close()


def test_image_size_is_height_then_width():
    env = envs.make_task_env("Reacher-v5", image_size=(64, 32))
    env.reset(seed=0)
    assert env.render_critic_view().shape == (64, 32, 3)
    env.close()


@pytest.mark.parametrize("size", [15, 1025, (64, 0), "64", True])
def test_out_of_range_or_non_integer_sizes_are_refused(size):
    with pytest.raises(InvalidOptionError) as err:
        envs.make_task_env("Reacher-v5", image_size=size)
    assert str(err.value) == _SIZE_MESSAGE.format(size)


@pytest.mark.parametrize("size", [64.0, (64,), (64, 64, 64)])
def test_malformed_sizes_are_refused_with_the_typed_error(size):
    with pytest.raises(InvalidOptionError) as err:
        envs.make_task_env("Reacher-v5", image_size=size)
    assert str(err.value) == _SIZE_MESSAGE.format(size)


def test_a_numpy_integer_size_is_used_or_refused_with_the_typed_error():
    # Sizes read from arrays or configs can be numpy integers; either answer is fine, a bare
    # TypeError is not.
    try:
        env = envs.make_task_env("Reacher-v5", image_size=np.int64(64))
    except InvalidOptionError:
        return
    assert env.view.height == env.view.width == 64
    env.close()


def test_free_cameras_tile_like_named_ones():
    # The same placement twice: two identical 56-pixel halves side by side.
    cam = envs.get_task("Reacher-v5").view.cameras[0]
    assert isinstance(cam, FreeCamera)
    env = envs.make_task_env("Reacher-v5", camera=(cam, cam))
    env.reset(seed=0)
    frame = env.render_critic_view()
    assert frame.shape == (56, 112, 3)
    np.testing.assert_array_equal(frame[:, :56], frame[:, 56:])
    env.close()


def test_unknown_camera_message_is_exact_on_a_model_without_cameras(reacher):
    view = dataclasses.replace(reacher.view, cameras=(3,))
    with pytest.raises(RenderError) as err:
        check_view(reacher.mj_model, view)
    assert str(err.value) == (
        "unknown camera 3; this model has no named camera: leave the task's default camera, or "
        "pass an envs.FreeCamera"
    )
    # an option error too, so the experiment scripts report it as a message, not a traceback
    assert isinstance(err.value, InvalidOptionError)


def test_unknown_camera_names_the_ones_the_model_has(reacher):
    import mujoco

    model = mujoco.MjModel.from_xml_string(
        '<mujoco><worldbody><camera name="top" pos="0 0 1"/><camera name="side" pos="1 0 0"/>'
        "</worldbody></mujoco>"
    )
    with pytest.raises(InvalidOptionError) as err:
        check_view(model, dataclasses.replace(reacher.view, cameras=("nope",), appearance=()))
    assert str(err.value) == (
        "unknown camera 'nope'; this model has cameras ['top', 'side']. Pass one of these, a list "
        "of them to tile, or an envs.FreeCamera"
    )
    check_view(model, dataclasses.replace(reacher.view, cameras=("side",), appearance=()))


@pytest.mark.parametrize("target", ["nope", "body:nope"])
def test_unknown_appearance_target(reacher, target):
    view = dataclasses.replace(reacher.view, appearance=(Appearance(target, rgba=(1, 0, 0, 1)),))
    with pytest.raises(RenderError) as err:
        check_view(reacher.mj_model, view)
    assert str(err.value) == f"appearance target {target!r} is not in this model"


def _blue_pixels(frame: np.ndarray) -> int:
    # Pusher's object is drawn (0.1, 0.2, 0.95) and lit to about (115, 140, 255); grey floor and
    # arm have r ≈ g ≈ b, the red goal has little blue.
    r, g, b = (frame[..., i].astype(int) for i in range(3))
    return int(((b > r + 60) & (b > g + 60)).sum())


def test_body_target_recolours_the_geoms_of_that_body():
    # "body:object" paints Pusher's white cylinder blue. Top-down from 1.5 m at 96 pixels a pixel
    # is about 2 × 1.5 × tan(22.5°) / 96 ≈ 0.013 m, so the 0.05 m radius disc covers about
    # π × (0.05 / 0.013)² ≈ 46 pixels; the plain view has no blue at all.
    env = envs.make_task_env("Pusher-v5")
    env.reset(seed=0)
    plain = ViewRenderer(env.mj_model, CriticView(cameras=env.view.cameras, height=96, width=96))
    assert _blue_pixels(plain.render(env.mj_data)) == 0
    assert 30 <= _blue_pixels(env.render_critic_view()) <= 70
    plain.close()
    env.close()
