"""The exploration explorer: one self-contained HTML page per experiment.

WHY: a user coming back to a 40-node exploration wants to *see* it -- which branch found the
best W, what each child changed from its parent, what code the agent wrote, what it was
thinking, and the pictures -- without opening 40 folders. ``summary/explorer.html`` shows the
tree of every block (nodes coloured by the "nines" of connectivity_R2, the scale
``exploration_tree.png`` uses too), a sortable table, and, for a clicked node, its metrics,
config diff against its parent, code.diff, the agent's log entry, the decision's policy and
LLM cost, its plots and that iteration's memory.md.

Design constraints, and how they are met:

* **Self-contained and archivable**: the script and style are inlined, node data is embedded
  as JSON, and pictures are referenced by paths relative to the page (``../iter_NNN/plots/``),
  so the results folder can be packed and opened anywhere. A Content-Security-Policy allows
  only the page's own (hashed) script and style and local pictures: no network request can
  be made even by accident.
* **LLM text is data**: every free-text field is capped (:data:`MAX_TEXT_CHARS`,
  :data:`MAX_LINE_CHARS`), the JSON is escaped so that ``</script>`` inside a string cannot
  end the data block (:func:`embed_json`), and the page's script renders text only through
  ``textContent`` (never ``innerHTML``).
* **Refreshable**: it reads only the files the stages write, so rerunning it on a running
  exploration shows the iterations finished so far.

    python -m pipeline explorer --results results/demo [--out results/demo/summary/explorer.html]
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import math
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import yaml

from agent import layout
from agent.layout import SUMMARY_DIR, iteration_dirs
from agent.records import slot_views
from agent.tree import format_mutation
from neuralgraph.io import atomic_write_text, read_json, read_text_nofollow
from pipeline.summary import (
    NO_VALUE_COLOR,
    R2_NINES_MAX,
    SummaryError,
    best_node_per_block,
    build_summary,
    node_state,
    r2_color,
    r2_color_stops,
    r2_nines,
    tree_layout,
)

EXPLORER_NAME = "explorer.html"
#: Cap of multi-line texts (code.diff, memory.md): a runaway LLM reply must not make a 100 MB page.
MAX_TEXT_CHARS = 40_000
#: Cap of one-line texts (observation, parent rule, hypothesis, refusal reasons).
MAX_LINE_CHARS = 2_000
#: The analyze stage's pictures, in the order the page shows them (others follow by name).
PLOT_ORDER = layout.PLOT_FILES
#: Node-record fields shown in the table before the metrics; round/slot appear when they exist.
NODE_FIELDS = ("iteration", "block", "round", "slot", "role", "node", "parent", "time_step", "strategy", "mutation",
               "policy")
#: Metrics files keep these beside the numbers; they are shown elsewhere or are not metrics.
NOT_METRICS = frozenset({"config", "iteration"})
_ASSETS = Path(__file__).with_name("explorer_assets")


# --------------------------------------------------------------------------- small helpers


def cap(text: Any, limit: int, where: str = "") -> str:
    """``text`` as a string of at most ``limit`` characters, saying how much was cut and where the rest is."""
    text = "" if text is None else str(text)
    if len(text) <= limit:
        return text
    rest = f" in {where}" if where else ""
    return text[:limit] + f"\n... ({len(text) - limit} more characters{rest})"


def plain(value: Any) -> Any:
    """JSON-able scalar: non-finite floats become None, numpy/pandas scalars Python ones, NA None."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (ValueError, TypeError):
            return str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if str(value) in ("<NA>", "NaT"):  # pandas' missing markers
        return None
    return value if isinstance(value, (bool, str, int)) else str(value)


def _read_json_or_empty(path: Path) -> dict[str, Any]:
    """A JSON object file, or {} when missing or unreadable (a page must not fail over one bad file)."""
    try:
        data = read_json(path)
    except (OSError, ValueError):  # missing, malformed, or a link (refused, not followed)
        return {}
    return data if isinstance(data, dict) else {}


def _read_text(path: Path, limit: int = MAX_TEXT_CHARS) -> str:
    """A text file for the page, capped; empty when missing, a link or not a regular file
    (a link there would embed a host file into the page and the archive)."""
    try:
        return cap(read_text_nofollow(path, errors="replace"), limit, path.name)
    except OSError:
        return ""


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(read_text_nofollow(path))
    except OSError:
        return {}
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


# --------------------------------------------------------------------------- per-node content


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config -> {'section.field': value}; lists are kept as one value (their JSON text)."""
    if not isinstance(cfg, dict):
        return {prefix: cfg} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten(value, name))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list) else value
    return flat


def config_diff(parent_cfg: dict[str, Any], child_cfg: dict[str, Any]) -> list[list[Any]]:
    """[key, parent value, child value] for every dotted config key that differs, sorted by key."""
    before, after = flatten(parent_cfg), flatten(child_cfg)
    keys = sorted(set(before) | set(after))
    return [[k, plain(before.get(k)), plain(after.get(k))] for k in keys if before.get(k) != after.get(k)]


def metrics_of(metrics: dict[str, Any]) -> dict[str, Any]:
    """The scalar entries of metrics.json (its config copy and nested values are left out)."""
    return {k: plain(v) for k, v in metrics.items() if k not in NOT_METRICS and not isinstance(v, (dict, list))}


def llm_usage(decision: dict[str, Any]) -> dict[str, Any]:
    """Calls, tokens and cost of a decision's attempts; cost None when no call reported one."""
    calls = [a.get("call") for a in decision.get("attempts") or [] if isinstance(a, dict) and a.get("call")]
    costs = [c.get("cost_usd") for c in calls if isinstance(c.get("cost_usd"), (int, float))]
    tokens = {name: sum(int(c.get(name) or 0) for c in calls) for name in ("input_tokens", "output_tokens")}
    models = sorted({str(c.get("model")) for c in calls if c.get("model")})
    return {"calls": len(calls), "cost_usd": sum(costs) if costs else None, "models": models, **tokens}


#: What the explorer shows as a decision's next node when the decision created none.
NO_NEXT_NODE = "none: the last round creates no node"


def _change_text(decision: dict[str, Any], child: Optional[dict[str, Any]] = None) -> str:
    """What the decision changes for the next node.

    From the child's own record (its proposal.json, decision.json's ``next``) when there is one:
    its ``mutation`` holds the value the child really started from (the source node's, which a
    decision may leave empty or state differently); else the decision's own mutation or code change.
    """
    if isinstance(child, dict) and isinstance(child.get("mutation"), dict):
        return format_mutation(child["mutation"], root="")
    mutation = decision.get("config_mutation")
    if isinstance(mutation, dict):
        return format_mutation(mutation, root="")
    code = decision.get("code_modification")
    if isinstance(code, dict):
        return f"code: {code.get('function', '')}: {code.get('change_summary', '')}"
    return ""


def _next_fields(decision: dict[str, Any], record: dict[str, Any], log: dict[str, Any]) -> dict[str, Any]:
    """The "next ..." lines of an agent entry: the child made (id, parent, change), or that none was."""
    child = record.get("next")
    if "next" in record and not isinstance(child, dict):
        return {"next node": NO_NEXT_NODE}
    fields = {
        "next parent": log.get("next_parent", decision.get("parent", "")),
        "next strategy": decision.get("strategy", ""),
        "next change": _change_text(decision, child if isinstance(child, dict) else None),
    }
    if isinstance(child, dict) and child.get("id") is not None:
        parent = child.get("parent")
        fields = {"next node": f"{child.get('id')} (parent {'root' if parent is None else parent})", **fields}
    return fields


def agent_entry(node: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """The agent's log entry for a node and the decision it led to (decision.json of its iteration).

    The entry joins how the node was made (strategy, mutation and, for code, the hypothesis,
    from its node record) with what the agent wrote after analysing it (mode, parent rule,
    observation, current hypothesis, next parent), the fields of the seed's log form.
    """
    decision = record.get("decision") if isinstance(record.get("decision"), dict) else {}
    log = decision.get("log") if isinstance(decision.get("log"), dict) else {}
    memory = decision.get("memory_update") if isinstance(decision.get("memory_update"), dict) else {}
    mutation = node.get("mutation") if isinstance(node.get("mutation"), dict) else {}
    fields = {
        "strategy": node.get("strategy") or "",
        "mutation": format_mutation(node.get("mutation")),
        "code hypothesis": mutation.get("hypothesis", ""),
        "outcome": log.get("outcome", ""),
        "mode": log.get("mode", ""),
        "parent rule": log.get("parent_rule", ""),
        "observation": log.get("observation", ""),
        "hypothesis": memory.get("current_hypothesis") or memory.get("next_block_hypothesis") or "",
        **_next_fields(decision, record, log),
    }
    attempts = [{"policy": cap(a.get("policy"), MAX_LINE_CHARS), "accepted": bool(a.get("accepted")),
                 "reason": cap(a.get("reason"), MAX_LINE_CHARS)}
                for a in record.get("attempts") or [] if isinstance(a, dict)]
    events = [cap(e.get("text"), MAX_LINE_CHARS) for key in ("round_events", "events")
              for e in record.get(key) or [] if isinstance(e, dict) and e.get("text")]
    return {
        "log": {k: cap(v, MAX_LINE_CHARS) for k, v in fields.items() if v not in ("", None)},
        "policy": cap(record.get("policy", ""), MAX_LINE_CHARS),
        "attempts": attempts,
        "events": events,
        "usage": llm_usage(record),
    }


def plot_links(folder: Path, page_dir: Path) -> list[dict[str, str]]:
    """{name, src} of each picture in folder/plots, src relative to the page (posix separators)."""
    plots = layout.IterationFolder(folder).plots_dir
    if not plots.is_dir():
        return []
    found = {p.name: p for p in plots.glob("*.png") if p.is_file()}
    names = [n for n in PLOT_ORDER if n in found] + sorted(n for n in found if n not in PLOT_ORDER)
    return [{"name": n, "src": Path(os.path.relpath(os.path.abspath(found[n]), os.path.abspath(page_dir))).as_posix()}
            for n in names]


# --------------------------------------------------------------------------- the whole tree


def _node_id(value: Any) -> Optional[int]:
    value = plain(value)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _diff_source(node: dict[str, Any], proposal: dict[str, Any]) -> Optional[int]:
    """The node whose config this one was made from: its parent, or for a block root the carried-over node."""
    parent = _node_id(node.get("parent"))
    return parent if parent is not None else _node_id(proposal.get("derived_from"))


def decisions_by_node(results: Path) -> dict[int, tuple[dict[str, Any], Path]]:
    """node id -> (the slot record of the round decision that analysed it, the folder holding it).

    With one slot per round a node's decision.json is in its own folder; with K slots the
    round's record is in the folder of the round's last node (agent.records, agent.layout).
    """
    found: dict[int, tuple[dict[str, Any], Path]] = {}
    for folder in iteration_dirs(results):
        record = _read_json_or_empty(layout.IterationFolder(folder).decision_path)
        for view in slot_views(record):
            node_id = view.get("node_id")
            if isinstance(node_id, int):
                found[node_id] = (view, folder)
    return found


def node_payload(row: dict[str, Any], results: Path, page_dir: Path, position: tuple[float, float],
                 configs: dict[int, dict[str, Any]], best: set[int],
                 decisions: Optional[dict[int, tuple[dict[str, Any], Path]]] = None) -> dict[str, Any]:
    """Everything the page shows of one node (row: its summary.tsv row)."""
    folder = layout.IterationFolder(results / str(row["dir"]))
    proposal = _read_json_or_empty(folder.proposal_path)
    node = _read_json_or_empty(folder.node_path) or proposal
    metrics = metrics_of(_read_json_or_empty(folder.metrics_path))
    node_id = int(row["node"])
    source = _diff_source(node, proposal)
    record, decided_in = (decisions or {}).get(node_id, ({}, folder.path))
    fields = {name: plain(row.get(name, node.get(name))) for name in NODE_FIELDS if name in row or name in node}
    return {
        "id": node_id,
        "fields": {k: cap(v, MAX_LINE_CHARS) if isinstance(v, str) else v for k, v in fields.items()},
        "dir": str(row["dir"]),
        "x": float(position[0]),
        "depth": int(round(-position[1])),
        "nines": r2_nines(metrics.get("connectivity_R2")),
        "color": r2_color(metrics.get("connectivity_R2")),
        "state": node_state(metrics.get("status"), metrics.get("outcome")),
        "best": node_id in best,
        "metrics": metrics,
        "diff_parent": source,
        "config_diff": config_diff(configs.get(source, {}), configs[node_id]) if source in configs else None,
        "code_diff": _read_text(folder.diff_path),
        "agent": agent_entry(node, record) if record else None,
        "plots": plot_links(folder.path, page_dir),
        "memory": _read_text(layout.IterationFolder(decided_in).memory_path),
    }


def collect(results: Path, page_dir: Path) -> dict[str, Any]:
    """The page's data: experiment, colour scale, blocks and every finished node."""
    summary = build_summary(results)
    positions = tree_layout(summary)
    best = set(best_node_per_block(summary).values())
    rows = summary.to_dict("records")
    configs = {int(r["node"]): _read_yaml(layout.IterationFolder(results / str(r["dir"])).config_path) for r in rows}
    decisions = decisions_by_node(results)
    nodes = [node_payload(r, results, page_dir, positions[int(r["node"])], configs, best, decisions) for r in rows]
    blocks: dict[Any, dict[str, Any]] = {}
    for node in nodes:
        block = blocks.setdefault(node["fields"].get("block"), {
            "block": node["fields"].get("block"), "time_step": node["fields"].get("time_step"), "nodes": []})
        block["nodes"].append(node["id"])
    costs = [n["agent"]["usage"]["cost_usd"] for n in nodes if n["agent"] and n["agent"]["usage"]["cost_usd"] is not None]
    return {
        "experiment": results.resolve().name,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "total_cost_usd": sum(costs) if costs else None,
        "scale": {"max": R2_NINES_MAX, "stops": r2_color_stops(), "no_value": NO_VALUE_COLOR},
        "blocks": list(blocks.values()),
        "nodes": nodes,
    }


# --------------------------------------------------------------------------- the page


def embed_json(data: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: no '<', '>' or '&' survives literally.

    Inside JSON these characters only occur within strings, where the \\u escapes decode back
    to the same text, so ``</script>`` or ``<!--`` in an LLM's text can never close or
    confuse the data block.
    """
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


def _csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode("ascii") + "'"


def content_security_policy(script: str, style: str) -> str:
    """Only this page's own script and style run; pictures only from local files; nothing else loads."""
    return (f"default-src 'none'; script-src {_csp_hash(script)}; style-src {_csp_hash(style)}; "
            "img-src 'self' file: data:; base-uri 'none'; form-action 'none'")


def render_page(data: dict[str, Any]) -> str:
    """The complete HTML text of the page for ``collect``'s data."""
    script = (_ASSETS / "explorer.js").read_text(encoding="utf-8")
    style = (_ASSETS / "explorer.css").read_text(encoding="utf-8")
    title = html.escape(f"{data.get('experiment', '')}: exploration explorer")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{html.escape(content_security_policy(script, style))}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{title}</title>\n<style>{style}</style>\n</head>\n<body>\n"
        f"<noscript>This page needs JavaScript to draw the exploration.</noscript>\n"
        f"<script type=\"application/json\" id=\"explorer-data\">{embed_json(data)}</script>\n"
        f"<script>{script}</script>\n</body>\n</html>\n"
    )


def default_out_path(results_dir: str | os.PathLike) -> Path:
    """results/<exp>/summary/explorer.html."""
    return Path(results_dir) / SUMMARY_DIR / EXPLORER_NAME


def write_explorer(results_dir: str | os.PathLike, out_path: str | os.PathLike | None = None) -> Path:
    """Write the explorer page of ``results_dir`` (atomically) and return its path.

    Raises SummaryError when the folder holds no finished iteration.
    """
    results = Path(results_dir)
    out = Path(out_path) if out_path is not None else default_out_path(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = collect(results, out.parent)
    return atomic_write_text(out, render_page(data))


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m pipeline explorer``: exit 0, or 1 with one line when the folder holds nothing to show."""
    parser = argparse.ArgumentParser(prog="python -m pipeline explorer")
    parser.add_argument("--results", required=True, type=Path, help="experiment results folder, e.g. results/demo")
    parser.add_argument("--out", type=Path, default=None, help="page to write (default: RESULTS/summary/explorer.html)")
    args = parser.parse_args(argv)
    try:
        path = write_explorer(args.results, args.out)
    except (SummaryError, FileNotFoundError, ValueError) as exc:
        print(f"pipeline explorer: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


__all__ = ["EXPLORER_NAME", "SummaryError", "collect", "config_diff", "embed_json", "render_page", "write_explorer"]
