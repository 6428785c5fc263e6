"""The shipped reference specs, and the low-rank seeds chosen in the reference's published regime.

config/reference_lowrank_regime.yaml runs the low-rank case on the first 10 W seeds from 10 on
whose recording has the effective rank the reference published for its seeds (12-14, read here
from the case file's ``reference.published.effective_rank_99``). The seeds are chosen by the
activity alone; this test recomputes the rule, so the list cannot drift from it.
"""
from __future__ import annotations

from pathlib import Path

import json
import subprocess
import sys

import pytest

from neuralgraph.config import load_config
from neuralgraph.simulate import simulate
from pipeline.reference import case_config, case_runs, load_spec

ROOT = Path(__file__).resolve().parents[1]
REGIME_SPEC = ROOT / "config" / "reference_lowrank_regime.yaml"
FIRST_SEED = 10
N_SEEDS = 10


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("reference*.yaml")), ids=lambda p: p.name)
def test_every_shipped_reference_spec_loads_with_its_cases(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # case paths are relative to the project folder, as snakemake runs them
    spec = load_spec(path)
    assert case_runs(spec), f"{path.name} runs nothing"


@pytest.mark.slow
def test_the_regime_seeds_are_the_first_ten_from_ten_whose_activity_has_the_published_rank(monkeypatch):
    """Recomputed with benchmarks/activity_windows.py, the script the seeds were chosen with."""
    monkeypatch.chdir(ROOT)
    spec = load_spec(REGIME_SPEC)
    [entry] = spec.cases
    low, high = case_config(entry).reference.published.effective_rank_range()
    assert (low, high) == (12, 14)
    seeds = range(FIRST_SEED, max(entry.seeds) + 1)
    assert entry.set["simulation.W_draw"] == "ours"  # the draws were chosen among our generator's
    as_run = [f"--set={field}={json.dumps(value)}" for field, value in entry.set.items()]  # as YAML reads it: null, not None
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "activity_windows.py"), entry.experiment,
                           "--seeds", *map(str, seeds), "--window", "10000", *as_run],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    rank_of = {s["seed"]: s["effective_rank_99"] for s in json.loads(done.stdout)["seeds"]}
    chosen = [seed for seed in seeds if low <= rank_of[seed] <= high][:N_SEEDS]
    assert entry.seeds == chosen, f"effective ranks by seed: {rank_of}"
    # the rule selects something: draws outside the regime were skipped on the way
    assert any(not low <= r <= high for r in rank_of.values())


#: the u(0) stream each gain-2 case's measured runs recorded (docs/reference.md, stop 34: named as
#: initial_state_seed until stop 37, chosen by the rank rule since): the rule must still pick it
GAIN_2_STREAMS = {"gain2_10k": 3, "gain2_30k": 2}


@pytest.mark.parametrize("path", sorted((ROOT / "config" / "experiments" / "reference").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_a_case_that_chooses_its_trajectory_by_rank_uses_its_published_rank(path):
    cfg = load_config(path)
    if cfg.simulation.initial_state_rank is not None:
        assert tuple(cfg.simulation.initial_state_rank) == cfg.reference.published.effective_rank_range()


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(GAIN_2_STREAMS))
def test_a_gain_2_case_records_the_trajectory_its_measured_runs_had(case, tmp_path):
    """The reference's W, along the first u(0) stream whose recording has its published effective
    rank: the case's rule, simulated as the workflow does, keeps the stream its runs were measured on."""
    cfg = load_config(ROOT / "config" / "experiments" / "reference" / f"{case}.yaml")
    cfg = cfg.model_copy(update={"simulation": cfg.simulation.model_copy(update={"seed": cfg.reference.seeds[0]})})
    folder = simulate(cfg, tmp_path / case, progress=False, pictures=False)
    choice = json.loads((folder / "metadata.json").read_text())["initial_state"]
    low, high = cfg.reference.published.effective_rank_range()
    assert choice["initial_state_seed"] == GAIN_2_STREAMS[case] and choice["in_range"], choice
    assert [low <= t["effective_rank_99"] <= high for t in choice["tried"]] == [False] * (len(choice["tried"]) - 1) + [True]
