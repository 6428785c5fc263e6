"""benchmarks/hard_grid.py: --grid and --set read FIELD=VALUE the one way the other benchmarks
do (neuralgraph.config.parse_assignments), every point is schema-checked before anything is
computed, and the script trains each point as a user runs it."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from neuralgraph.config import ConfigError, parse_config
from tiny_configs import REPO, benchmark_module, tiny_config_dict

SCRIPT = REPO / "benchmarks" / "hard_grid.py"


@pytest.fixture(scope="module")
def hard_grid():
    return benchmark_module("hard_grid")


def test_grid_points_are_dotted_numbers_in_every_combination(hard_grid):
    points = hard_grid.grid_points(["coeff_W_L1=0,3e-3", "simulation.seed=4"])
    assert points == [{"training.coeff_W_L1": 0, "simulation.seed": 4},
                      {"training.coeff_W_L1": 0.003, "simulation.seed": 4}]
    assert hard_grid.point_label(points[1]) == "coeff_W_L1=0.003_seed=4"


def test_a_grid_without_values_is_refused_naming_it(hard_grid):
    with pytest.raises(ConfigError, match="--grid 'coeff_W_L1': expected NAME=V1,V2"):
        hard_grid.grid_points(["coeff_W_L1"])
    with pytest.raises(ConfigError, match="--grid '=3'"):
        hard_grid.grid_points(["=3"])


def test_point_configs_set_each_section_and_leave_the_base_alone(hard_grid):
    base = parse_config(tiny_config_dict())
    points = [{"training.n_epochs": 3, "simulation.seed": 9}, {"training.n_epochs": 2, "simulation.seed": 9}]
    configs = hard_grid.point_configs(base, points)
    assert [(c.training.n_epochs, c.simulation.seed) for c in configs] == [(3, 9), (2, 9)]
    assert (base.training.n_epochs, base.simulation.seed) == (1, 7)
    with pytest.raises(ConfigError, match="--grid point n_epochs=0: training.n_epochs"):
        hard_grid.point_configs(base, [{"training.n_epochs": 0}])


def _experiment(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(**{"training.recurrent_training": False})))
    return path


def test_a_bad_grid_value_is_refused_before_anything_is_simulated(tmp_path):
    out = tmp_path / "grid"
    done = subprocess.run([sys.executable, str(SCRIPT), "--experiment", str(_experiment(tmp_path)),
                           "--grid", "learning_rate_W_start=1e-3,-1", "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert "--grid point learning_rate_W_start=-1" in done.stderr
    assert "learning_rate_W_start" in done.stderr.split("--grid point", 1)[1]
    assert not out.exists()


@pytest.mark.slow
def test_each_point_trains_with_its_value_and_is_kept_on_a_rerun(tmp_path):
    out = tmp_path / "grid"
    cmd = [sys.executable, str(SCRIPT), "--experiment", str(_experiment(tmp_path)), "--set", "n_epochs=1",
           "--grid", "learning_rate_W_start=1e-3,3e-3", "--jobs", "2", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    points = sorted(row["training.learning_rate_W_start"] for row in rows if "summary" not in row)
    assert points == [0.001, 0.003]
    for value in points:
        written = yaml.safe_load((out / f"learning_rate_W_start={value}" / "experiment.yaml").read_text())
        assert written["training"]["learning_rate_W_start"] == value
        metrics = json.loads((out / f"learning_rate_W_start={value}" / "metrics.json").read_text())
        assert -1.0 <= metrics["connectivity_R2"] <= 1.0
    assert rows[-1]["summary"] is True and rows[-1]["points"] == 2
    trained = {p: p.stat().st_mtime_ns for p in out.glob("*/train.log")}
    simulated = (out / "data" / "u.npy").stat().st_mtime_ns
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/train.log")} == trained  # finished points kept
    assert (out / "data" / "u.npy").stat().st_mtime_ns == simulated
    rerun = [json.loads(line) for line in again.stdout.splitlines() if "summary" not in line]
    assert {row["connectivity_R2"] for row in rerun} == {row["connectivity_R2"] for row in rows if "summary" not in row}
