"""Data statistics of a simulated dataset: what the agent reads about the network it explores.

Two numbers drive the seed's reasoning about training difficulty:

* **spectral radius** of the true W: max |eigenvalue| (exact, ``numpy.linalg.eigvals``).
* **effective rank** of the activity matrix X (frames x N) at 90% and 99% variance.

What :func:`effective_ranks` computes, exactly:

1. X is *not* mean-centred (as in the reference): the "variance" is the energy
   ``sum(S**2)`` of the raw activity, so a constant offset counts as one component.
2. At most ``max_frames`` frames are used, taken with an even stride over the whole
   recording (not a random subset, so the result is deterministic and covers all times).
3. The squared singular values S**2 are the eigenvalues of the Gram matrix ``X^T X``
   (N x N), accumulated in float64. This is exact for the subsample (no randomized SVD,
   no cap at 100 components) and costs one (frames x N) by (N x frames) product: about a
   second for 20000 x 1000 on 2 CPU cores.
4. rank(p) = the smallest k such that ``cumsum(S**2)[k-1] / sum(S**2) >= p``, the sum
   running over all N components. The reference summed only its top 100 components, which
   gives smaller ranks; stats.json also carries that variant (``*_top100``) for comparison.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from neuralgraph.analysis_log import ANALYSIS_LOG_FILE, update_analysis_log
from neuralgraph.dataset import STATS_FILE
from neuralgraph.device import single_threaded_blas
from neuralgraph.io import atomic_write_json

#: Default cap on the frames used for the effective rank (an even-stride subsample).
DEFAULT_MAX_FRAMES = 20_000

#: The reference kept only this many components (randomized SVD) before taking cumulative ratios.
REFERENCE_TOP_COMPONENTS = 100

#: Chunk of frames per pass when summarising a (memory-mapped) activity array.
_CHUNK_FRAMES = 8192


def spectral_radius(W: np.ndarray) -> float:
    """max |eigenvalue| of a square matrix (float64 eigen-decomposition)."""
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"spectral_radius: W must be a square matrix, got shape {W.shape}")
    with single_threaded_blas():
        return float(np.max(np.abs(np.linalg.eigvals(W))))


def presynaptic_modes(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors (columns) of C = E[tanh(u) tanh(u)^T] over the frames.

    Why: a row of W acts on the data only through tanh(u) (the PDE_N2 coupling), so C says which
    directions of W a recording excites: a gradient-trained W converges along eigenvector k at a
    rate that grows with eigenvalue k, and not at all where C is zero."""
    phi = np.tanh(np.asarray(u, dtype=np.float64))
    with single_threaded_blas():
        return np.linalg.eigh(phi.T @ phi / phi.shape[0])


def subsample_frames(X: np.ndarray, max_frames: int = DEFAULT_MAX_FRAMES) -> np.ndarray:
    """At most ``max_frames`` rows of X at an even stride, as a float64 in-memory array."""
    n = X.shape[0]
    stride = max(1, -(-n // max_frames))  # ceil(n / max_frames)
    return np.asarray(X[::stride], dtype=np.float64)


def singular_energies(X: np.ndarray, max_frames: int = DEFAULT_MAX_FRAMES) -> np.ndarray:
    """Squared singular values S**2 of X (descending), non-centred, on an even-stride subsample."""
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"effective rank: activity must be a non-empty 2-D (frames x N) array, got shape {X.shape}")
    sub = subsample_frames(X, max_frames)
    with single_threaded_blas():
        if sub.shape[0] >= sub.shape[1]:
            gram = sub.T @ sub  # N x N
        else:
            gram = sub @ sub.T  # same non-zero spectrum, smaller when there are few frames
        return np.clip(np.linalg.eigvalsh(gram)[::-1], 0.0, None)


def ranks_from_energies(energies: np.ndarray, thresholds: Sequence[float] = (0.90, 0.99)) -> list[int]:
    """Smallest k with cumsum(energies)[k-1] / sum(energies) >= p, for each threshold p."""
    for p in thresholds:
        if not 0.0 < p <= 1.0:
            raise ValueError(f"effective rank: threshold = {p}: must be in (0, 1]")
    total = float(np.sum(energies))
    if total <= 0.0:
        return [1 for _ in thresholds]  # all-zero activity: nothing to explain
    ratio = np.cumsum(energies) / total
    # tolerance: a ratio of 0.99 computed as 0.98999999999 must still count as reached
    return [int(min(np.searchsorted(ratio, p - 1e-12) + 1, len(energies))) for p in thresholds]


def effective_ranks(
    X: np.ndarray, thresholds: Sequence[float] = (0.90, 0.99), max_frames: int = DEFAULT_MAX_FRAMES
) -> list[int]:
    """For each threshold p (0 < p <= 1), the smallest number of components whose cumulative
    S**2 reaches p, from one decomposition."""
    return ranks_from_energies(singular_energies(X, max_frames), thresholds)


def activity_summary(u: np.ndarray) -> dict[str, Any]:
    """shape, min, max, mean, std of an activity array, in chunks (works on a memmap, float64 sums)."""
    n_frames = u.shape[0]
    lo, hi, total, total_sq = np.inf, -np.inf, 0.0, 0.0
    for start in range(0, n_frames, _CHUNK_FRAMES):
        chunk = np.asarray(u[start : start + _CHUNK_FRAMES], dtype=np.float64)
        lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
        total += float(chunk.sum())
        total_sq += float(np.square(chunk).sum())
    count = u.size
    mean = total / count
    std = float(np.sqrt(max(total_sq / count - mean * mean, 0.0)))
    return {"shape": [int(s) for s in u.shape], "min": lo, "max": hi, "mean": mean, "std": std}


def tail_activity_ratio(u: np.ndarray, tail_fraction: float = 0.1, max_frames: int = DEFAULT_MAX_FRAMES) -> float:
    """Mean over neurons of the temporal std in the last ``tail_fraction`` of the frames,
    divided by the same over the whole recording (even-stride subsamples).

    About 1 for sustained activity; near 0 when the network settled on a fixed point, which
    leaves nothing to learn from and a trivial held-out test segment.
    """
    n = u.shape[0]
    tail_start = n - max(2, int(n * tail_fraction))
    whole = subsample_frames(u, max_frames).std(axis=0).mean()
    tail = subsample_frames(u[tail_start:], max_frames).std(axis=0).mean()
    return float(tail / whole) if whole > 0 else 0.0


def dataset_statistics(u: np.ndarray, W: np.ndarray, max_frames: int = DEFAULT_MAX_FRAMES) -> dict[str, Any]:
    """Everything stats.json holds (see docs/architecture.md).

    ``effective_rank_90/99`` are exact over all N components (the numbers analysis.log
    shows). ``effective_rank_90/99_top100`` recompute them as the reference did, relative to
    the energy of the top 100 components only, so they compare with the seed's numbers
    (e.g. 26 / 84); they are always <= the exact ones.
    """
    energies = singular_energies(u, max_frames)
    rank90, rank99 = ranks_from_energies(energies, (0.90, 0.99))
    top90, top99 = ranks_from_energies(energies[:REFERENCE_TOP_COMPONENTS], (0.90, 0.99))
    return {
        "spectral_radius": spectral_radius(W),
        "effective_rank_90": rank90,
        "effective_rank_99": rank99,
        "effective_rank_90_top100": top90,
        "effective_rank_99_top100": top99,
        "effective_rank_method": (
            f"non-centred; eigenvalues of the float64 Gram matrix of at most {max_frames} "
            f"frames taken at an even stride; *_top100: relative to the top 100 components"
        ),
        "activity": activity_summary(u),
        "tail_activity_ratio": tail_activity_ratio(u),
    }


def write_statistics(stats: Mapping[str, Any], data_dir: str | Path) -> None:
    """Write ``stats.json`` and merge the seed-format lines into ``analysis.log``.

    analysis.log gets ``spectral radius: S`` then the ``--- activity ---`` section with
    ``shape``, ``range``, ``effective rank (90% var)`` and ``effective rank (99% var)``.
    """
    data_dir = Path(data_dir)
    atomic_write_json(data_dir / STATS_FILE, dict(stats))
    log = data_dir / ANALYSIS_LOG_FILE
    update_analysis_log(log, {"spectral radius": round(float(stats["spectral_radius"]), 4)})
    act = stats["activity"]
    update_analysis_log(
        log,
        {
            "shape": f"({act['shape'][0]}, {act['shape'][1]})",
            "range": f"[{act['min']:.4g}, {act['max']:.4g}]",
            "effective rank (90% var)": int(stats["effective_rank_90"]),
            "effective rank (99% var)": int(stats["effective_rank_99"]),
        },
        section="activity",
    )
