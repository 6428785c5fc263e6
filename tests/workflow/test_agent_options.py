"""The agent's workflow options reach the plan every decide reads (--plan), and costs.tsv is a target."""
from __future__ import annotations

from wf_helpers import job_counts, planned, shell_commands, snakemake, write_workflow_config


def test_random_backend_and_spend_cap_reach_every_decide_job(tmp_path):
    write_workflow_config(tmp_path, agent={"backend": "random", "seed": 3, "fallback": "offline",
                                           "max_cost_usd": 2.5, "prompt_images": False, "prompt_code": False})
    result = snakemake(tmp_path, "--dry-run", "--printshellcmds").check()
    counts = job_counts(result.output)
    assert counts["costs"] == 1 and counts["summarize"] == 1
    decides = shell_commands(result.output, " -m agent decide ")
    assert len(decides) == 4, result.output[-3000:]
    assert all("--plan results/tiny/plan.json --iteration" in line and "--backend" not in line for line in decides)
    agent = planned(tmp_path)["agent"]
    assert (agent["backend"], agent["seed"], agent["fallback"], agent["max_cost_usd"]) == ("random", 3, "offline", 2.5)
    assert agent["prompt_images"] is False and agent["prompt_code"] is False
    assert "-m agent costs --results results/tiny --out results/tiny/summary/costs.tsv" in result.output


def test_spend_cap_off_by_default_and_negative_cap_refused(tmp_path):
    write_workflow_config(tmp_path)
    result = snakemake(tmp_path, "--dry-run", "--printshellcmds").check()
    agent = planned(tmp_path)["agent"]
    assert agent["max_cost_usd"] is None
    assert agent["prompt_images"] is True and agent["prompt_code"] is True  # shown by default
    write_workflow_config(tmp_path, agent={"backend": "anthropic", "prompt_images": "maybe"})
    refused = snakemake(tmp_path, "--dry-run")
    assert refused.returncode != 0 and "agent.prompt_images = 'maybe'" in refused.output, refused.output[-2000:]
    write_workflow_config(tmp_path, agent={"backend": "claude-code", "max_cost_usd": -1})
    refused = snakemake(tmp_path, "--dry-run")
    assert refused.returncode != 0 and "agent.max_cost_usd = -1" in refused.output, refused.output[-2000:]
