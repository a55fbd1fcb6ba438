"""Episodes recorded from saved stable-baselines3 policies (the learned-reward loop's data)."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO, SAC

from critic.data.episodes import read_episode
from envs import InvalidOptionError, make_task_env
from envs.synth import (
    POLICY_FAILURE,
    EpisodePlan,
    plan_policy_episodes,
    policy_digest,
    record_episode,
    synthesize,
)


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


def test_policy_episodes_round_trip_through_a_dataset(policies, tmp_path):
    plans = plan_policy_episodes("Reacher-v5", [policies["sac"]], 2)
    rows = synthesize(plans, tmp_path, every=10, progress_bar=False)
    assert [r["policy"] for r in rows] == [policies["sac"]] * 2
    episode = read_episode(tmp_path, plans[1].episode_id)
    assert episode.failure_type == POLICY_FAILURE and len(episode) == 6
    assert synthesize(plans, tmp_path, every=10, progress_bar=False) == []  # resumes: nothing new
