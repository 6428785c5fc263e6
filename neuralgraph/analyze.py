"""Analyze stage: score a trained run and write what the agent and the user read.

``python -m neuralgraph analyze --run RUN --data DATA [--config C] [--out DIR] [--iteration I]``

Reads the run folder (``model.pt``, ``training.json``, ``config.yaml``) and
the dataset folder, computes the metrics of docs/architecture.md "metrics.json" (definitions in
:mod:`neuralgraph.metrics`) and writes into ``--out`` (default: the run folder):

* ``metrics.json``: the numbers of docs/architecture.md (NaN as null), outcome class and the
  config values that produced them;
* ``analysis.log``: the dataset's ``spectral radius:`` line and ``--- activity ---`` block,
  then one ``key: value`` line per metric (merged: lines other stages wrote are kept);
  for a low-rank true W also ``W_column_subspace_R2`` / ``W_row_subspace_R2`` (mean squared
  cosine of the principal angles between the learned and true W's leading r-dimensional
  column / row subspaces, r = simulation.connectivity_rank; :func:`neuralgraph.metrics.W_subspace_r2`);
* ``plots/``: connectivity.png, rollout.png, embeddings.png, lin_edge.png, lin_phi.png,
  loss.png.

A run without a usable model (training diverged or crashed, model.pt missing or holding
non-finite weights) still gets metrics.json and analysis.log, with null metrics and outcome
``failed`` plus the reason, so the exploration loop goes on. The numbers are written before
any figure is drawn: a plotting problem never loses them.

The test rollout starts at frame ``cfg.n_train_frames``, the first frame of the held-out
segment that training never samples, and runs the learned model and the true simulator
(``neuralgraph.simulate.euler_rollout``) from that same state without noise.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from tqdm import tqdm

from neuralgraph import metrics as M
from neuralgraph.analysis_log import ANALYSIS_LOG_FILE, parse_analysis_log, update_analysis_log
from neuralgraph.config import CONFIG_FILE, ConfigError, ExperimentConfig, load_config, parse_config
from neuralgraph.dataset import STATS_FILE, check_dataset_matches, load_dataset
from neuralgraph.device import DEVICE_CHOICES, choose_device, torch_threads
from neuralgraph.io import atomic_write_json, read_json
from neuralgraph.run_files import (CONNECTIVITY_PLOT, EMBEDDINGS_PLOT, LIN_EDGE_PLOT, LIN_PHI_PLOT, LOSS_PLOT,
                                   METRICS_FILE, MODEL_FILE, PLOTS_DIR, ROLLOUT_PLOT, TRAINING_RECORD_FILE)
from neuralgraph.simulate import euler_rollout

log = logging.getLogger("neuralgraph.analyze")

#: Training hyper-parameters copied into metrics.json["config"] (what the agent varies).
CONFIG_KEYS = (
    "time_step", "learning_rate_W_start", "learning_rate_start", "learning_rate_embedding_start",
    "coeff_W_L1", "noise_recurrent_level", "batch_size", "data_augmentation_loop", "n_epochs",
    "recurrent_training", "neural_ODE_training",
)
#: Metric lines of analysis.log, in the seed's order (after the dataset lines).
LOG_KEYS = (
    "test_R2", "test_pearson", "connectivity_R2", "connectivity_R2_raw", "cluster_accuracy",
    "final_loss", "training_time_min", "status", "outcome", "outcome_reason",
)
#: The low-rank diagnostic (metrics.W_subspace_r2): in metrics.json and analysis.log only when
#: the true W is low-rank (simulation.connectivity_type low_rank), with r = connectivity_rank.
SUBSPACE_KEYS = ("W_column_subspace_R2", "W_row_subspace_R2")
#: Points of the u grid on which the learned functions are evaluated (plateau and plots).
PLATEAU_POINTS = 32
CURVE_POINTS = 200
#: Neurons whose learned lin_phi / lin_edge curves are drawn, per type.
CURVES_PER_TYPE = 8
TRACES_PER_TYPE = 2
#: How often the learned rollout is checked for a blow-up (a check forces a GPU sync).
FINITE_CHECK_EVERY = 50


# --------------------------------------------------------------------------- inputs


@dataclass
class TrainingRecord:
    """What analyze needs from training.json; a missing file reads as a crashed training."""

    status: str = "crashed"
    reason: str = ""
    final_loss: float = math.nan
    training_time_min: float = math.nan
    loss_history: list = field(default_factory=list)
    data_augmentation_loop: Optional[int] = None


def read_training_record(run_dir: Path) -> TrainingRecord:
    path = run_dir / TRAINING_RECORD_FILE
    if not path.is_file():
        return TrainingRecord(status="crashed", reason=f"{path} not found")
    raw = read_json(path)
    return TrainingRecord(
        status=str(raw.get("status") or "crashed"),
        reason=str(raw.get("reason") or ""),
        final_loss=_as_float(raw.get("final_loss")),
        training_time_min=_as_float(raw.get("training_time_min")),
        loss_history=[_as_float(v) for v in raw.get("loss_history") or []],
        data_augmentation_loop=raw.get("data_augmentation_loop"),
    )


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def load_model(run_dir: Path) -> tuple[Any, Any, str]:
    """(model, stored config, "") or (None, None, why no usable model is there)."""
    path = run_dir / MODEL_FILE
    if not path.is_file():
        return None, None, f"{path} not found"
    from neuralgraph.model import load_trained_model  # lazy: imports torch (see above)

    try:
        model, cfg = load_trained_model(path, map_location="cpu")
    except Exception as exc:  # a truncated or incompatible file: score the run as failed, say why
        return None, None, f"{path} could not be loaded ({type(exc).__name__}: {exc})"
    return model, cfg, ""


def non_finite_parameters(model) -> list[str]:
    """Names of the model's parameters holding NaN or inf (a diverged training)."""
    import torch  # lazy: torch costs seconds to import, the metrics-only paths never need it

    return [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]


def resolve_config(config_path: Optional[Path], run_dir: Path, model_cfg: Any, dataset) -> ExperimentConfig:
    """The config to score with: --config, else RUN/config.yaml, else the one stored in model.pt,
    else the dataset's. The analysis settings (rollout length, plateau range) come from it."""
    if config_path is not None:
        return load_config(config_path)
    if (run_dir / CONFIG_FILE).is_file():
        return load_config(run_dir / CONFIG_FILE)
    if isinstance(model_cfg, ExperimentConfig):
        return model_cfg
    if isinstance(model_cfg, dict):
        return parse_config(model_cfg, source=f"{run_dir / MODEL_FILE} (stored config)")
    stored = dataset.metadata.get("config")
    if isinstance(stored, dict):
        return parse_config(stored, source=f"{dataset.path}/metadata.json (config)")
    raise ConfigError(f"{run_dir}: no {CONFIG_FILE} and none stored in {MODEL_FILE}; pass --config")


def dataset_statistics(data_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(numbers for metrics.json, lines to copy into analysis.log) from stats.json / analysis.log.

    The log lines are copied as the simulate stage wrote them (``spectral radius`` plus the
    whole ``--- activity ---`` block); stats.json fills in what the log lacks.
    """
    stats = read_json(data_dir / STATS_FILE) if (data_dir / STATS_FILE).is_file() else {}
    logged = parse_analysis_log(data_dir / ANALYSIS_LOG_FILE) if (data_dir / ANALYSIS_LOG_FILE).is_file() else {}
    numbers = {
        "spectral_radius": _as_float(stats.get("spectral_radius", logged.get("spectral radius"))),
        "effective_rank_90": stats.get("effective_rank_90", logged.get("activity/effective rank (90% var)")),
        "effective_rank_99": stats.get("effective_rank_99", logged.get("activity/effective rank (99% var)")),
    }
    activity = {key.split("/", 1)[1]: v for key, v in logged.items() if key.startswith("activity/")}
    activity.setdefault("effective rank (90% var)", numbers["effective_rank_90"])
    activity.setdefault("effective rank (99% var)", numbers["effective_rank_99"])
    lines = {"spectral radius": logged.get("spectral radius", numbers["spectral_radius"]),
             "activity": {k: v for k, v in activity.items() if v is not None}}
    return numbers, lines


def activity_max_abs(data_dir: Path, dataset) -> float:
    """max |u| over the recording (x_norm of the plateau range): from stats.json, else computed."""
    stats_path = data_dir / STATS_FILE
    if stats_path.is_file():
        act = read_json(stats_path).get("activity") or {}
        if "min" in act and "max" in act:
            return max(abs(float(act["min"])), abs(float(act["max"])))
    return float(max(np.abs(np.asarray(dataset.u[k:k + 10000])).max() for k in range(0, dataset.n_frames, 10000)))


# ---------------------------------------------------------------------- model probes


def learned_embeddings(model) -> np.ndarray:
    return model.a.detach().float().cpu().numpy()


def learned_W(model) -> np.ndarray:
    import torch  # lazy: torch costs seconds to import, the metrics-only paths never need it

    with torch.no_grad():
        return model.dense_W().detach().double().cpu().numpy()


def edge_function_values(model, edge_input: str, u_grid: np.ndarray, neurons: Optional[np.ndarray] = None) -> np.ndarray:
    """lin_edge on ``u_grid``: shape (1, G) for edge_input "u", (len(neurons), G) for "u_a"
    (each neuron with its own embedding)."""
    import torch  # lazy: torch costs seconds to import, the metrics-only paths never need it

    param = next(model.parameters())
    u = torch.as_tensor(u_grid, dtype=param.dtype, device=param.device)
    with torch.no_grad():
        if edge_input == "u":
            return model.lin_edge(u[:, None]).reshape(1, -1).double().cpu().numpy()
        return _per_neuron_curves(model.lin_edge, model.a, u, neurons)


def phi_function_values(model, u_grid: np.ndarray, neurons: np.ndarray) -> np.ndarray:
    """lin_phi(u, a_i) on ``u_grid`` for each neuron in ``neurons``: (len(neurons), G)."""
    import torch  # lazy: torch costs seconds to import, the metrics-only paths never need it

    param = next(model.parameters())
    u = torch.as_tensor(u_grid, dtype=param.dtype, device=param.device)
    with torch.no_grad():
        return _per_neuron_curves(model.lin_phi, model.a, u, neurons)


def _per_neuron_curves(mlp, embeddings, u, neurons: Optional[np.ndarray]) -> np.ndarray:
    """mlp([u, a_i]) for every grid value u and neuron i: one batched call, (n, G)."""
    import torch  # lazy: torch costs seconds to import, the metrics-only paths never need it

    a = embeddings if neurons is None else embeddings[torch.as_tensor(neurons, device=embeddings.device)]
    n, g = a.shape[0], u.shape[0]
    inputs = torch.cat([u[None, :, None].expand(n, g, 1), a[:, None, :].expand(n, g, a.shape[1])], dim=-1)
    return mlp(inputs).reshape(n, g).double().cpu().numpy()


def message_plateau(model, edge_input: str, u_max: float, plateau_range: list[float]) -> float | np.ndarray:
    """Mean of lin_edge over u in plateau_range * max|u|: one number ("u") or one per neuron ("u_a")."""
    lo, hi = plateau_range
    grid = np.linspace(lo * u_max, hi * u_max, PLATEAU_POINTS)
    values = edge_function_values(model, edge_input, grid)
    return float(values.mean()) if edge_input == "u" else values.mean(axis=1)


def rollout_learned(model, u0: np.ndarray, n_steps: int, delta_t: float, device) -> np.ndarray:
    """Noise-free Euler rollout of the learned field: (n_steps + 1, N), row 0 = ``u0``.

    Stops at the first blow-up (non-finite state) and fills the rest with NaN: the metrics
    score those frames 0 and the remaining steps would only cost time.
    """
    if device.type == "cpu":
        with torch_threads(1):
            return _rollout_steps(model, u0, n_steps, delta_t, device)
    return _rollout_steps(model, u0, n_steps, delta_t, device)


def _rollout_steps(model, u0: np.ndarray, n_steps: int, delta_t: float, device) -> np.ndarray:
    import torch  # lazy: torch costs seconds to import, the metrics-only paths never need it

    dtype = next(model.parameters()).dtype
    states = torch.full((n_steps + 1, u0.shape[0]), float("nan"), dtype=dtype, device=device)
    u = torch.as_tensor(np.asarray(u0), dtype=dtype, device=device)[None, :]
    states[0] = u[0]
    with torch.no_grad(), tqdm(total=n_steps, desc="rollout", unit="frame", mininterval=5.0,
                               file=sys.stderr, disable=None) as bar:
        for k in range(1, n_steps + 1):
            u = u + delta_t * model(u)
            states[k] = u[0]
            if k % FINITE_CHECK_EVERY == 0:
                bar.update(FINITE_CHECK_EVERY)
                if not bool(torch.isfinite(u).all()):
                    log.warning("learned rollout blew up before frame %d; later frames score 0", k)
                    break
    return states.double().cpu().numpy()


def rollout_true(dataset, u0: np.ndarray, n_steps: int) -> np.ndarray:
    return euler_rollout(u0, dataset.W, dataset.types, dataset.type_params, dataset.delta_t, n_steps).astype(np.float64)


def training_trajectory_test_r2(run_dir: str | Path, data_dir: str | Path) -> float:
    """test_R2 as the reference computes it: the rollout starts at frame 0 of the TRAINING data
    (ours, test_R2 in metrics.json, starts in the held-out segment). NaN without a usable model."""
    import torch  # lazy: see _rollout_steps

    model, cfg, _problem = load_model(Path(run_dir))
    if model is None or non_finite_parameters(model):
        return math.nan
    dataset = load_dataset(data_dir, mmap=True)
    u0 = np.array(dataset.u[0])
    n_steps = min(cfg.analysis.rollout_frames, dataset.n_frames - 1)
    pred = rollout_learned(model.eval(), u0, n_steps, dataset.delta_t, torch.device("cpu"))
    return M.rollout_r2(rollout_true(dataset, u0, n_steps), pred, every=cfg.analysis.rollout_eval_every)


# ------------------------------------------------------------------------- scoring


@dataclass
class ModelAnalysis:
    """Numbers and arrays computed from a usable model (arrays feed the figures)."""

    scores: dict[str, float]
    W_corrected: np.ndarray
    embeddings: np.ndarray
    plateau: Any
    true_traj: np.ndarray
    pred_traj: np.ndarray
    start_frame: int


NAN_SCORES = {"connectivity_R2": math.nan, "connectivity_R2_raw": math.nan, "test_R2": math.nan,
              "test_pearson": math.nan, "cluster_accuracy": math.nan}


def rollout_start_frame(cfg: ExperimentConfig, dataset) -> int:
    """First frame of the held-out segment (clamped to the recording)."""
    start = min(cfg.n_train_frames, dataset.n_frames - 1)
    if cfg.training.held_out_frames == 0:
        log.warning("training.held_out_frames = 0: the rollout starts at the last frame, which training may have seen")
    return start


def subspace_rank(cfg: ExperimentConfig) -> Optional[int]:
    """r of the subspace diagnostic: the true W's rank when it is low-rank, else None (not computed)."""
    sim = cfg.simulation
    return int(sim.connectivity_rank) if sim.connectivity_type == "low_rank" else None


def analyze_model(model, cfg: ExperimentConfig, dataset, u_max: float, device=None) -> ModelAnalysis:
    """Every model-based score of one run (connectivity, rollout, clustering).

    ``model`` follows the contract of neuralgraph.model: ``a``, ``lin_edge``, ``lin_phi``,
    ``forward(u)`` for u of shape (B, N), ``dense_W()``.
    """
    device = device or choose_device("auto")
    model = model.to(device).eval()
    t0 = time.perf_counter()
    true_W = np.asarray(dataset.W, dtype=np.float64)
    W = learned_W(model)
    plateau = message_plateau(model, cfg.graph_model.edge_input, u_max, cfg.analysis.plateau_u_range)
    W_corrected = M.plateau_corrected_W(W, plateau)
    embeddings = learned_embeddings(model)
    scores = {
        "connectivity_R2": M.connectivity_r2(W_corrected, true_W),
        "connectivity_R2_raw": M.connectivity_r2(W, true_W),
        "cluster_accuracy": M.cluster_accuracy(embeddings, dataset.types, dataset.n_types),
    }
    rank = subspace_rank(cfg)
    if rank is not None:
        scores.update(M.W_subspace_r2(W_corrected, true_W, rank))
        log.info("rank-%d subspaces of W: column R2 %.4f, row R2 %.4f", rank, scores["W_column_subspace_R2"],
                 scores["W_row_subspace_R2"])
    log.info("connectivity R2 %.4f (raw %.4f), cluster accuracy %.3f in %.1f s", scores["connectivity_R2"],
             scores["connectivity_R2_raw"], scores["cluster_accuracy"], time.perf_counter() - t0)
    start = rollout_start_frame(cfg, dataset)
    n_steps = cfg.analysis.rollout_frames
    u0 = np.array(dataset.u[start])
    t0 = time.perf_counter()
    pred = rollout_learned(model, u0, n_steps, dataset.delta_t, device)
    true = rollout_true(dataset, u0, n_steps)
    scores["test_R2"] = M.rollout_r2(true, pred, every=cfg.analysis.rollout_eval_every)
    scores["test_pearson"] = M.rollout_pearson(true, pred)
    log.info("rollout of %d frames from frame %d: test_R2 %.4f, test_pearson %.4f in %.1f s", n_steps, start,
             scores["test_R2"], scores["test_pearson"], time.perf_counter() - t0)
    return ModelAnalysis(scores, W_corrected, embeddings, plateau, true, pred, start)


def assemble_metrics(iteration: Optional[int], record: TrainingRecord, scores: dict[str, float],
                     dataset_numbers: dict[str, Any], cfg: ExperimentConfig, model_problem: str) -> dict[str, Any]:
    """metrics.json as docs/architecture.md shows it (NaN stays NaN here; written as null)."""
    if model_problem and record.status == "ok":
        outcome, reason = "failed", f"no usable model: {model_problem}"
    else:
        outcome, reason = M.classify_outcome(scores["connectivity_R2"], record.status, record.reason)
    config = {key: getattr(cfg.training, key) for key in CONFIG_KEYS}
    if record.data_augmentation_loop is not None:  # the value training actually used (may be auto-chosen)
        config["data_augmentation_loop"] = int(record.data_augmentation_loop)
    subspaces = {}
    if subspace_rank(cfg) is not None:
        subspaces = {key: scores.get(key, math.nan) for key in SUBSPACE_KEYS}
        subspaces["W_subspace_rank"] = subspace_rank(cfg)
    return {
        "iteration": iteration, "status": record.status, "outcome": outcome, "outcome_reason": reason,
        "connectivity_R2": scores["connectivity_R2"], "connectivity_R2_raw": scores["connectivity_R2_raw"],
        "test_R2": scores["test_R2"], "test_pearson": scores["test_pearson"],
        "cluster_accuracy": scores["cluster_accuracy"], **subspaces, "final_loss": record.final_loss,
        "training_time_min": record.training_time_min, **dataset_numbers, "config": config,
    }


# --------------------------------------------------------------------------- outputs


def write_analysis_log(path: Path, dataset_lines: dict[str, Any], metrics: dict[str, Any]) -> Path:
    """Merge the dataset lines and one ``key: value`` per metric into ``path`` (seed format)."""
    update_analysis_log(path, {"spectral radius": dataset_lines["spectral radius"]})
    if dataset_lines.get("activity"):
        update_analysis_log(path, dataset_lines["activity"], section="activity")
    keys = LOG_KEYS + tuple(key for key in SUBSPACE_KEYS if key in metrics)
    return update_analysis_log(path, {key: metrics[key] for key in keys})


def draw_figures(plots_dir: Path, record: TrainingRecord, analysis: Optional[ModelAnalysis], model, cfg,
                 dataset, u_max: float) -> list[Path]:
    """Every figure that the available inputs allow; a failing figure is reported, not fatal."""
    from neuralgraph import plots  # lazy: matplotlib costs a second; only the figure step needs it

    jobs = []
    if record.loss_history:
        jobs.append((LOSS_PLOT, lambda p: plots.plot_loss_curve(record.loss_history, p, record.status)))
    if analysis is not None:
        jobs += _model_figures(analysis, model, cfg, dataset, u_max)
    written = []
    for name, draw in jobs:
        try:
            written.append(draw(plots_dir / name))
        except Exception as exc:  # the metrics are already on disk; say loudly which picture is missing
            log.error("could not draw %s: %s: %s", name, type(exc).__name__, exc)
    return written


def _model_figures(analysis: ModelAnalysis, model, cfg, dataset, u_max: float) -> list:
    from neuralgraph import plots  # lazy: matplotlib costs a second; only the figure step needs it

    s = analysis.scores
    types = np.asarray(dataset.types)
    traced = plots.pick_neurons_per_type(types, TRACES_PER_TYPE)
    curved = plots.pick_neurons_per_type(types, CURVES_PER_TYPE)
    grid = curve_grid(u_max)
    edge_input = cfg.graph_model.edge_input
    edge = edge_function_values(model, edge_input, grid, curved)
    edge_types = [None] if edge_input == "u" else list(types[curved])
    edge_scale = _scale_onto(edge, np.tanh(grid))
    phi = phi_function_values(model, grid, curved)
    return [
        (CONNECTIVITY_PLOT, lambda p: plots.plot_connectivity_scatter(
            dataset.W, analysis.W_corrected, s["connectivity_R2"], s["connectivity_R2_raw"], p)),
        (ROLLOUT_PLOT, lambda p: plots.plot_rollout_traces(
            analysis.true_traj, analysis.pred_traj, types, traced, dataset.delta_t, analysis.start_frame,
            s["test_R2"], s["test_pearson"], p)),
        (EMBEDDINGS_PLOT, lambda p: plots.plot_embeddings(analysis.embeddings, types, s["cluster_accuracy"], p)),
        (LIN_EDGE_PLOT, lambda p: plots.plot_message_function(grid, edge, edge_types, edge_scale, p)),
        (LIN_PHI_PLOT, lambda p: plots.plot_update_function(grid, phi, types[curved], dataset.type_params, p)),
    ]


def curve_grid(u_max: float) -> np.ndarray:
    """u values for the function figures: the whole activity range plus a dense |u| <= 5 part (the zoom panel)."""
    from neuralgraph.plots import FUNCTION_ZOOM_U  # lazy: matplotlib (see draw_figures)

    zoom = min(FUNCTION_ZOOM_U, u_max)
    return np.unique(np.concatenate([np.linspace(-u_max, u_max, CURVE_POINTS), np.linspace(-zoom, zoom, CURVE_POINTS)]))


def _scale_onto(curves: np.ndarray, target: np.ndarray) -> float:
    """Least-squares k with curves ~ k * target (the message scale W absorbed the inverse of)."""
    k = float((curves @ target).sum() / (len(curves) * (target @ target)))
    return k if np.isfinite(k) and abs(k) > 1e-12 else 1.0


# ------------------------------------------------------------------------------ run


def score_if_usable(model, problem: str, cfg: ExperimentConfig, dataset, u_max: float, device: Optional[str],
                    run_dir: Path) -> tuple[Optional[ModelAnalysis], str]:
    """(analysis, "") for a usable model, else (None, why): a failed evaluation is a failed run, not a lost one."""
    if model is None:
        log.warning("%s: no usable model (%s); metrics are null, outcome failed", run_dir, problem)
        return None, problem
    try:
        return analyze_model(model, cfg, dataset, u_max, choose_device(device or cfg.training.device, strict=False)), ""
    except Exception as exc:  # e.g. an edited training loop saved a model breaking the contract
        log.exception("%s: evaluating the model failed", run_dir)
        return None, f"model evaluation failed ({type(exc).__name__}: {exc})"


def analyze_run(run_dir: str | Path, data_dir: str | Path, config_path: Optional[str | Path] = None,
                out_dir: Optional[str | Path] = None, device: Optional[str] = None,
                timings: Optional[dict[str, float]] = None, iteration: Optional[int] = None) -> dict[str, Any]:
    """Score one run folder against its dataset; write metrics.json, analysis.log, plots/. Returns the metrics.

    ``iteration`` is recorded in metrics.json as given (None for a run outside an exploration):
    the run folder's place in a search is the workflow's knowledge, not analyze's.
    ``timings``, when given, receives the seconds spent per phase (load, metrics, write, figures).
    """
    timings = {} if timings is None else timings
    clock = time.perf_counter()

    run_dir, data_dir = Path(run_dir), Path(data_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: run folder not found")
    t_start = time.perf_counter()
    dataset = load_dataset(data_dir, mmap=True)
    record = read_training_record(run_dir)
    model, model_cfg, problem = load_model(run_dir)
    cfg = resolve_config(Path(config_path) if config_path else None, run_dir, model_cfg, dataset)
    check_dataset_matches(dataset, cfg, label=f"--data {data_dir}")
    if model is not None and non_finite_parameters(model):
        problem, model = f"non-finite weights in {', '.join(non_finite_parameters(model))}", None
    dataset_numbers, dataset_lines = dataset_statistics(data_dir)
    u_max = activity_max_abs(data_dir, dataset)
    timings["load"], clock = time.perf_counter() - clock, time.perf_counter()
    analysis, problem = score_if_usable(model, problem, cfg, dataset, u_max, device, run_dir)
    scores = analysis.scores if analysis is not None else dict(NAN_SCORES)
    model = model if analysis is not None else None
    timings["metrics"], clock = time.perf_counter() - clock, time.perf_counter()
    result = assemble_metrics(iteration, record, scores, dataset_numbers, cfg, problem)
    atomic_write_json(out_dir / METRICS_FILE, result)
    write_analysis_log(out_dir / ANALYSIS_LOG_FILE, dataset_lines, result)
    timings["write"], clock = time.perf_counter() - clock, time.perf_counter()
    log.info("%s: outcome %s (%s); metrics written to %s", run_dir, result["outcome"], result["outcome_reason"], out_dir)
    figures = draw_figures(out_dir / PLOTS_DIR, record, analysis, model, cfg, dataset, u_max)
    timings["figures"] = time.perf_counter() - clock
    log.info("%d figures in %s (%.1f s); analysis took %.1f s", len(figures), out_dir / PLOTS_DIR, timings["figures"],
             time.perf_counter() - t_start)
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m neuralgraph analyze", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="run folder (model.pt, training.json, config.yaml)")
    p.add_argument("--data", required=True, help="dataset folder the run was trained on")
    p.add_argument("--config", default=None, help="experiment config (default: RUN/config.yaml)")
    p.add_argument("--out", default=None, help="output folder (default: the run folder)")
    p.add_argument("--iteration", type=int, default=None,
                   help="the run's iteration number, recorded in metrics.json (default: none)")
    p.add_argument("--device", choices=DEVICE_CHOICES, default=None,
                   help="where to evaluate the model (default: training.device of the config; auto = CUDA when present)")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s analyze %(levelname)s %(message)s", stream=sys.stderr)
    try:
        result = analyze_run(args.run, args.data, args.config, args.out, args.device, iteration=args.iteration)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"analyze: {exc}", file=sys.stderr)
        return 2
    print(f"{args.run}: {result['outcome']} (connectivity_R2 = {result['connectivity_R2']}, "
          f"test_R2 = {result['test_R2']})")
    return 0
