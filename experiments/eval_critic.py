"""Evaluate critics side by side on held-out episodes: progress, failure detection, probes.

    python experiments/eval_critic.py                                    # oracle vs viscritic-small
    python experiments/eval_critic.py data=[data/Reacher-v5,data/Lift] \\
        critics='[viscritic-small,outputs/train_critic/RUN/outcome/final]'
    python experiments/eval_critic.py external=/data/robofail critics=[viscritic-small] data=[]

For every critic and task (metrics in :mod:`critic.eval` and :mod:`critic.probes`): progress MAE and VOC on expert episodes
and on failures with the best constant predictor beside them, failure-detection accuracy / F1 /
AUROC / confusion by type / detection delay, and the reward-hacking probes with pass/fail. The run
dir (hydra) gets ``metrics.json`` (strict JSON: an undefined metric is ``null``), ``report.md``
and, given progress data, ``calibration.png``. A critic that fails to load or errors mid-run stops
the run, but the critics before it keep their results (the report names the one that failed).

``external=FOLDER`` scores your own labelled videos (RoboFail-style; layout in
:func:`critic.data.external.read_labelled_videos`) for failure detection; ``data=[]`` scores them
alone.
"""

from __future__ import annotations

import itertools
import json
import logging
import numbers
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

from rollout.checks import folder_problem, is_int, is_number, list_option

SPLITS = ("train", "val", "test", "all")


class EvalConfigError(ValueError):
    """The evaluation config cannot run (found before any critic loads)."""


def check_config(cfg: DictConfig) -> None:
    """Fail before any critic loads when the config cannot run."""
    from critic.data.episodes import finished_ids

    data = list_option(cfg.data)
    if not list_option(cfg.critics):
        raise EvalConfigError("critics is empty; give at least one, e.g. critics=[oracle]")
    labels = [critic_label(spec)[0] for spec in list_option(cfg.critics)]
    if twice := sorted({label for label in labels if labels.count(label) > 1}):
        raise EvalConfigError(
            f"critics {twice} would share a column (and the second's results replace the "
            "first's); label each, e.g. critics=[{name: <path>, label: run_a},{name: <path>, "
            "label: run_b}]"
        )
    for spec in list_option(cfg.critics):  # every name, before the first critic loads
        check_critic_spec(spec)
    if cfg.split not in SPLITS:
        raise EvalConfigError(f"split={cfg.split!r} is not a split; pick one of {list(SPLITS)}")
    if cfg.calibration_split is not None and cfg.calibration_split not in SPLITS:
        raise EvalConfigError(
            f"calibration_split={cfg.calibration_split!r} is not a split; pick one of "
            f"{list(SPLITS)}, or null to fit no failure threshold"
        )
    calibration_split = cfg.calibration_split
    if calibration_split is not None and (
        calibration_split == cfg.split or "all" in (calibration_split, cfg.split)
    ):
        raise EvalConfigError(
            f"calibration_split={calibration_split!r} overlaps split={cfg.split!r}: τ would be "
            "fit on the episodes it scores; give a split apart from the evaluated one (e.g. "
            "split=test calibration_split=val), or calibration_split=null to fit no τ"
        )
    if not is_int(cfg.seed) or cfg.seed < 0:
        raise EvalConfigError(
            f"seed={cfg.seed!r} must be an integer >= 0 (it seeds the probes' shuffles), e.g. seed=0"
        )
    for key in ("episodes_per_task", "stride", "failure_frames", "batch"):
        value = cfg[key]
        if not is_int(value) or value < 1:
            raise EvalConfigError(f"{key}={value!r} must be an integer >= 1")
    frames = cfg.frames_per_query
    if frames is not None and (not is_int(frames) or frames < 1):
        raise EvalConfigError(
            f"frames_per_query={frames!r} must be an integer >= 1, or null for each critic's own "
            "clip length"
        )
    if not is_int(cfg.delay_points) or cfg.delay_points < 0:
        raise EvalConfigError(f"delay_points={cfg.delay_points!r} must be an integer >= 0")
    probes = cfg.probe_episodes
    if cfg.probes and (not is_int(probes) or probes < 1):
        # 0 would run every probe on no episode and report each as failed: probes=false is "none"
        raise EvalConfigError(
            f"probe_episodes={probes!r} must be an integer >= 1 (expert episodes per task the "
            "probes transform); to run no probes, set probes=false"
        )
    external = cfg.external
    if external is not None and not isinstance(external, str):
        given = OmegaConf.to_container(external) if OmegaConf.is_config(external) else external
        raise EvalConfigError(
            f"external={given!r} must be one folder of labelled videos, e.g. "
            "external=/data/robofail, or null for none"
        )
    size = cfg.external_size
    if size is not None and (not is_int(size) or size < 1):
        raise EvalConfigError(
            f"external_size={size!r} must be an integer >= 1 (the square size, in pixels, the "
            "external videos' frames are resized to), e.g. external_size=128, or null to keep "
            "their own size"
        )
    if problem := folder_problem("data", data):
        raise EvalConfigError(problem)
    missing = [d for d in data if not finished_ids(d)]  # no episodes/ folder, or an empty one
    if missing:
        raise EvalConfigError(
            f"data: no episodes in {missing}; make them with "
            "`python experiments/synthesize.py env=<task> out=<folder>`"
            + ("" if external is None else ", or give data=[] to score the external videos alone")
        )
    if external is not None and not Path(external).is_dir():
        raise EvalConfigError(f"external={external!r} is not a folder of labelled videos")
    if not data and external is None:
        raise EvalConfigError("nothing to evaluate: data is empty and external is not set")
    by_state = cfg.get("by_state")
    if by_state is not None and not isinstance(by_state, DictConfig):
        given = OmegaConf.to_container(by_state) if OmegaConf.is_config(by_state) else by_state
        raise EvalConfigError(
            f"by_state={given!r} must map each task to {{key: <privileged state name>, bins: "
            "[increasing numbers]}, e.g. by_state={Reacher-v5: {key: fingertip_to_target_cm, "
            "bins: [1, 2, 4]}}, or be null for no reading by state"
        )
    for task, spec in (by_state or {}).items():
        edges = spec.get("bins") if isinstance(spec, DictConfig) else None
        if (
            not isinstance(spec, DictConfig)
            or not isinstance(spec.get("key"), str)
            or not isinstance(edges, ListConfig)
            or not edges
            or not all(is_number(e) for e in edges)
            or any(b <= a for a, b in itertools.pairwise(edges))
        ):
            raise EvalConfigError(
                f"by_state.{task}={OmegaConf.to_container(spec) if isinstance(spec, DictConfig) else spec!r}"
                " must be {key: <privileged state name>, bins: [increasing numbers]}, e.g. "
                "{key: fingertip_to_target_cm, bins: [1, 2, 3, 4, 6, 10]}"
            )


def check_critic_spec(spec: Any) -> None:
    """Refuse, before any critic loads, a critic :func:`critic.factory.make_critic` could not
    name: by the factory's rules, a name is a known critic, an existing checkpoint
    folder or a critic server URL; an ensemble's members are checked alike. No weights load.

    Raises:
        EvalConfigError: the spec names no critic, a name that is none of those (named), or a
            server URL that is no address.
    """
    from critic.factory import available_critics
    from critic.vlm import is_server_url
    from rollout.remote import RemoteEngine

    if OmegaConf.is_config(spec):
        spec = OmegaConf.to_container(spec, resolve=True)
    name = spec.get("name") if isinstance(spec, dict) else spec
    if not isinstance(name, str):
        raise EvalConfigError(
            f"critics: {spec!r} names no critic; give a name or path, or a mapping "
            "{name: <name or path>, label: <column>, **options}"
        )
    url = spec.get("model") if name == "vlm" and isinstance(spec, dict) else name
    if is_server_url(url):
        try:
            RemoteEngine(url)  # parses the address as the critic's client will; connects later
        except ValueError as exc:
            raise EvalConfigError(f"critics: {exc}") from exc
    elif name not in available_critics() and not Path(name).is_dir():
        raise EvalConfigError(
            f"critics: {name!r} is neither a known critic ({available_critics()}), an existing "
            "checkpoint folder, nor a critic server URL (http://host:port); fix the name or path"
        )
    if name == "ensemble" and isinstance(spec, dict):
        members = spec.get("members")
        if isinstance(members, list):  # anything else: the ensemble's own message, as it loads
            for member in members:
                check_critic_spec(member)


def load_episodes(cfg: DictConfig, split: str | None = None) -> dict[str, list]:
    """Episodes of ``split`` (default ``cfg.split``), by task, at most ``episodes_per_task`` each
    (in id order); the external videos join the evaluated split only."""
    from critic.data.episodes import read_episode, read_table
    from critic.data.samples import seed_split

    split = split or cfg.split
    by_task: dict[str, list] = {}
    for folder in list_option(cfg.data):
        for row in read_table(folder):  # metadata only: decode just the episodes kept
            mine = by_task.setdefault(row["env_id"], [])
            if len(mine) < cfg.episodes_per_task and (
                split == "all" or seed_split(row["seed"]) == split
            ):
                mine.append(read_episode(folder, row["episode_id"]))
    if split != cfg.split:
        return {task: episodes for task, episodes in by_task.items() if episodes}
    if cfg.external is not None:
        from critic.data.external import read_labelled_videos

        by_task["external"] = read_labelled_videos(cfg.external, size=cfg.external_size)[
            : cfg.episodes_per_task
        ]
    empty = [task for task, episodes in by_task.items() if not episodes]
    if empty:
        alone = ", or give data=[] to score the external videos alone" if cfg.external else ""
        raise EvalConfigError(
            f"no {cfg.split} episodes for {empty}; synthesise more episodes{alone}"
        )
    return by_task


def evaluate_critic(
    critic, by_task: dict[str, list], cfg: DictConfig, calibration: dict[str, list] | None = None
) -> dict[str, Any]:
    """Every metric of one critic, by task. ``calibration`` (episodes by task, another split) fits
    the failure-probability threshold that the failure table also scores."""
    from critic.base import query_frames
    from critic.detection import (
        FAILURE_DETECTORS,
        evaluate_failures,
        failure_scores,
        last_frame_scores,
    )
    from critic.eval import (
        accuracy_threshold,
        evaluate_progress,
        progress_summary,
        reading_by_state,
    )
    from critic.probes import run_probes

    out: dict[str, Any] = {}
    for task, episodes in by_task.items():
        start = time.perf_counter()
        frames = query_frames(critic, cfg.frames_per_query, task)  # null: the critic's own
        row: dict[str, Any] = {"frames_per_query": frames}
        has_progress = all(np.isfinite(e.progress).all() for e in episodes)
        if has_progress:
            results = evaluate_progress(critic, episodes, frames, cfg.batch, cfg.stride)
            row["progress"] = progress_summary(results)
            row["calibration_points"] = {
                "predicted": np.concatenate([r.predicted for r in results]).tolist(),
                "true": np.concatenate([r.true for r in results]).tolist(),
            }
            state = (cfg.get("by_state") or {}).get(task)
            missing = state is not None and not all(state.key in e.state for e in episodes)
            if missing:
                have = sorted(set.intersection(*(set(e.state) for e in episodes)))
                logging.getLogger(__name__).warning(
                    "by_state.%s.key=%r is not in every episode's state: no reading by state "
                    "for %s (the episodes have %s)", task, state.key, task, have,
                )  # fmt: skip
            elif state is not None:
                values = np.concatenate([e.state[state.key][:: cfg.stride] for e in episodes])
                row["by_state"] = {
                    "key": state.key,
                    "rows": reading_by_state(
                        values, *(np.concatenate([getattr(r, f) for r in results])
                                  for f in ("predicted", "true", "achieved")),
                        list(state.bins),
                    ),
                }  # fmt: skip
        thresholds = dict.fromkeys(FAILURE_DETECTORS)
        if calibration and calibration.get(task):
            fit = calibration[task]
            by_detector = {
                "verdict": failure_scores(critic, fit, "verdict", cfg.failure_frames),
                **last_frame_scores(critic, fit, frames, batch=cfg.batch),  # one reading of both
            }
            for detector, scores in by_detector.items():
                if np.isfinite(scores).all():  # nan: the critic gives no P(achieved)
                    thresholds[detector] = accuracy_threshold(scores, [not e.success for e in fit])
        row["failure"] = evaluate_failures(
            critic, episodes, cfg.failure_frames, cfg.delay_points, threshold=thresholds["verdict"],
            progress_threshold=thresholds["progress"], frames_per_query=frames,
            achieved_threshold=thresholds["achieved"],
        )  # fmt: skip
        if cfg.probes and has_progress:
            experts = [e for e in episodes if e.expert][: cfg.probe_episodes]
            row["probes"] = run_probes(critic, experts, cfg.seed, frames, cfg.batch)
        row["seconds"] = time.perf_counter() - start
        out[task] = row
    return out


def critic_label(spec: Any) -> tuple[str, Any]:
    """A critic's column name and its :func:`critic.factory.make_critic` spec: a string names
    itself (a path by its last two parts); a mapping may carry a ``label``."""
    if isinstance(spec, DictConfig):
        spec = OmegaConf.to_container(spec, resolve=True)
    if isinstance(spec, dict):
        spec = dict(spec)
        return str(spec.pop("label", spec.get("name"))), spec
    path = Path(str(spec))
    return ("/".join(path.parts[-2:]) if len(path.parts) > 1 else str(spec)), spec


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _final_row(name: str, task: str, detector: str, f: dict, p: dict) -> str:
    """One row of the last-frame failure table: detector ``p`` of failure metrics ``f``."""
    by_kind = ", ".join(f"{k} {_fmt(v)}" for k, v in p.get("judged_failure_by_type", {}).items())
    return (
        f"| {name} | {task} | {detector} | {f['episodes']} | {_fmt(p.get('threshold'))} "
        f"| {_fmt(p.get('threshold_accuracy'))} | {_fmt(f['constant_accuracy'])} "
        f"| {_fmt(p.get('threshold_precision'))} | {_fmt(p.get('threshold_recall'))} "
        f"| {_fmt(p.get('threshold_f1'))} | {_fmt(p['auroc'])} | {by_kind} |"
    )


def report_lines(
    results: dict[str, dict[str, Any]],
    cfg: DictConfig,
    plotted: bool = True,
    failed: tuple[str, str] | None = None,
) -> list[str]:
    """The markdown report: one progress table, one failure table, one probe table; the
    calibration plot when ``plotted``; first, the critic that ``failed`` (its name and error), if
    one stopped the run."""
    lines = [f"# Critic evaluation ({cfg.split} split)", ""]
    if failed is not None:
        lines += [
            f"**Incomplete:** critic `{failed[0]}` failed ({failed[1]}); the tables hold the "
            "critics before it, and those after it were not run.",
            "",
        ]
    lines += [
        "## Progress",
        "",
        "VOC over the active part of expert episodes (up to the first frame the task is achieved); "
        "MAE over every frame read (`readable` is their share). `const` is the best constant "
        "predictor (the median truth of the same frames).",
        "",
        "| critic | task | expert MAE | const MAE | expert VOC | failure MAE | failure VOC | readable |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, by_task in results.items():
        for task, row in by_task.items():
            if "progress" not in row:
                continue
            ex, fa = row["progress"].get("expert", {}), row["progress"].get("failure", {})
            if not ex and not fa:  # only policy rollouts: their own table, below
                continue
            lines.append(
                f"| {name} | {task} | {_fmt(ex.get('mae'))} | {_fmt(ex.get('constant_mae'))} "
                f"| {_fmt(ex.get('voc'))} | {_fmt(fa.get('mae'))} | {_fmt(fa.get('voc'))} "
                f"| {_fmt(ex.get('readable'))} |"
            )
    policy = [(name, task, row["progress"]["policy"]) for name, by_task in results.items()
              for task, row in by_task.items() if "policy" in row.get("progress", {})]  # fmt: skip
    if policy:
        lines += [
            "",
            "Saved policies' rollouts (a learner's own episodes, successful or not; no VOC: a "
            "learner need not progress in time order). `offset SD`: the spread over episodes of "
            "each episode's mean error, which every reward of an episode shares; `within SD`: the "
            "scatter of the errors about their episode's mean, from one reading to the next:",
            "",
            "| critic | task | episodes | MAE | const MAE | offset SD | within SD | readable |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {name} | {task} | {p['episodes']} | {_fmt(p['mae'])} | {_fmt(p['constant_mae'])} "
            f"| {_fmt(p['offset_sd'])} | {_fmt(p.get('within_sd'))} | {_fmt(p['readable'])} |"
            for name, task, p in policy
        ]
    lines += [
        "",
        "## Failure detection",
        "",
        "Failure is the positive class. `const` is the majority label's accuracy; delay is from the "
        "failure to the first prefix judged a failure.",
        "",
        (
            f"`τ` is the failure-probability threshold fit on the {cfg.calibration_split} split "
            "(most accurate there); `acc@τ` is this split's accuracy of `P(failure) >= τ`. "
            if cfg.calibration_split is not None
            else "No threshold fit (`calibration_split` unset). "
        )
        + "`accuracy` is the greedy verdict's.",
        "",
        "| critic | task | episodes | accuracy | τ | acc@τ | const | precision | recall | F1 | AUROC | type acc | delay s | in time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, by_task in results.items():
        for task, row in by_task.items():
            f = row["failure"]
            lines.append(
                f"| {name} | {task} | {f['episodes']} | {_fmt(f['accuracy'])} "
                f"| {_fmt(f.get('threshold'))} | {_fmt(f.get('threshold_accuracy'))} "
                f"| {_fmt(f['constant_accuracy'])} | {_fmt(f['precision'])} | {_fmt(f['recall'])} "
                f"| {_fmt(f['f1'])} | {_fmt(f['auroc'])} | {_fmt(f['type_accuracy'])} "
                f"| {_fmt(f['detection_delay_s'], 1)} | {_fmt(f['detected_in_time'])} |"
            )
    lines += [
        "",
        "### Failure from the last frame",
        "",
        "The same decision read from the reward's own query on the last frame, with no verdict "
        "generated: `progress` reads `P(failure) = 1 - progress`, `achieved` reads "
        "`P(failure) = 1 - P(task achieved)` (a one-pass readout's top digit), each thresholded "
        "at its own `τ` fit on the "
        + (
            f"{cfg.calibration_split} split."
            if cfg.calibration_split is not None
            else "(no calibration split: no τ)."
        )
        + " A success ends at progress 1, a failure below it.",
        "",
        "| critic | task | detector | episodes | τ | acc@τ | const | precision | recall | F1 "
        "| AUROC | called a failure at τ, by kind |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, by_task in results.items():
        for task, row in by_task.items():
            f = row["failure"]
            for detector in ("progress", "achieved"):
                if detector in f:
                    lines.append(_final_row(name, task, detector, f, f[detector]))
    probe_rows = [
        (name, task, row["probes"])
        for name, by_task in results.items()
        for task, row in by_task.items()
        if "probes" in row
    ]
    if probe_rows:
        from critic.probes import PROBES

        lines += ["", "## Reward-hacking probes", ""]
        lines += [f"- `{probe}`: {rule}" for probe, rule in PROBES.items()]
        lines += ["", "| critic | task | " + " | ".join(PROBES) + " |",
                  "|---|---|" + "---|" * len(PROBES)]  # fmt: skip
        for name, task, probes in probe_rows:
            cells = [
                "n/a (no expert episodes)"
                if p["passed"] is None
                else f"{_fmt(p['statistic'])} {'pass' if p['passed'] else '**FAIL**'}"
                for p in probes.values()
            ]
            lines.append(f"| {name} | {task} | " + " | ".join(cells) + " |")
    lines += _by_state_lines(results)
    lines += ["", "![calibration](calibration.png)", ""] if plotted else [""]
    return lines


def _by_state_lines(results: dict[str, dict[str, Any]]) -> list[str]:
    """One table per critic and task of its reading by bins of a privileged quantity."""
    lines = []
    for name, by_task in results.items():
        for task, row in by_task.items():
            if "by_state" not in row:
                continue
            if not lines:
                lines += ["", "## Reading by state", "",
                          "The critic's progress and P(achieved) on every queried frame, by bins of a "
                          "privileged quantity (`by_state`): where the reading is flat over a range, "
                          "the reward has no slope there.", ""]  # fmt: skip
            key, rows = row["by_state"]["key"], row["by_state"]["rows"]
            lines += [
                f"**{name}, {task}**, by `{key}`:",
                "",
                "| bin | frames (share) | progress read | true progress | P(achieved) "
                "| P(achieved) > 0.5 |",
                "|---|---|---|---|---|---|",
            ]
            for r in rows:
                low, high = r["low"], r["high"]
                span = (f"< {high:g}" if low is None else f"≥ {low:g}" if high is None
                        else f"{low:g}–{high:g}")  # fmt: skip
                lines.append(
                    f"| {span} | {r['frames']} ({_fmt(r['share'])}) | {_fmt(r['progress'])} "
                    f"| {_fmt(r['true_progress'])} | {_fmt(r['achieved'])} "
                    f"| {_fmt(r['achieved_over_half'])} |"
                )
            lines.append("")
    return lines


def plot_calibration(results: dict[str, dict[str, Any]], path: Path) -> bool:
    """Mean true progress per bin of predicted progress, one panel per task; whether it wrote
    ``path`` (not without progress data: external videos alone)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from critic.eval import calibration

    tasks = list(dict.fromkeys(t for by_task in results.values() for t, r in by_task.items()
                               if "calibration_points" in r))  # fmt: skip
    if not tasks:
        return False
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        for name, by_task in results.items():
            points = by_task.get(task, {}).get("calibration_points")
            if points is None:
                continue
            pred, true = np.asarray(points["predicted"]), np.asarray(points["true"])
            ok = np.isfinite(pred)
            cal = calibration(pred[ok], true[ok])
            ax.plot(cal["predicted"], cal["true"], marker="o", label=name)
        ax.set(title=task, xlabel="predicted progress", ylabel="true progress",
               xlim=(0, 1), ylim=(0, 1))  # fmt: skip
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def finite_or_null(value: Any) -> Any:
    """``value`` with every non-finite float (an undefined metric's ``nan``) as ``None`` and numpy
    numbers as Python's, for strict JSON (``null``; ``NaN`` is no JSON).

    Example:
        >>> finite_or_null({"auroc": float("nan"), "n": [np.int64(2), np.float32(0.5)]})
        {'auroc': None, 'n': [2, 0.5]}
    """
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if np.isfinite(value) else None
    return value


def write_results(
    results: dict[str, dict[str, Any]],
    by_task: dict[str, list],
    cfg: DictConfig,
    out_dir: Path,
    failed: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Write metrics.json, calibration.png (removing a stale one when there is nothing to plot)
    and report.md for ``results``; ``failed`` (its name and error) names a critic that stopped
    the run. Returns the metrics."""
    metrics = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "episodes": {task: len(e) for task, e in by_task.items()},
        "critics": {
            name: {
                task: {k: v for k, v in row.items() if k != "calibration_points"}
                for task, row in by_task_rows.items()
            }
            for name, by_task_rows in results.items()
        },
        **({} if failed is None else {"failed": {"critic": failed[0], "error": failed[1]}}),
    }
    text = json.dumps(finite_or_null(metrics), indent=2, allow_nan=False)
    (out_dir / "metrics.json").write_text(text)
    plot = out_dir / "calibration.png"
    plotted = plot_calibration(results, plot)
    if not plotted:
        plot.unlink(missing_ok=True)  # an earlier run's (overwrite=true) is not this run's
    (out_dir / "report.md").write_text("\n".join(report_lines(results, cfg, plotted, failed)))
    return metrics


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Load the split, evaluate every critic, write metrics.json, report.md and calibration.png.

    A critic that fails to load or errors mid-run stops the run with its error, after the
    critics before it have their results written (the report and ``metrics.json``'s ``failed``
    name it)."""
    from critic.factory import make_critic

    check_config(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_task = load_episodes(cfg)
    calibration = None
    if cfg.calibration_split is not None:  # check_config: a split apart from the evaluated one
        calibration = load_episodes(cfg, cfg.calibration_split)
    results: dict[str, dict[str, Any]] = {}
    name = None
    try:
        for spec in list_option(cfg.critics):
            name, spec = critic_label(spec)
            critic = make_critic(spec)
            try:
                results[name] = evaluate_critic(critic, by_task, cfg, calibration)
            finally:
                critic.close()
    except BaseException as exc:  # an interrupt too: keep what the critics before it found
        if results:
            write_results(results, by_task, cfg, out_dir, (name, f"{type(exc).__name__}: {exc}"))
            logging.getLogger(__name__).error(
                "critic %s failed; metrics.json and report.md in %s hold the critics before it: %s",
                name, out_dir, list(results),
            )  # fmt: skip
        raise
    return write_results(results, by_task, cfg, out_dir)


@hydra.main(config_path="../configs", config_name="eval_critic", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from critic.base import CriticError
    from critic.data.episodes import EpisodeFormatError
    from critic.factory import UnknownCriticError
    from critic.models import ModelLoadError
    from rollout.engine import EngineError
    from rollout.imports import MissingExtraError

    logging.getLogger("transformers").setLevel(logging.ERROR)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        run(cfg, out_dir)
    except (EvalConfigError, UnknownCriticError, ModelLoadError, CriticError, EngineError,
            EpisodeFormatError, MissingExtraError) as exc:  # fmt: skip
        sys.exit(f"eval_critic: {type(exc).__name__}: {exc}")
    print((out_dir / "report.md").read_text())
    print(f"results: {out_dir}")


if __name__ == "__main__":
    main()
