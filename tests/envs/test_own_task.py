"""A task of one's own (docs/tasks.md): the docs' example runs as written, through the wrapper,
the vector env's worker processes and the experiment scripts (``imports=``), and a task that
breaks the TaskEnv contract is refused where it does, naming the method and the value."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs import TaskContractError, TaskSpec
from envs.errors import InvalidOptionError
from envs.tasks import _TASKS, bare_env_id, get_task, import_task_modules, register_task
from envs.vec_stack import make_viscritic_vec_env
from tests.zygote import run_python

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "tasks.md"


def _example_code() -> str:
    """The first python block of docs/tasks.md: the module users save as my_tasks.py."""
    return re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)


@pytest.fixture
def own_tasks(tmp_path, monkeypatch):
    """docs/tasks.md's my_tasks.py in a folder that is the current directory; whatever a test
    registers is unregistered afterwards (the built-in Reacher-v5 put back)."""
    (tmp_path / "my_tasks.py").write_text(_example_code())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = dict(_TASKS)
    yield tmp_path
    sys.modules.pop("my_tasks", None)
    for name in set(_TASKS) - set(before):
        del _TASKS[name]
        gym.registry.pop(bare_env_id(name), None)
    for name, spec in before.items():
        if _TASKS.get(name) is not spec:
            register_task(spec)


def test_the_docs_example_task_is_a_task_like_the_built_in_ones(own_tasks):
    assert import_task_modules(["my_tasks"]) == ["my_tasks"]  # found in the current directory
    spec = get_task("CheetahRun-v1")
    env = gym.make("VisCriticReward-v0", env="CheetahRun-v1", critic="oracle", query_every=5)
    _, info = env.reset(seed=0)
    assert info["progress"] == 0.0 and info["is_success"] is False
    frame = env.unwrapped.render_critic_view()
    assert frame.shape == (56, 112, 3) and frame.dtype == np.uint8
    steps = 0
    truncated = False
    # seeded: unseeded torques (the space draws from the OS's entropy) ran 3 m on a rare draw in
    # one CI run, and the test failed by chance
    env.action_space.seed(0)
    while not truncated:
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        steps += 1
        assert not terminated and 0.0 <= info["progress"] < 1.0  # random torques run nowhere
    assert steps == spec.horizon == 200  # the spec's horizon is the episode's length
    # the oracle's reward is the task's own progress (reward_mode=progress, held between queries)
    assert reward == info["critic_progress"] == info["progress"]
    # the bare env under its gymnasium id, made with the spec's horizon
    bare = gym.make(bare_env_id("CheetahRun-v1"))
    assert bare.spec.max_episode_steps == 200


def test_the_task_reaches_worker_processes(own_tasks):
    """A spawned SubprocVecEnv worker imports envs afresh: the task registered here, or a built-in
    one replaced here, reaches it as this process has it."""
    from stable_baselines3.common.vec_env import SubprocVecEnv

    import_task_modules("my_tasks")
    # built-in tasks replaced in this process only, after the workers' own import: Pusher's
    # instruction, Reacher's view, whose camera's numpy look-at made comparing specs with ==
    # raise in the worker (the instruction, the same, did not stop the comparison before it)
    pusher = get_task("Pusher-v5")
    register_task(TaskSpec(**{**vars(pusher), "instruction": "Push it onto the disc."}))
    camera = envs.FreeCamera(lookat=np.zeros(3), distance=0.75)
    view = envs.CriticView(cameras=(camera,), height=40, width=40)
    register_task(TaskSpec(**{**vars(get_task("Reacher-v5")), "view": view}))
    for name, instruction, height in (
        ("CheetahRun-v1", "Make the cheetah run forward three metres.", 56),
        ("Pusher-v5", "Push it onto the disc.", pusher.view.height),
        ("Reacher-v5", get_task("Reacher-v5").instruction, 40),
    ):
        venv = make_viscritic_vec_env(
            name, n_envs=1, critic="oracle", vec_env_cls=SubprocVecEnv, horizon=3
        )
        try:
            assert venv.venv.get_attr("instruction") == [instruction]
            assert venv.venv.get_attr("view")[0].height == height
            venv.reset()
            venv.step(np.zeros((1, *venv.action_space.shape)))
        finally:
            venv.close()


def _script(folder: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return run_python(
        [sys.executable, str(ROOT / "experiments" / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=folder,
        env=env,
    )


def test_zero_shot_rl_imports_the_task_into_its_worker_processes(own_tasks):
    done = _script(
        own_tasks,
        "zero_shot_rl.py",
        "imports=[my_tasks]",
        "env.name=CheetahRun-v1",
        "env.horizon=20",
        "conditions=[oracle]",
        "seeds=[0,1]",  # two runs: the default two worker processes
        "total_timesteps=40",
        "eval_every=40",
        "eval_episodes=1",
        "test_episodes=1",
        "algo.learning_starts=20",
        "algo.batch_size=8",
        "progress_bar=false",
        f"hydra.run.dir={own_tasks / 'run'}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "# Zero-shot RL on CheetahRun-v1" in done.stdout
    assert (own_tasks / "run" / "oracle_seed1" / "policy.zip").is_file()


def test_a_module_that_is_not_there_or_fails_is_a_message(own_tasks):
    (own_tasks / "broken_tasks.py").write_text("import numpy\n\n\nraise ValueError('oops')\n")
    (own_tasks / "needs_more.py").write_text("import not_installed_here\n")
    with pytest.raises(InvalidOptionError, match=r"imports=\[my_taks\]: no module named 'my_taks'"):
        import_task_modules(["my_taks"])
    with pytest.raises(InvalidOptionError, match=r"broken_tasks.py:4: ValueError: oops"):
        import_task_modules(["broken_tasks"])
    with pytest.raises(
        InvalidOptionError, match=r"importing 'needs_more' failed .*No module named 'not_installed"
    ):
        import_task_modules(["needs_more"])
    with pytest.raises(InvalidOptionError, match="must be a list of module names"):
        import_task_modules(["./my_tasks.py"])
    # the example saved as test.py: Python's own test package comes first on sys.path
    (own_tasks / "test.py").write_text(_example_code())
    with pytest.raises(
        InvalidOptionError, match=r"imports=\[test\] imported the module 'test' of "
    ):
        import_task_modules(["test"])
    # a spec that cannot reach worker processes, where workers > 1 run
    from envs.tasks import specs_for_workers

    import_task_modules("my_tasks")
    spec = get_task("CheetahRun-v1")
    register_task(TaskSpec(**{**vars(spec), "name": "Lambda-v1", "make": lambda s, **k: None}))
    assert specs_for_workers(["CheetahRun-v1"]) == {"CheetahRun-v1": spec}
    with pytest.raises(InvalidOptionError, match=r"'Lambda-v1' cannot be sent to worker processes"):
        specs_for_workers(["Lambda-v1"])
    done = _script(own_tasks, "synthesize.py", "imports=[my_taks]", "env.name=CheetahRun-v1")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "no module named 'my_taks'" in done.stderr
    # the task is known to synthesize: what it lacks is an expert to record with
    done = _script(own_tasks, "synthesize.py", "imports=[my_tasks]", "env.name=CheetahRun-v1")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "task 'CheetahRun-v1' has no scripted expert" in done.stderr


def _task_with(**overrides):
    """The docs' task with some methods replaced, registered as 'Broken-v1'."""
    import my_tasks

    cls = type("BrokenTask", (my_tasks.CheetahRunTask,), overrides)
    register_task(TaskSpec(**{**vars(get_task("CheetahRun-v1")), "name": "Broken-v1", "make": cls}))
    return envs.make_task_env("Broken-v1")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"progress": lambda self: math.nan},
            r"progress\(\) returned nan; it must be a finite",
        ),
        ({"progress": lambda self: 1.7}, r"progress\(\) returned 1.7"),
        ({"progress": lambda self: None}, r"progress\(\) returned None"),
        ({"is_success": lambda self: "no"}, r"is_success\(\) returned 'no' \(str\)"),
        ({"is_success": lambda self: np.array([True])}, r"is_success\(\) returned .*ndarray"),
        (
            {"is_success": lambda self: True, "progress": lambda self: 0.9998},
            r"progress\(\) returned 0.9998 where is_success is true; it must be exactly 1",
        ),
    ],
)
def test_a_task_that_breaks_the_contract_is_stopped_where_it_does(own_tasks, overrides, message):
    import_task_modules("my_tasks")
    env = _task_with(**overrides)
    with pytest.raises(TaskContractError, match=rf"Broken-v1 \(BrokenTask\): {message}"):
        env.reset(seed=0)
    env.close()


def test_a_subclass_that_leaves_out_its_part_is_named(own_tasks):
    import_task_modules("my_tasks")
    import my_tasks

    class NoInit(my_tasks.CheetahRunTask):
        def __init__(self, spec, view, render_mode=None, **kwargs):  # forgets super().__init__
            pass

    class OwnInfo(my_tasks.CheetahRunTask):  # returns the simulator's info alone
        def reset(self, *, seed=None, options=None):
            self._begin_reset(seed)
            obs, info = self._inner.reset(seed=seed)
            self._start_episode()
            return obs, info

    base = vars(get_task("CheetahRun-v1"))
    for name, make in (("NoInit-v1", NoInit), ("Plain-v1", lambda spec, **kw: gym.make("Ant-v5"))):
        register_task(TaskSpec(**{**base, "name": name, "make": make}))
    with pytest.raises(TaskContractError, match=r"never called TaskEnv.__init__; call super"):
        envs.make_task_env("NoInit-v1")
    with pytest.raises(TaskContractError, match=r"built a TimeLimit, not an envs.TaskEnv"):
        envs.make_task_env("Plain-v1")
    # a gymnasium env class as it is, or a make that takes no view=: the contract, not a
    # TypeError from deep in gymnasium's constructor
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

    with pytest.raises(TaskContractError) as err:
        register_task(TaskSpec(**{**base, "name": "Cheetah-v1", "make": HalfCheetahEnv}))
    assert str(err.value) == (
        "task 'Cheetah-v1': make=HalfCheetahEnv is not an envs.TaskEnv subclass; make a TaskEnv "
        "subclass (envs.mujoco_tasks.GymMujocoTask wraps a gymnasium MuJoCo env) and give it as "
        "make="
    )
    assert "Cheetah-v1" not in envs.task_names()

    def no_view(spec, render_mode=None):
        return HalfCheetahEnv(render_mode=render_mode)

    register_task(TaskSpec(**{**base, "name": "NoView-v1", "make": no_view}))
    with pytest.raises(TaskContractError) as err:
        gym.make("VisCriticReward-v0", env="NoView-v1", critic="oracle")
    assert str(err.value).startswith(
        "task 'NoView-v1': make='no_view' does not take view= (TypeError: "
    )
    assert str(err.value).endswith(
        "a task's make= builds its env from (spec, view=, render_mode=, **options): a TaskEnv "
        "subclass (envs.mujoco_tasks.GymMujocoTask wraps a gymnasium MuJoCo env)"
    )
    register_task(TaskSpec(**{**base, "name": "OwnInfo-v1", "make": OwnInfo}))
    with pytest.raises(TaskContractError, match=r"info of its reset\(\) has no 'progress'"):
        gym.make("VisCriticReward-v0", env="OwnInfo-v1", critic="oracle").reset(seed=0)
    venv = make_viscritic_vec_env("OwnInfo-v1", n_envs=1, critic="oracle")
    with pytest.raises(TaskContractError, match=r"info of its reset\(\) has no 'progress'"):
        venv.reset()

    class OwnFields(my_tasks.CheetahRunTask):  # its own progress and success, without task_info
        def step(self, action):
            obs, reward, terminated, truncated, info = self._inner.step(action)
            return obs, reward, terminated, truncated, {**info, "progress": 0.5, "is_success": True}

    register_task(TaskSpec(**{**base, "name": "OwnFields-v1", "make": OwnFields}))
    env = gym.make("VisCriticReward-v0", env="OwnFields-v1", critic="oracle")
    env.reset(seed=0)
    with pytest.raises(
        TaskContractError,
        match=r"the info of its step\(\) has progress 0.5 where is_success is true",
    ):
        env.step(env.action_space.sample())
    bare = envs.TaskEnv(get_task("CheetahRun-v1"), get_task("CheetahRun-v1").view)
    with pytest.raises(TaskContractError, match=r"TaskEnv does not define progress\(\)"):
        bare.progress()


@pytest.mark.parametrize("reward", [math.inf, math.nan, None])
def test_a_task_whose_reward_is_not_a_finite_number_is_stopped(own_tasks, reward):
    """The critic reward adds the task's reward (``env_reward_weight``, 0 by default) and
    reports its return: an infinite one made the critic's reward NaN, and nothing was raised."""
    import_task_modules("my_tasks")
    import my_tasks

    class BadReward(my_tasks.CheetahRunTask):
        def step(self, action):
            obs, _, terminated, truncated, info = super().step(action)
            return obs, reward, terminated, truncated, info

    register_task(TaskSpec(**{**vars(get_task("CheetahRun-v1")), "name": "BadReward-v1",
                              "make": BadReward}))  # fmt: skip
    said = rf"BadReward-v1 \(BadReward\): its step\(\) returned reward {reward}"
    env = gym.make("VisCriticReward-v0", env="BadReward-v1", critic="oracle")
    env.reset(seed=0)
    with pytest.raises(TaskContractError, match=said):
        env.step(env.action_space.sample())
    venv = make_viscritic_vec_env("BadReward-v1", n_envs=1, critic="oracle", seed=0)
    venv.reset()
    with pytest.raises(TaskContractError, match=said):
        venv.step(np.zeros((1, *venv.action_space.shape)))
    env.close()
    venv.close()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": 5}, "task name 5 must be a non-empty string"),
        ({"name": ""}, "task name '' must be a non-empty string"),
        ({"instruction": ""}, "instruction='' must be the task in words"),
        ({"instruction": None}, "instruction=None must be the task in words"),
        ({"instruction": "Run <|video_pad|> fast."}, "the prompt's own syntax"),
        ({"family": "gazebo"}, r"family='gazebo' must be one of \['mujoco', 'robosuite'\]"),
        ({"make": 42}, "make=42 must build the env"),
        ({"name": "Reacher"}, "would take the gymnasium id 'VisCritic/Reacher-v0'"),
    ],
)
def test_register_task_checks_the_spec(change, message):
    if change.get("name") == "Reacher":  # 'Reacher' and a task named 'Reacher-v0' share an id
        register_task(TaskSpec(**{**vars(get_task("Reacher-v5")), "name": "Reacher-v0"}))
    try:
        with pytest.raises(InvalidOptionError, match=message):
            register_task(TaskSpec(**{**vars(get_task("Reacher-v5")), **change}))
    finally:
        _TASKS.pop("Reacher-v0", None)
        gym.registry.pop("VisCritic/Reacher-v0", None)
    assert "Reacher" not in _TASKS


def test_an_expert_of_ones_own_for_a_built_in_task_is_kept():
    """Registered before the built-in experts load (they load lazily), it stays the expert."""
    code = (
        "import envs\n"
        "from envs.experts import Expert, expert_tasks, make_expert, register_expert\n"
        "@register_expert('Reacher-v5')\n"
        "class Mine(Expert):\n"
        "    def _reset(self, env): pass\n"
        "    def _act(self, env): return None\n"
        "assert 'Pusher-v5' in expert_tasks()\n"  # the built-in ones load
        "print(type(make_expert('Reacher-v5')).__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "Mine"


def test_synthesize_records_the_task_with_an_expert_of_ones_own(own_tasks):
    """imports= brings the task and its expert; an expert episode that misses counts against the
    expert's success in the summary (it was filed under the failure 'unknown', leaving the
    expert's rate at 100 % of its successes)."""
    (own_tasks / "my_expert.py").write_text(
        "import numpy as np\n"
        "import my_tasks  # noqa: F401\n"
        "from envs.experts import Expert, register_expert\n\n\n"
        "@register_expert('CheetahRun-v1')\n"
        "class Still(Expert):\n"
        "    failures = ('stall',)\n\n"
        "    def _reset(self, env):\n"
        "        pass\n\n"
        "    def _act(self, env):\n"
        "        return np.zeros(6)\n"
    )
    done = _script(
        own_tasks,
        "synthesize.py",
        "imports=[my_expert]",
        "env.name=CheetahRun-v1",
        "episodes=2",
        "failure_fraction=0",
        "workers=1",
        "env.horizon=10",
        "env.image_size=[28,56]",
        "progress_bar=false",
        f"out={own_tasks / 'data'}",
        f"hydra.run.dir={own_tasks / 'run'}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    total = json.loads((own_tasks / "run" / "summary.json").read_text())["dataset_total"]
    assert total["expert"] == {"episodes": 2, "success_rate": 0.0}
    assert total["failures"] == {}
    assert "expert success: 0% of 2" in done.stdout
