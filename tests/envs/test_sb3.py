"""Short SB3 runs on the critic-rewarded envs complete (learning itself is measured in experiments)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from envs.vec_stack import make_viscritic_vec_env


def test_ppo_on_the_batched_critic_env():
    venv = make_viscritic_vec_env("Reacher-v5", 2, "oracle", seed=0, horizon=20, query_every=2)
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=128)
    assert model.num_timesteps == 128
    venv.close()


def test_sac_on_the_wrapped_env_and_true_success_reaches_evaluate_policy():
    env = Monitor(
        gym.make(
            "VisCriticReward-v0", env="Reacher-v5", critic="oracle", horizon=20, reward_mode="delta"
        ),
        info_keywords=("is_success", "env_return"),
    )
    model = SAC("MlpPolicy", env, learning_starts=30, batch_size=16, seed=0, device="cpu")
    model.learn(total_timesteps=60)
    successes = []

    def record(locals_, _globals):
        if locals_["done"]:
            successes.append(locals_["info"]["is_success"])

    rewards, lengths = evaluate_policy(model, env, n_eval_episodes=2, callback=record,
                                       return_episode_rewards=True)  # fmt: skip
    assert lengths == [20, 20] and np.isfinite(rewards).all()
    assert len(successes) == 2 and all(isinstance(s, bool) for s in successes)
    env.close()


def test_ppo_on_robosuite_lift():
    venv = make_viscritic_vec_env(
        "Lift", 1, {"name": "oracle", "needs_frames": True}, seed=0, horizon=16, query_every=4
    )
    model = PPO("MlpPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=32)
    assert model.num_timesteps == 32
    venv.close()


def test_an_env_holding_the_shipped_critic_pickles_as_subproc_vec_env_sends_it(
    tmp_path, monkeypatch
):
    # SubprocVecEnv([lambda: env]) pickles the env: its critic's model and engine do not
    # (TypeError: cannot pickle 'weakref.ReferenceType' object). The critic is built again from
    # its options where it is loaded, and reads as the original does.
    import pickle
    from pathlib import Path

    env = gym.make("VisCriticReward-v0", env="Reacher-v5", horizon=6)
    twin = pickle.loads(pickle.dumps(env))
    assert twin.get_wrapper_attr("critic") is not env.get_wrapper_attr("critic")
    rewards = []
    for e in (env, twin):
        e.reset(seed=3)
        rewards.append([e.step(np.zeros(2, np.float32))[1] for _ in range(6)])
        e.close()
    assert rewards[0] == rewards[1] and len(set(rewards[0])) > 1

    # a checkpoint folder given by a relative path is read again by its absolute one: a worker
    # may start elsewhere
    from critic.vlm import VLMCritic

    weights = Path(__file__).resolve().parents[2] / "critic" / "weights"
    monkeypatch.chdir(weights)
    sent = pickle.dumps(VLMCritic("viscritic-small/", mode="score"))
    monkeypatch.chdir(tmp_path)
    assert pickle.loads(sent).model == str(weights / "viscritic-small")
