"""Results of zero-shot RL runs: what one run records, the summary over seeds, and merging the
``results.json`` of earlier runs into one comparison (the report is ``rl_report.py``).

Split from ``zero_shot_rl.py`` (which trains) along the line between running an experiment and
reading its results; both it and the tests import this module. ``python
experiments/zero_shot_rl.py`` finds it beside itself (a script's folder is on ``sys.path``); the
tests find it through pytest's ``pythonpath``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from rollout.checks import is_int, is_number

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


def final_test_summary(runs: list[RunResult]) -> dict[str, Any] | None:
    """The final test of a condition's runs: success rate per seed (mean and std over seeds), the
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
        "success_std": float(np.std(per_seed)),
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
    the goal (docs/zero_shot_rl.md, "What else the default could change").

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
    result: dict[str, Any] = {
        "goal_key": goal_key,  # the task's; split_by is None where the states lack it
        "split_by": goal_key if split else None,
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
    resamples: int = 10_000,
    seed: int = 0,
) -> list[float | None] | None:
    """The interval over seeds of the critic / true-reward success ratio, ``mean(critic) /
    mean(truth)`` of the seeds' test success rates: a percentile bootstrap that resamples each
    condition's seeds on its own (their learners are independent). With a handful of seeds the
    ratio swings far (ten Reacher seeds at 20k steps: 0.50-1.34 about 0.80), and the interval
    says so.

    ``None`` with fewer than two seeds on either side, no true-reward success at all, or so few
    successes that resamples in which both sides fail (0 / 0: no ratio) are more than a tail's
    share (2.5 % at 95 %); rarer ones are left out. The upper bound is ``None`` (unbounded) when
    the resampled true-reward seeds all fail (x / 0) in more than a tail's share.

    Written out rather than scipy's ``bootstrap``, whose quantiles are nan as soon as one resample
    is 0 / 0 (three seeds a side, 0.0, 0.3, 0.4 against 0.0, 0.3, 0.5: 0.14 % of resamples).
    """
    critic, truth = np.asarray(critic_rates, float), np.asarray(truth_rates, float)
    if len(critic) < 2 or len(truth) < 2 or not truth.any():
        return None
    rng = np.random.default_rng(seed)
    drawn_critic = critic[rng.integers(len(critic), size=(resamples, len(critic)))].mean(axis=1)
    drawn_truth = truth[rng.integers(len(truth), size=(resamples, len(truth)))].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):  # x / 0 is inf, 0 / 0 nan
        ratios = drawn_critic / drawn_truth
    tail = (1 - confidence) / 2
    if np.isnan(ratios).mean() > tail:
        return None
    # quantiles without interpolation: between two infinite ratios it would be inf - inf
    low, high = np.quantile(ratios[~np.isnan(ratios)], [tail, 1 - tail], method="inverted_cdf")
    return [float(low), float(high) if np.isfinite(high) else None]


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
            "final_success_std": float(np.std(final_success)) if final_success else None,
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
                    *(_test_rates(by_condition[c]) for c in ("critic", "ground_truth"))
                )
                if tested
                else None
            ),
            "wall_time_ratio": cr["wall_seconds_mean"] / gt["wall_seconds_mean"],
        }
    return summary


# What must agree between merged runs: for every run, and for the runs of the conditions that
# learn from the reward wrapper (the ground truth's learner never sees the critic or its options).
MERGE_SAME = ("env", "algo", "total_timesteps", "n_envs", "eval_every", "eval_episodes",
              "test_episodes")  # fmt: skip
MERGE_SAME_FOR = {"critic": ("critic", "reward", "relabel"), "oracle": ("reward", "relabel"),
                  "ground_truth": ("ground_truth_per_episode",)}  # fmt: skip
MERGE_DEFAULTS = {"ground_truth_per_episode": False}  # what runs made before the option had
# reward options read by one reward mode only: left out of the comparison under the others (and
# missing from runs made before the option existed)
MODE_OPTIONS = {"gamma": "potential", "log_floor": "log"}


def _compared(config: DictConfig, key: str) -> Any:
    """A run's ``key`` as merge compares it: the default where the run predates the option, and
    without a reward option its reward mode does not read (:data:`MODE_OPTIONS`)."""
    value = OmegaConf.to_container(config, resolve=True).get(key, MERGE_DEFAULTS.get(key))
    if key == "reward" and isinstance(value, dict):
        mode = value.get("reward_mode")
        value = {k: v for k, v in value.items() if MODE_OPTIONS.get(k, mode) == mode}
    return value


# What merge reads from a results.json's config, besides the options of MERGE_SAME it compares.
MERGE_READS = ("env", "algo", "total_timesteps", "critic", "reward", "relabel")
# a run's lists with one entry per test episode, beside test_successes
TEST_FIELDS = ("test_returns", "test_final_progress", "test_start_state", "test_final_state")


def _check_results(config: Any, runs: Any) -> None:
    """Raise ``ValueError`` naming what a results.json lacks for merge: its config's
    :data:`MERGE_READS`, a run, or a run's required fields, a known condition and an int seed."""
    from dataclasses import MISSING, fields

    if not isinstance(config, dict) or any(key not in config for key in MERGE_READS):
        have = sorted(config) if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"its config must hold {list(MERGE_READS)}, it has {have}")
    if not isinstance(runs, list) or not runs:
        raise ValueError(f"it holds no runs (runs={runs!r})")
    required = {f.name for f in fields(RunResult)
                if f.default is MISSING and f.default_factory is MISSING}  # fmt: skip
    for run in runs:
        if not isinstance(run, dict) or not required <= run.keys():
            lacks = sorted(required - run.keys()) if isinstance(run, dict) else "everything"
            raise ValueError(f"a run without {lacks}")
        if run["condition"] not in CONDITIONS:
            raise ValueError(f"a run of condition {run['condition']!r}, not one of {CONDITIONS}")
        if not is_int(run["seed"]):
            raise ValueError(f"a run whose seed is {run['seed']!r}, not an int")
        name = f"{run['condition']}_seed{run['seed']}"
        tests = run.get("test_successes") or []
        if not isinstance(tests, list):
            raise ValueError(f"run {name}: test_successes must be a list, it is {tests!r:.80}")
        for key in TEST_FIELDS:
            value = run.get(key)
            # absent, null or empty: a run made before it was recorded (the returns never were)
            missing = value is None or value == []
            if (missing and key == "test_returns" and tests) or not (
                missing or (isinstance(value, list) and len(value) == len(tests))
            ):
                raise ValueError(
                    f"run {name}: {key} must be a list of one entry per test episode "
                    f"({len(tests)}), it is {value!r:.80}"
                )
        machine = run.get("machine") or {}
        if not isinstance(machine, dict) or not all(isinstance(v, str) for v in machine.values()):
            raise ValueError(
                f"run {name}: machine must map names to version strings, it is {machine!r:.80}"
            )
        for key in ("test_start_state", "test_final_state"):
            for state in run.get(key) or []:
                if not isinstance(state, dict) or not all(
                    is_number(v, finite=False) for v in state.values()
                ):
                    raise ValueError(
                        f"run {name}: {key} must hold one mapping of names to numbers per test "
                        f"episode, it holds {state!r:.80}"
                    )


def merge_runs(run_dirs: list[str]) -> tuple[DictConfig, list[RunResult], list[dict[str, Any]]]:
    """The runs of earlier ``results.json`` files as one experiment: its config (the seeds and
    conditions of all of them, the critic's options from the runs that used one), the runs in
    condition and seed order, and where each came from. An entry ``<run dir>:<condition>`` takes
    that condition's runs of the folder only.

    Raises:
        ExperimentConfigError: a folder without a readable ``results.json``, runs that differ in
            what makes them comparable (:data:`MERGE_SAME`, :data:`MERGE_SAME_FOR`), or the same
            condition and seed twice.
    """
    from dataclasses import fields

    known = {f.name for f in fields(RunResult)}
    loaded = []
    for entry in run_dirs:
        head, _, tail = str(entry).rpartition(":")
        folder, only = (Path(head), tail) if head and tail in CONDITIONS else (Path(entry), None)
        path = folder / "results.json"
        try:
            results = json.loads(path.read_text())
            config, runs = results["config"], results["runs"]
            _check_results(config, runs)
            config = OmegaConf.create(config)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ExperimentConfigError(
                f"merge: {path} is not a results.json that zero_shot_rl.py wrote ({exc!r}); give "
                "the run dirs of earlier runs"
            ) from exc
        if only:
            runs = [r for r in runs if r["condition"] == only]
            if not runs:
                raise ExperimentConfigError(f"merge: {folder} has no {only} runs ({entry!r})")
        loaded.append((folder, config, runs))
    holding = {c: [x for x in loaded if any(r["condition"] == c for r in x[2])]
               for c in MERGE_SAME_FOR}  # fmt: skip
    for keys, group in [(MERGE_SAME, loaded)] + [
        (MERGE_SAME_FOR[c], g) for c, g in holding.items()
    ]:
        for key in keys:
            values = [(f, _compared(c, key)) for f, c, _ in group]
            for folder, value in values[1:]:
                if value != values[0][1]:
                    raise ExperimentConfigError(
                        f"merge: {values[0][0]} has {key}={values[0][1]!r} and {folder} has "
                        f"{key}={value!r}; only runs with the same task, algorithm, budget, "
                        "tests and reward options make one comparison"
                    )
    seen: dict[tuple[str, int], Path] = {}
    merged: list[RunResult] = []
    sources = []
    for folder, _, runs in loaded:
        for record in runs:
            key = (record["condition"], int(record["seed"]))
            if key in seen:
                raise ExperimentConfigError(
                    f"merge: {key[0]} seed {key[1]} is in both {seen[key]} and {folder}; "
                    "merge each run once"
                )
            seen[key] = folder
            # null is absent (the field's default), as in runs made before it was recorded
            values = {k: v for k, v in record.items() if k in known and v is not None}
            values["episodes"] = [tuple(e) for e in values.get("episodes", [])]
            merged.append(RunResult(**values))
        ordered = sorted(runs, key=lambda r: (r["condition"], int(r["seed"])))
        sources.append({"run_dir": str(folder),
                        "runs": [f"{r['condition']}_seed{r['seed']}" for r in ordered]})  # fmt: skip
    order = {c: i for i, c in enumerate(CONDITIONS)}
    merged.sort(key=lambda r: (order.get(r.condition, len(order)), r.seed))
    # the reward's and critic's options come from the runs that used them
    user = next((holding[c][0][1] for c in ("critic", "oracle") if holding[c]), loaded[0][1])
    truth = holding["ground_truth"][0][1] if holding["ground_truth"] else loaded[0][1]
    config = OmegaConf.merge(
        loaded[0][1],
        {"ground_truth_per_episode": truth.get("ground_truth_per_episode", False)},
        {"conditions": list(dict.fromkeys(r.condition for r in merged)),
         "seeds": sorted({r.seed for r in merged})},
    )  # fmt: skip
    for key in ("critic", "reward", "relabel"):  # replaced, not merged: no keys of another critic
        OmegaConf.update(config, key, user[key], merge=False)
    return config, merged, sources
