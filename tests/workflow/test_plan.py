"""results/<exp>/plan.json: written when a run starts, read by init, ucb, decide and train (--plan).

docs/architecture.md, "The contract: plan.json". The workflow's onstart handler writes the plan
in the main process of a real run, before its first job (a dry run writes nothing); no rule
declares it, so a changed config reruns the stages whose params (the plan values they read)
changed, in the same run that rewrites the plan.
"""
from __future__ import annotations

import os

from agent.run_plan import PLAN_FILE, read_plan
from wf_helpers import (TINY_N_ITER_BLOCK, TINY_NAME, TINY_SCHEDULE, job_counts, mtimes, shell_commands, snakemake,
                        write_workflow_config)

#: The rules that read the plan, and the command each runs.
PLAN_READERS = {"init": " -m agent init ", "ucb": " -m agent ucb ", "decide": " -m agent decide ",
                "train": " -m pipeline train "}


def _files(folder):
    return [p for p in folder.rglob("*") if p.is_file()]


def test_the_run_wrote_the_plan_and_every_stage_read_it(tiny_run):
    plan = read_plan(tiny_run.results / PLAN_FILE)
    assert plan.results == f"results/{TINY_NAME}" and plan.schedule == TINY_SCHEDULE
    assert (plan.n_blocks, plan.n_iter_block, plan.slots) == (len(TINY_SCHEDULE), TINY_N_ITER_BLOCK, 1)
    assert (plan.agent.backend, plan.agent.seed, plan.agent.fallback) == ("heuristic", 0, "fail")
    output = tiny_run.result.output  # the local profile prints each job's shell command
    assert "plan" not in job_counts(output), "the plan is no job"
    plan_arg = f" --plan results/{TINY_NAME}/{PLAN_FILE}"
    for rule, command in PLAN_READERS.items():
        lines = shell_commands(output, command)
        assert lines, f"no {rule} command in the run's output"
        assert all(plan_arg in line for line in lines), "\n".join(lines)
        assert not any(f" {flag} " in line for line in lines for flag in ("--config", "--backend", "--ucb-c")), rule


def test_a_dry_run_writes_nothing_and_a_run_of_one_job_writes_the_plan_without_the_key(tmp_path):
    write_workflow_config(tmp_path)
    before = set(tmp_path.rglob("*"))
    assert job_counts(snakemake(tmp_path, "-n").check().output)["init"] == 1
    assert not (tmp_path / "results").exists(), "the dry run wrote results"
    assert not {p for p in set(tmp_path.rglob("*")) - before if ".snakemake" not in p.parts}
    key = "sk-test-plan-key-0123456789abcdef"
    done = snakemake(tmp_path, "init", env={"ANTHROPIC_API_KEY": key}).check()
    assert job_counts(done.output) == {"init": 1, "total": 1}
    plan_path = tmp_path / "results" / TINY_NAME / PLAN_FILE
    assert read_plan(plan_path).agent.backend == "heuristic"
    assert key not in plan_path.read_text(encoding="utf-8") and key not in done.output


def test_the_plan_is_no_input_and_a_targeted_run_writes_a_missing_one(tiny_run_copy):
    """A newer plan.json reruns nothing; a run of one forced file (its own process, no job before
    it) writes the plan again when it is gone, and an unchanged plan keeps its mtime."""
    run = tiny_run_copy
    plan_path = run.results / PLAN_FILE
    text = plan_path.read_text(encoding="utf-8")
    os.utime(plan_path)  # newer than every output
    assert "Nothing to be done" in snakemake(run.workdir, "-n").check().output
    plan_path.unlink()
    model = f"results/{TINY_NAME}/iter_002/model.pt"
    done = snakemake(run.workdir, model, "--forcerun", model).check()
    assert job_counts(done.output) == {"train": 1, "total": 1}, done.output[-3000:]
    assert plan_path.read_text(encoding="utf-8") == text
    written = plan_path.stat().st_mtime_ns
    assert job_counts(snakemake(run.workdir, "init", "--force").check().output) == {"init": 1, "total": 1}
    assert plan_path.stat().st_mtime_ns == written, "an unchanged plan was rewritten"


def test_a_changed_agent_option_rewrites_the_plan_and_reruns_the_decisions_in_one_run(tiny_run_copy):
    """The config-change case: one run rewrites plan.json and redoes what the dry run lists, the
    jobs whose params read the changed value (prompt_images: every decide, as on main where it
    was a decide option) and what follows them, not simulate, init or iteration 1; then nothing
    is left to do."""
    run = tiny_run_copy
    before = mtimes(_files(run.results))
    write_workflow_config(run.workdir, agent={"backend": "heuristic", "seed": 0, "fallback": "fail",
                                              "prompt_images": False})
    planned = job_counts(snakemake(run.workdir, "-n").check().output)
    assert planned["decide_001"] == 1 and planned["decide_004"] == 1, planned
    assert planned["train"] == 3, planned  # iterations 2-4: their configs come from the redone decides
    assert not {"simulate", "init"} & set(planned), planned
    assert job_counts(snakemake(run.workdir).check().output) == planned
    assert read_plan(run.results / PLAN_FILE).agent.prompt_images is False
    after = mtimes(_files(run.results))
    kept = {str(p.relative_to(run.results)) for p in before if after.get(p) == before[p]}
    assert {"iter_001/model.pt", "iter_001/metrics.json", "iter_001/node.json"} <= kept, sorted(kept)
    assert PLAN_FILE not in kept and "iter_004/model.pt" not in kept
    assert "Nothing to be done" in snakemake(run.workdir, "-n").check().output
