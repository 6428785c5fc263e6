"""Shared fixtures: tiny experiment configs and datasets that build in well under a second."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MPLBACKEND", "Agg")


def tiny_config_dict(**overrides) -> dict:
    """A few-dozen-neuron experiment; ``overrides`` maps 'section.field' to a value."""
    cfg = {
        "simulation": {"n_neurons": 24, "n_neuron_types": 4, "n_frames": 1500, "n_burn_in": 200, "seed": 7},
        "graph_model": {"hidden_dim": 16},
        "training": {"n_epochs": 1, "batch_size": 8, "data_augmentation_loop": 2, "held_out_frames": 300,
                     "time_step": 1, "recurrent_training": True, "learning_rate_W_start": 5e-3,
                     "learning_rate_start": 1e-3, "learning_rate_embedding_start": 1e-3},
        "claude": {"n_epochs": 1, "data_augmentation_loop": 2, "n_iter_block": 2, "ucb_c": 1.414},
        "analysis": {"rollout_frames": 200},
    }
    for dotted, value in overrides.items():
        section, key = dotted.split(".", 1)
        cfg[section][key] = value
    return cfg


@pytest.fixture
def tiny_config_dict_factory():
    return tiny_config_dict


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """(cfg, data_dir): ``tiny_config_dict()`` simulated once per test session (with pictures).

    Shared read-only: tests must not modify the files (copy the folder first if needed).
    """
    from neuralgraph.config import parse_config
    from neuralgraph.simulate import simulate

    cfg = parse_config(tiny_config_dict(), source="tiny_config_dict()")
    data_dir = simulate(cfg, tmp_path_factory.mktemp("tiny_dataset") / "data", progress=False)
    return cfg, data_dir


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: one torch thread avoids thread-sync stalls on a shared 2-core machine."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def python_exe() -> str:
    return sys.executable
