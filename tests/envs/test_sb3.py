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
