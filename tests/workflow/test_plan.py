"""results/<exp>/plan.json: written by the plan rule, read by init, ucb, decide and train (--plan).

docs/architecture.md, "The contract: plan.json". The plan is written by a job, never while the
Snakefile is parsed (a dry run writes nothing); rewriting it reruns nothing downstream (an
ancient input), while a changed config still reruns the stages that read the changed value.
"""
from __future__ import annotations

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
    assert (tiny_run.results / "logs" / "plan.log").is_file()
    output = tiny_run.result.output  # the local profile prints each job's shell command
    plan_arg = f" --plan results/{TINY_NAME}/{PLAN_FILE}"
    for rule, command in PLAN_READERS.items():
        lines = shell_commands(output, command)
        assert lines, f"no {rule} command in the run's output"
        assert all(plan_arg in line for line in lines), "\n".join(lines)
        assert not any(f" {flag} " in line for line in lines for flag in ("--config", "--backend", "--ucb-c")), rule


def test_a_dry_run_writes_no_plan_and_a_plan_target_runs_only_the_plan_job(tmp_path):
    write_workflow_config(tmp_path)
    plan_path = tmp_path / "results" / TINY_NAME / PLAN_FILE
    assert job_counts(snakemake(tmp_path, "-n").check().output)["plan"] == 1
    assert not plan_path.exists(), "the dry run wrote the plan"
    key = "sk-test-plan-key-0123456789abcdef"
    done = snakemake(tmp_path, str(plan_path.relative_to(tmp_path)), env={"ANTHROPIC_API_KEY": key}).check()
    assert job_counts(done.output) == {"plan": 1, "total": 1}
    assert read_plan(plan_path).agent.backend == "heuristic"
    assert key not in plan_path.read_text(encoding="utf-8") and key not in done.output


def test_rewriting_the_plan_reruns_nothing_downstream(tiny_run_copy):
    run = tiny_run_copy
    before = mtimes(_files(run.results))
    done = snakemake(run.workdir, "--forcerun", "plan").check()
    assert job_counts(done.output) == {"plan": 1, "total": 1}
    after = mtimes(_files(run.results))
    changed = {str(p.relative_to(run.results)) for p in before if after.get(p) != before[p]}
    assert f"{PLAN_FILE}" in changed and not changed - {PLAN_FILE, "logs/plan.log", "benchmarks/plan.tsv"}, changed
    assert "Nothing to be done" in snakemake(run.workdir, "-n").check().output


def test_a_changed_agent_option_rewrites_the_plan_first_and_the_decisions_on_the_next_run(tiny_run_copy):
    """The config-change case, as measured with Snakemake 9.27: while the plan job must run, the
    jobs below it are masked and their params not compared (an ancient input does not pass the
    rerun on), so the first run rewrites plan.json only; the next run finds the decides' params
    (the whole plan) changed and redoes them and what follows, not simulate, init or train 1."""
    run = tiny_run_copy
    write_workflow_config(run.workdir, agent={"backend": "heuristic", "seed": 0, "fallback": "fail",
                                              "prompt_images": False})
    assert job_counts(snakemake(run.workdir).check().output) == {"plan": 1, "total": 1}
    assert read_plan(run.results / PLAN_FILE).agent.prompt_images is False
    counts = job_counts(snakemake(run.workdir, "-n").check().output)
    assert "plan" not in counts and counts["decide_001"] == 1 and counts["decide_004"] == 1, counts
    assert counts["train"] == 3, counts  # iterations 2-4: their configs come from the redone decides
    assert not {"simulate", "init"} & set(counts), counts
