"""Critics: the contract, the oracle (exact or with set errors), VLM critics.

Never imports ``envs``.
"""

from critic.base import (
    Critic,
    CriticError,
    FailureQuery,
    FailureVerdict,
    ParseStatus,
    ProgressEstimate,
    ProgressQuery,
)
from critic.factory import UnknownCriticError, available_critics, make_critic
from critic.oracle import NoisyOracleCritic, OracleCritic

__all__ = [
    "Critic",
    "CriticError",
    "FailureQuery",
    "FailureVerdict",
    "NoisyOracleCritic",
    "OracleCritic",
    "ParseStatus",
    "ProgressEstimate",
    "ProgressQuery",
    "UnknownCriticError",
    "available_critics",
    "make_critic",
]
