"""Decision policies (backends): heuristic (offline), replay, anthropic (LLM).

Use :func:`agent.policies.base.get_policy` to build one by backend name.
"""
from agent.policies.base import (  # noqa: F401
    BackendConfigError,
    DecisionOutcome,
    InvalidOutputError,
    Policy,
    PolicyError,
    RetryableBackendError,
    decide_with_fallback,
    get_policy,
)
