"""The report of a critic evaluation: ``metrics.json`` (strict JSON), ``report.md`` and
``calibration.png``, written by :func:`write_results` from ``experiments/eval_critic.py``'s
results (the layout of ``rl_report.py`` beside ``zero_shot_rl.py``)."""

from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from rollout.files import write_atomic, written_whole


def _external_tau(results: dict) -> bool:
    """Whether a threshold was fit for the external videos, on any row: the verdict's, or the
    last frame's progress or P(achieved) (a critic whose verdicts do not read has the latter)."""
    for by_task in results.values():
        failure = by_task.get("external", {}).get("failure", {})
        rows = [failure, *(v for v in failure.values() if isinstance(v, dict))]
        if any(row.get("threshold") is not None for row in rows):
            return True
    return False


def _external_no_tau(cfg: DictConfig, external_splits: bool) -> str:
    """Why the external videos' rows have no τ: their labels give no splits, or they do
    (``external_splits``, as read before the critics ran: the labels are not read again while
    results are written) and the calibration split could fit none."""
    if not external_splits:
        return (
            "Your own videos (`external`) give no `split` in their labels.jsonl, so they have no "
            "calibration split and their rows have no `τ`. "
        )
    return (
        f'Your own videos (`external`) have no `τ`: those whose labels.jsonl gives `"split": '
        f'"{cfg.calibration_split}"` are not both successes and failures, or none was read '
        "(the run's log says which). "
    )


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _voc(group: dict) -> str:
    """A group's VOC, with the episodes it is the mean of when some had none."""
    text, counted, episodes = (
        _fmt(group.get("voc")),
        group.get("voc_episodes"),
        group.get("episodes"),
    )
    if counted is not None and episodes and counted < episodes:
        text += f" ({counted} of {episodes})"
    return text


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
    external_splits: bool = False,
) -> list[str]:
    """The markdown report: one progress table, one failure table, one probe table; the
    calibration plot when ``plotted``; first, the critic that ``failed`` (its name and error), if
    one stopped the run. ``external_splits``: whether the external videos' labels give splits."""
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
        "MAE over every frame read (`readable`: their share, of the expert and of the failure "
        "episodes' frames). `const` is the best constant predictor (the median truth of the same "
        "frames). An episode with fewer than two frames read in its active part has no VOC; where "
        "some have none, the VOC says of how many episodes it is the mean.",
        "",
        "| critic | task | expert MAE | const MAE | expert VOC | expert readable | failure MAE "
        "| failure VOC | failure readable |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [
        f"| {name} | {task} | {_fmt(ex.get('mae'))} | {_fmt(ex.get('constant_mae'))} "
        f"| {_voc(ex)} | {_fmt(ex.get('readable'))} | {_fmt(fa.get('mae'))} "
        f"| {_voc(fa)} | {_fmt(fa.get('readable'))} |"
        for name, by_task in results.items()
        for task, row in by_task.items()
        if "progress" in row
        for ex, fa in [(row["progress"].get("expert", {}), row["progress"].get("failure", {}))]
        if ex or fa  # only policy rollouts: their own table, below
    ]
    if rows:
        lines += rows
    else:  # a header over nothing read as a table that lost its rows
        lines = [  # the heading alone, without the explanation of columns there are none of
            *lines[: lines.index("## Progress") + 2],
            "No expert or planned-failure episode with per-frame progress here (videos of your "
            "own have none: `external` is scored for failure detection alone).",
        ]
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
            "(most accurate there); `acc@τ` is this split's accuracy of `P(failure) >= τ`, an "
            "unreadable answer read as `P(failure) = 0.5` (so with `τ <= 0.5` it calls a "
            "failure). "
            if cfg.calibration_split is not None
            else "No threshold fit (`calibration_split` unset). "
        )
        + (
            _external_no_tau(cfg, external_splits)
            if cfg.get("external") is not None
            and cfg.calibration_split is not None
            and not _external_tau(results)
            else ""
        )
        + "`accuracy` is the greedy verdict's, an unreadable verdict counted wrong (`readable`: the "
        "share of verdicts that could be read; an unreadable one calls no failure in precision and "
        "recall).",
        "",
        "| critic | task | episodes | accuracy | readable | τ | acc@τ | const | precision | recall | F1 | AUROC | type acc | delay s | in time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, by_task in results.items():
        for task, row in by_task.items():
            f = row["failure"]
            lines.append(
                f"| {name} | {task} | {f['episodes']} | {_fmt(f['accuracy'])} "
                f"| {_fmt(f['readable'])} | {_fmt(f.get('threshold'))} | {_fmt(f.get('threshold_accuracy'))} "
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
        "`P(failure) = 1 - P(task achieved)` (a one-pass readout's top digit)"
        + (
            f", each thresholded at its own `τ` fit on the {cfg.calibration_split} split."
            if cfg.calibration_split is not None
            else "; with no calibration split, no `τ` is fit."
        )
        + " A success ends at progress 1, a failure below it; an unreadable answer reads "
        "`P(failure) = 0.5`.",
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
        from critic.probes import MIN_ACTIVE, PROBES

        lines += ["", "## Reward-hacking probes", ""]
        lines += [f"- `{probe}`: {rule}" for probe, rule in PROBES.items()]
        lines += ["", "| critic | task | " + " | ".join(PROBES) + " |",
                  "|---|---|" + "---|" * len(PROBES)]  # fmt: skip
        for name, task, probes in probe_rows:
            cells = [
                f"n/a (no expert episode with an active part of {MIN_ACTIVE} frames)"
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
    with written_whole(path) as partial:  # a full disk cut it short
        fig.savefig(partial, dpi=110, format="png")
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
    external_splits: bool = False,
) -> dict[str, Any]:
    """Write metrics.json, calibration.png (removing a stale one when there is nothing to plot)
    and report.md for ``results``; ``failed`` (its name and error) names a critic that stopped
    the run; ``external_splits`` as :func:`report_lines` takes it. Returns the metrics."""
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
    write_atomic(out_dir / "metrics.json", text)  # whole, or the earlier one as it was
    plot = out_dir / "calibration.png"
    plotted = plot_calibration(results, plot)
    if not plotted:
        plot.unlink(missing_ok=True)  # an earlier run's (overwrite=true) is not this run's
    lines = report_lines(results, cfg, plotted, failed, external_splits)
    write_atomic(out_dir / "report.md", "\n".join(lines))
    return metrics
