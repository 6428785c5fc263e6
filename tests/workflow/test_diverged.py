"""A diverged training is a result: the iteration is scored as failed and the chain goes on."""
from __future__ import annotations

import json

import pytest
import yaml

from wf_helpers import TINY_EXPERIMENT, job_counts, snakemake, write_workflow_config

pytestmark = pytest.mark.slow


def test_diverged_training_is_scored_and_the_chain_goes_on(tmp_path):
    experiment = yaml.safe_load(TINY_EXPERIMENT.read_text(encoding="utf-8"))
    # The largest allowed learning rates and a loss allowed to grow by only 1 %: the first
    # optimizer steps overshoot and the trainer stops the run as diverged.
    experiment["training"].update(learning_rate_W_start=1.0, learning_rate_start=1.0,
                                  learning_rate_embedding_start=1.0, divergence_factor=1.01)
    path = tmp_path / "diverging.yaml"
    path.write_text(yaml.safe_dump(experiment), encoding="utf-8")
    write_workflow_config(tmp_path, experiment=str(path), name="div", schedule=[1], n_iter_block=2)

    result = snakemake(tmp_path, timeout=900).check()
    assert job_counts(result.output)["train"] == 2
    first = tmp_path / "results" / "div" / "iter_001"
    record = json.loads((first / "training.json").read_text(encoding="utf-8"))
    metrics = json.loads((first / "metrics.json").read_text(encoding="utf-8"))
    assert record["status"] == "diverged" and "divergence_factor" in record["reason"], record["reason"]
    assert metrics["outcome"] == "failed" and metrics["outcome_reason"], metrics
    assert (first / "decision.json").is_file(), "decide must run after a diverged training"
    second = tmp_path / "results" / "div" / "iter_002"
    assert (second / "metrics.json").is_file(), "the next iteration must be trained and scored"
    summary = (tmp_path / "results" / "div" / "summary" / "summary.tsv").read_text(encoding="utf-8")
    assert "diverged" in summary
