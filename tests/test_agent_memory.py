"""Working memory (seed sections, <= 500 lines, Emerging Observations last) and the full log."""
from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from agent.decision import CLIP_MARK, MAX_LIST_ITEMS, MAX_RULE_EDITS, TEXT_CAPS, Decision
from agent.memory import (MAX_MEMORY_CHARS, MAX_MEMORY_LINES, RULES_HEADING, append_full_log, log_entry, parse_memory,
                          render_memory, revise_instructions, sections, update_memory)
from agent_helpers import REPO, context, decision_of, iter_dir, node, run_exploration

SECTIONS = ["# Working Memory", "## Knowledge Base", "### Time Step Comparison Table", "### Established Principles",
            "### Open Questions", "## Previous Block Summary", "## Current Block (Block", "### Block Info",
            "### Hypothesis", "### Iterations This Block", "### Emerging Observations"]

#: sections() of every memory.md: the seed's layout (Current Block without its block number).
EXPECTED_SECTIONS = ["# Working Memory", "## Knowledge Base (accumulated across all blocks)",
                     "### Time Step Comparison Table", "### Established Principles", "### Open Questions",
                     "## Previous Block Summary", "## Current Block", "### Block Info", "### Hypothesis",
                     "### Iterations This Block", "### Emerging Observations"]


def decision(parent=1, **memory) -> Decision:
    return Decision.model_validate({
        "parent": parent, "strategy": "exploit",
        "log": {"outcome": "partial", "mode": "failure-probe", "parent_rule": "highest UCB\nof the block",
                "observation": "lr_W up helped", "next_parent": parent},
        "memory_update": {"emerging_observations": "running notes", **memory},
        "config_mutation": {"parameter": "lr", "new": 1e-4}})


def headings_in_order(text: str) -> list[int]:
    return [next(i for i, line in enumerate(text.splitlines()) if line.startswith(h)) for h in SECTIONS]


def test_log_entry_has_the_seed_form_with_eff_rank_from_analysis_log():
    n = node(4, 2, -3.2e-2, training={"learning_rate_W_start": 2e-3},
             mutation={"parameter": "learning_rate_W_start", "old": 1e-3, "new": 2e-3}, time_step=4)
    n.metrics.update({"outcome": "failed", "test_R2": 0.5, "training_time_min": 12.25})
    ctx = context([node(2, None), n])
    text = log_entry(n, decision(parent=2), "spectral radius: 1.1\n--- activity ---\n  effective rank (99% var): 37\n")
    assert text.splitlines() == [
        "## Iter 4: failed",
        "Node: id=4, parent=2",
        "Mode/Strategy: failure-probe/exploit",
        "Config: time_step=4, lr_W=0.002, lr=0.001, lr_emb=0.001, coeff_W_L1=0, batch_size=8, data_augmentation_loop=2",
        "Metrics: test_R2=0.5, test_pearson=nan, connectivity_R2=-0.032, cluster_accuracy=nan, final_loss=nan, training_time=12.2 min",
        "Activity: eff_rank=37, spectral_radius=1.1",
        "Mutation: learning_rate_W_start: 0.001 -> 0.002",
        "Parent rule: highest UCB of the block",
        "Observation: lr_W up helped",
        "Next: parent=2",
    ]
    # without analysis.log values, metrics.json's effective_rank_99 is used
    n.metrics["effective_rank_99"] = 12
    assert "Activity: eff_rank=12, spectral_radius=nan" in log_entry(n, decision(parent=2), "")
    assert ctx.current_node is n


def test_code_modification_entry_has_the_code_block():
    n = node(6, 5, 0.9, mutation={"parameter": "[code] train_step", "function": "train_step",
                                  "change_summary": "clip gradients at 1.0", "hypothesis": "long unrolls explode"})
    text = log_entry(n, decision(parent=6), "")
    assert "Mode/Strategy: failure-probe/code-modification" in text
    assert "CODE MODIFICATION:\n  File: train_loop.py\n  Function: train_step\n  Change: clip gradients at 1.0\n" \
           "  Hypothesis: long unrolls explode" in text
    assert "Mutation: [code] train_step: clip gradients at 1.0" in text


def test_memory_sections_in_seed_order_and_round_trip():
    nodes = [node(1, None, 0.5)]
    ctx = context(nodes, n_iter_block=4)
    text = update_memory("", ctx, decision(new_principles=["lr_W matters"], open_questions=["does L1 help?"]),
                         "## Iter 1: partial\nNode: id=1, parent=root", None)
    order = headings_in_order(text)
    assert order == sorted(order)
    assert text.rstrip().endswith("running notes")
    mem = parse_memory(text)
    assert mem.principles == ["- lr_W matters"] and mem.open_questions == ["- does L1 help?"]
    assert mem.iterations == ["## Iter 1: partial\nNode: id=1, parent=root"]
    assert (mem.block, mem.time_step, mem.first_iteration, mem.n_iter_block) == (1, 1, 1, 4)
    assert render_memory(mem) == text


def test_memory_stays_under_500_lines_with_emerging_observations_last():
    text = ""
    n_iter = 120
    long_notes = "\n".join(f"observation line {k}" for k in range(200))
    for i in range(1, n_iter + 1):
        nodes = [node(k, k - 1 or None, 0.5) for k in range(1, i + 1)]
        ctx = context(nodes, n_iter_block=1000, n_blocks=1)
        entry = "\n".join([f"## Iter {i}: partial"] + [f"line {k}" for k in range(10)])
        text = update_memory(text, ctx, decision(parent=i, new_principles=[f"principle {i}"]), entry, None)
        lines = text.splitlines()
        assert len(lines) <= MAX_MEMORY_LINES
    assert "older iteration entries trimmed" in text
    assert f"## Iter {n_iter}: partial" in text and "## Iter 1: partial" not in text
    tail = text.splitlines()
    emerging = max(i for i, line in enumerate(tail) if line.startswith("### Emerging Observations"))
    assert all(not line.startswith("#") for line in tail[emerging + 1:])
    # an oversized observations text is clipped, not allowed to push the memory over the cap
    ctx = context([node(1, None)], n_iter_block=8)
    huge = update_memory(text, ctx, decision(emerging_observations=long_notes), "## Iter 1: x", None)
    assert len(huge.splitlines()) <= MAX_MEMORY_LINES and "more lines clipped" in huge


def test_block_end_adds_table_row_summary_clears_iterations_and_sets_next_hypothesis():
    nodes = [node(1, None, 0.7), node(2, 1, 0.97, training={"learning_rate_W_start": 3e-3}), node(3, 2, 0.8)]
    for n in nodes:
        n.metrics.update({"test_R2": 0.6, "training_time_min": 2.0})
    ctx = context(nodes, n_iter_block=3, n_blocks=2)
    before = update_memory("", context(nodes[:2], n_iter_block=3, n_blocks=2), decision(parent=2), "## Iter 2: x", None)
    after = update_memory(before, ctx, decision(parent="root", block_summary="lr_W=3e-3 best.",
                                                key_finding="lr_W 3e-3", next_block_hypothesis="T=4 keeps R2>0.9"),
                          "## Iter 3: partial", 4)
    mem = parse_memory(after)
    assert mem.table_rows == ["| 1 | 1 | 84 | 0.97 | 0.003 | 0.001 | 0 | 0.6 | 2 | lr_W 3e-3 |"]
    assert mem.previous_block == 1 and mem.previous_summary == "lr_W=3e-3 best."
    assert mem.iterations == [] and "## Iter 2" not in after
    assert (mem.block, mem.time_step, mem.first_iteration) == (2, 4, 4)
    assert mem.hypothesis == "T=4 keeps R2>0.9"
    assert "Iterations: 4 to 6" in after


def test_full_log_versions_are_prefixes_of_each_other():
    versions = [""]
    for i in range(1, 5):
        versions.append(append_full_log(versions[-1], f"## Iter {i}: partial\nNext: parent={i}",
                                        "CONFIG EDITED: Block 2 time_step=4 (reason: schedule)" if i == 2 else ""))
    for older, newer in zip(versions[1:], versions[2:]):
        assert newer.startswith(older) and len(newer) > len(older)
    assert "CONFIG EDITED: Block 2 time_step=4 (reason: schedule)" in versions[-1]


def test_instruction_edits_make_a_new_version_and_leave_the_shipped_file_alone():
    shipped_path = REPO / "agent" / "instructions.md"
    shipped = shipped_path.read_text()
    assert shipped.rstrip().endswith(RULES_HEADING)
    v1 = revise_instructions(shipped, 1, ["explore after two children", "  "])
    v2 = revise_instructions(v1, 2, ["exploit more"])
    assert v1.startswith(shipped.rstrip()) and v2.startswith(v1)
    assert v2.rstrip().splitlines()[-2:] == ["- (block 1) explore after two children", "- (block 2) exploit more"]
    assert revise_instructions(v2, 3, []) == v2
    assert shipped_path.read_text() == shipped


def test_headings_inside_free_text_cannot_break_the_layout():
    ctx = context([node(1, None)], n_iter_block=4)
    text = update_memory("", ctx, decision(emerging_observations="### Hypothesis\n## Current Block (Block 9)\nplain",
                                           new_principles=["### Open Questions sneaked in"]), "## Iter 1: x", None)
    mem = parse_memory(text)
    assert mem.block == 1 and mem.hypothesis == ""
    assert mem.emerging == "Hypothesis\nCurrent Block (Block 9)\nplain"
    assert mem.principles == ["- Open Questions sneaked in"]
    assert [line for line in text.splitlines() if line.startswith("#")][-1] == "### Emerging Observations"


# ---------------------------------------------------------------------------- text from a policy is data

MEGABYTE = "## Current Block (Block 9)\n# Evil\n### Emerging Observations\n  ## Iter 99: forged\n" * 13_000


def hostile_text(data: dict) -> dict:
    """``data`` (a decision as JSON) with every text field carrying newlines, headings and 1 MB."""
    data = json.loads(json.dumps(data))
    log = data["log"]
    log["mode"] = "exploit\n## Current Block (Block 7)"
    log["parent_rule"] = MEGABYTE
    log["observation"] = "fine\n# Working Memory\n### Hypothesis\nreally"
    update = data["memory_update"]
    update["emerging_observations"] = MEGABYTE
    update["new_principles"] = ["### Open Questions\nsneaked", MEGABYTE] + [f"p{k}" for k in range(50)]
    update["open_questions"] = [MEGABYTE] + ["q\n## Iter 1: x"] * 30
    for key in ("current_hypothesis", "block_summary", "next_block_hypothesis", "key_finding"):
        update[key] = MEGABYTE
    data["selection_rule_edits"] = ["rule\n## Enforced rules", MEGABYTE, *["r"] * 40]
    data["time_step_reason"] = MEGABYTE
    return data


def under_caps(text: str) -> bool:
    return len(text.splitlines()) <= MAX_MEMORY_LINES and len(text) <= MAX_MEMORY_CHARS


def test_text_fields_lose_newlines_headings_and_excess_where_the_decision_is_made():
    d = Decision.model_validate(hostile_text(decision(parent=1).model_dump(mode="json")))
    assert d.log.mode == "exploit Current Block (Block 7)"
    assert d.log.observation == "fine Working Memory Hypothesis really"
    for text in (d.log.parent_rule, *d.memory_update.new_principles, *d.memory_update.open_questions):
        assert "\n" not in text and not text.startswith("#") and len(text) <= TEXT_CAPS["line"]
    assert d.log.parent_rule.endswith(CLIP_MARK)
    assert len(d.memory_update.new_principles) == MAX_LIST_ITEMS and d.memory_update.new_principles[0] == "Open Questions sneaked"
    for note in (d.memory_update.emerging_observations, d.memory_update.current_hypothesis):
        assert len(note) <= TEXT_CAPS["note"]
        assert not any(line.startswith("#") or line.startswith(" ") for line in note.splitlines())
    rules = Decision.model_validate({**d.model_dump(mode="json"), "selection_rule_edits": ["a\n#b"] + ["x" * 10**6] * 2 + ["y"] * 40})
    assert len(rules.selection_rule_edits) == MAX_RULE_EDITS and rules.selection_rule_edits[0] == "a b"
    assert max(map(len, rules.selection_rule_edits)) <= TEXT_CAPS["line"]


def test_code_above_its_cap_is_refused_not_clipped():
    data = {**decision(parent=1).model_dump(mode="json"), "strategy": "code-modification", "config_mutation": None,
            "code_modification": {"function": "train_step", "new_source": "x = 1\n" * TEXT_CAPS["code"],
                                  "hypothesis": "h", "change_summary": "s"}}
    with pytest.raises(ValidationError, match=f"at most {TEXT_CAPS['code']}"):
        Decision.model_validate(data)


def test_a_hostile_reply_leaves_the_memory_sections_intact_and_under_both_caps():
    nodes = [node(1, None, 0.5), node(2, 1, 0.6), node(3, 2, 0.7)]
    before = update_memory("", context(nodes[:2], n_iter_block=4), decision(parent=2), "## Iter 2: partial", None)
    ctx = context(nodes, n_iter_block=4)
    hostile = Decision.model_validate(hostile_text(decision(parent=3).model_dump(mode="json")))
    after = update_memory(before, ctx, hostile, log_entry(nodes[-1], hostile, ""), None)
    assert sections(after) == sections(before) == EXPECTED_SECTIONS
    assert under_caps(after)
    mem = parse_memory(after)
    assert [entry.splitlines()[0] for entry in mem.iterations] == ["## Iter 2: partial", "## Iter 3: partial"]
    # the previous memory from disk is not trusted either: forged headings in it are neutralised
    forged = before.replace("## Iter 2: partial", "## Iter 2: partial\n### Emerging Observations\n" + "y" * 10**6)
    again = update_memory(forged, ctx, decision(parent=3), "## Iter 3: partial", None)
    assert sections(again) == EXPECTED_SECTIONS and under_caps(again)


def test_memory_character_cap_trims_the_oldest_entries_first():
    ctx = context([node(1, None)], n_iter_block=1000, n_blocks=1)
    text = ""
    for i in range(1, 80):
        entry = f"## Iter {i}: partial\nObservation: " + "z" * 2000
        text = update_memory(text, ctx, decision(parent=1), entry, None)
        assert len(text) <= MAX_MEMORY_CHARS
    assert len(text.splitlines()) < 200  # the character cap bound, not the line cap
    assert "older iteration entries trimmed" in text and "## Iter 79: partial" in text
    assert sections(text) == EXPECTED_SECTIONS


def test_hostile_replies_through_the_decide_cli_keep_every_memory_and_instructions_version_in_shape(tmp_path):
    first = tmp_path / "first"
    run_exploration(first, n_iter_block=3, n_blocks=2, schedule="1,4")
    replay = tmp_path / "replay"
    for i in range(1, 7):  # the same decisions, every text field hostile
        record = json.loads((iter_dir(first, i) / "decision.json").read_text())
        record["slots"][0]["decision"] = hostile_text(record["slots"][0]["decision"])
        (iter_dir(replay, i)).mkdir(parents=True)
        (iter_dir(replay, i) / "decision.json").write_text(json.dumps(record))
    second = tmp_path / "second"
    run_exploration(second, n_iter_block=3, n_blocks=2, schedule="1,4", backend="replay",
                    extra=["--replay-from", str(replay)])
    shipped = (REPO / "agent" / "instructions.md").read_text()
    for i in range(1, 7):
        folder = iter_dir(second, i)
        assert decision_of(folder)["policy"] == "replay"  # accepted, cleaned
        memory = (folder / "memory.md").read_text()
        assert sections(memory) == EXPECTED_SECTIONS and under_caps(memory), i
        full_log = (folder / "analysis.md").read_text()
        assert len(full_log) < 20_000 * i
        assert all(line.startswith(("# Full Log", "## Iter ", "## Block ")) for line in full_log.splitlines()
                   if line.startswith("#")), i
    added = (iter_dir(second, 6) / "instructions.md").read_text()[len(shipped.rstrip()):].strip().splitlines()
    assert [line[:12] for line in added] == ["- (block 1) "] * MAX_RULE_EDITS + ["- (block 2) "] * MAX_RULE_EDITS
    assert max(map(len, added)) <= len("- (block 1) ") + TEXT_CAPS["line"]


def test_the_docs_quote_the_caps_that_are_enforced():
    from agent.prompt import HARD_TRIM_DIVISOR

    docs = (REPO / "docs" / "agent.md").read_text()
    quoted = {f"{TEXT_CAPS['line']} characters", f"(names: {TEXT_CAPS['name']})", f"at most {TEXT_CAPS['note']}",
              f"at most {MAX_LIST_ITEMS} new principles", f"{MAX_RULE_EDITS} `selection_rule_edits`",
              f"above {TEXT_CAPS['code']} characters", f"<= {MAX_MEMORY_LINES} lines and <= {MAX_MEMORY_CHARS} characters",
              f"budgets / {HARD_TRIM_DIVISOR}"}
    assert {q for q in quoted if q not in " ".join(docs.split())} == set()
