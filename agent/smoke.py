"""The smoke run of a code modification: a few training steps of the edited loop, in the sandbox.

After the static checks (:mod:`agent.codeedit`) accept an edit, :func:`smoke_run` trains a
few steps with it on a tiny, cached dataset, using the *child's* own training settings
(time_step, recurrence, neural-ODE options, penalties) scaled down in size, so an edit that
only breaks at depth 64 is caught before a GPU job is spent on it. The run goes through
:func:`agent.sandbox.run_contained`: no secret in its environment, the file system read-only
but for its own folder, no network, killed with its whole tree at the timeout.

Two kinds of failure are kept apart:

- :class:`~agent.codeedit.CodeEditError` (``smoke-timeout``, ``smoke-crash``,
  ``smoke-diverged``): the edit's fault; the reason goes back to the policy, which may retry;
- :class:`SmokeHarnessError`: ours (the tiny dataset cannot be built, the sandbox does not
  start, the trainer refused its config or data before the edited code ran). Sending that to
  an LLM would cost a paid retry it cannot act on, so the fallback chain skips the retry.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from agent.codeedit import CodeEditError, check_code_modification
from agent.layout import LOOP_FILE
from agent.sandbox import SandboxUnavailable, run_contained, smoke_limits
from neuralgraph.config import CONFIG_FILE, ExperimentConfig, dump_config, parse_config
from neuralgraph.dataset import missing_files, write_training_view
from neuralgraph.io import atomic_write_json, atomic_write_text, read_json
from neuralgraph.run_files import EXIT_BAD_INPUT, TRAINING_RECORD_FILE

DEFAULT_SMOKE_TIMEOUT_S = 120.0
DEFAULT_SMOKE_MAX_STEPS = 5
STDERR_TAIL_LINES = 15
#: The quoted end of a failed run's output is capped too: the edited code controls what it prints.
STDERR_TAIL_CHARS = 4000
#: The tiny network every smoke run trains on: seed 2 keeps its activity alive to the last
#: frame (seeds 1 and 11 decay at this size, which made every smoke dataset warn).
SMOKE_SIMULATION: dict[str, Any] = {
    "n_neurons": 16, "n_neuron_types": 4, "n_frames": 800, "n_burn_in": 100, "seed": 2,
}
SMOKE_HELD_OUT_FRAMES = 100
#: Prefix bwrap puts on its own error messages (a sandbox that failed to start: our fault).
_BWRAP_ERROR_PREFIX = "bwrap:"


class SmokeHarnessError(RuntimeError):
    """The smoke run failed for a reason of the harness, not of the edit (never fed back to a policy)."""


@dataclass(frozen=True)
class SmokeResult:
    """What the smoke run of an accepted edit showed (recorded in decision.json)."""

    status: str
    final_loss: float
    steps: int
    wall_s: float
    run_dir: str
    sandboxed: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "final_loss": self.final_loss, "steps": self.steps,
                "wall_s": self.wall_s, "run_dir": self.run_dir, "sandboxed": self.sandboxed}


@dataclass(frozen=True)
class ValidatedEdit:
    """An accepted code modification: the child's module text and its smoke run."""

    child_source: str
    smoke: SmokeResult


def smoke_config(child: Any = None):
    """The config of a smoke run: the tiny network, the child's training scheme.

    The training section (time_step, recurrence, ODE settings, penalties) is the child's
    (an ExperimentConfig, a dict, or None for defaults) so the edited code runs the branch it
    will run for real; sizes are shrunk so the run takes seconds on a CPU. A time_step too
    deep for the tiny recording is kept: the held-out segment shrinks, the training frames
    always leave room for it.
    """
    data = child.to_dict() if isinstance(child, ExperimentConfig) else dict(child or {})
    data = json.loads(json.dumps(data))  # deep copy of plain data
    data["simulation"] = {**data.get("simulation", {}), **SMOKE_SIMULATION}
    n = SMOKE_SIMULATION["n_neurons"]
    graph = data.setdefault("graph_model", {})
    graph["hidden_dim"] = min(int(graph.get("hidden_dim", 64)), 16)
    graph["low_rank"] = min(int(graph.get("low_rank", 20)), n)
    training = data.setdefault("training", {})
    training.update({"n_epochs": 1, "data_augmentation_loop": 1, "held_out_frames": SMOKE_HELD_OUT_FRAMES,
                     "batch_size": min(int(training.get("batch_size", 8)), 8),
                     "training_time_target_min": None, "checkpoint_every_min": 60.0})
    training["recurrent_training_start_epoch"] = 0
    data["analysis"] = {**data.get("analysis", {}), "rollout_frames": SMOKE_HELD_OUT_FRAMES // 2}
    return parse_config(data, source="<smoke config>")


def ensure_smoke_dataset(cache_dir: str | os.PathLike) -> Path:
    """The tiny dataset of the smoke runs (absolute path), simulated once and cached.

    The folder is named by the simulation hash and built in a temporary folder renamed into
    place, so concurrent decide jobs never see (or clobber) a half-written dataset. Raises
    :class:`SmokeHarnessError` when it cannot be built.
    """
    cfg = smoke_config()
    cache = Path(cache_dir).resolve()
    target = cache / f"smoke_{cfg.simulation_hash()}"
    if not missing_files(target):
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".smoke_building_", dir=cache))
    except OSError as exc:
        raise SmokeHarnessError(f"cannot create the smoke dataset cache {cache}: {exc}") from None
    try:
        from neuralgraph.simulate import simulate  # torch: only a decide that smokes a code edit pays for it

        simulate(cfg, staging, progress=False, pictures=False)
        try:
            os.rename(staging, target)
        except OSError:
            if missing_files(target):
                raise
    except Exception as exc:
        raise SmokeHarnessError(f"the smoke dataset could not be built in {cache}: {type(exc).__name__}: {exc}") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _tail(text: str, n_lines: int = STDERR_TAIL_LINES) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-n_lines:])[-STDERR_TAIL_CHARS:]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_training_record(run_dir: Path, wall_s: float, sandboxed: bool) -> SmokeResult:
    """Refuse a run that diverged or reported a non-finite loss (training.json)."""
    try:
        record = read_json(run_dir / TRAINING_RECORD_FILE)
    except (FileNotFoundError, ValueError) as exc:
        raise CodeEditError("smoke-crash", f"the smoke run exited normally but left no readable training.json ({exc})") from None
    status, final_loss = record.get("status"), record.get("final_loss")
    if status != "ok":
        raise CodeEditError("smoke-diverged", f"the smoke run ended with status {status!r}: {record.get('reason') or 'no reason given'}")
    history = record.get("loss_history") or []
    if not _finite(final_loss) or not all(_finite(v) for v in history):
        raise CodeEditError("smoke-diverged", f"the smoke run gave a non-finite loss (final_loss = {final_loss!r})")
    steps = record.get("iterations")
    return SmokeResult(status=status, final_loss=float(final_loss), steps=int(steps if _finite(steps) else len(history)),
                       wall_s=round(wall_s, 3), run_dir=str(run_dir), sandboxed=sandboxed)


def _judge(rc: Optional[int], killed_because: Optional[str], output: str, timeout_s: float, max_steps: int) -> None:
    """Raise the right error for a failed run: the edit's (CodeEditError) or ours (SmokeHarnessError)."""
    if killed_because:
        raise CodeEditError("smoke-timeout", f"the smoke run ({max_steps} steps on a {SMOKE_SIMULATION['n_neurons']}-neuron "
                                             f"network) did not finish within {timeout_s:g} s: an endless loop or far too slow")
    if rc == 0:
        return
    if output.lstrip().startswith(_BWRAP_ERROR_PREFIX):
        raise SmokeHarnessError(f"the sandbox did not start: {_tail(output, 3)}")
    if rc == EXIT_BAD_INPUT:
        raise SmokeHarnessError(f"the trainer refused the smoke run's config or data before the edited code ran: {_tail(output, 5)}")
    raise CodeEditError("smoke-crash", f"the smoke run crashed (exit code {rc}); last lines:\n{_tail(output)}")


def smoke_run(module_source: str, smoke_dir: str | os.PathLike, *, child_config: Any = None, sandboxed: bool = True,
              timeout_s: float = DEFAULT_SMOKE_TIMEOUT_S, max_steps: int = DEFAULT_SMOKE_MAX_STEPS,
              cache_dir: str | os.PathLike | None = None) -> SmokeResult:
    """Train ``max_steps`` steps with ``module_source`` as the loop file, contained; refuse it if that fails.

    Runs ``python -m neuralgraph train --config <tiny child config> --data <tiny data>
    --out <smoke_dir>/run --loop <smoke_dir>/train_loop.py --max-steps N`` through
    :func:`agent.sandbox.run_contained` (``sandboxed=False`` only under
    ``agent.code_modification: unsandboxed``). Every path is made absolute first: the run
    starts in its own folder. Writes ``smoke.log`` and ``smoke.json`` into ``smoke_dir``.
    """
    smoke = Path(smoke_dir).resolve()
    smoke.mkdir(parents=True, exist_ok=True)
    data_dir = ensure_smoke_dataset(Path(cache_dir) if cache_dir else smoke / "dataset")
    try:
        smoke_cfg = smoke_config(child_config)
        config_path = dump_config(smoke_cfg, smoke / CONFIG_FILE).resolve()
    except ValueError as exc:
        raise SmokeHarnessError(f"the smoke config could not be made from the child's: {exc}") from None
    loop_path = atomic_write_text(smoke / LOOP_FILE, module_source).resolve()
    run_dir, view = smoke / "run", smoke / "view"
    for folder in (run_dir, view):
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a previous attempt's checkpoint must not be resumed
    run_dir.mkdir()
    # the edited code sees a training view of the data (no W, no types), like the real training
    true_support = smoke_cfg.graph_model.connectivity_mask == "true_support"
    view = write_training_view(data_dir, view, with_support=true_support).resolve()
    cmd = [sys.executable, "-m", "neuralgraph", "train", "--config", str(config_path), "--data", str(view),
           "--out", str(run_dir), "--loop", str(loop_path), "--max-steps", str(max_steps)]
    log_path = smoke / "smoke.log"
    try:
        with open(log_path, "w", encoding="utf-8") as log:
            ended = run_contained(cmd, sandboxed=sandboxed, writable=[run_dir], readable=[view, config_path, loop_path],
                                  limits=smoke_limits(timeout_s), timeout_s=timeout_s, threads=1, stdout=log)
    except SandboxUnavailable as exc:
        raise SmokeHarnessError(f"no sandbox for the smoke run: {exc}") from None
    output = log_path.read_text(encoding="utf-8", errors="replace")
    record = {"command": cmd, "sandboxed": sandboxed, "wall_s": round(ended.wall_s, 3)}
    try:
        _judge(ended.returncode, ended.killed_because, output, timeout_s, max_steps)
        result = _check_training_record(run_dir, ended.wall_s, sandboxed)
    except CodeEditError as exc:
        atomic_write_json(smoke / "smoke.json", {"accepted": False, "kind": exc.kind, "reason": exc.reason, **record})
        raise
    except SmokeHarnessError as exc:
        atomic_write_json(smoke / "smoke.json", {"accepted": False, "kind": "harness", "reason": str(exc), **record})
        raise
    atomic_write_json(smoke / "smoke.json", {"accepted": True, **result.to_dict(), **record})
    return result


def validate_and_smoke(parent_source: str, function_name: str, new_source: str, smoke_dir: str | os.PathLike, *,
                       child_config: Any = None, sandboxed: bool = True, timeout_s: float = DEFAULT_SMOKE_TIMEOUT_S,
                       max_steps: int = DEFAULT_SMOKE_MAX_STEPS,
                       cache_dir: str | os.PathLike | None = None) -> ValidatedEdit:
    """Static checks, then the smoke run: what decide calls for a code modification.

    The cheap static checks run first so an obviously bad edit never costs a subprocess.
    """
    child = check_code_modification(parent_source, function_name, new_source)
    result = smoke_run(child, smoke_dir, child_config=child_config, sandboxed=sandboxed, timeout_s=timeout_s,
                       max_steps=max_steps, cache_dir=cache_dir)
    return ValidatedEdit(child_source=child, smoke=result)
