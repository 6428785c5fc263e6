"""The analyze stage on a real tiny dataset: scores of known models, files, log format, CLI."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from neuralgraph import analyze
from neuralgraph.analysis_log import parse_analysis_log
from neuralgraph.config import dump_config
from neuralgraph.dataset import load_dataset
from neuralgraph.io import atomic_write_json

TYPE_CENTERS = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])


class TanhMessage(nn.Module):
    """lin_edge of the true model: tanh(u) (ignores any embedding columns)."""

    def forward(self, x):
        return torch.tanh(x[..., :1])


class TrueUpdate(nn.Module):
    """lin_phi of the true model: -c u + s tanh(u), the type decoded from the embedding (nearest centre)."""

    def __init__(self, type_params):
        super().__init__()
        self.register_buffer("s", torch.as_tensor(np.array(type_params[:, 1]), dtype=torch.float32))
        self.register_buffer("c", torch.as_tensor(np.array(type_params[:, 2]), dtype=torch.float32))

    def forward(self, x):
        u, a = x[..., :1], x[..., 1:]
        t = torch.cdist(a.reshape(-1, a.shape[-1]), TYPE_CENTERS[: len(self.s)]).argmin(-1).reshape(a.shape[:-1])
        return -self.c[t][..., None] * u + self.s[t][..., None] * torch.tanh(u)


class HandModel(nn.Module):
    """The model contract of neuralgraph.model holding the true W and the true functions.

    With ``edge_scale`` per neuron (edge_input "u_a"), column j of W is divided by the scale of
    neuron j's message: the dynamics are unchanged, only the raw W differs.
    """

    def __init__(self, W, types, type_params, edge_scale=None, jitter=0.05):
        super().__init__()
        g = float(type_params[0, 0])
        scale = torch.ones(len(types)) if edge_scale is None else torch.as_tensor(edge_scale, dtype=torch.float32)
        rng = torch.Generator().manual_seed(0)
        centers = TYPE_CENTERS[torch.as_tensor(np.array(types))]
        self.a = nn.Parameter(centers + jitter * torch.randn(centers.shape, generator=rng))
        self.W = nn.Parameter(g * torch.as_tensor(np.array(W), dtype=torch.float32) / scale[None, :])
        self.lin_edge = _ScaledByNeuron(scale) if edge_scale is not None else TanhMessage()
        self.lin_phi = TrueUpdate(np.asarray(type_params))

    def dense_W(self):
        return self.W * (1 - torch.eye(self.W.shape[0]))

    def forward(self, u):
        a = self.a.expand(u.shape[0], *self.a.shape)
        phi = self.lin_phi(torch.cat([u[..., None], a], dim=-1))[..., 0]
        msg = self.lin_edge(torch.cat([u[..., None], a], dim=-1))[..., 0]
        return phi + msg @ self.dense_W().T


class _ScaledByNeuron(nn.Module):
    """lin_edge for edge_input "u_a": k_j tanh(u), k_j looked up from the embedding of neuron j."""

    def __init__(self, scale):
        super().__init__()
        self.register_buffer("scale", scale)
        self.model_a = None

    def forward(self, x):
        # the analysis feeds the embeddings of the neurons it probes; find each row's neuron by its embedding
        a = x[..., 1:]
        owner = torch.cdist(a.reshape(-1, a.shape[-1]), self.model_a.detach()).argmin(-1).reshape(a.shape[:-1])
        return self.scale[owner][..., None] * torch.tanh(x[..., :1])


def make_hand_model(dataset, **kw):
    model = HandModel(dataset.W, dataset.types, dataset.type_params, **kw)
    if isinstance(model.lin_edge, _ScaledByNeuron):
        model.lin_edge.model_a = model.a
    return model


@pytest.fixture(scope="module")
def dataset(tiny_dataset):
    return load_dataset(tiny_dataset[1])


def test_true_model_scores_one(tiny_dataset, dataset):
    cfg, data_dir = tiny_dataset
    u_max = analyze.activity_max_abs(data_dir, dataset)
    result = analyze.analyze_model(make_hand_model(dataset), cfg, dataset, u_max, torch.device("cpu"))
    s = result.scores
    assert s["connectivity_R2"] == pytest.approx(1.0, abs=1e-6)
    assert s["connectivity_R2_raw"] == pytest.approx(1.0, abs=1e-6)
    assert s["test_R2"] > 0.99
    assert s["test_pearson"] > 0.99
    assert s["cluster_accuracy"] == 1.0
    assert result.start_frame == cfg.n_train_frames  # the held-out segment
    assert result.pred_traj.shape == (cfg.analysis.rollout_frames + 1, dataset.n_neurons)
    # the true simulator from the held-out start reproduces the recorded frames (noise-free data)
    recorded = np.asarray(dataset.u[result.start_frame: result.start_frame + 11])
    np.testing.assert_allclose(result.true_traj[:11], recorded, rtol=1e-5, atol=1e-5)


def test_per_neuron_message_scale_is_corrected(tiny_dataset, dataset):
    cfg, data_dir = tiny_dataset
    cfg = cfg.model_copy(deep=True)
    cfg.graph_model.edge_input = "u_a"
    scale = np.random.default_rng(3).uniform(0.2, 3.0, dataset.n_neurons)
    model = make_hand_model(dataset, edge_scale=scale, jitter=0.0)
    # jitter 0 makes same-type embeddings equal; give every neuron its own embedding instead
    with torch.no_grad():
        model.a += 1e-3 * torch.arange(dataset.n_neurons, dtype=torch.float32)[:, None]
    u_max = analyze.activity_max_abs(data_dir, dataset)
    s = analyze.analyze_model(model, cfg, dataset, u_max, torch.device("cpu")).scores
    assert s["connectivity_R2"] == pytest.approx(1.0, abs=1e-6)
    assert s["connectivity_R2_raw"] < 0.95
    assert s["test_R2"] > 0.99


def test_shuffled_W_scores_near_zero(tiny_dataset, dataset):
    cfg, data_dir = tiny_dataset
    model = make_hand_model(dataset)
    rng = np.random.default_rng(0)
    off = ~np.eye(dataset.n_neurons, dtype=bool)
    with torch.no_grad():
        w = model.W.numpy()
        w[off] = rng.permutation(w[off])
    u_max = analyze.activity_max_abs(data_dir, dataset)
    s = analyze.analyze_model(model, cfg, dataset, u_max, torch.device("cpu")).scores
    assert s["connectivity_R2"] < 0.05
    assert s["test_R2"] < 0.9


def test_analysis_log_round_trips_numbers(tmp_path):
    log = tmp_path / "analysis.log"
    log.write_text("CONFIG EDITED: Block 1 time_step=4 (reason: test)\n")
    metrics = {"test_R2": -0.4375, "test_pearson": -0.031, "connectivity_R2": 0.123457,
               "connectivity_R2_raw": 3.2e-07, "cluster_accuracy": 1.0, "final_loss": 1.5e-12,
               "training_time_min": 123.5, "status": "ok", "outcome": "partial",
               "outcome_reason": "0.1 <= connectivity_R2 <= 0.9"}
    lines = {"spectral radius": 1.0291, "activity": {"effective rank (90% var)": 26, "effective rank (99% var)": 84}}
    analyze.write_analysis_log(log, lines, metrics)
    parsed = parse_analysis_log(log)
    for key, value in metrics.items():
        assert parsed[key] == (pytest.approx(value, rel=1e-5) if isinstance(value, float) else value), key
    assert parsed["spectral radius"] == pytest.approx(1.0291)
    assert parsed["effective rank (99% var)"] == 84
    text = log.read_text()
    assert text.startswith("CONFIG EDITED")  # another stage's line is kept
    # a second analysis replaces the values, never duplicates keys
    analyze.write_analysis_log(log, lines, {**metrics, "test_R2": math.nan})
    text = log.read_text()
    assert text.count("test_R2:") == 1 and "test_R2: nan" in text
    assert math.isnan(parse_analysis_log(log)["test_R2"])


def _run_folder(tmp_path, cfg, status="ok", reason="", with_training=True):
    run = tmp_path / "iter_003"
    run.mkdir()
    dump_config(cfg, run / "config.yaml")
    if with_training:
        atomic_write_json(run / "training.json", {
            "status": status, "reason": reason, "final_loss": 0.25 if status == "ok" else float("nan"),
            "loss_history": [4.0, 2.0, 1.0, 0.5, 0.25], "training_time_min": 0.5, "iterations": 5,
            "data_augmentation_loop": 3, "device": "cpu"})
    return run


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "neuralgraph", "analyze", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_diverged_run_still_gets_metrics_and_log(tmp_path, tiny_dataset):
    cfg, data_dir = tiny_dataset
    run = _run_folder(tmp_path, cfg, status="diverged", reason="loss exceeded 1e4 x its first value")
    shutil.copy(data_dir / "analysis.log", run / "analysis.log")  # lines from another stage
    proc = _run_cli("--run", run, "--data", data_dir, "--iteration", "003")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["iteration"] == 3
    assert metrics["status"] == "diverged" and metrics["outcome"] == "failed"
    assert metrics["outcome_reason"] == "training diverged: loss exceeded 1e4 x its first value"
    assert metrics["connectivity_R2"] is None and metrics["final_loss"] is None
    assert metrics["config"]["data_augmentation_loop"] == 3
    parsed = parse_analysis_log(run / "analysis.log")
    assert parsed["outcome"] == "failed"
    assert math.isnan(parsed["connectivity_R2"])
    assert parsed["effective rank (99% var)"] == metrics["effective_rank_99"]
    assert (run / "analysis.log").read_text().count("spectral radius:") == 1
    assert (run / "plots" / "loss.png").stat().st_size > 1000


def test_cli_errors_name_the_problem(tmp_path, tiny_dataset):
    cfg, data_dir = tiny_dataset
    run = _run_folder(tmp_path, cfg)
    proc = _run_cli("--run", run, "--data", tmp_path / "nowhere")
    assert proc.returncode == 2 and "missing" in proc.stderr and "nowhere" in proc.stderr
    bad = cfg.model_copy(deep=True)
    bad.simulation.n_neurons = 40
    dump_config(bad, run / "config.yaml")
    proc = _run_cli("--run", run, "--data", data_dir)
    assert proc.returncode == 2
    assert "simulation.n_neurons = 40" in proc.stderr and "24" in proc.stderr
    assert not (run / "metrics.json").exists()


def _save_real_model(run, cfg, dataset, poison=False):
    from neuralgraph.model import build_model, save_trained_model

    torch.manual_seed(0)
    model = build_model(cfg, dataset)
    with torch.no_grad():
        model.W.copy_(torch.as_tensor(np.array(dataset.W)) * 10.0 + 0.01 * torch.randn(model.W.shape))
        if poison:
            model.W[0, 1] = float("nan")
    save_trained_model(model, cfg, run / "model.pt")


@pytest.mark.slow
def test_cli_end_to_end_writes_all_files(tmp_path, tiny_dataset, dataset):
    cfg, data_dir = tiny_dataset
    run = _run_folder(tmp_path, cfg)
    _save_real_model(run, cfg, dataset)
    out = tmp_path / "analysis_out"
    proc = _run_cli("--run", run, "--data", data_dir, "--out", out, "--iteration", 12)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    expected_keys = {"iteration", "status", "outcome", "outcome_reason", "connectivity_R2", "connectivity_R2_raw",
                     "test_R2", "test_pearson", "cluster_accuracy", "final_loss", "training_time_min",
                     "spectral_radius", "effective_rank_90", "effective_rank_99", "config"}
    assert set(metrics) == expected_keys
    assert metrics["iteration"] == 12 and metrics["status"] == "ok"
    # W was set to 10 x the true W plus small noise: recovered, whatever the MLPs do
    assert metrics["connectivity_R2"] > 0.95 and metrics["outcome"] == "converged"
    assert metrics["final_loss"] == 0.25 and metrics["training_time_min"] == 0.5
    stats = json.loads((data_dir / "stats.json").read_text())
    assert metrics["spectral_radius"] == pytest.approx(stats["spectral_radius"])
    assert metrics["effective_rank_99"] == stats["effective_rank_99"]
    assert set(metrics["config"]) == set(analyze.CONFIG_KEYS)
    assert metrics["config"]["time_step"] == cfg.training.time_step
    assert metrics["config"]["learning_rate_W_start"] == cfg.training.learning_rate_W_start
    for key in ("test_R2", "test_pearson", "cluster_accuracy"):
        assert isinstance(metrics[key], float), key
    parsed = parse_analysis_log(out / "analysis.log")
    for key in ("connectivity_R2", "test_R2", "test_pearson", "cluster_accuracy", "final_loss"):
        assert parsed[key] == pytest.approx(metrics[key], rel=1e-5, abs=1e-12), key
    assert parsed["effective rank (99% var)"] == stats["effective_rank_99"]
    names = {"connectivity.png", "rollout.png", "embeddings.png", "lin_edge.png", "lin_phi.png", "loss.png"}
    assert {p.name for p in (out / "plots").iterdir()} == names
    assert all((out / "plots" / n).stat().st_size > 5000 for n in names)
    assert not (run / "metrics.json").exists()  # --out respected


def test_nan_weights_model_is_failed_with_reason(tmp_path, tiny_dataset, dataset):
    cfg, data_dir = tiny_dataset
    run = _run_folder(tmp_path, cfg)
    _save_real_model(run, cfg, dataset, poison=True)
    assert analyze.main(["--run", str(run), "--data", str(data_dir)]) == 0  # in-process: same entry point
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["outcome"] == "failed"
    assert "non-finite weights in W" in metrics["outcome_reason"]
    assert metrics["connectivity_R2"] is None and metrics["test_R2"] is None
    assert metrics["final_loss"] == 0.25


def test_crashed_run_without_training_record_is_failed(tmp_path, tiny_dataset):
    cfg, data_dir = tiny_dataset
    run = _run_folder(tmp_path, cfg, with_training=False)
    assert analyze.main(["--run", str(run), "--data", str(data_dir)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "crashed" and metrics["outcome"] == "failed"
    assert "training.json not found" in metrics["outcome_reason"]
    assert parse_analysis_log(run / "analysis.log")["status"] == "crashed"
    assert not (run / "plots").exists() or not any((run / "plots").iterdir())


def test_model_breaking_the_contract_is_a_failed_run_not_a_crash(tiny_dataset, dataset, tmp_path):
    cfg, data_dir = tiny_dataset

    class NoDenseW(HandModel):
        def dense_W(self):
            raise RuntimeError("edited loop removed W")

    broken = NoDenseW(dataset.W, dataset.types, dataset.type_params)
    analysis, problem = analyze.score_if_usable(broken, "", cfg, dataset, 10.0, "cpu", tmp_path)
    assert analysis is None
    assert problem == "model evaluation failed (RuntimeError: edited loop removed W)"


def test_subspace_diagnostic_only_for_a_low_rank_true_W(tmp_path):
    from neuralgraph.config import parse_config
    from tiny_configs import tiny_config_dict

    record = analyze.TrainingRecord(status="ok", final_loss=1.0, training_time_min=0.1)
    scores = {**analyze.NAN_SCORES, "connectivity_R2": 0.5, "W_column_subspace_R2": 0.9, "W_row_subspace_R2": 0.4}
    low = parse_config(tiny_config_dict(**{"simulation.connectivity_type": "low_rank",
                                           "simulation.connectivity_rank": 3}))
    metrics = analyze.assemble_metrics(1, record, scores, {}, low, "")
    assert (metrics["W_column_subspace_R2"], metrics["W_row_subspace_R2"], metrics["W_subspace_rank"]) == (0.9, 0.4, 3)
    log = analyze.write_analysis_log(tmp_path / "analysis.log", {"spectral radius": 1.0, "activity": {}}, metrics)
    logged = parse_analysis_log(log)
    assert logged["W_column_subspace_R2"] == pytest.approx(0.9) and logged["W_row_subspace_R2"] == pytest.approx(0.4)
    failed = analyze.assemble_metrics(1, record, dict(analyze.NAN_SCORES), {}, low, "no model")
    assert math.isnan(failed["W_column_subspace_R2"])  # a low-rank run without a model: the keys, as NaN
    lorentz = analyze.assemble_metrics(1, record, scores, {}, parse_config(tiny_config_dict()), "")
    assert not {"W_column_subspace_R2", "W_row_subspace_R2", "W_subspace_rank"} & set(lorentz)
