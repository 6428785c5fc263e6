"""The train rule's job: the packaged loop runs as is, an edited loop only inside the sandbox.

``python -m pipeline train --config C --data D --out RUN --loop L`` decides how
``python -m neuralgraph train`` runs, by comparing L with the packaged training loop:

- the packaged loop (shipped code): the trainer replaces this process (``exec``) with an
  environment rebuilt from the sandbox's allow-list, so no API key or token reaches the
  training job, on a laptop or a SLURM node (where ``sbatch --export=ALL`` would pass them);
- an edited loop (written by an agent or brought by a replay): under
  ``agent.code_modification: sandboxed`` (default) inside bubblewrap
  (:func:`agent.sandbox.run_contained`), writable only RUN; ``unsandboxed`` without the
  namespaces (explicit opt-in); ``off`` refuses to run it. It also gets a stall watchdog and a
  wall-clock cap: an edit that only misbehaves at full size (an endless loop at T = 64, a
  step 100x slower than the packaged one) ends with status ``stalled``, recorded like
  ``diverged`` (model.pt from the last checkpoint, scored as failed), and the chain goes on.

The watchdog reads the trainer's heartbeat (``RUN/progress.json``, seconds per step): no new
step for max(:data:`STALL_FLOOR_S`, :data:`STALL_STEPS` x seconds per step) is a stall;
before the first heartbeat :data:`STARTUP_GRACE_S` applies. The wall-clock cap is
:data:`WALL_CAP_FACTOR` x ``training_time_target_min`` + the startup grace (no cap without a
time target). The heartbeat is written by contained code and could be faked: the cap is the
backstop.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Optional

from agent.sandbox import (SandboxUnavailable, code_modification_refusal, contained_environment, run_contained,
                           training_limits)
from neuralgraph import PACKAGED_LOOP
from neuralgraph.config import load_config
from neuralgraph.device import cuda_wanted
from neuralgraph.io import read_json
from neuralgraph.training import HEARTBEAT_FILE, STATUS_STALLED, record_stopped_run

#: Shortest time without a new step that counts as a stall.
STALL_FLOOR_S = 600.0
#: ... or this many times the measured seconds per step, whichever is longer.
STALL_STEPS = 50
#: Time allowed before the first heartbeat (imports, data loading, the first steps).
STARTUP_GRACE_S = 900.0
#: The wall-clock cap is this many times the time target (plus the startup grace).
WALL_CAP_FACTOR = 3.0
#: Exit code when the job refuses to run the loop at all (no sandbox, code modifications off).
EXIT_REFUSED = 2


class TrainJobError(RuntimeError):
    """The job cannot run this iteration's loop as configured; the message names the setting."""


def is_packaged_loop(loop: str | os.PathLike) -> bool:
    """True when the loop file is byte-identical to the packaged neuralgraph/train_loop.py."""
    return Path(loop).read_bytes() == PACKAGED_LOOP.read_bytes()


class StallWatchdog:
    """Says why to stop a contained training: no progress for too long, or past the wall cap."""

    def __init__(self, run_dir: Path, stall_floor_s: float, startup_grace_s: float, wall_cap_s: Optional[float]):
        self.heartbeat = run_dir / HEARTBEAT_FILE
        self.stall_floor_s, self.startup_grace_s, self.wall_cap_s = stall_floor_s, startup_grace_s, wall_cap_s
        self.started = time.monotonic()
        self.last_step: Optional[int] = None
        self.last_progress = self.started
        self.seconds_per_step: Optional[float] = None
        self.heartbeat.unlink(missing_ok=True)  # a previous attempt's heartbeat is not progress

    def _read(self) -> None:
        try:
            beat = read_json(self.heartbeat)
            step, rate = int(beat["step"]), beat.get("seconds_per_step")
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return
        if step != self.last_step:
            self.last_step, self.last_progress = step, time.monotonic()
        if isinstance(rate, (int, float)) and rate > 0:
            self.seconds_per_step = float(rate)

    def stall_timeout_s(self) -> float:
        if self.last_step is None:
            return self.startup_grace_s
        return max(self.stall_floor_s, STALL_STEPS * (self.seconds_per_step or 0.0))

    def __call__(self) -> Optional[str]:
        self._read()
        now = time.monotonic()
        if self.wall_cap_s is not None and now - self.started > self.wall_cap_s:
            return f"ran past its wall-clock cap of {self.wall_cap_s / 60:.1f} min ({WALL_CAP_FACTOR:g} x the time target)"
        quiet = now - self.last_progress
        if quiet > self.stall_timeout_s():
            where = f"after step {self.last_step}" if self.last_step is not None else "before its first step"
            return f"no training progress for {quiet:.0f} s {where} (stall limit {self.stall_timeout_s():.0f} s)"
        return None


def trainer_command(config: str, data: str, out: str, loop: str, absolute: bool = False) -> list[str]:
    """``python -m neuralgraph train ...``; ``absolute`` paths for the sandbox, which starts in RUN."""
    paths = [Path(p).resolve() if absolute else Path(p) for p in (config, data, out, loop)]
    return [sys.executable, "-m", "neuralgraph", "train",
            *[item for flag, path in zip(("--config", "--data", "--out", "--loop"), paths) for item in (flag, str(path))]]


def run_train_job(config: str, data: str, out: str, loop: str, code_modification: str = "sandboxed",
                  threads: int = 1, stall_floor_s: float = STALL_FLOOR_S,
                  startup_grace_s: float = STARTUP_GRACE_S) -> int:
    """Train one iteration (see the module docstring); returns the trainer's exit code."""
    cfg = load_config(config)
    gpu = cuda_wanted(cfg.training.device)
    if is_packaged_loop(loop):
        sys.stdout.flush()
        command = trainer_command(config, data, out, loop)
        os.execve(sys.executable, command, contained_environment(threads=threads, cuda=gpu, environ=dict(os.environ)))
    refusal = code_modification_refusal(code_modification)
    if refusal:
        raise TrainJobError(f"{loop} differs from the packaged training loop: {refusal}")
    run_dir = Path(out).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    target = cfg.training.training_time_target_min
    wall_cap_s = WALL_CAP_FACTOR * target * 60.0 + startup_grace_s if target else None
    watchdog = StallWatchdog(run_dir, stall_floor_s, startup_grace_s, wall_cap_s)
    sandboxed = code_modification == "sandboxed"
    print(f"pipeline train: {loop} is an edited loop: training it {'inside the sandbox' if sandboxed else 'UNSANDBOXED'}"
          f" (stall watchdog on{f', wall cap {wall_cap_s / 60:.1f} min' if wall_cap_s else ''})", flush=True)
    try:
        ended = run_contained(trainer_command(config, data, out, loop, absolute=True), sandboxed=sandboxed, writable=[run_dir],
                              readable=[Path(data).resolve(), Path(config).resolve(), Path(loop).resolve()],
                              limits=training_limits(gpu), threads=threads, gpu=gpu, watchdog=watchdog, poll_s=2.0,
                              forward_signals=True)
    except SandboxUnavailable as exc:
        raise TrainJobError(f"no sandbox for the edited loop {loop}: {exc}") from None
    if ended.killed_because:
        reason = f"stopped by the watchdog: the edited loop {ended.killed_because}"
        print(f"pipeline train: {reason}; recorded as status {STATUS_STALLED!r}", flush=True)
        record_stopped_run(cfg, data, run_dir, STATUS_STALLED, reason)
        return 0
    return int(ended.returncode or 0)
