"""Merging the ``results.json`` of earlier zero-shot RL runs into one experiment
(``zero_shot_rl.py merge=[...]``): what a results.json must hold to be read, what must agree
between runs to make one comparison, and the merged config, runs and sources.

Split from ``rl_results.py`` (what a run records and the summaries over runs) along the line
between summarising runs and reading them back from disk.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rl_results import CONDITIONS, ExperimentConfigError, RunResult

from rollout.checks import is_int, is_number, list_option

# What must agree between merged runs: for every run, and for the runs of the conditions that
# learn from the reward wrapper (the ground truth's learner never sees the critic or its options).
MERGE_SAME = ("env", "algo", "total_timesteps", "n_envs", "eval_every", "eval_episodes",
              "test_episodes")  # fmt: skip
MERGE_SAME_FOR = {"critic": ("critic", "reward", "relabel"), "oracle": ("reward", "relabel"),
                  "ground_truth": ("ground_truth_per_episode",)}  # fmt: skip
MERGE_DEFAULTS = {"ground_truth_per_episode": False}  # what runs made before the option had
REWARD_DEFAULTS = {"achieved_weight": 0.0}  # ... and reward options (added 2026-12-04)
# reward options read by one reward mode only: left out of the comparison under the others (and
# missing from runs made before the option existed)
MODE_OPTIONS = {"gamma": "potential", "log_floor": "log"}


def _compared(config: DictConfig, key: str) -> Any:
    """A run's ``key`` as merge compares it: the default where the run predates the option, and
    without a reward option its reward mode does not read (:data:`MODE_OPTIONS`)."""
    value = OmegaConf.to_container(config, resolve=True).get(key, MERGE_DEFAULTS.get(key))
    if key == "reward" and isinstance(value, dict):
        value = {**REWARD_DEFAULTS, **value}
        mode = value.get("reward_mode")
        value = {k: v for k, v in value.items() if MODE_OPTIONS.get(k, mode) == mode}
    return value


# What merge reads from a results.json's config, besides the options of MERGE_SAME it compares.
MERGE_READS = ("env", "algo", "total_timesteps", "critic", "reward", "relabel")
# ... and what the summary and the report read inside it
CONFIG_READS = ("env.name", "algo._target_", "critic._target_", "reward.reward_mode",
                "reward.query_every", "reward.success_threshold", "eval_episodes")  # fmt: skip
# a run's lists with one entry per test episode, beside test_successes
TEST_FIELDS = ("test_returns", "test_final_progress", "test_start_state", "test_final_state")


def _check_results(config: Any, runs: Any) -> None:
    """Raise ``ValueError`` naming what a results.json lacks for merge: its config's
    :data:`MERGE_READS`, a run, or a run's required fields, a known condition and an int seed."""
    from dataclasses import MISSING, fields

    if not isinstance(config, dict) or any(key not in config for key in MERGE_READS):
        have = sorted(config) if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"its config must hold {list(MERGE_READS)}, it has {have}")
    for path in CONFIG_READS:  # what the summary and the report read of it
        node: Any = config
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            raise ValueError(f"its config has no {path}")
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
        _check_run_values(name, run)
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
                # finite: one NaN start made the start-distance thirds' edges NaN
                if not isinstance(state, dict) or not all(is_number(v) for v in state.values()):
                    raise ValueError(
                        f"run {name}: {key} must hold one mapping of names to finite numbers per "
                        f"test episode, it holds {state!r:.80}"
                    )


def _check_run_values(name: str, run: dict) -> None:
    """Raise ``ValueError`` naming a run's field whose value the summary cannot read (a
    results.json edited by hand, or written in part)."""

    def numbers(value: Any) -> bool:
        return isinstance(value, list) and all(is_number(v) for v in value)

    curve = {key: run[key] for key in ("timesteps", "success_rate", "true_return")}
    if not all(numbers(v) for v in curve.values()) or len({len(v) for v in curve.values()}) > 1:
        raise ValueError(
            f"run {name}: timesteps, success_rate and true_return must be lists of numbers of "
            f"one length (the learning curve's points), they are {curve!r:.120}"
        )
    if not is_number(run["wall_seconds"]) or run["wall_seconds"] <= 0:
        raise ValueError(f"run {name}: wall_seconds={run['wall_seconds']!r} must be a number > 0")
    if not is_int(run["env_steps"]) or run["env_steps"] < 0:
        raise ValueError(f"run {name}: env_steps={run['env_steps']!r} must be an integer >= 0")
    episodes = run.get("episodes") or []
    if not isinstance(episodes, list) or not all(
        isinstance(e, list | tuple) and len(e) == 4 and all(is_number(v) for v in e[:3])
        for e in episodes
    ):
        raise ValueError(
            f"run {name}: episodes must be a list of [timestep, critic progress, true progress, "
            f"success] rows, it is {episodes!r:.80}"
        )
    tests = run.get("test_successes") or []
    if isinstance(tests, list) and not all(isinstance(t, bool) for t in tests):
        raise ValueError(
            f"run {name}: test_successes must be a list of true/false, it is {tests!r:.80}"
        )
    for key in ("test_returns", "test_final_progress"):
        if (value := run.get(key)) and not numbers(value):
            raise ValueError(f"run {name}: {key} must be a list of numbers, it is {value!r:.80}")


# Each run's own record, ``<run dir>/<condition>_seed<seed>/result.json``, written as it finishes.
RUN_RECORD = "result.json"


def _record_run(record: Path) -> tuple[str, str]:
    """The (condition, seed) a run's record names by its folder, ``<condition>_seed<seed>``."""
    condition, _, seed = record.parent.name.rpartition("_seed")
    return condition, seed


def _read_results(folder: Path) -> dict[str, Any]:
    """``folder``'s results.json; where it has none (its main process was killed before the end),
    or its runs' own records (:data:`RUN_RECORD`) hold runs it does not (a resume that finished
    more runs, then was killed), the experiment rebuilt from the records, with any run of
    results.json that has no record, in condition and seed order, under the first record's
    config with the conditions and seeds found.

    Raises:
        OSError, ValueError, KeyError, TypeError: neither can be read.
        ExperimentConfigError: two records ran with options that make them no comparison
            (:data:`MERGE_SAME`, :data:`MERGE_SAME_FOR`), as ``merge=`` of two folders refuses.
    """
    path = folder / "results.json"
    records = sorted(folder.glob(f"*_seed*/{RUN_RECORD}"))
    listed: list[dict[str, Any]] = []
    if path.exists() or not records:
        results = json.loads(path.read_text())
        listed = results.get("runs") if isinstance(results, dict) else None
        listed = listed if isinstance(listed, list) else []  # _check_results names what is wrong
        # (compared as text: a field results.json holds wrongly is _check_results' to name)
        have = {
            (str(r.get("condition")), str(r.get("seed"))) for r in listed if isinstance(r, dict)
        }
        if all(_record_run(r) in have for r in records) or any(
            not isinstance(r, dict) for r in listed
        ):
            return results  # (a run that is no mapping: _check_results names it)
    loaded = [json.loads(r.read_text()) for r in records]
    sources: list[Path] = list(records)
    # results.json's runs without a record of their own, checked with the records
    recorded = {(str(x["run"]["condition"]), str(x["run"]["seed"])) for x in loaded}
    for run in listed:
        if (str(run.get("condition")), str(run.get("seed"))) not in recorded:
            loaded.append({"config": results["config"], "run": run})
            sources.append(path)
    # a killed run's dir may hold another experiment's runs too: each option compared with the
    # first record's (a condition's own options with its own first record's)
    configs = [OmegaConf.create(x["config"]) for x in loaded]
    firsts: dict[str, int] = {}
    for i, x in enumerate(loaded):
        condition = x["run"]["condition"]
        firsts.setdefault(condition, i)
        # the critic's and the oracle's learners share the reward wrapper and its options, as
        # merge_runs compares them between dirs (the report states one reward for both)
        wrapped = condition in ("critic", "oracle")
        if wrapped:
            firsts.setdefault("wrapped", i)
        for option, j in [*((o, 0) for o in MERGE_SAME),
                          *((o, firsts[condition]) for o in MERGE_SAME_FOR.get(condition, ())),
                          *((o, firsts["wrapped"]) for o in ("reward", "relabel") if wrapped)]:  # fmt: skip
            if (was := _compared(configs[j], option)) != (now := _compared(configs[i], option)):
                before, after = _differences(option, was, now)
                raise ExperimentConfigError(
                    f"merge: {folder} holds "
                    + (
                        "runs its results.json lacks, and its runs"
                        if path.exists()
                        else "no results.json, and its runs' records"
                    )
                    + " ran with "
                    f"other options: {sources[j]} with {before}, {sources[i]} with {after}; "
                    "merge each experiment's runs from a folder of their own"
                )
    runs = [record["run"] for record in loaded]
    order = {c: i for i, c in enumerate(CONDITIONS)}
    runs.sort(key=lambda r: (order.get(r["condition"], len(order)), int(r["seed"])))
    config = {**loaded[0]["config"],
              "conditions": list(dict.fromkeys(r["condition"] for r in runs)),
              "seeds": sorted({int(r["seed"]) for r in runs})}  # fmt: skip
    return {"config": config, "runs": runs}


def run_result(record: dict[str, Any]) -> RunResult:
    """A run as results.json and a run's record hold it, read back (fields checked by
    :func:`_check_results`); null is absent, the field's default, as in runs made before the
    field was recorded."""
    from dataclasses import fields

    known = {f.name for f in fields(RunResult)}
    values = {k: v for k, v in record.items() if k in known and v is not None}
    values["episodes"] = [tuple(e) for e in values.get("episodes", [])]
    return RunResult(**values)


def _differences(option: str, was: Any, now: Any) -> tuple[str, str]:
    """``option``'s two values as the options that differ (``reward.achieved_weight=0.0``), not
    as two whole dicts of which one entry differs."""
    if not (isinstance(was, dict) and isinstance(now, dict)):
        return f"{option}={was!r}", f"{option}={now!r}"
    keys = [k for k in dict.fromkeys([*was, *now]) if was.get(k) != now.get(k)]
    return tuple(  # type: ignore[return-value]
        ", ".join(f"{option}.{k}={side.get(k)!r}" for k in keys) for side in (was, now)
    )


def finished_runs(cfg: DictConfig, folder: Path) -> list[RunResult]:
    """``resume=true``: the runs of this experiment a stopped run in ``folder`` finished (their
    records, :data:`RUN_RECORD`, or its results.json for runs without one), in config order.
    Finished runs this command does not ask for are refused: the results.json it writes would
    lose them.

    Raises:
        ExperimentConfigError: a finished run that does not read, that this command does not ask
            for, or that ran with other options than this command gives (:data:`MERGE_SAME`,
            :data:`MERGE_SAME_FOR`): joined, they would make no comparison; or a folder whose
            results.json ``merge=`` made.
    """
    sources: list[tuple[Path, dict[str, Any], list]] = []
    for path in sorted(folder.glob(f"*_seed*/{RUN_RECORD}")):
        try:
            record = json.loads(path.read_text())
            sources.append((path, record["config"], [record["run"]]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ExperimentConfigError(
                f"resume=true: {path} does not read ({exc!r}); delete its folder to train that "
                "run again"
            ) from exc
    if (folder / "results.json").is_file():
        path = folder / "results.json"
        try:
            results = json.loads(path.read_text())
            sources.append((path, results["config"], results["runs"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ExperimentConfigError(
                f"resume=true: {path} does not read ({exc!r}); delete it (the runs' own "
                f"{RUN_RECORD} files are read without it)"
            ) from exc
        if isinstance(results, dict) and results.get("merged_from"):  # runs of other dirs
            raise ExperimentConfigError(
                f"resume=true: {folder} holds a report merge= made, not a stopped run; resume "
                "in a stopped run's own hydra.run.dir=, or merge= again with a run of the rest"
            )
    planned = [(str(c), int(s)) for c in cfg.conditions for s in cfg.seeds]
    found: dict[tuple[str, int], RunResult] = {}
    for path, config, runs in sources:
        try:
            _check_results(config, runs)
        except ValueError as exc:
            raise ExperimentConfigError(
                f"resume=true: {path} is not a record zero_shot_rl.py wrote ({exc}); delete it "
                "to train its runs again"
            ) from exc
        config = OmegaConf.create(config)
        for record in runs:
            key = (record["condition"], int(record["seed"]))
            if key not in planned:  # results.json, written over this command's runs, lost it
                raise ExperimentConfigError(
                    f"resume=true: {path} holds {key[0]} seed {key[1]}, a finished run this "
                    "command does not ask for; resume with the stopped run's conditions= and "
                    "seeds= (its .hydra/overrides.yaml), more if you like, or give a new "
                    "hydra.run.dir="
                )
            if key in found:  # a run's own record comes first
                continue
            for option in (*MERGE_SAME, *MERGE_SAME_FOR[key[0]]):
                if (was := _compared(config, option)) != (now := _compared(cfg, option)):
                    before, after = _differences(option, was, now)
                    raise ExperimentConfigError(
                        f"resume=true: {path} ran {key[0]} seed {key[1]} with {before}, this "
                        f"command gives {after}; resume with the stopped run's options (its "
                        ".hydra/overrides.yaml), or give a new hydra.run.dir="
                    )
            found[key] = run_result(record)
    return [found[key] for key in planned if key in found]


def merge_entry(entry: Any) -> tuple[Path, str | None]:
    """A ``merge=`` entry as its run dir and the condition it takes (``None``: all of them):
    ``<run dir>`` or ``<run dir>:<condition>``."""
    head, _, tail = str(entry).rpartition(":")
    return (Path(head), tail) if head and tail in CONDITIONS else (Path(str(entry)), None)


def merge_reads(cfg: DictConfig, run_dir: Path) -> str | None:
    """The ``merge=`` entry that names ``run_dir`` itself, if one does: the merged report would
    replace that folder's own (:func:`run_dir.check_run_dir` refuses it)."""
    for entry in list_option(cfg.get("merge")):
        folder = merge_entry(entry)[0]
        if folder.exists() and folder.resolve() == Path(run_dir).resolve():
            return str(entry)
    return None


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
    loaded = []
    origins: list[Any] = []  # each folder's own merged_from: a merged report's runs' own dirs
    for entry in run_dirs:
        head, _, tail = str(entry).rpartition(":")
        if head and tail not in CONDITIONS and Path(head).is_dir() and not Path(entry).is_dir():
            raise ExperimentConfigError(
                f"merge: {entry!r}: {tail!r} is not a condition; write <run dir>:<condition> "
                f"with one of {list(CONDITIONS)}, or the run dir alone for all its runs"
            )
        folder, only = merge_entry(entry)
        path = folder / "results.json"
        try:
            results = _read_results(folder)
            config, runs = results["config"], results["runs"]
            _check_results(config, runs)
            config = OmegaConf.create(config)
        except ExperimentConfigError:
            raise
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
        origins.append(results.get("merged_from") if isinstance(results, dict) else None)
    holding = {c: [x for x in loaded if any(r["condition"] == c for r in x[2])]
               for c in MERGE_SAME_FOR}  # fmt: skip
    # the oracle learns through the critic's reward wrapper and options: a critic and an oracle
    # from two dirs must share them too (the report states one reward for both)
    wrapped = [x for x in loaded if any(r["condition"] in ("critic", "oracle") for r in x[2])]
    for keys, group in [(MERGE_SAME, loaded), (("reward", "relabel"), wrapped)] + [
        (MERGE_SAME_FOR[c], g) for c, g in holding.items()
    ]:
        for key in keys:
            values = [(f, _compared(c, key)) for f, c, _ in group]
            for folder, value in values[1:]:
                if value != values[0][1]:
                    before, after = _differences(key, values[0][1], value)
                    raise ExperimentConfigError(
                        f"merge: {values[0][0]} has {before} and {folder} has {after}; only runs "
                        "with the same task, algorithm, budget, tests and reward options make "
                        "one comparison"
                    )
    seen: dict[tuple[str, int], Path] = {}
    merged: list[RunResult] = []
    sources = []
    for (folder, _, runs), nested in zip(loaded, origins, strict=True):
        for record in runs:
            key = (record["condition"], int(record["seed"]))
            if key in seen:
                raise ExperimentConfigError(
                    f"merge: {key[0]} seed {key[1]} is in both {seen[key]} and {folder}; "
                    "merge each run once"
                )
            seen[key] = folder
            merged.append(run_result(record))
        ordered = sorted(runs, key=lambda r: (r["condition"], int(r["seed"])))
        # a merged report's runs keep the dirs they ran in (merged again, a critic and a true
        # reward of two dirs read as run side by side, and its sources as one dir)
        by_dir: dict[str, list[str]] = {}
        for r in ordered:
            name = f"{r['condition']}_seed{r['seed']}"
            ran = next((str(x.get("run_dir")) for x in nested or [] if isinstance(x, dict)
                        and name in (x.get("runs") or [])), str(folder))  # fmt: skip
            by_dir.setdefault(ran, []).append(name)
        sources += [{"run_dir": ran, "runs": names} for ran, names in by_dir.items()]
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


def import_merged_tasks(config: DictConfig) -> None:
    """The modules the merged runs imported (their ``imports=``), so that their task's goal
    distance is known here; a module not found here leaves the report without that split."""
    from envs import InvalidOptionError
    from envs.tasks import import_task_modules

    try:
        import_task_modules(config.get("imports"), "the merged runs' imports")
    except InvalidOptionError as exc:
        logging.getLogger(__name__).warning(
            "%s; the report leaves out where they end by start", exc
        )


def ignored_by_merge() -> list[str]:
    """The command line's options that a merge does not use (it trains nothing)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    used = ("merge", "overwrite", "progress_bar", "imports", "hydra.", "+hydra.", "++hydra.")
    return [o for o in HydraConfig.get().overrides.task if not o.startswith(used)]
