"""The dataset folder: its arrays (:class:`Dataset`), loading, and the check that it matches a config.

A dataset folder is what ``python -m neuralgraph simulate`` writes: the arrays of
:data:`ARRAY_FILES` plus ``metadata.json``. Training, analysis and the smoke run (through
``neuralgraph train``) all read it with :func:`load_dataset` and refuse one that another config
made with :func:`check_dataset_matches`.

A *training view* (:func:`write_training_view`) is what agent-written code is shown of a
dataset: the training arrays (u, du) and the metadata the trainer needs, never the true W,
the types or the statistics (a loop that could read W.npy would copy it into the model and
score R^2 = 1). When ``connectivity_mask: true_support`` asks for it, the view adds the
support mask (W != 0), which the model receives as a buffer anyway. :func:`load_dataset`
reads either kind of folder; a view's ``W``, ``types`` and ``type_params`` are None.
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
#: Marks a training view and lists what it holds; the arrays a view may hold besides metadata.json.
TRAINING_VIEW_FILE = "training_view.json"
TRAINING_VIEW_ARRAYS = ("u.npy", "du.npy")
SUPPORT_FILE = "support.npy"
#: The metadata fields a training view keeps (the trainer's checks and checkpoint key need no more).
TRAINING_VIEW_METADATA = ("simulation_hash", "delta_t", "n_frames", "n_neurons", "n_types")
ACTIVITY_PICTURE = "activity.png"
CONNECTIVITY_PICTURE = "connectivity.png"


class DatasetMismatchError(ConfigError):
    """The dataset was made from another config (the message names each field that differs)."""


@dataclass
class Dataset:
    """A dataset folder loaded (arrays memory-mapped by default)."""

    u: np.ndarray
    du: np.ndarray
    W: Optional[np.ndarray]
    types: Optional[np.ndarray]
    type_params: Optional[np.ndarray]
    metadata: dict[str, Any] = field(default_factory=dict)
    delta_t: float = 0.01
    path: Path | None = None
    #: W != 0, in a training view of a config with connectivity_mask true_support (else None).
    support: Optional[np.ndarray] = None

    @property
    def n_frames(self) -> int:
        return int(self.u.shape[0])

    @property
    def n_neurons(self) -> int:
        return int(self.u.shape[1])

    @property
    def n_types(self) -> int:
        if self.type_params is None:
            return int(self.metadata.get("n_types", 1))
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
    if (path / TRAINING_VIEW_FILE).is_file():
        return _load_training_view(path, mmap)
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


def write_training_view(source: str | os.PathLike, view: str | os.PathLike, with_support: bool,
                        link: bool = True) -> Path:
    """Make ``view`` a training view of the dataset folder ``source`` (see the module docstring).

    The big arrays are symbolic links to the source's (``link``; the sandbox binds their
    targets read-only) or copies; metadata.json keeps only :data:`TRAINING_VIEW_METADATA`.
    """
    from neuralgraph.io import atomic_save_npy, atomic_write_json  # io imports nothing from here

    source, view = Path(source).resolve(), Path(view)
    view.mkdir(parents=True, exist_ok=True)
    for name in TRAINING_VIEW_ARRAYS:
        target = view / name
        target.unlink(missing_ok=True)
        if link:
            target.symlink_to(source / name)
        else:
            import shutil
            shutil.copyfile(source / name, target)
    files = [*TRAINING_VIEW_ARRAYS, METADATA_FILE]
    if with_support:
        W = np.load(source / "W.npy", allow_pickle=False)
        atomic_save_npy(view / SUPPORT_FILE, W != 0)
        files.append(SUPPORT_FILE)
    metadata = read_json(source / METADATA_FILE)
    atomic_write_json(view / METADATA_FILE, {k: metadata[k] for k in TRAINING_VIEW_METADATA if k in metadata})
    atomic_write_json(view / TRAINING_VIEW_FILE, {"files": files})
    return view


def _load_training_view(path: Path, mmap: bool) -> Dataset:
    """A training view: u, du, metadata (and the support mask when it holds one)."""
    missing = [name for name in (*TRAINING_VIEW_ARRAYS, METADATA_FILE) if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{path}: not a complete training view, missing {', '.join(missing)}")
    mode = "r" if mmap else None
    u, du = (np.load(path / name, mmap_mode=mode, allow_pickle=False) for name in TRAINING_VIEW_ARRAYS)
    support = np.load(path / SUPPORT_FILE, allow_pickle=False) if (path / SUPPORT_FILE).is_file() else None
    metadata = read_json(path / METADATA_FILE)
    return Dataset(u=u, du=du, W=None, types=None, type_params=None, metadata=metadata,
                   delta_t=float(metadata["delta_t"]), path=path, support=support)


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
