"""The simulator: dataset layout, determinism, Euler consistency, connectivity scale, CLI."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tiny_configs import REPO, tiny_config_dict
from neuralgraph.config import INITIAL_STATE_CANDIDATES, ConfigError, parse_config
from neuralgraph.dataset import load_dataset
from neuralgraph.simulate import (
    LORENTZ_RAW_STD,
    euler_rollout,
    lorentz_exponent,
    make_connectivity,
    pde_n2_rhs,
    simulate,
)

DATASET_FILES = ("u.npy", "du.npy", "W.npy", "types.npy", "type_params.npy", "metadata.json",
                 "stats.json", "analysis.log", "activity.png", "connectivity.png")


def _cfg(**overrides):
    return parse_config(tiny_config_dict(**overrides), source="test")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------- dataset folder


def test_dataset_folder_has_every_file_with_documented_dtypes_and_shapes(tiny_dataset):
    cfg, data_dir = tiny_dataset
    for name in DATASET_FILES:
        assert (data_dir / name).is_file(), name
    ds = load_dataset(data_dir)
    n, frames = cfg.simulation.n_neurons, cfg.simulation.n_frames
    assert isinstance(ds.u, np.memmap) and ds.u.dtype == np.float32 and ds.u.shape == (frames, n)
    assert ds.du.dtype == np.float32 and ds.du.shape == (frames, n)
    assert ds.W.dtype == np.float32 and ds.W.shape == (n, n)
    assert ds.types.dtype == np.int64 and ds.types.shape == (n,)
    assert ds.type_params.dtype == np.float32 and ds.type_params.shape == (4, 3)
    assert (ds.n_frames, ds.n_neurons, ds.n_types) == (frames, n, 4)
    assert ds.delta_t == pytest.approx(0.01)
    # contiguous type blocks of N/K neurons, reference (g, s, c) table
    assert ds.types.tolist() == sorted(ds.types.tolist()) and np.bincount(ds.types).tolist() == [6] * 4
    np.testing.assert_array_equal(ds.type_params, [[10, 1, 1], [10, 2, 1], [10, 1, 2], [10, 2, 2]])
    assert np.all(np.isfinite(ds.u)) and np.abs(ds.u).max() > 0.5  # alive, not decayed to zero


def test_metadata_records_config_hash_seed_and_versions(tiny_dataset):
    cfg, data_dir = tiny_dataset
    meta = json.loads((data_dir / "metadata.json").read_text())
    assert meta["config"] == cfg.to_dict()
    assert meta["simulation_hash"] == cfg.simulation_hash()
    assert (meta["seed"], meta["n_frames"], meta["n_neurons"], meta["delta_t"]) == (7, 1500, 24, 0.01)
    assert set(meta["versions"]) >= {"python", "numpy", "torch", "neuralgraph"}
    assert meta["created_at"].endswith("+00:00") and meta["wall_seconds"] > 0
    assert set(meta["phase_seconds"]) == {"network", "dynamics", "flush", "statistics", "pictures"}


def test_load_dataset_without_mmap_gives_plain_arrays(tiny_dataset):
    _, data_dir = tiny_dataset
    ds = load_dataset(data_dir, mmap=False)
    assert not isinstance(ds.u, np.memmap)
    np.testing.assert_array_equal(ds.u, load_dataset(data_dir).u)


def test_load_dataset_names_the_missing_file(tmp_path):
    (tmp_path / "u.npy").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"missing du\.npy, W\.npy.*metadata\.json"):
        load_dataset(tmp_path)


# ----------------------------------------------------------------- dynamics


def test_noise_free_frames_obey_euler_to_float32_precision(tiny_dataset):
    cfg, data_dir = tiny_dataset
    ds = load_dataset(data_dir)
    u, du, dt = np.asarray(ds.u), np.asarray(ds.du), np.float32(cfg.simulation.delta_t)
    predicted = u[:-1] + dt * du[:-1]
    np.testing.assert_allclose(predicted, u[1:], rtol=1e-6, atol=1e-6 * np.abs(u).max())


def test_saved_du_is_the_pde_n2_right_hand_side(tiny_dataset):
    _, data_dir = tiny_dataset
    ds = load_dataset(data_dir)
    frames = np.asarray(ds.u[:50])
    rhs = pde_n2_rhs(frames, ds.W, ds.types, ds.type_params)
    assert rhs.dtype == np.float32 and rhs.shape == frames.shape
    np.testing.assert_allclose(rhs, ds.du[:50], rtol=1e-5, atol=1e-4)


def test_pde_n2_rhs_matches_the_formula_for_one_neuron():
    W = np.array([[0.0, 0.5], [-0.25, 0.0]])
    types = np.array([0, 1])
    params = np.array([[10.0, 1.0, 1.0], [3.0, 2.0, 0.5]])
    u = np.array([0.3, -1.2])
    expected = [
        -1.0 * 0.3 + 1.0 * np.tanh(0.3) + 10.0 * 0.5 * np.tanh(-1.2),
        -0.5 * -1.2 + 2.0 * np.tanh(-1.2) + 3.0 * -0.25 * np.tanh(0.3),
    ]
    np.testing.assert_allclose(pde_n2_rhs(u, W, types, params), expected, rtol=1e-12)
    batch = pde_n2_rhs(np.stack([u, u, u]), W, types, params)  # (..., N) input
    np.testing.assert_allclose(batch, np.tile(expected, (3, 1)), rtol=1e-12)


def test_euler_rollout_reproduces_the_saved_frames(tiny_dataset):
    _, data_dir = tiny_dataset
    ds = load_dataset(data_dir)
    start, steps = 400, 100
    rollout = euler_rollout(np.asarray(ds.u[start]), ds.W, ds.types, ds.type_params, ds.delta_t, steps)
    assert rollout.shape == (steps + 1, ds.n_neurons)
    np.testing.assert_array_equal(rollout[0], ds.u[start])
    np.testing.assert_allclose(rollout, ds.u[start : start + steps + 1], rtol=1e-4, atol=1e-3)


# ----------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes_and_another_seed_different_data(tmp_path, tiny_dataset):
    cfg, first = tiny_dataset
    again = simulate(cfg, tmp_path / "again", progress=False, pictures=False)
    for name in ("u.npy", "du.npy", "W.npy", "types.npy", "type_params.npy", "stats.json"):
        assert _sha(first / name) == _sha(again / name), name
    other = simulate(_cfg(**{"simulation.seed": 8}), tmp_path / "other", progress=False, pictures=False)
    assert not np.array_equal(np.load(first / "W.npy"), np.load(other / "W.npy"))
    assert not np.allclose(np.load(first / "u.npy")[0], np.load(other / "u.npy")[0])


def test_noise_changes_activity_but_not_the_wiring(tmp_path, tiny_dataset):
    _, clean_dir = tiny_dataset
    clean = load_dataset(clean_dir)
    noisy = load_dataset(simulate(_cfg(**{"simulation.noise_model_level": 0.05}), tmp_path / "process",
                                  progress=False, pictures=False))
    measured = load_dataset(simulate(_cfg(**{"simulation.measurement_noise_level": 0.5}), tmp_path / "measured",
                                     progress=False, pictures=False))
    np.testing.assert_array_equal(noisy.W, clean.W)
    np.testing.assert_array_equal(measured.W, clean.W)
    # process noise: u[k+1] - (u[k] + dt du[k]) is the injected noise, std 0.05
    residual = np.asarray(noisy.u[1:]) - (noisy.u[:-1] + np.float32(0.01) * noisy.du[:-1])
    assert residual.std() == pytest.approx(0.05, rel=0.1)
    # measurement noise: the clean trajectory plus N(0, 0.5^2) on the saved u, du untouched
    np.testing.assert_array_equal(measured.du, clean.du)
    assert (np.asarray(measured.u) - clean.u).std() == pytest.approx(0.5, rel=0.05)


def test_diverging_dynamics_stop_with_a_clear_error_and_no_completion_marker(tmp_path, tiny_dataset):
    _, good_dir = tiny_dataset
    out = tmp_path / "data"
    out.mkdir()
    (out / "metadata.json").write_text((good_dir / "metadata.json").read_text())  # an older dataset
    # Euler with delta_t = 1 and c = 5 multiplies u by -4 per step: overflow within ~70 steps
    unstable = _cfg(**{"simulation.delta_t": 1.0, "simulation.neuron_type_params": [[1.0, 0.0, 5.0]] * 4})
    with pytest.raises(FloatingPointError, match=r"simulation diverged at step \d+ .*reduce simulation.delta_t"):
        simulate(unstable, out, progress=False, pictures=False)
    assert not (out / "metadata.json").exists()  # the folder is not mistaken for a finished dataset
    assert not (out / "u.npy").exists() and not list(out.glob(".u.npy.*"))  # no partial arrays


# ----------------------------------------------------------------- connectivity


def _connectivity(n=400, **sim_overrides):
    overrides = {"simulation.n_neurons": n, "simulation.n_neuron_types": 4, **sim_overrides}
    cfg = _cfg(**overrides)
    return make_connectivity(cfg.simulation, np.random.default_rng(3))


def test_lorentz_weights_zero_diagonal_bounded_and_documented_scale():
    n = 400
    W = _connectivity(n)
    assert W.dtype == np.float32
    assert np.all(np.diag(W) == 0)
    bound = 25 / n**0.7
    assert lorentz_exponent(n) == 0.7
    assert np.abs(W).max() <= bound * (1 + 1e-6)
    assert np.abs(W).max() > 0.8 * bound  # heavy tail reaches the cut-off
    offdiag = W[~np.eye(n, dtype=bool)].astype(np.float64)
    assert offdiag.std() == pytest.approx(LORENTZ_RAW_STD / n**0.7, rel=0.1)
    assert LORENTZ_RAW_STD == pytest.approx(3.866, abs=1e-3)
    assert np.median(np.abs(offdiag)) == pytest.approx(1 / n**0.7, rel=0.1)  # |Cauchy| median is 1
    zero_fraction = np.mean(offdiag == 0)
    assert zero_fraction == pytest.approx(1 - 2 / np.pi * np.arctan(25), abs=0.01)


def test_gaussian_and_low_rank_weights_scale_and_rank():
    n = 200
    gaussian = _connectivity(n, **{"simulation.connectivity_type": "Gaussian"})
    assert gaussian[~np.eye(n, dtype=bool)].std() == pytest.approx(1 / np.sqrt(n), rel=0.05)
    low = _connectivity(n, **{"simulation.connectivity_type": "low_rank", "simulation.connectivity_rank": 5})
    assert np.all(np.diag(low) == 0)
    singular = np.linalg.svd(low.astype(np.float64), compute_uv=False)
    # rank 5 plus the zeroed diagonal (a small full-rank perturbation)
    assert singular[4] > 5 * singular[5]


def test_shuffled_types_are_a_seeded_permutation_of_equal_blocks():
    from neuralgraph.simulate import make_types

    sim = _cfg(**{"simulation.n_neurons": 40, "simulation.shuffle_types": True}).simulation
    first = make_types(sim, np.random.default_rng(0))
    assert np.bincount(first).tolist() == [10] * 4 and first.tolist() != sorted(first.tolist())
    np.testing.assert_array_equal(first, make_types(sim, np.random.default_rng(0)))


def test_filling_factor_and_dale_law():
    n = 200
    sparse = _connectivity(n, **{"simulation.connectivity_filling_factor": 0.1,
                                 "simulation.connectivity_type": "Gaussian"})
    assert np.mean(sparse[~np.eye(n, dtype=bool)] != 0) == pytest.approx(0.1, abs=0.01)
    dale = _connectivity(n, **{"simulation.Dale_law": True, "simulation.Dale_law_factor": 0.75,
                               "simulation.Dale_law_excitatory": "first_columns"})
    assert np.all(dale[:, :150] >= 0) and np.all(dale[:, 150:] <= 0)
    assert np.all(np.diag(dale) == 0)


def _dale(n=200, seed=42, rule="random", factor=0.75, **overrides):
    cfg = _cfg(**{"simulation.n_neurons": n, "simulation.n_neuron_types": 4, "simulation.seed": seed,
                  "simulation.Dale_law": True, "simulation.Dale_law_factor": factor,
                  "simulation.Dale_law_excitatory": rule, **overrides})
    from neuralgraph.simulate import _rngs

    rngs = _rngs(seed)
    return make_connectivity(cfg.simulation, rngs["connectivity"], rngs["dale_excitatory"])


def _column_signs(W):
    """+1 for an excitatory column, -1 for an inhibitory one (each column has one sign)."""
    positive, negative = (W >= 0).all(axis=0), (W <= 0).all(axis=0)
    assert np.all(positive | negative)  # Dale's law: no column mixes signs
    return np.where(positive & ~negative, 1, np.where(negative & ~positive, -1, 0))


def test_dale_law_random_excitatory_columns_are_seeded_and_independent_of_type():
    n = 200
    W = _dale(n)
    signs = _column_signs(W)
    excitatory = np.flatnonzero(signs > 0)
    assert len(excitatory) == 150  # round(N * Dale_law_factor), as configured
    assert excitatory.tolist() != list(range(150))  # not the first block
    types = np.repeat(np.arange(4), n // 4)
    per_type = [np.mean(signs[types == t] > 0) for t in range(4)]
    assert all(0.5 < share < 0.95 for share in per_type), per_type  # every type mixes E and I
    np.testing.assert_array_equal(_column_signs(_dale(n)), signs)  # reproducible for a seed
    assert _column_signs(_dale(n, seed=43)).tolist() != signs.tolist()  # another seed, another draw
    # the weights' magnitudes are the same numbers under both rules: only the signs move
    np.testing.assert_array_equal(np.abs(W), np.abs(_dale(n, rule="first_columns")))


def test_dale_law_first_columns_reproduces_the_reference_rule_exactly():
    from neuralgraph.simulate import _rngs, lorentz_weights

    n, seed = 100, 42
    W = _dale(n, seed=seed, rule="first_columns", factor=0.5)
    # the rule as it stood before the option existed: |W|, columns j >= N * factor negated
    expected = np.abs(lorentz_weights(n, _rngs(seed)["connectivity"]))
    expected[:, 50:] *= -1.0
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_array_equal(W, expected.astype(np.float32))


def test_dale_law_excitatory_rule_is_validated_and_hashed_only_under_dale_law():
    from neuralgraph.config import ConfigError

    with pytest.raises(ConfigError, match=r"simulation.Dale_law_excitatory = 'types'.*random.*first_columns"):
        _cfg(**{"simulation.Dale_law_excitatory": "types"})
    plain = _cfg()
    assert plain.simulation_hash() == _cfg(**{"simulation.Dale_law_excitatory": "first_columns"}).simulation_hash()
    dale = _cfg(**{"simulation.Dale_law": True})
    assert dale.simulation_hash() != _cfg(**{"simulation.Dale_law": True,
                                             "simulation.Dale_law_excitatory": "first_columns"}).simulation_hash()


# ----------------------------------------------------------------- the reference's own W draw


def _legacy_numpy_W(seed: int, n: int, rank: int | None = None) -> np.ndarray:
    """The reference generator's draw spelled as it does: np.random.seed, then numpy's first calls."""
    np.random.seed(seed)
    if rank is None:
        W = np.random.randn(n, n) * np.sqrt(1 / n)
    else:
        U = np.random.randn(n, rank)
        V = np.random.randn(rank, n)
        W = U @ V / np.sqrt(rank * n)
    W = W.astype(np.float32)
    np.fill_diagonal(W, 0.0)
    return W


def _reference_draw(n=100, seed=42, **overrides):
    cfg = _cfg(**{"simulation.n_neurons": n, "simulation.n_neuron_types": 1, "simulation.seed": seed,
                  "simulation.neuron_type_params": [[7.0, 0.0, 1.0]], "simulation.W_draw": "reference", **overrides})
    return make_connectivity(cfg.simulation, np.random.default_rng(0))  # the stream passed in is not used


def test_W_draw_reference_is_the_reference_generators_matrix_for_its_seed():
    gaussian = _reference_draw(**{"simulation.connectivity_type": "Gaussian"})
    np.testing.assert_array_equal(gaussian, _legacy_numpy_W(42, 100))
    # its published spectral radii for seed 42 (the landscape's default seed; docs/reference.md):
    # the gain-1 run's 1.065 and the low-rank case's ~0.95
    assert np.max(np.abs(np.linalg.eigvals(gaussian))) == pytest.approx(1.065, abs=5e-4)
    low_rank = _reference_draw(**{"simulation.connectivity_type": "low_rank", "simulation.connectivity_rank": 20})
    np.testing.assert_array_equal(low_rank, _legacy_numpy_W(42, 100, rank=20))
    assert np.max(np.abs(np.linalg.eigvals(low_rank))) == pytest.approx(0.95, abs=5e-3)
    # another seed, another matrix; Dale's law applies on top as for our draw (first columns)
    assert not np.array_equal(_reference_draw(seed=137, **{"simulation.connectivity_type": "Gaussian"}), gaussian)
    dale = _reference_draw(**{"simulation.connectivity_type": "Gaussian", "simulation.Dale_law": True,
                              "simulation.Dale_law_excitatory": "first_columns"})
    expected = np.abs(_legacy_numpy_W(42, 100))
    expected[:, 50:] *= -1.0
    np.testing.assert_array_equal(dale, expected)


def test_W_draw_reference_refuses_what_it_cannot_reproduce_and_keeps_old_hashes():
    from neuralgraph.config import ConfigError

    with pytest.raises(ConfigError, match=r"simulation.*W_draw = 'reference'.*'Lorentz'.*Gaussian or low_rank"):
        _cfg(**{"simulation.W_draw": "reference"})  # the tiny config is Lorentz
    with pytest.raises(ConfigError, match=r"connectivity_filling_factor = 0.5.*filling_factor 1 only"):
        _cfg(**{"simulation.W_draw": "reference", "simulation.connectivity_type": "Gaussian",
                "simulation.connectivity_filling_factor": 0.5})
    with pytest.raises(ConfigError, match=r"simulation.W_draw.*'ours'.*'reference'"):
        _cfg(**{"simulation.W_draw": "numpy"})
    gaussian = {"simulation.connectivity_type": "Gaussian"}
    assert _cfg(**gaussian).simulation_hash() == _cfg(**gaussian, **{"simulation.W_draw": "ours"}).simulation_hash()
    assert _cfg(**gaussian).simulation_hash() != _cfg(**gaussian, **{"simulation.W_draw": "reference"}).simulation_hash()


# ----------------------------------------------------------------- CLI


def _write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neuralgraph", "simulate", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_cli_writes_dataset_and_shows_progress_on_stderr(tmp_path):
    config = _write_yaml(tmp_path / "ok.yaml", tiny_config_dict(**{"simulation.n_frames": 800,
                                                                    "training.held_out_frames": 300}))
    result = _run_cli("--config", str(config), "--out", str(tmp_path / "data"), "--no-pictures")
    assert result.returncode == 0, result.stderr
    assert "1.00k/1.00k" in result.stderr  # 200 burn-in + 800 frames
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d, [\d.]+k?frame/s\]", result.stderr)  # elapsed<ETA, rate
    assert load_dataset(tmp_path / "data").u.shape == (800, 24)


def test_cli_refuses_bad_config_nonzero_with_message_and_writes_nothing(tmp_path):
    bad = _write_yaml(tmp_path / "bad.yaml", tiny_config_dict(**{"training.time_step": 3}))
    out = tmp_path / "data"
    result = _run_cli("--config", str(bad), "--out", str(out))
    assert result.returncode == 2
    assert "bad.yaml" in result.stderr and "training.time_step = 3" in result.stderr
    assert "1, 4, 16, 32, 64" in result.stderr
    assert not out.exists()


def test_shipped_demo_config_keeps_its_activity_alive_to_the_end(tmp_path, capsys):
    from neuralgraph.config import load_config
    from neuralgraph.stats import tail_activity_ratio

    cfg = load_config(REPO / "config" / "experiments" / "demo.yaml")
    data = load_dataset(simulate(cfg, tmp_path / "demo", progress=False, pictures=False))
    held_out = np.asarray(data.u[-cfg.training.held_out_frames:])
    assert held_out.std(axis=0).mean() > 1.0  # the test segment is not a fixed point
    assert json.loads((tmp_path / "demo" / "stats.json").read_text())["tail_activity_ratio"] > 0.5
    assert "activity decayed" not in capsys.readouterr().err
    # seed 42 at this size decays to a fixed point: the statistic and the warning catch it
    dead = simulate(parse_config({**cfg.to_dict(), "simulation": {**cfg.to_dict()["simulation"], "seed": 42}}),
                    tmp_path / "dead", progress=False, pictures=False)
    assert tail_activity_ratio(load_dataset(dead).u) < 0.05
    assert "activity decayed" in capsys.readouterr().err


def test_cli_refuses_an_output_path_that_is_a_file(tmp_path):
    config = _write_yaml(tmp_path / "ok.yaml", tiny_config_dict())
    target = tmp_path / "taken"
    target.write_text("keep me")
    result = _run_cli("--config", str(config), "--out", str(target), "--no-progress")
    assert result.returncode == 1 and "taken: --out must be a folder (it is a file)" in result.stderr
    assert target.read_text() == "keep me"


def test_cli_simulates_the_reference_W_for_its_seed(tmp_path):
    """From the command line, as a user reaches it: the dataset's W.npy is the reference's seed-42 draw."""
    data = tiny_config_dict(**{"simulation.connectivity_type": "Gaussian", "simulation.W_draw": "reference",
                               "simulation.seed": 42, "simulation.n_frames": 800, "training.held_out_frames": 300})
    result = _run_cli("--config", str(_write_yaml(tmp_path / "ref.yaml", data)), "--out", str(tmp_path / "data"),
                      "--no-pictures", "--no-progress")
    assert result.returncode == 0, result.stderr
    n = data["simulation"]["n_neurons"]
    np.testing.assert_array_equal(np.load(tmp_path / "data" / "W.npy"), _legacy_numpy_W(42, n))


def test_initial_state_seed_moves_the_trajectory_alone_and_keeps_old_hashes(tmp_path):
    """The same W along another trajectory: only u(0) changes, and the default is today's dataset."""
    base = {"simulation.connectivity_type": "Gaussian", "simulation.W_draw": "reference", "simulation.n_frames": 800,
            "training.held_out_frames": 300}
    default = simulate(_cfg(**base), tmp_path / "default", progress=False, pictures=False)
    seed = _cfg(**base).simulation.seed
    same = simulate(_cfg(**base, **{"simulation.initial_state_seed": seed}), tmp_path / "same", progress=False,
                    pictures=False)  # the seed's own stream: the default's dataset
    other = simulate(_cfg(**base, **{"simulation.initial_state_seed": seed + 1}), tmp_path / "other", progress=False,
                     pictures=False)
    for name in ("W.npy", "types.npy", "u.npy"):
        assert _sha(default / name) == _sha(same / name), name
    np.testing.assert_array_equal(np.load(default / "W.npy"), np.load(other / "W.npy"))
    assert not np.array_equal(np.load(default / "u.npy"), np.load(other / "u.npy"))
    assert _cfg(**base).simulation_hash() != _cfg(**base, **{"simulation.initial_state_seed": 9}).simulation_hash()
    assert _cfg(**base).simulation_hash() == _cfg(**base, **{"simulation.initial_state_seed": None}).simulation_hash()



#: a small recording whose u(0) streams differ in effective rank (seconds for all of them)
_TRAJECTORIES = {"simulation.connectivity_type": "Gaussian", "simulation.W_draw": "reference",
                 "simulation.n_frames": 800, "training.held_out_frames": 300}


def _rank_99(folder: Path) -> int:
    return json.loads((folder / "stats.json").read_text())["effective_rank_99"]


def test_initial_state_rank_keeps_the_first_stream_in_range_as_if_it_were_named(tmp_path, capfd):
    """The rule passes over the own stream and every earlier one out of range, and records the
    same dataset as naming the stream it keeps (u, du and W bit for bit); metadata.json lists
    each rank it saw, and the log says which u(0) it kept."""
    ranks = {None: _rank_99(simulate(_cfg(**_TRAJECTORIES), tmp_path / "own", progress=False, pictures=False))}
    for stream in range(INITIAL_STATE_CANDIDATES):
        named = simulate(_cfg(**_TRAJECTORIES, **{"simulation.initial_state_seed": stream}), tmp_path / f"stream_{stream}",
                         progress=False, pictures=False)
        rank = _rank_99(named)
        ranks[stream] = rank
        if rank not in list(ranks.values())[:-1]:
            break
    else:
        pytest.fail(f"every u(0) stream has a rank seen before: {ranks}")
    capfd.readouterr()
    ruled = simulate(_cfg(**_TRAJECTORIES, **{"simulation.initial_state_rank": [rank, rank]}), tmp_path / "ruled",
                     progress=False, pictures=False)
    for name in ("u.npy", "du.npy", "W.npy"):
        assert _sha(ruled / name) == _sha(named / name), name
    assert json.loads((ruled / "metadata.json").read_text())["initial_state"] == {
        "rank_range": [rank, rank], "initial_state_seed": stream, "in_range": True,
        "tried": [{"initial_state_seed": k, "effective_rank_99": r} for k, r in ranks.items()]}
    assert f"u(0) from initial_state_seed {stream} (in range; effective rank 99% by stream: own: {ranks[None]}" in capfd.readouterr().err


def test_initial_state_rank_out_of_every_streams_reach_keeps_the_own_stream_and_says_so(tmp_path, capfd, monkeypatch):
    """None in range: the own stream's recording, kept aside while the others are tried (each
    stream simulated once, not the own one twice), nothing left beside the dataset."""
    import neuralgraph.simulate as simulate_module
    n = _cfg(**_TRAJECTORIES).simulation.n_neurons
    own = simulate(_cfg(**_TRAJECTORIES), tmp_path / "own", progress=False, pictures=False)
    recordings = []
    write_activity = simulate_module._write_activity
    monkeypatch.setattr(simulate_module, "_write_activity",
                        lambda *args, **kwargs: recordings.append(1) or write_activity(*args, **kwargs))
    ruled = simulate(_cfg(**_TRAJECTORIES, **{"simulation.initial_state_rank": [n, n]}), tmp_path / "ruled",
                     progress=False, pictures=False)
    assert len(recordings) == 1 + INITIAL_STATE_CANDIDATES
    for name in ("u.npy", "du.npy"):
        assert _sha(ruled / name) == _sha(own / name), name
    assert not [p.name for p in ruled.iterdir() if p.name.startswith(".")]
    choice = json.loads((ruled / "metadata.json").read_text())["initial_state"]
    assert choice["initial_state_seed"] is None and choice["in_range"] is False
    assert [t["initial_state_seed"] for t in choice["tried"]] == [None, *range(INITIAL_STATE_CANDIDATES)]
    assert all(t["effective_rank_99"] < n for t in choice["tried"])
    assert "u(0) from simulation.seed's own (none in range, so the own stream" in capfd.readouterr().err
    # without the rule, metadata.json has no initial_state entry and the hash is today's
    assert "initial_state" not in json.loads((own / "metadata.json").read_text())
    assert _cfg(**_TRAJECTORIES).simulation_hash() != _cfg(**_TRAJECTORIES, **{"simulation.initial_state_rank": [n, n]}).simulation_hash()


def test_the_number_of_streams_the_rank_rule_may_try_is_part_of_the_dataset_hash(monkeypatch):
    """Which u(0) the rule keeps depends on how many streams it may try: another count is another
    dataset, never a cached one."""
    import neuralgraph.config as config_module
    ruled = _cfg(**_TRAJECTORIES, **{"simulation.initial_state_rank": [3, 4]})
    plain = _cfg(**_TRAJECTORIES)
    before, plain_before = ruled.simulation_hash(), plain.simulation_hash()
    monkeypatch.setattr(config_module, "INITIAL_STATE_CANDIDATES", INITIAL_STATE_CANDIDATES + 1)
    assert ruled.simulation_hash() != before
    assert plain.simulation_hash() == plain_before  # without the rule the count decides nothing


@pytest.mark.parametrize("rule, other, message", [
    ([5, 3], {}, r"simulation\.initial_state_rank = \[5, 3\]: must be \[low, high\] with 1 <= low <= high <= n_neurons"),
    ([0, 3], {}, r"simulation\.initial_state_rank = \[0, 3\]: must be \[low, high\]"),
    ([3, 4], {"simulation.initial_state_seed": 2},
     r"initial_state_rank = \[3, 4\] and initial_state_seed = 2: set one of them"),
    ([3], {}, r"simulation\.initial_state_rank"),
])
def test_a_bad_initial_state_rank_is_refused_naming_the_field(rule, other, message):
    with pytest.raises(ConfigError, match=message):
        _cfg(**_TRAJECTORIES, **other, **{"simulation.initial_state_rank": rule})
