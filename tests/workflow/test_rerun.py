"""Forced reruns redo one iteration and what depends on it, nothing earlier (checked by mtimes)."""
from __future__ import annotations

import pytest

from wf_helpers import job_counts, mtimes, snakemake

pytestmark = pytest.mark.slow


def _files(folder):
    return [p for p in folder.rglob("*") if p.is_file()]


def _changed(before, after):
    return sorted(str(p) for p in before if after.get(p) != before[p])


def test_forced_metrics_rerun_redoes_only_that_analysis(tiny_run_copy):
    run = tiny_run_copy
    target = run.iter_dir(2) / "metrics.json"
    before = mtimes(_files(run.results))
    result = snakemake(run.workdir, str(target.relative_to(run.workdir)), "-f").check()
    assert job_counts(result.output) == {"analyze": 1, "total": 1}
    after = mtimes(_files(run.results))
    changed = _changed(before, after)
    assert str(target) in changed
    unexpected = [p for p in changed if not p.startswith(str(run.iter_dir(2)))]
    assert not unexpected, f"files outside iteration 2 were rewritten: {unexpected}"
    assert after[run.iter_dir(2) / "model.pt"] == before[run.iter_dir(2) / "model.pt"]


def test_forcerun_of_one_training_redoes_it_and_everything_after(tiny_run_copy):
    run = tiny_run_copy
    before = mtimes(_files(run.results))
    model = run.iter_dir(3) / "model.pt"
    result = snakemake(run.workdir, "--forcerun", str(model.relative_to(run.workdir))).check()
    counts = job_counts(result.output)
    assert counts["train"] == 2 and counts["analyze"] == 2 and counts["ucb"] == 2
    assert counts["decide_003"] == 1 and counts["decide_004"] == 1 and counts["summarize"] == 1
    assert not {"simulate", "init", "decide_001", "decide_002"} & set(counts)
    after = mtimes(_files(run.results))
    changed = set(_changed(before, after))
    earlier = [p for p in before if str(p).startswith((str(run.results / "data"), str(run.iter_dir(1)),
                                                       str(run.iter_dir(2))))]
    assert not changed & {str(p) for p in earlier}, "iterations 1-2 or the dataset were rewritten"
    assert str(run.iter_dir(3) / "config.yaml") not in changed, "iteration 3's config comes from decide_002"
    for it in (3, 4):
        for name in ("model.pt", "training.json", "metrics.json", "node.json", "decision.json"):
            assert str(run.iter_dir(it) / name) in changed, f"iteration {it}: {name} not redone"
    assert str(run.iter_dir(4) / "config.yaml") in changed, "decide_003 remade iteration 4's config"
    assert str(run.results / "summary" / "summary.tsv") in changed
