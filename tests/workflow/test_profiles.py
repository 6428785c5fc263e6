"""The SLURM and local profiles say what the cluster needs, and the literal `--profile slurm` works."""
from __future__ import annotations

import re

import yaml

from wf_helpers import REPO, snakemake, write_workflow_config

SLURM_PROFILE = REPO / "profiles" / "slurm"


def _profile(name):
    return yaml.safe_load((REPO / "profiles" / name / "config.yaml").read_text(encoding="utf-8"))


def test_slurm_profile_settings():
    profile = _profile("slurm")
    assert profile["executor"] == "slurm"
    assert profile["slurm-status-command"] == "squeue", "accounting is often off: status from squeue"
    assert profile["retries"] >= 1 and profile["rerun-incomplete"] is True
    assert 1 <= profile["slurm-init-seconds-before-status-checks"] <= 40
    train = profile["set-resources"]["train"]
    assert train["gpu"] == 1 and train["runtime"] >= 60 and train["mem_mb"] >= 8000
    assert {"runtime", "mem_mb"} <= set(profile["default-resources"])


def test_local_profile_settings():
    profile = _profile("local")
    assert profile["cores"] >= 1 and profile["retries"] >= 1 and profile["rerun-incomplete"] is True


def _train_resources(output: str) -> str:
    block = output[output.index("rule train:"):]
    return re.search(r"resources: (.*)", block).group(1)


def test_literal_profile_slurm_resolves_from_the_user_config_folder(tmp_path, monkeypatch):
    """docs/workflow.md: link profiles/slurm into ~/.config/snakemake, then `--profile slurm`."""
    xdg = tmp_path / "xdg"
    (xdg / "snakemake").mkdir(parents=True)
    (xdg / "snakemake" / "slurm").symlink_to(SLURM_PROFILE)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    write_workflow_config(tmp_path)
    result = snakemake(tmp_path, "--profile", "slurm", "--dry-run", cores=None).check()
    assert "Using profile slurm" in result.output
    resources = _train_resources(result.output)
    assert "gpu=1" in resources and "mem_mb=32000" in resources and "cpus_per_task=4" in resources


def test_gpu_model_is_configurable_on_the_command_line(tmp_path):
    write_workflow_config(tmp_path)
    result = snakemake(tmp_path, "--profile", str(SLURM_PROFILE), "--dry-run",
                       "--set-resources", "train:gpu=1", "train:gpu_model=h100", cores=None).check()
    resources = _train_resources(result.output)
    assert "gpu_model=h100" in resources and "gpu=1" in resources


def test_agent_rules_stay_on_the_submitting_host():
    rules = {p.stem: p.read_text(encoding="utf-8") for p in (REPO / "workflow" / "rules").glob("*.smk")}
    for name in ("decide", "ucb", "init", "summarize", "archive"):
        assert "localrule: True" in rules[name], f"{name} must be a localrule"
    for name in ("simulate", "train", "analyze"):
        assert "localrule" not in rules[name], f"{name} must be submitted to the cluster"
