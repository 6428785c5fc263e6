"""Shared fixtures: tiny experiment configs and datasets that build in well under a second."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tiny_configs import REPO, tiny_config_dict  # noqa: F401 (fixtures below use them)

os.environ.setdefault("MPLBACKEND", "Agg")


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
