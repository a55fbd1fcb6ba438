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
    python experiments/zero_shot_rl.py <the same options> hydra.run.dir=<a stopped run's dir> \
        resume=true   # trains only the runs it did not finish

``merge`` reads the ``results.json`` of earlier runs (more seeds, or a condition run on its own)
and writes one report over all their runs, after checking that they are comparable: the same task,
algorithm, step budget and tests, and, for the conditions that use it, the same reward and critic.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf
from rl_merge import RUN_RECORD, finished_runs, ignored_by_merge, import_merged_tasks, merge_runs

# Beside this script (its folder is on sys.path): what a run records, summaries, merge; report;
# the config check and the envs each condition learns in.
from rl_report import keep_finished, resume_advice, write_report
from rl_results import (
    TEST_SEED,
    ExperimentConfigError,
    RunResult,
    goal_distance,
    machine_record,
    summarise,
)
from rl_setup import (
    build_train_env,
    check_config,
    training_schedule,
    true_reward_env,
    true_reward_vec_env,
)
from run_dir import (
    ASIDE,
    RunDirError,
    discard_outputs,
    put_back_record,
    restore_outputs,
    set_aside_outputs,
)

from rollout.checks import list_option
from rollout.files import write_atomic, written_whole


class RunCancelled(Exception):
    """A run stopped because the experiment had (a worker's run, handed to it before the stop)."""


def train_one(
    cfg: DictConfig, condition: str, seed: int, out_dir: Path, stop: Any = None
) -> RunResult:
    """Train one condition on one seed and evaluate it on the true task along the way. A
    ``stop`` event (a worker's) that is set ends the run with :class:`RunCancelled` at the next
    step: a worker told of a SIGTERM by the main process alone would otherwise train on for
    minutes after the experiment stopped."""
    from stable_baselines3.common.callbacks import CallbackList, EvalCallback

    import envs

    # The eval env is a plain task env on purpose: it measures the true reward and success.
    # (Set here, not in main: runs may be in worker processes.)
    warnings.filterwarnings("ignore", "Training and eval env are not of the same type")
    train_env = build_train_env(cfg, condition, seed)
    eval_env = true_reward_env(OmegaConf.to_container(cfg.env, resolve=True), envs)
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
        from envs.callbacks import CriticFidelityCallback, RelabelCallback

        fidelity = CriticFidelityCallback()
        callbacks = [fidelity, callback]
        if cfg.relabel:
            callbacks.insert(0, RelabelCallback())
        callback = CallbackList(callbacks)
    if stop is not None:
        callback = CallbackList([_stop_callback(stop), callback])
    model = hydra.utils.instantiate(cfg.algo)(env=train_env, seed=seed, **algo_options)
    if model.tensorboard_log is None:  # SB3's own logger made an empty /tmp/SB3-<time> per run
        from stable_baselines3.common.logger import configure

        model.set_logger(configure(str(log_dir), ["stdout"] if model.verbose >= 1 else []))
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
    with written_whole(log_dir / "policy.zip") as partial:  # a full disk left it cut short
        model.save(partial)
    evaluations = evaluator
    successes = [float(np.mean(s)) for s in evaluations.evaluations_successes]
    result = RunResult(
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
    # The run's record beside its policy, as it finishes: the experiment's results.json is
    # written by the main process at the end, and a main process killed (SIGKILL, a node lost)
    # took every finished run's record with it; merge= reads these where results.json is missing
    try:
        record = {"config": OmegaConf.to_container(cfg, resolve=True), "run": result.__dict__}
        write_atomic(log_dir / RUN_RECORD, json.dumps(record))
    except Exception as exc:  # the run is whole without it: results.json holds it at the end
        logging.getLogger(__name__).warning(
            "%s was not written (%s); the run's result goes into results.json at the end",
            log_dir / RUN_RECORD,
            exc,
        )
    return result


def _stop_callback(event: Any):
    """An SB3 callback that ends learning with :class:`RunCancelled` once ``event`` is set."""
    from stable_baselines3.common.callbacks import BaseCallback

    class StopOn(BaseCallback):
        def _on_step(self) -> bool:
            if event.is_set():
                raise RunCancelled("the experiment stopped")
            return True

    return StopOn()


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
    from stable_baselines3.common.evaluation import evaluate_policy

    import envs

    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    env = true_reward_vec_env(env_cfg, envs, n_envs=1, seed=TEST_SEED, task_state=True)

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


# In a worker process: the experiment's events, set once it stops (no run starts after it) and
# once it is interrupted (the running runs stop at their next step too).
_stop: Any = None
_interrupt: Any = None


def _train_in_worker(cfg: DictConfig, condition: str, seed: int, out_dir: Path) -> RunResult:
    """One run in a worker process, at ``torch_threads`` (1: parallel runs do not oversubscribe). A
    Ctrl-C stops the run (its exception goes back to the main process, which says what is kept);
    a worker waiting for its next run ignores it, where it printed a traceback. A run handed to
    the worker after the experiment stopped (the pool queues one past those running) does not
    start, and one running stops at its next step (:class:`RunCancelled`)."""
    import signal

    import torch

    if _stop is not None and _stop.is_set():
        raise RunCancelled("the experiment stopped before this run started")
    torch.set_num_threads(cfg.torch_threads)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return train_one(cfg, condition, seed, out_dir, stop=_interrupt)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _start_worker(specs: dict[str, Any], stop: Any = None, interrupt: Any = None) -> None:
    """A worker process's initializer: idle, it leaves Ctrl-C to the main process, it ends
    with the main process (a killed one left its workers waiting for ever), it keeps the
    experiment's stop events, and it registers the main process's spec of the run's task: a
    spawned worker imports ``envs`` afresh, without a task registered after import
    (``imports=``, ``envs.register_task``) or with the built-in one where that was replaced."""
    global _stop, _interrupt
    from envs.tasks import register_task
    from rollout.workers import end_with_parent, hear_ctrl_c_as_ignored

    end_with_parent()
    hear_ctrl_c_as_ignored()
    _stop, _interrupt = stop, interrupt
    for spec in specs.values():
        register_task(spec)


def train_all(
    cfg: DictConfig,
    out_dir: Path,
    finished: list[RunResult] | None = None,
    earlier: list[RunResult] = (),
) -> list[RunResult]:
    """Every (condition, seed) run, in ``cfg.workers`` processes; results in config order.
    ``earlier`` runs (``resume=true``: those a stopped run finished) are not trained again.

    Runs are independent, so with ``workers=2`` on a 2-core machine the experiment takes about half
    the wall time. Each run's ``wall_seconds`` is then measured beside another run, for every
    condition alike, so the critic / ground-truth wall-time ratio compares like with like.

    A run that fails (or Ctrl-C) stops the experiment: runs not yet started are cancelled, and
    those that finished are in ``finished`` (config order) when the error propagates.
    """
    jobs = [(condition, int(seed)) for condition in cfg.conditions for seed in cfg.seeds]
    had = {(r.condition, r.seed): r for r in earlier}
    done: dict[int, RunResult] = {i: had[job] for i, job in enumerate(jobs) if job in had}
    todo = {i: job for i, job in enumerate(jobs) if job not in had}
    try:
        if cfg.workers == 1:
            with _torch_threads(cfg.torch_threads):  # as in a worker: the same numbers
                for index, (condition, seed) in todo.items():
                    done[index] = train_one(cfg, condition, seed, out_dir)
        elif todo:
            _train_in_pool(cfg, out_dir, todo, done)
    finally:
        if finished is not None:
            finished[:] = [done[i] for i in sorted(done)]
    return [done[i] for i in sorted(done)]


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """torch at ``count`` threads in this process for the block: runs in the main process
    (``workers=1``) ran at torch's default (2 here), the workers' at 1, and the critic's float
    rounding, fed to the learner, made the same seed's results differ between ``workers=1`` and
    ``workers=2`` (1 against 0 test successes of 20 at 2,500 steps)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train_in_pool(
    cfg: DictConfig, out_dir: Path, jobs: dict[int, tuple[str, int]], done: dict[int, RunResult]
) -> None:
    """The runs of ``jobs`` (index → condition, seed) in worker processes, each result put in
    ``done`` under its index as it finishes; the first failure cancels the runs not yet started
    and, once the running ones end, propagates."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    from envs.tasks import specs_for_workers
    from rollout.workers import workers_start_deaf_to_ctrl_c

    quiet = OmegaConf.merge(cfg, {"progress_bar": False})  # one bar per run would interleave
    context = multiprocessing.get_context("spawn")  # each run builds its own GL contexts
    bar = tqdm(total=len(jobs), desc="runs", disable=not cfg.progress_bar)
    specs = specs_for_workers([cfg.env.name])
    stop, interrupt = context.Event(), context.Event()
    with ProcessPoolExecutor(
        min(cfg.workers, len(jobs)),
        mp_context=context,
        initializer=_start_worker,
        initargs=(specs, stop, interrupt),
    ) as pool:
        futures = {}
        try:  # a SIGTERM during the submits is an interrupt too
            with workers_start_deaf_to_ctrl_c():  # the workers start at the first submits
                for i, (c, s) in jobs.items():
                    futures[pool.submit(_train_in_worker, quiet, c, s, out_dir)] = i
            for future in as_completed(futures):
                done[futures[future]] = future.result()
                bar.update()
        except BaseException as exc:
            # the runs queued in the pool do not start; after a failure the running ones finish
            # (kept), after an interrupt (Ctrl-C, SIGTERM) they stop at their next step
            stop.set()
            if isinstance(exc, KeyboardInterrupt):
                interrupt.set()
            pool.shutdown(wait=True, cancel_futures=True)
            for future, index in futures.items():
                if future.done() and not future.cancelled() and future.exception() is None:
                    done[index] = future.result()
            raise
        finally:
            bar.close()


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Set up, train every (condition, seed), write the report; returns the summary. With
    ``cfg.merge``, no training: one report over the runs of earlier run dirs."""
    from envs.tasks import import_task_modules

    import_task_modules(cfg.get("imports"))  # one's own tasks, before any is looked up
    if cfg.get("merge") is not None:
        if cfg.get("resume") is True:  # the run-dir guard refuses it first, under hydra
            raise ExperimentConfigError(
                "resume=true continues a stopped training run; merge= trains nothing: drop one"
            )
        dirs = [str(entry) for entry in list_option(cfg.merge)]
        if not dirs:
            raise ExperimentConfigError(
                "merge=[] names no run dir; give merge=[<run dir>,<run dir>:<condition>,...], or "
                "leave merge out (null) to train"
            )
        config, runs, sources = merge_runs(dirs)
        import_merged_tasks(config)
        if ignored := ignored_by_merge():
            logging.getLogger(__name__).warning(
                "merge= reports the runs as their own configs ran them: %s ignored",
                ", ".join(ignored),
            )
        out_dir.mkdir(parents=True, exist_ok=True)  # checked by run_dir.RunDirGuard (hydra)
        aside = (
            set_aside_outputs("zero_shot_rl", cfg, out_dir)
            if cfg.get("overwrite") is True
            else None
        )
        try:
            summary = summarise(runs, config.reward.success_threshold, goal_distance(config))
            write_report(config, runs, summary, out_dir, sources)
        except BaseException:
            restore_outputs("zero_shot_rl", cfg, out_dir, aside)
            raise
        discard_outputs(aside)
        return summary
    check_config(cfg)
    # checked by run_dir.RunDirGuard (hydra) before hydra wrote this run's record; a check here
    # would put back the earlier run's record the guard set aside for overwrite=true
    out_dir.mkdir(parents=True, exist_ok=True)
    # overwrite=true: the earlier run's results go aside, and come back if this run stops before
    # a run of its own finished (they stayed beside this run's record, which named other options)
    aside = (
        set_aside_outputs("zero_shot_rl", cfg, out_dir) if cfg.get("overwrite") is True else None
    )
    # resume=true: the runs a stopped experiment in this dir finished are not trained again.
    # Refused (other options), the stopped run's .hydra/ record is put back (main's finally);
    # accepted, this run's record replaces it
    earlier = finished_runs(cfg, out_dir) if cfg.get("resume") is True else []
    if cfg.get("resume") is True:
        discard_outputs(out_dir / ASIDE)
    if cfg.get("resume") is True and not earlier:
        # the default run dir is a new, dated one: the stopped run's dir must be given
        logging.getLogger(__name__).warning(
            "resume=true: no run of this experiment finished in %s before, so every run trains; "
            "to continue a stopped experiment, give its folder: hydra.run.dir=<its dir> "
            "resume=true",
            out_dir,
        )
    if earlier:
        planned = len(cfg.conditions) * len(cfg.seeds)
        logging.getLogger(__name__).info(
            "resume=true: %d of the %d runs finished before (%s); %s",
            len(earlier),
            planned,
            ", ".join(f"{r.condition}_seed{r.seed}" for r in earlier),
            "training the others" if len(earlier) < planned else "none is left to train",
        )
    finished: list[RunResult] = []
    try:
        runs = train_all(cfg, out_dir, finished, earlier)
        # inside the try: a Ctrl-C while the report is made lost every run
        summary = summarise(runs, cfg.reward.success_threshold, goal_distance(cfg))
        write_report(cfg, runs, summary, out_dir)
    except BaseException:
        if finished:
            # written before the earlier run goes: where this write fails too (a full disk),
            # both stay (the earlier in .overwritten/, this run's policies in place)
            keep_finished(cfg, finished, out_dir)
            discard_outputs(aside)
        else:
            restore_outputs("zero_shot_rl", cfg, out_dir, aside)
        raise
    discard_outputs(aside)
    return summary


@hydra.main(config_path="../configs", config_name="zero_shot_rl", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from concurrent.futures.process import BrokenProcessPool

    from gymnasium.error import Error as GymError
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import InstantiationException

    from critic.ensemble import EnsembleConfigError
    from critic.factory import UnknownCriticError
    from rollout.imports import MissingExtraError
    from rollout.workers import interrupt_exit, stop_on_sigterm

    logging.getLogger("OpenGL").setLevel(logging.WARNING)  # hydra's root logger is at INFO
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    stop_on_sigterm()  # a scheduler's pre-emption keeps the runs that finished, as Ctrl-C does
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
        OSError,  # a full disk or a folder not writable: results.json is written whole or not
    ) as exc:
        sys.exit(f"zero_shot_rl: {type(exc).__name__}: {exc}")
    except BrokenProcessPool:  # the runs that finished are kept (logged above, when any)
        sys.exit(f"zero_shot_rl: a worker process died (killed, out of memory, or failed to start: "
                 f"see above); the runs that finished, if any, are in {out_dir} (workers=1 needs "
                 "less memory)")  # fmt: skip
    except KeyboardInterrupt as exc:  # the runs that finished are kept (logged above, when any)
        stopped, code = interrupt_exit(exc)
        print(f"zero_shot_rl: interrupted ({stopped}); the runs that finished, if any, are in "
              f"{out_dir}{resume_advice(cfg, out_dir)}", file=sys.stderr)  # fmt: skip
        sys.exit(code)
    finally:  # a run stopped before it set the earlier run aside: its record back in place
        put_back_record(out_dir)
    print((out_dir / "report.md").read_text())
    print(f"results: {out_dir}")


if __name__ == "__main__":
    main()
