"""Merging the results.json of earlier zero-shot RL runs (experiments/rl_merge.py): what must agree,
what a results.json must hold, and the merged config, on hand-built run dirs."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from tests.experiments.rl_runs import run_dir


def test_merge_joins_the_seeds_of_earlier_runs_and_refuses_what_does_not_compare(tmp_path):
    from rl_merge import merge_runs
    from rl_results import ExperimentConfigError, summarise

    first = run_dir(tmp_path, "first")
    more = run_dir(tmp_path, "more", seed_offset=3, keep=("critic", "ground_truth"))
    config, runs, sources = merge_runs([str(first), str(more)])
    assert list(config.seeds) == [0, 1, 2, 3, 4, 5]
    assert list(config.conditions) == ["critic", "oracle", "ground_truth"]
    assert [(r.condition, r.seed) for r in runs][:6] == [("critic", s) for s in range(6)]
    assert sources[1] == {"run_dir": str(more),
                          "runs": [f"{c}_seed{s}" for c in ("critic", "ground_truth")
                                   for s in (3, 4, 5)]}  # fmt: skip
    summary = summarise(runs)
    # the default run: critic 2, 3, 8 and truth 7, 3, 12 of 100; the copy repeats them
    assert summary["critic"]["test"]["successes_per_seed"] == [2, 3, 8, 2, 3, 8]
    assert summary["critic"]["test"]["successes"] == 26
    assert summary["critic_vs_ground_truth"]["success_ratio"] == pytest.approx(13 / 22)
    assert summary["oracle"]["seeds"] == [0, 1, 2]

    # the true reward's learner never sees the reward's options: a run of it alone merges
    def bonus(config):
        config["reward"]["achieved_weight"] = 1.0

    truth = run_dir(tmp_path, "truth", bonus, seed_offset=6, keep=("ground_truth",))
    assert len(merge_runs([str(first), str(truth)])[1]) == 12
    # ... but a critic learner with another reward does not
    critic = run_dir(tmp_path, "critic", bonus, seed_offset=6, keep=("critic",))
    with pytest.raises(
        ExperimentConfigError,
        match=r"first has reward.achieved_weight=0.0 and .*critic has reward.achieved_weight=1.0;",
    ):
        merge_runs([str(first), str(critic)])

    # the reward's discount is compared only where the reward uses it (reward_mode=potential)
    def discount(config):
        config["reward"]["gamma"] = 0.5

    other = run_dir(tmp_path, "other", discount, seed_offset=12, keep=("critic",))
    assert len(merge_runs([str(first), str(other)])[1]) == 12

    def potential(config):
        config["reward"]["reward_mode"] = "potential"

    shaped = run_dir(tmp_path, "shaped", potential, seed_offset=12, keep=("critic",))
    shaped_other = run_dir(tmp_path, "shaped_other", lambda c: (potential(c), discount(c)), 15,
                            keep=("critic",))  # fmt: skip
    with pytest.raises(ExperimentConfigError, match=r"shaped_other has reward.gamma=0.5;"):
        merge_runs([str(shaped), str(shaped_other)])

    # so is the log mode's floor, under the log mode only (runs made before it lack it)
    def floor(config):
        config["reward"]["log_floor"] = 0.2

    floored = run_dir(tmp_path, "floored", floor, seed_offset=18, keep=("critic",))
    assert len(merge_runs([str(first), str(floored)])[1]) == 12

    def log(config):
        config["reward"]["reward_mode"] = "log"

    logged = run_dir(tmp_path, "logged", log, seed_offset=21, keep=("critic",))
    log_other = run_dir(tmp_path, "log_other", lambda c: (log(c), floor(c)), 24, keep=("critic",))
    with pytest.raises(ExperimentConfigError, match=r"log_other has reward.log_floor=0.2;"):
        merge_runs([str(logged), str(log_other)])
    # the oracle learns through the critic's wrapper and options: a critic of one dir and an
    # oracle of another were never compared, and the report stated the critic's reward for both
    oracle_shaped = run_dir(tmp_path, "oracle_shaped", potential, 27, keep=("oracle",))
    with pytest.raises(
        ExperimentConfigError, match=r"oracle_shaped has reward.reward_mode='potential'"
    ):
        merge_runs([f"{first}:critic", str(oracle_shaped)])
    assert len(merge_runs([str(shaped), str(oracle_shaped)])[1]) == 6
    # a run made before reward.achieved_weight existed ran at 0: it merges with one that says so
    old = run_dir(tmp_path, "old", lambda c: c["reward"].pop("achieved_weight"), 30, ("critic",))
    assert len(merge_runs([str(first), str(old)])[1]) == 12
    # a misspelled condition is named, not read as part of a folder's name
    with pytest.raises(ExperimentConfigError, match=r"'critc' is not a condition; write <run dir>"):
        merge_runs([f"{first}:critc"])
    # runs made before ground_truth_per_episode existed trained the truth at every step
    schedule = run_dir(tmp_path, "schedule", lambda c: c.update(ground_truth_per_episode=True), 9,
                        keep=("ground_truth",))  # fmt: skip
    with pytest.raises(ExperimentConfigError, match=r"schedule has ground_truth_per_episode=True"):
        merge_runs([str(first), str(schedule)])
    stepwise = run_dir(tmp_path, "stepwise", lambda c: c.update(ground_truth_per_episode=False),
                        9, keep=("ground_truth",))  # fmt: skip
    assert merge_runs([str(first), str(stepwise)])[0].ground_truth_per_episode is False
    longer = run_dir(tmp_path, "longer", lambda c: c.update(total_timesteps=40000), 3)
    with pytest.raises(ExperimentConfigError, match=r"longer has total_timesteps=40000"):
        merge_runs([str(first), str(longer)])
    with pytest.raises(
        ExperimentConfigError, match=r"critic seed 0 is in both .*first and .*first"
    ):
        merge_runs([str(first), str(first)])
    # <run dir>:<condition> takes that condition's runs only
    _, runs, _ = merge_runs([f"{first}:critic", f"{more}:ground_truth"])
    assert {(r.condition, r.seed) for r in runs} == {("critic", 0), ("critic", 1), ("critic", 2),
        ("ground_truth", 3), ("ground_truth", 4), ("ground_truth", 5)}  # fmt: skip
    with pytest.raises(ExperimentConfigError, match=r"more has no oracle runs"):
        merge_runs([f"{more}:oracle"])
    with pytest.raises(ExperimentConfigError, match=r"nowhere.results\.json is not a results"):
        merge_runs([str(tmp_path / "nowhere")])
    # hand-edited or torn results.json files: what is missing is named
    config = json.loads((first / "results.json").read_text())["config"]
    good = json.loads((first / "results.json").read_text())["runs"][0]
    for name, results, message in [
        ("noconf", {"config": {}, "runs": [good]},
         r"its config must hold \['env', 'algo', 'total_timesteps', 'critic', 'reward', "
         r"'relabel'\], it has \[\]"),
        ("empty", {"config": config, "runs": []}, r"it holds no runs \(runs=\[\]\)"),
        ("torn", {"config": config, "runs": [{"condition": "critic", "seed": 0}]},
         r"a run without \['env_steps', 'success_rate', 'timesteps', 'true_return', "
         r"'wall_seconds'\]"),
        ("magic", {"config": config, "runs": [{**good, "condition": "magic"}]},
         r"a run of condition 'magic', not one of \('critic', 'oracle', 'ground_truth'\)"),
        ("seedstr", {"config": config, "runs": [{**good, "seed": "abc"}]},
         r"a run whose seed is 'abc', not an int"),
        # the test's lists hold one entry per test episode (good has 100), states map to numbers
        ("short", {"config": config, "runs": [{**good, "test_start_state": [{"d_cm": 1.0}] * 2}]},
         r"run critic_seed0: test_start_state must be a list of one entry per test episode "
         r"\(100\), it is \[\{'d_cm': 1\.0\}, \{'d_cm': 1\.0\}\]"),
        ("notnum", {"config": config, "runs": [{**good, "test_final_state": [{"d_cm": "x"}] * 100,
                                                "test_start_state": [{"d_cm": 1}] * 100}]},
         r"run critic_seed0: test_final_state must hold one mapping of names to finite numbers "
         r"per test episode, it holds \{'d_cm': 'x'\}"),
        # one NaN start made the start thirds' edges NaN
        ("nan", {"config": config, "runs": [{**good, "test_start_state": [{"d_cm": float("nan")}] * 100}]},
         r"test_start_state must hold one mapping of names to finite numbers"),
        # values the summary reads: each was a raw TypeError, ValueError or ZeroDivisionError
        ("nullwall", {"config": config, "runs": [{**good, "wall_seconds": None}]},
         r"run critic_seed0: wall_seconds=None must be a number > 0"),
        ("zerowall", {"config": config, "runs": [{**good, "wall_seconds": 0}]},
         r"run critic_seed0: wall_seconds=0 must be a number > 0"),
        ("curve", {"config": config, "runs": [{**good, "success_rate": good["success_rate"][:-1]}]},
         r"run critic_seed0: timesteps, success_rate and true_return must be lists of numbers of "
         r"one length"),
        ("ratestr", {"config": config, "runs": [{**good, "success_rate": ["0.5"] * len(good["timesteps"])}]},
         r"must be lists of numbers of one length"),
        ("rows", {"config": config, "runs": [{**good, "episodes": [[1, 0.5, 0.4]]}]},
         r"run critic_seed0: episodes must be a list of \[timestep, critic progress, true "
         r"progress, success\] rows"),
        ("successstr", {"config": config, "runs": [{**good, "test_successes": ["yes"] * 100}]},
         r"run critic_seed0: test_successes must be a list of true/false"),
        ("nothreshold", {"config": {**config, "reward": {k: v for k, v in config["reward"].items()
                                                         if k != "success_threshold"}}, "runs": [good]},
         r"its config has no reward\.success_threshold"),
        ("machine", {"config": config, "runs": [{**good, "machine": {"cores": 2}}]},
         r"run critic_seed0: machine must map names to version strings, it is \{'cores': 2\}"),
        ("noreturns", {"config": config, "runs": [{**good, "test_returns": None}]},
         r"run critic_seed0: test_returns must be a list of one entry per test episode \(100\), "
         r"it is None"),
        ("tests", {"config": config, "runs": [{**good, "test_successes": 3}]},
         r"run critic_seed0: test_successes must be a list, it is 3"),
    ]:  # fmt: skip
        folder = tmp_path / name
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps(results))
        with pytest.raises(
            ExperimentConfigError, match=rf"{name}.results\.json is not a .*{message}"
        ):
            merge_runs([str(folder)])
    # null is absent: a run written with nulls for what it did not record merges
    folder = tmp_path / "nulls"
    folder.mkdir()
    nulls = {**good, "machine": None, "episodes": None, "test_final_progress": None,
             "test_start_state": None, "test_final_state": None}  # fmt: skip
    (folder / "results.json").write_text(json.dumps({"config": config, "runs": [nulls]}))
    (run,) = merge_runs([str(folder)])[1]
    assert run.machine == {} and run.episodes == [] and run.test_start_state == []


def test_a_merge_takes_the_critic_of_the_critic_runs_whole(tmp_path):
    from rl_merge import merge_runs
    from rl_report import write_report
    from rl_results import summarise

    oracle = {"_target_": "critic.oracle.OracleCritic", "needs_frames": False}
    truth = run_dir(tmp_path, "truth", keep=("ground_truth",))  # its config names viscritic-small
    critic = run_dir(tmp_path, "critic", lambda c: c.update(critic=oracle), keep=("critic",))
    config, runs, sources = merge_runs([str(truth), str(critic)])
    assert OmegaConf.to_container(config.critic) == oracle  # no keys of the unused critic
    merged = tmp_path / "merged"
    merged.mkdir()
    write_report(config, runs, summarise(runs), merged, sources)
    assert "critic `critic.oracle.OracleCritic` (needs_frames=False)" in (
        (merged / "report.md").read_text()
    )
    # ... so the merged dir merges again with more runs of the same critic
    more = run_dir(tmp_path, "more", lambda c: c.update(critic=oracle), 3, keep=("critic",))
    assert len(merge_runs([str(merged), str(more)])[1]) == 9


def test_resume_reads_the_finished_runs_this_command_asks_for_and_checks_their_options(tmp_path):
    from rl_merge import RUN_RECORD, finished_runs
    from rl_results import ExperimentConfigError

    folder = run_dir(tmp_path, "stopped", keep=("critic", "ground_truth"))
    results = json.loads((folder / "results.json").read_text())
    cfg = OmegaConf.create({**results["config"], "seeds": [0, 1, 2, 3]})
    runs = finished_runs(cfg, folder)  # config order: each condition's seeds
    assert [(r.condition, r.seed) for r in runs] == [("critic", s) for s in (0, 1, 2)] + [
        ("ground_truth", s) for s in (0, 1, 2)
    ]
    # a run's own record (a main process killed before results.json) counts, and comes first
    (folder / "oracle_seed3").mkdir()
    record = {**results["runs"][0], "condition": "oracle", "seed": 3}
    (folder / "oracle_seed3" / RUN_RECORD).write_text(
        json.dumps({"config": results["config"], "run": record})
    )
    assert ("oracle", 3) in [(r.condition, r.seed) for r in finished_runs(cfg, folder)]
    # finished runs this command does not ask for are refused: its results.json lost them
    only = OmegaConf.merge(cfg, {"conditions": ["ground_truth"], "seeds": [1]})
    with pytest.raises(ExperimentConfigError, match=r"holds oracle seed 3, a finished run this "
                       r"command does not ask for; resume with the stopped run's conditions="):  # fmt: skip
        finished_runs(only, folder)
    # another budget, or another reward for a critic's learner, makes no comparison
    with pytest.raises(ExperimentConfigError) as err:
        finished_runs(OmegaConf.merge(cfg, {"total_timesteps": 40000}), folder)
    assert str(err.value).startswith("resume=true: ") and (
        "with total_timesteps=20000, this command gives total_timesteps=40000; resume with the "
        "stopped run's options (its .hydra/overrides.yaml), or give a new hydra.run.dir="
    ) in str(err.value)
    with pytest.raises(
        ExperimentConfigError,
        match=r"ran oracle seed 3 with reward\.achieved_weight"
        r"=0\.0, this command gives reward\.achieved_weight=1\.0; resume with",
    ):
        finished_runs(OmegaConf.merge(cfg, {"reward": {"achieved_weight": 1.0}}), folder)
    # ... but the true reward's learner never sees the reward's options
    alone = run_dir(tmp_path, "truth", keep=("ground_truth",))
    truth = OmegaConf.merge(cfg, {"conditions": ["ground_truth"], "reward": {"achieved_weight": 1.0}})  # fmt: skip
    assert len(finished_runs(truth, alone)) == 3
    # a report merge= made is no stopped run: its runs and policies are in other dirs
    merged = json.loads((alone / "results.json").read_text())
    (alone / "results.json").write_text(json.dumps({**merged, "merged_from": [{"run_dir": "x"}]}))
    with pytest.raises(ExperimentConfigError, match=r"holds a report merge= made, not a stopped"):
        finished_runs(truth, alone)
    # a record that does not read is named, with what to do
    (folder / "oracle_seed3" / RUN_RECORD).write_text("{")
    with pytest.raises(ExperimentConfigError) as err:
        finished_runs(cfg, folder)
    assert str(err.value).startswith(f"resume=true: {folder / 'oracle_seed3' / RUN_RECORD} does "
                                     "not read (JSONDecodeError(")  # fmt: skip
    assert str(err.value).endswith("delete its folder to train that run again")


def test_a_killed_run_s_records_that_ran_with_other_options_are_not_merged(tmp_path):
    # a second experiment into a killed run's dir (the guard knew only this command's seeds), or
    # overwrite=true with fewer seeds killed in turn: merge= joined its records under the first's
    # config, γ 0.95 and 0.99 in one report
    from rl_merge import RUN_RECORD, merge_runs
    from rl_results import ExperimentConfigError

    results = json.loads((run_dir(tmp_path, "source") / "results.json").read_text())
    killed = tmp_path / "killed"
    for seed, gamma in ((0, 0.95), (1, 0.99)):
        (killed / f"oracle_seed{seed}").mkdir(parents=True)
        config = {**results["config"], "algo": {**results["config"]["algo"], "gamma": gamma}}
        run = {**next(r for r in results["runs"] if r["condition"] == "oracle"), "seed": seed}
        (killed / f"oracle_seed{seed}" / RUN_RECORD).write_text(
            json.dumps({"config": config, "run": run})
        )
    with pytest.raises(ExperimentConfigError) as err:
        merge_runs([str(killed)])
    assert str(err.value) == (
        f"merge: {killed} holds no results.json, and its runs' records ran with other options: "
        f"{killed / 'oracle_seed0' / RUN_RECORD} with algo.gamma=0.95, "
        f"{killed / 'oracle_seed1' / RUN_RECORD} with algo.gamma=0.99; merge each experiment's "
        "runs from a folder of their own"
    )
    # the same options: one experiment, rebuilt
    record = json.loads((killed / "oracle_seed1" / RUN_RECORD).read_text())
    record["config"]["algo"]["gamma"] = 0.95
    (killed / "oracle_seed1" / RUN_RECORD).write_text(json.dumps(record))
    assert [r.seed for r in merge_runs([str(killed)])[1]] == [0, 1]
    # a critic's record beside the oracle's with another reward: compared as merge compares
    # two dirs (the report had stated the first's reward for both)
    (killed / "critic_seed0").mkdir()
    critic = {**record["config"], "reward": {**record["config"]["reward"], "reward_mode": "log"}}
    run = {**next(r for r in results["runs"] if r["condition"] == "critic"), "seed": 0}
    (killed / "critic_seed0" / RUN_RECORD).write_text(json.dumps({"config": critic, "run": run}))
    with pytest.raises(ExperimentConfigError, match=r"critic_seed0.* with "
                       r"reward.reward_mode='log', .*oracle_seed0.* with reward.reward_mode='progress'"):  # fmt: skip
        merge_runs([str(killed)])
    (killed / "critic_seed0" / RUN_RECORD).unlink()
    (killed / "critic_seed0").rmdir()
    # a run results.json holds without a record of its own is checked with the records: one
    # at γ 0.99 had joined them under the first record's 0.95
    other = {**results["config"], "algo": {**results["config"]["algo"], "gamma": 0.99}}
    lone = {**next(r for r in results["runs"] if r["condition"] == "oracle"), "seed": 5}
    (killed / "results.json").write_text(json.dumps({**results, "config": other, "runs": [lone]}))
    with pytest.raises(ExperimentConfigError, match=r"holds runs its results.json lacks, and its "
                       r"runs ran with other options: .* with algo.gamma=0.95, .*results.json "
                       r"with algo.gamma=0.99"):  # fmt: skip
        merge_runs([str(killed)])
    # a results.json of seed 0 alone (written when a first run stopped), and a resume that
    # finished seed 1, then was killed: the merge read results.json alone and lost seed 1
    first = json.loads((killed / "oracle_seed0" / RUN_RECORD).read_text())
    (killed / "results.json").write_text(
        json.dumps({**results, "config": first["config"], "runs": [first["run"]]})
    )
    assert [r.seed for r in merge_runs([str(killed)])[1]] == [0, 1]


def test_a_merged_report_merged_again_keeps_the_dirs_its_runs_ran_in(tmp_path):
    # the second merge recorded the first merge's folder as the source of its critic and true
    # reward alike: their wall-time ratio read as side by side, and the dirs they ran in were lost
    from rl_merge import merge_runs
    from rl_report import write_report
    from rl_results import summarise

    critic = run_dir(tmp_path, "critic", keep=("critic",))
    truth = run_dir(tmp_path, "truth", keep=("ground_truth",))
    oracle = run_dir(tmp_path, "oracle", keep=("oracle",))
    config, runs, sources = merge_runs([str(critic), str(truth)])
    first = tmp_path / "first"
    first.mkdir()
    write_report(config, runs, summarise(runs), first, sources)
    config, runs, sources = merge_runs([str(first), str(oracle)])
    assert [(s["run_dir"], s["runs"][0]) for s in sources] == [
        (str(critic), "critic_seed0"), (str(truth), "ground_truth_seed0"),
        (str(oracle), "oracle_seed0"),
    ]  # fmt: skip
    again = tmp_path / "again"
    again.mkdir()
    write_report(config, runs, summarise(runs), again, sources)
    report = (again / "report.md").read_text()
    assert "(not side by side: the two conditions ran in different run dirs)" in report
