"""The documented commands for a run started with `--config` overrides work as printed.

README.md, docs/workflow.md and config/README.md say: repeat the run's overrides in every
later command and put targets before `--config`. Dry runs (`-n`) from a folder holding the
tiny config check that those commands resolve, and that the two mistakes they warn about fail.
"""
from __future__ import annotations

import pytest

from wf_helpers import REPO, job_counts, planned, snakemake, write_workflow_config

PROFILE = str(REPO / "profiles" / "local")
OVERRIDES = ("--config", "name=sweep")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("overrides")
    write_workflow_config(folder)
    return folder


def test_run_with_a_name_override_plans_under_that_name(workdir):
    done = snakemake(workdir, "--profile", PROFILE, "-n", *OVERRIDES, cores=None).check()
    assert "results/sweep/iter_004/metrics.json" in done.output
    assert "results/tiny/" not in done.output


def test_rerun_target_before_config_with_the_same_overrides_resolves(workdir):
    target = "results/sweep/iter_002/metrics.json"
    done = snakemake(workdir, "--profile", PROFILE, "-n", target, "-f", *OVERRIDES, cores=None).check()
    counts = job_counts(done.output)
    assert counts.get("analyze") == 2, counts  # iterations 1 and 2; nothing after the target
    assert "decide_002" not in counts, counts
    assert target in done.output


def test_archive_target_before_config_with_the_same_overrides_resolves(workdir):
    done = snakemake(workdir, "--profile", PROFILE, "-n", "archive", *OVERRIDES, cores=None).check()
    assert job_counts(done.output).get("archive") == 1
    assert "results/archives/sweep.tar.gz" in done.output


def test_target_after_config_is_read_as_a_config_value(workdir):
    done = snakemake(workdir, "--profile", PROFILE, "-n", *OVERRIDES, "results/sweep/iter_002/metrics.json", "-f",
                     cores=None)
    assert done.returncode != 0
    assert "results/sweep/iter_002/metrics.json" in done.output


def test_target_without_the_overrides_is_not_found(workdir):
    done = snakemake(workdir, "--profile", PROFILE, "-n", "results/sweep/iter_002/metrics.json", "-f", cores=None)
    assert done.returncode != 0
    assert "No rule to produce" in done.output or "MissingRuleException" in done.output, done.output[-2000:]


# --- schedule on the command line ------------------------------------------------------------
def test_schedule_one_is_a_one_block_schedule(workdir):
    done = snakemake(workdir, "-n", "-p", "--config", "schedule=1").check()
    counts = job_counts(done.output)
    assert counts.get("analyze") == 2 and counts.get("train") == 2, counts  # 1 block x 2 iterations
    plan = planned(workdir, "--config", "schedule=1")
    assert plan["schedule"] == [1] and plan["n_blocks"] == 1, plan


def test_schedule_comma_list_is_one_block_each(workdir):
    done = snakemake(workdir, "-n", "-p", "--config", "schedule=1,4").check()
    assert job_counts(done.output).get("analyze") == 4
    assert planned(workdir, "--config", "schedule=1,4")["schedule"] == [1, 4]


def test_bad_lone_time_step_is_refused_naming_the_field(workdir):
    done = snakemake(workdir, "-n", "--config", "schedule=3")
    assert done.returncode != 0
    assert "configuration refused, no job was run" in done.output
    assert "schedule = 3: must be a list of time_steps" in done.output
    assert "1, 4, 16, 32, 64" in done.output and '"agent"' in done.output


# --- the agent's backend on the command line -------------------------------------------------
def test_schema_fills_the_agent_keys_not_given():
    import yaml
    from snakemake.utils import validate

    schema_path = REPO / "workflow" / "schemas" / "config.schema.yaml"
    agent_schema = yaml.safe_load(schema_path.read_text(encoding="utf-8"))["properties"]["agent"]["properties"]
    config = {"experiment": "x.yaml", "schedule": [1], "agent": {"backend": "random"}}
    validate(config, str(schema_path))
    assert config["agent"] == {key: sub["default"] for key, sub in agent_schema.items()} | {"backend": "random"}


def test_backend_switch_keeps_the_other_agent_settings(tmp_path):
    """`--config 'agent={backend: random}'` (README.md): the keys it does not name keep the config
    file's values (Snakemake merges the mapping key by key) or the schema's defaults."""
    write_workflow_config(tmp_path, agent={"seed": 5})  # no backend, fallback, code_modification
    agent = planned(tmp_path, "--config", "agent={backend: random}")["agent"]
    assert (agent["backend"], agent["seed"], agent["fallback"]) == ("random", 5, "fail"), agent
    assert agent["code_modification"] == "sandboxed", agent
    assert agent["max_cost_usd"] is None and agent["model"] is None, agent


def test_numbers_in_the_agent_mapping_reach_decide_as_numbers(tmp_path):
    """README.md's `'agent={backend: anthropic, max_cost_usd: 5}'`: Snakemake passes 5 as the
    string '5'; the workflow reads it back as the number the schema asks for."""
    write_workflow_config(tmp_path)
    agent = planned(tmp_path, "--config", "agent={backend: random, max_cost_usd: 5, seed: 3}")["agent"]
    assert (agent["backend"], agent["seed"], agent["max_cost_usd"]) == ("random", 3, 5), agent


def test_dotted_agent_key_is_refused_by_snakemakes_parser(workdir):
    """Why README.md shows the mapping form: Snakemake's --config parser takes no dotted keys."""
    done = snakemake(workdir, "-n", "--config", "agent.backend=random")
    assert done.returncode != 0
    assert "valid identifier" in done.output
