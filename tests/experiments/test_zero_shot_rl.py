"""A tiny end-to-end run of experiments/zero_shot_rl.py, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "zero_shot_rl.py"
TINY = [
    "total_timesteps=160",
    "eval_every=80",
    "eval_episodes=2",
    "test_episodes=3",
    "env.horizon=20",
    "algo.learning_starts=40",
    "algo.batch_size=16",
    "progress_bar=false",
]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300, cwd=ROOT
    )


def _run(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return _cli(*TINY, f"hydra.run.dir={tmp_path}", *overrides)


def test_tiny_run_writes_results_report_and_curves(tmp_path):
    done = _run(tmp_path, "seeds=[0,1]")  # 6 runs in the default 2 worker processes
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    summary = results["summary"]
    assert set(summary) == {"critic", "oracle", "ground_truth", "critic_vs_ground_truth"}
    assert summary["critic"]["seeds"] == [0, 1]
    for run in results["runs"]:
        assert run["timesteps"] == [80, 160]  # one evaluation every 80 steps
        assert all(0.0 <= s <= 1.0 for s in run["success_rate"])
    assert (tmp_path / "learning_curves.png").stat().st_size > 10_000
    assert (tmp_path / "critic_seed1" / "policy.zip").is_file()  # the final policy, to reload
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
    for condition in ("critic", "oracle", "ground_truth"):
        test = summary[condition]["test"]
        assert test["episodes"] == 6 and 0 <= test["successes"] <= 6
        assert 0.0 <= test["success_ci95"][0] <= test["success_ci95"][1] <= 1.0
        assert 0.0 <= test["final_progress_mean"] <= 1.0
    assert report.count(" / 6 (") == 3  # a count and its interval per condition
    assert summary["critic_vs_ground_truth"]["success_ratio_from"] == "test"
    assert "same 3 start states (seeded 20000)" in report
    assert "Test successes per seed (seeds [0, 1]): critic " in report
    # two seeds a side: an interval over seeds whenever the true reward succeeded at all
    interval = summary["critic_vs_ground_truth"]["success_ratio_ci95"]
    assert (interval is None) == (summary["ground_truth"]["test"]["successes"] == 0)
    assert ("95 % over seeds, bootstrap" in report) == (interval is not None)


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
    assert gt["success_mean"] == pytest.approx(0.2) and gt["success_std"] == pytest.approx(0.1)
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


def test_success_ratio_interval_over_seeds_by_hand():
    from rl_results import RunResult, success_ratio_interval, summarise

    # Two seeds a side, critic 0.0 and 0.2, true reward 0.1 and 0.3. A resample's mean is 0, 0.1
    # or 0.2 for the critic (1/4, 1/2, 1/4) and 0.1, 0.2 or 0.3 for the truth: the ratio is 0
    # with probability 1/4 and 2 (0.2 / 0.1) with 1/16, both above the 2.5 % tails.
    assert success_ratio_interval([0.0, 0.2], [0.1, 0.3]) == [0.0, pytest.approx(2.0)]
    # the true reward's resampled seeds all fail with probability 1/4: no upper bound; the
    # lowest ratio is 0.1 / 0.2
    assert success_ratio_interval([0.1, 0.1], [0.0, 0.2]) == [pytest.approx(0.5), None]
    # every seed alike: the interval is the ratio itself
    assert success_ratio_interval([0.05] * 3, [0.1] * 3) == [pytest.approx(0.5)] * 2
    # too few seeds, or no true-reward success: no interval
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
    assert summary["critic_vs_ground_truth"]["success_ratio_ci95"] == [0.0, pytest.approx(2.0)]


def test_the_test_start_states_are_fixed(tmp_path):
    """Every run is tested from the same start states: one policy tested twice scores the same."""
    from omegaconf import OmegaConf
    from stable_baselines3 import SAC

    import envs
    from experiments.zero_shot_rl import _true_reward_env, evaluate_final_policy

    cfg = OmegaConf.load(ROOT / "configs" / "env" / "Reacher-v5.yaml")
    cfg = OmegaConf.create({"env": cfg, "test_episodes": 4})
    env = _true_reward_env(OmegaConf.to_container(cfg.env, resolve=True), envs)
    model = SAC("MlpPolicy", env, seed=0, policy_kwargs={"net_arch": [8]})
    first, again = evaluate_final_policy(cfg, model), evaluate_final_policy(cfg, model)
    assert len(first[1]) == 4 and first == again
    assert len(set(first[1])) == 4  # four different start states, not one repeated
    assert evaluate_final_policy(OmegaConf.merge(cfg, {"test_episodes": 0}), model) == ([], [], [])
    # the final progress is the task's own at the first test episode's last step
    obs, _ = env.reset(seed=20000)  # TEST_SEED: make_vec_env seeds its one env's first reset so
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(model.predict(obs, deterministic=True)[0])
        done = terminated or truncated
    assert len(first[2]) == 4 and first[2][0] == pytest.approx(info["progress"])
    assert first[0][0] == info["is_success"]


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


def test_bad_config_is_a_message_not_a_traceback(tmp_path):
    done = _run(tmp_path, "conditions=[critic,magic]")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().endswith(
        "zero_shot_rl: ExperimentConfigError: conditions=['critic', 'magic'] must be a non-empty "
        "list drawn from ['critic', 'oracle', 'ground_truth']"
    )


def test_bad_workers_or_interpolation_is_a_message_not_a_traceback(tmp_path):
    done = _run(tmp_path, "workers=0")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().endswith("ExperimentConfigError: workers=0 must be an integer >= 1")
    done = _run(tmp_path, "test_episodes=-1")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "ExperimentConfigError: test_episodes=-1 must be an integer >= 0" in done.stderr
    done = _run(tmp_path, "relabel=false")  # the default interpolates between queries
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "interpolate needs the next query's estimate, known only with relabel=true" in (
        done.stderr
    )


def test_bad_reward_option_is_a_message_not_a_traceback(tmp_path):
    done = _run(tmp_path, "reward.reward_mode=sparse")
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
    done = _run(tmp_path / "run", "critic=ensemble", f"critic.members=[{','.join(members)}]",
                "conditions=[critic]")  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "EnsembleConfigError: members read different clip lengths [1, 8] on Reacher-v5" in (
        done.stderr
    )


def test_relabel_is_the_default_and_per_step_rewards_are_a_config_away(tmp_path):
    done = _run(tmp_path, "conditions=[oracle]")  # relabel=true, interpolated, query every 10
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["runs"][0]["timesteps"] == [80, 160]
    assert results["config"]["reward"]["between_queries"] == "interpolate"
    report = (tmp_path / "report.md").read_text()
    assert "rewards relabelled at episode end, interpolated between queries" in report
    assert "Algorithm `stable_baselines3.SAC` (discount γ = 0.95), 160 env steps" in report
    assert results["config"]["reward"]["gamma"] == 0.95  # the potential mode's is the learner's
    per_step = ["relabel=false", "reward.between_queries=hold"]
    done = _run(tmp_path / "hold", "conditions=[oracle]", "reward.query_every=2", *per_step)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "relabelled" not in (tmp_path / "hold" / "report.md").read_text()
    held = json.loads((tmp_path / "hold" / "results.json").read_text())["summary"]["oracle"]
    assert held["training_episodes"]["episodes"] == 6  # 2 per seed: per-step rewards too
    assert held["training_episodes"]["final_progress_mae"] == 0.0
    # PPO has no learning_starts: not the SAC-sized TINY overrides
    done = _cli("algo=ppo", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().endswith(
        "ExperimentConfigError: relabel=true needs an off-policy algorithm with a replay buffer "
        "(algo=sac); stable_baselines3.PPO has none: give it per-step rewards with "
        "relabel=false reward.between_queries=hold"
    )
    done = _run(tmp_path / "n2", "n_envs=2")
    assert done.returncode == 1 and done.stderr.strip().endswith(
        "ExperimentConfigError: relabel=true trains once per episode, which SB3 allows with one env "
        "only; n_envs=2: set n_envs=1, or per-step rewards with relabel=false "
        "reward.between_queries=hold"
    )


def test_the_ground_truth_can_train_on_the_relabelled_learners_schedule(tmp_path):
    from omegaconf import OmegaConf
    from stable_baselines3 import SAC
    from zero_shot_rl import training_schedule

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

    done = _run(tmp_path, "conditions=[oracle,ground_truth]", "seeds=[0]",
                "ground_truth_per_episode=true")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = (tmp_path / "report.md").read_text()
    assert "The ground truth's learner trained once per episode, with as many gradient steps as " \
        "env steps (`ground_truth_per_episode=true`)." in report  # fmt: skip
    default = _run(tmp_path / "default", "conditions=[oracle,ground_truth]", "seeds=[0]")
    assert "The ground truth's learner trained at every step; the relabelled learners once per " \
        "episode" in (tmp_path / "default" / "report.md").read_text()  # fmt: skip
    assert default.returncode == 0
    for bad, says in [
        ("ground_truth_per_episode=maybe", "ground_truth_per_episode='maybe' must be true or false"),
        ("n_envs=2", "ground_truth_per_episode=true trains the ground truth's learner once per "
                     "episode, which needs an off-policy algorithm and one env: n_envs=2 (set "
                     "n_envs=1); or set ground_truth_per_episode=false"),
        ("algo=ppo", "ground_truth_per_episode=true trains the ground truth's learner once per "
                     "episode, which needs an off-policy algorithm and one env: "
                     "stable_baselines3.PPO has no replay buffer (algo=sac has)"),
    ]:  # fmt: skip
        # _cli, not _run: PPO has no learning_starts for the SAC-sized TINY overrides
        done = _cli(f"hydra.run.dir={tmp_path / 'bad'}", "conditions=[ground_truth]",
                    "relabel=false", "reward.between_queries=hold",
                    "ground_truth_per_episode=true", bad)  # fmt: skip
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert says in done.stderr, done.stderr[-1000:]


def test_the_achieved_bonus_is_a_config_away_and_the_report_says_so(tmp_path):
    done = _run(tmp_path, "conditions=[oracle]", "seeds=[0]", "reward.achieved_weight=0.5")
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["reward"]["achieved_weight"] == 0.5
    report = (tmp_path / "report.md").read_text()
    assert "plus 0.5 × the critic's P(task achieved)" in report
    bad = _run(tmp_path / "bad", "conditions=[oracle]", "reward.achieved_weight=-1")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "achieved_weight=-1 must be a finite number >= 0" in bad.stderr


DEFAULT_RUN = ROOT / "docs" / "results" / "zero_shot_rl_reacher_gamma099"  # seeds 0-2


def _run_dir(tmp_path: Path, name: str, edit=None, seed_offset: int = 0, keep=None) -> Path:
    """A run dir whose results.json is the default run of 2026-12-04 (γ 0.99), its seeds
    shifted, its conditions filtered to ``keep`` and its config edited."""
    results = json.loads((DEFAULT_RUN / "results.json").read_text())
    results["runs"] = [
        {**r, "seed": r["seed"] + seed_offset}
        for r in results["runs"]
        if keep is None or r["condition"] in keep
    ]
    if edit:
        edit(results["config"])
    folder = tmp_path / name
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def test_merge_joins_the_seeds_of_earlier_runs_and_refuses_what_does_not_compare(tmp_path):
    from rl_results import ExperimentConfigError, merge_runs, summarise

    first = _run_dir(tmp_path, "first")
    more = _run_dir(tmp_path, "more", seed_offset=3, keep=("critic", "ground_truth"))
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

    truth = _run_dir(tmp_path, "truth", bonus, seed_offset=6, keep=("ground_truth",))
    assert len(merge_runs([str(first), str(truth)])[1]) == 12
    # ... but a critic learner with another reward does not
    critic = _run_dir(tmp_path, "critic", bonus, seed_offset=6, keep=("critic",))
    with pytest.raises(ExperimentConfigError, match=r"critic has reward=.*'achieved_weight': 1.0"):
        merge_runs([str(first), str(critic)])

    # the reward's discount is compared only where the reward uses it (reward_mode=potential)
    def discount(config):
        config["reward"]["gamma"] = 0.5

    other = _run_dir(tmp_path, "other", discount, seed_offset=12, keep=("critic",))
    assert len(merge_runs([str(first), str(other)])[1]) == 12

    def potential(config):
        config["reward"]["reward_mode"] = "potential"

    shaped = _run_dir(tmp_path, "shaped", potential, seed_offset=12, keep=("critic",))
    shaped_other = _run_dir(tmp_path, "shaped_other", lambda c: (potential(c), discount(c)), 15,
                            keep=("critic",))  # fmt: skip
    with pytest.raises(ExperimentConfigError, match=r"shaped_other has reward=.*'gamma': 0.5"):
        merge_runs([str(shaped), str(shaped_other)])
    # runs made before ground_truth_per_episode existed trained the truth at every step
    schedule = _run_dir(tmp_path, "schedule", lambda c: c.update(ground_truth_per_episode=True), 9,
                        keep=("ground_truth",))  # fmt: skip
    with pytest.raises(ExperimentConfigError, match=r"schedule has ground_truth_per_episode=True"):
        merge_runs([str(first), str(schedule)])
    stepwise = _run_dir(tmp_path, "stepwise", lambda c: c.update(ground_truth_per_episode=False),
                        9, keep=("ground_truth",))  # fmt: skip
    assert merge_runs([str(first), str(stepwise)])[0].ground_truth_per_episode is False
    longer = _run_dir(tmp_path, "longer", lambda c: c.update(total_timesteps=40000), 3)
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
    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / "results.json").write_text(
        json.dumps({"config": {}, "runs": [{"condition": "critic"}]})
    )
    with pytest.raises(ExperimentConfigError, match=r"a run without its condition and seed"):
        merge_runs([str(torn)])


def test_merge_from_the_command_line_writes_one_report(tmp_path):
    first = _run_dir(tmp_path, "first")
    more = _run_dir(tmp_path, "more", seed_offset=3)
    out = tmp_path / "merged"
    done = _cli(f"merge=[{first},{more}]", f"hydra.run.dir={out}")
    assert done.returncode == 0, done.stderr[-2000:]
    report = (out / "report.md").read_text()
    assert "Merged from 2 run dirs" in report and report in done.stdout
    assert "ground_truth 7, 3, 12, 7, 3, 12." in report
    assert "(not side by side" not in report  # critic and truth ran together in each dir
    results = json.loads((out / "results.json").read_text())
    assert [s["run_dir"] for s in results["merged_from"]] == [str(first), str(more)]
    assert results["summary"]["ground_truth"]["test"]["episodes"] == 600
    # critic from one dir, truth from another: the wall-time ratio is not side by side
    done = _cli(
        f"merge=[{first}:critic,{more}:ground_truth]", f"hydra.run.dir={tmp_path / 'apart'}"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(not side by side: the two conditions ran in different run dirs)" in done.stdout
    bad = _cli(f"merge=[{tmp_path / 'nowhere'}]", f"hydra.run.dir={tmp_path / 'bad'}")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "zero_shot_rl: ExperimentConfigError: merge:" in bad.stderr


def test_the_report_names_the_task_options_the_runs_had(tmp_path):
    from rl_results import merge_runs, summarise, write_report

    def floor(config):
        config["env"]["task_kwargs"] = {"min_start_distance": 0.15}

    for name, edit, line in [
        ("plain", None, None),
        ("floor", floor, "Task options (`env.task_kwargs`): `min_start_distance=0.15`. Every "
                         "condition's true reward, success and return below are those of the "
                         "task so configured."),
    ]:  # fmt: skip
        config, runs, sources = merge_runs([str(_run_dir(tmp_path, name, edit))])
        out = tmp_path / f"{name}_report"
        out.mkdir()
        write_report(config, runs, summarise(runs), out, sources)
        lines = (out / "report.md").read_text().splitlines()
        assert [x for x in lines if x.startswith("Task options")] == ([line] if line else [])
        assert "critic `critic.vlm.VLMCritic` (viscritic-small)" in lines[2]


def test_the_report_lists_every_algorithm_option_so_an_override_shows(tmp_path):
    from rl_results import merge_runs, summarise, write_report

    def entropy(config):
        config["algo"]["ent_coef"] = "auto_0.1"

    for name, edit in [("plain", None), ("entropy", entropy)]:
        config, runs, sources = merge_runs([str(_run_dir(tmp_path, name, edit))])
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
    from rl_results import merge_runs, summarise, write_report

    def noisy(config):
        config["critic"] = {"_target_": "critic.oracle.NoisyOracleCritic", "offset_sd": 0.1,
                            "step_sd": 0.0, "seed": 0}  # fmt: skip

    config, runs, sources = merge_runs([str(_run_dir(tmp_path, "noisy", noisy))])
    write_report(config, runs, summarise(runs), tmp_path, sources)
    first = (tmp_path / "report.md").read_text().splitlines()[2]
    assert "critic `critic.oracle.NoisyOracleCritic` (offset_sd=0.1, step_sd=0.0, seed=0)" in first
