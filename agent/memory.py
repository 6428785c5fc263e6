"""The seed's two agent files: the working memory (memory.md) and the full log (analysis.md).

Both are versioned per iteration: iteration i's decide writes ``iter_i/memory.md`` and
``iter_i/analysis.md`` from iteration i-1's versions, so nothing is ever rewritten.

- Full log: append-only. Each version is exactly the previous version followed by this
  iteration's entry (the seed's log form, for node i) and, at a block end, the block summary
  and the ``CONFIG EDITED: Block N time_step=Y (reason: ...)`` line.
- Working memory: the seed's sections, "Emerging Observations" always last, at most
  :data:`MAX_MEMORY_LINES` lines and :data:`MAX_MEMORY_CHARS` characters. When too long, the
  oldest iteration entries of the current block, then the oldest principles, open questions
  and table rows are dropped, each drop leaving a ``(... trimmed ...)`` marker; free-text
  fields are clipped to a few lines, and as a last resort every line to
  :data:`MAX_LINE_CHARS`.

The section structure is an invariant of this module, whatever the text it is given (a
decision's fields are already cleaned by agent.decision, but the previous memory.md and the
node records are read from disk): no rendered line but our own headings starts with '#'.
:func:`sections` lists the headings, so a test can check that an update kept them.

The memory is kept as a :class:`WorkingMemory` value and parsed back from our own headings
(only the known headings below split sections, so the ``## Iter N`` entries stay inside
"Iterations This Block").
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # pragma: no cover
    from agent.context import DecisionContext
    from agent.decision import Decision

from agent.decision import clip, one_line, strip_heading
from agent.tree import NodeRecord, best_node, block_nodes, fmt, format_mutation
from neuralgraph.analysis_log import parse_analysis_log
from neuralgraph.metrics import CONVERGED_ABOVE

MAX_MEMORY_LINES = 500
#: About 15k tokens: the memory is re-sent in every prompt, so its size is a cost and a
#: context-window budget as well as a reading burden (500 lines of the seed's log form are ~50k).
MAX_MEMORY_CHARS = 60_000
MAX_TEXT_LINES = 40  # per free-text field (summary, hypothesis, observations)
#: Last-resort width of every line once lists and texts are trimmed as far as they go.
MAX_LINE_CHARS = 400
#: Room kept for a trim marker (and its blank line) when trimming a list.
_MARKER_ROOM = (2, 200)

TABLE_HEADER = (
    "| Block | time_step | eff_rank | Best R² | Optimal lr_W | Optimal lr | Optimal L1 | Rollout R² "
    "| Training time (min) | Key finding |"
)
TABLE_RULE = "| ----- | --------- | -------- | ------- | ------------ | ---------- | ---------- | ---------- | ------------------- | ----------- |"

H_TABLE = "### Time Step Comparison Table"
H_PRINCIPLES = "### Established Principles"
H_QUESTIONS = "### Open Questions"
H_PREVIOUS = "## Previous Block Summary"
H_CURRENT = "## Current Block"
H_INFO = "### Block Info"
H_HYPOTHESIS = "### Hypothesis"
H_ITERATIONS = "### Iterations This Block"
H_EMERGING = "### Emerging Observations"
_KNOWN = (H_TABLE, H_PRINCIPLES, H_QUESTIONS, H_PREVIOUS, H_CURRENT, H_INFO, H_HYPOTHESIS, H_ITERATIONS, H_EMERGING)
TRIM_MARKER = ("(... {n} older {what} trimmed to keep memory under {limit} lines and {chars} characters; "
               "see analysis.md ...)")



@dataclass
class WorkingMemory:
    """The structured content of memory.md."""

    block: int = 1
    time_step: int = 1
    first_iteration: int = 1
    n_iter_block: int = 8
    table_rows: list[str] = field(default_factory=list)
    principles: list[str] = field(default_factory=list)
    open_questions: list[str] = field(default_factory=list)
    previous_summary: str = ""
    previous_block: Optional[int] = None
    hypothesis: str = ""
    iterations: list[str] = field(default_factory=list)  # one entry (several lines) per iteration
    emerging: str = ""


def _plain(line: str) -> str:
    """Free text may not open a section: a leading '#' would split the memory when read back."""
    return strip_heading(line)


def _clip(text: str, max_lines: int = MAX_TEXT_LINES) -> str:
    lines = [_plain(line) for line in text.strip().splitlines()]
    if len(lines) <= max_lines:
        return "\n".join(lines)
    return "\n".join(lines[:max_lines] + [f"(... {len(lines) - max_lines} more lines clipped ...)"])


def _bullets(items: list[str], empty: str) -> list[str]:
    items = [" ".join(_plain(item).split()) for item in items]
    return [item if item.startswith(("-", "(")) else f"- {item}" for item in items if item] or [empty]


def render_memory(mem: WorkingMemory) -> str:
    """memory.md text in the seed's layout (Emerging Observations last)."""
    last = mem.first_iteration + mem.n_iter_block - 1
    lines = ["# Working Memory", "", "## Knowledge Base (accumulated across all blocks)", "", H_TABLE, "",
             "eff_rank is `effective rank (99% var)` from analysis.log.", "", TABLE_HEADER, TABLE_RULE,
             *mem.table_rows, "", H_PRINCIPLES, "", *_bullets(mem.principles, "(none yet)"), "",
             H_QUESTIONS, "", *_bullets(mem.open_questions, "(none yet)"), "", "---", ""]
    prev = f" (Block {mem.previous_block})" if mem.previous_block else ""
    lines += [f"{H_PREVIOUS}{prev}", "", _clip(mem.previous_summary) or "(no previous block)", "", "---", "",
              f"{H_CURRENT} (Block {mem.block})", "", H_INFO, "", f"time_step: {mem.time_step}",
              f"Iterations: {mem.first_iteration} to {last}", "", H_HYPOTHESIS, "",
              _clip(mem.hypothesis) or "(none stated)", "", H_ITERATIONS, ""]
    for entry in mem.iterations:
        head, *rest = entry.strip().splitlines() or [""]
        lines += [head, *map(_plain, rest), ""]  # only an entry's first line is a heading
    lines += [H_EMERGING, "", _clip(mem.emerging) or "(none yet)"]
    return "\n".join(lines) + "\n"


def _over(mem: WorkingMemory, limit: int, chars: int) -> bool:
    text = render_memory(mem)
    return len(text.splitlines()) > limit or len(text) > chars


def _trim_list(items: list[str], what: str, mem: WorkingMemory, limit: int, chars: int) -> None:
    """Drop the oldest items (keeping a marker first) until the memory fits or one item is left."""
    dropped = 0
    if items and items[0].startswith("(... "):
        dropped = int(items[0].split()[1])
        del items[0]
    removed = 0
    while len(items) > 1 and _over(mem, limit - _MARKER_ROOM[0], chars - _MARKER_ROOM[1]):
        del items[0]
        removed += 1
    if removed or dropped:
        items.insert(0, TRIM_MARKER.format(n=removed + dropped, what=what, limit=limit, chars=chars))


def _narrow(mem: WorkingMemory, width: int) -> None:
    """Clip every line of every field to ``width`` characters (the last resort)."""
    def lines(text: str) -> str:
        return "\n".join(clip(line, width) for line in text.splitlines())

    for name in ("table_rows", "principles", "open_questions", "iterations"):
        setattr(mem, name, [lines(item) for item in getattr(mem, name)])
    for name in ("previous_summary", "hypothesis", "emerging"):
        setattr(mem, name, lines(getattr(mem, name)))


def enforce_limit(mem: WorkingMemory, limit: int = MAX_MEMORY_LINES, chars: int = MAX_MEMORY_CHARS) -> WorkingMemory:
    """Trim oldest iteration entries, principles, questions, table rows until the memory has at
    most ``limit`` lines and ``chars`` characters; then clip texts, entries and line widths."""
    for items, what in ((mem.iterations, "iteration entries"), (mem.principles, "principles"),
                        (mem.open_questions, "open questions"), (mem.table_rows, "table rows")):
        if not _over(mem, limit, chars):
            break
        _trim_list(items, what, mem, limit, chars)
    for name in ("emerging", "hypothesis", "previous_summary"):
        if _over(mem, limit, chars):
            setattr(mem, name, _clip(getattr(mem, name), 5))
    if _over(mem, limit, chars):  # a single huge entry: clip every entry to its first lines
        mem.iterations = [_clip(entry, 12) for entry in mem.iterations]
    if _over(mem, limit, chars):
        _narrow(mem, MAX_LINE_CHARS)
    return mem


def _sections(text: str) -> dict[str, list[str]]:
    current = None
    sections: dict[str, list[str]] = {}
    for line in text.splitlines():
        heading = next((h for h in _KNOWN if line.startswith(h)), None)
        if heading is not None:
            current = heading
            sections[current] = [line]
            continue
        if current is not None:
            sections[current].append(line)
    return sections


def sections(text: str) -> list[str]:
    """The section headings of a memory text, in order: every line starting with '#' except the
    ``## Iter N:`` entry headings, a trailing ``(Block N)`` dropped (it changes at block ends).

    Two memories with the same list have the same structure; a heading smuggled in by free text
    would show up here as an extra item.
    """
    found = []
    for line in text.splitlines():
        if line.startswith("#") and not line.startswith("## Iter "):
            found.append(re.sub(r"\s*\(Block \d+\)$", "", line.rstrip()))
    return found


def _body(lines: list[str]) -> list[str]:
    body = [l for l in lines[1:] if l.strip() and l.strip() != "---"]
    return [l for l in body if l.strip() not in ("(none yet)", "(none stated)", "(no previous block)")]


def _heading_number(line: str) -> Optional[int]:
    digits = "".join(ch if ch.isdigit() else " " for ch in line).split()
    return int(digits[-1]) if digits else None


def _split_entries(lines: list[str]) -> list[str]:
    entries: list[list[str]] = []
    for line in lines:
        if line.startswith("## Iter ") or line.startswith("(... ") or not entries:
            entries.append([line])
        else:
            entries[-1].append(line)
    return ["\n".join(e).strip() for e in entries if "\n".join(e).strip()]


def parse_memory(text: str) -> WorkingMemory:
    """Read memory.md back (our own layout); unknown text outside known sections is ignored."""
    sec = _sections(text)
    mem = WorkingMemory()
    mem.table_rows = [l for l in _body(sec.get(H_TABLE, [])) if l.startswith("|") and l not in (TABLE_HEADER, TABLE_RULE)]
    mem.principles = _body(sec.get(H_PRINCIPLES, []))
    mem.open_questions = _body(sec.get(H_QUESTIONS, []))
    if H_PREVIOUS in sec:
        mem.previous_block = _heading_number(sec[H_PREVIOUS][0])
        mem.previous_summary = "\n".join(_body(sec[H_PREVIOUS]))
    if H_CURRENT in sec:
        mem.block = _heading_number(sec[H_CURRENT][0]) or 1
    for line in _body(sec.get(H_INFO, [])):
        key, _, value = line.partition(":")
        if key.strip() == "time_step" and value.strip().isdigit():
            mem.time_step = int(value)
        if key.strip() == "Iterations":
            parts = [p for p in value.replace("to", " ").split() if p.isdigit()]
            if len(parts) == 2:
                mem.first_iteration = int(parts[0])
                mem.n_iter_block = int(parts[1]) - int(parts[0]) + 1
    mem.hypothesis = "\n".join(_body(sec.get(H_HYPOTHESIS, [])))
    mem.iterations = _split_entries([l for l in sec.get(H_ITERATIONS, [])[1:]])
    mem.emerging = "\n".join(_body(sec.get(H_EMERGING, [])))
    return mem


def new_memory(block: int, time_step: int, first_iteration: int, n_iter_block: int,
               hypothesis: str = "") -> WorkingMemory:
    """The memory before iteration 1 (empty knowledge base)."""
    return WorkingMemory(block=block, time_step=time_step, first_iteration=first_iteration,
                         n_iter_block=n_iter_block, hypothesis=hypothesis)


def table_row(block: int, time_step: int, eff_rank: Any, best: Any, key_finding: str) -> str:
    """A Time Step Comparison Table row for a finished block from its best node record."""
    training = (best.config or {}).get("training", {}) if best is not None else {}
    metrics = best.metrics if best is not None else {}
    cells = [str(block), str(time_step), fmt(eff_rank), fmt(metrics.get("connectivity_R2"), 3),
             fmt(training.get("learning_rate_W_start")), fmt(training.get("learning_rate_start")),
             fmt(training.get("coeff_W_L1")), fmt(metrics.get("test_R2"), 3),
             fmt(metrics.get("training_time_min"), 3), (key_finding or "-").replace("|", "/").replace("\n", " ")]
    return "| " + " | ".join(cells) + " |"


# --------------------------------------------------------------------------- log entries


def activity_values(analysis_log: str, metrics: dict[str, Any]) -> tuple[Any, Any]:
    """(eff_rank, spectral_radius): from analysis.log (seed keys), else from metrics.json."""
    parsed = parse_analysis_log(analysis_log) if analysis_log.strip() else {}
    eff_rank = parsed.get("effective rank (99% var)", metrics.get("effective_rank_99"))
    radius = parsed.get("spectral radius", metrics.get("spectral_radius"))
    return eff_rank, radius


def _config_line(node: NodeRecord) -> str:
    tr = (node.config or {}).get("training", {})
    return (f"Config: time_step={fmt(tr.get('time_step', node.time_step))}, lr_W={fmt(tr.get('learning_rate_W_start'))}, "
            f"lr={fmt(tr.get('learning_rate_start'))}, lr_emb={fmt(tr.get('learning_rate_embedding_start'))}, "
            f"coeff_W_L1={fmt(tr.get('coeff_W_L1'))}, batch_size={fmt(tr.get('batch_size'))}, "
            f"data_augmentation_loop={fmt(tr.get('data_augmentation_loop'))}")


def _metrics_line(m: dict[str, Any]) -> str:
    return (f"Metrics: test_R2={fmt(m.get('test_R2'))}, test_pearson={fmt(m.get('test_pearson'))}, "
            f"connectivity_R2={fmt(m.get('connectivity_R2'))}, cluster_accuracy={fmt(m.get('cluster_accuracy'))}, "
            f"final_loss={fmt(m.get('final_loss'))}, training_time={fmt(m.get('training_time_min'), 3)} min")



def log_entry(node: NodeRecord, decision: "Decision", analysis_log: str) -> str:
    """The seed's log form for node ``node``; ``Next: parent=P`` is the decision for the next node."""
    metrics = node.metrics or {}
    outcome = metrics.get("outcome") or decision.log.outcome
    parent = "root" if node.parent is None else node.parent
    mutation = node.mutation or {}
    code = "function" in mutation
    lines = [f"## Iter {node.iteration}: {one_line(outcome)}", f"Node: id={node.id}, parent={parent}",
             f"Mode/Strategy: {one_line(decision.log.mode)}/{'code-modification' if code else (node.strategy or 'init')}",
             _config_line(node)]
    if code:
        lines += ["CODE MODIFICATION:", "  File: train_loop.py", f"  Function: {one_line(mutation['function'])}",
                  f"  Change: {one_line(mutation.get('change_summary', ''))}",
                  f"  Hypothesis: {one_line(mutation.get('hypothesis', ''))}"]
    eff_rank, radius = activity_values(analysis_log, metrics)
    lines += [_metrics_line(metrics), f"Activity: eff_rank={fmt(eff_rank)}, spectral_radius={fmt(radius)}",
              f"Mutation: {one_line(format_mutation(node.mutation))}", f"Parent rule: {one_line(decision.log.parent_rule)}",
              f"Observation: {one_line(decision.log.observation)}", f"Next: parent={decision.parent}"]
    return "\n".join(lines)


def block_end_text(ctx: "DecisionContext", decision: "Decision", next_time_step: Optional[int],
                   reason: str) -> str:
    """Full-log block summary and the seed's CONFIG EDITED line."""
    best = best_node(ctx.nodes, ctx.block)
    nodes = block_nodes(ctx.nodes, ctx.block)
    summary = decision.memory_update.block_summary or default_block_summary(ctx)
    lines = [f"## Block {ctx.block} summary (time_step={ctx.time_step}, {len(nodes)} nodes)",
             _clip(summary, 10), f"Best node: {best.id if best else '-'} (connectivity_R2={fmt(best.r2 if best else None)})"]
    if next_time_step is not None:
        lines.append(f"CONFIG EDITED: Block {ctx.block + 1} time_step={next_time_step} (reason: {one_line(reason)})")
    return "\n".join(lines)


def default_block_summary(ctx: "DecisionContext") -> str:
    nodes = block_nodes(ctx.nodes, ctx.block)
    best = best_node(ctx.nodes, ctx.block)
    converged = sum(1 for n in nodes if (n.r2 or 0) > CONVERGED_ABOVE)
    return (f"time_step={ctx.time_step}: {converged}/{len(nodes)} nodes converged; best connectivity_R2="
            f"{fmt(best.r2 if best else None)} at node {best.id if best else '-'}.")


def append_full_log(previous: str, entry: str, block_text: str = "") -> str:
    """New full-log version: the previous text unchanged, then the entry (and block text)."""
    head = previous if previous.strip() else "# Full Log (append-only)\n"
    if not head.endswith("\n"):
        head += "\n"
    tail = "\n" + entry.strip() + "\n"
    if block_text:
        tail += "\n" + block_text.strip() + "\n"
    return head + tail


# --------------------------------------------------------------------------- memory updates


def _merge_new(items: list[str], new: list[str]) -> list[str]:
    existing = {i.lstrip("- ").strip() for i in items}
    return items + [n.strip() for n in new if n.strip() and n.strip() not in existing]


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _retire(mem: WorkingMemory, contradicted: list[Any]) -> None:
    """Contradicted principles leave Established Principles for Open Questions, with the evidence."""
    for item in contradicted:
        text = _plain(item.principle).lstrip("- ").strip()
        if not text:
            continue
        kept = [p for p in mem.principles if text not in p and p.lstrip("- ").strip() not in text]
        if len(kept) == len(mem.principles):
            continue  # not (or no longer) an established principle
        mem.principles = kept
        mem.open_questions = _merge_new(mem.open_questions, [f"Contradicted: {text} (evidence: {_plain(item.evidence)})"])


def update_memory(previous: str, ctx: "DecisionContext", decision: "Decision | list[Decision]",
                  entry: "str | list[str]", next_time_step: Optional[int]) -> str:
    """This round's memory.md: the previous one plus the round's entries and decisions' updates.

    ``decision`` / ``entry``: one each, or one per slot of the round (node order); ``ctx`` is
    the context of the round's last node. The slots' updates are merged in slot order
    (principles added, contradicted ones moved to Open Questions, the last hypothesis and
    question list given win, emerging observations joined). At a block end the finished
    block becomes a table row and a short Previous Block Summary (slot 1's), the iteration
    list is cleared and the Current Block switches to the next block.
    """
    decisions, entries = _as_list(decision), _as_list(entry)
    if previous.strip():
        mem = parse_memory(previous)
    else:
        first = (ctx.block - 1) * ctx.n_iter_block + 1
        mem = new_memory(ctx.block, ctx.time_step, first, ctx.n_iter_block)
    mem.block, mem.time_step, mem.n_iter_block = ctx.block, ctx.time_step, ctx.n_iter_block
    mem.first_iteration = (ctx.block - 1) * ctx.n_iter_block + 1
    emerging = []
    for one in decisions:
        update = one.memory_update
        mem.principles = _merge_new(mem.principles, update.new_principles)
        _retire(mem, update.contradicted_principles)
        if update.open_questions is not None:
            mem.open_questions = [q for q in update.open_questions if q.strip()]
        if getattr(update, "current_hypothesis", None):
            mem.hypothesis = update.current_hypothesis
        if update.emerging_observations.strip() and update.emerging_observations not in emerging:
            emerging.append(update.emerging_observations)
    mem.emerging = "\n".join(emerging)
    mem.iterations.extend(entries)
    if ctx.is_block_end:
        _close_block(mem, ctx, decisions[0], next_time_step)
    return render_memory(enforce_limit(mem))


def _close_block(mem: WorkingMemory, ctx: "DecisionContext", decision: "Decision",
                 next_time_step: Optional[int]) -> None:
    update = decision.memory_update
    eff_rank, _ = activity_values(ctx.analysis_log, ctx.current_node.metrics or {})
    best = best_node(ctx.nodes, ctx.block)
    mem.table_rows = [r for r in mem.table_rows if not r.startswith(f"| {ctx.block} |")]
    mem.table_rows.append(table_row(ctx.block, ctx.time_step, eff_rank, best, update.key_finding or ""))
    mem.previous_block = ctx.block
    mem.previous_summary = update.block_summary or default_block_summary(ctx)
    mem.iterations = []
    if next_time_step is not None:
        mem.block = ctx.block + 1
        mem.time_step = next_time_step
        mem.first_iteration = ctx.iteration + 1
        mem.hypothesis = update.next_block_hypothesis or f"time_step={next_time_step}: to be tested."


# --------------------------------------------------------------------------- instructions

RULES_HEADING = "## Parent selection rules added at block ends"


def revise_instructions(text: str, block: int, edits: list[str]) -> str:
    """A new instructions version: the previous text plus this block's rule edits.

    The rules go under :data:`RULES_HEADING` (created at the end the first time), each line
    tagged with its block, so later blocks see where a rule came from. Without edits the
    text is returned unchanged (the version is still written, one per iteration).
    """
    rules = [one_line(e) for e in edits if e and e.strip()]
    if not rules:
        return text
    body = text.rstrip("\n")
    if RULES_HEADING not in body:
        body += f"\n\n{RULES_HEADING}\n"
    lines = [f"- (block {block}) {rule}" for rule in rules]
    return body + "\n" + "\n".join(lines) + "\n"
