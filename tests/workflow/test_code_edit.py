"""A code modification through the workflow: smoke-run in the sandbox, trained in the sandbox,
shown as code_modified in summary.tsv with its diff in code.diff; no file holds the API key.

The edit comes from a replay folder holding one recorded decision (iteration 4, the first
iteration of a block where code may change); the other iterations fall back to the heuristic.
A replayed edit is checked and sandboxed exactly like an LLM's.
"""
from __future__ import annotations

import csv
import json

import pytest

from agent import layout
from agent.records import slot_views
from wf_helpers import REPO, job_counts, snakemake, write_workflow_config

pytestmark = pytest.mark.slow

SECRET = "sk-ant-test-0123456789abcdefSECRET"
COSINE_SCHEDULER = '''def build_scheduler(optimizer, cfg, total_steps):
    """Cosine decay of every learning rate to zero over the run."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
'''


def recorded_code_decision(parent: int) -> dict:
    """decision.json of an exploration that edited build_scheduler at node ``parent``."""
    return {"policy": "anthropic", "decision": {
        "parent": parent, "strategy": "code-modification",
        "log": {"outcome": "converged", "mode": "code-probe", "parent_rule": "best node of the block",
                "observation": "plateau on config mutations", "next_parent": parent},
        "memory_update": {"emerging_observations": "trying a cosine learning-rate decay"},
        "code_modification": {"function": "build_scheduler", "new_source": COSINE_SCHEDULER,
                              "hypothesis": "annealed rates settle W more precisely",
                              "change_summary": "cosine decay of all learning rates"},
    }}


def test_a_replayed_code_edit_is_smoke_run_and_trained_in_the_sandbox(tmp_path):
    replay = tmp_path / "replay"
    (replay / "iter_004").mkdir(parents=True)
    (replay / "iter_004" / "decision.json").write_text(json.dumps(recorded_code_decision(4)), encoding="utf-8")
    write_workflow_config(tmp_path, name="edit", schedule=[1], n_iter_block=5,
                          agent={"backend": "replay", "replay_from": str(replay), "seed": 0, "fallback": "offline"})

    result = snakemake(tmp_path, "--profile", str(REPO / "profiles" / "local"), cores=None, timeout=1500,
                       env={"ANTHROPIC_API_KEY": SECRET}).check()
    assert job_counts(result.output)["train"] == 5
    results = tmp_path / "results" / "edit"

    decision = slot_views(json.loads((results / "iter_004" / "decision.json").read_text(encoding="utf-8")))[0]
    assert decision["policy"] == "replay", decision["attempts"]
    assert decision["code_modification_mode"] == "sandboxed"
    smoke = decision["code_smoke_run"]
    assert smoke["status"] == "ok" and smoke["sandboxed"] is True and smoke["steps"] >= 1, smoke
    assert json.loads((results / "iter_004" / "smoke" / "smoke.json").read_text())["accepted"] is True

    child = results / "iter_005"
    diff = (child / "code.diff").read_text(encoding="utf-8")
    assert "+    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))" in diff
    assert "CosineAnnealingLR" in (child / "train_loop.py").read_text(encoding="utf-8")
    assert json.loads((child / "proposal.json").read_text())["code_modified"] is True
    record = json.loads((child / "training.json").read_text(encoding="utf-8"))
    assert record["status"] == "ok" and record["iterations"] > 0, record
    assert "inside the sandbox" in (child / "logs" / "train.log").read_text(encoding="utf-8")
    assert json.loads((child / "metrics.json").read_text())["connectivity_R2"] is not None

    with open(results / "summary" / "summary.tsv", encoding="utf-8", newline="") as fh:
        rows = {int(r["iteration"]): r for r in csv.DictReader(fh, delimiter="\t")}
    assert rows[5]["code_modified"] == "True", rows[5]
    assert rows[5]["mutation"] == "[code] build_scheduler: cosine decay of all learning rates"
    assert all(rows[i]["code_modified"] == "False" for i in range(1, 5))

    leaked = [p for p in results.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaked == [], f"the API key reached {leaked}"


def test_without_a_sandbox_code_edits_are_refused_up_front_and_the_run_goes_on(tmp_path):
    # decide says why code modifications are off, config mutations go on: iteration 2 trains
    # (the target: the rest of the chain adds nothing this test reads).
    write_workflow_config(tmp_path, name="nobwrap", schedule=[1], n_iter_block=2,
                          agent={"backend": "heuristic", "seed": 0, "fallback": "fail"})
    target = f"results/nobwrap/{layout.iteration_dir_name(2)}/{layout.TRAINING_RECORD_FILE}"
    result = snakemake(tmp_path, target, "--profile", str(REPO / "profiles" / "local"),
                       cores=None, timeout=900, env={"NEURALGRAPH_BWRAP": "/nonexistent/bwrap"}).check()
    assert job_counts(result.output)["train"] == 2
    first = tmp_path / "results" / "nobwrap" / "iter_001"
    refusal = json.loads((first / "decision.json").read_text())["code_modification_refused_up_front"]
    assert "bubblewrap" in refusal and "agent.code_modification: unsandboxed" in refusal
    assert "agent.code_modification" in (first / "logs" / "decide.log").read_text(encoding="utf-8")
