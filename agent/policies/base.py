"""The policy interface, the backend registry and the fallback chain.

Interface (stable; other backends build on it)
------------------------------------------------
A policy is any object with::

    name: str                       # backend name recorded in decision.json
    last_call: dict | None          # metadata of the most recent backend call (see below)
    def decide(self, ctx: DecisionContext, feedback: str | None = None) -> Decision

``feedback`` is None on a first attempt. On the single retry it is the refusal reason of the
previous attempt (plain text, one problem per line, each naming the field and what is
allowed); an LLM policy should show it to the model and ask for a corrected decision.

Call metadata: a policy that calls a paid service sets ``self.last_call`` at the start of
every ``decide`` (None) and fills it with a JSON-able dict as soon as the call returns --
also when it then raises -- e.g. ``{"model": ..., "request_id": ..., "input_tokens": ...,
"output_tokens": ..., "cache_creation_input_tokens": ..., "cache_read_input_tokens": ...,
"cost_usd": ...}``. The fallback chain copies it into the attempt's record in decision.json.
Offline policies leave it None.

Errors a policy raises:
- :class:`InvalidOutputError`: no usable decision this time (refusal, max_tokens, malformed
  JSON). Treated like a decision refused by validation: one retry, then the offline policy.
- :class:`RetryableBackendError`: the service is unavailable after the SDK's own retries
  (network, 429, 529). The CLI exits 75 (EX_TEMPFAIL) unless ``--fallback offline``.
- :class:`BackendConfigError`: the backend cannot work as configured (no API key, bad
  request, unknown model, unknown backend). The CLI exits 2 with the message.
  :class:`BackendMissingError` (its command or library is not installed) is one too, except
  that ``--fallback offline`` lets the offline policy decide.
- :class:`SpendCapReached`: the call would cross ``--max-cost-usd``; raised by
  :class:`agent.policies.spend_cap.SpendCap` before the call. No retry; the offline policy decides.
- :class:`PromptTooLongError` (a BackendConfigError): the request does not fit the model's
  context even after the backend's own harder trim. With ``--fallback offline`` the offline
  policy decides this iteration (the reason is recorded); otherwise exit 2 like any
  configuration error -- re-running later would send the same prompt, so 75 would be wrong.

Registry: :func:`get_policy` maps a backend name to ``"module:factory"`` and imports the
module lazily (the SDK is only imported when the anthropic backend is used). A factory is
called with one positional argument, the options mapping (keys used so far: ``seed`` (int),
``model`` (str or None), ``replay_from`` (path or None), ``results_dir`` (path or None);
factories ignore keys they do not know).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Protocol, runtime_checkable

from agent.decision import Decision, DecisionInvalid, validate_decision

if TYPE_CHECKING:  # pragma: no cover
    from agent.context import DecisionContext


class PolicyError(RuntimeError):
    """Base of the errors a policy raises."""


class InvalidOutputError(PolicyError):
    """The backend answered but gave no usable decision (refusal, truncated, malformed)."""


class RetryableBackendError(PolicyError):
    """The backend is temporarily unavailable (network, 429, 529 after retries): try later."""


class BackendConfigError(PolicyError):
    """The backend cannot work as configured (auth, bad request, unknown backend or model)."""


class HarnessError(PolicyError):
    """A check of the decision failed for a reason of ours (the smoke run's dataset or sandbox),
    not of the decision. Never fed back to the policy: an LLM cannot act on it and a retry costs
    money. The fallback policy decides instead."""


class PromptTooLongError(BackendConfigError):
    """The prompt exceeds the model's context even trimmed harder; the offline policy may decide."""


class BackendMissingError(BackendConfigError):
    """What the backend runs is not installed here (its command or library is absent).

    A configuration error (exit 2) -- unless ``--fallback offline``, where the offline policy
    decides instead, as when the service is unreachable: both mean "no LLM on this host".
    """


class SpendCapReached(PolicyError):
    """The call would cross the experiment's spend cap (``agent.max_cost_usd``); it was not made.

    Raised *before* any request; the fallback chain goes straight to the offline policy (no
    retry: a retry would cost as much) and records the reason.
    """


@runtime_checkable
class Policy(Protocol):
    name: str
    last_call: Optional[dict[str, Any]]

    def decide(self, ctx: "DecisionContext", feedback: Optional[str] = None) -> Decision:
        ...


BACKENDS: dict[str, str] = {
    "heuristic": "agent.policies.heuristic:HeuristicPolicy",
    "replay": "agent.policies.replay:ReplayPolicy",
    "anthropic": "agent.policies.anthropic_policy:AnthropicPolicy",
    "random": "agent.policies.random_policy:RandomPolicy",
    "claude-code": "agent.policies.claude_code_policy:ClaudeCodePolicy",
}


def get_policy(backend: str, options: Optional[Mapping[str, Any]] = None) -> Policy:
    """Build the policy of ``backend`` (importing its module only now)."""
    if backend not in BACKENDS:
        raise BackendConfigError(f"backend = {backend!r}: must be one of {', '.join(BACKENDS)}")
    module_name, _, factory_name = BACKENDS[backend].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendMissingError(f"backend = {backend!r}: cannot import {module_name} ({exc})") from None
    factory: Callable[[Mapping[str, Any]], Policy] = getattr(module, factory_name)
    return factory(dict(options or {}))


def backend_option(options: Mapping[str, Any], key: str, default: Any, convert: type, backend: str,
                   allow_zero: bool = False) -> Any:
    """A numeric backend option (``--backend-option KEY=VALUE``) converted and checked: positive
    (or >= 0 with ``allow_zero``); a bad value is a BackendConfigError naming backend and key."""
    value = options.get(key)
    if value is None:
        return default
    try:
        converted = convert(value)
    except (TypeError, ValueError):
        raise BackendConfigError(f"{backend} backend: option {key} = {value!r}: must be a {convert.__name__}") from None
    if converted < 0 or (converted == 0 and not allow_zero):
        raise BackendConfigError(f"{backend} backend: option {key} = {value!r}: must be "
                                 f"{'zero or more' if allow_zero else 'positive'}")
    return converted


@dataclass
class Attempt:
    """One call of one policy and what became of it (recorded in decision.json)."""

    policy: str
    accepted: bool
    reason: Optional[str] = None
    call: Optional[dict[str, Any]] = None

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "accepted": self.accepted, "reason": self.reason, "call": self.call}


@dataclass
class DecisionOutcome:
    """The accepted decision, who made it, and every attempt on the way."""

    decision: Decision
    policy: str
    attempts: list[Attempt] = field(default_factory=list)
    spend: Optional[dict[str, Any]] = None  # the spend cap's record (agent.policies.spend_cap)

    def calls(self) -> list[dict[str, Any]]:
        return [a.call for a in self.attempts if a.call]


def _try(policy: Policy, ctx: "DecisionContext", feedback: Optional[str],
         validate: Callable[[Decision, "DecisionContext"], Decision]) -> tuple[Optional[Decision], Attempt]:
    """One attempt: ask, validate; refusals become a reason, backend errors propagate."""
    try:
        decision = validate(policy.decide(ctx, feedback), ctx)
    except (RetryableBackendError, BackendConfigError):
        raise
    except DecisionInvalid as exc:
        return None, Attempt(policy.name, False, "\n".join(exc.problems), getattr(policy, "last_call", None))
    except InvalidOutputError as exc:
        return None, Attempt(policy.name, False, f"unusable output: {exc}", getattr(policy, "last_call", None))
    except HarnessError as exc:
        return None, Attempt(policy.name, False, f"{HARNESS_ERROR_PREFIX}: {exc}", getattr(policy, "last_call", None))
    except SpendCapReached as exc:
        return None, Attempt(policy.name, False, f"{SPEND_CAP_REASON}: {exc}", None)
    except Exception as exc:  # a broken backend must not stop the loop
        return None, Attempt(policy.name, False, f"{BACKEND_ERROR_PREFIX}: {type(exc).__name__}: {exc}",
                             getattr(policy, "last_call", None))
    return decision, Attempt(policy.name, True, None, getattr(policy, "last_call", None))


#: Reasons that start with these are not the policy's to fix: no retry with them as feedback.
BACKEND_ERROR_PREFIX = "backend error"
HARNESS_ERROR_PREFIX = "harness error (ours, not sent to the policy)"
SPEND_CAP_REASON = "spend cap reached"
_NO_RETRY = (BACKEND_ERROR_PREFIX, HARNESS_ERROR_PREFIX, SPEND_CAP_REASON)


def _one_line(reason: str) -> str:
    return " | ".join(line.strip() for line in reason.splitlines() if line.strip())


def decide_with_fallback(
    primary: Policy,
    ctx: "DecisionContext",
    fallback: Optional[Policy] = None,
    offline_on_unavailable: bool = False,
    validate: Callable[[Decision, "DecisionContext"], Decision] = validate_decision,
) -> DecisionOutcome:
    """Primary policy -> one retry with the refusal reason -> fallback policy (recorded).

    ``offline_on_unavailable``: on :class:`RetryableBackendError` or :class:`PromptTooLongError`
    let the fallback decide (``--fallback offline``) instead of re-raising (the CLI then exits
    75 or 2).
    :class:`BackendConfigError` always propagates. When the fallback's own decision is
    refused too, :class:`DecisionInvalid` is raised (a bug in the offline policy).
    """
    attempts: list[Attempt] = []
    try:
        decision, attempt = _try(primary, ctx, None, validate)
        attempts.append(attempt)
        if decision is None and not attempt.reason.startswith(_NO_RETRY):
            decision, attempt = _try(primary, ctx, attempt.reason, validate)
            attempts.append(attempt)
    except (RetryableBackendError, PromptTooLongError) as exc:
        if fallback is None or not offline_on_unavailable:
            raise
        why = "prompt too long" if isinstance(exc, PromptTooLongError) else "backend unavailable"
        attempts.append(Attempt(primary.name, False, f"{why}: {exc}", getattr(primary, "last_call", None)))
        decision = None
    if decision is not None:
        return DecisionOutcome(decision, primary.name, attempts)
    reason = attempts[-1].reason or "no decision"
    if fallback is None:
        raise DecisionInvalid([f"{primary.name}: {reason}"])
    decision, attempt = _try(fallback, ctx, None, validate)
    attempts.append(attempt)
    if decision is None:
        raise DecisionInvalid([f"fallback {fallback.name} refused too: {attempt.reason}"])
    label = f"{fallback.name} (fallback after: {_one_line(reason)})"
    return DecisionOutcome(decision, label, attempts)
