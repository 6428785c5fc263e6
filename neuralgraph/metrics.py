"""Scores of a trained run, as pure functions on numpy arrays (contract: docs/architecture.md, "metrics.json").

Nothing here knows about models, files or torch: ``neuralgraph.analyze`` evaluates the model
and hands arrays to these functions, so every definition can be tested on hand-made arrays.

Definitions chosen here (and why):

* **R^2 of a straight-line fit.** ``linear_fit_r2(x, y)`` fits ``y = alpha x + beta`` by least
  squares and returns ``1 - SS_res / SS_tot``. With a fitted intercept this equals the squared
  Pearson correlation, so it lies in [0, 1] and ignores any global scale and sign (the learned
  W absorbs the gain g and the message-function scale). It is therefore never negative; a W
  unrelated to the truth (e.g. shuffled) scores about ``1 / n_entries``, i.e. ~0. No value is
  ever clamped or dropped downstream: other scores (``test_pearson``) can be negative and are
  written as they are.
* **Undefined cases.** A learned quantity with no variance (all-zero W, a flat rollout)
  explains nothing: 0. A *true* quantity with no variance gives nothing to explain: NaN
  (written as null / ``nan``). Non-finite learned values (a diverged model) give NaN for W and
  0 for rollout frames (the blow-up rule).
* **Message-plateau correction.** The model computes ``sum_j W_ij * lin_edge(u_j)``, so only
  the product of column j of W and the scale of neuron j's message function is identified.
  ``plateau_corrected_W`` multiplies column j by that scale (the mean of lin_edge over the
  plateau ``u in [0.8, 1.0] * max|u|``), which maps every equivalent model to the same
  effective connectivity. (The reference text says "divide"; multiplying is what makes two
  models with identical dynamics score identically, and never divides by a dead message
  function's ~0 plateau. With one shared message function (edge_input "u") the correction is
  a single number and the corrected and raw R^2 are equal.)
"""
from __future__ import annotations

import math
import warnings
from typing import Optional

import numpy as np

#: connectivity_R2 thresholds of the seed's outcome classes (the one owner: the agent imports them).
CONVERGED_ABOVE = 0.9
FAILED_BELOW = 0.1
#: The outcome classes, best first.
OUTCOMES = ("converged", "partial", "failed")
#: test_R2 rules (frame_r2 below).
BLOW_UP_ABS = 1e10
COLLAPSE_STD_RATIO = 0.1
SIGMA_CLIP = 3.0


# ----------------------------------------------------------------------------- fits

def linear_fit_r2(x: np.ndarray, y: np.ndarray) -> float:
    """R^2 of the least-squares line ``y = alpha x + beta`` (= squared Pearson r, in [0, 1]).

    Returns 0 when ``y`` is constant (a flat prediction explains nothing), NaN when ``x`` is
    constant, when fewer than 3 points are given or when any value is not finite.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"linear_fit_r2: x has {x.size} values, y has {y.size}; they must match")
    if x.size < 3 or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return math.nan
    dx = x - x.mean()
    dy = y - y.mean()
    sxx, syy = float(dx @ dx), float(dy @ dy)
    if sxx <= 0.0:
        return math.nan
    if syy <= 0.0:
        return 0.0
    r2 = float((dx @ dy) ** 2 / (sxx * syy))
    return min(max(r2, 0.0), 1.0)  # only rounding can leave [0, 1]


def linear_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Slope and intercept of the least-squares line ``y = alpha x + beta`` (for plots)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    dx = x - x.mean()
    sxx = float(dx @ dx)
    if sxx <= 0.0:
        return math.nan, math.nan
    alpha = float(dx @ (y - y.mean())) / sxx
    return alpha, float(y.mean() - alpha * x.mean())


# ----------------------------------------------------------------------- connectivity

def offdiagonal(matrix: np.ndarray) -> np.ndarray:
    """The off-diagonal entries of a square matrix, row by row (self-edges are never learned)."""
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {matrix.shape}")
    return matrix[~np.eye(matrix.shape[0], dtype=bool)]


def plateau_corrected_W(learned_W: np.ndarray, plateau: float | np.ndarray) -> np.ndarray:
    """Effective connectivity: column j of the learned W times neuron j's message plateau.

    ``plateau`` is one number (one message function for all neurons) or one per neuron (N,).
    """
    learned_W = np.asarray(learned_W, dtype=np.float64)
    plateau = np.asarray(plateau, dtype=np.float64)
    if plateau.ndim == 0:
        return learned_W * float(plateau)
    if plateau.shape != (learned_W.shape[1],):
        raise ValueError(
            f"plateau has shape {plateau.shape}; expected one value or one per neuron ({learned_W.shape[1]},)"
        )
    return learned_W * plateau[None, :]


def connectivity_r2(learned_W: np.ndarray, true_W: np.ndarray, plateau: Optional[float | np.ndarray] = None) -> float:
    """R^2 of learned against true W over the off-diagonal entries (optionally plateau-corrected)."""
    learned_W = np.asarray(learned_W)
    true_W = np.asarray(true_W)
    if learned_W.shape != true_W.shape:
        raise ValueError(f"learned W has shape {learned_W.shape}, true W {true_W.shape}; they must match")
    if plateau is not None:
        learned_W = plateau_corrected_W(learned_W, plateau)
    return linear_fit_r2(offdiagonal(true_W), offdiagonal(learned_W))


# ------------------------------------------------------------------ low-rank subspaces

def leading_subspaces(W: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal bases (N x r) of the leading ``rank`` column and row subspaces of W
    (left and right singular vectors of the largest singular values); the diagonal is zeroed
    first, as everywhere in the scores (self-edges are never learned)."""
    W = np.array(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {W.shape}")
    if not 1 <= rank <= W.shape[0]:
        raise ValueError(f"subspace rank = {rank}: must be in 1..{W.shape[0]}")
    np.fill_diagonal(W, 0.0)
    left, _, right_t = np.linalg.svd(W)
    return left[:, :rank], right_t[:rank].T


def subspace_overlap(basis_a: np.ndarray, basis_b: np.ndarray) -> float:
    """Mean squared cosine of the principal angles between two r-dimensional subspaces
    (orthonormal bases as columns): ``|| A^T B ||_F^2 / r``.

    1 for the same subspace, 0 for orthogonal ones. It is also an R^2: the fraction of the
    energy of A's basis vectors that B's subspace explains (regress each column of A on B,
    average the R^2), hence the name ``*_subspace_R2`` in metrics.json.
    """
    if basis_a.shape != basis_b.shape:
        raise ValueError(f"subspace bases have shapes {basis_a.shape} and {basis_b.shape}; they must match")
    return float(np.sum((basis_a.T @ basis_b) ** 2) / basis_a.shape[1])


def W_subspace_r2(learned_W: np.ndarray, true_W: np.ndarray, rank: int) -> dict[str, float]:
    """The low-rank diagnostic of the reference's case study: how well the learned W's leading
    ``rank``-dimensional column subspace (where W sends activity: its range) and row subspace
    (which input directions it reads) match the true W's. NaN when the learned W is not finite
    or is all zero (no subspace to compare)."""
    learned_W = np.asarray(learned_W, dtype=np.float64)
    nan = {"W_column_subspace_R2": math.nan, "W_row_subspace_R2": math.nan}
    if not np.all(np.isfinite(learned_W)) or not np.any(offdiagonal(learned_W)):
        return nan
    true_cols, true_rows = leading_subspaces(true_W, rank)
    cols, rows = leading_subspaces(learned_W, rank)
    return {"W_column_subspace_R2": subspace_overlap(true_cols, cols),
            "W_row_subspace_R2": subspace_overlap(true_rows, rows)}


# --------------------------------------------------------------------------- rollout

def frame_r2(true_frame: np.ndarray, pred_frame: np.ndarray, sigma_clip: float = SIGMA_CLIP) -> float:
    """R^2 of ``pred = alpha true + beta`` across neurons at one frame, with the reference rules.

    Blow-up (any |pred| > 1e10 or non-finite) and collapse (std(pred) < 0.1 std(true)) score 0.
    Otherwise the fit uses the neurons whose true and predicted values both lie within
    ``sigma_clip`` standard deviations of their frame means. NaN when the true frame is flat.
    """
    true_frame = np.asarray(true_frame, dtype=np.float64).ravel()
    pred_frame = np.asarray(pred_frame, dtype=np.float64).ravel()
    if not np.all(np.isfinite(pred_frame)) or np.max(np.abs(pred_frame)) > BLOW_UP_ABS:
        return 0.0
    true_std, pred_std = true_frame.std(), pred_frame.std()
    if true_std <= 0.0:
        return math.nan
    if pred_std < COLLAPSE_STD_RATIO * true_std:
        return 0.0
    keep = (np.abs(true_frame - true_frame.mean()) <= sigma_clip * true_std) & (
        np.abs(pred_frame - pred_frame.mean()) <= sigma_clip * pred_std
    )
    return linear_fit_r2(true_frame[keep], pred_frame[keep])


def evaluated_frames(n_frames: int, every: int) -> np.ndarray:
    """Indices of the rollout frames scored by test_R2: every ``every``-th, skipping frame 0.

    Frame 0 is the shared start state, identical by construction, so scoring it would only
    inflate the mean.
    """
    if every < 1:
        raise ValueError(f"rollout_eval_every = {every}: must be >= 1")
    return np.arange(every, n_frames, every)


def rollout_r2(true_traj: np.ndarray, pred_traj: np.ndarray, every: int = 10) -> float:
    """test_R2: mean of :func:`frame_r2` over every ``every``-th frame of (frames, N) trajectories.

    Frame 0 of both trajectories is the common start state. NaN when no frame is scorable.
    """
    true_traj, pred_traj = _check_trajectories(true_traj, pred_traj)
    scores = [frame_r2(true_traj[k], pred_traj[k]) for k in evaluated_frames(len(true_traj), every)]
    scores = [s for s in scores if not math.isnan(s)]
    return float(np.mean(scores)) if scores else math.nan


def rollout_pearson(true_traj: np.ndarray, pred_traj: np.ndarray) -> float:
    """test_pearson: Pearson r over time per neuron (frames 1..end), averaged over neurons.

    A neuron whose prediction blows up (non-finite or |pred| > 1e10) or stays flat scores 0;
    a neuron whose true trace is flat has nothing to track and is left out. Can be negative.
    """
    true_traj, pred_traj = _check_trajectories(true_traj, pred_traj)
    true_traj, pred_traj = true_traj[1:], pred_traj[1:]
    if len(true_traj) < 2:
        return math.nan
    with np.errstate(invalid="ignore", over="ignore"):
        blown = ~np.all(np.isfinite(pred_traj), axis=0) | (np.nanmax(np.abs(pred_traj), axis=0) > BLOW_UP_ABS)
        pred = np.where(blown[None, :], 0.0, pred_traj)
        dt_ = true_traj - true_traj.mean(axis=0)
        dp = pred - pred.mean(axis=0)
        st = np.sqrt((dt_ ** 2).sum(axis=0))
        sp = np.sqrt((dp ** 2).sum(axis=0))
        r = (dt_ * dp).sum(axis=0) / (st * sp)
    tracked = st > 0
    if not np.any(tracked):
        return math.nan
    r = np.where(blown | ~(sp > 0) | ~np.isfinite(r), 0.0, r)
    return float(np.clip(r[tracked], -1.0, 1.0).mean())


def _check_trajectories(true_traj: np.ndarray, pred_traj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    true_traj = np.asarray(true_traj, dtype=np.float64)
    pred_traj = np.asarray(pred_traj, dtype=np.float64)
    if true_traj.shape != pred_traj.shape or true_traj.ndim != 2:
        raise ValueError(
            f"true rollout has shape {true_traj.shape}, predicted {pred_traj.shape}; both must be (frames, N)"
        )
    return true_traj, pred_traj


# ------------------------------------------------------------------------ clustering

def hungarian_accuracy(cluster_labels: np.ndarray, true_types: np.ndarray) -> float:
    """Fraction of neurons whose cluster maps to their type under the best one-to-one matching.

    The matching (scipy's linear_sum_assignment on the cluster x type count table) makes the
    score independent of how clusters happen to be numbered.
    """
    from scipy.optimize import linear_sum_assignment  # lazy: scipy is slow to import, only clustering needs it

    cluster_labels = np.asarray(cluster_labels).ravel()
    true_types = np.asarray(true_types).ravel()
    if cluster_labels.shape != true_types.shape:
        raise ValueError(f"{cluster_labels.size} cluster labels for {true_types.size} neurons")
    if cluster_labels.size == 0:
        return math.nan
    _, clusters = np.unique(cluster_labels, return_inverse=True)
    _, types = np.unique(true_types, return_inverse=True)
    counts = np.zeros((clusters.max() + 1, types.max() + 1), dtype=np.int64)
    np.add.at(counts, (clusters, types), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / cluster_labels.size)


def kmeans_labels(points: np.ndarray, n_clusters: int, restarts: int = 10, seed: int = 0) -> np.ndarray:
    """K-means labels (k-means++ starts, best of ``restarts`` by inertia, fixed seed).

    When there are at most ``n_clusters`` distinct points (e.g. embeddings never moved from
    their all-ones start) each distinct point is its own cluster: k-means is undefined there.
    """
    from scipy.cluster.vq import kmeans2  # lazy: scipy is slow to import, only clustering needs it

    points = np.asarray(points, dtype=np.float64)
    if points.ndim == 1:
        points = points[:, None]
    unique, inverse = np.unique(points, axis=0, return_inverse=True)
    if len(unique) <= n_clusters:
        return inverse.ravel()
    rng = np.random.default_rng(seed)
    best_labels, best_inertia = None, math.inf
    for _ in range(restarts):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # empty-cluster warnings: that restart just scores worse
            centroids, labels = kmeans2(points, n_clusters, iter=50, minit="++", seed=rng)
        inertia = float(((points - centroids[labels]) ** 2).sum())
        if inertia < best_inertia:
            best_labels, best_inertia = labels, inertia
    return best_labels


def cluster_accuracy(embeddings: np.ndarray, true_types: np.ndarray, n_types: int, seed: int = 0) -> float:
    """cluster_accuracy: k-means of the learned embeddings into ``n_types`` clusters, Hungarian-matched.

    NaN when an embedding is not finite (diverged model).
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.shape[0] != np.asarray(true_types).size:
        raise ValueError(f"{embeddings.shape[0]} embeddings for {np.asarray(true_types).size} neurons")
    if not np.all(np.isfinite(embeddings)):
        return math.nan
    if n_types <= 1:
        return 1.0
    return hungarian_accuracy(kmeans_labels(embeddings, n_types, seed=seed), true_types)


# --------------------------------------------------------------------------- outcome

def classify_outcome(connectivity_R2: float, status: str = "ok", reason: str = "") -> tuple[str, str]:
    """The seed's outcome class and why: converged (> 0.9), partial (0.1-0.9), failed (< 0.1).

    A training whose status is not ``ok`` (diverged, crashed, missing) is failed whatever its
    R^2, with the training's reason; a NaN R^2 is failed too.
    """
    if status != "ok":
        return "failed", f"training {status}" + (f": {reason}" if reason else "")
    if connectivity_R2 is None or math.isnan(connectivity_R2):
        return "failed", "connectivity_R2 is undefined (NaN)"
    if connectivity_R2 > CONVERGED_ABOVE:
        return "converged", f"connectivity_R2 > {CONVERGED_ABOVE}"
    if connectivity_R2 >= FAILED_BELOW:
        return "partial", f"{FAILED_BELOW} <= connectivity_R2 <= {CONVERGED_ABOVE}"
    return "failed", f"connectivity_R2 < {FAILED_BELOW}"
