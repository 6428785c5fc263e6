"""Every rule that runs a command declares a log, a benchmark and a conda env.

The workflow is parsed with Snakemake's Python API in a subprocess (parsing runs the
Snakefile, which takes secrets out of the process environment: the test process keeps its
own), from a folder holding the tiny config, and each rule's directives are read back.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from wf_helpers import SNAKEFILE, TINY_NAME, workflow_env, write_workflow_config

#: Rules allowed to lack log, benchmark and conda, with the reason. Each must run no command.
TARGET_RULES = {
    "all": "the default target: it only lists the final files and runs no command, so there is nothing to log, "
    "time or deploy",
    "study": "the study target: it only names the study's table (from the spec's name); run_study does the work",
    "reference": "the reference target: it only names its table (from the spec's name); run_reference does the work",
}

#: Rules whose benchmark is not under results/<name>/: archive's log and benchmark sit beside
#: the archive, outside the folder it packs (workflow/rules/archive.smk); run_study's sit in
#: results/study/<name>/, beside the runs it starts (each with its own results folder), and
#: run_reference's in results/reference/<name>/ likewise.
OUTSIDE_RESULTS = {"archive", "run_study", "run_reference"}

PROBE = r"""
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings

snakefile, workdir = map(Path, sys.argv[1:3])
with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
    parsed = api.workflow(resource_settings=ResourceSettings(), config_settings=ConfigSettings(),
                          storage_settings=StorageSettings(), snakefile=snakefile, workdir=workdir)._workflow
    print(json.dumps({rule.name: {
        "log": [str(f) for f in rule.log],
        "benchmark": None if rule.benchmark is None else str(rule.benchmark),
        "conda": None if rule.conda_env is None else str(rule.conda_env),
        "runs_nothing": bool(rule.norun),
    } for rule in parsed.rules}))
"""


@pytest.fixture(scope="module")
def rules(tmp_path_factory) -> dict[str, dict]:
    """{rule name: its log, benchmark, conda env and whether it runs a command}."""
    workdir = tmp_path_factory.mktemp("rule_directives")
    write_workflow_config(workdir)
    done = subprocess.run([sys.executable, "-c", PROBE, str(SNAKEFILE), str(workdir)], capture_output=True,
                          text=True, timeout=300, env=workflow_env(), cwd=workdir)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_rule_has_log_benchmark_and_conda(rules):
    assert {"simulate", "train", "analyze", "ucb", "decide_001", "summarize", "costs", "explorer", "archive"} <= set(
        rules
    ), sorted(rules)
    lacking = [
        f"{name}: no {what}"
        for name, rule in rules.items()
        if name not in TARGET_RULES
        for what in ("log", "benchmark", "conda")
        if not rule[what]
    ]
    assert not lacking, "rules without log / benchmark / conda env:\n" + "\n".join(lacking)
    for name in TARGET_RULES:
        assert rules[name]["runs_nothing"], f"rule {name} is exempt as a pure target rule but runs a command"


def test_benchmarks_live_in_the_experiments_benchmarks_folders(rules):
    misplaced = [
        f"{name}: {rule['benchmark']}"
        for name, rule in rules.items()
        if rule["benchmark"] and name not in OUTSIDE_RESULTS
        if not (rule["benchmark"].startswith(f"results/{TINY_NAME}/") and "/benchmarks/" in rule["benchmark"])
    ]
    assert not misplaced, "benchmarks outside results/<name>/.../benchmarks/:\n" + "\n".join(misplaced)


def test_no_envvars_directive():
    """Secrets are taken out of Snakemake's environment at parse time; a declared `envvars:`
    would export them to spawned jobs or make every submission fail with a KeyError
    (docs/workflow.md, "The API key, and why the workflow declares no `envvars:`")."""
    files = [SNAKEFILE, *sorted((SNAKEFILE.parent / "workflow" / "rules").glob("*.smk"))]
    declaring = [str(f) for f in files if any(line.lstrip().startswith("envvars:")
                                              for line in f.read_text(encoding="utf-8").splitlines())]
    assert not declaring, f"envvars: declared in {declaring}"
