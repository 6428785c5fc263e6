"""benchmarks/w_excited_split.py: a W split by the directions the recording excites; a W that is
right where the data speak and wrong where they are silent is told apart (issue 18)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from agent.layout import DATA_DIR, iteration_dir_name
from neuralgraph.config import parse_config
from neuralgraph.model import build_model, save_trained_model
from neuralgraph.run_files import MODEL_FILE
from neuralgraph.simulate import simulate
from tiny_configs import REPO, benchmark_module, tiny_config_dict

SCRIPT = REPO / "benchmarks" / "w_excited_split.py"


@pytest.fixture(scope="module")
def split():
    return benchmark_module("w_excited_split")


def test_noise_in_the_silent_directions_spoils_the_whole_but_not_the_excited_part(split):
    rng = np.random.default_rng(0)
    n = 10
    u = rng.normal(0, 1, (4000, n))
    u[:, 6:] *= 1e-3  # neurons 6-9 barely move: tanh(u) is silent along them
    projector = split.excited_projector(u, 0.99)
    true = rng.normal(0, 1, (n, n))
    learned = true.copy()
    learned[:, 6:] = rng.normal(0, 3, (n, 4))  # wrong only on the silent presynaptic neurons
    report = split.split_report(learned, true, projector)
    assert report["excited_dims"] == 6
    assert report["excited_R2"] > 0.999 and report["silent_R2"] < 0.2 and report["connectivity_R2"] < 0.5
    assert report["silent_over_excited_learned"] > 2 * report["silent_over_excited_true"]
    exact = split.split_report(true.copy(), true, projector)
    assert exact["excited_R2"] > 0.999999 and exact["silent_R2"] > 0.999999


def test_the_script_reads_a_run_folder_as_a_user_runs_it(tmp_path):
    cfg = parse_config(tiny_config_dict())
    run = tmp_path / "runs" / "case_s0"
    dataset = simulate(cfg, run / DATA_DIR, progress=False, pictures=False)
    model = build_model(cfg)
    with torch.no_grad():  # a "trained" model that learned W exactly, in twice the true units
        model.W.copy_(torch.as_tensor(2 * np.load(dataset / "W.npy"), dtype=torch.float32))
    (run / iteration_dir_name(1)).mkdir(parents=True)
    save_trained_model(model, cfg, run / iteration_dir_name(1) / MODEL_FILE)
    done = subprocess.run([sys.executable, str(SCRIPT), str(run)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    [report] = json.loads(done.stdout)["runs"]
    assert report["run"] == "case_s0" and 1 <= report["excited_dims"] <= cfg.simulation.n_neurons
    assert report["connectivity_R2"] > 0.999999 and report["excited_R2"] > 0.999999
    refused = subprocess.run([sys.executable, str(SCRIPT), str(run), "--energy", "1.5"], capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode == 2 and "--energy = 1.5: must be between 0 and 1" in refused.stderr
