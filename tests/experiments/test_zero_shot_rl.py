"""A tiny end-to-end run of experiments/zero_shot_rl.py, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.experiments.rl_runs import rl_cli, rl_run, run_dir

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_run_writes_results_report_and_curves(tmp_path):
    done = rl_run(tmp_path, "seeds=[0,1]")  # 6 runs in the default 2 worker processes
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    summary = results["summary"]
    assert set(summary) == {
        "critic", "oracle", "ground_truth", "critic_vs_ground_truth", "where_they_end"
    }  # fmt: skip
    assert summary["critic"]["seeds"] == [0, 1]
    for run in results["runs"]:
        assert run["timesteps"] == [80, 160]  # one evaluation every 80 steps
        assert all(0.0 <= s <= 1.0 for s in run["success_rate"])
    assert (tmp_path / "learning_curves.png").stat().st_size > 10_000
    assert (tmp_path / "critic_seed1" / "policy.zip").is_file()  # the final policy, to reload
    from envs.policies import load_policy

    # it records the task it learned: its rollouts on another task are refused (envs.policies)
    assert load_policy(str(tmp_path / "critic_seed1" / "policy.zip")).viscritic_task == "Reacher-v5"
    report = (tmp_path / "report.md").read_text()
    assert "| critic |" in report and "| oracle |" in report and "| ground_truth |" in report
    assert "viscritic-small" in report  # the shipped critic is the default
    assert "# Zero-shot RL on Reacher-v5" in done.stdout
    # the reward's fidelity on the learner's own episodes: 160 steps of 20-step episodes, the
    # last quarter (steps > 120) is 2 episodes per seed; the oracle's reward is the truth itself
    assert "training_episodes" not in summary["ground_truth"]
    oracle, critic = summary["oracle"]["training_episodes"], summary["critic"]["training_episodes"]
    assert oracle["episodes"] == critic["episodes"] == 4
    assert oracle["final_progress_mae"] == 0.0
    assert oracle["critic_final_progress"] == oracle["true_final_progress"]
    assert 0.0 <= critic["critic_final_progress"] <= 1.0
    assert "| critic | 4 |" in report and "| oracle | 4 |" in report
    # the final test: 3 episodes per seed, the ratio read from it
    for run in results["runs"]:
        assert len(run["test_successes"]) == len(run["test_returns"]) == 3
        assert len(run["test_final_progress"]) == 3
        assert all(0.0 <= p <= 1.0 for p in run["test_final_progress"])
        assert [set(s) for s in run["test_final_state"]] == [{"fingertip_to_target_cm"}] * 3
    # every condition starts from the same test states, so the shares by start are the same size
    ends = summary["where_they_end"]
    assert ends["split_by"] == "fingertip_to_target_cm" and len(ends["edges"]) == 2
    sizes = {c: [s["episodes"] for s in row["shares"]] for c, row in ends["conditions"].items()}
    assert set(sizes) == {"critic", "oracle", "ground_truth"}
    assert len({tuple(v) for v in sizes.values()}) == 1 and sum(sizes["critic"]) == 6
    assert "equal shares by `fingertip_to_target_cm` at the reset" in report
    for condition in ("critic", "oracle", "ground_truth"):
        test = summary[condition]["test"]
        assert test["episodes"] == 6 and 0 <= test["successes"] <= 6
        assert 0.0 <= test["success_ci95"][0] <= test["success_ci95"][1] <= 1.0
        assert 0.0 <= test["final_progress_mean"] <= 1.0
    assert report.count(" / 6 (") == 3  # a count and its interval per condition
    assert summary["critic_vs_ground_truth"]["success_ratio_from"] == "test"
    assert "same 3 start states (seeded 20000)" in report
    assert "The ground truth's learner trained at every step; the relabelled learners once per " \
        "episode" in report  # fmt: skip
    assert "Test successes per seed (seeds [0, 1]): critic " in report
    # two seeds a side: an interval over seeds whenever the true reward succeeded at all
    interval = summary["critic_vs_ground_truth"]["success_ratio_ci95"]
    assert (interval is None) == (summary["ground_truth"]["test"]["successes"] == 0)
    assert ("95 % over seeds (Fieller, t)" in report) == (interval is not None)
    # a run in the main process (workers=1) is the same run as in a worker: it ran at torch's
    # default threads, the workers' at one, and the critic's rounding moved the learner
    one = rl_run(tmp_path / "one", "conditions=[critic]", "seeds=[1]", "workers=1")
    assert one.returncode == 0, one.stderr[-2000:]
    alone = json.loads((tmp_path / "one" / "results.json").read_text())["runs"][0]
    beside = next(r for r in results["runs"] if (r["condition"], r["seed"]) == ("critic", 1))
    for key in ("episodes", "success_rate", "true_return", "test_returns", "test_final_state"):
        assert alone[key] == beside[key], key
    assert alone["machine"]["torch_threads"] == beside["machine"]["torch_threads"] == "1"


def test_the_test_start_states_are_fixed(tmp_path):
    """Every run is tested from the same start states: one policy tested twice scores the same."""
    from omegaconf import OmegaConf
    from rl_setup import true_reward_env
    from stable_baselines3 import SAC
    from zero_shot_rl import evaluate_final_policy

    import envs

    cfg = OmegaConf.load(ROOT / "configs" / "env" / "Reacher-v5.yaml")
    cfg = OmegaConf.create({"env": cfg, "test_episodes": 4})
    env = true_reward_env(OmegaConf.to_container(cfg.env, resolve=True), envs)
    model = SAC("MlpPolicy", env, seed=0, policy_kwargs={"net_arch": [8]})
    first, again = evaluate_final_policy(cfg, model), evaluate_final_policy(cfg, model)
    assert len(first["test_returns"]) == 4 and first == again
    assert len(set(first["test_returns"])) == 4  # four different start states, not one repeated
    # another policy (another learner, condition or seed) starts from the same states
    other = SAC("MlpPolicy", env, seed=1, policy_kwargs={"net_arch": [8]})
    theirs = evaluate_final_policy(cfg, other)
    assert theirs["test_start_state"] == first["test_start_state"]
    assert theirs["test_returns"] != first["test_returns"]  # and they are other policies
    none = evaluate_final_policy(OmegaConf.merge(cfg, {"test_episodes": 0}), model)
    assert none == {k: [] for k in first}
    # the final progress and states are the task's own at the first test episode's reset and
    # last step
    obs, _ = env.reset(seed=20000)  # TEST_SEED: make_vec_env seeds its one env's first reset so
    task = env.unwrapped
    start = task.privileged_state()["fingertip_to_target_cm"]
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(model.predict(obs, deterministic=True)[0])
        done = terminated or truncated
    assert len(first["test_final_progress"]) == 4
    assert first["test_final_progress"][0] == pytest.approx(info["progress"])
    assert first["test_successes"][0] == info["is_success"]
    assert first["test_start_state"][0] == {"fingertip_to_target_cm": pytest.approx(start)}
    end = task.privileged_state()["fingertip_to_target_cm"]
    assert first["test_final_state"][0] == {"fingertip_to_target_cm": pytest.approx(end)}
    assert len({s["fingertip_to_target_cm"] for s in first["test_start_state"]}) == 4


def test_bad_config_is_a_message_not_a_traceback(tmp_path):
    done = rl_run(tmp_path, "conditions=[critic,magic]")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().endswith(
        "zero_shot_rl: ExperimentConfigError: conditions=['critic', 'magic'] must be a non-empty "
        "list drawn from ['critic', 'oracle', 'ground_truth']"
    )


def test_bad_workers_or_interpolation_is_a_message_not_a_traceback(tmp_path):
    done = rl_run(tmp_path, "workers=0")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().endswith("ExperimentConfigError: workers=0 must be an integer >= 1")
    done = rl_run(tmp_path, "test_episodes=-1")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "ExperimentConfigError: test_episodes=-1 must be an integer >= 0" in done.stderr
    done = rl_run(tmp_path, "relabel=false")  # the default interpolates between queries
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "interpolate needs the next query's estimate, known only with relabel=true" in (
        done.stderr
    )


def test_bad_reward_option_is_a_message_not_a_traceback(tmp_path):
    done = rl_run(tmp_path, "reward.reward_mode=sparse")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "InvalidOptionError: reward_mode='sparse' is not a reward mode" in done.stderr


def test_ensemble_members_reading_different_clips_on_the_task_is_a_message(tmp_path, tiny_model):
    from critic.models import CLIP_FRAMES_KEY, TASK_CLIP_FRAMES_KEY, save_model

    members = []
    for name, per_task in (("one_frame_reacher", {"Reacher-v5": 1}), ("eight", {})):
        folder = tmp_path / name
        save_model(*tiny_model, folder)
        config = json.loads((folder / "config.json").read_text())
        config.update({CLIP_FRAMES_KEY: 8, TASK_CLIP_FRAMES_KEY: per_task})
        (folder / "config.json").write_text(json.dumps(config))
        members.append(str(folder))
    done = rl_run(tmp_path / "run", "critic=ensemble", f"critic.members=[{','.join(members)}]",
                "conditions=[critic]")  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "EnsembleConfigError: members read different clip lengths [1, 8] on Reacher-v5" in (
        done.stderr
    )


def test_relabel_is_the_default_and_per_step_rewards_are_a_config_away(tmp_path):
    done = rl_run(tmp_path, "conditions=[oracle]")  # relabel=true, interpolated, query every 10
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["runs"][0]["timesteps"] == [80, 160]
    assert results["config"]["reward"]["between_queries"] == "interpolate"
    report = (tmp_path / "report.md").read_text()
    assert "rewards relabelled at episode end, interpolated between queries" in report
    assert "Algorithm `stable_baselines3.SAC` (discount γ = 0.95), 160 env steps" in report
    assert results["config"]["reward"]["gamma"] == 0.95  # the potential mode's is the learner's
    per_step = ["relabel=false", "reward.between_queries=hold"]
    done = rl_run(tmp_path / "hold", "conditions=[oracle]", "reward.query_every=2", *per_step)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "relabelled" not in (tmp_path / "hold" / "report.md").read_text()
    held = json.loads((tmp_path / "hold" / "results.json").read_text())["summary"]["oracle"]
    assert held["training_episodes"]["episodes"] == 6  # 2 per seed: per-step rewards too
    assert held["training_episodes"]["final_progress_mae"] == 0.0
    # relabel= with PPO or n_envs=2: test_zero_shot_rl_config.py


def test_the_ground_truth_can_train_on_the_relabelled_learners_schedule(tmp_path):
    from omegaconf import OmegaConf
    from rl_setup import training_schedule
    from stable_baselines3 import SAC

    per_episode = {"train_freq": (1, "episode"), "gradient_steps": -1}
    cfg = OmegaConf.load(ROOT / "configs" / "zero_shot_rl.yaml")
    assert [training_schedule(cfg, c) for c in ("critic", "oracle", "ground_truth")] == [
        per_episode, per_episode, {}]  # fmt: skip
    same = OmegaConf.merge(cfg, {"ground_truth_per_episode": True})
    assert training_schedule(same, "ground_truth") == per_episode
    assert training_schedule(OmegaConf.merge(cfg, {"relabel": False}), "critic") == {}
    # what the options do in SB3: one update round per episode, a gradient step per env step
    import gymnasium as gym

    env = gym.wrappers.TimeLimit(gym.make("Pendulum-v1"), max_episode_steps=20)
    model = SAC("MlpPolicy", env, seed=0, learning_starts=10, batch_size=8,
                policy_kwargs={"net_arch": [8]}, **per_episode)  # fmt: skip
    model.learn(total_timesteps=60)
    assert model._n_updates == 60  # 3 episodes of 20: each ends past learning_starts

    done = rl_run(tmp_path, "conditions=[oracle,ground_truth]", "seeds=[0]",
                "ground_truth_per_episode=true")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = (tmp_path / "report.md").read_text()
    assert "The ground truth's learner trained once per episode, with as many gradient steps as " \
        "env steps (`ground_truth_per_episode=true`)." in report  # fmt: skip
    # the default's sentence: test_tiny_run; bad values: test_zero_shot_rl_config.py


def test_the_achieved_bonus_is_a_config_away_and_the_report_says_so(tmp_path):
    done = rl_run(tmp_path, "conditions=[oracle]", "seeds=[0]", "reward.achieved_weight=0.5")
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["reward"]["achieved_weight"] == 0.5
    report = (tmp_path / "report.md").read_text()
    assert "plus 0.5 × the critic's P(task achieved)" in report
    bad = rl_run(tmp_path / "bad", "conditions=[oracle]", "reward.achieved_weight=-1")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "achieved_weight=-1 must be a finite number >= 0" in bad.stderr


def test_merge_from_the_command_line_writes_one_report(tmp_path):
    first = run_dir(tmp_path, "first")
    more = run_dir(tmp_path, "more", seed_offset=3)
    out = tmp_path / "merged"
    done = rl_cli(f"merge=[{first},{more}]", f"hydra.run.dir={out}")
    assert done.returncode == 0, done.stderr[-2000:]
    report = (out / "report.md").read_text()
    assert "Merged from 2 run dirs" in report and report in done.stdout
    assert "ground_truth 7, 3, 12, 7, 3, 12." in report
    assert "(not side by side" not in report  # critic and truth ran together in each dir
    results = json.loads((out / "results.json").read_text())
    assert [s["run_dir"] for s in results["merged_from"]] == [str(first), str(more)]
    assert results["summary"]["ground_truth"]["test"]["episodes"] == 600
    # critic from one dir, truth from another: the wall-time ratio is not side by side
    done = rl_cli(
        f"merge=[{first}:critic,{more}:ground_truth]", f"hydra.run.dir={tmp_path / 'apart'}"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(not side by side: the two conditions ran in different run dirs)" in done.stdout
    assert "ignored" not in done.stdout + done.stderr
    # the critic and the oracle from two dirs: their wall-time ratio is no "own cost" either;
    # and a report of the true reward alone states no critic reward it never learned from
    done = rl_cli(f"merge=[{first}:critic,{more}:oracle,{first}:ground_truth]",
                  f"hydra.run.dir={tmp_path / 'oracle_apart'}")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "critic / oracle wall time 1.28 (not side by side: the two ran in different run " \
        "dirs)" in done.stdout  # fmt: skip
    done = rl_cli(f"merge=[{first}:ground_truth]", f"hydra.run.dir={tmp_path / 'truth'}")
    assert done.returncode == 0, done.stderr[-2000:]
    first_line = (tmp_path / "truth" / "report.md").read_text().splitlines()[2]
    assert first_line.endswith("seeds [0, 1, 2].") and "reward mode" not in first_line
    # a merge into a folder it reads would replace that folder's results (and a stopped run's
    # record of its options, which resume=true there needs): refused before hydra writes
    for entry in (str(first), f"{first}:critic"):
        into = rl_cli(f"merge=[{entry},{more}]", f"hydra.run.dir={first}", "overwrite=true")
        assert into.returncode == 1 and "Traceback" not in into.stderr
        assert into.stderr.strip().endswith(
            f"zero_shot_rl: RunDirError: merge= reads {entry}, which is this run's "
            "hydra.run.dir: the merged results.json and report would replace that folder's own "
            "(a stopped run's there could no longer be resumed); give the merged report a new "
            "hydra.run.dir="
        )
        assert not (first / ".hydra").exists()
    # a merge trains nothing: options it does not use are named, where they passed silently
    done = rl_cli(f"merge=[{first}]", "seeds=[0,0]", "total_timesteps=-5",
                f"hydra.run.dir={tmp_path / 'options'}")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "merge= reports the runs as their own configs ran them: seeds=[0,0], " \
        "total_timesteps=-5 ignored" in done.stdout + done.stderr  # fmt: skip
    bad = rl_cli(f"merge=[{tmp_path / 'nowhere'}]", f"hydra.run.dir={tmp_path / 'bad'}")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "zero_shot_rl: ExperimentConfigError: merge:" in bad.stderr
    # a run dir that holds results is not written over, unless told; merge=[] is no merge
    before = (out / "results.json").read_text()
    record = (out / ".hydra" / "overrides.yaml").read_text()  # hydra's own record of the command
    again = rl_cli(f"merge=[{first}:critic]", f"hydra.run.dir={out}")
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert again.stderr.strip().endswith(
        f"zero_shot_rl: RunDirError: {out} already holds results.json, report.md, "
        "learning_curves.png from an earlier run; give a new hydra.run.dir=, or overwrite=true "
        "to replace them"
    )
    assert (out / "results.json").read_text() == before
    assert (out / ".hydra" / "overrides.yaml").read_text() == record  # refused before hydra wrote
    bad = rl_cli(f"merge=[{first}:critic]", f"hydra.run.dir={out}", "overwrite=no")
    assert bad.stderr.strip().endswith("RunDirError: overwrite='no' must be true or false")
    again = rl_cli(f"merge=[{first}:critic]", f"hydra.run.dir={out}", "overwrite=true")
    assert again.returncode == 0, again.stderr[-2000:]
    assert {r["condition"] for r in json.loads((out / "results.json").read_text())["runs"]} == {
        "critic"
    }
    scalar = rl_cli("merge=5", f"hydra.run.dir={tmp_path / 'scalar'}")  # a dir named 5: not here
    assert scalar.returncode == 1 and "Traceback" not in scalar.stderr
    assert "zero_shot_rl: ExperimentConfigError: merge: " in scalar.stderr
    empty = rl_cli("merge=[]", f"hydra.run.dir={tmp_path / 'empty'}")
    assert empty.stderr.strip().endswith("ExperimentConfigError: merge=[] names no run dir; give "
                                         "merge=[<run dir>,<run dir>:<condition>,...], or leave "
                                         "merge out (null) to train")  # fmt: skip


def test_a_failed_run_keeps_the_runs_that_finished(tmp_path):
    # The critic breaks its contract at its first query (one estimate short): its runs fail in
    # the worker processes after the ground truth's two have trained; those two are kept.
    broken = ["critic=oracle", "critic._target_=tests.helpers.ScriptedCritic",
              "+critic.answers=[0.5]", "+critic.batch_size_error=-1"]  # fmt: skip
    done = rl_run(tmp_path, "conditions=[ground_truth,critic]", "seeds=[0,1]", *broken)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "zero_shot_rl: CriticOutputError: " in done.stderr
    assert "2 of the 4 runs finished before the experiment stopped; they are kept in " in (
        done.stdout  # hydra's log
    )
    # the runs to run again, as options (it said "the others")
    assert "To train the others (conditions=[critic] seeds=[0,1]), run the same command again " \
        f"with hydra.run.dir={tmp_path} resume=true (it keeps these;" in done.stdout  # fmt: skip
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(r["condition"], r["seed"]) for r in results["runs"]] == [
        ("ground_truth", 0), ("ground_truth", 1)
    ]  # fmt: skip
    assert results["config"]["conditions"] == ["ground_truth"]
    # one after another (workers=1): the same, the first run kept
    one = tmp_path / "one"
    done = rl_run(one, "conditions=[ground_truth,critic]", "seeds=[0]", "workers=1", *broken)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"1 of the 2 runs finished before the experiment stopped; they are kept in {one} " in (
        done.stdout
    )
    runs = json.loads((one / "results.json").read_text())["runs"]
    assert [(r["condition"], r["seed"]) for r in runs] == [("ground_truth", 0)]
    # the kept runs merge with a rerun of the rest
    merged = rl_cli(f"merge=[{tmp_path},{one}:ground_truth]", f"hydra.run.dir={tmp_path / 'm'}")
    assert merged.returncode != 0  # ground_truth seed 0 is in both
    assert "ground_truth seed 0 is in both" in merged.stderr


def test_the_report_states_the_steps_an_on_policy_learner_ran(tmp_path):
    # PPO runs whole rollouts of n_steps: total_timesteps=100 ran 1024, and the report said 100
    done = rl_cli("algo=ppo", "relabel=false", "reward.between_queries=hold", "total_timesteps=100",
                "algo.n_steps=64", "conditions=[ground_truth]", "seeds=[0]", "eval_every=64",
                "eval_episodes=1", "test_episodes=1", "env.horizon=20", "progress_bar=false",
                f"hydra.run.dir={tmp_path}")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "`stable_baselines3.PPO` (discount γ = 0.99), 128 env steps (total_timesteps=100, " \
        "whole rollouts of algo.n_steps=64 per env)," in (tmp_path / "report.md").read_text()  # fmt: skip
