"""The experiment's spend cap (``agent.max_cost_usd`` -> ``decide --max-cost-usd``).

WHY: an LLM-driven exploration runs unattended for days; the user needs a hard limit on what
it may spend, not a bill afterwards.

The rule (one inequality, checked before every call, the retry included)::

    spent + bound <= max_cost_usd      -> the call is made
    otherwise                          -> no call; SpendCapReached; the offline policy decides

- ``spent``: the ``cost_usd`` of every LLM call already recorded in the experiment's earlier
  ``iter_NNN/decision.json`` files (:func:`agent.costs.spent_usd`) plus the calls already made
  by this decision (a first attempt before its retry). A call recorded without a cost (a
  request the service refused, so nothing was billed) counts 0.
- ``bound``: the policy's ``estimate_cost_usd(ctx, feedback)``, an upper bound of the call's
  cost from the prompt's size and the reply limit (:func:`agent.pricing.max_call_cost_usd`).
  When no bound can be given (the model has no price in agent/prices.json) the call is not
  made either: the cap could not be guaranteed.

Because ``bound`` is an upper bound, the recorded total never exceeds the cap. Comparison at
micro-dollar precision (costs are recorded to 1e-6 USD).

Every refusal -- of a slot's call or of a whole-round call -- sets ``stopped`` to its message
(which says what happens instead) and is kept in ``refusals`` (which call, the bound, what was
spent), so decision.json and the decide log state each one.

Wrapped policies are those that have ``estimate_cost_usd`` (the paid ones); the offline
policies cost nothing and are never capped.
"""
from __future__ import annotations

from typing import Any, Optional

from agent.decision import Decision
from agent.policies.base import Policy, SpendCapReached

#: Float slack of the comparison (far below the 1e-6 USD of a recorded cost).
TOLERANCE_USD = 1e-9


def is_paid(policy: Any) -> bool:
    """True for a policy whose calls cost money (it can bound a call's cost)."""
    return callable(getattr(policy, "estimate_cost_usd", None))


class SpendCap:
    """A paid policy behind the spend cap; same interface as the policy it wraps."""

    def __init__(self, policy: Policy, max_cost_usd: float, spent_before_usd: float):
        self.policy = policy
        self.name = policy.name
        self.max_cost_usd = float(max_cost_usd)
        self.spent_before_usd = float(spent_before_usd)
        self.spent_here_usd = 0.0
        self.calls = 0
        self.stopped: Optional[str] = None
        self.refusals: list[dict[str, Any]] = []
        self.last_call: Optional[dict[str, Any]] = None

    @property
    def spent_usd(self) -> float:
        return self.spent_before_usd + self.spent_here_usd

    def check(self, ctx: Any, feedback: Optional[str] = None) -> None:
        """Raise :class:`SpendCapReached` unless the next call fits under the cap."""
        self._enforce(self.policy.estimate_cost_usd(ctx, feedback),
                      what=f"slot {getattr(ctx, 'slot', 1)}" + (" (retry)" if feedback else ""),
                      call="call", next_call=f"next {self.name} call",
                      instead="the offline heuristic decides this slot")

    def _enforce(self, bound: Optional[float], *, what: str, call: str, next_call: str, instead: str) -> None:
        """Stop (recording the refusal) when a call of cost up to ``bound`` would pass the cap or cannot be bounded."""
        if bound is None:
            self._stop(what, None, f"the {call}'s cost cannot be bounded (model {getattr(self.policy, 'model', None)!r} "
                                   f"has no price in the price table), so agent.max_cost_usd = {self.max_cost_usd:g} "
                                   f"cannot be enforced; the call was not made and {instead}")
        if self.spent_usd + bound > self.max_cost_usd + TOLERANCE_USD:
            self._stop(what, bound, f"spent {self.spent_usd:.6f} USD of agent.max_cost_usd = {self.max_cost_usd:g} "
                                    f"USD; the {next_call} may cost up to {bound:.6f} USD, so it was not "
                                    f"made and {instead}")

    def _stop(self, call: str, bound: Optional[float], reason: str) -> None:
        self.stopped = reason
        self.refusals.append({"call": call, "bound_usd": None if bound is None else round(bound, 6),
                              "spent_usd": round(self.spent_usd, 6), "max_cost_usd": self.max_cost_usd,
                              "reason": reason})
        raise SpendCapReached(reason)

    def decide(self, ctx: Any, feedback: Optional[str] = None) -> Decision:
        self.last_call = None
        self.check(ctx, feedback)
        self.calls += 1
        try:
            return self.policy.decide(ctx, feedback)
        finally:
            self.last_call = getattr(self.policy, "last_call", None)
            cost = (self.last_call or {}).get("cost_usd")
            self.spent_here_usd += float(cost) if isinstance(cost, (int, float)) else 0.0

    def __getattr__(self, name: str) -> Any:
        """``decide_round`` exists exactly when the wrapped policy answers a round in one call."""
        if name == "decide_round" and callable(getattr(self.policy, "decide_round", None)):
            return self._decide_round
        raise AttributeError(name)

    def _decide_round(self, contexts: list[Any]) -> list[Decision]:
        self.last_call = None
        self._enforce(self.policy.estimate_round_cost_usd(contexts),
                      what=f"whole round (slots {', '.join(str(c.slot) for c in contexts)})",
                      call="whole-round call", next_call=f"whole-round {self.name} call",
                      instead="the offline heuristic decides every slot of this round")
        self.calls += 1
        try:
            return self.policy.decide_round(contexts)
        finally:
            self.last_call = getattr(self.policy, "last_call", None)
            cost = (self.last_call or {}).get("cost_usd")
            self.spent_here_usd += float(cost) if isinstance(cost, (int, float)) else 0.0

    def record(self) -> dict[str, Any]:
        """What decision.json keeps about the cap for this decision."""
        return {"max_cost_usd": self.max_cost_usd, "spent_before_usd": round(self.spent_before_usd, 6),
                "spent_this_decision_usd": round(self.spent_here_usd, 6), "calls_made": self.calls,
                "stopped": self.stopped, "refusals": [dict(r) for r in self.refusals]}
