"""Results of zero-shot RL runs: what one run records and the summary over seeds (merging the
``results.json`` of earlier runs is ``rl_merge.py``, the report ``rl_report.py``).

Split from ``zero_shot_rl.py`` (which trains) along the line between running an experiment and
reading its results; both it and the tests import this module. ``python
experiments/zero_shot_rl.py`` finds it beside itself (a script's folder is on ``sys.path``); the
tests find it through pytest's ``pythonpath``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rollout.checks import is_int

if TYPE_CHECKING:
    from omegaconf import DictConfig

CONDITIONS = ("critic", "oracle", "ground_truth")
TEST_SEED = 20_000  # the final test's start states: the same for every condition and seed


class ExperimentConfigError(ValueError):
    """The experiment config (or a merge's run dirs) asks for something the script cannot do."""


def expand_seeds(seeds: list) -> list:
    """``seeds`` with each ``...`` between two integers replaced by the integers between them:
    ``[0, "...", 9]`` (``seeds=[0,...,9]`` on the command line) is 0 to 9.

    Raises:
        ExperimentConfigError: a ``...`` not between two increasing integers.
    """
    out = []
    for i, seed in enumerate(seeds):
        if seed != "...":
            out.append(seed)
            continue
        before, after = seeds[i - 1] if i else None, seeds[i + 1] if i + 1 < len(seeds) else None
        if not (is_int(before) and is_int(after) and before < after):
            raise ExperimentConfigError(
                f"seeds={list(seeds)!r}: '...' goes between two increasing integers, e.g. "
                "seeds=[0,...,9] for 0 to 9"
            )
        out.extend(range(before + 1, after))
    return out


@dataclass
class RunResult:
    """One (condition, seed) run: evaluation curve and costs."""

    condition: str
    seed: int
    timesteps: list[int]
    success_rate: list[float]
    true_return: list[float]
    wall_seconds: float
    env_steps: int
    # critic-rewarded conditions: (timestep, critic's final progress, true final progress, true
    # success) per training episode, from envs.callbacks.CriticFidelityCallback
    episodes: list[tuple[int, float, float, bool]] = field(default_factory=list)
    # the final policy on the test start states: true success, true return and the task's true
    # progress at the last step, per episode (runs made before 2026-12-05 have no progress)
    test_successes: list[bool] = field(default_factory=list)
    test_returns: list[float] = field(default_factory=list)
    test_final_progress: list[float] = field(default_factory=list)
    # the task's privileged state (envs.tasks.TaskEnv.privileged_state: named distances, heights,
    # angles) at each test episode's reset and at its last step (none before 2026-12-05, evening)
    test_start_state: list[dict[str, float]] = field(default_factory=list)
    test_final_state: list[dict[str, float]] = field(default_factory=list)
    # where it ran (machine_record): a seed repeats a run only on the same hardware and library
    # versions (SB3's promise), and floats differ between CPUs (none before 2026-12-05, night)
    machine: dict[str, str] = field(default_factory=dict)


# the libraries whose versions a run's numbers depend on
MACHINE_PACKAGES = ("torch", "stable-baselines3", "gymnasium", "mujoco", "numpy", "transformers")


def machine_record() -> dict[str, str]:
    """Where a run ran: the CPU (model, cores, whether it has AVX-512, which changes the float
    kernels torch picks), the GPU if torch sees one, Python and :data:`MACHINE_PACKAGES`.

    The default's seed 0 gave 14 test successes of 100 on one of this project's 2-core machines
    and 12 on another, with the same code and config (2026-12-05): a seed's run repeats only on
    the same hardware and versions, so the report says what each run ran on.
    """
    import os
    import platform
    from importlib import metadata

    record = {"cpu": platform.processor() or platform.machine(), "cores": str(os.cpu_count())}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux
        cpuinfo = ""
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            record["cpu"] = line.split(":", 1)[1].strip()
            break
    if cpuinfo:
        record["avx512"] = "yes" if " avx512f" in cpuinfo else "no"
    try:
        import torch

        if torch.cuda.is_available():
            record["gpu"] = torch.cuda.get_device_name(0)
        # the critic's float rounding differs with the thread count, and grows through training
        record["torch_threads"] = str(torch.get_num_threads())
    except ImportError:
        pass
    record["python"] = platform.python_version()
    for package in MACHINE_PACKAGES:
        try:
            record[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            record[package] = "not installed"
    return record


def fidelity_summary(runs: list[RunResult], success_threshold: float) -> dict[str, Any] | None:
    """How the critic's final progress compares with the truth on the learner's own episodes,
    over the last quarter of each run's training (pooled over seeds): the mean of each, their
    mean absolute difference, and the false-success rate (critic at or above
    ``success_threshold`` on an episode that truly failed). None without episodes."""
    rows = []
    for run in runs:
        if run.episodes:
            last = max(t for t, *_ in run.episodes)
            rows += [e for e in run.episodes if e[0] > 0.75 * last]
    if not rows:
        return None
    _, critic, truth, success = (np.asarray(c, dtype=float) for c in zip(*rows, strict=True))
    failed = success == 0
    return {
        "episodes": len(rows),
        "critic_final_progress": float(critic.mean()),
        "true_final_progress": float(truth.mean()),
        "final_progress_mae": float(np.abs(critic - truth).mean()),
        "false_success_rate": (
            float((critic[failed] >= success_threshold).mean()) if failed.any() else None
        ),
        "true_success_rate": float(success.mean()),
    }


def seed_sd(values: list[float]) -> float | None:
    """The spread of a figure over seeds: the sample standard deviation (the seeds are a sample
    of the learner's runs; the population SD understated it by 18 % over three seeds), None
    (n/a) with fewer than two seeds, where the report read "± 0.00" for one."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def final_test_summary(runs: list[RunResult]) -> dict[str, Any] | None:
    """The final test of a condition's runs: success rate per seed (mean and :func:`seed_sd`), the
    pooled count with its 95 % Wilson interval, the mean true return, and the mean true progress
    at the episodes' end (how near the learners get, beside whether they get there; None where a
    run did not record it). None without a test."""
    from scipy.stats import binomtest

    tested = [r for r in runs if r.test_successes]
    if not tested:
        return None
    per_seed = _test_rates(tested)
    successes = int(sum(sum(r.test_successes) for r in tested))
    episodes = sum(len(r.test_successes) for r in tested)
    interval = binomtest(successes, episodes).proportion_ci(method="wilson")
    return {
        "episodes": episodes,
        "successes": successes,
        "successes_per_seed": [int(sum(r.test_successes)) for r in tested],
        "success_mean": float(np.mean(per_seed)),
        "success_std": seed_sd(per_seed),
        "success_ci95": [float(interval.low), float(interval.high)],
        "true_return_mean": float(np.mean([np.mean(r.test_returns) for r in tested])),
        "final_progress_mean": (
            float(np.mean([np.mean(r.test_final_progress) for r in tested]))
            if all(r.test_final_progress for r in tested)
            else None
        ),
    }


def where_they_end(
    runs: list[RunResult], goal_key: str | None, parts: int = 3
) -> dict[str, Any] | None:
    """Where the final policies end on the test, by where they start.

    Per condition, the median of every privileged quantity at the test episodes' end. Where the
    task names its goal distance (``goal_key``, :attr:`envs.tasks.TaskSpec.goal_distance`), the
    test starts, the same for every condition, are also split once into ``parts`` equal shares by
    it (edges at its quantiles over the test episodes), with each condition's success rate and
    median goal distance at the end per share. Where the learners of a weaker reward miss shows
    here: a reward that teaches little from far starts, or one that brings them near but not onto
    the goal (docs/rl_learner.md, "What else the default could change").

    ``None`` without a tested run; ``{"unrecorded": [<run>, ...]}`` when tested runs did not record
    their states (runs made before 2026-12-05, merged), so the report can say which.
    """
    tested = [r for r in runs if r.test_successes]
    if not tested:
        return None
    unrecorded = [r for r in tested if not (r.test_start_state and r.test_final_state)]
    if unrecorded:
        return {"unrecorded": [f"{r.condition}_seed{r.seed}" for r in unrecorded]}
    states = [s for r in tested for s in (*r.test_start_state, *r.test_final_state)]
    names = [n for n in states[0] if all(n in s for s in states)]  # every run's, in its order
    at_start = {n: [s[n] for r in tested for s in r.test_start_state] for n in names}
    split = goal_key is not None and goal_key in names
    edges: list[float] = []
    if split:
        edges = [float(e) for e in np.quantile(at_start[goal_key], np.arange(1, parts) / parts)]
    # starts all alike (a task whose goal is as far at every reset): shares with equal edges
    alike = split and not all(low < high for low, high in pairwise(edges))
    alike = alike or (split and np.unique(at_start[goal_key]).size < parts)
    if alike:
        split, edges = False, []
    result: dict[str, Any] = {
        "goal_key": goal_key,  # the task's; split_by is None where the states lack it
        "split_by": goal_key if split else None,
        "starts_alike": bool(alike),  # too few distinct starts to split by goal_key
        "edges": edges,
        "start_median": {n: float(np.median(v)) for n, v in at_start.items()},
        "conditions": {},
    }
    for condition in dict.fromkeys(r.condition for r in tested):
        mine = [r for r in tested if r.condition == condition]
        end = {n: np.array([s[n] for r in mine for s in r.test_final_state]) for n in names}
        row: dict[str, Any] = {"final_median": {n: float(np.median(v)) for n, v in end.items()}}
        if split:
            start = np.array([s[goal_key] for r in mine for s in r.test_start_state])
            success = np.array([x for r in mine for x in r.test_successes], dtype=float)
            share = np.digitize(start, edges)  # 0 below the first edge, parts - 1 from the last on
            row["shares"] = [
                {
                    "episodes": int((share == i).sum()),
                    "success": float(success[share == i].mean()) if (share == i).any() else None,
                    "final_median": (
                        float(np.median(end[goal_key][share == i])) if (share == i).any() else None
                    ),
                }
                for i in range(parts)
            ]
        result["conditions"][condition] = row
    return result


def _test_rates(runs: list[RunResult]) -> list[float]:
    """Each tested run's success rate on the final test."""
    return [float(np.mean(r.test_successes)) for r in runs if r.test_successes]


def success_ratio_interval(
    critic_rates: list[float],
    truth_rates: list[float],
    confidence: float = 0.95,
    episodes: tuple[int, int] | None = None,
) -> list[float | None] | None:
    """The interval over seeds of the critic / true-reward success ratio, ``mean(critic) /
    mean(truth)`` of the seeds' test success rates: Fieller's interval for a ratio of two
    independent means (their learners are independent), with Student's t at ``min(n) - 1``
    degrees of freedom. With a handful of seeds the ratio swings far, and the interval says so.

    It replaced a percentile bootstrap over seeds (until 2026-12-07), which covers the true
    ratio far less often than it says at few seeds: drawn from the thirty Reacher seeds of
    docs/rl_learner.md, 77 % of its "95 %" intervals held the thirty's ratio at 3 seeds a side,
    90 % at 10 and 95 % at 30; Fieller's held it 97 % and 96 % at 3 and 10. On those three
    seeds it reads 0.00-1.52 where the bootstrap read 0.22-0.63; on all thirty 0.25-0.43 (the
    bootstrap's 0.26-0.42).

    ``episodes`` (the test episodes on each side, all seeds together) floors each side's
    variance of the mean at the binomial one of its pooled count, ``p(1 - p) / episodes`` with
    the Agresti-Coull ``p = (successes + z^2 / 2) / (episodes + z^2)``: a seed's rate is a count
    of test episodes, and seeds that happen to agree (every critic seed 0 of 100) do not make
    the mean exact. Without it, seeds alike on a side add no spread: a critic whose learners
    never succeed would read ``[0, 0]``. The floor binds only where the seeds spread less than
    their episodes' binomial noise; the figures quoted above are unchanged by it.

    ``None`` with fewer than two seeds on either side, or no true-reward success at all. The
    lower bound is at least 0 (a ratio of rates); the upper bound is ``None`` (unbounded) when
    the true reward's mean is not known to be above 0 at this confidence (``mean^2 <= t^2 *
    var``: the interval is then no bounded range), and the lower bound then the smallest ratio
    not excluded: 0 unless the critic's mean is known to be above 0.
    """
    from scipy import stats

    critic, truth = np.asarray(critic_rates, float), np.asarray(truth_rates, float)
    if len(critic) < 2 or len(truth) < 2 or not truth.any():
        return None
    mc, mt = critic.mean(), truth.mean()
    vc, vt = critic.var(ddof=1) / len(critic), truth.var(ddof=1) / len(truth)
    if episodes is not None:
        z2 = float(stats.norm.ppf(0.5 + confidence / 2)) ** 2

        def binomial(mean: float, n: int) -> float:
            p = (mean * n + z2 / 2) / (n + z2)
            return p * (1 - p) / n

        vc, vt = max(vc, binomial(mc, episodes[0])), max(vt, binomial(mt, episodes[1]))
    t = float(stats.t.ppf(0.5 + confidence / 2, min(len(critic), len(truth)) - 1))
    # the ratios r with (mc - r mt)^2 <= t^2 (vc + r^2 vt): a r^2 - 2 mc mt r + c <= 0
    a, c = mt**2 - t**2 * vt, mc**2 - t**2 * vc
    root = np.sqrt(max(t**2 * (vc * mt**2 + vt * mc**2) - t**4 * vc * vt, 0.0))
    if a > 0:
        return [max(0.0, float((mc * mt - root) / a)), float((mc * mt + root) / a)]
    # no upper bound. Where the critic's mean is known to be above 0 (c > 0) the ratios from 0
    # up to the parabola's positive root are still excluded (it read "0.00", hiding a bound a
    # target is judged by); else every ratio >= 0 is in
    if c <= 0:
        return [0.0, None]
    return [float(c / (2 * mc * mt)) if a == 0 else float((mc * mt - root) / a), None]


def summarise(
    runs: list[RunResult], success_threshold: float = 0.95, goal_key: str | None = None
) -> dict[str, Any]:
    """Per condition: the final test (success and true return), the last curve evaluation (mean
    and std over seeds), costs, and for critic-rewarded conditions the reward's fidelity on the
    learner's episodes. The critic / ground-truth success ratio is the final test's where there is
    one, else the last curve evaluation's; ``where_they_end`` (:func:`where_they_end`, split by
    ``goal_key``, the task's goal distance) where the runs were tested."""
    summary: dict[str, Any] = {}
    by_condition = {
        c: [r for r in runs if r.condition == c] for c in dict.fromkeys(r.condition for r in runs)
    }
    for condition, mine in by_condition.items():
        final_success = [r.success_rate[-1] for r in mine if r.success_rate]
        final_return = [r.true_return[-1] for r in mine if r.true_return]
        summary[condition] = {
            "seeds": [r.seed for r in mine],
            "test": final_test_summary(mine),
            # the last point of the learning curve (eval_episodes per seed)
            "final_success_mean": float(np.mean(final_success)) if final_success else None,
            "final_success_std": seed_sd(final_success),
            "final_true_return_mean": float(np.mean(final_return)) if final_return else None,
            "wall_seconds_mean": float(np.mean([r.wall_seconds for r in mine])),
            "env_steps_per_second": float(
                np.sum([r.env_steps for r in mine]) / np.sum([r.wall_seconds for r in mine])
            ),
        }
        fidelity = fidelity_summary(mine, success_threshold)
        if fidelity is not None:
            summary[condition]["training_episodes"] = fidelity
    ends = where_they_end(runs, goal_key)
    if ends is not None:
        summary["where_they_end"] = ends
    if "critic" in summary and "ground_truth" in summary:
        gt, cr = summary["ground_truth"], summary["critic"]
        tested = gt["test"] is not None and cr["test"] is not None
        key = "success_mean" if tested else "final_success_mean"
        gt_success = gt["test"][key] if tested else gt[key]
        cr_success = cr["test"][key] if tested else cr[key]
        summary["critic_vs_ground_truth"] = {
            # None where either side has no success rate (no test and no curve point)
            "success_ratio": cr_success / gt_success
            if gt_success and cr_success is not None
            else None,
            "success_ratio_from": "test" if tested else "last curve evaluation",
            "success_ratio_ci95": (
                success_ratio_interval(
                    *(_test_rates(by_condition[c]) for c in ("critic", "ground_truth")),
                    episodes=(cr["test"]["episodes"], gt["test"]["episodes"]),
                )
                if tested
                else None
            ),
            "wall_time_ratio": cr["wall_seconds_mean"] / gt["wall_seconds_mean"],
            # the critic's own cost: the oracle's learners train on the critic's schedule, through
            # the same wrapper, with a reward that costs nothing (the true reward's may train at
            # every step, which costs more in itself: 78.1 s a run against the oracle's 72.0 in one run)
            "wall_time_ratio_to_oracle": (
                cr["wall_seconds_mean"] / summary["oracle"]["wall_seconds_mean"]
                if "oracle" in summary
                else None
            ),
        }
    return summary


def goal_distance(cfg: DictConfig) -> str | None:
    """The task's goal distance, which the report splits the test starts by; none for a task
    not registered here (a merge of runs of a task a user's own script registered)."""
    from envs import UnknownTaskError, get_task

    try:
        return get_task(cfg.env.name).goal_distance
    except UnknownTaskError:
        logging.getLogger(__name__).warning(
            "the task %r is not registered here (give imports=[<its module>]); the report leaves "
            "out where the final policies end by start",
            cfg.env.name,
        )
        return None
