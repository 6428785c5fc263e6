"""The tiny experiment of the unit tests (a module name no other test folder uses, so
`from tiny_configs import ...` never picks up another folder's conftest)."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def benchmark_module(name: str) -> ModuleType:
    """benchmarks/<name>.py imported as a module (the scripts are not a package), for unit tests
    of their functions; the same tests also run each script as a user does."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
