"""The frames a clip critic is sent online, by the reward wrapper and the vector env (online and
relabelled): spread over every step of the episode so far, as its training clips are spread over
every recorded frame (critic.base.clip_indices)."""

from __future__ import annotations

import contextlib

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401 - registers VisCriticReward-v0
from envs.vec_stack import make_viscritic_vec_env
from tests.helpers import RecordingCritic


@pytest.mark.parametrize("how", ["wrapper", "vec", "relabel"])
def test_a_clip_spreads_over_every_step_as_in_training(monkeypatch, how):
    # from the query steps' frames alone, query 2 of query_every=10 sent [0,0,10,10,10,10,20,20]
    # where training's clip of a cut at frame 20 is [0,3,6,9,11,14,17,20]: repeated frames,
    # which in training mark an episode's first steps (8-frame critics read Pusher and Lift so)
    from critic.base import clip_indices
    from envs.tasks import TaskEnv

    def numbered(self):  # each frame filled with the number of the render: the step
        count = self.__dict__.get("_renders", 0)
        self.__dict__["_renders"] = count + 1
        return np.full((8, 8, 3), count, np.uint8)

    monkeypatch.setattr(TaskEnv, "render_critic_view", numbered)
    critic = RecordingCritic()
    options = {"query_every": 10, "frames_per_query": 8}
    if how == "wrapper":
        env = gym.make("VisCriticReward-v0", env="Reacher-v5", critic=critic, horizon=30, **options)
        env.reset(seed=0)
        for _ in range(30):
            env.step(env.action_space.sample())
    else:
        env = make_viscritic_vec_env("Reacher-v5", 1, critic, seed=0, horizon=30,
                                     relabel=how == "relabel", **options)  # fmt: skip
        env.reset()
        with pytest.warns(UserWarning) if how == "relabel" else contextlib.nullcontext():
            for _ in range(30):
                env.step(np.zeros((1, 2), np.float32))
    env.close()
    clips = [q.frames[:, 0, 0, 0].tolist() for batch in critic.batches for q in batch]
    # the reset query, then steps 10, 20 and 30 (the last; a vector env's next reset after it)
    assert clips[1:4] == [[int(i) for i in clip_indices(t + 1, 8)] for t in (10, 20, 30)]
    assert clips[2] == [0, 3, 6, 9, 11, 14, 17, 20]
