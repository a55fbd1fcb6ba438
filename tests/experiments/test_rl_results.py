"""What a zero-shot RL run records and its summaries over seeds (experiments/rl_results.py), on
hand-built runs and a committed run. The report's wording is in test_rl_report.py, the merge of
earlier runs in test_rl_merge.py."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from tests.experiments.rl_runs import run_dir


def test_summary_reads_success_from_the_test_with_a_wilson_interval():
    from rl_results import RunResult, final_test_summary, summarise

    def run(condition, seed, successes, curve_success):
        return RunResult(
            condition, seed, [100], [curve_success], [-5.0], 10.0, 100,
            test_successes=successes, test_returns=[-4.0] * len(successes),
        )  # fmt: skip

    # ground truth: 1 of 10 and 3 of 10; critic: 0 of 10 and 2 of 10; the last curve point differs
    runs = [
        run("ground_truth", 0, [True] + [False] * 9, 0.0),
        run("ground_truth", 1, [True] * 3 + [False] * 7, 0.0),
        run("critic", 0, [False] * 10, 0.5),
        run("critic", 1, [True] * 2 + [False] * 8, 0.5),
    ]
    summary = summarise(runs)
    gt, cr = summary["ground_truth"]["test"], summary["critic"]["test"]
    assert (gt["successes"], gt["episodes"]) == (4, 20) and (cr["successes"], cr["episodes"]) == (
        2,
        20,
    )
    # rates 0.1 and 0.3: sample SD sqrt((0.1² + 0.1²) / (2 - 1)) = 0.1414 (the population SD,
    # 0.1, understated it); one seed has no spread to give: n/a, where it read "± 0.00"
    assert gt["success_mean"] == pytest.approx(0.2)
    assert gt["success_std"] == pytest.approx(0.1 * 2**0.5)
    one = final_test_summary([run("critic", 0, [True] + [False] * 9, 0.0)])
    assert one["success_std"] is None
    assert summarise(runs[:1])["ground_truth"]["final_success_std"] is None
    ratio = summary["critic_vs_ground_truth"]
    assert ratio["success_ratio"] == pytest.approx(0.1 / 0.2)  # not 0.5 / 0.0 from the curve
    assert ratio["success_ratio_from"] == "test"
    # Wilson, 1 of 10 at z = 1.96: centre (0.1 + 0.19208) / 1.38416 = 0.21102, half-width
    # 1.96 * sqrt(0.009 + 0.009604) / 1.38416 = 0.19314 -> 0.0179 .. 0.4042
    low, high = final_test_summary([run("critic", 0, [True] + [False] * 9, 0.0)])["success_ci95"]
    assert (low, high) == (pytest.approx(0.0179, abs=1e-4), pytest.approx(0.4042, abs=1e-4))
    # without a test (test_episodes=0) the ratio falls back to the curve's last point
    untested = [run("ground_truth", 0, [], 0.4), run("critic", 0, [], 0.2)]
    ratio = summarise(untested)["critic_vs_ground_truth"]
    assert ratio["success_ratio"] == pytest.approx(0.5)
    assert ratio["success_ratio_from"] == "last curve evaluation"
    assert summarise(untested)["critic"]["test"] is None
    assert ratio["success_ratio_ci95"] is None
    # a critic run with neither a test nor a curve point (a budget below eval_every) has no rate
    curveless = RunResult("critic", 0, [], [], [], 10.0, 100)
    assert summarise([untested[0], curveless])["critic_vs_ground_truth"]["success_ratio"] is None


def test_success_ratio_interval_over_seeds_by_hand():
    from rl_results import RunResult, success_ratio_interval, summarise

    # Fieller's interval with t at min(n) - 1 degrees of freedom. Three seeds a side, critic
    # 0.19, 0.2, 0.21 and true reward 0.39, 0.4, 0.41: means 0.2 and 0.4, each variance of the
    # mean 0.0001 / 3; t(0.975, 2) = 4.3027, t^2 = 18.513. a = 0.16 - 18.513 * 0.0001 / 3 =
    # 0.159383; the root sqrt(18.513 * (0.0001/3 * 0.16 + 0.0001/3 * 0.04) - 18.513^2 *
    # (0.0001/3)^2) = 0.011092; bounds (0.08 -+ 0.011092) / 0.159383 = 0.43234 and 0.57153
    assert success_ratio_interval([0.19, 0.2, 0.21], [0.39, 0.4, 0.41]) == [
        pytest.approx(0.43234, abs=2e-5),
        pytest.approx(0.57153, abs=2e-5),
    ]
    # wider seeds: the lower bound falls below 0 and is held at 0 (a ratio of rates)
    assert success_ratio_interval([0.1, 0.2, 0.3], [0.4, 0.5, 0.6]) == [
        0.0,
        pytest.approx(1.16146, abs=2e-5),
    ]
    # the issue's three seeds (critic 14, 9, 5; true reward 23, 31, 18 of 100): 0.00-1.52, where
    # the percentile bootstrap said 0.22-0.63 (it held the true ratio in 77 % of such draws)
    assert success_ratio_interval([0.14, 0.09, 0.05], [0.23, 0.31, 0.18]) == [
        0.0,
        pytest.approx(1.5232, abs=1e-4),
    ]
    # two seeds a side (t at 1 degree of freedom, 12.7): the true reward's mean is not known to
    # be above 0, so no upper bound
    assert success_ratio_interval([0.0, 0.2], [0.1, 0.3]) == [0.0, None]
    # every seed alike: without the episodes, the interval is the ratio itself
    assert success_ratio_interval([0.05] * 3, [0.1] * 3) == [pytest.approx(0.5)] * 2
    # with them, each side's variance of the mean is floored at its pooled count's binomial one.
    # Critic 0, 0, 0 and true reward 0.2, 0.25, 0.3, of 100 episodes each: z^2 = 3.841459;
    # critic p = 1.920729 / 303.841459 = 0.0063215, floor 0.0063215 * 0.9936785 / 300 =
    # 2.09384e-5 (its seeds' own 0); true reward: seeds 0.0025 / 3 = 8.3333e-4, above its floor
    # (p = 76.920729 / 303.841459 = 0.253161, 6.3024e-4). a = 0.0625 - 18.51282 * 8.3333e-4 =
    # 0.0470726; root sqrt(18.51282 * 2.09384e-5 * 0.0625 - 18.51282^2 * 2.09384e-5 * 8.3333e-4)
    # = 0.0042715; upper 0.0042715 / 0.0470726 = 0.09074 where the seeds alone said [0, 0]
    never, truth = [0.0] * 3, [0.2, 0.25, 0.3]
    assert success_ratio_interval(never, truth) == [0.0, 0.0]
    assert success_ratio_interval(never, truth, episodes=(300, 300)) == [
        0.0,
        pytest.approx(0.09074, abs=2e-5),
    ]
    # seeds that spread more than their binomial noise: the floor does not bind (the issue's
    # three seeds read the same 0.00-1.52)
    issue = [0.14, 0.09, 0.05], [0.23, 0.31, 0.18]
    assert success_ratio_interval(*issue, episodes=(300, 300)) == [
        0.0,
        pytest.approx(1.5232, abs=1e-4),
    ]
    # the true reward's mean not known above 0, the critic's known above 0: unbounded above,
    # and the ratios below the parabola's positive root still excluded (it read 0.00-unbounded).
    # Critic 0.5, 0.52, 0.48 (mean 0.5, variance of the mean 0.0004 / 3), true reward 0.05,
    # 0.40, 0.01 (mean 0.153333, variance of the mean 0.0920667 / 6 = 0.0153444): a = 0.0235111
    # - 18.51282 * 0.0153444 = -0.260558; c = 0.25 - 18.51282 * 0.000133333 = 0.247532; the
    # root sqrt(0.0766667^2 + 0.260558 * 0.247532) = 0.265280; (0.0766667 - 0.265280) /
    # -0.260558 = 0.72389
    lower, upper = success_ratio_interval([0.5, 0.52, 0.48], [0.05, 0.40, 0.01])
    assert lower == pytest.approx(0.72389, abs=2e-5) and upper is None
    # where the critic's mean is not known above 0 either, every ratio from 0 is in (above)
    assert success_ratio_interval([0.1], [0.2]) is None
    assert success_ratio_interval([0.1, 0.2], [0.0, 0.0]) is None

    def run(condition, seed, successes):
        return RunResult(condition, seed, [100], [0.0], [-5.0], 10.0, 100,
                         test_successes=[True] * successes + [False] * (10 - successes),
                         test_returns=[-4.0] * 10)  # fmt: skip

    runs = [run("ground_truth", 0, 1), run("ground_truth", 1, 3), run("critic", 0, 0),
            run("critic", 1, 2)]  # fmt: skip
    summary = summarise(runs)
    assert summary["critic"]["test"]["successes_per_seed"] == [0, 2]
    # the two-seed case above: critic 0.0 and 0.2, true reward 0.1 and 0.3
    assert summary["critic_vs_ground_truth"]["success_ratio_ci95"] == [0.0, None]
    # the critic's own cost beside the true reward's: against the oracle, on the same schedule
    # and wrapper (the true reward's learner may train at every step, cheaper per episode)
    timed = [run("ground_truth", 0, 1), run("critic", 0, 1), run("oracle", 0, 1)]
    for r, seconds in zip(timed, (80.0, 96.0, 72.0), strict=True):
        r.wall_seconds = seconds
    ratio = summarise(timed)["critic_vs_ground_truth"]
    assert ratio["wall_time_ratio"] == pytest.approx(1.2)
    assert ratio["wall_time_ratio_to_oracle"] == pytest.approx(96 / 72)
    assert summarise(timed[:2])["critic_vs_ground_truth"]["wall_time_ratio_to_oracle"] is None
    # the summary floors by the tests' episodes: three critic seeds that never succeed do not
    # read [0, 0]
    runs = [run("ground_truth", s, k) for s, k in enumerate((4, 5, 6))]
    runs += [run("critic", s, 0) for s in range(3)]
    interval = summarise(runs)["critic_vs_ground_truth"]["success_ratio_ci95"]
    assert interval[0] == 0.0 and interval[1] > 0.1


def test_success_ratio_interval_with_unequal_seeds_and_episodes_by_hand():
    from rl_results import RunResult, success_ratio_interval, summarise

    # Three critic seeds 0.1, 0.2, 0.3 and five true-reward seeds 0.4, 0.5, 0.5, 0.6, 0.5: each
    # side's variance of the mean over its own seeds, 0.01 / 3 = 0.0033333 and (0.01 + 0.01) / 4
    # / 5 = 0.001, and t at min(3, 5) - 1 = 2 degrees of freedom, t^2 = 18.5128. a = 0.25 -
    # 18.5128 * 0.001 = 0.231487; root sqrt(18.5128 * (0.0033333 * 0.25 + 0.001 * 0.04) -
    # 18.5128^2 * 0.0033333 * 0.001) = sqrt(0.016168 - 0.0011424) = 0.122578; bounds (0.1 -+
    # 0.122578) / 0.231487: below 0 (held at 0) and 0.96151. (t at 4 degrees read 0.07910 to
    # 0.74635; the truth's variance over 3 seeds, 0.005 / 3, read up to 1.01066.)
    assert success_ratio_interval([0.1, 0.2, 0.3], [0.4, 0.5, 0.5, 0.6, 0.5]) == [
        0.0,
        pytest.approx(0.96151, abs=2e-5),
    ]
    # Critic 0, 0, 0 of 20 episodes each (60), true reward 0.3, 0.4, 0.5 of 40 each (120): each
    # floor from its own side's count. z^2 = 3.841459. Critic p = 1.920729 / 63.841459 =
    # 0.030086, floor 0.030086 * 0.969914 / 60 = 4.86346e-4. True reward: seeds 0.01 / 3 =
    # 0.0033333 over its floor (p = 49.920729 / 123.841459 = 0.403102, 0.0020051). a = 0.16 -
    # 18.5128 * 0.0033333 = 0.0982906; root sqrt(18.5128 * 4.86346e-4 * 0.16 - 18.5128^2 *
    # 4.86346e-4 * 0.0033333) = sqrt(0.00144058 - 0.00055561) = 0.0297485; upper 0.0297485 /
    # 0.0982906 = 0.30266. (The counts swapped, the critic floored at 120 and the truth at 60,
    # read 0.16590.)
    never, truth = [0.0] * 3, [0.3, 0.4, 0.5]
    assert success_ratio_interval(never, truth, episodes=(60, 120)) == [
        0.0,
        pytest.approx(0.30266, abs=2e-5),
    ]

    def run(condition, seed, successes, episodes):
        return RunResult(condition, seed, [100], [0.0], [-5.0], 10.0, 100,
                         test_successes=[True] * successes + [False] * (episodes - successes),
                         test_returns=[-4.0] * episodes)  # fmt: skip

    # the summary gives each side its own count of test episodes: the same runs, the same bounds
    runs = [run("critic", s, 0, 20) for s in range(3)]
    runs += [run("ground_truth", s, k, 40) for s, k in enumerate((12, 16, 20))]
    summary = summarise(runs)
    assert (summary["critic"]["test"]["episodes"], summary["ground_truth"]["test"]["episodes"]) == (
        60,
        120,
    )
    assert summary["critic_vs_ground_truth"]["success_ratio_ci95"] == [
        0.0,
        pytest.approx(0.30266, abs=2e-5),
    ]


def test_fidelity_summary_pools_the_last_quarter_of_each_run():
    from rl_results import RunResult, fidelity_summary

    def run(episodes):
        return RunResult("critic", 0, [], [], [], 1.0, 0, episodes=episodes)

    a = run([(t, 0.1, 0.1, False) for t in range(50, 301, 50)])  # last 400: only t > 300 count
    a.episodes += [(350, 0.96, 0.60, False), (400, 0.97, 1.00, True)]
    b = run([(100, 0.9, 0.0, False), (200, 0.50, 0.70, False)])  # last 200: only t > 150 counts
    f = fidelity_summary([a, b, run([])], success_threshold=0.95)
    assert f["episodes"] == 3
    assert f["critic_final_progress"] == pytest.approx((0.96 + 0.97 + 0.50) / 3)
    assert f["true_final_progress"] == pytest.approx((0.60 + 1.00 + 0.70) / 3)
    assert f["final_progress_mae"] == pytest.approx((0.36 + 0.03 + 0.20) / 3)
    assert f["false_success_rate"] == 0.5  # of the two true failures, one read as a success
    assert f["true_success_rate"] == pytest.approx(1 / 3)
    assert fidelity_summary([run([])], 0.95) is None
    # a failed episode read exactly at the threshold is a false success ("at or above")
    at = fidelity_summary([run([(10, 0.9499, 0.5, False), (20, 0.95, 0.5, False)])], 0.95)
    assert at["episodes"] == 1 and at["false_success_rate"] == 1.0
    both = fidelity_summary([run([(40, 0.95, 0.5, False), (40, 0.9499, 0.5, False)])], 0.95)
    assert both["false_success_rate"] == 0.5


def test_where_they_end_splits_the_shared_test_starts_into_equal_shares_by_hand(tmp_path):
    from rl_merge import merge_runs
    from rl_report import write_report
    from rl_results import RunResult, summarise, where_they_end

    starts = [5.0, 10.0, 15.0, 20.0, 25.0, 30.0]  # the same six test starts for both conditions

    def run(condition, ends, successes):
        return RunResult(
            condition, 0, [100], [0.0], [-5.0], 10.0, 100,
            test_successes=successes, test_returns=[-4.0] * 6, test_final_progress=[0.5] * 6,
            test_start_state=[{"fingertip_to_target_cm": s} for s in starts],
            test_final_state=[{"fingertip_to_target_cm": e} for e in ends],
        )  # fmt: skip

    runs = [
        run("critic", [1.0, 3.0, 4.0, 8.0, 12.0, 20.0], [True, False, False, False, False, False]),
        run("ground_truth", [1.0, 1.5, 1.0, 3.0, 1.5, 4.0], [True, True, True, False, True, False]),
    ]
    goal = "fingertip_to_target_cm"  # envs.get_task("Reacher-v5").goal_distance
    ends = where_they_end(runs, goal)
    # twelve pooled starts 5, 5, 10, 10, ..., 30, 30: the 1/3 quantile lies 2/3 of the way from
    # the 4th (10) to the 5th (15), 13.33; the 2/3 quantile 1/3 of the way from 20 to 25, 21.67
    assert ends["split_by"] == "fingertip_to_target_cm"
    assert ends["edges"] == [pytest.approx(40 / 3), pytest.approx(65 / 3)]
    assert ends["start_median"] == {"fingertip_to_target_cm": 17.5}
    critic, truth = ends["conditions"]["critic"], ends["conditions"]["ground_truth"]
    # shares: starts 5 and 10, 15 and 20, 25 and 30
    assert [s["episodes"] for s in critic["shares"]] == [2, 2, 2]
    assert [s["success"] for s in critic["shares"]] == [0.5, 0.0, 0.0]
    assert [s["final_median"] for s in critic["shares"]] == [2.0, 6.0, 16.0]
    assert [s["success"] for s in truth["shares"]] == [1.0, 0.5, 0.5]
    assert [s["final_median"] for s in truth["shares"]] == [1.25, 2.0, 2.75]
    assert critic["final_median"] == {"fingertip_to_target_cm": 6.0}  # median of 1, 3, 4, 8, 12, 20
    assert summarise(runs, goal_key=goal)["where_they_end"] == ends

    report_cfg = OmegaConf.create(
        json.loads((run_dir(tmp_path, "any") / "results.json").read_text())["config"]
    )
    write_report(report_cfg, runs, summarise(runs, goal_key=goal), tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "3 equal shares by `fingertip_to_target_cm` at the reset" in report
    assert "| condition | start < 13.3 | start 13.3–21.7 | start ≥ 21.7 |" in report
    assert "| critic | 0.50, ends at 2.00 | 0.00, ends at 6.00 | 0.00, ends at 16.00 |" in report
    assert "| start | 17.50 |" in report and "| ground_truth, end | 1.50 |" in report

    # a start on an edge is in the share above it, as the report's "start ≥" says: pooled
    # starts 0, 0, 10, 10, 20, 20, 30, 30 put the edges on 10 and 20 exactly
    on_edges = [run(r.condition, [1.0] * 4, [True] * 4) for r in runs]
    for r in on_edges:
        r.test_start_state = [{goal: s} for s in (0.0, 10.0, 20.0, 30.0)]
    split = where_they_end(on_edges, goal)
    assert split["edges"] == [10.0, 20.0]
    assert [s["episodes"] for s in split["conditions"]["critic"]["shares"]] == [1, 1, 2]

    # a task that names no goal distance (Lift, Door): the medians, no split
    unsplit = where_they_end(runs, None)
    assert unsplit["split_by"] is None and unsplit["edges"] == []
    assert unsplit["conditions"]["critic"] == {"final_median": {goal: 6.0}}
    write_report(report_cfg, runs, summarise(runs), tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "Reacher-v5 names no distance to its goal" in report and "equal shares" not in report
    assert "| start | 17.50 |" in report and "| critic, end | 6.00 |" in report
    # the task names one, but a run's states lack it (another name, hand-edited): said so
    from dataclasses import replace

    renamed = replace(runs[1], test_start_state=[{"d_cm": x} for x in starts],
                      test_final_state=[{"d_cm": 1.0}] * 6)  # fmt: skip
    lacking = where_they_end([runs[0], renamed], goal)
    assert lacking["goal_key"] == goal and lacking["split_by"] is None
    write_report(report_cfg, [runs[0], renamed], summarise([runs[0], renamed], goal_key=goal),
                 tmp_path)  # fmt: skip
    report = (tmp_path / "report.md").read_text()
    assert "its goal distance `fingertip_to_target_cm` is not in every run's recorded states, so " \
        "the test starts are not split by it." in report  # fmt: skip
    assert "The task's privileged state" not in report  # no quantity both runs recorded

    # every start as far from the goal (docs/tasks.md's cheetah, 300 cm at each reset): the three
    # shares' edges coincide, and two shares held nothing; no split, and the report says why
    alike = [replace(r, test_start_state=[{goal: 300.0}] * 6) for r in runs]
    same = where_they_end(alike, goal)
    assert same["split_by"] is None and same["starts_alike"] and same["edges"] == []
    assert same["start_median"] == {goal: 300.0}
    write_report(report_cfg, alike, summarise(alike, goal_key=goal), tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "the test starts take fewer distinct values of its goal distance " \
        "`fingertip_to_target_cm` than there are shares (median 300.00)" in report  # fmt: skip
    assert "equal shares" not in report

    # runs made before the states were recorded (the committed run of 2026-12-04), merged with
    # new ones: the report names the runs that lack them
    _, old_runs, _ = merge_runs([str(run_dir(tmp_path, "old"))])
    assert where_they_end(old_runs + runs, goal) == {
        "unrecorded": [f"{r.condition}_seed{r.seed}" for r in old_runs if r.test_successes]
    }
    write_report(report_cfg, old_runs, summarise(old_runs, goal_key=goal), tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "Where the final policies end: not in this report. These runs did not record" in report
    assert where_they_end(runs[:0], goal) is None
