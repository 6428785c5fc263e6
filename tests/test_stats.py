"""Data statistics: spectral radius, effective rank, activity summary, analysis.log / stats.json."""
from __future__ import annotations

import json

import numpy as np
import pytest

from neuralgraph.analysis_log import parse_analysis_log, update_analysis_log
from neuralgraph.dataset import load_dataset
from neuralgraph.stats import (
    activity_summary,
    dataset_statistics,
    effective_ranks,
    ranks_from_energies,
    spectral_radius,
    write_statistics,
)


def rank(X, threshold, **kwargs):
    """One threshold of effective_ranks."""
    return effective_ranks(X, (threshold,), **kwargs)[0]


def _matrix_with_spectrum(singular_values, n_frames=2000, n_neurons=60, seed=0) -> np.ndarray:
    """X = U diag(S) V^T with orthonormal U (frames) and V (neurons): known singular values."""
    rng = np.random.default_rng(seed)
    k = len(singular_values)
    left, _ = np.linalg.qr(rng.standard_normal((n_frames, k)))
    right, _ = np.linalg.qr(rng.standard_normal((n_neurons, k)))
    return (left * np.asarray(singular_values)) @ right.T


def test_effective_rank_of_a_matrix_of_known_rank_is_recovered():
    X = _matrix_with_spectrum(np.ones(20))  # 20 equal components, rank 20
    assert rank(X, 0.99) == 20  # 19/20 = 0.95 < 0.99
    assert rank(X, 0.90) == 18  # 18/20 = 0.90 reaches 0.90
    assert rank(X, 1.0) == 20


def test_effective_rank_follows_a_designed_spectrum():
    # energies S^2 = 50, 30, 10, 5, 4, 1 (sum 100): 90% at k=3, 99% at k=5
    X = _matrix_with_spectrum(np.sqrt([50, 30, 10, 5, 4, 1]))
    assert effective_ranks(X, (0.5, 0.8, 0.9, 0.95, 0.99)) == [1, 2, 3, 4, 5]


def test_effective_rank_is_not_mean_centred():
    # zero-mean rank-5 activity plus a constant offset: the offset is one more component of the
    # raw (non-centred) matrix; mean-centring would have removed it
    rng = np.random.default_rng(4)
    centred = rng.standard_normal((1000, 5)) @ rng.standard_normal((5, 40))
    centred -= centred.mean(axis=0)
    assert rank(centred, 0.999999) == 5
    assert rank(centred + 1.0, 0.999999) == 6


def test_frame_subsample_keeps_the_rank_of_a_long_recording():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((30_000, 7)) @ rng.standard_normal((7, 50))  # rank 7, many frames
    assert rank(X, 0.999999, max_frames=500) == 7
    # a memory-mapped float32 array gives the same answer
    assert effective_ranks(X.astype(np.float32), (0.9, 0.99)) == effective_ranks(X, (0.9, 0.99))


def test_effective_rank_refuses_bad_input():
    with pytest.raises(ValueError, match=r"threshold = 1.5: must be in \(0, 1\]"):
        rank(np.ones((10, 3)), 1.5)
    with pytest.raises(ValueError, match=r"non-empty 2-D \(frames x N\) array, got shape \(10,\)"):
        rank(np.ones(10), 0.9)
    assert ranks_from_energies(np.zeros(4), (0.9,)) == [1]  # silent network: defined, not a crash


def test_spectral_radius_of_known_matrices():
    assert spectral_radius(np.diag([0.5, -2.0, 1.0])) == pytest.approx(2.0)
    rotation = np.array([[0.0, -1.5], [1.5, 0.0]])  # eigenvalues +-1.5i
    assert spectral_radius(rotation) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="square matrix"):
        spectral_radius(np.ones((2, 3)))


def test_activity_summary_in_chunks_matches_numpy(tmp_path):
    rng = np.random.default_rng(2)
    u = (3.0 * rng.standard_normal((20_000, 7)) + 1.0).astype(np.float32)  # > one chunk
    np.save(tmp_path / "u.npy", u)
    summary = activity_summary(np.load(tmp_path / "u.npy", mmap_mode="r"))
    assert summary["shape"] == [20_000, 7]
    assert summary["min"] == pytest.approx(u.min()) and summary["max"] == pytest.approx(u.max())
    assert summary["mean"] == pytest.approx(u.astype(np.float64).mean(), rel=1e-9)
    assert summary["std"] == pytest.approx(u.astype(np.float64).std(), rel=1e-9)


def test_dataset_statistics_and_their_files(tiny_dataset):
    cfg, data_dir = tiny_dataset
    ds = load_dataset(data_dir)
    saved = json.loads((data_dir / "stats.json").read_text())
    fresh = dataset_statistics(ds.u, ds.W)
    assert saved == json.loads(json.dumps(fresh))
    assert saved["spectral_radius"] == pytest.approx(np.abs(np.linalg.eigvals(ds.W.astype(float))).max())
    assert 1 <= saved["effective_rank_90"] <= saved["effective_rank_99"] <= cfg.simulation.n_neurons
    assert saved["effective_rank_99_top100"] <= saved["effective_rank_99"]
    assert saved["activity"]["shape"] == [1500, 24]
    assert saved["activity"]["min"] == pytest.approx(float(ds.u.min()))

    log_text = (data_dir / "analysis.log").read_text()
    lines = log_text.splitlines()
    assert lines[0] == f"spectral radius: {round(saved['spectral_radius'], 4):.6g}"
    assert lines[1] == "--- activity ---"
    assert f"  effective rank (90% var): {saved['effective_rank_90']}" in lines
    assert f"  effective rank (99% var): {saved['effective_rank_99']}" in lines
    assert "  shape: (1500, 24)" in lines
    parsed = parse_analysis_log(data_dir / "analysis.log")
    assert parsed["spectral radius"] == pytest.approx(saved["spectral_radius"], abs=1e-4)
    assert parsed["activity/effective rank (99% var)"] == saved["effective_rank_99"]
    assert parsed["activity/range"].startswith("[") and parsed["activity/range"].endswith("]")


def test_rewriting_statistics_keeps_lines_of_other_stages(tmp_path, tiny_dataset):
    _, data_dir = tiny_dataset
    stats = json.loads((data_dir / "stats.json").read_text())
    log = tmp_path / "analysis.log"
    update_analysis_log(log, {"connectivity_R2": 0.97})
    write_statistics(stats, tmp_path)
    write_statistics(stats, tmp_path)  # idempotent: no duplicated lines
    text = log.read_text()
    assert "connectivity_R2: 0.97" in text
    assert text.count("spectral radius:") == 1 and text.count("effective rank (99% var)") == 1


def test_single_threaded_blas_limits_blas_threads_inside_only():
    from threadpoolctl import threadpool_info

    from neuralgraph.device import single_threaded_blas

    def blas_threads():
        return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}

    before = blas_threads()
    with single_threaded_blas():
        assert blas_threads() == {1}
    assert blas_threads() == before
