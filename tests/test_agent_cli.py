"""The agent's command line on hand-made iteration folders: init, ucb, decide round trips."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

import agent.decide as decide_stage
from agent.cli import main
from agent.policies.base import BackendConfigError, RetryableBackendError
from agent_helpers import ADAMW_OPTIMIZER, REPO, decide_args, decision_of, fake_analyze, iter_dir, run_exploration, ucb_args, write_experiment_config


def load_yaml(path):
    return yaml.safe_load(path.read_text())


def flat_training_diff(a: dict, b: dict) -> dict:
    assert {k: v for k, v in a.items() if k != "training"} == {k: v for k, v in b.items() if k != "training"}
    return {k: (a["training"][k], b["training"][k]) for k in a["training"] if a["training"][k] != b["training"][k]}


@pytest.fixture(scope="module")
def explored(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    run_exploration(results, n_iter_block=3, n_blocks=2, schedule="1,4", seed=5)
    return results


def test_init_writes_iteration_one(tmp_path):
    exp = write_experiment_config(tmp_path / "exp.yaml", **{"claude.n_epochs": 2, "claude.data_augmentation_loop": 7})
    assert main(["init", "--config", str(exp), "--out-dir", str(tmp_path / "iter_001"), "--schedule", "4,16"]) == 0
    cfg = load_yaml(tmp_path / "iter_001" / "config.yaml")
    assert (cfg["training"]["n_epochs"], cfg["training"]["data_augmentation_loop"], cfg["training"]["time_step"]) == (2, 7, 4)
    proposal = json.loads((tmp_path / "iter_001" / "proposal.json").read_text())
    assert {k: proposal[k] for k in ("id", "parent", "block", "iteration", "time_step")} == \
        {"id": 1, "parent": None, "block": 1, "iteration": 1, "time_step": 4}
    assert (tmp_path / "iter_001" / "train_loop.py").read_text() == (REPO / "neuralgraph" / "train_loop.py").read_text()


def test_round_trip_writes_every_file_and_children_come_from_their_parents(explored):
    for i in range(1, 7):
        d = iter_dir(explored, i)
        for name in ("node.json", "ucb_scores.txt", "decision.json", "memory.md", "analysis.md", "instructions.md"):
            assert (d / name).is_file(), f"{d.name}/{name}"
    assert not iter_dir(explored, 7).exists()  # last iteration of the last block: no next iteration
    for i in range(2, 7):
        proposal = json.loads((iter_dir(explored, i) / "proposal.json").read_text())
        source = iter_dir(explored, proposal["derived_from"])
        child_cfg = load_yaml(iter_dir(explored, i) / "config.yaml")
        changed = flat_training_diff(load_yaml(source / "config.yaml"), child_cfg)
        mutation = proposal["mutation"]
        if mutation:
            assert changed.get(mutation["parameter"], (None, None))[1] == mutation["new"], (i, changed, mutation)
        assert set(changed) <= {mutation["parameter"], "data_augmentation_loop"} if mutation else changed == {}
        assert (iter_dir(explored, i) / "train_loop.py").read_text() == (source / "train_loop.py").read_text()
    root = json.loads((iter_dir(explored, 4) / "proposal.json").read_text())
    assert root["parent"] is None and root["block"] == 2 and root["time_step"] == 4


def test_full_log_versions_are_prefixes_and_memory_is_capped(explored):
    logs = [(iter_dir(explored, i) / "analysis.md").read_text() for i in range(1, 7)]
    for older, newer in zip(logs, logs[1:]):
        assert newer.startswith(older)
    assert "CONFIG EDITED: Block 2 time_step=4 (reason: experiment schedule)" in logs[2]
    assert "Activity: eff_rank=84, spectral_radius=1.029" in logs[-1]
    for i in range(1, 7):
        memory = (iter_dir(explored, i) / "memory.md").read_text().splitlines()
        assert len(memory) <= 500
        last_heading = [line for line in memory if line.startswith("#")][-1]
        assert last_heading == "### Emerging Observations"
    block2 = (iter_dir(explored, 3) / "memory.md").read_text()
    assert "## Current Block (Block 2)" in block2 and "| 1 | 1 | 84 |" in block2


def test_decision_record_names_policy_and_next_node(explored):
    record = decision_of(iter_dir(explored, 2))
    assert record["policy"] == "heuristic" and record["attempts"][0]["accepted"] is True
    assert record["next"]["id"] == 3 and record["next"]["iteration"] == 3
    end = decision_of(iter_dir(explored, 3))
    assert end["is_block_end"] and end["next_time_step"] == 4 and end["time_step_source"] == "schedule"
    assert (iter_dir(explored, 3) / "instructions.md").read_text().rstrip().splitlines()[-1].startswith("- (block 1)")


def test_same_seed_reproduces_the_exploration(explored, tmp_path):
    run_exploration(tmp_path, n_iter_block=3, n_blocks=2, schedule="1,4", seed=5)
    for i in range(2, 7):
        assert (tmp_path / f"iter_{i:03d}" / "config.yaml").read_text() == (iter_dir(explored, i) / "config.yaml").read_text()


def test_replay_reapplies_recorded_decisions(explored, tmp_path):
    run_exploration(tmp_path, n_iter_block=3, n_blocks=2, schedule="1,4", backend="replay",
                    extra=["--replay-from", str(explored)])
    for i in range(2, 7):
        assert (tmp_path / f"iter_{i:03d}" / "config.yaml").read_text() == (iter_dir(explored, i) / "config.yaml").read_text()
        record = decision_of(tmp_path / f"iter_{i:03d}")
        assert record["policy"] == "replay"


def test_ucb_keeps_negative_scientific_and_null_r2(tmp_path):
    results = tmp_path
    exp = write_experiment_config(results / "exp.yaml")
    assert main(["init", "--config", str(exp), "--out-dir", str(iter_dir(results, 1))]) == 0
    fake_analyze(iter_dir(results, 1))
    metrics_path = iter_dir(results, 1) / "metrics.json"
    metrics_path.write_text(metrics_path.read_text().replace('"connectivity_R2": ', '"connectivity_R2": -3.2e-02, "x": '))
    assert main(ucb_args(results, 1)) == 0
    assert (iter_dir(results, 1) / "ucb_scores.txt").read_text() == "Node 1: UCB=0.675, parent=root, visits=1, R2=-0.032\n"
    metrics_path.write_text(metrics_path.read_text().replace('"connectivity_R2": -3.2e-02', '"connectivity_R2": null'))
    assert main(ucb_args(results, 1) + ["--ucb-c", "2"]) == 0
    assert (iter_dir(results, 1) / "ucb_scores.txt").read_text() == "Node 1: UCB=1.000, parent=root, visits=1, R2=nan\n"


def _prepared(tmp_path):
    exp = write_experiment_config(tmp_path / "exp.yaml")
    assert main(["init", "--config", str(exp), "--out-dir", str(iter_dir(tmp_path, 1))]) == 0
    fake_analyze(iter_dir(tmp_path, 1))
    assert main(ucb_args(tmp_path, 1)) == 0
    return exp


def test_missing_and_malformed_inputs_exit_2_naming_the_file(tmp_path, capsys):
    exp = _prepared(tmp_path)
    (iter_dir(tmp_path, 1) / "metrics.json").write_text("{broken")
    assert main(ucb_args(tmp_path, 1)) == 2
    assert "metrics.json: not valid JSON" in capsys.readouterr().err
    (iter_dir(tmp_path, 1) / "analysis.log").unlink()
    assert main(decide_args(tmp_path, exp, 1, 3, 2)) == 2
    assert "analysis.log: analysis.log not found" in capsys.readouterr().err
    fake_analyze(iter_dir(tmp_path, 1))
    assert main(decide_args(tmp_path, exp, 1, 3, 2, schedule="1,5")) == 2
    assert "--schedule '1,5': time_step 5 must be one of 1, 4, 16, 32, 64" in capsys.readouterr().err
    assert main(decide_args(tmp_path, exp, 1, 3, 2, schedule="1")) == 2
    assert "1 time_steps for --n-blocks 2" in capsys.readouterr().err
    assert main(decide_args(tmp_path, exp, 2, 3, 2)) == 2
    assert "iter_002/node.json: file not found" in capsys.readouterr().err
    wrong = decide_args(tmp_path, exp, 1, 3, 2)
    wrong[wrong.index("--iteration") + 1] = "2"
    assert main(wrong) == 2
    assert "node iteration 1 differs from --iteration 2" in capsys.readouterr().err
    assert not (iter_dir(tmp_path, 1) / "decision.json").exists()


def test_unavailable_llm_exits_75_writing_nothing_unless_offline_fallback(tmp_path, monkeypatch, capsys):
    class Unavailable:
        """Plays the remote LLM service being overloaded (529 after the SDK's retries)."""

        name = "anthropic"
        last_call = None

        def decide(self, ctx, feedback=None):
            raise RetryableBackendError("529 overloaded after 2 retries")

    monkeypatch.setattr(decide_stage, "get_policy", lambda backend, options: Unavailable())
    exp = _prepared(tmp_path)
    args = decide_args(tmp_path, exp, 1, 3, 2, backend="anthropic")
    assert main(args) == 75
    assert "temporarily unavailable (529 overloaded after 2 retries)" in capsys.readouterr().err
    assert not (iter_dir(tmp_path, 1) / "decision.json").exists() and not iter_dir(tmp_path, 2).exists()
    assert main(args + ["--fallback", "offline"]) == 0
    record = decision_of(iter_dir(tmp_path, 1))
    assert record["policy"] == "heuristic (fallback after: backend unavailable: 529 overloaded after 2 retries)"
    assert (iter_dir(tmp_path, 2) / "config.yaml").exists()


def test_backend_configuration_error_exits_2(tmp_path, capsys, monkeypatch):
    exp = _prepared(tmp_path)
    seen = {}
    monkeypatch.setattr(decide_stage, "get_policy", lambda backend, options: seen.update(options) or (_ for _ in ()).throw(
        BackendConfigError("unknown model 'x'")))
    assert main(decide_args(tmp_path, exp, 1, 3, 2, backend="anthropic",
                            extra=["--backend-option", "max_tokens=4000", "--backend-option", "timeout_s=30.5"])) == 2
    assert "backend configuration error: unknown model 'x'" in capsys.readouterr().err
    assert (seen["max_tokens"], seen["timeout_s"], seen["seed"]) == (4000, 30.5, 0)
    assert main(decide_args(tmp_path, exp, 1, 3, 2, extra=["--backend-option", "oops"])) == 2
    assert "--backend-option 'oops': expected KEY=VALUE" in capsys.readouterr().err
    monkeypatch.undo()
    assert main(decide_args(tmp_path, exp, 1, 3, 2, backend="replay")) == 2
    assert "backend configuration error: backend 'replay' needs --replay-from" in capsys.readouterr().err


def test_python_dash_m_agent_help_runs():
    out = subprocess.run([sys.executable, "-m", "agent", "decide", "--help"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0 and "--next-dir" in out.stdout and "--fallback {offline,fail}" in out.stdout




def _replay_folder(source, target, overrides):
    """Copy source's decision records, replacing some iterations' decisions."""
    for d in sorted(source.glob("iter_*")):
        record = json.loads((d / "decision.json").read_text())
        i = record["iteration"]
        if i in overrides:
            slot = record["slots"][0]
            slot["decision"] = {**slot["decision"], **overrides[i]}
        (target / d.name).mkdir(parents=True)
        (target / d.name / "decision.json").write_text(json.dumps(record))


def test_code_modification_through_the_cli_stays_on_its_branch(tmp_path):
    first = tmp_path / "first"
    run_exploration(first, n_iter_block=8, n_blocks=1, schedule="1")
    log = {"outcome": "partial", "mode": "success-exploit", "parent_rule": "r", "observation": "o"}
    code_decision = {"parent": 5, "strategy": "code-modification", "config_mutation": None,
                     "log": {**log, "next_parent": 5},
                     "code_modification": {"function": "build_optimizer", "new_source": ADAMW_OPTIMIZER,
                                           "hypothesis": "decoupled weight decay", "change_summary": "Adam -> AdamW"}}
    sibling_decision = {"parent": 4, "strategy": "exploit", "code_modification": None, "log": {**log, "next_parent": 4},
                        "config_mutation": {"parameter": "lr", "old": None, "new": 1e-4}}
    replay = tmp_path / "replay"
    _replay_folder(first, replay, {5: code_decision, 6: sibling_decision})
    second = tmp_path / "second"
    run_exploration(second, n_iter_block=8, n_blocks=1, schedule="1", backend="replay",
                    extra=["--replay-from", str(replay)])
    smoke = decision_of(iter_dir(second, 5))["code_smoke_run"]
    assert smoke["status"] == "ok" and smoke["steps"] > 0  # the real smoke run of agent.codeedit
    child = iter_dir(second, 6)
    assert "torch.optim.AdamW(" in (child / "train_loop.py").read_text()
    assert "+    return torch.optim.AdamW(" in (child / "code.diff").read_text()
    proposal = json.loads((child / "proposal.json").read_text())
    assert proposal["code_modified"] is True and proposal["parent"] == 5
    sibling = json.loads((iter_dir(second, 7) / "proposal.json").read_text())
    assert sibling["parent"] == 4
    assert (iter_dir(second, 7) / "train_loop.py").read_text() == (iter_dir(second, 4) / "train_loop.py").read_text()
    assert "AdamW" not in (iter_dir(second, 7) / "train_loop.py").read_text()
    entry = (iter_dir(second, 6) / "analysis.md").read_text()
    assert "CODE MODIFICATION:\n  File: train_loop.py\n  Function: build_optimizer\n  Change: Adam -> AdamW" in entry


def test_code_modification_too_early_in_a_block_falls_back_to_the_heuristic(tmp_path):
    first = tmp_path / "first"
    run_exploration(first, n_iter_block=4, n_blocks=1, schedule="1")
    log = {"outcome": "partial", "mode": "success-exploit", "parent_rule": "r", "observation": "o"}
    early = {"parent": 2, "strategy": "code-modification", "config_mutation": None, "log": {**log, "next_parent": 2},
             "code_modification": {"function": "build_optimizer", "new_source": ADAMW_OPTIMIZER, "hypothesis": "h",
                                   "change_summary": "s"}}
    replay = tmp_path / "replay"
    _replay_folder(first, replay, {2: early})
    second = tmp_path / "second"
    run_exploration(second, n_iter_block=4, n_blocks=1, schedule="1", backend="replay",
                    extra=["--replay-from", str(replay)])
    record = decision_of(iter_dir(second, 2))
    assert record["policy"].startswith("heuristic (fallback after: code_modification: not allowed for the first 4")
    assert [a["accepted"] for a in record["attempts"]] == [False, False, True]
    assert "AdamW" not in (iter_dir(second, 3) / "train_loop.py").read_text()


def test_loop_goes_on_with_a_safe_rerun_when_every_decision_is_refused(tmp_path, monkeypatch):
    class Broken:
        """An offline policy with a bug: always proposes a fixed parameter."""

        name = "heuristic"
        last_call = None

        def decide(self, ctx, feedback=None):
            from agent.policies.heuristic import HeuristicPolicy

            d = HeuristicPolicy({}).decide(ctx)
            data = {**d.model_dump(), "strategy": "exploit", "config_mutation": {"parameter": "batch_size", "new": 4}}
            return type(d).model_validate(data)

    monkeypatch.setattr(decide_stage, "get_policy", lambda backend, options: Broken())
    exp = _prepared(tmp_path)
    assert main(decide_args(tmp_path, exp, 1, 3, 2)) == 0
    record = decision_of(iter_dir(tmp_path, 1))
    assert record["policy"].startswith("safe re-run (after: heuristic: config_mutation.parameter = 'batch_size'")
    assert record["next"]["mutation"] == {"parameter": "seed", "old": 0, "new": 1}


def test_decide_refuses_scores_written_with_another_ucb_c(tmp_path, capsys):
    """ucb wrote ucb_scores.txt with one constant; decide ranking with another is refused, naming ucb_c."""
    exp = _prepared(tmp_path)
    args = decide_args(tmp_path, exp, 1, n_iter_block=3, n_blocks=2)
    assert main(args + ["--ucb-c", "2.9"]) == 2
    err = capsys.readouterr().err
    assert "ucb_scores.txt" in err and "ucb_c = 2.9" in err and "same ucb_c" in err
    assert not (iter_dir(tmp_path, 1) / "decision.json").exists()
    assert main(args + ["--ucb-c", "1.414"]) == 0  # the experiment's claude.ucb_c, the one ucb used
