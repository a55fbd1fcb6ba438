"""The report of zero-shot RL runs: ``results.json``, the learning curves and ``report.md``.

Split from ``rl_results.py`` (what a run records, the summaries over seeds) along the
line between computing results and writing them down; ``zero_shot_rl.py`` and the tests import
both. Every option that changes what a figure means is named in the report: the algorithm's, the
task's, the critic's, the reward's, and where merged runs came from.
"""

from __future__ import annotations

import json
import logging
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf
from rl_results import (
    CONDITIONS,
    MACHINE_PACKAGES,
    TEST_SEED,
    RunResult,
    goal_distance,
    summarise,
)

from rollout.files import write_atomic, written_whole


def _mode_options(reward: DictConfig) -> str:
    """The options the reward mode reads, for the report: `` (γ 0.95)``, `` (floor 0.05)``."""
    if reward.reward_mode == "potential":
        return f" (γ {reward.gamma})"
    if reward.reward_mode == "log":
        return f" (floor {reward.get('log_floor', 0.05)})"
    return ""


def _added_rewards(reward: DictConfig) -> str:
    """What the report's first line says is added to the critic's reward, when anything is."""
    added = {"achieved_weight": "the critic's P(task achieved)",
             "env_reward_weight": "the true env reward"}  # fmt: skip
    terms = [f"{reward.get(key)} × {what}" for key, what in added.items() if reward.get(key)]
    return f", plus {' and '.join(terms)}" if terms else ""


def _critic_options(critic: DictConfig) -> str:
    """The critic's model in the report's first line, or its options when it has no model (a
    noisy oracle's error sizes, an ensemble's members)."""
    if critic.get("model"):
        return str(critic.model)
    options = OmegaConf.to_container(critic, resolve=True)
    return ", ".join(f"{key}={value}" for key, value in options.items() if key != "_target_")


# Keys of an algo config that say how it is built or how much it prints, not how it learns.
_ALGO_PLUMBING = ("_target_", "_partial_", "_convert_", "verbose")


def _algo_options(algo: DictConfig) -> list[str]:
    """The report's line on every option the algorithm was given (its own defaults fill the
    rest), so an override such as ``+algo.ent_coef=auto_0.1`` shows in the report it changed."""
    options = OmegaConf.to_container(algo, resolve=True)
    listed = ", ".join(
        f"`{key}={value}`" for key, value in options.items() if key not in _ALGO_PLUMBING
    )
    return [f"Algorithm options (`algo`; the algorithm's defaults for the rest): {listed}.", ""]


def _task_options(env: DictConfig) -> list[str]:
    """The report's line on the task's constructor options, when any are set: they can change
    what success, progress and the true reward mean (e.g. Reacher's ``min_start_distance``)."""
    options = OmegaConf.to_container(env, resolve=True).get("task_kwargs") or {}
    if not options:
        return []
    listed = ", ".join(f"`{key}={value}`" for key, value in options.items())
    return [
        f"Task options (`env.task_kwargs`): {listed}. Every condition's true reward, success "
        "and return below are those of the task so configured.",
        "",
    ]


def _steps_run(cfg: DictConfig, runs: list[RunResult]) -> str:
    """The step budget, as the runs ran it: an on-policy learner (PPO) stops after whole rollouts
    of ``n_steps`` per env, so ``total_timesteps=100`` runs 1024 env steps."""
    ran = sorted({r.env_steps for r in runs})
    if not ran or ran == [cfg.total_timesteps]:
        return f"{cfg.total_timesteps} env steps"
    rollout = cfg.algo.get("n_steps")
    why = (
        f", whole rollouts of algo.n_steps={rollout} per env"
        if rollout is not None and all(n % rollout == 0 for n in ran)
        else ""
    )
    steps = str(ran[0]) if len(ran) == 1 else f"{ran[0]} to {ran[-1]}"
    return f"{steps} env steps (total_timesteps={cfg.total_timesteps}{why})"


def write_report(
    cfg: DictConfig,
    runs: list[RunResult],
    summary: dict,
    out_dir: Path,
    sources: list[dict[str, Any]] | None = None,
) -> None:
    """results.json, report.md and learning_curves.png in the run dir; ``sources``: the run dirs
    a merged report's runs came from (:func:`merge_runs`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    write_atomic(  # merge= and the next run read it back: whole, or the earlier one
        out_dir / "results.json",
        json.dumps(
            {
                "config": OmegaConf.to_container(cfg, resolve=True),
                "summary": summary,
                **({"merged_from": sources} if sources else {}),
                "runs": [r.__dict__ for r in runs],
            },
            indent=2,
        ),
    )
    fig, (ax_s, ax_r) = plt.subplots(1, 2, figsize=(10, 3.8))
    for condition in dict.fromkeys(r.condition for r in runs):
        mine = [r for r in runs if r.condition == condition and r.timesteps]
        if not mine:
            continue
        # the points every run has (a run cut short, or edited, has fewer)
        steps = mine[0].timesteps[: min(len(r.timesteps) for r in mine)]
        for ax, key in ((ax_s, "success_rate"), (ax_r, "true_return")):
            values = np.array([getattr(r, key)[: len(steps)] for r in mine])
            mean = values.mean(axis=0)
            ax.plot(steps, mean, label=condition)
            if len(values) > 1:  # the sample SD over seeds, as the table beside it gives
                std = values.std(axis=0, ddof=1)
                ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    ax_s.set(xlabel="env steps", ylabel="true success rate", ylim=(-0.05, 1.05))
    ax_r.set(xlabel="env steps", ylabel="true return")
    ax_s.legend()
    fig.suptitle(
        f"{cfg.env.name}: {cfg.algo._target_.rsplit('.', 1)[-1]}"
        + (
            f", critic {cfg.critic._target_.rsplit('.', 1)[-1]}"
            if "critic" in cfg.conditions
            else ""
        )
    )
    fig.tight_layout()
    with written_whole(out_dir / "learning_curves.png") as partial:  # a full disk cut it short
        fig.savefig(partial, dpi=120, format="png")
    plt.close(fig)

    frames = cfg.reward.get("frames_per_query") or "the critic's own number of"
    # the config's critic, named only where a condition learned from it
    critic = (
        f"critic `{cfg.critic._target_}` ({_critic_options(cfg.critic)}), "
        if "critic" in cfg.conditions
        else ""
    )
    # the reward's options, where a condition learned from the reward wrapper (the true
    # reward's learners were neither relabelled nor interpolated)
    wrapped = {"critic", "oracle"} & set(cfg.conditions)
    lines = [
        f"# Zero-shot RL on {cfg.env.name}",
        "",
        f"Algorithm `{cfg.algo._target_}`{_discount(cfg.algo)}, {_steps_run(cfg, runs)}, "
        f"seeds {list(cfg.seeds)}{', ' if wrapped else ''}"
        f"{critic}"
        f"{_reward_clause(cfg, frames) if wrapped else ''}.",
        *_schedule(cfg),
        "",
        *_machines(runs),
        *_algo_options(cfg.algo),
        *_task_options(cfg.env),
        f"Test: each seed's final policy on the same {cfg.get('test_episodes', 0)} start states "
        f"(seeded {TEST_SEED}), deterministic; success is the task's true success at the episode's "
        f"end, as a rate (mean ± sample SD over seeds, n/a for one seed) and as a count over all seeds with its 95 % "
        f"Wilson interval, which takes the episodes as independent draws and so leaves out the "
        f"spread between seeds (the ± and the ratio's interval over seeds carry it); the true "
        f"final progress is the task's progress at the episode's end "
        "(mean over episodes: how near the policy gets). The learning curve's last point "
        f"({cfg.eval_episodes} episodes per seed) is beside it."
        if cfg.get("test_episodes", 0)
        else "No test of the final policies (`test_episodes=0`): the test columns read n/a; the "
        f"learning curve's last point ({cfg.eval_episodes} episodes per seed) is the result.",
        "",
        "| condition | true success (test) | successes, pooled (95 % Wilson) | true return (test) "
        "| true final progress (test) | true success (curve, last) | true return (curve, last) "
        "| wall s / run | env steps/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for condition, row in summary.items():
        if condition not in CONDITIONS:
            continue
        test = row["test"]
        tested = (
            (
                f"{_fmt(test['success_mean'])} ± {_fmt(test['success_std'])} "
                f"| {test['successes']} / {test['episodes']} "
                f"({_fmt(test['success_ci95'][0])}–{_fmt(test['success_ci95'][1])}) "
                f"| {_fmt(test['true_return_mean'])} | {_fmt(test['final_progress_mean'])}"
            )
            if test
            else "n/a | n/a | n/a | n/a"
        )
        lines.append(
            f"| {condition} | {tested} "
            f"| {_fmt(row['final_success_mean'])} ± {_fmt(row['final_success_std'])} "
            f"| {_fmt(row['final_true_return_mean'])} | {row['wall_seconds_mean']:.1f} "
            f"| {row['env_steps_per_second']:.0f} |"
        )
    if sources:
        lines += ["", f"Merged from {len(sources)} run dirs (`merge`):", ""]
        lines += [f"- `{x['run_dir']}`: {', '.join(x['runs'])}" for x in sources]
    per_seed = {  # (seed, successes) of each tested run, by condition
        c: [
            (r.seed, int(sum(r.test_successes)))
            for r in runs
            if r.condition == c and r.test_successes
        ]
        for c, row in summary.items()
        if c in CONDITIONS and row["test"]
    }
    seed_sets = {tuple(seed for seed, _ in pairs) for pairs in per_seed.values()}
    if len(seed_sets) == 1:
        listed = "; ".join(f"{c} {', '.join(str(n) for _, n in p)}" for c, p in per_seed.items())
        lines += ["", f"Test successes per seed (seeds {list(seed_sets.pop())}): {listed}."]
    elif per_seed:  # conditions with other seeds (a merge): each count beside its seed
        listed = "; ".join(
            f"{c} {', '.join(f'{seed}: {n}' for seed, n in p)}" for c, p in per_seed.items()
        )
        lines += ["", f"Test successes per seed (seed: successes): {listed}."]
    if "critic_vs_ground_truth" in summary:
        ratio = summary["critic_vs_ground_truth"]
        interval = ratio.get("success_ratio_ci95")
        spread = (
            f"; 95 % over seeds (Fieller, t): {_fmt(interval[0])}–"
            f"{'unbounded' if interval[1] is None else _fmt(interval[1])}"
            if interval
            else "; too few seeds or successes for an interval over seeds"
            if ratio["success_ratio_from"] == "test"
            else ""
        )
        apart = _dirs_holding(sources, "critic") != _dirs_holding(sources, "ground_truth")
        # (a merge of a critic and an oracle from two dirs timed them apart, on another hour)
        oracle_apart = _dirs_holding(sources, "critic") != _dirs_holding(sources, "oracle")
        lines += [
            "",
            f"Critic / ground truth: success ratio {_fmt(ratio['success_ratio'])} "
            f"(from the {ratio['success_ratio_from']}{spread}), "
            f"wall-time ratio {ratio['wall_time_ratio']:.2f}"
            + (" (not side by side: the two conditions ran in different run dirs)" if apart
               else "")
            + (f"; critic / oracle wall time {ratio['wall_time_ratio_to_oracle']:.2f} "
               + ("(not side by side: the two ran in different run dirs)" if oracle_apart
                  else "(the same schedule and wrapper: the critic's own cost)")
               if ratio.get("wall_time_ratio_to_oracle") else "")
            + ".",
        ]  # fmt: skip
    if "where_they_end" in summary:
        lines += _where_they_end(summary["where_they_end"], cfg.env.name)
    faithful = {
        c: row["training_episodes"]
        for c, row in summary.items()
        if c in CONDITIONS and "training_episodes" in row
    }
    if faithful:
        lines += [
            "",
            "The reward on the learner's own training episodes (last quarter of training, seeds "
            "pooled): the critic's final progress against the simulator's. A policy that games "
            "the critic shows here as a high critic progress, a low true one and false successes "
            f"(critic ≥ {cfg.reward.success_threshold} on an episode that truly failed).",
            "",
            "| condition | episodes | critic final progress | true final progress | mean abs diff "
            "| false-success rate | true success |",
            "|---|---|---|---|---|---|---|",
        ]
        for condition, f in faithful.items():
            lines.append(
                f"| {condition} | {f['episodes']} | {_fmt(f['critic_final_progress'])} "
                f"| {_fmt(f['true_final_progress'])} | {_fmt(f['final_progress_mae'])} "
                f"| {_fmt(f['false_success_rate'])} | {_fmt(f['true_success_rate'])} |"
            )
    lines += ["", "![learning curves](learning_curves.png)", ""]
    write_atomic(out_dir / "report.md", "\n".join(lines))


def _machines(runs: list[RunResult]) -> list[str]:
    """Where the runs ran (:func:`rl_results.machine_record`): one line for one setup, a line per
    setup with its runs for several (a merge of runs from different machines or versions)."""

    def setup(machine: dict[str, str]) -> str:
        parts = [f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores"]
        if "avx512" in machine:
            parts[0] += f" (AVX-512: {machine['avx512']})"
        if "gpu" in machine:
            parts.append(f"GPU {machine['gpu']}")
        parts.append(f"Python {machine.get('python', '?')}")
        parts += [f"{name} {machine[name]}" for name in MACHINE_PACKAGES if name in machine]
        if "torch_threads" in machine:  # a run's numbers depend on it (merge= does not compare it)
            parts.append(f"torch threads {machine['torch_threads']}")
        return ", ".join(parts)

    by_setup: dict[str, list[str]] = {}
    for run in runs:
        text = setup(run.machine) if run.machine else "not recorded (runs before 2026-12-05, night)"
        by_setup.setdefault(text, []).append(f"{run.condition}_seed{run.seed}")
    note = "A seed repeats a run only on the same hardware and library versions."
    if len(by_setup) == 1:
        return [f"Ran on: {next(iter(by_setup))}. {note}", ""]
    lines = [f"Ran on {len(by_setup)} setups (a merge). {note}", ""]
    lines += [f"- {text}: {', '.join(names)}" for text, names in by_setup.items()]
    return [*lines, ""]


def _where_they_end(ends: dict[str, Any], task: str) -> list[str]:
    """The report's section on where the final policies end, by where they start
    (:func:`rl_results.where_they_end`)."""
    if "unrecorded" in ends:
        return [
            "",
            "Where the final policies end: not in this report. These runs did not record the "
            f"task's state on the test (made before 2026-12-05): {', '.join(ends['unrecorded'])}.",
        ]
    names = list(ends["start_median"])
    key = ends["split_by"]
    lines = [""]
    if key is None:
        if ends.get("starts_alike"):
            why = (
                f"the test starts take fewer distinct values of its goal distance "
                f"`{ends['goal_key']}` than there are shares (median "
                f"{_fmt(ends['start_median'][ends['goal_key']])})"
            )
        elif ends.get("goal_key") is None:
            why = f"{task} names no distance to its goal (`envs.tasks.TaskSpec.goal_distance`)"
        else:
            why = f"its goal distance `{ends['goal_key']}` is not in every run's recorded states"
        lines.append(
            f"Where the final policies end (test): {why}, so the test starts are not split by it."
        )
    else:
        edges = ends["edges"]
        bounds = [f"< {edges[0]:.1f}"]
        bounds += [f"{low:.1f}–{high:.1f}" for low, high in pairwise(edges)]
        bounds += [f"≥ {edges[-1]:.1f}"]
        lines += [
            f"Where the final policies end (test), by where they start: the test's start states "
            f"in {len(bounds)} equal shares by `{key}` at the reset (the task's distance to its "
            "goal), the same shares for every condition; per share the true success rate and the "
            f"median `{key}` at the episode's end.",
            "",
            "| condition | " + " | ".join(f"start {b}" for b in bounds) + " |",
            "|---|" + "---|" * len(bounds),
        ]
        for condition, row in ends["conditions"].items():
            cells = [
                f"{_fmt(share['success'])}, ends at {_fmt(share['final_median'])}"
                for share in row["shares"]
            ]
            lines.append(f"| {condition} | " + " | ".join(cells) + " |")
    if not names:  # no quantity every run recorded
        return lines
    lines += [
        "",
        "The task's privileged state, median over the test episodes, at the reset (the same for "
        "every condition) and at the episode's end:",
        "",
        "| | " + " | ".join(f"`{n}`" for n in names) + " |",
        "|---|" + "---|" * len(names),
        "| start | " + " | ".join(_fmt(ends["start_median"][n]) for n in names) + " |",
    ]
    for condition, row in ends["conditions"].items():
        lines.append(
            f"| {condition}, end | "
            + " | ".join(_fmt(row["final_median"][n]) for n in names)
            + " |"
        )
    return lines


def _reward_clause(cfg: DictConfig, frames: Any) -> str:
    """The critic reward's options as the report's first line states them."""
    reward = cfg.reward
    return (
        f"reward mode `{reward.reward_mode}`{_mode_options(reward)}, query every "
        f"{reward.query_every} ({frames} frames per query"
        f"{'' if reward.get('frame_sampling', 'uniform') == 'uniform' else ', the last ones'})"
        f"{_added_rewards(reward)}"
        f"{', rewards relabelled at episode end' if cfg.relabel else ''}"
        f"{', interpolated between queries' if reward.get('between_queries') == 'interpolate' else ''}"
    )


def _dirs_holding(sources: list[dict[str, Any]] | None, condition: str) -> set[str]:
    """The merged run dirs that hold runs of ``condition`` (none for a report of one run)."""
    return {x["run_dir"] for x in sources or [] if any(r.startswith(f"{condition}_seed")
                                                      for r in x["runs"])}  # fmt: skip


def _discount(algo: DictConfig) -> str:
    """The learner's discount, which sets how far ahead it values reward (and moved the true
    reward's success more than twofold on Reacher: docs/rl_learner.md, "The learner's discount")."""
    return f" (discount γ = {algo.gamma})" if "gamma" in algo else ""


def _schedule(cfg: DictConfig) -> list[str]:
    """When the learners trained, said where it is not what the algorithm's options say: the
    relabelled learners train once per episode whatever ``algo.train_freq`` and
    ``algo.gradient_steps`` are, and the ground truth's may differ from theirs."""
    relabelled = cfg.relabel and {"critic", "oracle"} & set(cfg.conditions)
    if "ground_truth" not in cfg.conditions:
        # the options line lists the config's train_freq and gradient_steps: used by none here
        return (
            ["The learners trained once per episode (relabelled rewards), with as many gradient "
             "steps as env steps: `train_freq` and `gradient_steps` below applied to none."]
            if relabelled
            else []
        )  # fmt: skip
    if cfg.get("ground_truth_per_episode", False):
        return ["The ground truth's learner trained once per episode, with as many gradient steps "
                "as env steps (`ground_truth_per_episode=true`)."]  # fmt: skip
    if cfg.relabel and {"critic", "oracle"} & set(cfg.conditions):
        return [f"The ground truth's learner trained {_every(cfg.algo.get('train_freq', 1))}; the "
                "relabelled learners once per episode, with as many gradient steps."]  # fmt: skip
    return []


def _every(train_freq: Any) -> str:
    """When a learner of ``algo.train_freq`` trains, in words: ``at every step`` for 1."""
    n, unit = (train_freq if isinstance(train_freq, list | tuple | ListConfig)
               else (train_freq, "step"))  # fmt: skip
    if int(n) == 1:
        return "at every step" if unit == "step" else "once per episode"
    return f"every {int(n)} {unit}s"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def resume_advice(cfg: DictConfig, out_dir: Path) -> str:
    """How to train the runs a stopped experiment did not finish, in its own run dir (resume=true
    alone started a new, dated one), without overwrite=true (which a resume refuses); nothing
    for a merge=, which trains no run."""
    if cfg.get("merge") is not None:
        return ""
    drop = " without overwrite=true" if cfg.get("overwrite") is True else ""
    return (
        f"; to train the rest, run the same command{drop} with hydra.run.dir={out_dir} resume=true"
    )


def keep_finished(cfg: DictConfig, finished: list[RunResult], out_dir: Path) -> None:
    """After a failed run: the runs that finished, in results.json and the report (a partial
    experiment, which ``merge`` can join with a rerun of the rest)."""
    planned = len(cfg.conditions) * len(cfg.seeds)
    kept = OmegaConf.merge(
        cfg,
        {"conditions": list(dict.fromkeys(r.condition for r in finished)),
         "seeds": sorted({r.seed for r in finished})},
    )  # fmt: skip
    write_report(kept, finished, summarise(finished, cfg.reward.success_threshold,
                                           goal_distance(cfg)), out_dir)  # fmt: skip
    done = {(r.condition, r.seed) for r in finished}
    missing = {c: [int(s) for s in cfg.seeds if (c, int(s)) not in done] for c in cfg.conditions}
    rerun = "; ".join(
        f"conditions=[{c}] seeds=[{','.join(map(str, seeds))}]"
        for c, seeds in missing.items()
        if seeds
    )
    drop = " without overwrite=true" if cfg.get("overwrite") is True else ""
    logging.getLogger(__name__).warning(
        "%d of the %d runs finished before the experiment stopped; they are kept in %s "
        "(results.json, report.md). To train the others (%s), run the same command again%s with "
        "hydra.run.dir=%s resume=true (it keeps these; without hydra.run.dir= it would start a "
        "new dir); or run them into another hydra.run.dir= and join them with merge=[%s,<that "
        "dir>]",
        len(finished),
        planned,
        out_dir,
        rerun,
        drop,
        out_dir,
        out_dir,
    )
