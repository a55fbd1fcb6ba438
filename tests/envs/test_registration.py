"""How the tasks and VisCriticReward-v0 are registered with gymnasium: making them by id, bare
task envs, tasks registered later or again, and the checks a spec gets before anything uses it.
(The wrapper's rewards and options are in test_wrappers.py; the spec it records, here.)"""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs import InvalidOptionError
from tests.helpers import RecordingCritic


def test_make_without_importing_envs_first_gives_the_shipped_critic():
    # Gymnasium imports the module named before the colon; no critic named: viscritic-small.
    env = gym.make("envs:VisCriticReward-v0", env="Reacher-v5")
    assert env.get_wrapper_attr("critic").name == "vlm:viscritic-small:score"
    env.reset(seed=0)
    _, reward, *_, info = env.step(env.action_space.sample())
    assert info["critic_status"] == "ok" and 0.0 <= reward <= 1.0
    env.close()


def test_bare_task_envs_are_registered():
    env = gym.make(envs.bare_env_id("Lift"))
    assert env.spec.id == "VisCritic/Lift-v0"
    assert env.spec.max_episode_steps == envs.get_task("Lift").horizon
    env.close()
    assert envs.bare_env_id("Reacher-v5") == "VisCritic/Reacher-v5"


def test_a_task_registered_later_or_again_gets_its_bare_env_with_its_horizon():
    import dataclasses

    reacher = envs.get_task("Reacher-v5")
    try:
        # Another spec under the same name: the bare env follows it (the old one ran 50 steps).
        envs.register_task(dataclasses.replace(reacher, horizon=7))
        env = gym.make(envs.bare_env_id("Reacher-v5"))
        assert env.spec.max_episode_steps == 7
        env.close()
        # A task registered after import envs has a bare env too.
        envs.register_task(dataclasses.replace(reacher, name="MyReacher", horizon=9))
        env = gym.make(envs.bare_env_id("MyReacher"))
        assert env.spec.id == "VisCritic/MyReacher-v0" and env.spec.max_episode_steps == 9
        assert env.unwrapped.task_name == "MyReacher"
        env.close()
        # a numpy integer horizon is kept as an int (gymnasium's registry refused np.int64 at
        # gym.make, after register_task had taken it)
        import numpy as np

        kept = envs.register_task(
            dataclasses.replace(reacher, name="MyReacher", horizon=np.int64(8))
        )
        assert type(kept.horizon) is int and envs.get_task("MyReacher").horizon == 8
        env = gym.make(envs.bare_env_id("MyReacher"))
        assert env.spec.max_episode_steps == 8
        env.close()
    finally:
        envs.register_task(reacher)
        envs.tasks._TASKS.pop("MyReacher", None)
        gym.registry.pop("VisCritic/MyReacher-v0", None)
    assert gym.spec(envs.bare_env_id("Reacher-v5")).max_episode_steps == 50
    with pytest.raises(InvalidOptionError) as err:
        envs.register_task(dataclasses.replace(reacher, name="My Reacher"))
    assert str(err.value).startswith(
        "task name 'My Reacher' makes no gymnasium id (Malformed environment ID: "
        "VisCritic/My Reacher-v0."
    )
    assert str(err.value).endswith(
        "name the task with letters, digits and '_', '-', '.', e.g. 'MyReacher' or 'MyReacher-v1'"
    )
    assert "My Reacher" not in envs.task_names()


def test_a_reward_env_without_a_task_lists_the_tasks():
    with pytest.raises(envs.UnknownTaskError) as err:
        gym.make("VisCriticReward-v0", critic="oracle")
    assert str(err.value) == (
        f"unknown task None; registered tasks: {envs.task_names()}. Pass one of these as "
        "env=..., or register your own with envs.register_task (docs/tasks.md; the experiment "
        "scripts import its module with imports=[my_tasks])."
    )


def test_a_bare_env_builds_the_task_its_id_names():
    # name= replaced the registered task: Pusher under Reacher's 50-step time limit
    with pytest.raises(InvalidOptionError, match=r"name='Pusher-v5': gym.make\('VisCritic/Reacher-v5'\) "
                                                 r"builds Reacher-v5; make another task by its own id, "
                                                 r"e.g. gym.make\('VisCritic/Pusher-v5'\)"):  # fmt: skip
        gym.make("VisCritic/Reacher-v5", name="Pusher-v5")
    env = gym.make("VisCritic/Reacher-v5", image_size=32)  # the task's own options pass through
    assert env.unwrapped.task_name == "Reacher-v5" and env.unwrapped.view.height == 32
    env.close()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"horizon": 0}, "horizon=0 must be an integer >= 1"),
        ({"horizon": 50.0}, "horizon=50.0 must be an integer >= 1"),
        ({"view": "top"}, "task 'Reacher-v5': view='top' must be an envs.CriticView"),
    ],
)
def test_register_task_checks_the_spec_before_anything_uses_it(edit, message):
    # each failed later: in gymnasium's TimeLimit at make, or at the first render
    import dataclasses

    with pytest.raises(InvalidOptionError) as err:
        envs.register_task(dataclasses.replace(envs.get_task("Reacher-v5"), **edit))
    assert str(err.value).startswith(message)
    assert gym.spec(envs.bare_env_id("Reacher-v5")).max_episode_steps == 50  # left as it was


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: envs.CriticView(cameras=("top",), height=56.0), "CriticView height=56.0 must be an integer"),
        (lambda: envs.CriticView(cameras=("top",), height=0), "CriticView height=0 must be an integer"),
        (lambda: envs.CriticView(cameras="topcam"), "CriticView cameras='topcam' must be a tuple"),
        (lambda: envs.CriticView(cameras=("top",), geom_groups=(7,)), "CriticView geom_groups=(7,) must be"),
        (lambda: envs.CriticView(cameras=("top",), geom_groups=()), "CriticView geom_groups=() must be "
         "None or a tuple of one or more"),
        (lambda: envs.Appearance("body:arm", rgba=(1, 0, 0)), "Appearance rgba=(1, 0, 0) must be four numbers"),
    ],
)  # fmt: skip
def test_a_view_that_cannot_render_is_refused_when_built(build, message):
    # a float height was a raw TypeError in MuJoCo, 0 an "install the GL packages" message, a
    # bare string camera "unknown camera 't'", group 7 an IndexError, a 3-number rgba a broadcast
    with pytest.raises(InvalidOptionError) as err:
        build()
    assert str(err.value).startswith(message)


def test_horizon_on_a_bare_task_names_max_episode_steps():
    with pytest.raises(InvalidOptionError) as err:
        gym.make("VisCritic/Reacher-v5", horizon=10)
    assert str(err.value) == (
        "horizon=10 is an option of VisCriticReward-v0, not of the bare task; give "
        "gym.make('VisCritic/Reacher-v5', max_episode_steps=10) for its episode length"
    )


def test_a_spec_rebuilds_the_wrapper_with_its_own_horizon_and_no_second_limit():
    # The inner TimeLimit wrote the horizon into env.spec.max_episode_steps, which is gym.make's
    # own limit: gym.make(env.spec, horizon=80) put a 50-step TimeLimit outside the wrapper and
    # cut every episode at 50.
    env = gym.make("VisCriticReward-v0", env="Reacher-v5", critic="oracle")
    assert env.spec.max_episode_steps is None and env.spec.kwargs["env"] == "Reacher-v5"
    longer = gym.make(env.spec, horizon=80)
    assert not isinstance(longer, gym.wrappers.TimeLimit)
    longer.reset(seed=0)
    steps, ended = 0, False
    while not ended:
        *_, terminated, truncated, _ = longer.step(longer.action_space.sample())
        steps, ended = steps + 1, terminated or truncated
    assert steps == 80
    # gym.make's own limit is still the one it puts outside (the wrapper warns of it)
    outer = gym.make("VisCriticReward-v0", env="Reacher-v5", critic="oracle", max_episode_steps=20)
    assert outer.spec.max_episode_steps == 20 and isinstance(outer, gym.wrappers.TimeLimit)
    for e in (env, longer, outer):
        e.close()


def test_wrapper_records_its_arguments():
    # A critic object is recorded as the object: its name alone may rebuild another critic
    # (test_a_critic_given_as_an_instance_is_the_one_the_spec_rebuilds).
    task = gym.wrappers.TimeLimit(envs.make_task_env("Reacher-v5"), 50)
    critic = RecordingCritic()
    wrapper = envs.VisCriticReward(task, critic=critic, query_every=3)
    assert wrapper._saved_kwargs == {"critic": critic, "query_every": 3}
    wrapper.close()
    # With a critic given by name or mapping, the whole gym.make spec serialises, numpy options
    # too (gymnasium records them as given: np.int64 was json's TypeError)
    env = gym.make("VisCriticReward-v0", env="Reacher-v5", critic={"name": "oracle"},
                   query_every=np.int64(3), image_size=(np.int64(32), 32))  # fmt: skip
    spec = json.loads(env.spec.to_json())
    assert spec["kwargs"]["query_every"] == 3 and spec["kwargs"]["image_size"] == [32, 32]
    assert spec["additional_wrappers"][-1]["kwargs"]["query_every"] == 3
    env.close()
    # a FreeCamera goes into JSON as its fields and comes back as the same camera; a critic
    # given as a Path as its string (json's TypeError before)
    from pathlib import Path

    from gymnasium.envs.registration import EnvSpec

    camera = envs.FreeCamera(lookat=(0.0, 0.0, 0.0), distance=1.0, elevation=-80.0)
    env = gym.make("VisCriticReward-v0", env="Reacher-v5", critic="oracle", camera=camera)
    again = gym.make(EnvSpec.from_json(env.spec.to_json()))
    assert again.unwrapped.view.cameras == (camera,)
    env.close(), again.close()
    # numpy values (a lookat read from MuJoCo's data): json's TypeError, an unhashable camera
    held = envs.FreeCamera(lookat=np.zeros(3), distance=np.float32(1.0), elevation=np.int64(-80))
    assert held == camera and hash(held) == hash(camera)
    env = gym.make("VisCriticReward-v0", env="Reacher-v5", critic="oracle", camera=held)
    assert gym.make(EnvSpec.from_json(env.spec.to_json())).unwrapped.view.cameras == (camera,)
    env.close()
    from critic.weights import SHIPPED

    folder = Path(SHIPPED["viscritic-small"])
    env = gym.make("VisCriticReward-v0", env="Reacher-v5", critic=folder)
    assert json.loads(env.spec.to_json())["kwargs"]["critic"] == str(folder)
    env.close()
    with pytest.raises(InvalidOptionError) as err:
        gym.make(
            "VisCriticReward-v0", env="Reacher-v5", critic="oracle", camera={"lookat": [0, 0, 0]}
        )
    assert str(err.value) == (
        "camera={'lookat': [0, 0, 0]} is not a FreeCamera's fields: give lookat and distance, and "
        "azimuth and elevation if you like (degrees), e.g. {'lookat': [0, 0, 0], 'distance': "
        "1.0}, or a camera name"
    )
