"""Each task's registered bare env (``VisCritic/<task>``) through gymnasium's and SB3's checkers.

Through ``gym.make`` the env carries a spec, so gymnasium's checker also builds it again for every
declared render mode and closes it twice; SB3's checker runs with its warnings on. Both checkers
report some real problems (an observation outside its space, a wrong dtype) only as warnings, so
every warning is recorded and only the known advisory ones are allowed.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs

TASKS = envs.task_names()

# Observations are unbounded Boxes on purpose (joint velocities, object poses).
_ADVISORY = (
    "A Box observation space minimum value is -infinity",
    "A Box observation space maximum value is infinity",
)
# Pusher's [-2, 2] actions are gymnasium's own; both checkers suggest [-1, 1].
_PUSHER_ADVISORY = ("symmetric and normalized",)


@pytest.mark.parametrize("task", TASKS)
def test_registered_bare_env_passes_both_checkers_with_only_advisory_warnings(task):
    env = gym.make(envs.bare_env_id(task), render_mode="rgb_array")
    try:
        assert env.spec.max_episode_steps == envs.get_task(task).horizon
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gym_check_env(env.unwrapped, skip_render_check=False)
            sb3_check_env(env.unwrapped, warn=True)
    finally:
        env.close()
    allowed = _ADVISORY + (_PUSHER_ADVISORY if task == "Pusher-v5" else ())
    unexpected = sorted(
        {str(w.message) for w in caught if not any(a in str(w.message) for a in allowed)}
    )
    assert unexpected == []


def test_an_action_that_overflows_the_action_space_s_dtype_is_refused():
    # finite as float64, inf in the space's float32: the task's control cost was -inf, and the
    # critic reward 0 x -inf = NaN, without an error
    env = envs.make_task_env("Reacher-v5")
    env.reset(seed=0)
    with pytest.raises(envs.InvalidActionError) as err:
        env.step(np.array([1e39, 0.0]))
    assert str(err.value).startswith(
        "Reacher-v5: action [1e+39, 0.0] overflows the action space's float32"
    )
    env.close()
