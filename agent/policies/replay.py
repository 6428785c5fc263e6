"""Replay: re-apply the decisions recorded in an earlier results folder.

A round's decisions are read from ``<replay_from>/iter_NNN/decision.json`` of the round's last
node (key ``decision``, or ``slots[k].decision`` for slot k of a round of K > 1). Useful to re-run an exploration on other hardware or after a code fix
without paying for the LLM again. A missing or unreadable record is an
:class:`InvalidOutputError` (the fallback chain then lets the heuristic decide and says so);
a recorded decision that no longer fits the new tree is refused by validation the same way.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

from pydantic import ValidationError

from agent.context import DecisionContext
from agent.decision import Decision
from agent.policies.base import BackendConfigError, InvalidOutputError
from agent.records import slot_record_of
from neuralgraph.io import read_json
from agent.layout import DECISION_FILE, iteration_dir_name


class ReplayPolicy:
    name = "replay"

    def __init__(self, options: Optional[Mapping[str, Any]] = None):
        source = (options or {}).get("replay_from")
        if not source:
            raise BackendConfigError("backend 'replay' needs --replay-from: the results folder to replay")
        self.source = Path(source)
        if not self.source.is_dir():
            raise BackendConfigError(f"--replay-from {self.source}: not a folder")
        self.last_call: Optional[dict[str, Any]] = None

    def decide(self, ctx: DecisionContext, feedback: Optional[str] = None) -> Decision:
        path = self.source / iteration_dir_name(ctx.round_end) / DECISION_FILE
        try:
            record = read_json(path)
        except (FileNotFoundError, ValueError) as exc:
            raise InvalidOutputError(str(exc)) from None
        self.last_call = {"replayed_from": str(path), "policy": (slot_record_of(record, ctx.slot) or {}).get("policy")}
        recorded = (slot_record_of(record, ctx.slot) or {}).get("decision")
        try:
            return Decision.model_validate(recorded)
        except ValidationError as exc:
            raise InvalidOutputError(f"{path}: decision does not match the schema ({exc.error_count()} errors)") from None
