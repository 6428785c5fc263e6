"""Replay: re-apply the decisions recorded in an earlier results folder.

Iteration i's decision is read from ``<replay_from>/iter_<i:03d>/decision.json`` (key
``decision``). Useful to re-run an exploration on other hardware or after a code fix
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
from neuralgraph.io import read_json


def iteration_dir(results: Path, iteration: int) -> Path:
    return results / f"iter_{iteration:03d}"


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
        path = iteration_dir(self.source, ctx.iteration) / "decision.json"
        try:
            record = read_json(path)
        except (FileNotFoundError, ValueError) as exc:
            raise InvalidOutputError(str(exc)) from None
        self.last_call = {"replayed_from": str(path), "policy": record.get("policy")}
        try:
            return Decision.model_validate(record.get("decision"))
        except ValidationError as exc:
            raise InvalidOutputError(f"{path}: decision does not match the schema ({exc.error_count()} errors)") from None
