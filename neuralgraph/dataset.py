"""The dataset folder: its arrays (:class:`Dataset`), loading, and the check that it matches a config.

A dataset folder is what ``python -m neuralgraph simulate`` writes: the arrays of
:data:`ARRAY_FILES` plus ``metadata.json``. Training, analysis and the smoke run (through
``neuralgraph train``) all read it with :func:`load_dataset` and refuse one that another config
made with :func:`check_dataset_matches`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from neuralgraph.config import ConfigError, ExperimentConfig
from neuralgraph.io import read_json

#: The arrays of a dataset folder, next to its metadata.json.
ARRAY_FILES = ("u.npy", "du.npy", "W.npy", "types.npy", "type_params.npy")
#: The rest of the dataset folder: metadata.json is written last and marks a complete dataset.
METADATA_FILE = "metadata.json"
STATS_FILE = "stats.json"
ACTIVITY_PICTURE = "activity.png"
CONNECTIVITY_PICTURE = "connectivity.png"


class DatasetMismatchError(ConfigError):
    """The dataset was made from another config (the message names each field that differs)."""


@dataclass
class Dataset:
    """A dataset folder loaded (arrays memory-mapped by default)."""

    u: np.ndarray
    du: np.ndarray
    W: np.ndarray
    types: np.ndarray
    type_params: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    delta_t: float = 0.01
    path: Path | None = None

    @property
    def n_frames(self) -> int:
        return int(self.u.shape[0])

    @property
    def n_neurons(self) -> int:
        return int(self.u.shape[1])

    @property
    def n_types(self) -> int:
        return int(self.type_params.shape[0])


def missing_files(path: str | os.PathLike) -> list[str]:
    """The files a complete dataset folder has that ``path`` lacks (empty: a complete folder)."""
    path = Path(path)
    return [name for name in (*ARRAY_FILES, METADATA_FILE) if not (path / name).is_file()]


def load_dataset(path: str | os.PathLike, mmap: bool = True) -> Dataset:
    """Load a dataset folder written by :func:`neuralgraph.simulate.simulate`.

    With ``mmap`` the big arrays (u, du) are read-only memory maps: training reads the frames
    it samples without loading 800 MB. Raises FileNotFoundError naming the missing file.
    """
    path = Path(path)
    missing = missing_files(path)
    if missing:
        raise FileNotFoundError(
            f"{path}: not a complete dataset folder, missing {', '.join(missing)} "
            f"(run `python -m neuralgraph simulate --config C --out {path}`)"
        )
    mode = "r" if mmap else None
    arrays = {name[:-4]: np.load(path / name, mmap_mode=mode, allow_pickle=False) for name in ARRAY_FILES}
    metadata = read_json(path / METADATA_FILE)
    return Dataset(
        u=arrays["u"], du=arrays["du"], W=arrays["W"], types=arrays["types"],
        type_params=arrays["type_params"], metadata=metadata,
        delta_t=float(metadata["delta_t"]), path=path,
    )


def dataset_mismatches(dataset: Any, cfg: ExperimentConfig) -> list[str]:
    """What differs between the dataset and the config's simulation section, one line per field."""
    sim = cfg.simulation
    problems = []
    if dataset.n_neurons != sim.n_neurons:
        problems.append(f"{dataset.n_neurons} neurons but simulation.n_neurons = {sim.n_neurons}")
    if dataset.n_frames != sim.n_frames:
        problems.append(f"{dataset.n_frames} frames but simulation.n_frames = {sim.n_frames}")
    if not math.isclose(float(dataset.delta_t), sim.delta_t, rel_tol=1e-9):
        problems.append(f"delta_t {dataset.delta_t} but simulation.delta_t = {sim.delta_t}")
    return problems


def check_dataset_matches(dataset: Any, cfg: ExperimentConfig, label: Optional[str] = None) -> None:
    """Refuse a dataset the config does not describe (the wrong folder passed, or a stale one).

    Raises :class:`DatasetMismatchError` ``"<label>: dataset does not match the config: <field
    differences>"``; ``label`` (default: the dataset's folder) says where the dataset came from.
    """
    problems = dataset_mismatches(dataset, cfg)
    if problems:
        where = label if label is not None else f"dataset {dataset.path}"
        raise DatasetMismatchError(f"{where}: dataset does not match the config: {'; '.join(problems)}")
