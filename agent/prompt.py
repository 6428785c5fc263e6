"""The LLM request content built from a :class:`agent.context.DecisionContext`.

The model sees what the seed's agent saw (docs/agent.md, "Decisions"): the instructions, block and
iteration info (BLOCK END marked), the working memory, analysis.log, ucb_scores.txt, the
current config, the editable training code and the dataset pictures -- plus a table of every
node of the block it may choose from (its metrics and mutable training values at full
precision) and, at a block end, the node the next root is copied from with the values that
``config_mutation.old`` must match (:func:`node_table`).

``agent.prompt_images: false`` / ``agent.prompt_code: false`` (DecisionContext.prompt_images /
prompt_code) leave the pictures / the training code out, with a note saying so.

The request is split for prompt caching: the instruction text changes only at block ends, so
it is the system prompt and carries ``cache_control`` (the API then bills repeats at the cache
read price); everything that changes every iteration goes into the user message after it.

Size: every text part has a character budget (:data:`PART_BUDGETS`); a longer part keeps its
head and its tail with a note of what was left out (for memory.md: the knowledge base and the
current block). ``trim=1`` is the harder trim the anthropic backend retries once with after a
"prompt is too long" answer: every budget divided by :data:`HARD_TRIM_DIVISOR`, no pictures.
"""
from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any, Optional

from agent.codeedit import ALLOWED_MODULE_ATTRIBUTES, SAFE_BUILTINS
from agent.decision import (ALLOWED_PARAMETERS, CODE_FREE_ITERATIONS, MAX_LIST_ITEMS, MAX_RULE_EDITS, STRATEGIES,
                            TEXT_CAPS)
from agent.layout import SCORES_FILE
from agent.memory import MAX_MEMORY_CHARS
from agent.tree import best_node, block_nodes
from neuralgraph.config import ALLOWED_TIME_STEPS
from neuralgraph.io import read_bytes_nofollow

#: Characters per prompt part at the normal trim level. memory.md is capped when written
#: (agent.memory.MAX_MEMORY_CHARS); these budgets also hold for inputs we did not write.
PART_BUDGETS: dict[str, int] = {"instructions": 60_000, "memory": MAX_MEMORY_CHARS, "analysis_log": 20_000,
                                "ucb_scores": 20_000, "config": 20_000, "code": 60_000, "feedback": 8_000,
                                "nodes": 20_000}
#: The harder trim (``trim=1``): budgets divided by this, pictures left out.
HARD_TRIM_DIVISOR = 4
#: Trim levels a backend may ask for: normal, then harder.
TRIM_LEVELS = (0, 1)

#: The API refuses images above 5 MB (base64 payload); larger pictures are described, not sent.
MAX_IMAGE_BYTES = 5 * 1024 * 1024 * 3 // 4
_IMAGE_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)

ROLE_PREAMBLE = (
    "You are the exploration agent of a neuroscience experiment: a graph neural network is "
    "trained to recover a network's connectivity matrix W from recorded activity, and you choose "
    "the next training run. Follow the instructions below. Reply with exactly one JSON object "
    "that matches the requested schema; put your reasoning in its text fields, nothing outside it."
)


ROLE_DUTIES = {
    "exploit": "exploit: the highest-UCB parent once the children given to earlier slots of this round count as "
               "visits of their parents and those parents' ancestors (virtual visits), a moderate step",
    "explore": "explore: a parent outside the recent chain (the round's nodes and their ancestors); when every node "
               "of the block converged, a node from the bottom half of the UCB ranking",
    "principle-test": "principle-test: pick one Established Principle from memory.md, design a child that could "
                      "contradict it and name the principle in tested_principle; with no principle yet, probe a "
                      "parameter at its range boundary",
}


def budget(part: str, trim: int = 0) -> int:
    """Characters ``part`` may take in the prompt at trim level ``trim``."""
    return PART_BUDGETS[part] // (HARD_TRIM_DIVISOR if trim else 1)


def fit(text: str, limit: int, what: str) -> str:
    """``text`` within ``limit`` characters: its head (a third) and its tail, with a note between."""
    if len(text) <= limit:
        return text
    note = f"\n(... {{n}} characters of {what} left out to fit the prompt ...)\n"
    keep = max(0, limit - len(note) - 12)
    head, tail = keep // 3, keep - keep // 3
    cut = len(text) - head - tail
    return text[:head] + note.format(n=cut) + (text[-tail:] if tail else "")


def rules_summary() -> str:
    """The machine-checked rules, generated from the validators themselves.

    The instructions file explains the method in words; this table is built from
    :mod:`agent.decision` and :mod:`agent.codeedit`, so what the model is told can never
    drift from what is then enforced.
    """
    lines = ["## Enforced rules (a decision breaking one is refused)", "",
             "Mutable training parameters (config_mutation.parameter, one per decision; "
             "data_augmentation_loop may ride along):"]
    lines += [f"- {rule.name}: {rule.allowed()} ({rule.description})" for rule in ALLOWED_PARAMETERS.values()]
    lines += [
        "",
        f"Strategies: {', '.join(STRATEGIES)}.",
        f"time_step: fixed within a block; next_time_step at a block end, one of {', '.join(map(str, ALLOWED_TIME_STEPS))}.",
        "simulation, batch_size and the claude section are fixed for the whole experiment.",
        f"Code modifications: never in the first {CODE_FREE_ITERATIONS} iterations of a block; one editable "
        "function per decision, complete source, same signature. An allow-list: modules and attribute "
        f"paths only from {', '.join(sorted(ALLOWED_MODULE_ATTRIBUTES))} (torch: tensor ops, dtypes, grad modes); "
        f"builtins only {', '.join(sorted(SAFE_BUILTINS - {'True', 'False', 'None'}))}; "
        "no attribute starting with an underscore, no frame/generator attributes, no str.format, no "
        "global/nonlocal, no nested class, no assignment into modules or into ctx/data/cfg. The edit then "
        "survives a short smoke run in a sandbox (no endless loop, no crash, finite loss) and trains in the "
        "sandbox: no file, process or network access.",
        f"Text fields: one line each (newlines and '#' heading markers are removed), at most "
        f"{TEXT_CAPS['line']} characters ({TEXT_CAPS['name']} for mode, parameter and function names); "
        f"multi-line notes (emerging_observations, hypotheses, block_summary) at most {TEXT_CAPS['note']}; "
        f"longer text is clipped. At most {MAX_LIST_ITEMS} new_principles / open_questions and "
        f"{MAX_RULE_EDITS} selection_rule_edits; new_source at most {TEXT_CAPS['code']} characters (refused above).",
    ]
    return "\n".join(lines)


def system_blocks(instructions: str, trim: int = 0) -> list[dict[str, Any]]:
    """The static system prompt: role, instructions, enforced rules; marked for prompt caching."""
    instructions = fit(instructions.strip(), budget("instructions", trim), "the instructions")
    text = f"{ROLE_PREAMBLE}\n\n{instructions}\n\n{rules_summary()}\n"
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]


def _section(title: str, body: str, empty_note: str, limit: int) -> dict[str, Any]:
    text = fit(body.strip(), limit, title) if body and body.strip() else empty_note
    return {"type": "text", "text": f"## {title}\n\n{text}\n"}


def _media_type(data: bytes) -> Optional[str]:
    for signature, media_type in _IMAGE_SIGNATURES:
        if data.startswith(signature):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_blocks(path: Path) -> list[dict[str, Any]]:
    """A caption and the picture as a base64 image block, or a note saying why it is absent.

    A missing or unreadable picture must not stop the exploration: the model is told, and
    decides from the numbers.
    """
    label = Path(path).name
    try:
        data = read_bytes_nofollow(path)  # a link in the run folder is refused, not followed
    except OSError as exc:
        return [{"type": "text", "text": f"(picture {label} is not available: {exc.strerror or exc})"}]
    media_type = _media_type(data)
    if media_type is None:
        return [{"type": "text", "text": f"(picture {label} is not a PNG/JPEG/GIF/WebP image; not shown)"}]
    if len(data) > MAX_IMAGE_BYTES:
        return [{"type": "text", "text": f"(picture {label} is {len(data)} bytes, above the API's image limit; not shown)"}]
    return [
        {"type": "text", "text": f"Picture: {label}"},
        {"type": "image", "source": {"type": "base64", "media_type": media_type,
                                     "data": base64.b64encode(data).decode("ascii")}},
    ]


#: Metrics of each node in the node table (the rest is in that node's analysis.log).
NODE_METRICS = ("connectivity_R2", "test_R2", "cluster_accuracy", "final_loss", "training_time_min", "outcome")
#: Training values of each node in the node table: what a config_mutation may change, and time_step.
NODE_TRAINING_KEYS = ("time_step", *ALLOWED_PARAMETERS)

#: Prompt parts whose input tokens are estimated before each call (costs.tsv): everything that
#: is not one of the named parts (task, ucb_scores, configs, node table, feedback) is "other".
PROMPT_PARTS = ("system", "memory", "analyses", "code", "images", "other")


def _metric(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "nan" if value is None else str(value)


def node_training_values(node: Any) -> str:
    """``name=value`` of the node's mutable training values, exactly as in its config.yaml."""
    training = (node.config or {}).get("training", {}) if isinstance(node.config, dict) else {}
    return ", ".join(f"{key}={training[key]!r}" for key in NODE_TRAINING_KEYS if key in training)


def node_table(ctx: Any) -> str:
    """Every node of the block the model may choose from, and the source of the next root.

    WHY: ucb_scores.txt rounds R2 to 3 decimals and the prompt's config is one node's; a model
    that must pick a parent (or, at a block end, mutate the node the next root is copied from)
    needs each node's metrics and values at the precision ``config_mutation.old`` is checked at.
    """
    nodes = sorted(block_nodes(ctx.nodes, ctx.block), key=lambda n: n.id)
    lines = []
    for node in nodes:
        parent = "root" if node.parent is None else f"parent {node.parent}"
        slot = f", slot {node.slot}" if getattr(ctx, "slots", 1) > 1 else ""
        metrics = ", ".join(f"{key}={_metric((node.metrics or {}).get(key))}" for key in NODE_METRICS
                            if key in (node.metrics or {}))
        lines.append(f"- node {node.id} ({parent}, iteration {node.iteration}{slot}): {metrics or 'no metrics'}; "
                     f"training: {node_training_values(node) or '(no config)'}")
    if ctx.is_block_end and not ctx.is_last_iteration:
        source = best_node(ctx.nodes, ctx.block) or ctx.current_node
        lines += ["", f"NEXT ROOT: parent 'root' copies node {source.id}, the block's best "
                      f"(connectivity_R2={_metric((source.metrics or {}).get('connectivity_R2'))}); a "
                      f"config_mutation.old must equal node {source.id}'s value: {node_training_values(source)}"]
    else:
        lines += ["", "config_mutation.old must equal the chosen parent's value as listed here."]
    return "\n".join(lines)


def _task_text(ctx: Any) -> str:
    """What is asked this time: the next node, and at a block end the block-end duties."""
    lines = [ctx.block_info(), ""]
    if ctx.is_block_end:
        lines.append(
            "This is the END of the block: the next node starts a new tree, so parent (and log.next_parent) "
            "must be 'root'. Also fill memory_update.block_summary, memory_update.key_finding, "
            "memory_update.next_block_hypothesis, next_time_step with time_step_reason, and "
            "selection_rule_edits (rules to add to the instructions, judged on branching and improvement rates).")
        scheduled = ctx.scheduled_next_time_step
        if scheduled is not None:
            lines.append(f"The experiment's schedule fixes the next block's time_step = {scheduled}.")
    else:
        lines.append(f"Decide the node of iteration {ctx.next_iteration} (iteration {ctx.next_iter_in_block} "
                     f"of block {ctx.block}; time_step stays {ctx.time_step} within the block).")
    if getattr(ctx, "slots", 1) > 1:
        lines.append(f"This is slot {ctx.slot} of a round of {ctx.slots} (its log entry: node {ctx.current_node.id}); "
                     f"role {ROLE_DUTIES.get(ctx.role, ctx.role)}. Children already given to earlier slots of this "
                     f"round: {', '.join(f'slot {p.slot} -> parent {p.parent}' for p in ctx.planned) or 'none'}.")
    lines.append(f"Editable functions of the training code: {', '.join(ctx.editable_functions) or 'none'}.")
    if ctx.code_modification_refusal:
        lines.append(f"Code modifications are not possible this time ({ctx.code_modification_refusal}): "
                     "mutate the config instead.")
    return "\n".join(lines)


def _nodes_section(ctx: Any, trim: int) -> dict[str, Any]:
    return _section(f"Nodes of block {ctx.block} you may choose from (full precision)", node_table(ctx),
                    "(no node yet)", budget("nodes", trim))


def user_parts(ctx: Any, feedback: Optional[str] = None, trim: int = 0) -> list[tuple[str, dict[str, Any]]]:
    """The user message's blocks, each with its part name (:data:`PROMPT_PARTS`)."""
    parts = [
        ("other", {"type": "text", "text": _task_text(ctx)}),
        ("memory", _section("Working memory (memory.md)", ctx.working_memory, "(empty: this is the first iteration)",
                            budget("memory", trim))),
        ("analyses", _section("analysis.log of this iteration", ctx.analysis_log, "(no analysis.log)",
                              budget("analysis_log", trim))),
        ("other", _section(SCORES_FILE, ctx.ucb_scores, "(empty: new block, use parent=root)",
                           budget("ucb_scores", trim))),
        ("other", _nodes_section(ctx, trim)),
        ("other", _section("Current config (YAML)", ctx.config_yaml, "(no config)", budget("config", trim))),
    ]
    return parts + _code_pictures_feedback(ctx, "Editable training code (train_loop.py)", feedback, trim, "decision")


def user_content(ctx: Any, feedback: Optional[str] = None, trim: int = 0) -> list[dict[str, Any]]:
    """The user message: this iteration's state as text blocks, then the pictures.

    ``feedback`` is the reason a previous decision was refused; it is stated last so the
    model fixes exactly that on its one retry. ``trim``: see the module docstring.
    """
    return [block for _, block in user_parts(ctx, feedback, trim)]


def _code_pictures_feedback(ctx: Any, code_title: str, feedback: Optional[str], trim: int,
                            what: str) -> list[tuple[str, dict[str, Any]]]:
    """The end of a request: the editable code, the dataset pictures (or a note when trimmed or
    switched off), the refusal reason; each block with its part name."""
    if not getattr(ctx, "prompt_code", True):
        blocks = [("code", {"type": "text", "text": f"## {code_title}\n\n(left out of the prompt: agent.prompt_code is "
                                                    "false; the editable functions are named above, mutate the "
                                                    "config rather than the code)\n"})]
    else:
        code = fit(ctx.code.rstrip(), budget("code", trim), "the code") if ctx.code else ""
        blocks = [("code", _section(code_title, f"```python\n{code}\n```" if code else "", "(no code)",
                                    budget("code", trim) + 20))]
    if ctx.image_paths and not getattr(ctx, "prompt_images", True):
        blocks.append(("other", {"type": "text", "text": f"({len(ctx.image_paths)} picture(s) left out: "
                                                         "agent.prompt_images is false)"}))
    elif trim and ctx.image_paths:
        blocks.append(("other", {"type": "text",
                                 "text": f"({len(ctx.image_paths)} picture(s) left out to fit the prompt)"}))
    else:
        for path in ctx.image_paths:
            blocks.extend(("images", block) for block in image_blocks(Path(path)))
    if feedback:
        blocks.append(("other", {"type": "text", "text": (
            f"Your previous {what} was REFUSED for this reason:\n"
            f"{fit(feedback.strip(), budget('feedback', trim), 'the reason')}\nReturn a corrected {what}.")}))
    return blocks


def build_messages(ctx: Any, feedback: Optional[str] = None, trim: int = 0) -> list[dict[str, Any]]:
    """The ``messages`` argument of the API call (one user turn), trimmed to level ``trim``."""
    return [{"role": "user", "content": user_content(ctx, feedback, trim)}]


# --------------------------------------------------------------------------- a round in one call



def _round_task_text(contexts: list[Any]) -> str:
    first, last = contexts[0], contexts[-1]
    lines = [last.block_info(), "",
             f"This round's {len(contexts)} nodes were trained side by side; decide the {len(contexts)} children of "
             f"the next round in ONE reply: children[k] is the decision of slot k+1. Each child's log entry is about "
             f"the finished node of its slot; every child must differ from the others (same config and code twice "
             f"is refused). Slots, their roles and what each child must do:"]
    for ctx in contexts:
        lines.append(f"- slot {ctx.slot}: role {ROLE_DUTIES.get(ctx.role, ctx.role)}. Its log entry: node "
                     f"{ctx.current_node.id}; its child: iteration {ctx.next_iteration} "
                     f"(iteration {ctx.next_iter_in_block} of block {ctx.block}).")
    lines += ["If a principle-test node of the finished round contradicted its principle (the setting it predicted "
              "worse did better), list it in memory_update.contradicted_principles with the node ids as evidence.",
              f"time_step stays {first.time_step} within the block.",
              f"Editable functions of the training code: {', '.join(first.editable_functions) or 'none'}."]
    if first.code_modification_refusal:
        lines.append(f"Code modifications are not possible this time ({first.code_modification_refusal}): "
                     "mutate the config instead.")
    return "\n".join(lines)


def round_user_parts(contexts: list[Any], feedback: Optional[str] = None,
                     trim: int = 0) -> list[tuple[str, dict[str, Any]]]:
    """The round's user message blocks, each with its part name (:data:`PROMPT_PARTS`)."""
    first, k = contexts[0], len(contexts)
    parts = [
        ("other", {"type": "text", "text": _round_task_text(contexts)}),
        ("memory", _section("Working memory (memory.md)", first.working_memory, "(empty: this is the first round)",
                            budget("memory", trim))),
        ("other", _section("ucb_scores.txt (without virtual visits)", first.ucb_scores, "(empty)",
                           budget("ucb_scores", trim))),
        ("other", _nodes_section(contexts[-1], trim)),
    ]
    for ctx in contexts:
        node = ctx.current_node
        parts.append(("analyses", _section(f"Slot {ctx.slot}: analysis.log of node {node.id}", ctx.analysis_log,
                                           "(no analysis.log)", budget("analysis_log", trim) // k)))
        parts.append(("other", _section(f"Slot {ctx.slot}: config of node {node.id} (YAML)", ctx.config_yaml,
                                        "(no config)", budget("config", trim) // k)))
    return parts + _code_pictures_feedback(
        first, f"Editable training code (train_loop.py of node {first.current_node.id})", feedback, trim, "answer")


def round_user_content(contexts: list[Any], feedback: Optional[str] = None, trim: int = 0) -> list[dict[str, Any]]:
    """The user message of a round: shared state once, then each finished node's analysis and config."""
    return [block for _, block in round_user_parts(contexts, feedback, trim)]


def build_round_messages(contexts: list[Any], feedback: Optional[str] = None, trim: int = 0) -> list[dict[str, Any]]:
    """The ``messages`` of a whole-round call (one user turn)."""
    return [{"role": "user", "content": round_user_content(contexts, feedback, trim)}]


#: Tokens one picture may cost at most. The API scales a picture down to about 1.15 megapixels,
#: about 1,600 tokens; the bound leaves room for models that keep more detail.
IMAGE_TOKEN_BOUND = 5_000
#: Tokens the service adds around the content (role markers, the structured-output
#: instructions); generous, since it only makes the spend cap stricter.
FRAMING_TOKEN_BOUND = 2_000


def _blocks_bound(blocks: Any) -> int:
    if isinstance(blocks, str):
        return len(blocks.encode("utf-8"))
    total = 0
    for block in blocks or []:
        if block.get("type") == "image":
            total += IMAGE_TOKEN_BOUND
        else:
            total += len(str(block.get("text", "")).encode("utf-8"))
    return total


def input_token_bound(system: Any, messages: list[dict[str, Any]], schema: Optional[dict[str, Any]] = None) -> int:
    """An upper bound of a request's input tokens, for the spend cap (never for billing).

    One token per UTF-8 byte of every text (a token covers at least one byte), plus
    :data:`IMAGE_TOKEN_BOUND` per picture, the JSON schema's text when the reply format is
    constrained by it, and :data:`FRAMING_TOKEN_BOUND`. Real counts are ~3-4x lower for
    English text: the cap errs on the side of not spending.
    """
    total = _blocks_bound(system) + FRAMING_TOKEN_BOUND
    for message in messages:
        total += _blocks_bound(message.get("content"))
    if schema is not None:
        total += len(json.dumps(schema).encode("utf-8"))
    return total


# --------------------------------------------------------------------------- tokens per part (costs.tsv)

#: Bytes of text per token in the per-part estimate (Anthropic's rule of thumb for English is
#: about 3.5 characters per token; code and numbers run denser, so this errs slightly high).
BYTES_PER_TOKEN = 3.5
#: The API scales a picture so its long edge is at most this many pixels ...
IMAGE_MAX_EDGE = 1568
#: ... and bills about width x height / this many tokens.
IMAGE_PIXELS_PER_TOKEN = 750
#: Estimate of a picture whose size cannot be read (not a PNG): the API's usual maximum.
IMAGE_TOKENS_UNKNOWN = 1_600


def _png_size(data: bytes) -> Optional[tuple[int, int]]:
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def image_token_estimate(block: dict[str, Any]) -> int:
    """Tokens the API bills for an image block: width x height / 750 after scaling to 1568 px."""
    try:
        head = base64.b64decode(str(block["source"]["data"])[:32])
    except (KeyError, TypeError, ValueError):
        return IMAGE_TOKENS_UNKNOWN
    size = _png_size(head)
    if size is None or min(size) <= 0:
        return IMAGE_TOKENS_UNKNOWN
    width, height = size
    scale = min(1.0, IMAGE_MAX_EDGE / max(width, height))
    return max(1, math.ceil(width * scale * height * scale / IMAGE_PIXELS_PER_TOKEN))


def _text_tokens(text: str) -> int:
    return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN)


def part_token_estimates(system: list[dict[str, Any]],
                         parts: list[tuple[str, dict[str, Any]]]) -> dict[str, int]:
    """Input tokens of each prompt part (:data:`PROMPT_PARTS`), estimated before the call.

    An estimate for the user to see what to trim (costs.tsv), never for billing or the spend
    cap: text at :data:`BYTES_PER_TOKEN`, pictures by the API's size rule.
    """
    tokens = dict.fromkeys(PROMPT_PARTS, 0)
    tokens["system"] = sum(_text_tokens(str(b.get("text", ""))) for b in system)
    for part, block in parts:
        if block.get("type") == "image":
            tokens[part] += image_token_estimate(block)
        else:
            tokens[part] += _text_tokens(str(block.get("text", "")))
    return tokens
