"""Critics: the contract, the oracle, and (later) VLM critics. Never imports ``envs``."""

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
from critic.oracle import OracleCritic

__all__ = [
    "Critic",
    "CriticError",
    "FailureQuery",
    "FailureVerdict",
    "OracleCritic",
    "ParseStatus",
    "ProgressEstimate",
    "ProgressQuery",
    "UnknownCriticError",
    "available_critics",
    "make_critic",
]
