"""Simulator, rendering and wrapper throughput, as ratios measured side by side in one run.

For each task it measures env steps per second (random actions, resets included):

- ``raw``: the bare task env (``TimeLimit``), no rendering;
- ``camera``: the bare task env rendering the critic's view every step;
- ``oracle k=1 / k=5``: ``VisCriticReward`` with the oracle critic (no frames needed);
- ``oracle+frames k=1 / k=5``: the same, rendering and passing frames as a VLM critic needs;
- ``baseline camera``: the simulator's own default camera set-up: robosuite with
  ``use_camera_obs=True`` (agentview, 256², visual meshes, hard resets), or gymnasium MuJoCo with
  ``render_mode="rgb_array"`` (480², its default) rendering every step.

Configurations are interleaved over ``rounds`` and the median is kept, so the machine's load
drifts through all of them alike. Writes ``bench.json`` and ``bench.md`` to the run dir.

    python experiments/bench.py
    python experiments/bench.py tasks=[Lift] steps=300 rounds=3
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

from rollout.checks import is_int, list_option

MODES = ("raw", "camera", "baseline camera", "oracle k=", "oracle+frames k=")


def _loop(
    env, render: Callable[[], Any] | None
) -> tuple[Callable[[int], float], Callable[[], None]]:
    """A timed stepping loop over ``env`` (gymnasium API); returns (run(n) -> seconds, close)."""
    rng = np.random.default_rng(0)
    space = env.action_space
    env.reset(seed=0)

    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            action = rng.uniform(space.low, space.high).astype(space.dtype)
            _, _, terminated, truncated, _ = env.step(action)
            if render is not None:
                render()
            if terminated or truncated:
                env.reset()
        return time.perf_counter() - start

    return run, env.close


def _robosuite_default_loop(task: str, horizon: int):
    """robosuite's default offscreen camera set-up, behind a minimal gymnasium-style step."""
    from envs.robosuite_tasks import RobosuiteTask, _import_robosuite
    from envs.tasks import get_task

    robosuite = _import_robosuite(task)
    cls = get_task(task).make
    assert issubclass(cls, RobosuiteTask)
    env = robosuite.make(
        cls.robosuite_env,
        robots="Panda",
        has_renderer=False,
        has_offscreen_renderer=True,
        use_camera_obs=True,
        camera_names="agentview",
        horizon=horizon,
        **cls.robosuite_defaults,
    )
    low, high = env.action_spec
    rng = np.random.default_rng(0)
    env.reset()

    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            _, _, done, _ = env.step(rng.uniform(low, high))
            if done:
                env.reset()
        return time.perf_counter() - start

    return run, env.close


def _gymnasium_default_loop(task: str):
    import gymnasium as gym

    import envs

    # gymnasium's default 480 x 480 renderer; the task's horizon, as the other modes reset at
    # (Pusher's registered limit is 100 steps, its task's 150)
    env = gym.make(task, render_mode="rgb_array", max_episode_steps=envs.get_task(task).horizon)
    return _loop(env, env.render)


def build_loops(task: str, modes: list[str]) -> dict[str, tuple]:
    """The stepping loops to compare for one task."""
    import gymnasium as gym

    import envs

    spec = envs.get_task(task)
    loops: dict[str, tuple] = {}
    for mode in modes:
        if mode == "raw":
            loops[mode] = _loop(
                gym.wrappers.TimeLimit(envs.make_task_env(task), spec.horizon), None
            )
        elif mode == "camera":
            env = gym.wrappers.TimeLimit(envs.make_task_env(task), spec.horizon)
            loops[mode] = _loop(env, env.unwrapped.render_critic_view)
        elif mode.startswith("oracle"):
            frames = mode.startswith("oracle+frames")
            k = int(mode.rsplit("k=", 1)[1])
            critic = {"name": "oracle", "needs_frames": frames}
            loops[mode] = _loop(envs.make_viscritic_env(task, critic, query_every=k), None)
        elif mode == "baseline camera":
            loops[mode] = (
                _robosuite_default_loop(task, spec.horizon)
                if spec.family == "robosuite"
                else _gymnasium_default_loop(task)
            )
        else:
            raise ValueError(f"unknown bench mode {mode!r}")
    return loops


def bench_task(task: str, modes: list[str], steps: int, rounds: int) -> dict[str, float]:
    """Median steps/s of each mode over interleaved rounds."""
    loops = build_loops(task, modes)
    for run, _ in loops.values():
        run(min(20, steps))  # warm-up: GL contexts, caches, first resets
    rates: dict[str, list[float]] = {mode: [] for mode in loops}
    for _ in range(rounds):
        for mode, (run, _) in loops.items():
            rates[mode].append(steps / run(steps))
    for _, close in loops.values():
        close()
    return {mode: float(np.median(r)) for mode, r in rates.items()}


def write_report(results: dict[str, dict[str, float]], cfg: DictConfig, out_dir: Path) -> str:
    modes = list(cfg.modes)
    from rl_results import machine_record

    machine = machine_record()
    # the same MUJOCO_GL=egl renders on a GPU or in software (a GPU node without EGL's vendor
    # driver falls back to OSMesa): the camera columns depend on it
    from envs.gl import gl_renderer

    machine["gl"] = os.environ.get("MUJOCO_GL") or "none"
    machine["gl_renderer"] = gl_renderer() or "none"
    lines = [
        f"Env steps/s (median of {cfg.rounds} interleaved rounds of {cfg.steps} steps; "
        "ratios are what to compare across machines), on "
        f"{machine['cpu']}, {machine['cores']} cores, torch threads "
        f"{machine.get('torch_threads', '?')}, OpenGL {machine['gl']} "
        f"({machine['gl_renderer']}) (bench.json's `machine`).",
        "",
        "| task | " + " | ".join(modes) + " | camera ÷ baseline camera | oracle k=1 ÷ raw |",
        "|---|" + "---|" * (len(modes) + 2),
    ]
    for task, rate in results.items():
        cam_ratio = rate.get("camera", np.nan) / rate.get("baseline camera", np.nan)
        oracle_ratio = rate.get("oracle k=1", np.nan) / rate.get("raw", np.nan)
        lines.append(
            f"| {task} | "
            + " | ".join(f"{rate[m]:.0f}" for m in modes)
            + f" | {cam_ratio:.1f}× | {oracle_ratio:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    (out_dir / "bench.md").write_text(text)
    (out_dir / "bench.json").write_text(json.dumps({**results, "machine": machine}, indent=2))
    return text


def _valid_mode(mode: str) -> bool:
    if mode in MODES[:3]:
        return True
    # exactly as the loops read it (' oracle k=1' passed here and failed there)
    matched = re.fullmatch(r"(oracle|oracle\+frames) k=(\d+)", str(mode))
    return matched is not None and int(matched[2]) >= 1


class BenchConfigError(ValueError):
    """The bench config cannot run (found before any env is built)."""


def check_config(cfg: DictConfig) -> None:
    """Fail before any env is built when the config cannot run."""
    import envs

    tasks, modes = list_option(cfg.tasks), list_option(cfg.modes)
    if not tasks:
        raise BenchConfigError("tasks is empty; give at least one, e.g. tasks=[Reacher-v5]")
    unknown = [t for t in tasks if t not in envs.task_names()]
    if unknown:
        raise BenchConfigError(f"unknown tasks {unknown}; registered tasks: {envs.task_names()}")
    if not modes:
        raise BenchConfigError("modes is empty; give at least one, e.g. modes=[raw,camera]")
    twice = sorted({m for m in modes if modes.count(m) > 1})
    if twice or len(set(tasks)) < len(tasks):  # one column or row of the table, twice
        again = twice or sorted({t for t in tasks if tasks.count(t) > 1})
        raise BenchConfigError(
            f"{'modes' if twice else 'tasks'} name {again} more than once; give each once"
        )
    bad_modes = [m for m in modes if not _valid_mode(m)]
    if bad_modes:
        raise BenchConfigError(
            f"unknown modes {bad_modes}; use raw, camera, 'baseline camera', "
            "'oracle k=<int>' or 'oracle+frames k=<int>'"
        )
    for key, meaning in (("steps", "env steps per mode per round"),
                         ("rounds", "interleaved rounds, the median reported")):  # fmt: skip
        value = cfg[key]
        if not is_int(value) or value < 1:
            raise BenchConfigError(f"{key}={value!r} must be an integer >= 1 ({meaning})")


@hydra.main(config_path="../configs", config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from tqdm import tqdm

    from envs import InvalidOptionError, UnknownTaskError
    from rollout.imports import MissingExtraError

    logging.getLogger("OpenGL").setLevel(logging.WARNING)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        check_config(cfg)
        # one task or mode given bare is a list of one
        cfg.tasks, cfg.modes = list_option(cfg.tasks), list_option(cfg.modes)
        results = {}
        for task in tqdm(list(cfg.tasks), desc="bench", unit="task"):
            results[task] = bench_task(task, list(cfg.modes), cfg.steps, cfg.rounds)
    except (BenchConfigError, UnknownTaskError, InvalidOptionError, MissingExtraError) as exc:
        sys.exit(f"bench: {type(exc).__name__}: {exc}")
    print(write_report(results, cfg, out_dir))
    print(f"results: {out_dir}")


if __name__ == "__main__":
    main()
