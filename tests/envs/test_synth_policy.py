"""Episodes recorded from saved stable-baselines3 policies (the learned-reward loop's data)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO, SAC

from critic.data.episodes import read_episode
from envs import InvalidOptionError, make_task_env
from envs.plans import (
    HINDSIGHT_RADIUS,
    EpisodePlan,
    hindsight_goal,
    hindsight_mode,
    plan_policy_episodes,
    uniform_goal,
)
from envs.policies import policy_digest
from envs.synth import POLICY_FAILURE, record_episode, synthesize


def _save(algo, task: str, path, seed: int = 0) -> str:
    env = make_task_env(task)
    try:
        algo("MlpPolicy", env, seed=seed, policy_kwargs={"net_arch": [8]}).save(path)
    finally:
        env.close()
    return str(path)


@pytest.fixture(scope="module")
def policies(tmp_path_factory):
    folder = tmp_path_factory.mktemp("policies")
    return {
        "sac": _save(SAC, "Reacher-v5", folder / "sac.zip"),
        "sac_other": _save(SAC, "Reacher-v5", folder / "sac_other.zip", seed=1),
        "ppo": _save(PPO, "Reacher-v5", folder / "ppo.zip"),
        "pusher": _save(SAC, "Pusher-v5", folder / "pusher.zip"),
    }


def test_plans_cover_every_policy_on_the_same_seeds(policies):
    plans = plan_policy_episodes("Reacher-v5", [policies["sac"], policies["sac_other"]], 3, 100)
    assert [p.seed for p in plans] == [100, 101, 102] * 2
    ids = [p.episode_id for p in plans]
    assert len(set(ids)) == 6  # two files, both "policy.zip" in real runs, never collide
    assert ids[0] == f"Reacher-v5-000100-policy_{policy_digest(policies['sac'])}"
    assert policy_digest(policies["sac"]) != policy_digest(policies["sac_other"])


def test_bad_plans_are_typed_errors(policies, tmp_path):
    with pytest.raises(InvalidOptionError, match="names no policy"):
        plan_policy_episodes("Reacher-v5", [], 3)
    with pytest.raises(InvalidOptionError, match="episodes=0"):
        plan_policy_episodes("Reacher-v5", [policies["sac"]], 0)
    for bad in (tmp_path / "missing.zip", tmp_path):  # no file, a folder
        with pytest.raises(InvalidOptionError, match=r"cannot be read.*policy\.zip"):
            plan_policy_episodes("Reacher-v5", [str(bad)], 1)
    # one path, as a pathlib.Path, is one policy (it was list(Path): a bare TypeError)
    one = plan_policy_episodes("Reacher-v5", Path(policies["sac"]), 1)
    assert one == plan_policy_episodes("Reacher-v5", [policies["sac"]], 1)
    with pytest.raises(
        InvalidOptionError, match=r"^policies=3 must be a policy.zip path or a list"
    ):
        plan_policy_episodes("Reacher-v5", 3, 1)


def test_a_policy_saved_again_at_the_same_path_gets_new_ids(tmp_path):
    path = _save(SAC, "Reacher-v5", tmp_path / "policy.zip", seed=0)
    first = plan_policy_episodes("Reacher-v5", [path], 1)[0].episode_id
    _save(SAC, "Reacher-v5", tmp_path / "policy.zip", seed=1)  # a later run, same file name
    assert plan_policy_episodes("Reacher-v5", [path], 1)[0].episode_id != first


def test_a_policy_episode_runs_the_horizon_with_a_raw_label(policies):
    plan = EpisodePlan("Reacher-v5", 3, policy=policies["sac"])
    state = torch.random.get_rng_state()
    episode = record_episode(plan, every=5)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    assert episode.episode_id == plan.episode_id
    assert list(episode.steps) == list(range(0, 51, 5))  # no lingering stop: the whole horizon
    assert not episode.success and episode.failure_type == POLICY_FAILURE
    assert episode.failure_step is None
    # An untrained policy wanders: the label keeps its drops (no running maximum).
    assert np.any(np.diff(episode.progress) < 0)
    # Same plan, same episode; sampling differs from the mean action.
    again = record_episode(plan, every=5)
    np.testing.assert_array_equal(again.progress, episode.progress)
    mean = record_episode(plan, every=5, deterministic=True)
    assert not np.allclose(mean.progress, episode.progress)


def test_ppo_policies_load_too(policies):
    episode = record_episode(EpisodePlan("Reacher-v5", 0, policy=policies["ppo"]), every=25)
    assert len(episode) == 3


def test_a_policy_of_another_task_or_no_policy_is_a_typed_error(policies, tmp_path):
    with pytest.raises(InvalidOptionError, match=r"observation_space has shape \(23,\).*\(10,\)"):
        record_episode(EpisodePlan("Reacher-v5", 0, policy=policies["pusher"]), every=25)
    junk = tmp_path / "junk.zip"
    with zipfile.ZipFile(junk, "w") as archive:
        archive.writestr("data", "{}")
    with pytest.raises(InvalidOptionError, match="not a stable-baselines3 model save"):
        record_episode(EpisodePlan("Reacher-v5", 0, policy=str(junk)), every=25)
    text = tmp_path / "notes.txt"
    text.write_text("not a zip")
    with pytest.raises(InvalidOptionError, match="not a stable-baselines3 model save"):
        record_episode(EpisodePlan("Reacher-v5", 0, policy=str(text)), every=25)


@pytest.mark.parametrize(("weights", "error"), [(b"not a pickle", "UnpicklingError"),
                                                 (b"", "EOFError")])  # fmt: skip
def test_a_policy_save_with_corrupt_weights_is_a_typed_error(policies, tmp_path, weights, error):
    # A real SAC save whose policy.pth alone is garbled (or cut to nothing).
    corrupt = tmp_path / "corrupt.zip"
    with zipfile.ZipFile(policies["sac"]) as save, zipfile.ZipFile(corrupt, "w") as archive:
        for name in save.namelist():
            archive.writestr(name, weights if name == "policy.pth" else save.read(name))
    with pytest.raises(InvalidOptionError) as err:
        record_episode(EpisodePlan("Reacher-v5", 0, policy=str(corrupt)), every=25)
    message = str(err.value)
    assert message.startswith(
        f"policy={str(corrupt)!r} is not a stable-baselines3 model save ({error}: "
    )
    assert message.endswith("); pass the zip of model.save(...)")


def test_plans_refuse_a_policy_listed_twice_or_one_that_does_not_fit(policies, tmp_path):
    sac = policies["sac"]
    with pytest.raises(InvalidOptionError, match="one file: each episode would be recorded twice"):
        plan_policy_episodes("Reacher-v5", [sac, policies["ppo"], sac], 1)
    # checked before any episode of the fitting policies is recorded
    plans = plan_policy_episodes("Reacher-v5", [sac, policies["pusher"]], 1)
    with pytest.raises(InvalidOptionError, match=r"observation_space has shape \(23,\)"):
        synthesize(plans, tmp_path / "mixed", progress_bar=False)
    assert not (tmp_path / "mixed" / "episodes").exists()
    with pytest.raises(InvalidOptionError, match=r"^deterministic='no' must be true or false"):
        synthesize(plan_policy_episodes("Reacher-v5", [sac], 1), tmp_path, deterministic="no",
                   progress_bar=False)  # fmt: skip


def test_a_policy_recorded_as_another_tasks_is_refused_though_its_spaces_fit(tmp_path):
    env = make_task_env("Reacher-v5")
    try:
        model = SAC("MlpPolicy", env, policy_kwargs={"net_arch": [8]})
        model.viscritic_task = "Pusher-v5"  # as zero_shot_rl.py records a Pusher learner
        model.save(tmp_path / "tagged.zip")
        wide = gym.spaces.Box(-5.0, 5.0, env.action_space.shape, np.float32)
        other = SAC(
            "MlpPolicy", _Spaces(env.observation_space, wide), policy_kwargs={"net_arch": [8]}
        )
        other.save(tmp_path / "wide.zip")
    finally:
        env.close()
    with pytest.raises(
        InvalidOptionError, match=r"^the policy was trained on Pusher-v5, not Reacher"
    ):
        record_episode(EpisodePlan("Reacher-v5", 0, policy=str(tmp_path / "tagged.zip")))
    with pytest.raises(
        InvalidOptionError, match=r"actions lie in \[-5, 5\], Reacher-v5's in \[-1, 1\]"
    ):
        synthesize(plan_policy_episodes("Reacher-v5", [str(tmp_path / "wide.zip")], 1),
                   tmp_path / "wide", progress_bar=False)  # fmt: skip


class _Spaces(gym.Env):
    """Only spaces: what an SB3 model is built against before it is saved."""

    def __init__(self, observation_space, action_space):
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed=None, options=None):
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


def test_policy_episodes_round_trip_through_a_dataset(policies, tmp_path):
    plans = plan_policy_episodes("Reacher-v5", [policies["sac"]], 2)
    rows = synthesize(plans, tmp_path, every=10, progress_bar=False)
    assert [r["policy"] for r in rows] == [policies["sac"]] * 2
    episode = read_episode(tmp_path, plans[1].episode_id)
    assert episode.failure_type == POLICY_FAILURE and len(episode) == 6
    assert synthesize(plans, tmp_path, every=10, progress_bar=False) == []  # resumes: nothing new


# -- hindsight goals ---------------------------------------------------------------------------


def test_hindsight_goals_lie_in_the_disc_around_the_reached_point_and_in_reach():
    rng = np.random.default_rng(0)
    reached = np.array([0.05, -0.10])
    goals = np.stack([hindsight_goal(reached, rng) for _ in range(2000)])
    offsets = np.linalg.norm(goals - reached, axis=1)
    assert offsets.max() <= HINDSIGHT_RADIUS + 1e-12
    # Uniform over the disc's area: half the goals within radius / sqrt(2).
    assert abs(np.mean(offsets < HINDSIGHT_RADIUS / np.sqrt(2)) - 0.5) < 0.04
    # A point at the edge of the arm's reach: goals are pulled into Reacher's 0.2 m goal disc.
    edge = np.stack([hindsight_goal(np.array([0.0, 0.21]), rng) for _ in range(200)])
    assert np.linalg.norm(edge, axis=1).max() <= 0.2 + 1e-12


def test_uniform_goals_are_drawn_as_reacher_draws_its_targets():
    rng = np.random.default_rng(0)
    goals = np.stack([uniform_goal(rng) for _ in range(4000)])
    radii = np.linalg.norm(goals, axis=1)
    assert radii.max() <= 0.2
    # Uniform over the disc's area: a quarter within half the radius, half within 0.2 / sqrt(2).
    assert abs(np.mean(radii < 0.1) - 0.25) < 0.03
    assert abs(np.mean(radii < 0.2 / np.sqrt(2)) - 0.5) < 0.03
    assert abs(np.mean(goals[:, 0] > 0) - 0.5) < 0.03  # no side favoured


@pytest.mark.parametrize(
    ("given", "mode"), [(False, None), (None, None), (True, "near"), ("near", "near"),
                        ("uniform", "uniform"), (np.True_, "near"), (np.False_, None)],
)  # fmt: skip
def test_hindsight_modes(given, mode):
    assert hindsight_mode(given) == mode


def test_moving_reachers_goal_moves_nothing_else():
    env = make_task_env("Reacher-v5")
    try:
        task = env.unwrapped
        env.reset(seed=0)
        env.action_space.seed(0)
        env.step(env.action_space.sample())
        qpos, qvel = task.sim_state()
        task.restore_sim_state((qpos, qvel))  # positions of this qpos (mj_step leaves them a
        tip = task.achieved_goal()  # substep behind)
        task.move_goal(tip + np.array([0.03, 0.04]), restart=True)  # 5 cm away: 3-4-5
        assert task.privileged_state()["fingertip_to_target_cm"] == pytest.approx(5.0)
        assert task.progress() == pytest.approx(0.0, abs=1e-12)  # restart: measured from here
        moved_qpos, moved_qvel = task.sim_state()
        np.testing.assert_array_equal(moved_qpos[:-2], qpos[:-2])  # the arm is where it was
        np.testing.assert_array_equal(moved_qvel[:-2], qvel[:-2])
        assert np.all(moved_qvel[-2:] == 0.0)
        task.move_goal(tip + np.array([0.006, 0.008]))  # 1 cm: inside the 2 cm success radius
        assert task.is_success() and task.progress() == 1.0
        task.move_goal(tip + np.array([0.021, 0.028]))  # 3.5 cm: (5 - 3.5) / (5 - 2) closed
        assert task.progress() == pytest.approx(0.5)
    finally:
        env.close()


def _labelled_against_its_goal(episode) -> None:
    """Each frame's progress is Reacher's, from the recorded distance to the (moved) goal: the
    share of the start distance (at least 5 cm) closed toward 2 cm, 1 within 2 cm; success is
    the last frame's. (A relabelling that read progress before moving the goal passed the
    range checks above.)"""
    distance = episode.state["fingertip_to_target_cm"].astype(float)
    start = max(distance[0], 5.0)
    expected = np.where(distance < 2.0, 1.0, np.clip((start - distance) / (start - 2.0), 0, 1))
    np.testing.assert_allclose(episode.progress, expected, atol=2e-3)
    assert episode.success == bool(episode.progress[-1] == 1.0)


def test_a_hindsight_episode_replays_the_same_arm_against_a_moved_goal(policies):
    plan = EpisodePlan("Reacher-v5", 4, policy=policies["sac"], hindsight=True)
    assert plan.episode_id.endswith("-hindsight")
    original = record_episode(EpisodePlan("Reacher-v5", 4, policy=policies["sac"]), every=1)
    moved = record_episode(plan, every=1)
    assert len(moved) == len(original) == 51
    assert moved.failure_type == (None if moved.success else POLICY_FAILURE)
    # The arm is drawn where it was (its pixels are the same away from both targets) ...
    differs = np.any(moved.frames["view"] != original.frames["view"], axis=-1)
    assert differs.mean() < 0.05
    # ... and the goal is within HINDSIGHT_RADIUS of a state of the last three quarters.
    distances = moved.state["fingertip_to_target_cm"]
    assert distances[12:].min() <= 100 * HINDSIGHT_RADIUS + 1e-3
    assert moved.progress[0] == 0.0 and np.all((moved.progress >= 0) & (moved.progress <= 1))
    np.testing.assert_array_equal(record_episode(plan, every=1).progress, moved.progress)
    _labelled_against_its_goal(moved)


def test_a_uniform_hindsight_episode_replays_the_arm_against_a_goal_anywhere(policies):
    plan = EpisodePlan("Reacher-v5", 4, policy=policies["sac"], hindsight="uniform")
    assert plan.episode_id.endswith("-hindsight_uniform")
    assert plan.episode_id != EpisodePlan("Reacher-v5", 4, policy=policies["sac"],
                                          hindsight="near").episode_id  # fmt: skip
    original = record_episode(EpisodePlan("Reacher-v5", 4, policy=policies["sac"]), every=1)
    moved = record_episode(plan, every=1)
    assert len(moved) == len(original) == 51
    differs = np.any(moved.frames["view"] != original.frames["view"], axis=-1)
    assert differs.mean() < 0.05  # the same arm; only the target is drawn elsewhere
    # The goal is where uniform_goal puts it for the plan's seed, and stays there.
    goal = uniform_goal(np.random.default_rng([4, 0x48534754]))
    env = make_task_env("Reacher-v5")
    try:
        task = env.unwrapped
        env.reset(seed=4)
        task.move_goal(goal, restart=True)
        assert moved.state["fingertip_to_target_cm"][0] == pytest.approx(
            task.privileged_state()["fingertip_to_target_cm"], abs=1e-3
        )
    finally:
        env.close()
    assert moved.progress[0] == 0.0 and np.all((moved.progress >= 0) & (moved.progress <= 1))
    np.testing.assert_array_equal(record_episode(plan, every=1).progress, moved.progress)
    _labelled_against_its_goal(moved)
    plans = plan_policy_episodes("Reacher-v5", [policies["sac"]], 2, hindsight="uniform")
    assert [p.hindsight for p in plans] == ["uniform", "uniform"]


def test_hindsight_needs_a_task_whose_goal_can_move(policies):
    with pytest.raises(InvalidOptionError, match=r"Pusher-v5's cannot.*\['Reacher-v5'\]"):
        plan_policy_episodes("Pusher-v5", [policies["pusher"]], 1, hindsight=True)
    with pytest.raises(InvalidOptionError, match="hindsight=uniform needs a task"):
        plan_policy_episodes("Pusher-v5", [policies["pusher"]], 1, hindsight="uniform")
    with pytest.raises(
        InvalidOptionError,
        match=r"hindsight='yes' must be false, true \(the same as near\) or one of "
        r"\['near', 'uniform'\]",
    ):
        plan_policy_episodes("Reacher-v5", [policies["sac"]], 1, hindsight="yes")


def test_a_gsde_policy_records_the_same_episode_for_the_same_plan(tmp_path):
    # gSDE's exploration noise was drawn when the policy was built, from whatever the torch RNG
    # held then: the same plan recorded other episodes by load order or worker
    import torch

    from envs import policies

    env = make_task_env("Reacher-v5")
    try:
        SAC("MlpPolicy", env, seed=0, use_sde=True, policy_kwargs={"net_arch": [8]}).save(
            tmp_path / "sde.zip"
        )
    finally:
        env.close()
    plan = EpisodePlan("Reacher-v5", 5, policy=str(tmp_path / "sde.zip"))
    recorded = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        policies._load_policy.cache_clear()  # built again, from another RNG state
        recorded.append(record_episode(plan, every=10, image_size=16).state)
    for key in recorded[0]:
        np.testing.assert_array_equal(recorded[0][key], recorded[1][key])


def test_a_run_reads_the_folder_under_its_lock(policies, tmp_path, monkeypatch):
    # a run read what the folder held before it took the lock (its policies load for seconds):
    # another run that finished in between was taken for none, its manifest overwritten with this
    # run's options, and the folder mixed every=5 experts with every=3 rollouts
    import envs.synth as synth
    from envs.plans import plan_episodes

    take = synth.lock_folder
    injected = []

    def another_run_first(root, what):
        if not injected:  # the other run finishes just before this one's lock
            injected.append(True)
            synthesize(plan_episodes("Reacher-v5", 1, failure_fraction=0.0), root,
                       progress_bar=False, every=5, horizon=5, image_size=16)  # fmt: skip
        return take(root, what)

    monkeypatch.setattr(synth, "lock_folder", another_run_first)
    plans = plan_policy_episodes("Reacher-v5", [policies["sac"]], 1, 0)
    with pytest.raises(InvalidOptionError, match=r"holds 1 Reacher-v5 episodes recorded with "
                       r"other options \(every: 5 there, 3 now"):  # fmt: skip
        synthesize(plans, tmp_path, progress_bar=False, every=3, horizon=5, image_size=16)


def test_a_folder_begun_with_policy_rollouts_records_its_expert_when_one_comes(
    policies, tmp_path, monkeypatch
):
    # the policies-only run recorded "expert": null, and a null was never replaced: any expert
    # was taken from then on, the built-in one and one's own alike
    from envs import experts
    from envs.plans import plan_episodes
    from tests.envs.test_synth import _StillExpert

    options = {"progress_bar": False, "every": 5, "horizon": 5, "image_size": 16}
    rollouts = plan_policy_episodes("Reacher-v5", [policies["sac"]], 1, 0)
    synthesize(rollouts, tmp_path, **options)
    synthesize(plan_episodes("Reacher-v5", 1, failure_fraction=0.0), tmp_path, **options)
    experts._load_experts()
    monkeypatch.setattr(experts, "_EXPERTS", dict(experts._EXPERTS))
    experts.register_expert("Reacher-v5")(_StillExpert)
    with pytest.raises(InvalidOptionError, match=r"\(expert: envs.mujoco_experts.ReacherExpert "
                       r"there, tests.envs.test_synth._StillExpert now\)"):  # fmt: skip
        synthesize(plan_episodes("Reacher-v5", 2, failure_fraction=0.0), tmp_path, **options)
