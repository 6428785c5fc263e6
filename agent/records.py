"""decision.json, the record of one round's decision: its one owner (writer and readers).

Round fields (iteration = the round's last node, block, round, next_time_step, the code
modification mode, the spend cap, created_at) sit at the top. Each slot's own part (the node
whose log entry it wrote, its role, the policy that decided, the decision, every attempt with
its call record, the child's proposal, the code smoke run) is one *slot record*. With one
slot per round the slot record's fields sit at the top as well (the layout before rounds
existed, which replays and cost reports of older results still read); with K > 1 they are
the list ``slots``. Readers call :func:`slot_records` and never look at the layout.
"""
from __future__ import annotations

from typing import Any, Optional

def round_record(round_fields: dict[str, Any], slots: list[dict[str, Any]]) -> dict[str, Any]:
    """decision.json's content: the round fields plus the slot records (see the module docstring)."""
    if len(slots) == 1:
        return {**round_fields, **slots[0]}
    return {**round_fields, "slots": slots}


def slot_records(record: Any) -> list[dict[str, Any]]:
    """The slot records of a decision.json (one for a one-slot round); [] for a malformed record."""
    if not isinstance(record, dict):
        return []
    slots = record.get("slots")
    if isinstance(slots, list):
        return [s for s in slots if isinstance(s, dict)]
    return [record]


def slot_record_of(record: Any, slot: int = 1, node_id: Optional[int] = None) -> Optional[dict[str, Any]]:
    """The slot record of one slot (or of the node whose log entry it wrote), or None."""
    records = slot_records(record)
    if node_id is not None:
        found = [s for s in records if s.get("node_id") == node_id]
        if found:
            return found[0]
        return records[0] if len(records) == 1 and "slots" not in record else None
    return records[slot - 1] if 0 < slot <= len(records) else None


def all_attempts(record: Any) -> list[dict[str, Any]]:
    """Every attempt of every slot, in slot order (the calls a round made)."""
    return [a for s in slot_records(record) for a in (s.get("attempts") or []) if isinstance(a, dict)]
