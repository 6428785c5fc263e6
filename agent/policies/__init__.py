"""Decision policies (backends): heuristic (offline), random (baseline), replay, anthropic and
claude-code (LLM).

Use :func:`agent.policies.base.get_policy` to build one by backend name.
"""
from agent.policies.base import (  # noqa: F401
    BackendConfigError,
    BackendMissingError,
    DecisionOutcome,
    InvalidOutputError,
    Policy,
    PolicyError,
    RetryableBackendError,
    SpendCapReached,
    decide_with_fallback,
    get_policy,
)
