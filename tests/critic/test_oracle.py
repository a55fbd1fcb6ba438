"""The oracle critic and the critic factory."""

from __future__ import annotations

import pytest

from critic import (
    CriticError,
    FailureQuery,
    OracleCritic,
    ProgressQuery,
    UnknownCriticError,
    make_critic,
)


def test_oracle_reads_privileged_progress_in_order():
    critic = OracleCritic()
    estimates = critic.estimate_progress(
        [ProgressQuery("a", privileged_progress=p) for p in (0.1, 0.9, 0.5)]
    )
    assert [e.progress for e in estimates] == [0.1, 0.9, 0.5]
    assert all(e.status.value == "ok" and e.spread is None for e in estimates)
    assert critic.needs_frames is False and critic.name == "oracle"


def test_oracle_refuses_queries_without_ground_truth():
    with pytest.raises(CriticError) as err:
        OracleCritic().estimate_progress(
            [ProgressQuery("a", privileged_progress=0.2), ProgressQuery("b")]
        )
    assert str(err.value) == (
        "OracleCritic got query 1 without privileged_progress; the oracle reads the simulator's "
        "ground truth. Build queries through envs.VisCriticReward (which fills it from the task) "
        "or set ProgressQuery.privileged_progress."
    )


def test_oracle_failure_verdicts():
    verdicts = OracleCritic().detect_failure(
        [
            FailureQuery("a", privileged_success=True, privileged_failure_type="ignored"),
            FailureQuery("b", privileged_success=False, privileged_failure_type="missed_grasp"),
        ]
    )
    assert (verdicts[0].success, verdicts[0].failure_type) == (True, None)
    assert (verdicts[1].success, verdicts[1].failure_type) == (False, "missed_grasp")
    with pytest.raises(CriticError):
        OracleCritic().detect_failure([FailureQuery("c")])


def test_factory():
    assert isinstance(make_critic("oracle"), OracleCritic)
    assert make_critic({"name": "oracle", "needs_frames": True}).needs_frames is True
    critic = OracleCritic()
    assert make_critic(critic) is critic
    with pytest.raises(UnknownCriticError) as err:
        make_critic("gpt")
    assert str(err.value) == (
        "unknown critic 'gpt'; known critics: ['oracle', 'vlm', 'ensemble', 'viscritic-small', 'small', 'tiny']. Pass one of these names, "
        "a checkpoint directory, a critic server URL (http://host:port), a mapping "
        "{'name': ..., **kwargs}, or a critic.Critic instance."
    )
