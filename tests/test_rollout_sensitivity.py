"""benchmarks/rollout_sensitivity.py, run as a user runs it on reference run folders: each start's
learned score beside the true simulator's own sensitivity and the two swaps (issue 18: why a
run with an exact W can still miss test_R2 > 0.98)."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np

from agent.layout import DATA_DIR, iteration_dir_name
from neuralgraph.metrics import connectivity_r2, linear_fit, offdiagonal
from neuralgraph.model import load_trained_model
from neuralgraph.training import Trainer
from tiny_configs import REPO, benchmark_module

SCRIPT = REPO / "benchmarks" / "rollout_sensitivity.py"


def _script_module():
    return benchmark_module("rollout_sensitivity")


def _reference_run(tiny_dataset, folder):
    """A folder shaped like `snakemake reference`'s runs/<case>_s<seed>/: data/ and iter_001/."""
    cfg, data_dir = tiny_dataset
    shutil.copytree(data_dir, folder / DATA_DIR)
    Trainer(cfg, folder / DATA_DIR, folder / iteration_dir_name(1), max_steps=40).run()
    return cfg, folder


def test_each_start_reports_the_learned_score_the_true_sensitivity_and_both_swaps(tiny_dataset, tmp_path):
    cfg, run = _reference_run(tiny_dataset, tmp_path / "tiny_s0")
    untrained = tmp_path / "tiny_s1"
    untrained.mkdir()
    done = subprocess.run([sys.executable, str(SCRIPT), str(run), str(untrained)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    measured, missing = report["runs"]
    assert measured["run"] == "tiny_s0" and missing["run"] == "tiny_s1"
    assert "model.pt not found" in missing["error"]
    assert measured["held_out"]["start_frame"] == cfg.n_train_frames and measured["training"]["start_frame"] == 0
    for start in ("held_out", "training"):
        numbers = measured[start]
        scores = [numbers[f"true_test_R2_eps_{eps:g}"] for eps in report["epsilons"]]
        # the exact simulator, its start state off by a millionth of the activity's spread: a perfect score
        assert scores[0] > 0.9999, numbers
        assert all(0.0 <= s <= 1.0 for s in scores) and scores[0] >= scores[-1]
        for key in ("learned_test_R2", "exact_W_test_R2", "true_functions_test_R2"):
            assert 0.0 <= numbers[key] <= 1.0, (key, numbers)
        assert math.isfinite(numbers["lyapunov"]) and numbers["one_step_error"] > 0


def test_the_swaps_put_the_exact_W_in_the_model_and_the_learned_W_in_the_simulator(tiny_dataset, tmp_path):
    _cfg, run = _reference_run(tiny_dataset, tmp_path / "tiny_s0")
    module = _script_module()
    model, _ = load_trained_model(run / iteration_dir_name(1) / "model.pt")
    true_W = np.load(run / DATA_DIR / "W.npy")

    class Data:
        W = true_W

    learned = model.dense_W().detach().double().numpy()
    exact = module.with_exact_W(model, Data).dense_W().detach().double().numpy()
    assert connectivity_r2(exact, true_W) > 1 - 1e-9 and connectivity_r2(learned, true_W) < 0.99
    slope, intercept = linear_fit(offdiagonal(true_W), offdiagonal(learned))  # the learned model's units kept
    np.testing.assert_allclose(offdiagonal(exact), slope * offdiagonal(true_W) + intercept, rtol=1e-5, atol=1e-7)
    mapped = module.learned_W_in_true_units(model, Data)
    assert np.all(np.diag(mapped) == 0)
    assert abs(connectivity_r2(mapped, true_W) - connectivity_r2(learned, true_W)) < 1e-9
    slope, intercept = linear_fit(offdiagonal(mapped), offdiagonal(true_W))  # now on the true W's scale
    assert abs(slope - 1) < 1e-6 and abs(intercept) < 1e-9
