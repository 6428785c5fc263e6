"""plan.json, the contract between the workflow and the agent: it round-trips, it is checked
field by field, and a decide from ``--plan P --iteration I`` writes what the explicit options wrote."""
from __future__ import annotations

import json
import os

import pytest
import yaml

from agent.cli import main as agent_main
from agent.layout import DATA_DIR, IterationFolder
from agent.run_plan import PLAN_FILE, AgentSettings, PlanError, RunPlan, read_plan, write_plan
from agent_helpers import decide_args, fake_analyze, iter_dir, ucb_args, write_experiment_config
from neuralgraph.dataset import ACTIVITY_PICTURE, CONNECTIVITY_PICTURE
from neuralgraph.io import LinkRefusedError
from pipeline.plan import make_plan

WORKFLOW_DEFAULTS = {"results_dir": "results", "ucb_c": None, "slots": 1}


def _workflow_plan(tmp_path, **agent):
    exp = write_experiment_config(tmp_path / "experiment.yaml")
    config = {"experiment": str(exp), "name": "demo", "schedule": [1, 4], "n_iter_block": 3,
              "agent": {"backend": "heuristic", "seed": 3, "fallback": "offline", **agent}, **WORKFLOW_DEFAULTS}
    return make_plan(config, source="test")


def test_a_plan_round_trips_through_its_file(tmp_path):
    plan = _workflow_plan(tmp_path, smoke_timeout=0, max_cost_usd=2).run_plan()
    path = write_plan(plan, tmp_path / "results" / "demo" / PLAN_FILE)
    again = read_plan(path)
    assert again == plan and again.to_json() == path.read_text()
    assert again.schedule == [1, 4] and again.n_iterations == 6 and again.agent.seed == 3
    assert again.agent.smoke_timeout == 0 and again.agent.max_cost_usd == 2


def test_the_plan_is_checked_naming_the_field(tmp_path):
    good = json.loads(_workflow_plan(tmp_path).run_plan().to_json())
    for change, field in ((lambda d: d["agent"].update(fallback="maybe"), "agent.fallback"),
                          (lambda d: d.update(n_blocks=0), "n_blocks"),
                          (lambda d: d.update(colour="red"), "colour"),
                          (lambda d: d.pop("results"), "results"),
                          (lambda d: d["agent"].update(code_modification="loose"), "agent.code_modification")):
        bad = json.loads(json.dumps(good))
        change(bad)
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(bad))
        with pytest.raises(PlanError, match=field.replace(".", r"\.")):
            read_plan(path)
    with pytest.raises(PlanError, match="plan not found"):
        read_plan(tmp_path / "nowhere.json")


def test_an_unchanged_plan_is_not_rewritten_and_a_changed_one_is(tmp_path):
    """The workflow writes the plan at the start of every run (onstart): the same plan leaves the
    file and its mtime alone, another plan replaces it, and a link in its place is refused."""
    plan = _workflow_plan(tmp_path).run_plan()
    path = tmp_path / "results" / "demo" / PLAN_FILE
    write_plan(plan, path)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert write_plan(plan, path) == path and path.stat().st_mtime_ns == 1_000_000_000
    changed = _workflow_plan(tmp_path, seed=4).run_plan()
    write_plan(changed, path)
    assert path.stat().st_mtime_ns != 1_000_000_000 and read_plan(path).agent.seed == 4
    elsewhere = tmp_path / "elsewhere.json"
    write_plan(plan, elsewhere)
    path.unlink()
    path.symlink_to(elsewhere)
    with pytest.raises(LinkRefusedError):
        write_plan(plan, path)


def test_the_workflow_plan_carries_the_agent_settings_and_their_defaults(tmp_path):
    plan = _workflow_plan(tmp_path)
    assert isinstance(plan.agent, AgentSettings)
    assert plan.agent.code_modification == AgentSettings().code_modification and plan.agent.prompt_code is True
    assert plan.run_plan().agent == plan.agent


def _dataset_pictures(results):
    """The dataset pictures the decide job shows its policy."""
    data = results / DATA_DIR
    data.mkdir(parents=True)
    for name in (ACTIVITY_PICTURE, CONNECTIVITY_PICTURE):
        (data / name).write_bytes(b"\x89PNG\r\n\x1a\n")


def _without_timestamps(path):
    record = json.loads(path.read_text())
    record.pop("created_at")
    return record


def test_decide_from_the_plan_writes_what_the_explicit_options_wrote(tmp_path):
    """Two explorations of the same experiment (1,4 schedule, 2 blocks of 3): one runs init, ucb and
    decide with the explicit options (as the workflow's rules pass them today), one with --plan; every
    decision.json is the same apart from its timestamp, and so is every other file the stages write."""
    exp = write_experiment_config(tmp_path / "experiment.yaml")
    flags, planned = tmp_path / "flags" / "demo", tmp_path / "planned" / "demo"
    plan = RunPlan(experiment=str(exp), results=str(planned), schedule=[1, 4], n_blocks=2, n_iter_block=3, slots=1,
                   ucb_c=1.414, agent=AgentSettings(seed=2, smoke_timeout=0))
    plan_path = write_plan(plan, planned / PLAN_FILE)
    for results in (flags, planned):
        _dataset_pictures(results)
    assert agent_main(["init", "--config", str(exp), "--out-dir", str(iter_dir(flags, 1)), "--schedule", "1,4",
                       "--seed", "2"]) == 0
    assert agent_main(["init", "--plan", str(plan_path)]) == 0
    images = [str(flags / DATA_DIR / ACTIVITY_PICTURE), str(flags / DATA_DIR / CONNECTIVITY_PICTURE)]
    for i in range(1, 7):
        fake_analyze(iter_dir(flags, i))
        fake_analyze(iter_dir(planned, i))
        assert agent_main(ucb_args(flags, i) + ["--ucb-c", "1.414"]) == 0
        assert agent_main(["ucb", "--plan", str(plan_path), "--iteration", str(i)]) == 0
        assert agent_main(decide_args(flags, exp, i, 3, 2, "1,4", seed=2,
                                      extra=["--ucb-c", "1.414", "--smoke-timeout", "0", "--images", *images])) == 0
        assert agent_main(["decide", "--plan", str(plan_path), "--iteration", str(i)]) == 0
        a, b = IterationFolder.at(flags, i), IterationFolder.at(planned, i)
        assert a.scores_path.read_text() == b.scores_path.read_text(), i
        assert a.node_record() == b.node_record(), i
        assert _without_timestamps(a.decision_path) == _without_timestamps(b.decision_path), i
        assert a.memory() == b.memory() and a.full_log_path.read_text() == b.full_log_path.read_text(), i
        if i < 6:
            nxt_a, nxt_b = IterationFolder.at(flags, i + 1), IterationFolder.at(planned, i + 1)
            assert nxt_a.proposal() == nxt_b.proposal() and nxt_a.code() == nxt_b.code(), i
            assert yaml.safe_load(nxt_a.config_path.read_text()) == yaml.safe_load(nxt_b.config_path.read_text()), i


def test_decide_with_a_plan_refuses_options_the_plan_holds(tmp_path, capsys):
    exp = write_experiment_config(tmp_path / "experiment.yaml")
    plan = RunPlan(experiment=str(exp), results=str(tmp_path), schedule="agent", n_blocks=1, n_iter_block=2, slots=2,
                   ucb_c=1.0)
    path = write_plan(plan, tmp_path / PLAN_FILE)
    assert agent_main(["decide", "--plan", str(path), "--iteration", "2", "--backend", "random"]) == 2
    assert "--backend: comes from the plan" in capsys.readouterr().err
    assert agent_main(["decide", "--plan", str(path), "--iteration", "1"]) == 2  # not a round's last node
    assert "--iteration 1: not the last node of a round of 2" in capsys.readouterr().err
    assert agent_main(["decide", "--iteration", "1"]) == 2
    assert "--node, --ucb, --analysis-log, --config, --code, --n-blocks, --base-config, --results-dir, --out-dir: " \
           "required without --plan" in capsys.readouterr().err
    assert agent_main(["ucb", "--plan", str(path)]) == 2
    assert "--iteration: required with --plan" in capsys.readouterr().err
    assert agent_main(["ucb", "--plan", str(path), "--iteration", "3"]) == 2
    assert "--iteration 3: the plan has iterations 1 .. 2" in capsys.readouterr().err
    assert agent_main(["init", "--plan", str(path), "--seed", "4"]) == 2
    assert "--seed: comes from the plan" in capsys.readouterr().err


def test_pipeline_train_takes_its_paths_from_the_plan(tmp_path):
    """`python -m pipeline train --plan P --iteration I` trains the files the train rule names."""
    from neuralgraph import PACKAGED_LOOP
    from pipeline.train_job import TrainJobError, build_parser, train_inputs

    results = tmp_path / "results" / "demo"
    plan = RunPlan(experiment="e.yaml", results=str(results), schedule="agent", n_blocks=2, n_iter_block=4, slots=1,
                   ucb_c=1.0, agent=AgentSettings(code_modification="off"))
    path = write_plan(plan, results / PLAN_FILE)
    parse = build_parser().parse_args
    folder = IterationFolder.at(results, 7)
    assert train_inputs(parse(["--plan", str(path), "--iteration", "7", "--threads", "2"])) == {
        "config": str(folder.config_path), "data": str(results / DATA_DIR), "out": str(folder.path),
        "loop": str(folder.loop_path), "code_modification": "off"}
    with pytest.raises(TrainJobError, match="--loop: comes from the plan"):
        train_inputs(parse(["--plan", str(path), "--iteration", "7", "--loop", "x.py"]))
    with pytest.raises(TrainJobError, match="--iteration: required with --plan"):
        train_inputs(parse(["--plan", str(path)]))
    with pytest.raises(TrainJobError, match="--data, --out: required without --plan"):
        train_inputs(parse(["--config", "c.yaml"]))
    explicit = train_inputs(parse(["--config", "c.yaml", "--data", "d", "--out", "o"]))
    assert explicit["loop"] == str(PACKAGED_LOOP) and explicit["code_modification"] == AgentSettings().code_modification
