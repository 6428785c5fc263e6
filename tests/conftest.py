"""Shared fixtures: tiny experiment configs and datasets that build in well under a second."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tiny_configs import REPO, tiny_config_dict  # noqa: F401 (fixtures below use them)

os.environ.setdefault("MPLBACKEND", "Agg")


def declared_seconds(item) -> float:
    """The longest pytest-timeout a file's test declares (0 if none): a test that expects to run
    for long says so with @pytest.mark.timeout(N) (tests/workflow/test_study.py)."""
    marks = [mark.args[0] for mark in item.iter_markers("timeout") if mark.args]
    return float(max(marks, default=0))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Files with slow tests first, the longest declared first, each file's tests kept together.

    README's command hands whole files to pytest-xdist workers in collection order
    (``--dist loadfile --no-loadscope-reorder``): a long workflow file handed out last runs alone
    while the other worker idles. trylast: after tests/workflow/conftest.py marks its tests slow.
    """
    slow_files = {item.path for item in items if item.get_closest_marker("slow") is not None}
    longest: dict[Path, float] = {}
    for item in items:
        longest[item.path] = max(longest.get(item.path, 0.0), declared_seconds(item))
    items.sort(key=lambda item: (item.path not in slow_files, -longest[item.path]))  # stable within a file


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
