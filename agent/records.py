"""decision.json, the record of one round's decision: its one owner (writer and readers).

One layout, whatever the number of slots: the round fields (iteration = the round's last node,
block, round, next_time_step, the code modification mode, the spend cap, created_at) at the
top, and the list ``slots``, one *slot record* per slot (the node whose log entry it wrote,
its role, the policy that decided, the decision, every attempt with its call record, the
child's proposal, the code smoke run). Readers call :func:`slot_records` (or
:func:`slot_views`, each slot with its round's fields) and never look at the layout: records
written before this layout (one slot's fields at the top, no ``slots``) are read there as one
slot, so replays and cost reports of older results still work.
"""
from __future__ import annotations

from typing import Any, Optional


def round_record(round_fields: dict[str, Any], slots: list[dict[str, Any]]) -> dict[str, Any]:
    """decision.json's content: the round fields plus the list of slot records."""
    return {**round_fields, "slots": slots}


def slot_records(record: Any) -> list[dict[str, Any]]:
    """The slot records of a decision.json, in slot order; [] for a malformed record."""
    if not isinstance(record, dict):
        return []
    slots = record.get("slots")
    if isinstance(slots, list):
        return [s for s in slots if isinstance(s, dict)]
    return [record]  # written before the slot list: the one slot's fields sit at the top


def slot_views(record: Any) -> list[dict[str, Any]]:
    """Each slot record merged onto its round's fields: what one node's decision looked like."""
    round_fields = {k: v for k, v in record.items() if k != "slots"} if isinstance(record, dict) else {}
    return [{**round_fields, **slot} for slot in slot_records(record)]


def slot_record_of(record: Any, slot: int = 1) -> Optional[dict[str, Any]]:
    """The slot record of one slot (from 1), or None."""
    records = slot_records(record)
    return records[slot - 1] if 0 < slot <= len(records) else None


def all_attempts(record: Any) -> list[dict[str, Any]]:
    """Every attempt of every slot, in slot order (the calls a round made)."""
    return [a for s in slot_records(record) for a in (s.get("attempts") or []) if isinstance(a, dict)]
