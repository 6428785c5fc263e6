"""The dataset module: loading and the one dataset-matches-config check (training and analysis share it)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tiny_configs import tiny_config_dict
from neuralgraph.config import ConfigError, parse_config
from neuralgraph.dataset import DatasetMismatchError, check_dataset_matches, dataset_mismatches


def _fake(n_frames=1500, n_neurons=24, delta_t=None):
    cfg = parse_config(tiny_config_dict(), source="test")
    u = np.zeros((n_frames, n_neurons), dtype=np.float32)
    return cfg, SimpleNamespace(u=u, n_frames=n_frames, n_neurons=n_neurons, path="DATA",
                                delta_t=cfg.simulation.delta_t if delta_t is None else delta_t)


def test_a_matching_dataset_passes():
    cfg, ds = _fake()
    assert dataset_mismatches(ds, cfg) == []
    check_dataset_matches(ds, cfg)


def test_every_differing_field_is_named_in_one_error():
    cfg, ds = _fake(n_frames=1600, n_neurons=30, delta_t=0.5)
    with pytest.raises(DatasetMismatchError) as info:
        check_dataset_matches(ds, cfg, label="--data DATA")
    text = str(info.value)
    assert text.startswith("--data DATA: dataset does not match the config: ")
    for field in ("simulation.n_neurons", "simulation.n_frames", "simulation.delta_t"):
        assert field in text
    assert isinstance(info.value, ConfigError)  # the analyze CLI reports ConfigError as a user error


def test_the_default_label_is_the_dataset_folder():
    cfg, ds = _fake(n_frames=10)
    with pytest.raises(DatasetMismatchError, match=r"^dataset DATA: .*10 frames but simulation.n_frames = 1500"):
        check_dataset_matches(ds, cfg)
