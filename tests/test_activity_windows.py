"""benchmarks/activity_windows.py, run as a user runs it: one JSON object, every window of every
seed, and a recording that settles is told from one that stays alive (issue 18, gain 2)."""
from __future__ import annotations

import json
import subprocess
import sys

import yaml

from tiny_configs import REPO, tiny_config_dict

SCRIPT = REPO / "benchmarks" / "activity_windows.py"


def _report(tmp_path, config: dict, *args: str) -> dict:
    path = tmp_path / "case.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    done = subprocess.run([sys.executable, str(SCRIPT), str(path), *args], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_each_seed_has_every_window_and_a_dead_network_is_told_from_a_living_one(tmp_path):
    living = _report(tmp_path, tiny_config_dict(), "--seeds", "3", "4", "--window", "500")
    assert [s["seed"] for s in living["seeds"]] == [3, 4] and living["window"] == 500
    for seed in living["seeds"]:
        assert [w["start"] for w in seed["windows"]] == [0, 500, 1000]  # 1500 frames
        assert all(w["effective_rank_99"] >= 1 and w["mean_abs_du"] > 0 for w in seed["windows"])
    # No coupling (gain 0, one type): every neuron decays to rest, nothing moves late on.
    dead = _report(tmp_path, tiny_config_dict(**{"simulation.n_neuron_types": 1,
                                                 "simulation.neuron_type_params": [[0.0, 0.0, 1.0]]}), "--window", "500")
    late = dead["seeds"][0]["windows"][-1]["mean_abs_du"]
    assert late < 1e-3 * living["seeds"][0]["windows"][-1]["mean_abs_du"], dead
    assert dead["seeds"][0]["tail_activity_ratio"] < 0.05


def test_set_changes_a_field_first_and_a_bad_one_is_refused_naming_it(tmp_path):
    """--set simulation.W_draw=ours: how config/reference_lowrank_regime.yaml's draws are recomputed
    from a case file that draws the reference's W."""
    gaussian = tiny_config_dict(**{"simulation.connectivity_type": "Gaussian", "simulation.W_draw": "reference"})
    theirs = _report(tmp_path, gaussian, "--seeds", "3", "--window", "500")
    ours = _report(tmp_path, gaussian, "--seeds", "3", "--window", "500", "--set", "simulation.W_draw=ours")
    assert ours["set"] == ["simulation.W_draw=ours"] and theirs["set"] == []
    assert ours["seeds"][0]["windows"] != theirs["seeds"][0]["windows"]  # another W, another recording
    path = tmp_path / "case.yaml"
    done = subprocess.run([sys.executable, str(SCRIPT), str(path), "--set", "simulation.W_draw=numpy"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 2 and "simulation.W_draw" in done.stderr and "'ours'" in done.stderr
