"""Zero-shot RL: learn from the critic's reward alone, judged by the task's true success.

Each condition trains the same SB3 algorithm for the same step budget on every seed:

- ``critic``: reward from the configured critic watching the task (``VisCriticVecEnv``);
- ``oracle``: the same reward wrapper and options, with the simulator's privileged progress as the
  critic (what a perfect progress critic would give);
- ``ground_truth``: the simulator's own reward.

Every ``eval_every`` steps the policy is evaluated on the bare task with the true reward and true
success (the learning curves). At the end, the final policy of every run is tested on the same
``test_episodes`` start states (seeded ``TEST_SEED``, a paired comparison): the success rates and the
critic / ground-truth success ratio are read from this test, not from the last curve point. The run
dir (hydra) gets ``results.json``, ``report.md`` and ``learning_curves.png``, and each run's folder
its evaluations and final ``policy.zip``.

    python experiments/zero_shot_rl.py
    python experiments/zero_shot_rl.py env=Lift algo=ppo relabel=false reward.between_queries=hold \\
        seeds=[0,1,2] total_timesteps=50000
    python experiments/zero_shot_rl.py merge=[<run dir>,<run dir>:ground_truth]   # no training

``merge`` reads the ``results.json`` of earlier runs (more seeds, or a condition run on its own)
and writes one report over all their runs, after checking that they are comparable: the same task,
algorithm, step budget and tests, and, for the conditions that use it, the same reward and critic.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

# Beside this script (its folder is on sys.path): what a run records, summaries, merge; report.
from rl_report import write_report
from rl_results import (
    CONDITIONS,
    TEST_SEED,
    ExperimentConfigError,
    RunResult,
    expand_seeds,
    machine_record,
    merge_runs,
    summarise,
)
from run_dir import RunDirError, check_run_dir

from rollout.checks import is_int, list_option


def check_config(cfg: DictConfig) -> None:
    """Fail before anything is built when the config cannot run."""
    for key, example in (("conditions", "[critic,ground_truth]"), ("seeds", "[0,1,2]")):
        if not OmegaConf.is_list(cfg.get(key)):
            raise ExperimentConfigError(
                f"{key}={cfg.get(key)!r} must be a list, e.g. {key}={example}"
            )
    cfg.seeds = expand_seeds(list(cfg.seeds))  # seeds=[0,...,9]: 0 to 9
    for key in ("relabel", "progress_bar", "overwrite"):
        if not isinstance(cfg.get(key, False), bool):
            raise ExperimentConfigError(f"{key}={cfg.get(key)!r} must be true or false")
    unknown = [c for c in cfg.conditions if c not in CONDITIONS]
    if unknown or not cfg.conditions:
        raise ExperimentConfigError(
            f"conditions={list(cfg.conditions)!r} must be a non-empty list drawn from "
            f"{list(CONDITIONS)}"
        )
    for key in ("total_timesteps", "eval_every", "eval_episodes", "n_envs", "workers"):
        value = cfg[key]
        if not is_int(value) or value < 1:
            raise ExperimentConfigError(f"{key}={value!r} must be an integer >= 1")
    test = cfg.get("test_episodes", 0)
    if not is_int(test) or test < 0:
        raise ExperimentConfigError(
            f"test_episodes={test!r} must be an integer >= 0 (0: no final test; success is then "
            "read from the last evaluation of the curve)"
        )
    for key in ("conditions", "seeds"):
        if twice := sorted({str(v) for v in cfg[key] if list(cfg[key]).count(v) > 1}):
            raise ExperimentConfigError(
                f"{key}={list(cfg[key])!r} names {', '.join(twice)} more than once; each "
                f"(condition, seed) run is one folder of the run dir: list each once"
            )
    if not cfg.seeds or not all(is_int(s) and 0 <= s < 2**32 for s in cfg.seeds):
        raise ExperimentConfigError(
            f"seeds={list(cfg.seeds)!r} must be a non-empty list of integers in [0, 2**32), "
            "e.g. seeds=[0,1,2]"
        )
    if test == 0 and cfg.eval_every > cfg.total_timesteps:
        raise ExperimentConfigError(
            f"test_episodes=0 and eval_every={cfg.eval_every} > total_timesteps="
            f"{cfg.total_timesteps} measure no success at all; set test_episodes >= 1 (the "
            "default 100) or eval_every <= total_timesteps"
        )
    from envs.critic_reward import CriticRewardConfig

    reward = CriticRewardConfig.from_options(
        **OmegaConf.to_container(cfg.reward, resolve=True)
    )  # before any critic loads
    per_step = "relabel=false reward.between_queries=hold"  # the fix for the checks below
    if cfg.reward.get("between_queries") == "interpolate" and not cfg.relabel:
        raise ExperimentConfigError(
            "reward.between_queries=interpolate needs the next query's estimate, known only "
            "with relabel=true (rewards written at each episode's end); or set "
            "reward.between_queries=hold"
        )
    if cfg.relabel and cfg.n_envs != 1:
        raise ExperimentConfigError(
            f"relabel=true trains once per episode, which SB3 allows with one env only; "
            f"n_envs={cfg.n_envs}: set n_envs=1, or per-step rewards with {per_step}"
        )
    if cfg.relabel and "train_freq" not in cfg.algo:
        raise ExperimentConfigError(
            f"relabel=true needs an off-policy algorithm with a replay buffer (algo=sac); "
            f"{cfg.algo._target_} has none: give it per-step rewards with {per_step}"
        )
    starts = cfg.algo.get("learning_starts")
    if is_int(starts) and starts >= cfg.total_timesteps:
        logging.getLogger(__name__).warning(
            "algo.learning_starts=%d >= total_timesteps=%d: the learners never update, and every "
            "policy tested is its random start (a smoke test); lower algo.learning_starts or "
            "raise total_timesteps for a result",
            starts,
            cfg.total_timesteps,
        )
    same_schedule = cfg.get("ground_truth_per_episode", False)
    if not isinstance(same_schedule, bool):
        raise ExperimentConfigError(
            f"ground_truth_per_episode={same_schedule!r} must be true or false"
        )
    if same_schedule and ("train_freq" not in cfg.algo or cfg.n_envs != 1):
        wrong = (
            f"{cfg.algo._target_} has no replay buffer (algo=sac has)"
            if "train_freq" not in cfg.algo
            else f"n_envs={cfg.n_envs} (set n_envs=1)"
        )
        raise ExperimentConfigError(
            "ground_truth_per_episode=true trains the ground truth's learner once per episode, "
            f"which needs an off-policy algorithm and one env: {wrong}; or set "
            "ground_truth_per_episode=false"
        )
    horizon = _check_env(cfg)
    per_episode = [c for c in cfg.conditions if training_schedule(cfg, c)]
    if per_episode and cfg.total_timesteps % horizon:
        # SB3 stops a learner that trains once per episode only at an episode's end
        below = cfg.total_timesteps - cfg.total_timesteps % horizon
        raise ExperimentConfigError(
            f"total_timesteps={cfg.total_timesteps} is not a whole number of {horizon}-step "
            f"episodes: {', '.join(per_episode)} (trained once per episode) would run "
            f"{below + horizon} env steps, not the budget the report states; set "
            f"total_timesteps={below or horizon} or {below + horizon}"
        )
    if "critic" in cfg.conditions or "oracle" in cfg.conditions:
        from envs.vec_env import VisCriticVecEnv

        VisCriticVecEnv.check_config(reward, cfg.relabel)
    if "critic" in cfg.conditions:
        _check_critic(cfg)


def _check_env(cfg: DictConfig) -> int:
    """Build the task once (its name, camera, image size, options and horizon checked by the
    task itself) and return the episode length, before any run starts."""
    import envs

    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    _true_reward_env(env_cfg, envs).close()
    horizon = env_cfg["horizon"]
    return envs.get_task(env_cfg["name"]).horizon if horizon is None else int(horizon)


def _check_critic(cfg: DictConfig) -> None:
    """Say now, not after the other conditions' runs have trained, that the critic cannot load:
    a VLM critic's model (and an ensemble's members) must name a shipped critic, a preset, a
    checkpoint folder or a server URL, checked without loading (a 7B critic on a GPU node is
    not loaded a third time, nor held in this process beside the runs'); any other critic is
    built once here (the oracles: nothing to load)."""
    from critic.factory import available_critics, model_source_problem

    critic = OmegaConf.to_container(cfg.critic, resolve=True)
    target = critic.get("_target_")
    if target == "critic.vlm.VLMCritic":
        models = [critic.get("model")]
    elif target == "critic.ensemble.EnsembleCritic":  # members: names, paths, URLs, mappings
        named = [m.get("name") if isinstance(m, dict) else m for m in critic.get("members") or []]
        # a known name is fine ({name: vlm, model: ...} is checked as it loads); the rest are models
        models = [m for m in named if m not in available_critics()]
    else:
        hydra.utils.instantiate(cfg.critic).close()
        return
    for model in models:
        if problem := model_source_problem(model):
            raise ExperimentConfigError(f"critic: {problem}")


def build_train_env(cfg: DictConfig, condition: str, seed: int):
    """The vector env a condition learns in. The stack is built in envs, in one visible place."""
    from stable_baselines3.common.env_util import make_vec_env

    import envs
    from envs.vec_env import make_viscritic_vec_env

    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    if condition in ("critic", "oracle"):
        if condition == "critic":
            critic = hydra.utils.instantiate(cfg.critic)
        else:
            from critic.oracle import OracleCritic

            critic = OracleCritic()
        return make_viscritic_vec_env(
            env_cfg["name"],
            n_envs=cfg.n_envs,
            critic=critic,
            seed=seed,
            camera=env_cfg["camera"],
            image_size=env_cfg["image_size"],
            horizon=env_cfg["horizon"],
            task_kwargs=env_cfg["task_kwargs"],
            relabel=cfg.relabel,
            **OmegaConf.to_container(cfg.reward, resolve=True),
        )

    def make_one():
        return _true_reward_env(env_cfg, envs)

    return make_vec_env(make_one, n_envs=cfg.n_envs, seed=seed)


def _true_reward_env(env_cfg: dict[str, Any], envs_module, task_state: bool = False):
    """The bare task with its own reward, time limit and a Monitor that records true return and
    success: what the ground-truth condition learns in and every evaluation plays. ``task_state``:
    each step's info also carries the task's privileged state now and at the episode's reset (the
    final test reads where each episode began and ended)."""
    import gymnasium as gym
    from stable_baselines3.common.monitor import Monitor

    from envs.tasks import check_horizon, check_task_kwargs
    from envs.wrappers import TaskStateInfo

    spec = envs_module.get_task(env_cfg["name"])
    horizon = check_horizon(spec.horizon if env_cfg["horizon"] is None else env_cfg["horizon"])
    task = envs_module.make_task_env(
        env_cfg["name"],
        camera=env_cfg["camera"],
        image_size=env_cfg["image_size"],
        **check_task_kwargs(env_cfg["task_kwargs"]),
    )
    limited = gym.wrappers.TimeLimit(task, max_episode_steps=horizon)
    return Monitor(TaskStateInfo(limited) if task_state else limited, info_keywords=("is_success",))


def training_schedule(cfg: DictConfig, condition: str) -> dict[str, Any]:
    """The algorithm's options that set when a condition's learner trains.

    Relabelled rewards (VLM-RM style) come at each episode's end, so those learners train once per
    episode, with as many gradient steps as the episode had env steps. The ground truth's learner
    trains at every step as the algorithm's config says, or on the relabelled learners' schedule
    with ``ground_truth_per_episode=true``: then the two differ in the reward alone.
    """
    per_episode = (
        cfg.relabel if condition != "ground_truth" else cfg.get("ground_truth_per_episode")
    )
    return {"train_freq": (1, "episode"), "gradient_steps": -1} if per_episode else {}


def train_one(cfg: DictConfig, condition: str, seed: int, out_dir: Path) -> RunResult:
    """Train one condition on one seed and evaluate it on the true task along the way."""
    from stable_baselines3.common.callbacks import EvalCallback

    import envs

    # The eval env is a plain task env on purpose: it measures the true reward and success.
    # (Set here, not in main: runs may be in worker processes.)
    warnings.filterwarnings("ignore", "Training and eval env are not of the same type")
    train_env = build_train_env(cfg, condition, seed)
    eval_env = _true_reward_env(OmegaConf.to_container(cfg.env, resolve=True), envs)
    eval_env.reset(seed=seed + 10_000)
    log_dir = out_dir / f"{condition}_seed{seed}"
    callback = evaluator = EvalCallback(
        eval_env,
        eval_freq=max(cfg.eval_every // cfg.n_envs, 1),
        n_eval_episodes=cfg.eval_episodes,
        deterministic=True,
        log_path=str(log_dir),
        verbose=0,
    )
    algo_options = training_schedule(cfg, condition)
    fidelity = None
    if condition != "ground_truth":
        from stable_baselines3.common.callbacks import CallbackList

        from envs.vec_env import CriticFidelityCallback, RelabelCallback

        fidelity = CriticFidelityCallback()
        callbacks = [fidelity, callback]
        if cfg.relabel:
            callbacks.insert(0, RelabelCallback())
        callback = CallbackList(callbacks)
    model = hydra.utils.instantiate(cfg.algo)(env=train_env, seed=seed, **algo_options)
    start = time.perf_counter()
    try:
        model.learn(
            total_timesteps=cfg.total_timesteps, callback=callback, progress_bar=cfg.progress_bar
        )
    finally:
        wall = time.perf_counter() - start
        train_env.close()
        eval_env.close()
    # The final policy, to watch or reload (SAC.load); the task it learned is saved with it, so
    # that recording its rollouts on another task with spaces of the same shapes is refused.
    model.viscritic_task = eval_env.unwrapped.task_name
    model.save(log_dir / "policy.zip")
    evaluations = evaluator
    successes = [float(np.mean(s)) for s in evaluations.evaluations_successes]
    return RunResult(
        condition=condition,
        seed=seed,
        timesteps=[int(t) for t in evaluations.evaluations_timesteps],
        success_rate=successes,
        true_return=[float(np.mean(r)) for r in evaluations.evaluations_results],
        wall_seconds=wall,
        env_steps=int(model.num_timesteps),
        episodes=fidelity.episodes if fidelity is not None else [],
        **evaluate_final_policy(cfg, model),
        machine=machine_record(),
    )


def evaluate_final_policy(cfg: DictConfig, model) -> dict[str, list]:
    """The final policy (deterministic) on ``cfg.test_episodes`` episodes of the bare task from the
    start states of ``TEST_SEED``, as :class:`RunResult`'s ``test_*`` fields, one entry per
    episode: true success at the episode's end, true return, the task's true progress at the last
    step (how near it got, where it did not succeed), and the task's privileged state at the reset
    and at the last step (where it began and where it ended)."""
    test: dict[str, list] = {"test_successes": [], "test_returns": [], "test_final_progress": [],
                             "test_start_state": [], "test_final_state": []}  # fmt: skip
    if not cfg.get("test_episodes", 0):
        return test
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    import envs

    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    env = make_vec_env(
        lambda: _true_reward_env(env_cfg, envs, task_state=True),
        n_envs=1,
        seed=TEST_SEED,
    )

    def on_step(local_vars: dict[str, Any], _globals: dict[str, Any]) -> None:
        if local_vars["done"]:  # the last step's info (SB3's EvalCallback reads success so)
            info = local_vars["info"]
            test["test_successes"].append(bool(info.get("is_success", False)))
            test["test_final_progress"].append(float(info["progress"]))
            for key, state in (("test_start_state", "task_start_state"),
                               ("test_final_state", "task_state")):  # fmt: skip
                test[key].append({name: float(v) for name, v in info[state].items()})

    try:
        returns, _ = evaluate_policy(
            model,
            env,
            n_eval_episodes=cfg.test_episodes,
            deterministic=True,
            return_episode_rewards=True,
            callback=on_step,
        )
    finally:
        env.close()
    test["test_returns"] = [float(r) for r in returns]
    return test


def _train_in_worker(cfg: DictConfig, condition: str, seed: int, out_dir: Path) -> RunResult:
    """One run in a worker process: one torch thread, so parallel runs do not oversubscribe."""
    import torch

    torch.set_num_threads(1)
    return train_one(cfg, condition, seed, out_dir)


def train_all(
    cfg: DictConfig, out_dir: Path, finished: list[RunResult] | None = None
) -> list[RunResult]:
    """Every (condition, seed) run, in ``cfg.workers`` processes; results in config order.

    Runs are independent, so with ``workers=2`` on a 2-core machine the experiment takes about half
    the wall time. Each run's ``wall_seconds`` is then measured beside another run, for every
    condition alike, so the critic / ground-truth wall-time ratio compares like with like.

    A run that fails (or Ctrl-C) stops the experiment: runs not yet started are cancelled, and
    those that finished are in ``finished`` (config order) when the error propagates.
    """
    jobs = [(condition, int(seed)) for condition in cfg.conditions for seed in cfg.seeds]
    done: dict[int, RunResult] = {}
    try:
        if cfg.workers == 1:
            for index, (condition, seed) in enumerate(jobs):
                done[index] = train_one(cfg, condition, seed, out_dir)
        else:
            _train_in_pool(cfg, out_dir, jobs, done)
    finally:
        if finished is not None:
            finished[:] = [done[i] for i in sorted(done)]
    return [done[i] for i in sorted(done)]


def _train_in_pool(
    cfg: DictConfig, out_dir: Path, jobs: list[tuple[str, int]], done: dict[int, RunResult]
) -> None:
    """The runs of ``jobs`` in worker processes, each result put in ``done`` under its job's
    index as it finishes; the first failure cancels the runs not yet started and, once the
    running ones end, propagates."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    quiet = OmegaConf.merge(cfg, {"progress_bar": False})  # one bar per run would interleave
    context = multiprocessing.get_context("spawn")  # each run builds its own GL contexts
    bar = tqdm(total=len(jobs), desc="runs", disable=not cfg.progress_bar)
    with ProcessPoolExecutor(min(cfg.workers, len(jobs)), mp_context=context) as pool:
        futures = {pool.submit(_train_in_worker, quiet, c, s, out_dir): i
                   for i, (c, s) in enumerate(jobs)}  # fmt: skip
        try:
            for future in as_completed(futures):
                done[futures[future]] = future.result()
                bar.update()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # the running runs end first
            for future, index in futures.items():
                if future.done() and not future.cancelled() and future.exception() is None:
                    done[index] = future.result()
            raise
        finally:
            bar.close()


def _keep_finished(cfg: DictConfig, finished: list[RunResult], out_dir: Path) -> None:
    """After a failed run: the runs that finished, in results.json and the report (a partial
    experiment, which ``merge`` can join with a rerun of the rest)."""
    planned = len(cfg.conditions) * len(cfg.seeds)
    kept = OmegaConf.merge(
        cfg,
        {"conditions": list(dict.fromkeys(r.condition for r in finished)),
         "seeds": sorted({r.seed for r in finished})},
    )  # fmt: skip
    write_report(kept, finished, summarise(finished, cfg.reward.success_threshold,
                                           _goal_distance(cfg)), out_dir)  # fmt: skip
    logging.getLogger(__name__).warning(
        "%d of the %d runs finished before the experiment stopped; they are kept in %s "
        "(results.json, report.md). Run the others into another hydra.run.dir= and join them "
        "with merge=[%s,<that dir>]",
        len(finished),
        planned,
        out_dir,
        out_dir,
    )


def _goal_distance(cfg: DictConfig) -> str | None:
    """The task's goal distance, which the report splits the test starts by; none for a task
    not registered here (a merge of runs of a task a user's own script registered)."""
    from envs import UnknownTaskError, get_task

    try:
        return get_task(cfg.env.name).goal_distance
    except UnknownTaskError:
        return None


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Set up, train every (condition, seed), write the report; returns the summary. With
    ``cfg.merge``, no training: one report over the runs of earlier run dirs."""
    if cfg.get("merge") is not None:
        dirs = [str(entry) for entry in list_option(cfg.merge)]
        if not dirs:
            raise ExperimentConfigError(
                "merge=[] names no run dir; give merge=[<run dir>,<run dir>:<condition>,...], or "
                "leave merge out (null) to train"
            )
        config, runs, sources = merge_runs(dirs)
        check_run_dir("zero_shot_rl", cfg, out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        summary = summarise(runs, config.reward.success_threshold, _goal_distance(config))
        write_report(config, runs, summary, out_dir, sources)
        return summary
    check_config(cfg)
    check_run_dir("zero_shot_rl", cfg, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    finished: list[RunResult] = []
    try:
        runs = train_all(cfg, out_dir, finished)
    except BaseException:
        if finished:
            _keep_finished(cfg, finished, out_dir)
        raise
    summary = summarise(runs, cfg.reward.success_threshold, _goal_distance(cfg))
    write_report(cfg, runs, summary, out_dir)
    return summary


@hydra.main(config_path="../configs", config_name="zero_shot_rl", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from gymnasium.error import Error as GymError
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import InstantiationException

    from critic.ensemble import EnsembleConfigError
    from critic.factory import UnknownCriticError
    from rollout.imports import MissingExtraError

    logging.getLogger("OpenGL").setLevel(logging.WARNING)  # hydra's root logger is at INFO
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        run(cfg, out_dir)
    except (
        ExperimentConfigError,
        RunDirError,
        GymError,
        UnknownCriticError,
        EnsembleConfigError,
        MissingExtraError,
        InstantiationException,
    ) as exc:
        sys.exit(f"zero_shot_rl: {type(exc).__name__}: {exc}")
    print((out_dir / "report.md").read_text())
    print(f"results: {out_dir}")


if __name__ == "__main__":
    main()
