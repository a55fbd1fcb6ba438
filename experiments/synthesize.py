"""Synthesise a labelled episode dataset with the scripted experts, or with saved RL policies.

    python experiments/synthesize.py env=Lift episodes=200
    python experiments/synthesize.py env=Reacher-v5 episodes=1000 workers=2 out=data/reacher
    python experiments/synthesize.py env=Reacher-v5 episodes=100 every=1 out=data/reacher-policy \
        policies=[outputs/zero_shot_rl/<run>/critic_seed0/policy.zip]   # 100 episodes per policy
    python experiments/synthesize.py env=Reacher-v5 episodes=50 every=1 hindsight=true \
        policies=[...] out=data/reacher-hindsight     # the goal moved to near where the arm went
    python experiments/synthesize.py env=Reacher-v5 episodes=50 every=1 hindsight=uniform \
        policies=[...] out=data/reacher-anygoal      # ... or anywhere the task draws its goals

Writes the episodes to ``out`` (re-running skips those already there; ``out/manifest.json`` keeps
the options they were recorded with, and a re-run with others is refused), then, in ``out`` and in
the run dir: ``summary.json`` / ``summary.md`` (expert success, per failure type how often it
failed and how far it got, episodes/minute) and ``contact_sheet_<task>.png`` — frames of an expert
and of each failure type with their progress, and the progress curves with the failure points — so
a person can check the labels by looking.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf
from run_dir import discard_outputs, restore_outputs, set_aside_outputs

from rollout.checks import is_int
from rollout.files import write_atomic, written_whole


def summarize(rows: list[dict], wall_s: float | None = None) -> dict:
    """Success of expert episodes and, per failure type, non-success and progress reached; policy
    rollouts (rows with a ``policy``) are one group of their own."""
    policy = [r for r in rows if r.get("policy")]
    rows_ = [r for r in rows if not r.get("policy")]
    experts = [r for r in rows_ if r["failure"] is None]
    summary: dict = {"episodes": len(rows)}
    if wall_s is not None and rows:
        summary["episodes_per_minute"] = 60 * len(rows) / wall_s
    if experts:
        summary["expert"] = {
            "episodes": len(experts),
            "success_rate": float(np.mean([r["success"] for r in experts])),
        }
    if policy:
        summary["policy"] = {
            "episodes": len(policy),
            "success_rate": float(np.mean([r["success"] for r in policy])),
            "mean_max_progress": float(np.mean([r["max_progress"] for r in policy])),
            "mean_final_progress": float(np.mean([r["final_progress"] for r in policy])),
        }
    by_type: dict = {}
    for kind in sorted({r["failure"] for r in rows_ if r["failure"] is not None}):
        group = [r for r in rows_ if r["failure"] == kind]
        by_type[kind] = {
            "episodes": len(group),
            "failed_rate": float(np.mean([not r["success"] for r in group])),
            "mean_max_progress": float(np.mean([r["max_progress"] for r in group])),
            "mean_final_progress": float(np.mean([r["final_progress"] for r in group])),
        }
    summary["failures"] = by_type
    return summary


def _markdown(task: str, summary: dict, unreadable: int = 0) -> str:
    lines = [f"# Synthesised episodes: {task}", "", f"episodes: {summary['episodes']}"]
    if unreadable:
        lines.append(f"unreadable episodes (left out): {unreadable}; summary.json names them")
    if "episodes_per_minute" in summary:
        lines.append(f"episodes/minute (this run): {summary['episodes_per_minute']:.1f}")
    if "expert" in summary:
        e = summary["expert"]
        lines.append(f"expert success: {e['success_rate']:.0%} of {e['episodes']}")
    if "policy" in summary:
        p = summary["policy"]
        lines.append(
            f"policy rollouts: {p['episodes']}, success {p['success_rate']:.0%}, "
            f"max progress {p['mean_max_progress']:.2f}, final {p['mean_final_progress']:.2f}"
        )
    if summary["failures"]:
        lines += [
            "",
            "| failure | episodes | failed | max progress | final progress |",
            "|---|---|---|---|---|",
        ]
    for kind, f in summary["failures"].items():
        lines.append(
            f"| {kind} | {f['episodes']} | {f['failed_rate']:.0%} | {f['mean_max_progress']:.2f} "
            f"| {f['mean_final_progress']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def contact_sheet(
    root: Path,
    task: str,
    rows: list[dict],
    path: Path,
    frames: int = 8,
    unreadable: dict[str, str] | None = None,
) -> Path | None:
    """One row of frames per episode kind (expert first, then each failure type), titled with
    progress; below, every shown episode's progress curve with its failure step marked.

    ``rows`` are the task's episode rows; one whose videos cannot be read is passed over for the
    next of its kind and added to ``unreadable`` (episode id → what is wrong)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from critic.data.episodes import EpisodeFormatError, read_episode
    from envs.synth import CAMERA

    unreadable = {} if unreadable is None else unreadable
    chosen: dict[str, Any] = {}
    for r in rows:
        kind = sheet_kind(r)
        if kind is None or kind in chosen or r["episode_id"] in unreadable:
            continue
        try:
            chosen[kind] = read_episode(root, r["episode_id"], [CAMERA])
        except EpisodeFormatError as exc:
            unreadable[r["episode_id"]] = str(exc)
    if not chosen:
        return None
    order = (
        ["expert", *sorted(k for k in chosen if k != "expert")]
        if "expert" in chosen
        else sorted(chosen)
    )
    episodes = [chosen[k] for k in order]
    fig, axes = plt.subplots(len(episodes) + 1, frames, figsize=(1.6 * frames, 1.8 * (len(episodes) + 1.5)),
                             squeeze=False)  # fmt: skip
    for row, (kind, ep) in enumerate(zip(order, episodes, strict=True)):
        video = ep.frames[CAMERA]
        picks = np.linspace(0, len(video) - 1, frames).round().astype(int)
        for col, i in enumerate(picks):
            ax = axes[row, col]
            ax.imshow(video[i])
            ax.set_xticks([]), ax.set_yticks([])
            failed = ep.failure_step is not None and ep.steps[i] >= ep.failure_step
            ax.set_title(f"t={ep.steps[i]} p={ep.progress[i]:.2f}", fontsize=7,
                         color="red" if failed else "black")  # fmt: skip
        axes[row, 0].set_ylabel(kind, fontsize=8)
    for ax in axes[-1]:
        ax.remove()
    curve = fig.add_subplot(len(episodes) + 1, 1, len(episodes) + 1)
    for kind, ep in zip(order, episodes, strict=True):
        (line,) = curve.plot(ep.steps, ep.progress, label=kind)
        if ep.failure_step is not None:
            curve.axvline(ep.failure_step, color=line.get_color(), linestyle="--", linewidth=1)
    curve.set_xlabel("env step (dashed: failure)"), curve.set_ylabel("progress")
    curve.set_ylim(-0.05, 1.05)
    curve.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{task}: labelled episodes (red titles: after the failure)", fontsize=10)
    fig.tight_layout()
    with written_whole(path) as partial:  # a full disk cut it short, complete-looking
        fig.savefig(partial, dpi=80, format="png")
    plt.close(fig)
    return path


@hydra.main(config_path="../configs", config_name="synthesize", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from rollout.workers import stop_on_sigterm

    logging.getLogger("OpenGL").setLevel(logging.WARNING)
    stop_on_sigterm()  # a scheduler's pre-emption says what is kept, as Ctrl-C does
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    task = cfg.env.name
    env = OmegaConf.to_container(cfg.env, resolve=True)  # plain values: an int, a list, a dict
    options = {
        "every": cfg.every,
        "linger": cfg.linger,
        "deterministic": cfg.deterministic,
        **{key: env[key] for key in ("image_size", "horizon", "camera", "task_kwargs")},
    }

    # overwrite=true: an earlier run's summary copies in the run dir go aside, back if this run
    # stops before it writes its own, and are removed once it has
    aside = set_aside_outputs("synthesize", cfg, run_dir) if cfg.get("overwrite") is True else None
    try:
        _record(cfg, task, run_dir, options)
    except BaseException:
        restore_outputs("synthesize", cfg, run_dir, aside)
        raise
    discard_outputs(aside)


def _kept(out: Any) -> str:
    """What an interrupted or failed recording into ``out`` keeps, as its message says it."""
    if isinstance(out, str) and out and not Path(out).exists():  # none: the folder went too
        return "no episode was recorded, and re-running the same command records them all"
    return (
        f"the episodes recorded so far are kept in {out}, and re-running the same command "
        "records the rest"
    )


def _record(cfg: DictConfig, task: str, run_dir: Path, options: dict) -> None:
    """Record the planned episodes into ``out=`` and write the summary (:func:`main`'s work)."""
    from concurrent.futures.process import BrokenProcessPool

    from gymnasium.error import Error as GymError

    from envs import InvalidOptionError
    from envs.plans import hindsight_mode, plan_episodes, plan_policy_episodes
    from envs.synth import synthesize
    from envs.tasks import import_task_modules
    from rollout.imports import MissingExtraError
    from rollout.workers import interrupt_exit

    try:
        import_task_modules(cfg.get("imports"))  # one's own tasks and experts, before any is used
        if not isinstance(cfg.out, str) or not cfg.out:  # '' would be the current folder
            shown = "null" if cfg.out is None else repr(cfg.out)
            raise InvalidOptionError(
                f"out={shown} must name the dataset folder (out=<folder>, e.g. out=data/{task})"
            )
        root = Path(cfg.out)
        if not isinstance(cfg.progress_bar, bool):
            raise InvalidOptionError(f"progress_bar={cfg.progress_bar!r} must be true or false")
        # checked here, not where the sheet is drawn: that is after the episodes are written
        frames = cfg.sheet_frames
        if not is_int(frames) or frames < 1:
            raise InvalidOptionError(
                f"sheet_frames={frames!r} must be an integer >= 1 (frames per row of the contact "
                "sheet)"
            )
        failures = (
            cfg.failures
            if cfg.failures is None or isinstance(cfg.failures, str)
            else list(cfg.failures)
        )
        hindsight = hindsight_mode(cfg.hindsight)  # its value is checked with or without policies
        if cfg.policies is not None:  # [] is an error, not the expert
            policies = [cfg.policies] if isinstance(cfg.policies, str) else list(cfg.policies)
            plans = plan_policy_episodes(task, policies, cfg.episodes, cfg.first_seed,
                                         cfg.hindsight)  # fmt: skip
        else:
            for name, what, on in (("hindsight", "moves the goal of policy rollouts", hindsight),
                                   ("deterministic", "picks a policy's mean action",
                                    cfg.deterministic is True)):  # fmt: skip
                if on:
                    value = str(cfg[name]).lower()
                    raise InvalidOptionError(
                        f"{name}={value} {what}; pass policies=[<policy.zip>,...], or "
                        f"{name}=false for the experts' episodes"
                    )
            plans = plan_episodes(task, cfg.episodes, cfg.failure_fraction, cfg.first_seed,
                                  failures)  # fmt: skip
        start = time.perf_counter()
        rows = synthesize(plans, root, workers=cfg.workers, codec=cfg.codec,
                          progress_bar=cfg.progress_bar, **options)  # fmt: skip
        wall = time.perf_counter() - start
    except (GymError, ValueError, MissingExtraError) as exc:  # GymError: envs' typed errors
        print(f"synthesize: {exc}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:  # a full disk, a folder not writable (PyAV's errors are OSErrors)
        import errno

        full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        print(f"synthesize: {exc}; {_kept(cfg.out)}{' once there is room' if full else ''}",
              file=sys.stderr)  # fmt: skip
        sys.exit(1)
    except BrokenProcessPool:
        print(f"synthesize: a worker process died (killed, or out of memory); {_kept(cfg.out)} "
              "(workers=1 needs less memory)", file=sys.stderr)  # fmt: skip
        sys.exit(1)
    except KeyboardInterrupt as exc:
        stopped, code = interrupt_exit(exc)
        print(f"synthesize: interrupted ({stopped}); {_kept(cfg.out)}", file=sys.stderr)
        sys.exit(code)  # as a shell reports a Ctrl-C (130) or a SIGTERM (143)

    try:
        _report(cfg, task, root, run_dir, plans, rows, wall)
    except OSError as exc:
        print(f"synthesize: {exc}; the episodes are recorded in {root}: the summary and the "
              "contact sheet were not written (the same command again writes them)",
              file=sys.stderr)  # fmt: skip
        sys.exit(1)


def _report(cfg: DictConfig, task: str, root: Path, run_dir: Path, plans: list, rows: list,
            wall: float) -> None:  # fmt: skip
    """The task's contact sheet and summaries (``summary.json``, ``summary.md``) in the dataset
    folder and the run dir, over every episode of the task there, and the summary printed."""
    rows_there, unreadable = _task_rows(root, task)
    sheet = contact_sheet(root, task, rows_there, root / f"contact_sheet_{task}.png",
                          cfg.sheet_frames, unreadable)  # fmt: skip
    # grouped by plan, as this run's rows: an expert episode that missed (labelled failure
    # 'unknown') counts against the expert's success rate, which held its successes alone
    everything = [
        {"failure": _planned(r),  # as this run's rows: a planned failure that did not fire too
         "success": r["success"], "policy": _planned(r) == "policy",
         "max_progress": max(r["progress"]), "final_progress": r["progress"][-1]}
        for r in rows_there if r["episode_id"] not in unreadable
    ]  # fmt: skip
    if unreadable:
        logging.getLogger(__name__).warning(
            f"{len(unreadable)} {task} episodes in {root} cannot be read and are left out of the "
            f"summary and the contact sheet: {'; '.join(unreadable.values())}. To record one "
            "again, delete its row (episodes/<id>.parquet) and re-run the same command (it "
            "records only what is missing)"
        )
    summary = {
        "task": task,
        "dataset": str(root),
        "dataset_path": str(root.resolve()),  # what a later run into this run dir compares
        "this_run": summarize(rows, wall) if rows else {"episodes": 0},
        "dataset_total": summarize(everything),
        "skipped_existing": len(plans) - len(rows),
        "unreadable": list(unreadable.values()),
    }
    for folder in (root, run_dir):
        write_atomic(folder / "summary.json", json.dumps(summary, indent=2))
        write_atomic(folder / "summary.md", _markdown(task, summary["dataset_total"],
                                                      len(unreadable)))  # fmt: skip
    if sheet is not None and run_dir != root:
        with written_whole(run_dir / sheet.name) as partial:
            partial.write_bytes(sheet.read_bytes())
    print(_markdown(task, summary["dataset_total"], len(unreadable)))
    if rows:
        print(f"this run: {len(rows)} episodes in {wall:.0f} s ({60 * len(rows) / wall:.1f}/min)")
    print(f"dataset: {root}  (contact sheet: {sheet})")


def _task_rows(root: Path, task: str) -> tuple[list[dict], dict[str, str]]:
    """The rows of ``task``'s episodes in ``root`` (ids ``<task>-<seed>-...``: other tasks' files
    are not read), and for each episode whose row cannot be read, or whose video is gone, what
    is wrong, naming the file (episode id → message)."""
    from critic.data.episodes import EpisodeFormatError, _read_row, episode_of, finished_ids

    rows, unreadable = [], {}
    for episode_id in sorted(i for i in finished_ids(root) if episode_of(task, i)):
        path = root / "episodes" / f"{episode_id}.parquet"
        try:
            row = dict(_read_row(path))
            videos = json.loads(row["videos"])
            progress = [float(p) for p in row["progress"]]
            if not progress or not isinstance(row["success"], bool):
                raise ValueError("no progress, or a success that is not true or false")
            if not isinstance(row["failure_type"], str | None):
                raise ValueError("a failure_type that is not text or null")
            for video in (root / "videos" / v for v in videos.values()):
                if not video.is_file():
                    raise EpisodeFormatError(f"{video}: no such video file")
        except EpisodeFormatError as exc:
            unreadable[episode_id] = str(exc)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a row edited by hand
            unreadable[episode_id] = f"{path}: not an episode row ({type(exc).__name__}: {exc})"
        else:
            rows.append({**row, "episode_id": episode_id, "progress": progress})
    return rows, unreadable


def sheet_kind(row: dict) -> str | None:
    """The contact sheet's row an episode may show in: ``"policy"``, its failure type, or
    ``"expert"`` for an expert's plan that succeeded; ``None`` for one that fits none (an
    injected failure that reached the goal all the same had shown as the expert)."""
    planned = _planned(row)
    if planned == "policy":
        return "policy"
    if row["failure_type"]:
        return row["failure_type"]
    return "expert" if row["success"] and planned is None else None


def _planned(row: dict) -> str | None:
    """The failure a row was planned with (its id's suffix), for failures that did not happen;
    ``"policy"`` for a policy rollout (hindsight-relabelled or not)."""
    from critic.data.episodes import injected_failure, is_policy_rollout

    if is_policy_rollout(row["episode_id"]):
        return "policy"
    return injected_failure(row["episode_id"])


if __name__ == "__main__":
    main()
