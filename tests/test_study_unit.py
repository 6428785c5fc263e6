"""pipeline.study without training: the spec's checks and the report of a study with no finished run."""
from __future__ import annotations

import pandas as pd
import pytest
import yaml

from pipeline.study import STUDY_COLUMNS, StudyError, load_spec, main

SPEC = {"name": "s", "policies": ["heuristic", "random"],
        "benchmarks": [{"name": "b", "experiment": "config/experiments/tiny.yaml", "seeds": [0, 1], "n_iter": 4,
                        "slots": 2}]}


def _write(tmp_path, **changes):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**SPEC, **changes}), encoding="utf-8")
    return path


def test_n_iter_not_a_multiple_of_slots_is_refused_naming_both(tmp_path):
    bench = {**SPEC["benchmarks"][0], "n_iter": 3}
    with pytest.raises(StudyError, match=r"benchmarks\[b\].n_iter = 3 must be a multiple of slots = 2"):
        load_spec(_write(tmp_path, benchmarks=[bench]))


def test_a_time_step_that_is_not_allowed_is_refused_with_the_allowed_ones(tmp_path):
    bench = {**SPEC["benchmarks"][0], "time_step": 3}
    with pytest.raises(StudyError, match="time_step: .*must be one of 1, 4, 16, 32, 64"):
        load_spec(_write(tmp_path, benchmarks=[bench]))


def test_report_only_before_any_run_finished_writes_empty_tables(tmp_path):
    assert main(["--spec", str(_write(tmp_path)), "--results-dir", str(tmp_path / "results"), "--report-only"]) == 0
    folder = tmp_path / "results" / "study" / "s"
    assert list(pd.read_csv(folder / "study.tsv", sep="\t").columns) == STUDY_COLUMNS
    assert pd.read_csv(folder / "study_summary.tsv", sep="\t").empty
    assert "## b (time_step 1, 4 iterations, 2 per round)" in (folder / "study.md").read_text()
    assert not (folder / "runs").exists()  # nothing was started
