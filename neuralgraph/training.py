"""The train stage's engine: data, epochs, checkpoints, resume, divergence, time budget, CLI.

    python -m neuralgraph train --config C --data DATA --out RUN [--loop FILE] [--max-steps N] [--force]

WHAT one optimizer step does lives in the editable module :mod:`neuralgraph.train_loop`
(loaded from ``--loop FILE``, default the packaged one, under a unique module name so every
iteration of an exploration runs its own copy). This file owns everything that must stay
correct whatever the agent writes there:

- only frames [0, n_train_frames) reach the loop (the held-out test segment never does);
- exactly ``n_epochs`` epochs of floor(floor(n_frames * data_augmentation_loop / batch_size)
  * 0.2) steps (n_frames = simulation.n_frames, the reference formula);
- at each epoch end, the options that express the reference's trainer: the embedding collapse
  (``embedding_collapse_every``, :mod:`neuralgraph.embedding_collapse`) and the optimizer rebuild
  (``reset_optimizer_each_epoch``);
- an atomic checkpoint every ``checkpoint_every_min`` and at each epoch end (model,
  optimizer, scheduler, every RNG, counters, loss history); the same command after a kill
  or SIGTERM (SLURM preemption) resumes from it;
- a NaN/inf or exploding loss ends the run as ``status: diverged`` (a result: exit 0, all
  outputs written); genuine errors exit non-zero with a one-line message;
- ``training_time_target_min``: measure the step rate, choose data_augmentation_loop;
- progress lines (step, loss, rate, ETA, current connectivity R^2) on stderr.

Run folder outputs: ``model.pt``, ``checkpoint.pt``, ``training.json`` (written last: its
presence with status ok/diverged next to model.pt means "done"; rerunning is then a no-op
unless ``--force``).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import hashlib
import importlib.util
import logging
import math
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

import numpy as np
import torch

from neuralgraph import PACKAGED_LOOP
from neuralgraph.config import ConfigError, ExperimentConfig, load_config, stable_hash
from neuralgraph.cuda_graph import GraphedStep, make_capturable, wants_cuda_graph
from neuralgraph.dataset import DatasetMismatchError, check_dataset_matches, load_dataset
from neuralgraph.device import DeviceUnavailableError, choose_device, limit_torch_threads
from neuralgraph.embedding_collapse import collapse_due, collapse_embedding, messages_frozen, set_epoch_trainability
from neuralgraph.io import atomic_torch_save, atomic_write_json, file_sha256, open_nofollow
from neuralgraph.metrics import connectivity_r2
from neuralgraph.model import SignalPropagation, build_model, save_trained_model
from neuralgraph.run_files import (CHECKPOINT_FILE, EXIT_BAD_INPUT, EXIT_BAD_LOOP, EXIT_OUT_OF_MEMORY,
                                   EXIT_RUNTIME_ERROR, EXIT_TERMINATED, HEARTBEAT_FILE, MODEL_FILE, TRAINING_RECORD_FILE,
                                   finished_record)
from neuralgraph.step_views import config_view

log = logging.getLogger("neuralgraph.training")
#: When this training process started (before the dataset is loaded): training.json's started_at,
#: with finished_at the interval the job ran, e.g. to see which trainings of a round ran side by side.
PROCESS_STARTED_AT = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")

REQUIRED_LOOP_FUNCTIONS = ("training_mode", "build_optimizer", "build_scheduler", "sample_batch_starts", "train_step")
LOSS_HISTORY_POINTS = 1000
FINAL_LOSS_WINDOW = 100
#: fields that change how a run is logged, not what it computes: a changed value keeps the checkpoint
NON_RESULT_FIELDS = ("checkpoint_every_min", "log_every_s")

#: How often the heartbeat (run_files.HEARTBEAT_FILE) is rewritten.
HEARTBEAT_EVERY_S = 5.0

_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)  # top-level name since torch 2.5


class TrainingInputError(RuntimeError):
    """Bad input (dataset, loop file, device): the message is shown to the user as is."""


class LoopFileError(RuntimeError):
    """The loop file cannot be imported or lacks a function (exit 4: the loop's fault, not the data's)."""


class TrainingTerminated(RuntimeError):
    """SIGTERM/SIGINT received: a checkpoint was saved, rerun the same command to resume."""


# ----------------------------------------------------------------------------- data classes
@dataclass(frozen=True)
class TrainingData:
    """The training frames on the training device (the loop's ``data``; frozen: the loop reads it)."""

    u: torch.Tensor
    du: torch.Tensor
    delta_t: float
    n_frames: int
    u_scale: float
    #: the reference's activity scale, round(1.5 std(u)) over the training frames
    #: (:func:`reference_x_norm`; its edge-difference shift is x_norm / 150)
    x_norm: float = 0.0


@dataclass(frozen=True)
class StepContext:
    """What the loop's train_step knows about where it is (the loop's ``ctx``; frozen, and its
    ``cfg`` is the read-only view of :func:`neuralgraph.step_views.config_view`)."""

    cfg: Any
    epoch: int
    step: int
    step_in_epoch: int
    iterations_per_epoch: int
    n_epochs: int
    mode: str
    horizon: int
    scheduler: Any
    device: torch.device


@dataclass
class RunState:
    """Counters and history of a run; saved in every checkpoint."""

    data_augmentation_loop: int
    iterations_per_epoch: int
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    #: Sum over the optimizer steps run of each step's horizon (unrolled frames): the training's
    #: compute in steps x horizon, exact when warm-up epochs are single-step (the study's cost axis).
    horizon_steps: int = 0
    losses: list[float] = field(default_factory=list)
    first_loss: Optional[float] = None
    elapsed_s: float = 0.0
    dal_chosen: bool = False
    status: str = "running"
    reason: str = ""
    #: 0-based epochs after which the embedding was collapsed (training.embedding_collapse_every)
    embedding_collapse_epochs: list[int] = field(default_factory=list)


# ----------------------------------------------------------------------------- small helpers
def iterations_per_epoch(n_frames: int, data_augmentation_loop: int, batch_size: int) -> int:
    """The reference count: floor(floor(n_frames * dal / batch_size) * 0.2), at least 1."""
    return max(1, math.floor(math.floor(n_frames * data_augmentation_loop / batch_size) * 0.2))


def load_loop_module(path: str | Path | None) -> ModuleType:
    """Import the editable training module from a file, under a name unique to its content and
    path, so two iterations' copies never share a cached module."""
    path = Path(path) if path is not None else PACKAGED_LOOP
    if not path.is_file():
        raise LoopFileError(f"--loop {path}: training loop file not found")
    digest = hashlib.sha256(f"{path.resolve()}:{file_sha256(path)}".encode()).hexdigest()[:16]
    name = f"neuralgraph_train_loop_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise LoopFileError(f"--loop {path}: failed to import: {type(exc).__name__}: {exc}") from exc
    missing = [fn for fn in REQUIRED_LOOP_FUNCTIONS if not callable(getattr(module, fn, None))]
    if missing:
        raise LoopFileError(f"--loop {path}: missing function(s) {', '.join(missing)} (see neuralgraph/train_loop.py)")
    return module


def load_training_data(data_dir: str | Path, cfg: ExperimentConfig, device: torch.device) -> tuple[TrainingData, Any]:
    """The dataset checked against the config; only the training frames go to the device."""
    try:
        dataset = load_dataset(data_dir, mmap=True)
        check_dataset_matches(dataset, cfg, label=f"--data {data_dir}")
    except FileNotFoundError as exc:
        raise TrainingInputError(f"--data {data_dir}: {exc}") from None
    except DatasetMismatchError as exc:
        raise TrainingInputError(str(exc)) from None
    n_train = cfg.n_train_frames
    u = torch.from_numpy(np.array(dataset.u[:n_train], dtype=np.float32)).to(device)
    du = torch.from_numpy(np.array(dataset.du[:n_train], dtype=np.float32)).to(device)
    data = TrainingData(u=u, du=du, delta_t=float(dataset.delta_t), n_frames=n_train, u_scale=float(u.abs().max()),
                        x_norm=reference_x_norm(u))
    return data, dataset


def reference_x_norm(u: torch.Tensor) -> float:
    """The reference's activity scale: round(1.5 x std of u over every entry), rounded half to even
    like torch.round; 0 for nearly constant activity (then its edge-difference shift is 0)."""
    return float(round(1.5 * float(u.double().std())))


def checkpoint_key(cfg: ExperimentConfig, loop_sha: str, dataset: Any) -> str:
    """Identity of what a checkpoint computes: a changed config, loop or dataset starts afresh."""
    cfg_dict = cfg.to_dict()
    for name in NON_RESULT_FIELDS:
        cfg_dict["training"].pop(name, None)
    sim_hash = dataset.metadata.get("simulation_hash", "") if isinstance(dataset.metadata, dict) else ""
    return stable_hash({"config": cfg_dict, "loop": loop_sha, "data": sim_hash})


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """checkpoint.pt as tensors and plain data only (``weights_only``: a checkpoint written by an
    edited loop inside the sandbox can never run code when it is read outside)."""
    with open_nofollow(path, "rb") as fh:
        return torch.load(fh, map_location="cpu", weights_only=True)


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# ----------------------------------------------------------------------------- RNG state
def rng_snapshot(generator: torch.Generator) -> dict[str, Any]:
    """Every RNG state as tensors and plain numbers, so checkpoints load with ``weights_only=True``."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    snap = {"torch": torch.get_rng_state(), "numpy": numpy_state, "sampler": generator.get_state()}
    if torch.cuda.is_available():
        snap["cuda"] = torch.cuda.get_rng_state_all()
    return snap


def rng_restore(snap: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(snap["torch"])
    state = snap["numpy"]
    np.random.set_state((state["name"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"],
                         state["cached_gaussian"]))
    generator.set_state(snap["sampler"])
    if "cuda" in snap and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(snap["cuda"])


# ----------------------------------------------------------------------------- the trainer
class Trainer:
    """One training run in one run folder (fresh or resumed from its checkpoint)."""

    def __init__(self, cfg: ExperimentConfig, data_dir: str | Path, run_dir: str | Path,
                 loop_path: str | Path | None = None, max_steps: Optional[int] = None):
        self.cfg = cfg
        self.tr = cfg.training
        self.run_dir = Path(run_dir)
        self.loop_path = Path(loop_path) if loop_path is not None else PACKAGED_LOOP
        self.loop = load_loop_module(self.loop_path)
        self.loop_sha = file_sha256(self.loop_path)
        self.max_steps = max_steps
        self.cfg_view = config_view(cfg)  # what the loop's functions get as cfg / ctx.cfg: read-only
        try:
            self.device = choose_device(self.tr.device)
        except DeviceUnavailableError as exc:
            raise TrainingInputError(str(exc)) from None
        limit_torch_threads(self.device, cfg.simulation.n_neurons * cfg.training.batch_size)
        self.data, self.dataset = load_training_data(data_dir, cfg, self.device)
        # a training view (the sandbox's) holds no W: the progress lines then show no R^2
        self.true_W = None if self.dataset.W is None else np.asarray(self.dataset.W, dtype=np.float64)
        self.key = checkpoint_key(cfg, self.loop_sha, self.dataset)
        self._seed_and_build()
        self.resumed_from_step = 0
        self.stop_signal: Optional[int] = None
        self._pending_losses: list[torch.Tensor] = []
        self._sync_every = 1 if self.device.type == "cpu" else 50
        self._segment_start = self._last_checkpoint = time.monotonic()
        self._elapsed_before = 0.0

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_FILE

    def _seed_and_build(self) -> None:
        """Seeded, device-independent initialisation: build on CPU, then move."""
        torch.manual_seed(self.tr.seed)
        np.random.seed(self.tr.seed % 2**32)
        self.generator = torch.Generator().manual_seed(self.tr.seed)
        self.model: SignalPropagation = build_model(self.cfg, self.dataset).to(self.device)
        self.model.train()
        self.embedding_learned = self.model.a.requires_grad  # what the config says; a collapse may freeze it an epoch
        dal = self.tr.data_augmentation_loop
        ipe = iterations_per_epoch(self.cfg.simulation.n_frames, dal, self.tr.batch_size)
        self.state = RunState(data_augmentation_loop=dal, iterations_per_epoch=ipe)
        self.use_cuda_graph = False
        self._build_optimizer()
        self.use_cuda_graph = wants_cuda_graph(self.tr.cuda_graph, self.device, self.loop_sha, self.scheduler)
        if self.use_cuda_graph:
            make_capturable(self.optimizer)

    def _build_optimizer(self) -> None:
        """The loop's optimizer and scheduler over the parameters trainable now; the scheduler spans
        the steps left (all of them at the start; the rest after a reset_optimizer_each_epoch rebuild)."""
        self.optimizer = self.loop.build_optimizer(self.model, self.cfg_view)
        steps_left = self.state.iterations_per_epoch * (self.tr.n_epochs - self.state.epoch)
        self.scheduler = self.loop.build_scheduler(self.optimizer, self.cfg_view, steps_left)
        if self.use_cuda_graph:
            make_capturable(self.optimizer)

    # --------------------------------------------------------------- epoch ends
    def _apply_epoch_trainability(self) -> None:
        """Freeze lin_edge and the embedding in the epoch after an embedding collapse (option off: untouched)."""
        every = self.tr.embedding_collapse_every
        if every > 0:
            set_epoch_trainability(self.model, messages_frozen(self.state.epoch, self.tr.n_epochs, every),
                                   self.embedding_learned)

    def _end_epoch(self, finished: int) -> None:
        """The reference's epoch-end events, after epoch ``finished`` (0-based) and before the
        checkpoint: the embedding collapse, the next epoch's frozen parameters, the optimizer reset."""
        if collapse_due(finished, self.tr.n_epochs, self.tr.embedding_collapse_every):
            with torch.enable_grad():
                summary = collapse_embedding(self.model, self.data.u_scale, self.tr.learning_rate_start)
            self.state.embedding_collapse_epochs.append(finished)
            log.info("embedding collapse after epoch %d: every neuron's a set to the median (spread was %.3g); "
                     "lin_phi refitted to the median curve (RMS %.3g -> %.3g); epoch %d trains with lin_edge and a "
                     "frozen", finished + 1, summary["embedding_spread"], summary["refit_rms_before"],
                     summary["refit_rms_after"], finished + 2)
        self._apply_epoch_trainability()
        if self.tr.reset_optimizer_each_epoch and self.state.epoch < self.tr.n_epochs:
            self._build_optimizer()

    # --------------------------------------------------------------- checkpoints
    def elapsed_s(self) -> float:
        """Training wall time over every segment of this run (resumes included)."""
        return self._elapsed_before + time.monotonic() - self._segment_start

    def save_checkpoint(self) -> None:
        self._flush_losses()
        self.state.elapsed_s = self.elapsed_s()
        payload = {
            "key": self.key,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if hasattr(self.scheduler, "state_dict") else None,
            "rng": rng_snapshot(self.generator),
            "state": {**asdict(self.state), "losses": torch.tensor(self.state.losses, dtype=torch.float64)},
            "saved_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        atomic_torch_save(self.checkpoint_path, payload)
        self._last_checkpoint = time.monotonic()

    def try_resume(self) -> bool:
        """Restore the run from checkpoint.pt if it belongs to this config/loop/dataset."""
        path = self.checkpoint_path
        if not path.exists():
            return False
        try:
            payload = load_checkpoint(path)
        except Exception as exc:
            log.warning("checkpoint %s unreadable (%s): starting afresh", path, exc)
            return False
        if payload.get("key") != self.key:
            log.warning("checkpoint %s was made with another config, loop file or dataset: starting afresh", path)
            return False
        self.model.load_state_dict(payload["model"])
        saved = dict(payload["state"])
        saved["losses"] = [float(x) for x in saved["losses"].tolist()]
        self.state = RunState(**saved)
        self._apply_epoch_trainability()
        if self.tr.reset_optimizer_each_epoch:  # the saved optimizer holds this epoch's parameters only
            self._build_optimizer()
        self.optimizer.load_state_dict(payload["optimizer"])
        if payload.get("scheduler") is not None and hasattr(self.scheduler, "load_state_dict"):
            self.scheduler.load_state_dict(payload["scheduler"])
        rng_restore(payload["rng"], self.generator)
        self.resumed_from_step = self.state.global_step
        log.info("resuming from checkpoint at step %d (epoch %d/%d, step %d/%d of the epoch)",
                 self.state.global_step, self.state.epoch + 1, self.tr.n_epochs,
                 self.state.step_in_epoch, self.state.iterations_per_epoch)
        return True

    # --------------------------------------------------------------- losses and divergence
    def _record_loss(self, loss: Any) -> None:
        if isinstance(loss, torch.Tensor):
            if loss.numel() != 1:
                raise TypeError(f"train_step must return a scalar loss, got shape {tuple(loss.shape)}")
            self._pending_losses.append(loss.detach().reshape(()).float())
        else:
            self._pending_losses.append(torch.tensor(float(loss), device=self.device))
        if len(self._pending_losses) >= self._sync_every:
            self._flush_losses()

    def _flush_losses(self) -> None:
        """Move pending losses to the host (one sync) and stop the run if one diverged."""
        if not self._pending_losses:
            return
        values = torch.stack([v.to(self.device) for v in self._pending_losses]).cpu().tolist()  # one sync
        self._pending_losses = []
        first_step = self.state.global_step - len(values)
        for offset, value in enumerate(values):
            self.state.losses.append(value)
            if self.state.first_loss is None and math.isfinite(value):
                self.state.first_loss = value
            if self.state.status == "running":
                reason = self._divergence_reason(value, first_step + offset)
                if reason:
                    self.state.status, self.state.reason = "diverged", reason

    def _divergence_reason(self, value: float, step: int) -> str:
        where = f"at step {step + 1} (epoch {self.state.epoch + 1})"
        if not math.isfinite(value):
            return f"loss became {value} {where}"
        first = self.state.first_loss
        if first is not None and value > self.tr.divergence_factor * max(first, 1e-12):
            return (f"loss {value:.3e} {where} exceeded divergence_factor {self.tr.divergence_factor:g} "
                    f"x first loss {first:.3e}")
        return ""

    # --------------------------------------------------------------- time target
    def _epoch_costs(self, probe_horizon: int) -> list[float]:
        """Relative cost of a step in each epoch (an unrolled step costs ~ its horizon)."""
        return [self.loop.training_mode(self.cfg_view, e)[1] / probe_horizon for e in range(self.tr.n_epochs)]

    def choose_data_augmentation_loop(self, sec_per_step: float, probe_horizon: int) -> int:
        """data_augmentation_loop whose planned run time is closest to training_time_target_min."""
        target_s = self.tr.training_time_target_min * 60.0
        steps_per_dal = self.cfg.simulation.n_frames / self.tr.batch_size * 0.2
        run_cost_per_dal = steps_per_dal * sec_per_step * sum(self._epoch_costs(probe_horizon))
        dal = round(target_s / max(run_cost_per_dal, 1e-12))
        return int(min(max(dal, 1), self.tr.data_augmentation_loop_max))

    def _apply_time_target(self, probe: "_ThroughputProbe", horizon: int) -> None:
        sec_per_step = probe.seconds_per_step()
        dal = self.choose_data_augmentation_loop(sec_per_step, horizon)
        self.state.data_augmentation_loop = dal
        self.state.iterations_per_epoch = iterations_per_epoch(self.cfg.simulation.n_frames, dal, self.tr.batch_size)
        self.state.dal_chosen = True
        log.info("time target %.3g min: measured %.2f ms/step over %d steps -> data_augmentation_loop %d "
                 "(%d steps/epoch)", self.tr.training_time_target_min, sec_per_step * 1e3, probe.steps, dal,
                 self.state.iterations_per_epoch)

    # --------------------------------------------------------------- main loop
    def _context(self, mode: str, horizon: int) -> StepContext:
        s = self.state
        return StepContext(cfg=self.cfg_view, epoch=s.epoch, step=s.global_step, step_in_epoch=s.step_in_epoch,
                           iterations_per_epoch=s.iterations_per_epoch, n_epochs=self.tr.n_epochs,
                           mode=mode, horizon=horizon, scheduler=self.scheduler, device=self.device)

    def _one_step(self, mode: str, horizon: int, graphed: Optional[GraphedStep]) -> None:
        starts = self.loop.sample_batch_starts(self.data.n_frames, horizon, self.tr.batch_size, self.generator)
        starts = torch.as_tensor(starts, dtype=torch.long)
        ctx = self._context(mode, horizon)
        loss = None
        if graphed is not None and self.use_cuda_graph:
            try:
                loss = graphed(starts, ctx)
            except RuntimeError as exc:  # not capture-safe (host sync, CPU tensor...): go on eagerly
                log.warning("CUDA graph capture failed (%s): continuing without CUDA graphs", str(exc).splitlines()[0])
                self.use_cuda_graph = False
        if loss is None:
            loss = self.loop.train_step(self.model, self.optimizer, self.data, starts.to(self.device), ctx)
        self.state.step_in_epoch += 1
        self.state.global_step += 1
        self.state.horizon_steps += horizon
        self._record_loss(loss)

    def _max_steps_reached(self) -> bool:
        return self.max_steps is not None and self.state.global_step >= self.max_steps

    def _run_epoch(self, progress: "_Progress") -> None:
        mode, horizon = self.loop.training_mode(self.cfg_view, self.state.epoch)
        probe = _ThroughputProbe(self.device) if self._needs_time_target() else None
        graphed = GraphedStep(self) if self.use_cuda_graph else None  # mode may change per epoch: new capture
        while self.state.status == "running":
            if probe is not None and probe.ready(self.state):
                self._apply_time_target(probe, horizon)
                probe = None
            if self.state.step_in_epoch >= self.state.iterations_per_epoch or self._max_steps_reached():
                break
            self._one_step(mode, horizon, graphed)
            if probe is not None:
                probe.tick()
            progress.maybe_log(self, mode, horizon)
            if self.stop_signal is not None:
                self.save_checkpoint()
                raise TrainingTerminated(f"received signal {self.stop_signal}")
            if time.monotonic() - self._last_checkpoint >= self.tr.checkpoint_every_min * 60:
                self.save_checkpoint()
        self._flush_losses()

    def _needs_time_target(self) -> bool:
        return self.tr.training_time_target_min is not None and not self.state.dal_chosen and self.max_steps is None

    def run(self) -> dict[str, Any]:
        """Train to the end (or divergence / --max-steps) and write the outputs; returns the record."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._last_checkpoint = time.monotonic()
        self._segment_start = time.monotonic()
        self._elapsed_before = self.state.elapsed_s
        progress = _Progress(self.tr.log_every_s)
        self._log_start()
        while self.state.epoch < self.tr.n_epochs and self.state.status == "running" and not self._max_steps_reached():
            self._run_epoch(progress)
            if self.state.status != "running" or self.state.step_in_epoch < self.state.iterations_per_epoch:
                break  # diverged or --max-steps: the epoch is not complete
            self.state.epoch += 1
            self.state.step_in_epoch = 0
            progress.log_line(self, *self.loop.training_mode(self.cfg_view, self.state.epoch - 1), tag="epoch end",
                              epoch=self.state.epoch)
            self._end_epoch(self.state.epoch - 1)
            self.save_checkpoint()
        return self._finish()

    def _log_start(self) -> None:
        s = self.state
        log.info("training %s on %s (%d CPU threads): N=%d, %d training frames, %d epoch(s) x %d steps, batch %d, time_step %d, loop %s",
                 self.run_dir, self.device, torch.get_num_threads(), self.model.n_neurons, self.data.n_frames, self.tr.n_epochs,
                 s.iterations_per_epoch, self.tr.batch_size, self.tr.time_step, self.loop_path)

    def _finish(self) -> dict[str, Any]:
        if self.state.status == "running":
            self.state.status = "ok"
            if self._max_steps_reached() and self.state.epoch < self.tr.n_epochs:
                self.state.reason = f"stopped at --max-steps {self.max_steps}"
        self.save_checkpoint()  # also fixes state.elapsed_s
        save_trained_model(self.model, self.cfg, self.run_dir / MODEL_FILE)
        record = self.record()
        atomic_write_json(self.run_dir / TRAINING_RECORD_FILE, record)
        log.info("finished: status %s%s, %d steps in %.2f min, final loss %.4g", record["status"],
                 f" ({record['reason']})" if record["reason"] else "", record["iterations"],
                 record["training_time_min"], record["final_loss"] if record["final_loss"] is not None else float("nan"))
        return record

    def record(self) -> dict[str, Any]:
        """The training.json content."""
        s = self.state
        history, history_steps = subsample_history(s.losses, LOSS_HISTORY_POINTS)
        tail = s.losses[-FINAL_LOSS_WINDOW:]
        final = float(np.mean(tail)) if tail else float("nan")
        mode, horizon = self.loop.training_mode(self.cfg_view, max(0, self.tr.n_epochs - 1))
        return {
            "status": s.status,
            "reason": s.reason,
            "final_loss": final,
            "final_loss_window": len(tail),
            "first_loss": s.first_loss,
            "loss_history": history,
            "loss_history_steps": history_steps,
            "training_time_min": s.elapsed_s / 60.0,
            "iterations": s.global_step,
            "horizon_steps": s.horizon_steps,
            "iterations_per_epoch": s.iterations_per_epoch,
            "epochs": s.epoch,
            "n_epochs": self.tr.n_epochs,
            "data_augmentation_loop": s.data_augmentation_loop,
            "data_augmentation_loop_chosen_by_time_target": s.dal_chosen,
            "device": str(self.device),
            "cuda_graph": self.use_cuda_graph,
            "time_step": self.tr.time_step,
            "training_mode": mode,
            "horizon": horizon,
            "resumed_from_step": self.resumed_from_step,
            "embedding_collapse_epochs": list(s.embedding_collapse_epochs),
            "seed": self.tr.seed,
            "max_steps": self.max_steps,
            "n_train_frames": self.data.n_frames,
            "loop_file": str(self.loop_path),
            "loop_sha256": self.loop_sha,
            "started_at": PROCESS_STARTED_AT,
            "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"),
        }

    def connectivity_r2(self) -> float:
        if self.true_W is None:
            return float("nan")
        learned = self.model.dense_W().detach().cpu().numpy()
        if not np.all(np.isfinite(learned)):
            return float("nan")
        return connectivity_r2(learned, self.true_W)


def subsample_history(losses: list[float], max_points: int) -> tuple[list[float], list[int]]:
    """Window means of the per-step losses (at most max_points), with each window's last step."""
    if not losses:
        return [], []
    window = max(1, math.ceil(len(losses) / max_points))
    arr = np.asarray(losses, dtype=np.float64)
    means, steps = [], []
    for start in range(0, len(arr), window):
        chunk = arr[start:start + window]
        means.append(float(chunk.mean()))
        steps.append(start + len(chunk))
    return means, steps


class _ThroughputProbe:
    """Seconds per step over the first steps of a run (after a few warm-up steps)."""

    WARMUP, MIN_STEPS, MIN_SECONDS, MAX_STEPS = 6, 20, 2.0, 300  # warm-up covers a CUDA graph capture

    def __init__(self, device: torch.device):
        self.device = device
        self.seen = 0
        self.steps = 0
        self.t0: Optional[float] = None

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def tick(self) -> None:
        self.seen += 1
        if self.seen == self.WARMUP:
            self.t0 = self._now()
        elif self.seen > self.WARMUP:
            self.steps += 1

    def seconds_per_step(self) -> float:
        return (self._now() - self.t0) / max(self.steps, 1)

    def ready(self, state: RunState) -> bool:
        if self.t0 is None or self.steps == 0:
            return False
        enough = self.steps >= self.MAX_STEPS or (
            self.steps >= self.MIN_STEPS and time.perf_counter() - self.t0 >= self.MIN_SECONDS)
        epoch_ending = state.step_in_epoch >= state.iterations_per_epoch
        return enough or epoch_ending


class _Progress:
    """Progress lines every ``every_s`` seconds: step, loss, rate, elapsed, ETA, W R^2."""

    def __init__(self, every_s: float):
        self.every_s = every_s
        self.t_start = time.monotonic()
        self.t_last = self.t_start
        self.t_beat = self.t_start
        self.step_start: Optional[int] = None

    def maybe_log(self, trainer: Trainer, mode: str, horizon: int) -> None:
        if self.step_start is None:
            self.step_start = trainer.state.global_step - 1
        now = time.monotonic()
        if now - self.t_beat >= HEARTBEAT_EVERY_S:
            self.beat(trainer, now)
        if now - self.t_last >= self.every_s:
            self.log_line(trainer, mode, horizon)

    def beat(self, trainer: Trainer, now: float) -> None:
        """progress.json: what the job launcher's stall watchdog reads (step and measured rate)."""
        done = trainer.state.global_step - (self.step_start or 0)
        elapsed = max(now - self.t_start, 1e-9)
        atomic_write_json(trainer.run_dir / HEARTBEAT_FILE, {
            "step": trainer.state.global_step, "epoch": trainer.state.epoch,
            "seconds_per_step": elapsed / done if done > 0 else None, "wall_time": time.time()})
        self.t_beat = now

    def log_line(self, trainer: Trainer, mode: str, horizon: int, tag: str = "", epoch: int | None = None) -> None:
        """One progress line; ``epoch`` (1-based) names the epoch shown, by default the one running
        (an epoch-end line passes the epoch that just ended, not the next one)."""
        trainer._flush_losses()
        s, tr = trainer.state, trainer.tr
        now = time.monotonic()
        done = s.global_step - (self.step_start or 0)
        rate = done / max(now - self.t_start, 1e-9)
        total = s.iterations_per_epoch * tr.n_epochs
        if trainer.max_steps is not None:
            total = min(total, trainer.max_steps)
        remaining = max(total - s.global_step, 0)
        recent = s.losses[-50:]
        loss = float(np.mean(recent)) if recent else float("nan")
        log.info("%sepoch %d/%d step %d/%d (%.1f%%) %s T=%d | loss %.4g | %.1f it/s | elapsed %s | ETA %s | W R2 %.4f",
                 f"[{tag}] " if tag else "", epoch or min(s.epoch + 1, tr.n_epochs), tr.n_epochs, s.global_step, total,
                 100.0 * s.global_step / max(total, 1), mode, horizon, loss, rate,
                 format_duration(trainer.elapsed_s()),
                 format_duration(remaining / rate if rate > 0 else float("inf")), trainer.connectivity_r2())
        self.t_last = now


# ----------------------------------------------------------------------------- entry points
def record_stopped_run(cfg: ExperimentConfig, data_dir: str | Path, run_dir: str | Path, status: str,
                       reason: str, use_checkpoint: bool = True) -> dict[str, Any]:
    """Finish a run that was stopped from outside (the watchdog of an edited loop): model.pt
    from the last checkpoint (or the untrained model), training.json with ``status``.

    Like a diverged run, the result is scored as failed and the exploration goes on. The
    checkpoint is read with ``weights_only`` (it was written by the contained code); with
    ``use_checkpoint=False`` (a tampered run) it is not read at all.
    """
    run_dir = Path(run_dir)
    dataset = load_dataset(data_dir, mmap=True)
    model = build_model(cfg, dataset)
    losses: list[float] = []
    steps, elapsed, horizon_steps = 0, 0.0, 0
    try:
        if not use_checkpoint:
            raise RuntimeError("the run's outputs are not trusted")
        payload = load_checkpoint(run_dir / CHECKPOINT_FILE)
        model.load_state_dict(payload["model"])
        losses = [float(x) for x in payload["state"]["losses"].tolist()]
        steps, elapsed = int(payload["state"]["global_step"]), float(payload["state"]["elapsed_s"])
        horizon_steps = int(payload["state"].get("horizon_steps", 0))
    except Exception as exc:  # no or unreadable checkpoint: the untrained model stands in
        log.warning("no usable checkpoint in %s (%s): model.pt holds the untrained model", run_dir, exc)
    save_trained_model(model, cfg, run_dir / MODEL_FILE)
    history, history_steps = subsample_history(losses, LOSS_HISTORY_POINTS)
    tail = losses[-FINAL_LOSS_WINDOW:]
    record = {"status": status, "reason": reason, "final_loss": float(np.mean(tail)) if tail else None,
              "loss_history": history, "loss_history_steps": history_steps, "training_time_min": elapsed / 60.0,
              "iterations": steps, "horizon_steps": horizon_steps, "n_epochs": cfg.training.n_epochs, "time_step": cfg.training.time_step,
              "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    atomic_write_json(run_dir / TRAINING_RECORD_FILE, record)
    return record


def train(cfg: ExperimentConfig, data_dir: str | Path, run_dir: str | Path, loop_path: str | Path | None = None,
          max_steps: Optional[int] = None, force: bool = False) -> dict[str, Any]:
    """Train (or resume, or skip a finished run) and return the training record."""
    run_dir = Path(run_dir)
    if not force:
        done = finished_record(run_dir)
        if done is not None:
            log.info("%s already finished (status %s): nothing to do (use --force to retrain)", run_dir, done["status"])
            return done
    trainer = Trainer(cfg, data_dir, run_dir, loop_path=loop_path, max_steps=max_steps)
    if not force:
        trainer.try_resume()
    with _stop_on_signals(trainer):
        return trainer.run()


@contextlib.contextmanager
def _stop_on_signals(trainer: Trainer):
    """SIGTERM (SLURM preemption) / SIGINT: finish the current step, checkpoint, exit 143.

    The previous handlers come back afterwards (the trainer may run inside a larger program).
    """
    def handler(signum, _frame):
        trainer.stop_signal = signum

    previous = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: no handlers
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m neuralgraph train",
        description="Train the GNN on a dataset; resumes from RUN/checkpoint.pt; a finished RUN is left as is.",
    )
    parser.add_argument("--config", required=True, help="experiment config YAML")
    parser.add_argument("--data", required=True, help="dataset folder written by `neuralgraph simulate`")
    parser.add_argument("--out", required=True, help="run folder (model.pt, checkpoint.pt, training.json)")
    parser.add_argument("--loop", default=None, help="editable training module file (default: neuralgraph/train_loop.py)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps (smoke tests)")
    parser.add_argument("--force", action="store_true", help="retrain from scratch even if RUN is finished or has a checkpoint")
    args = parser.parse_args(argv)
    if args.max_steps is not None and args.max_steps < 1:
        parser.error(f"--max-steps {args.max_steps}: must be >= 1")
    return args


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at emit time (a redirected or captured stream)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _configure_logging() -> None:
    if not log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s train: %(message)s", "%Y-%m-%d %H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    _configure_logging()
    try:
        cfg = load_config(args.config)
        train(cfg, args.data, args.out, loop_path=args.loop, max_steps=args.max_steps, force=args.force)
    except (ConfigError, TrainingInputError) as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except LoopFileError as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return EXIT_BAD_LOOP
    except TrainingTerminated as exc:
        print(f"train: {exc}: checkpoint saved in {args.out}; rerun the same command to resume", file=sys.stderr)
        return EXIT_TERMINATED
    except (_OUT_OF_MEMORY, MemoryError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"train: error: out of memory ({first}); the last checkpoint in {args.out} is kept: "
              f"reduce time_step or batch_size, or use a larger device", file=sys.stderr)
        return EXIT_OUT_OF_MEMORY
    except Exception as exc:  # a bug, most likely in an edited loop file: show where, then one line
        traceback.print_exc(file=sys.stderr)
        print(f"train: error: {type(exc).__name__}: {exc} (loop file: {args.loop or PACKAGED_LOOP})", file=sys.stderr)
        return EXIT_RUNTIME_ERROR
    return 0
