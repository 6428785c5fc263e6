"""Metric definitions on hand-made arrays (contract: docs/architecture.md, "metrics.json")."""
from __future__ import annotations

import math

import numpy as np
import pytest

from neuralgraph import metrics


def lorentz_W(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.standard_cauchy((n, n))
    w[np.abs(w) > 25] = 0.0
    w /= n ** 0.7
    np.fill_diagonal(w, 0.0)
    return w


# ----------------------------------------------------------------------- connectivity

def test_scaled_and_sign_flipped_W_scores_one():
    true_W = lorentz_W(40)
    assert metrics.connectivity_r2(10.0 * true_W, true_W) == pytest.approx(1.0, abs=1e-12)
    assert metrics.connectivity_r2(-0.3 * true_W + 0.01, true_W) == pytest.approx(1.0, abs=1e-12)


def test_shuffled_W_scores_near_zero():
    true_W = lorentz_W(60, seed=1)
    rng = np.random.default_rng(2)
    shuffled = rng.permutation(true_W.ravel()).reshape(true_W.shape)
    r2 = metrics.connectivity_r2(shuffled, true_W)
    assert 0.0 <= r2 < 0.02


def test_diagonal_is_ignored():
    true_W = lorentz_W(30, seed=3)
    learned = 2.0 * true_W
    np.fill_diagonal(learned, 1e6)  # a huge self-weight must not spoil the score
    assert metrics.connectivity_r2(learned, true_W) == pytest.approx(1.0, abs=1e-12)


def test_per_neuron_plateau_correction_recovers_equivalent_model():
    """Column j scaled by 1/k_j with message function k_j tanh: same dynamics, same score."""
    true_W = lorentz_W(50, seed=4)
    k = np.random.default_rng(5).uniform(0.2, 3.0, size=50)
    learned = 10.0 * true_W / k[None, :]
    raw = metrics.connectivity_r2(learned, true_W)
    corrected = metrics.connectivity_r2(learned, true_W, plateau=k)
    assert corrected == pytest.approx(1.0, abs=1e-12)
    assert raw < 0.95
    # one shared message function: the correction cannot change the score
    assert metrics.connectivity_r2(learned, true_W, plateau=0.37) == pytest.approx(raw, abs=1e-12)


def test_connectivity_undefined_cases():
    true_W = lorentz_W(20, seed=6)
    assert metrics.connectivity_r2(np.zeros_like(true_W), true_W) == 0.0
    nan_W = true_W.copy()
    nan_W[0, 1] = np.nan
    assert math.isnan(metrics.connectivity_r2(nan_W, true_W))
    with pytest.raises(ValueError, match="shape"):
        metrics.connectivity_r2(true_W[:5, :5], true_W)
    with pytest.raises(ValueError, match="one per neuron"):
        metrics.plateau_corrected_W(true_W, np.ones(3))


def test_linear_fit_recovers_line():
    x = np.linspace(-1, 1, 50)
    alpha, beta = metrics.linear_fit(x, 3.0 * x - 2.0)
    assert alpha == pytest.approx(3.0) and beta == pytest.approx(-2.0)


# --------------------------------------------------------------------------- rollout

def _trajectories(n_frames=101, n=30, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames)[:, None] * 0.05
    phase = rng.uniform(0, 2 * np.pi, n)
    amp = rng.uniform(0.5, 2.0, n)
    return amp * np.sin(t + phase)


def test_identical_rollout_scores_one():
    true = _trajectories()
    assert metrics.rollout_r2(true, true.copy(), every=10) == pytest.approx(1.0)
    assert metrics.rollout_pearson(true, true.copy()) == pytest.approx(1.0)


def test_collapse_rule_gives_zero():
    true = _trajectories()
    collapsed = 0.05 * true  # std(pred) < 0.1 std(true) at every frame, though perfectly correlated
    assert metrics.frame_r2(true[50], collapsed[50]) == 0.0
    assert metrics.rollout_r2(true, collapsed, every=10) == 0.0


def test_blow_up_rule_gives_zero():
    true = _trajectories()
    blown = true.copy()
    blown[30:, 0] = 1e11
    blown[60:, 1] = np.nan
    assert metrics.frame_r2(true[40], blown[40]) == 0.0
    assert metrics.frame_r2(true[70], blown[70]) == 0.0
    # frames 10 and 20 are fine, 30..100 blown: mean = 2/10
    assert metrics.rollout_r2(true, blown, every=10) == pytest.approx(0.2)
    r = metrics.rollout_pearson(true, blown)
    n = true.shape[1]
    assert r == pytest.approx((n - 2) / n)  # the two blown neurons count 0


def test_three_sigma_outlier_is_left_out_of_the_frame_fit():
    rng = np.random.default_rng(1)
    true = rng.normal(size=500)
    pred = 2.0 * true + 1.0
    pred[0] = 1e6  # one runaway neuron (below the blow-up threshold)
    assert metrics.frame_r2(true, pred) == pytest.approx(1.0)


def test_anticorrelated_rollout_keeps_negative_pearson():
    true = _trajectories()
    assert metrics.rollout_pearson(true, -true) == pytest.approx(-1.0)


def test_evaluated_frames_skip_start_state():
    assert metrics.evaluated_frames(101, 10).tolist() == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    with pytest.raises(ValueError, match="rollout_eval_every"):
        metrics.evaluated_frames(10, 0)


def test_trajectory_shapes_checked():
    with pytest.raises(ValueError, match=r"\(frames, N\)"):
        metrics.rollout_r2(np.zeros((10, 3)), np.zeros((10, 4)))


# ------------------------------------------------------------------------ clustering

def _separated_embeddings(n_per_type=25, n_types=4, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.array([[0, 0], [5, 0], [0, 5], [5, 5], [10, 10]], dtype=float)[:n_types]
    types = np.repeat(np.arange(n_types), n_per_type)
    emb = centers[types] + 0.1 * rng.normal(size=(len(types), 2))
    return emb, types


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cluster_accuracy_one_whatever_the_label_order(seed):
    emb, types = _separated_embeddings(seed=seed)
    perm = np.random.default_rng(seed).permutation(4)
    relabelled = perm[types]
    order = np.random.default_rng(seed + 10).permutation(len(types))
    assert metrics.cluster_accuracy(emb, types, 4) == 1.0
    assert metrics.cluster_accuracy(emb[order], relabelled[order], 4) == 1.0


def test_hungarian_matching_is_one_to_one():
    types = np.array([0, 0, 0, 1, 1, 1])
    # both types put in one cluster: a one-to-one matching can credit only one of them
    assert metrics.hungarian_accuracy(np.zeros(6, dtype=int), types) == pytest.approx(0.5)
    assert metrics.hungarian_accuracy(np.array([7, 7, 7, 3, 3, 3]), types) == 1.0
    assert metrics.hungarian_accuracy(np.array([1, 1, 0, 0, 0, 0]), types) == pytest.approx(5 / 6)


def test_untrained_identical_embeddings_score_the_largest_type():
    types = np.repeat(np.arange(4), 10)
    assert metrics.cluster_accuracy(np.ones((40, 2)), types, 4) == pytest.approx(0.25)
    assert math.isnan(metrics.cluster_accuracy(np.full((40, 2), np.nan), types, 4))


# --------------------------------------------------------------------------- outcome

@pytest.mark.parametrize(
    "r2, status, expected",
    [(0.95, "ok", "converged"), (0.9, "ok", "partial"), (0.5, "ok", "partial"), (0.1, "ok", "partial"),
     (0.09, "ok", "failed"), (-0.2, "ok", "failed"), (math.nan, "ok", "failed"), (0.99, "diverged", "failed")],
)
def test_outcome_classes(r2, status, expected):
    outcome, reason = metrics.classify_outcome(r2, status, "loss exceeded 1e4 x first loss")
    assert outcome == expected
    if status != "ok":
        assert reason == "training diverged: loss exceeded 1e4 x first loss"


# ------------------------------------------------------------------ low-rank subspaces

def test_subspace_overlap_is_one_for_the_same_subspace_and_zero_for_orthogonal_ones():
    n, r = 40, 5
    basis = np.linalg.qr(np.random.default_rng(0).standard_normal((n, 2 * r)))[0]
    a, b = basis[:, :r], basis[:, r:]
    assert metrics.subspace_overlap(a, a) == pytest.approx(1.0)
    rotated = a @ np.linalg.qr(np.random.default_rng(1).standard_normal((r, r)))[0]  # another basis, same subspace
    assert metrics.subspace_overlap(a, rotated) == pytest.approx(1.0)
    assert metrics.subspace_overlap(a, b) == pytest.approx(0.0, abs=1e-12)
    half = np.concatenate([a[:, :2], b[:, :3]], axis=1)  # shares 2 of the 5 directions
    assert metrics.subspace_overlap(a, half) == pytest.approx(2 / 5)


def test_W_subspace_r2_on_hand_made_low_rank_W():
    n, r = 60, 4
    rng = np.random.default_rng(2)
    # exactly rank r with a zero diagonal: columns live on the first half of the neurons, rows
    # on the second half (so no W_ii is touched and zeroing the diagonal changes nothing)
    left = np.zeros((n, r))
    right = np.zeros((n, r))
    left[: n // 2] = np.linalg.qr(rng.standard_normal((n // 2, r)))[0]
    right[n // 2:] = np.linalg.qr(rng.standard_normal((n // 2, r)))[0]
    true_W = left @ np.diag([4.0, 3.0, 2.0, 1.0]) @ right.T  # diagonal is 0: rows and columns live apart
    assert np.all(np.diag(true_W) == 0)
    same = metrics.W_subspace_r2(-2.5 * true_W, true_W, r)  # scale and sign do not matter
    assert same == pytest.approx({"W_column_subspace_R2": 1.0, "W_row_subspace_R2": 1.0})
    # the transpose swaps the halves: its columns live where true_W's rows do, and vice versa
    swapped = metrics.W_subspace_r2(true_W.T, true_W, r)
    assert swapped == pytest.approx({"W_column_subspace_R2": 0.0, "W_row_subspace_R2": 0.0}, abs=1e-12)
    # same column subspace, other rows: only the column score stays 1
    other_right = np.zeros((n, r))
    other_right[n // 2:] = np.linalg.qr(rng.standard_normal((n // 2, r)))[0]
    mixed = metrics.W_subspace_r2(left @ other_right.T, true_W, r)
    assert mixed["W_column_subspace_R2"] == pytest.approx(1.0)
    assert mixed["W_row_subspace_R2"] < 0.5
    nan = metrics.W_subspace_r2(np.full((n, n), np.nan), true_W, r)
    assert all(math.isnan(v) for v in nan.values())
    with pytest.raises(ValueError, match="subspace rank = 0"):
        metrics.W_subspace_r2(true_W, true_W, 0)
