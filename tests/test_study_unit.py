"""pipeline.study without training: the spec's checks, the report of a study with no finished run,
the equal-compute comparison and the fixed-budget mode on hand-made tables."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.study import (STUDY_COLUMNS, StudySpec, StudyError, best_within, by_iteration, equal_compute, load_spec,
                            main, report_markdown, run_name, seeded_experiment, step_budget, summarize_study)


TINY = Path(__file__).resolve().parents[1] / "config" / "experiments" / "tiny.yaml"
SPEC = {"name": "s", "policies": ["heuristic", "random"],
        "benchmarks": [{"name": "b", "experiment": str(TINY), "seeds": [0, 1], "n_iter": 4, "slots": 2}]}


def load_spec_dict(data: dict) -> StudySpec:
    return StudySpec.model_validate(data)


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


def _hand_made_table() -> pd.DataFrame:
    """Two policies x two seeds x 3 iterations; the heuristic's third node costs 4x (a doubling)."""
    runs = {("heuristic", 0): ([100, 200, 600], [0.5, 0.6, 0.9]),
            ("heuristic", 1): ([100, 200, 600], [0.4, 0.7, 0.95]),
            ("random", 0): ([100, 200, 300], [0.5, 0.55, 0.8]),
            ("random", 1): ([100, 200, 300], [0.4, float("nan"), 0.6])}
    rows = []
    for (policy, seed), (compute, r2) in runs.items():
        for it, (c, r) in enumerate(zip(compute, r2), 1):
            rows.append({"benchmark": "b", "mode": "free", "policy": policy, "seed": seed, "iteration": it,
                         "connectivity_R2": r, "compute": c, "run": f"b_{policy}_s{seed}"})
    table = pd.DataFrame(rows)
    table["best_so_far"] = table.groupby("run")["connectivity_R2"].cummax().groupby(table["run"]).ffill()
    return table


def test_equal_compute_picks_each_runs_best_within_the_common_budget_and_pairs_by_seed():
    table = _hand_made_table()
    out = equal_compute(table, fractions=(0.25, 0.5, 1.0)).set_index(["fraction", "policy"])
    # The common budget is the smallest run total: random's 300 steps x horizon.
    assert out.loc[(1.0, "random"), "x"] == 300 and out.loc[(0.5, "random"), "x"] == 150
    # Within 300 the heuristic's 600-cost node does not count: 0.6 and 0.7; random's failed (NaN)
    # node does not either: 0.8 and 0.6.
    h, r = out.loc[(1.0, "heuristic")], out.loc[(1.0, "random")]
    assert (h["median"], h["min"], h["max"], h["seeds"]) == pytest.approx((0.65, 0.6, 0.7, 2))
    assert (r["median"], r["min"], r["max"], r["seeds"]) == pytest.approx((0.7, 0.6, 0.8, 2))
    # Paired with random by seed: -0.2 (seed 0) and +0.1 (seed 1).
    assert h["vs"] == "random" and h["median_diff"] == pytest.approx(-0.05)
    assert (h["wins"], h["ties"], h["losses"]) == (1, 0, 1)
    assert r["vs"] == "" and np.isnan(r["median_diff"])
    # Within 150 only the shared first node fits: a tie on both seeds.
    half = out.loc[(0.5, "heuristic")]
    assert half["median"] == pytest.approx(0.45) and (half["wins"], half["ties"], half["losses"]) == (0, 2, 0)
    # Within 75 no node fits: nothing found yet, no seed counted.
    assert out.loc[(0.25, "heuristic"), "seeds"] == 0 and np.isnan(out.loc[(0.25, "heuristic"), "median"])
    # At equal iterations the same runs say the opposite: the heuristic wins both seeds.
    last = by_iteration(table).set_index(["x", "policy"]).loc[(3, "heuristic")]
    assert last["median"] == pytest.approx(0.925) and (last["wins"], last["losses"]) == (2, 0)


def test_best_within_is_the_best_so_far_at_the_last_node_that_fits():
    run = _hand_made_table().query("run == 'b_random_s1'")
    assert list(best_within(run, [99, 100, 250, 300, 1e9])) == pytest.approx([np.nan, 0.4, 0.4, 0.6, 0.6], nan_ok=True)


def test_fixed_mode_needs_a_budget_and_a_step_budget_must_be_reachable(tmp_path):
    bench = {**SPEC["benchmarks"][0], "modes": ["fixed"]}
    with pytest.raises(StudyError, match=r"benchmarks\[b\].modes = fixed needs a budget"):
        load_spec(_write(tmp_path, benchmarks=[bench]))
    # tiny: 1500 frames, batch 8, 1 epoch: data_augmentation_loop 1 to 400 gives 37 to 15000 steps
    with pytest.raises(StudyError, match=r"benchmarks\[b\].budget.steps = 50000: .* gives 37 to 15000 steps per "
                                         r"iteration \(data_augmentation_loop 1 to 400\)"):
        load_spec(_write(tmp_path, benchmarks=[{**bench, "budget": {"steps": 50000}}]))
    with pytest.raises(StudyError, match="budget: set steps or training_time_target_min, not both"):
        load_spec(_write(tmp_path, benchmarks=[{**bench, "budget": {"steps": 75, "training_time_target_min": 1}}]))
    spec = load_spec(_write(tmp_path, benchmarks=[{**SPEC["benchmarks"][0], "budget": {"steps": 110}}]))
    assert spec.benchmarks[0].run_modes == ["free", "fixed"]  # a budget runs both modes by default
    assert step_budget(spec.benchmarks[0]) == (3, 112)


def test_the_budget_is_the_root_of_both_modes_and_only_the_fixed_mode_locks_it(tmp_path):
    spec = load_spec(_write(tmp_path, benchmarks=[{**SPEC["benchmarks"][0], "budget": {"steps": 110}}]))
    bench = spec.benchmarks[0]
    free = yaml.safe_load(seeded_experiment(bench, "free", 3, tmp_path).read_text())
    fixed = yaml.safe_load(seeded_experiment(bench, "fixed", 3, tmp_path).read_text())
    for config in (free, fixed):
        assert config["claude"]["data_augmentation_loop"] == config["training"]["data_augmentation_loop"] == 3
        assert config["training"]["seed"] == 3
    assert fixed["claude"]["fixed_step_budget"] is True and not free["claude"].get("fixed_step_budget")


def test_a_benchmarks_set_is_written_into_every_seeds_experiment_and_a_bad_one_is_refused(tmp_path):
    """config/study.yaml keeps lowrank_ref and dale_ref on the networks docs/study.md measured."""
    bench = {**SPEC["benchmarks"][0], "set": {"simulation.connectivity_rank": 5, "training.learning_rate_start": 2e-4}}
    spec = load_spec(_write(tmp_path, benchmarks=[bench]))
    path = seeded_experiment(spec.benchmarks[0], "free", 3, tmp_path)
    config = yaml.safe_load(path.read_text())
    assert config["simulation"]["connectivity_rank"] == 5 and config["training"]["learning_rate_start"] == 2e-4
    assert config["training"]["seed"] == 3  # the study seed still sets the seed field
    assert path.read_text().splitlines()[0].endswith(
        "with training.seed = 3 (study seed), simulation.connectivity_rank = 5, training.learning_rate_start = 0.0002")
    with pytest.raises(StudyError, match=r"benchmarks\[b\].set: training.seed is the benchmark's seed_field"):
        load_spec(_write(tmp_path, benchmarks=[{**bench, "set": {"training.seed": 1}}]))
    with pytest.raises(StudyError, match=r"benchmarks\[b\].set.*simulation.W_draw.*'ours'.*'reference'"):
        load_spec(_write(tmp_path, benchmarks=[{**bench, "set": {"simulation.W_draw": "numpy"}}]))


def test_the_report_puts_both_modes_side_by_side():
    free = _hand_made_table()
    fixed = free.assign(mode="fixed", compute=free["iteration"] * 100, run=free["run"] + "-fixed")
    table = pd.concat([free, fixed], ignore_index=True)
    for column in STUDY_COLUMNS:
        if column not in table:
            table[column] = np.nan
    spec = load_spec_dict({**SPEC, "benchmarks": [{**SPEC["benchmarks"][0], "n_iter": 3, "slots": 1, "budget": {}}]})
    report = report_markdown(spec, table, summarize_study(table))
    assert "## b, fixed budget" in report and "## b: the modes side by side" in report
    side = report.split("## b: the modes side by side")[1]
    # free: iteration 3 median 0.925 (2 wins), common budget 0.65; fixed: every node 100, so the
    # common budget 300 holds every node: 0.925 at both
    assert "| heuristic | 0.9250 (+0.2250 (2/0/0)) | 0.6500 (-0.0500 (1/0/1)) | 0.9250 (+0.2250 (2/0/0)) | 0.9250 (+0.2250 (2/0/0)) |" in side, side


def test_benchmark_names_that_would_share_run_folders_are_refused(tmp_path):
    one = {**SPEC["benchmarks"][0], "budget": {}}
    other = {**SPEC["benchmarks"][0], "name": "b-fixed"}
    with pytest.raises(StudyError, match=r"names must differ, also from another's '<name>-fixed' \(runs named b, b-fixed, b-fixed\)"):
        load_spec(_write(tmp_path, benchmarks=[one, other]))


def test_the_shipped_spec_runs_the_reference_cases_and_hard():
    """Issue 19 item 3: the reference's low-rank case (both modes) and one landscape regime."""
    spec = load_spec(TINY.parents[1] / "study.yaml")
    assert [(b.name, b.run_modes) for b in spec.benchmarks] == [
        ("lowrank_ref", ["free", "fixed"]), ("dale_ref", ["fixed"]), ("hard", ["free", "fixed"])]
    lowrank = spec.benchmarks[0]
    assert lowrank.experiment == "config/experiments/reference/lowrank.yaml" and lowrank.budget.steps == 5000
    # both reference benchmarks keep the networks they were measured on (the cases draw the reference's W now)
    assert lowrank.set["simulation.W_draw"] == spec.benchmarks[1].set["simulation.W_draw"] == "ours"


def test_a_changed_budget_retires_the_runs_trained_from_the_old_experiment(tmp_path):
    """Every policy's run of that (benchmark, mode, seed) was trained from the old file: each is
    moved aside (kept) so the study trains it again instead of reporting it as the new budget's."""
    bench = load_spec(_write(tmp_path, benchmarks=[{**SPEC["benchmarks"][0], "budget": {"steps": 110}}])).benchmarks[0]
    seeded_experiment(bench, "free", 3, tmp_path)
    names = [run_name(bench, "free", policy, 3) for policy in ("heuristic", "random")]
    for name in names:
        (tmp_path / "runs" / name).mkdir(parents=True)
    seeded_experiment(bench, "free", 3, tmp_path)
    assert all((tmp_path / "runs" / name).exists() for name in names), "the same experiment keeps its runs"
    longer = bench.model_copy(update={"budget": bench.budget.model_copy(update={"steps": 300})})
    seeded_experiment(longer, "free", 3, tmp_path)
    assert not any((tmp_path / "runs" / name).exists() for name in names)
    assert sorted(p.name.split(".stale-")[0] for p in (tmp_path / "runs").glob("*.stale-*")) == sorted(names)


def test_execute_runs_writes_each_experiment_once_and_retires_runs_of_a_changed_one(tmp_path, monkeypatch):
    """What the study does before it starts a run (the workflows themselves are not started here)."""
    import pipeline.study as study

    started = []
    monkeypatch.setattr(study, "run_workflows", lambda folder, todo: started.extend(name for name, _ in todo) or [])
    spec = load_spec(_write(tmp_path, benchmarks=[{**SPEC["benchmarks"][0], "budget": {"steps": 110}}]))
    study.execute_runs(spec, tmp_path, 1, Path("Snakefile"), [])
    assert len(started) == 8  # 2 modes x 2 policies x 2 seeds, none finished
    assert sorted(p.name for p in (tmp_path / "experiments").iterdir()) == [
        "b-fixed_s0.yaml", "b-fixed_s1.yaml", "b_s0.yaml", "b_s1.yaml"]
    trained = tmp_path / "runs" / study.run_name(spec.benchmarks[0], "free", "random", 1)
    trained.mkdir(parents=True)
    longer = load_spec(_write(tmp_path, benchmarks=[{**SPEC["benchmarks"][0], "budget": {"steps": 300}}]))
    study.execute_runs(longer, tmp_path, 1, Path("Snakefile"), [])
    assert not trained.exists() and len(list((tmp_path / "runs").glob("*.stale-*"))) == 1
