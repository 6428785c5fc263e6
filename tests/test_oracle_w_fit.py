"""benchmarks/oracle_w_fit.py: W fitted alone in the true model recovers W where the data
identify it, the weak-direction share says where they do not, and the script runs as a user
runs it (issue 18: seed 45's plateau)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from neuralgraph.config import parse_config
from tiny_configs import REPO, benchmark_module, tiny_config_dict

SCRIPT = REPO / "benchmarks" / "oracle_w_fit.py"


@pytest.fixture(scope="module")
def oracle():
    return benchmark_module("oracle_w_fit")


def _one_type_config(**overrides):
    return parse_config(tiny_config_dict(**{"simulation.n_neuron_types": 1,
                                            "simulation.neuron_type_params": [[7.0, 0.0, 1.0]], **overrides}))


def _exact_recording(seed: int, n: int, frames: int):
    """(u, du, W): du = -u + 7 W tanh(u) exactly, on well-spread random states."""
    rng = np.random.default_rng(seed)
    W = rng.normal(0, 0.3, (n, n))
    np.fill_diagonal(W, 0)
    u = rng.normal(0, 1.5, (frames, n)).astype(np.float32)
    return u, (-u + 7 * np.tanh(u) @ W.T).astype(np.float32), W


def test_w_alone_is_recovered_from_exact_data_and_a_wrong_model_would_not_be(oracle):
    """du = -u + 7 W tanh(u) exactly, on well-spread states: Adam on W alone finds W."""
    u, du, W = _exact_recording(0, 8, 2000)
    cfg = _one_type_config(**{"training.learning_rate_W_start": 1e-2, "graph_model.W_init_std": 1.0})
    scores = oracle.fit_w_alone(cfg, u, du, W, steps=3000, checkpoints=[100, 3000])
    assert scores[3000] > 0.999 and scores[100] < scores[3000]
    # the transposed W (a wiring read the wrong way round) is a different matrix: R2 far below
    assert oracle.connectivity_r2(W.T.copy(), W) < 0.5


def test_the_l1_penalty_starts_where_the_recipes_two_phases_start_it(oracle):
    """The reference's two phases: L1 on W only from epoch l1_start_epoch on, never when that
    epoch is not trained or the coefficient is 0 (the low-rank recipe)."""
    frames = {"simulation.n_frames": 400, "training.data_augmentation_loop": 10, "training.batch_size": 8}
    two_phase = _one_type_config(**frames, **{"training.coeff_W_L1": 1e-5, "training.n_epochs": 3,
                                              "training.l1_start_epoch": 2})
    assert oracle.l1_start_step(two_phase) == 2 * 100  # floor(floor(400 * 10 / 8) * 0.2) = 100 steps per epoch
    never = _one_type_config(**frames, **{"training.coeff_W_L1": 1e-5, "training.n_epochs": 2,
                                          "training.l1_start_epoch": 2})
    assert oracle.l1_start_step(never) is None
    assert oracle.l1_start_step(_one_type_config(**frames)) is None  # coeff_W_L1 0
    # the penalty acts from its step on, not before: same frames and start, so until the L1 phase
    # the fit is the free one exactly, and from it on it differs
    u, du, W = _exact_recording(2, 6, 500)
    common = {**frames, "training.learning_rate_W_start": 1e-2, "graph_model.W_init_std": 1.0, "training.n_epochs": 2}
    free = _one_type_config(**common)
    late = _one_type_config(**common, **{"training.coeff_W_L1": 1.0, "training.l1_start_epoch": 1})  # from step 101
    early = _one_type_config(**common, **{"training.coeff_W_L1": 1.0, "training.l1_start_epoch": 0})
    checkpoints = [50, 100, 200]
    free_scores = oracle.fit_w_alone(free, u, du, W, steps=200, checkpoints=checkpoints)
    late_scores = oracle.fit_w_alone(late, u, du, W, steps=200, checkpoints=checkpoints)
    early_scores = oracle.fit_w_alone(early, u, du, W, steps=200, checkpoints=checkpoints)
    assert late_scores[100] == free_scores[100] and late_scores[200] != free_scores[200]
    assert early_scores[50] != free_scores[50]
    # the reference's per-frame L1 (penalties_per_frame) is the trainer's: batch_size times the coefficient
    per_frame = _one_type_config(**common, **{"training.coeff_W_L1": 0.125, "training.l1_start_epoch": 0,
                                              "training.penalties_per_frame": True})
    assert per_frame.training.batch_size == 8
    assert oracle.fit_w_alone(per_frame, u, du, W, steps=200, checkpoints=checkpoints) == early_scores
    # ... and with W_L1_once_per_step (the landscape trainer's count) the coefficient counts once
    once = _one_type_config(**common, **{"training.coeff_W_L1": 1.0, "training.l1_start_epoch": 0,
                                         "training.penalties_per_frame": True, "training.W_L1_once_per_step": True})
    assert oracle.fit_w_alone(once, u, du, W, steps=200, checkpoints=checkpoints) == early_scores


def test_weak_energy_is_the_share_of_w_along_the_least_excited_directions(oracle):
    rng = np.random.default_rng(1)
    n = 6
    u = rng.normal(0, 1.0, (5000, n))
    u[:, -1] *= 1e-4  # neuron 5 barely moves: tanh(u_5)'s direction is excited ~1e-8 as much
    reads_only_the_still_neuron = np.zeros((n, n))
    reads_only_the_still_neuron[0, -1] = 1.0
    assert oracle.weak_energy(u, reads_only_the_still_neuron)["weak_energy_below_0.0001"] > 0.99
    reads_the_others = np.zeros((n, n))
    reads_the_others[0, 1] = 1.0
    report = oracle.weak_energy(u, reads_the_others)
    assert report["weak_energy_below_0.001"] < 1e-6 and report["condition"] > 1e6


def test_the_script_prints_every_seed_and_refuses_a_multi_type_case(tmp_path):
    path = tmp_path / "case.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(**{"simulation.n_neuron_types": 1,
                                                       "simulation.neuron_type_params": [[7.0, 0.0, 1.0]]})))
    done = subprocess.run([sys.executable, str(SCRIPT), str(path), "--seeds", "2", "3", "--steps", "40"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["steps"] == 40 and [s["seed"] for s in report["seeds"]] == [2, 3]
    for seed in report["seeds"]:
        assert set(seed["oracle_connectivity_R2_by_step"]) == {"4", "10", "20", "40"}
        assert 0 <= seed["weak_energy_below_0.0001"] <= seed["weak_energy_below_0.001"] <= 1
        assert seed["condition"] >= 1
    changed = subprocess.run([sys.executable, str(SCRIPT), str(path), "--steps", "20", "--set", "graph_model.W_init_std=0",
                              "--set", "training.learning_rate_W_start=0.003"], capture_output=True, text=True,
                             timeout=300, cwd=tmp_path)
    assert changed.returncode == 0, changed.stderr[-2000:]
    report = json.loads(changed.stdout)
    assert (report["W_init_std"], report["lr_W"]) == (0.0, 0.003)
    bad = subprocess.run([sys.executable, str(SCRIPT), str(path), "--steps", "5", "--set", "graph_model.W_init_std=-1"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert bad.returncode == 2 and "graph_model.W_init_std" in bad.stderr
    path.write_text(yaml.safe_dump(tiny_config_dict()))  # the tiny config's 4 neuron types
    refused = subprocess.run([sys.executable, str(SCRIPT), str(path), "--steps", "5"], capture_output=True,
                             text=True, timeout=300, cwd=tmp_path)
    assert refused.returncode == 2 and "simulation.n_neuron_types = 4" in refused.stderr
    assert "must be 1" in refused.stderr
