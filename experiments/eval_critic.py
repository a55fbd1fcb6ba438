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
alone. Labels that give each video its ``split`` get a failure threshold fit on their own
``calibration_split`` videos.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np

# Beside this script (its folder is on sys.path): metrics.json, report.md and the calibration plot.
from eval_report import write_results
from eval_setup import (  # noqa: F401  (re-exported: the tests and users read them from here)
    MAX_EXTERNAL_SIZE,
    SPLITS,
    EvalConfigError,
    check_config,
    check_critic_spec,
    critic_label,
)
from omegaconf import DictConfig
from run_dir import discard_outputs, put_back_record, restore_outputs, set_aside_outputs

from rollout.checks import list_option
from rollout.workers import interrupt_exit, stop_on_sigterm


def external_has_splits(cfg: DictConfig) -> bool:
    """Whether ``cfg.external``'s labels give their videos' splits (then they get a τ too)."""
    from critic.data.external import has_splits, read_labels

    return cfg.external is not None and has_splits(read_labels(cfg.external))


def load_episodes(cfg: DictConfig, split: str | None = None) -> dict[str, list]:
    """Episodes of ``split`` (default ``cfg.split``), by task, at most ``episodes_per_task`` each
    (in id order); the external videos join the evaluated split, and the calibration split too
    where their labels give splits (:func:`critic.data.external.in_split`)."""
    from critic.data.episodes import read_episode, read_table
    from critic.data.samples import seed_split

    split = split or cfg.split
    by_task: dict[str, list] = {}
    left: dict[str, dict[str, int]] = {}  # task -> folder -> episodes of the split past the cap
    for folder in list_option(cfg.data):
        for row in read_table(folder):  # metadata only: decode just the episodes kept
            mine = by_task.setdefault(row["env_id"], [])
            if split != "all" and seed_split(row["seed"]) != split:
                continue
            if len(mine) < cfg.episodes_per_task:
                mine.append(read_episode(folder, row["episode_id"]))
            else:
                counts = left.setdefault(row["env_id"], {})
                counts[str(folder)] = counts.get(str(folder), 0) + 1
    for task, counts in left.items() if split == cfg.split else ():  # not for τ's episodes
        # the first folders fill the cap: a later folder of the task (a learner's rollouts
        # beside the scripted episodes) was left out without a word
        more = sum(counts.values())
        print(
            f"eval_critic: {task}: scoring the first {cfg.episodes_per_task} episodes of "
            f"split={split} in data= order, {more} more left out ("
            + ", ".join(f"{n} of {folder}" for folder, n in counts.items())
            + f"; episodes_per_task={cfg.episodes_per_task}); give episodes_per_task="
            f"{cfg.episodes_per_task + more} to score them all",
            file=sys.stderr,
        )
    if split != cfg.split:
        if cfg.external is not None and external_has_splits(cfg):
            from critic.data.external import read_labelled_videos

            by_task["external"] = read_labelled_videos(
                cfg.external, size=cfg.external_size, limit=cfg.episodes_per_task, split=split
            )
        return {task: episodes for task, episodes in by_task.items() if episodes}
    if cfg.external is not None:
        from critic.data.external import in_split, read_labelled_videos, read_labels

        rows = read_labels(cfg.external)
        if not rows:
            raise EvalConfigError(
                f"external={cfg.external!r}: its labels.jsonl labels no video; give one "
                '{"video", "instruction", "success"} object per line'
            )
        labelled = len(in_split(rows, split))
        of = f"{labelled} labelled videos" + (
            f" of split={split}" if external_has_splits(cfg) and split != "all" else ""
        )
        if labelled > cfg.episodes_per_task:  # the cap is every task's: it cut them silently
            print(
                f"eval_critic: external: scoring the first {cfg.episodes_per_task} of the "
                f"{of} (episodes_per_task={cfg.episodes_per_task}); give "
                f"episodes_per_task={labelled} to score them all",
                file=sys.stderr,
            )
        by_task["external"] = read_labelled_videos(
            cfg.external, size=cfg.external_size, limit=cfg.episodes_per_task, split=split
        )
    if "external" in by_task and not by_task["external"]:
        raise EvalConfigError(
            f"external={cfg.external!r}: no video of split={split} in its labels.jsonl; give "
            f'some videos "split": "{split}" (and "val" ones to fit τ on), or leave split out of '
            "every line to score them all with no τ"
        )
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
    from critic.base import query_frames, warn_if_untrained
    from critic.detection import (
        FAILURE_DETECTORS,
        evaluate_failures,
        failure_probability,
        failure_verdicts,
        last_frame_scores,
    )
    from critic.eval import (
        accuracy_threshold,
        evaluate_progress,
        progress_summary,
        reading_by_state,
    )
    from critic.probes import probe_candidates, run_probes

    out: dict[str, Any] = {}
    for task, episodes in by_task.items():
        start = time.perf_counter()
        frames = query_frames(critic, cfg.frames_per_query, task)  # null: the critic's own
        warn_if_untrained(critic, task)
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
            verdicts = failure_verdicts(critic, fit, cfg.failure_frames, batch=cfg.batch)
            by_detector = {
                "verdict": [failure_probability(v) for v in verdicts],
                **last_frame_scores(critic, fit, frames, batch=cfg.batch),  # one reading of both
            }
            # no verdict read: every score 0.5, and a τ fit on none (0.4 or 0.6) was printed
            if all(v.success is None for v in verdicts):
                del by_detector["verdict"]
            for detector, scores in by_detector.items():
                if np.isfinite(scores).all():  # nan: the critic gives no P(achieved)
                    thresholds[detector] = accuracy_threshold(scores, [not e.success for e in fit])
        row["failure"] = evaluate_failures(
            critic, episodes, cfg.failure_frames, cfg.delay_points, threshold=thresholds["verdict"],
            progress_threshold=thresholds["progress"], frames_per_query=frames,
            achieved_threshold=thresholds["achieved"], batch=cfg.batch,
        )  # fmt: skip
        if cfg.probes and has_progress:
            # the first probe_episodes of those a probe can read (an expert achieved within
            # its first frames has too short an active part, and cut first it left none)
            experts = probe_candidates(episodes)[: cfg.probe_episodes]
            row["probes"] = run_probes(critic, experts, cfg.seed, frames, cfg.batch)
        row["seconds"] = time.perf_counter() - start
        out[task] = row
    return out


def one_class_left_out(
    calibration: dict[str, list], cfg: DictConfig, evaluated: Sequence[str] = ()
) -> dict[str, list]:
    """The calibration episodes of the tasks whose episodes there are successes and failures: a
    threshold fit on one class alone lies below (or above) every score, and calls every test
    episode a failure (or none). The others are said, and get no threshold, as are the
    ``evaluated`` tasks of which the calibration split holds no episode."""
    log = logging.getLogger(__name__)
    for task in evaluated:
        if not calibration.get(task):
            more = (
                f'give some of your videos "split": "{cfg.calibration_split}" in labels.jsonl'
                if task == "external"
                else "record more episodes of it (its seeds decide the split)"
            )
            log.warning(
                "the %s split holds no %s episode: no failure threshold is fit for %s (the "
                "thresholded rows read n/a); %s or give another calibration_split=",
                cfg.calibration_split, task, task, more,
            )  # fmt: skip
    kept = {}
    for task, episodes in calibration.items():
        labels = {bool(e.success) for e in episodes}
        if len(labels) == 2:
            kept[task] = episodes
            continue
        log.warning(
            "the %s split's %d %s episodes are all %s: no failure threshold is fit for %s (the "
            "thresholded rows read n/a); give it both kinds, with more episodes "
            "(episodes_per_task=, or more recorded) or another calibration_split=",
            cfg.calibration_split, len(episodes), task,
            "successes" if labels == {True} else "failures", task,
        )  # fmt: skip
    return kept


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Load the split, evaluate every critic, write metrics.json, report.md and calibration.png.

    A critic that fails to load or errors mid-run stops the run with its error, after the
    critics before it have their results written (the report and ``metrics.json``'s ``failed``
    name it)."""
    from critic.factory import make_critic

    check_config(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    # read once, before the critics run: a labels.jsonl edited during a long run must not stop
    # the report of the critics that ran on the videos as they were labelled
    splits = external_has_splits(cfg)
    from recordings import older_recordings_warned, views_warned

    older_recordings_warned(list_option(cfg.data), "eval_critic")
    by_task = load_episodes(cfg)
    calibration = None
    if cfg.calibration_split is not None:  # check_config: a split apart from the evaluated one
        calibration = one_class_left_out(
            load_episodes(cfg, cfg.calibration_split),
            cfg,
            # external videos whose labels give no split have no τ (the report says so)
            evaluated=[t for t in by_task if t != "external" or splits],
        )
    results: dict[str, dict[str, Any]] = {}
    name = None
    # overwrite=true: the earlier run's results go aside, and come back if this run stops before
    # it has any (they stayed beside this run's record, which named other options)
    aside = set_aside_outputs("eval_critic", cfg, out_dir) if cfg.get("overwrite") is True else None
    try:
        for spec in list_option(cfg.critics):
            name, spec = critic_label(spec)
            critic = make_critic(spec)
            views_warned(critic, list_option(cfg.data), by_task)
            try:
                results[name] = evaluate_critic(critic, by_task, cfg, calibration)
            finally:
                critic.close()
    except BaseException as exc:  # an interrupt too: keep what the critics before it found
        if not results:
            restore_outputs("eval_critic", cfg, out_dir, aside)
        else:
            stopped = isinstance(exc, KeyboardInterrupt)
            problem = (
                f"interrupted ({interrupt_exit(exc)[0]})"
                if stopped
                else f"{type(exc).__name__}: {exc}"
            )
            _write_then_discard(results, by_task, cfg, out_dir, aside, splits, (name, problem))
            logging.getLogger(__name__).error(
                "critic %s %s; metrics.json and report.md in %s hold the critics before it: %s",
                name, "was interrupted" if stopped else "failed", out_dir, list(results),
            )  # fmt: skip
        raise
    return _write_then_discard(results, by_task, cfg, out_dir, aside, splits)


def _write_then_discard(
    results, by_task, cfg, out_dir: Path, aside: Path | None, splits: bool, failed=None
):
    """``write_results``, then the earlier run ``overwrite=true`` set aside is removed; if the
    write stops (a full disk, a Ctrl-C while the plot is drawn), the earlier run is put back in
    place of this run's half-written files, where it stayed aside and the next run was refused."""
    try:
        written = write_results(results, by_task, cfg, out_dir, failed, splits)
    except BaseException:
        restore_outputs("eval_critic", cfg, out_dir, aside)
        raise
    discard_outputs(aside)
    return written


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
    stop_on_sigterm()  # a scheduler's pre-emption keeps the critics done, as Ctrl-C does
    try:
        run(cfg, out_dir)
    except (EvalConfigError, UnknownCriticError, ModelLoadError, CriticError, EngineError,
            EpisodeFormatError, MissingExtraError, OSError) as exc:  # fmt: skip
        sys.exit(f"eval_critic: {type(exc).__name__}: {exc}")
    except KeyboardInterrupt as exc:  # what the critics before it found is written (logged)
        stopped, code = interrupt_exit(exc)
        print(f"eval_critic: interrupted ({stopped}); results so far, if any, are in {out_dir}",
              file=sys.stderr)  # fmt: skip
        sys.exit(code)
    finally:  # a run stopped before it set the earlier run aside: its record back in place
        put_back_record(out_dir)
    print((out_dir / "report.md").read_text())
    print(f"results: {out_dir}")


if __name__ == "__main__":
    main()
