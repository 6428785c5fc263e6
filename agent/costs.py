"""What an experiment's LLM calls cost, read back from its ``iter_NNN/decision.json`` files.

WHY here: decide records every call of a paid backend in ``decision.json["slots"][s]["attempts"][k]["call"]``
(token counts and ``cost_usd``, see :mod:`agent.policies.base`), so the agent package owns
that format and is the one place that reads it back. Two users:

- the spend cap (:mod:`agent.policies.spend_cap`): :func:`spent_usd` before iteration i;
- the summary: ``python -m agent costs --results RES --out RES/summary/costs.tsv``, run by the
  workflow's ``costs`` rule (:func:`write_costs_tsv`), one row per call and a total row.

A paid call is a call record with a ``cost_usd`` key (``null`` when nothing was billed or the
model had no price; it counts 0 in the totals and shows as an empty cell). Offline policies
and replays record no such calls.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional

from agent.command import run_command
from agent.inputs import InputError
from agent.prompt import PROMPT_PARTS
from agent.records import all_attempts, slot_records
from neuralgraph.io import atomic_write_text, read_json
from agent.layout import DECISION_FILE, iteration_dirs, iteration_of_dir

TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
#: Input tokens of each prompt part, estimated before the call (agent.prompt.part_token_estimates,
#: the call record's ``prompt_tokens_estimate``): what to trim when costs matter. Empty cells for
#: calls recorded without an estimate (the claude-code backend, older results).
ESTIMATE_FIELDS = tuple(f"est_tokens_{part}" for part in PROMPT_PARTS)
COLUMNS = ("iteration", "attempt", "policy", "accepted", "model", *TOKEN_FIELDS, "cost_usd", *ESTIMATE_FIELDS)


#: The summary file this module writes (results/<exp>/summary/costs.tsv).
COSTS_NAME = "costs.tsv"


class CostRecordError(InputError):
    """An earlier decision.json cannot be read: the spend so far is unknown. Names the file.
    A refused input like any other (every command exits 2 on it, naming the file)."""


def decision_files(results_dir: str | Path) -> list[tuple[int, Path]]:
    """(iteration, path) of every ``iter_NNN/decision.json`` under ``results_dir``, in order."""
    return [(iteration_of_dir(folder), folder / DECISION_FILE) for folder in iteration_dirs(results_dir)
            if (folder / DECISION_FILE).is_file()]


def _call_row(iteration: int, index: int, attempt: dict[str, Any]) -> Optional[dict[str, Any]]:
    call = attempt.get("call")
    if not isinstance(call, dict) or "cost_usd" not in call:
        return None
    row: dict[str, Any] = {"iteration": iteration, "attempt": index, "policy": attempt.get("policy", ""),
                           "accepted": bool(attempt.get("accepted")),
                           "model": call.get("model") or call.get("model_requested") or ""}
    for name in TOKEN_FIELDS:
        row[name] = int(call.get(name) or 0)
    cost = call.get("cost_usd")
    row["cost_usd"] = float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None
    estimate = call.get("prompt_tokens_estimate") if isinstance(call.get("prompt_tokens_estimate"), dict) else {}
    for part, name in zip(PROMPT_PARTS, ESTIMATE_FIELDS):
        value = estimate.get(part)
        row[name] = int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return row


def call_rows(results_dir: str | Path, before_iteration: Optional[int] = None) -> list[dict[str, Any]]:
    """One row per paid call (see the module docstring), iterations below ``before_iteration``."""
    rows = []
    for iteration, path in decision_files(results_dir):
        if before_iteration is not None and iteration >= before_iteration:
            continue
        try:
            record = read_json(path)
        except (OSError, ValueError) as exc:
            raise CostRecordError(f"{path}: cannot read the recorded LLM costs ({exc})") from None
        slots = slot_records(record)
        if not slots or not all(isinstance(s.get("attempts"), list) for s in slots):
            raise CostRecordError(f"{path}: 'attempts' must be a list of call records")
        attempts = all_attempts(record)
        for index, attempt in enumerate(attempts, start=1):
            row = _call_row(iteration, index, attempt) if isinstance(attempt, dict) else None
            if row is not None:
                rows.append(row)
    return rows


def total_usd(rows: list[dict[str, Any]]) -> float:
    return round(sum(row["cost_usd"] or 0.0 for row in rows), 6)


def spent_usd(results_dir: str | Path, before_iteration: int) -> float:
    """What the experiment's LLM calls cost before iteration ``before_iteration``."""
    return total_usd(call_rows(results_dir, before_iteration))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value).replace("\t", " ").replace("\n", " ")


def costs_tsv(rows: list[dict[str, Any]]) -> str:
    """The table: header, one line per call, then ``total`` with the summed tokens and cost."""
    lines = ["\t".join(COLUMNS)]
    lines += ["\t".join(_cell(row[c]) for c in COLUMNS) for row in rows]
    total = {c: "" for c in COLUMNS}
    total.update({"iteration": "total", "attempt": str(len(rows))})
    total.update({name: str(sum(row[name] for row in rows)) for name in TOKEN_FIELDS})
    total.update({name: str(sum(row[name] or 0 for row in rows)) for name in ESTIMATE_FIELDS})
    total["cost_usd"] = f"{total_usd(rows):.6f}"
    lines.append("\t".join(total[c] for c in COLUMNS))
    return "\n".join(lines) + "\n"


def write_costs_tsv(results_dir: str | Path, out: str | Path) -> list[dict[str, Any]]:
    """Write ``out`` (atomically) for the experiment in ``results_dir``; return its rows."""
    rows = call_rows(results_dir)
    atomic_write_text(Path(out), costs_tsv(rows))
    return rows


# --------------------------------------------------------------------------- python -m agent costs


def build_parser() -> argparse.ArgumentParser:
    """costs' options: the experiment's results folder and the table to write."""
    p = argparse.ArgumentParser(prog="python -m agent costs")
    p.add_argument("--results", required=True, help="the experiment's results folder (results/<exp>)")
    p.add_argument("--out", required=True, help="the table to write, e.g. results/<exp>/summary/costs.tsv")
    return p


def run_costs(args: argparse.Namespace) -> int:
    """Write costs.tsv; a missing results folder is a refused input (exit 2)."""
    if not Path(args.results).is_dir():
        raise InputError(f"--results {args.results}: not a folder")
    rows = write_costs_tsv(args.results, args.out)
    print(f"agent costs: {len(rows)} LLM call(s), {total_usd(rows):.6f} USD -> {args.out}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m agent costs``: exit codes of :func:`agent.command.run_command`."""
    return run_command(build_parser(), run_costs, argv)
