"""The zero-shot RL report (experiments/rl_report.py): what it names of the runs it reports, on
hand-built runs and committed ones. Split from test_rl_results.py (the summaries themselves)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.experiments.rl_runs import run_dir


def test_the_report_names_the_task_options_the_runs_had(tmp_path):
    from rl_merge import merge_runs
    from rl_report import write_report
    from rl_results import summarise

    def floor(config):
        config["env"]["task_kwargs"] = {"min_start_distance": 0.15}

    for name, edit, line in [
        ("plain", None, None),
        ("floor", floor, "Task options (`env.task_kwargs`): `min_start_distance=0.15`. Every "
                         "condition's true reward, success and return below are those of the "
                         "task so configured."),
    ]:  # fmt: skip
        config, runs, sources = merge_runs([str(run_dir(tmp_path, name, edit))])
        out = tmp_path / f"{name}_report"
        out.mkdir()
        write_report(config, runs, summarise(runs), out, sources)
        lines = (out / "report.md").read_text().splitlines()
        assert [x for x in lines if x.startswith("Task options")] == ([line] if line else [])
        assert "critic `critic.vlm.VLMCritic` (viscritic-small)" in lines[2]


def test_the_report_lists_every_algorithm_option_so_an_override_shows(tmp_path):
    from rl_merge import merge_runs
    from rl_report import write_report
    from rl_results import summarise

    def entropy(config):
        config["algo"]["ent_coef"] = "auto_0.1"

    for name, edit in [("plain", None), ("entropy", entropy)]:
        config, runs, sources = merge_runs([str(run_dir(tmp_path, name, edit))])
        out = tmp_path / f"{name}_report"
        out.mkdir()
        write_report(config, runs, summarise(runs), out, sources)
        lines = (out / "report.md").read_text().splitlines()
        (line,) = [x for x in lines if x.startswith("Algorithm options")]
        # the fixture's run (γ 0.99): sac_small's options as they were, none of hydra's keys
        assert line.startswith(
            "Algorithm options (`algo`; the algorithm's defaults for the rest): "
            "`policy=MlpPolicy`, `learning_rate=0.001`, `buffer_size=100000`, "
            "`learning_starts=1000`, `batch_size=128`, `gamma=0.99`, "
        )
        assert "`policy_kwargs={'net_arch': [64, 64]}`" in line
        assert "_target_" not in line and "verbose" not in line
        assert line.endswith("`ent_coef=auto_0.1`.") == (name == "entropy")
        # the fixture's runs predate the final progress: the column says n/a, nothing breaks
        assert summarise(runs)["critic"]["test"]["final_progress_mean"] is None
        (row,) = [x for x in lines if x.startswith("| critic | 0.")]
        assert row.split(" | ")[4] == "n/a"


def test_the_report_names_a_model_less_critic_by_its_options(tmp_path):
    from rl_merge import merge_runs
    from rl_report import write_report
    from rl_results import summarise

    def noisy(config):
        config["critic"] = {"_target_": "critic.oracle.NoisyOracleCritic", "offset_sd": 0.1,
                            "step_sd": 0.0, "seed": 0}  # fmt: skip

    config, runs, sources = merge_runs([str(run_dir(tmp_path, "noisy", noisy))])
    write_report(config, runs, summarise(runs), tmp_path, sources)
    first = (tmp_path / "report.md").read_text().splitlines()[2]
    assert "critic `critic.oracle.NoisyOracleCritic` (offset_sd=0.1, step_sd=0.0, seed=0)" in first


def test_the_report_says_what_each_run_ran_on(tmp_path):
    from dataclasses import replace

    from rl_merge import merge_runs
    from rl_report import write_report
    from rl_results import MACHINE_PACKAGES, machine_record, summarise

    here = machine_record()
    assert {"cpu", "cores", "python", *MACHINE_PACKAGES} <= here.keys()
    assert all(isinstance(v, str) and v for v in here.values())
    import stable_baselines3
    import torch

    assert here["torch"] == torch.__version__  # e.g. 2.13.0+cpu
    assert here["stable-baselines3"] == stable_baselines3.__version__

    config, runs, _ = merge_runs([str(run_dir(tmp_path, "old"))])  # before machines were recorded
    write_report(config, runs, summarise(runs), tmp_path)
    lines = (tmp_path / "report.md").read_text().splitlines()
    assert "Ran on: not recorded (runs before 2026-12-05, night). A seed repeats a run only on " \
        "the same hardware and library versions." in lines  # fmt: skip

    one = {"cpu": "AMD EPYC", "cores": "2", "avx512": "yes", "python": "3.11.2", "torch": "2.13.0"}
    other = {**one, "avx512": "no"}
    runs = [replace(r, machine=one if r.condition != "critic" else other) for r in runs]
    write_report(config, runs, summarise(runs), tmp_path)
    lines = (tmp_path / "report.md").read_text().splitlines()
    assert "Ran on 2 setups (a merge). A seed repeats a run only on the same hardware and " \
        "library versions." in lines  # fmt: skip
    assert "- AMD EPYC, 2 cores (AVX-512: no), Python 3.11.2, torch 2.13.0: critic_seed0, " \
        "critic_seed1, critic_seed2" in lines  # fmt: skip
    # results.json keeps each run's record, and merge reads it back
    again = tmp_path / "again"
    again.mkdir()
    (again / "results.json").write_text((tmp_path / "results.json").read_text())
    _, merged, _ = merge_runs([str(again)])
    assert [r.machine for r in merged] == [r.machine for r in runs]
    # runs at other torch thread counts (merge= does not compare it, and a run's numbers depend
    # on it) read as one setup
    threads = [replace(r, machine={**one, "torch_threads": "2" if r.seed else "1"}) for r in runs]
    write_report(config, threads, summarise(threads), tmp_path)
    lines = (tmp_path / "report.md").read_text().splitlines()
    assert "- AMD EPYC, 2 cores (AVX-512: yes), Python 3.11.2, torch 2.13.0, torch threads 1: " \
        "critic_seed0, oracle_seed0, ground_truth_seed0" in lines  # fmt: skip


def test_the_report_names_the_options_of_the_reward_mode(tmp_path):
    from rl_merge import merge_runs
    from rl_report import write_report
    from rl_results import summarise

    def log(config):
        config["reward"].update(reward_mode="log", log_floor=0.02)

    def potential(config):
        config["reward"].update(reward_mode="potential", gamma=0.9)

    for name, edit, said in [("log", log, "reward mode `log` (floor 0.02), query every"),
                             ("pot", potential, "reward mode `potential` (γ 0.9), query every"),
                             ("plain", None, "reward mode `progress`, query every"),
                             # the newest frames, not frames over the episode: unnamed before
                             ("last", lambda c: c["reward"].update(frame_sampling="last"),
                              "frames per query, the last ones)")]:  # fmt: skip
        config, runs, sources = merge_runs([str(run_dir(tmp_path, name, edit))])
        write_report(config, runs, summarise(runs), tmp_path / name, sources)
        assert said in (tmp_path / name / "report.md").read_text().splitlines()[2]


def test_per_seed_counts_name_their_seeds_when_conditions_ran_other_seeds(tmp_path):
    from rl_merge import merge_runs
    from rl_report import write_report
    from rl_results import summarise

    truth = run_dir(tmp_path, "truth", keep=("ground_truth",))
    critic = run_dir(tmp_path, "critic", seed_offset=3, keep=("critic",))
    config, runs, sources = merge_runs([str(truth), str(critic)])
    write_report(config, runs, summarise(runs), tmp_path, sources)
    counts = {c: [(r.seed, sum(r.test_successes)) for r in runs if r.condition == c]
              for c in ("critic", "ground_truth")}  # fmt: skip
    line = next(x for x in (tmp_path / "report.md").read_text().splitlines()
                if x.startswith("Test successes per seed"))  # fmt: skip
    assert line == (
        "Test successes per seed (seed: successes): "
        + "; ".join(f"{c} {', '.join(f'{s}: {n}' for s, n in p)}" for c, p in counts.items())
        + "."
    )
    assert line.startswith("Test successes per seed (seed: successes): critic 3: ")
    assert line.endswith("ground_truth 0: 7, 1: 3, 2: 12.")


def test_the_curves_plot_the_points_every_run_has(tmp_path, monkeypatch):
    # a run with a shorter curve (cut short, or edited) was a raw numpy ValueError
    # ("inhomogeneous shape") from the plot, after the merge had read it
    import dataclasses

    from matplotlib.axes import Axes
    from rl_merge import merge_runs
    from rl_report import write_report
    from rl_results import summarise

    config, runs, sources = merge_runs([str(run_dir(tmp_path, "curves"))])
    runs[1] = dataclasses.replace(runs[1], timesteps=runs[1].timesteps[:-1],
                                  success_rate=runs[1].success_rate[:-1],
                                  true_return=runs[1].true_return[:-1])  # fmt: skip
    plotted, bands = [], []
    plot, fill = Axes.plot, Axes.fill_between
    monkeypatch.setattr(Axes, "plot", lambda ax, x, y, **kw: plotted.append((kw["label"], list(x),
                        list(y))) or plot(ax, x, y, **kw))  # fmt: skip
    monkeypatch.setattr(Axes, "fill_between", lambda ax, x, low, high, **kw: bands.append(
        (np.asarray(high) - np.asarray(low)) / 2) or fill(ax, x, low, high, **kw))  # fmt: skip
    write_report(config, runs, summarise(runs), tmp_path, sources)
    assert (tmp_path / "learning_curves.png").stat().st_size > 0
    # each condition a line of the mean over its seeds, on each of the two axes (success, return),
    # over the points all its runs have: the shortened run's condition one point less
    conditions = list(dict.fromkeys(r.condition for r in runs))
    assert [label for label, _, _ in plotted] == [c for c in conditions for _ in range(2)]
    for label, steps, mean in plotted[::2]:  # the success-rate axis
        mine = [r for r in runs if r.condition == label]
        points = min(len(r.timesteps) for r in mine)
        assert points == len(mine[0].timesteps) - (label == runs[1].condition)
        assert steps == list(mine[0].timesteps[:points])
        assert mean == pytest.approx([np.mean([r.success_rate[i] for r in mine])
                                      for i in range(points)])  # fmt: skip
    # the band is the sample SD over seeds, as the table's ± (it was the population SD: 18 %
    # narrower at three seeds)
    mine = [r for r in runs if r.condition == conditions[0]]
    points = min(len(r.timesteps) for r in mine)
    assert bands[0] == pytest.approx(
        np.std([r.success_rate[:points] for r in mine], axis=0, ddof=1)
    )


def test_the_report_says_what_the_conditions_it_holds_used(tmp_path):
    # it named the config's critic where no condition learned from it, listed train_freq and
    # gradient_steps where every learner trained once per episode instead, and described a
    # test of 0 start states
    from rl_merge import merge_runs
    from rl_report import write_report
    from rl_results import summarise

    def no_test(config):
        config["test_episodes"] = 0

    cases = [("both", ("oracle", "ground_truth"), None), ("oracle", ("oracle",), None),
             ("all", None, no_test)]  # fmt: skip
    reports = {}
    for name, keep, edit in cases:
        config, runs, sources = merge_runs([str(run_dir(tmp_path, name, edit, keep=keep))])
        (tmp_path / f"{name}_out").mkdir()
        write_report(config, runs, summarise(runs), tmp_path / f"{name}_out", sources)
        reports[name] = (tmp_path / f"{name}_out" / "report.md").read_text().splitlines()
    assert "critic `" not in reports["both"][2] and "critic `" not in reports["oracle"][2]
    assert "critic `critic.vlm.VLMCritic`" in reports["all"][2]
    relabelled = ("The learners trained once per episode (relabelled rewards), with as many "
                  "gradient steps as env steps: `train_freq` and `gradient_steps` below applied "
                  "to none.")  # fmt: skip
    assert reports["oracle"][3] == relabelled and relabelled not in reports["both"]
    assert reports["both"][3].startswith("The ground truth's learner trained at every step; ")
    # a train_freq of its own: said as it is ("at every step" was said of [2, episode] too)
    from rl_report import _every

    assert [_every(f) for f in (1, 4, [1, "episode"], (2, "episode"), [3, "step"])] == [
        "at every step", "every 4 steps", "once per episode", "every 2 episodes", "every 3 steps"
    ]  # fmt: skip
    assert not any(line.startswith("Test: each seed's final policy on the same 0 start")
                   for line in reports["all"])  # fmt: skip
    assert any(line.startswith("No test of the final policies (`test_episodes=0`)")
               for line in reports["all"])  # fmt: skip
