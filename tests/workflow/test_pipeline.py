"""The tiny end-to-end run (2 blocks x 2 iterations) finishes and writes every file of the layout."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from wf_helpers import TINY_N_ITER_BLOCK, TINY_SCHEDULE, snakemake

pytestmark = pytest.mark.slow

N_ITER = len(TINY_SCHEDULE) * TINY_N_ITER_BLOCK

DATA_FILES = ("u.npy", "du.npy", "W.npy", "types.npy", "type_params.npy", "metadata.json", "stats.json",
              "analysis.log", "activity.png", "connectivity.png")
ITERATION_FILES = ("config.yaml", "train_loop.py", "proposal.json", "code.diff", "model.pt", "checkpoint.pt",
                   "training.json", "train.log", "analysis.log", "metrics.json", "node.json", "ucb_scores.txt",
                   "decision.json", "memory.md", "analysis.md", "instructions.md",
                   "logs/train.log", "logs/analyze.log", "logs/ucb.log", "logs/decide.log",
                   "benchmarks/train.tsv", "benchmarks/analyze.tsv", "benchmarks/ucb.tsv", "benchmarks/decide.tsv")
PLOTS = ("loss.png", "connectivity.png", "rollout.png", "embeddings.png", "lin_edge.png", "lin_phi.png")
SUMMARY_FILES = ("summary.tsv", "best_nodes.tsv", "exploration_tree.png", "metrics_vs_time_step.png", "explorer.html")


def _read_json(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_every_file_of_the_layout_is_written(tiny_run):
    res = tiny_run.results
    missing = [f"data/{n}" for n in DATA_FILES if not (res / "data" / n).is_file()]
    missing += [f"{d}/{n}" for d in ("logs", "benchmarks") for n in ("simulate", "init", "summarize", "explorer")
                if not (res / d / f"{n}.{'log' if d == 'logs' else 'tsv'}").is_file()]
    for it in range(1, N_ITER + 1):
        folder = tiny_run.iter_dir(it)
        missing += [f"{folder.name}/{n}" for n in ITERATION_FILES if not (folder / n).is_file()]
        missing += [f"{folder.name}/plots/{n}" for n in PLOTS if not (folder / "plots" / n).is_file()]
    missing += [f"summary/{n}" for n in SUMMARY_FILES if not (res / "summary" / n).is_file()]
    assert not missing, f"missing from the results layout: {missing}"
    empty = [p for p in res.rglob("*") if p.is_file() and p.stat().st_size == 0 and p.name != "code.diff"]
    assert not empty, f"empty files: {empty}"
    assert not tiny_run.iter_dir(N_ITER + 1).exists(), "the last iteration must not start a next one"


def test_chain_follows_the_schedule_and_the_tree(tiny_run):
    for it in range(1, N_ITER + 1):
        block = (it - 1) // TINY_N_ITER_BLOCK + 1
        folder = tiny_run.iter_dir(it)
        config = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
        node = _read_json(folder / "node.json")
        metrics = _read_json(folder / "metrics.json")
        record = _read_json(folder / "training.json")
        assert config["training"]["time_step"] == TINY_SCHEDULE[block - 1], folder
        assert (node["iteration"], node["block"], node["time_step"]) == (it, block, TINY_SCHEDULE[block - 1])
        assert metrics["iteration"] == it and record["status"] in ("ok", "diverged")
        assert record["time_step"] == TINY_SCHEDULE[block - 1]
        if (it - 1) % TINY_N_ITER_BLOCK == 0:
            assert node["parent"] is None, f"iteration {it} starts block {block}: a root"
        else:
            parent_iter = _read_json(folder / "proposal.json")["parent"]
            assert parent_iter is not None and parent_iter < node["id"]
        if it > 1:  # made by the previous iteration's decide
            decision = _read_json(tiny_run.iter_dir(it - 1) / "decision.json")
            assert decision, f"empty decision of iteration {it - 1}"


def test_summary_has_one_row_per_iteration_with_config_and_metrics(tiny_run):
    summary = pd.read_csv(tiny_run.results / "summary" / "summary.tsv", sep="\t")
    assert list(summary["iteration"]) == list(range(1, N_ITER + 1))
    assert list(summary["time_step"]) == [t for t in TINY_SCHEDULE for _ in range(TINY_N_ITER_BLOCK)]
    for column in ("node", "parent", "block", "mutation", "policy", "fallback_reason", "connectivity_R2", "test_R2",
                   "test_pearson", "cluster_accuracy", "final_loss", "training_time_min", "outcome",
                   "training.learning_rate_W_start", "training.time_step", "graph_model.hidden_dim"):
        assert column in summary.columns, column
    assert list(summary["policy"]) == ["init"] + ["heuristic"] * (N_ITER - 1)  # the name only
    assert summary["fallback_reason"].isna().all()  # no fallback: empty cells
    for _, row in summary.iterrows():
        metrics = _read_json(tiny_run.iter_dir(int(row["iteration"])) / "metrics.json")
        assert row["connectivity_R2"] == pytest.approx(metrics["connectivity_R2"], nan_ok=True)
        assert row["outcome"] == metrics["outcome"]
    best = pd.read_csv(tiny_run.results / "summary" / "best_nodes.tsv", sep="\t")
    assert list(best["time_step"]) == TINY_SCHEDULE
    for _, row in best.iterrows():
        at_ts = summary[summary["time_step"] == row["time_step"]]
        assert row["connectivity_R2"] == pytest.approx(at_ts["connectivity_R2"].max())
        assert row["n_iterations_at_time_step"] == TINY_N_ITER_BLOCK


def test_second_run_has_nothing_to_do(tiny_run_copy):
    result = snakemake(tiny_run_copy.workdir, "--dry-run").check()
    assert "Nothing to be done" in result.output, result.output[-3000:]


def test_report_holds_summary_table_and_figures(tiny_run, tmp_path):
    report = tmp_path / "report.html"
    snakemake(tiny_run.workdir, "--report", str(report), cores=None).check()
    html = report.read_text(encoding="utf-8", errors="replace")
    assert report.stat().st_size > 50_000
    for name in SUMMARY_FILES:
        assert name in html, f"{name} not in the report"
