"""The DAG of the full-scale seed experiment builds in seconds, and the workflow lints clean."""
from __future__ import annotations

from pathlib import Path

from wf_helpers import REPO, job_counts, planned, shell_commands, snakemake, write_workflow_config

SEED = REPO / "config" / "experiments" / "seed_recurrent.yaml"


def test_full_scale_dry_run_builds_every_block(tmp_path):
    write_workflow_config(tmp_path, experiment=str(SEED), name="seed_recurrent",
                          schedule=[1, 4, 16, 32, 64], n_iter_block=None)
    result = snakemake(tmp_path, "--dry-run").check()
    counts = job_counts(result.output)
    n_iter = 5 * 8  # five blocks of the seed's claude.n_iter_block = 8
    assert counts["simulate"] == 1 and counts["init"] == 1
    assert counts["train"] == counts["analyze"] == counts["ucb"] == n_iter
    assert [f"decide_{i:03d}" for i in range(1, n_iter + 1)] == sorted(k for k in counts if k.startswith("decide_"))
    assert counts["summarize"] == 1 and "archive" not in counts
    assert result.seconds < 60, f"dry run took {result.seconds:.1f} s"
    assert not (tmp_path / "results").exists(), "a dry run must not write results"


def test_agent_schedule_dry_run_needs_only_n_blocks(tmp_path):
    write_workflow_config(tmp_path, experiment=str(SEED), name="seed_recurrent", schedule="agent",
                          n_blocks=3, n_iter_block=4)
    counts = job_counts(snakemake(tmp_path, "--dry-run").check().output)
    assert counts["train"] == 12 and counts["decide_012"] == 1 and "decide_013" not in counts


def test_archive_target_adds_only_the_archive_job(tmp_path):
    write_workflow_config(tmp_path)
    counts = job_counts(snakemake(tmp_path, "--dry-run", "archive").check().output)
    assert counts["archive"] == 1 and counts["train"] == 4


def test_lint_is_clean(tmp_path):
    write_workflow_config(tmp_path)
    result = snakemake(tmp_path, "--lint", cores=None)
    assert result.returncode == 0, result.output
    assert "Congratulations, your workflow is in a good condition!" in result.output, result.output


def test_ucb_and_decide_get_the_same_ucb_c(tmp_path):
    """config/config.yaml's ucb_c reaches both stages (not the experiment's claude.ucb_c in decide)."""
    write_workflow_config(tmp_path, ucb_c=2.5)
    output = snakemake(tmp_path, "--dry-run", "--printshellcmds").check().output
    ucb, decide = shell_commands(output, " -m agent ucb "), shell_commands(output, " -m agent decide ")
    assert ucb and decide
    assert all(" --plan results/tiny/plan.json " in line for line in ucb + decide), "\n".join(ucb + decide)
    assert planned(tmp_path)["ucb_c"] == 2.5
