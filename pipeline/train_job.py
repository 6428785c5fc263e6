"""The train rule's job: the packaged loop runs as is, an edited loop only inside the sandbox.

``python -m pipeline train --config C --data D --out RUN --loop L`` (or ``--plan P --iteration
I``, every path from plan.json and the layout: :func:`train_inputs`) is the train command users
and the workflow meet; it decides how the engine, ``python -m neuralgraph train``, runs, by
comparing L with the packaged training loop:

- the packaged loop (shipped code): the trainer replaces this process (``exec``) with an
  environment rebuilt from the sandbox's allow-list, so no API key or token reaches the
  training job, on a laptop or a SLURM node (where ``sbatch --export=ALL`` would pass them);
- an edited loop (written by an agent or brought by a replay): under
  ``agent.code_modification: sandboxed`` (default) inside bubblewrap
  (:func:`agent.sandbox.run_contained`); ``unsandboxed`` without the namespaces (explicit
  opt-in); ``off`` refuses to run it.

An edited loop runs on a staged layout in ``RUN/.contained/`` (:func:`stage_inputs`): a
read-only ``in/`` (copies of the config and the loop, a training view of the dataset: u, du
and trimmed metadata, never W, types or statistics) and a fresh, empty ``scratch/``, the only
writable folder (the last checkpoint is copied in to resume). Nothing written there is
trusted (:func:`collect_outputs`): only the declared outputs come back into RUN, each a
regular file under its size cap, model.pt holding exactly the model's tensors (and rewritten
by this process); a link, FIFO, device or socket anywhere in scratch, an oversized or
malformed output, or a scratch folder past :func:`scratch_cap_bytes` makes the run
``tampered``: recorded like ``diverged`` with the untrained model, and the chain goes on.

Caps: what the run prints is cut at :data:`agent.sandbox.OUTPUT_CAP_BYTES`; a wall-clock cap
always applies (:func:`wall_cap_s`: :data:`WALL_CAP_FACTOR` x ``training_time_target_min``,
else :data:`PARENT_TIME_FACTOR` x the parent's measured training time, else
:data:`DEFAULT_WALL_CAP_S`; plus the startup grace). The stall watchdog reads the trainer's
heartbeat (``scratch/progress.json``, seconds per step): no new step for
max(:data:`STALL_FLOOR_S`, :data:`STALL_STEPS` x seconds per step) is a stall; before the
first heartbeat :data:`STARTUP_GRACE_S` applies. Everything inside the sandbox is the
attacker's code, the heartbeat included: it can be faked (a thread rewriting it), and no
channel from inside could be trusted more. The wall cap, kept by this process, is what bounds
a run that fakes its progress; a stalled or capped run ends with status ``stalled``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import stat
import sys
import time
from pathlib import Path
from typing import Any, Optional

from agent import layout
from agent.run_plan import PlanError, read_plan
from agent.sandbox import (CODE_MODIFICATION_MODES, DEFAULT_CODE_MODIFICATION, OUTPUT_CAP_BYTES, SandboxUnavailable,
                           code_modification_refusal, contained_environment, run_contained, training_limits)
from neuralgraph import PACKAGED_LOOP
from neuralgraph.config import ExperimentConfig, load_config
from neuralgraph.dataset import load_dataset, write_training_view
from neuralgraph.device import gpu_device_nodes_present
from neuralgraph.io import LinkRefusedError, atomic_write_json, check_no_links, open_nofollow, read_json
from neuralgraph.run_files import (FINISHED_STATUSES, HEARTBEAT_FILE, STATUS_STALLED, STATUS_TAMPERED,
                                   finished_record)

#: Shortest time without a new step that counts as a stall.
STALL_FLOOR_S = 600.0
#: ... or this many times the measured seconds per step, whichever is longer.
STALL_STEPS = 50
#: Time allowed before the first heartbeat (imports, data loading, the first steps).
STARTUP_GRACE_S = 900.0
#: The wall-clock cap is this many times the time target (plus the startup grace) ...
WALL_CAP_FACTOR = 3.0
#: ... else this many times the parent's measured training time (plus the startup grace) ...
PARENT_TIME_FACTOR = 10.0
#: ... else this (the train rule's runtime resource, 240 min).
DEFAULT_WALL_CAP_S = 4 * 3600.0
#: Exit code when the job refuses to run the loop at all (no sandbox, code modifications off).
EXIT_REFUSED = 2
#: What `pipeline train --plan P --iteration I` derives from the plan (refused beside --plan).
TRAIN_FROM_PLAN = ("config", "data", "out", "loop", "code_modification")
#: The staged layout of a contained training, inside the run folder (hidden: never archived).
CONTAINED_DIR = ".contained"
#: The outputs a contained training may hand back (everything else in scratch is dropped).
DECLARED_OUTPUTS = (layout.MODEL_FILE, layout.TRAINING_RECORD_FILE, layout.CHECKPOINT_FILE)
#: training.json of a contained run may not be larger.
RECORD_CAP_BYTES = 16 * 1024 ** 2
#: A heartbeat larger than this is ignored (it is a few numbers).
HEARTBEAT_CAP_BYTES = 64 * 1024
#: Room beyond the tensors: pickle framing of model.pt, loss history and bookkeeping of a checkpoint.
MODEL_SLACK_BYTES = 1024 ** 2
CHECKPOINT_SLACK_BYTES = 256 * 1024 ** 2


class TrainJobError(RuntimeError):
    """The job cannot run this iteration's loop as configured; the message names the setting."""


class Tampered(RuntimeError):
    """A contained run left something it must not (the message says what)."""


def is_packaged_loop(loop: str | os.PathLike) -> bool:
    """True when the loop file is byte-identical to the packaged neuralgraph/train_loop.py."""
    return Path(loop).read_bytes() == PACKAGED_LOOP.read_bytes()


class StallWatchdog:
    """Says why to stop a contained training: no progress for too long, or past the wall cap."""

    def __init__(self, run_dir: Path, stall_floor_s: float, startup_grace_s: float, wall_cap_s: Optional[float],
                 cap_origin: str = ""):
        self.heartbeat = run_dir / HEARTBEAT_FILE
        self.stall_floor_s, self.startup_grace_s, self.wall_cap_s = stall_floor_s, startup_grace_s, wall_cap_s
        self.cap_origin = cap_origin
        self.started = time.monotonic()
        self.last_step: Optional[int] = None
        self.last_progress = self.started
        self.seconds_per_step: Optional[float] = None
        self.heartbeat.unlink(missing_ok=True)  # a previous attempt's heartbeat is not progress

    def _read(self) -> None:
        try:
            if os.lstat(self.heartbeat).st_size > HEARTBEAT_CAP_BYTES:  # written inside: never read a huge one
                return
            beat = read_json(self.heartbeat)
            step, rate = int(beat["step"]), beat.get("seconds_per_step")
        except (OSError, ValueError, KeyError, TypeError):
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
        now = time.monotonic()
        if self.wall_cap_s is not None and now - self.started > self.wall_cap_s:
            return f"ran past its wall-clock cap of {self.wall_cap_s / 60:.1f} min ({self.cap_origin})"
        self._read()
        quiet = now - self.last_progress
        if quiet > self.stall_timeout_s():
            where = f"after step {self.last_step}" if self.last_step is not None else "before its first step"
            return f"no training progress for {quiet:.0f} s {where} (stall limit {self.stall_timeout_s():.0f} s)"
        return None


def parent_training_minutes(run_dir: Path) -> Optional[float]:
    """The parent iteration's measured training time (proposal.json's parent, its training.json), or None."""
    try:
        parent = read_json(run_dir / layout.PROPOSAL_FILE).get("parent")
        record = read_json(run_dir.parent / layout.iteration_dir_name(int(parent)) / layout.TRAINING_RECORD_FILE)
        minutes = float(record["training_time_min"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return minutes if minutes > 0 else None


def wall_cap_s(cfg: ExperimentConfig, run_dir: Path, startup_grace_s: float,
               default_s: float = DEFAULT_WALL_CAP_S) -> tuple[float, str]:
    """The wall-clock cap of a contained training and where it came from (it always applies)."""
    target = cfg.training.training_time_target_min
    if target:
        return WALL_CAP_FACTOR * target * 60.0 + startup_grace_s, f"{WALL_CAP_FACTOR:g} x the time target"
    parent = parent_training_minutes(run_dir)
    if parent:
        return (PARENT_TIME_FACTOR * parent * 60.0 + startup_grace_s,
                f"{PARENT_TIME_FACTOR:g} x the parent's training time of {parent:.1f} min")
    return default_s, "the default cap: no time target and no parent training time"


def trainer_command(config: str, data: str, out: str, loop: str, absolute: bool = False) -> list[str]:
    """``python -m neuralgraph train ...``; ``absolute`` paths for the sandbox, which starts in its scratch folder."""
    paths = [Path(os.path.abspath(p)) if absolute else Path(p) for p in (config, data, out, loop)]
    return [sys.executable, "-m", "neuralgraph", "train",
            *[item for flag, path in zip(("--config", "--data", "--out", "--loop"), paths) for item in (flag, str(path))]]


# --------------------------------------------------------------------------- the staged layout


def model_bytes(cfg: ExperimentConfig, dataset: Any) -> int:
    """Bytes of the model's tensors (what model.pt must hold, and a checkpoint a few times over)."""
    from neuralgraph.model import build_model

    return sum(t.numel() * t.element_size() for t in build_model(cfg, dataset).state_dict().values())


def output_caps(tensor_bytes: int) -> dict[str, int]:
    """The size cap of each declared output."""
    return {layout.MODEL_FILE: 2 * tensor_bytes + MODEL_SLACK_BYTES, layout.TRAINING_RECORD_FILE: RECORD_CAP_BYTES,
            layout.CHECKPOINT_FILE: 8 * tensor_bytes + CHECKPOINT_SLACK_BYTES}


def scratch_cap_bytes(tensor_bytes: int) -> int:
    """The scratch folder's total cap: every output twice over (an atomic write holds old and new)."""
    return 2 * sum(output_caps(tensor_bytes).values()) + 64 * 1024 ** 2


def stage_inputs(stage: Path, config: str, data: str, loop: str, cfg: ExperimentConfig) -> dict[str, Path]:
    """Write ``stage/in`` (read-only inside: config, loop, the dataset's training view) and an
    empty ``stage/scratch`` (the only writable folder); the paths the trainer is given."""
    inputs, scratch = stage / "in", stage / "scratch"
    inputs.mkdir(parents=True)
    scratch.mkdir()
    shutil.copyfile(config, inputs / layout.CONFIG_FILE)
    shutil.copyfile(loop, inputs / layout.LOOP_FILE)
    view = write_training_view(data, inputs / "data", with_support=cfg.graph_model.connectivity_mask == "true_support")
    return {"config": inputs / layout.CONFIG_FILE, "loop": inputs / layout.LOOP_FILE, "data": view, "scratch": scratch}


def _regular_file(path: Path, cap: int) -> os.stat_result:
    """lstat of a declared output that must be a regular file of at most ``cap`` bytes (Tampered otherwise)."""
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        raise Tampered(f"{path.name} is not a regular file (mode {stat.filemode(info.st_mode)})")
    if info.st_nlink != 1:
        raise Tampered(f"{path.name} has {info.st_nlink} hard links")
    if info.st_size > cap:
        raise Tampered(f"{path.name} holds {info.st_size} bytes, over its cap of {cap}")
    return info


def check_scratch(scratch: Path) -> None:
    """Refuse a scratch folder holding anything but regular files and folders (a link, FIFO, socket, device)."""
    for folder, dirs, files in os.walk(scratch, followlinks=False):
        for name in [*dirs, *files]:
            mode = os.lstat(os.path.join(folder, name)).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                kind = "a symbolic link" if stat.S_ISLNK(mode) else f"a special file ({stat.filemode(mode)})"
                rel = os.path.relpath(os.path.join(folder, name), scratch)
                raise Tampered(f"it left {kind} in its scratch folder: {rel}")


def validated_model(path: Path, cfg: ExperimentConfig, dataset: Any, cap: int):
    """The model of ``path`` (model.pt written inside), only if it holds exactly the model's tensors."""
    import torch

    from neuralgraph.model import build_model

    _regular_file(path, cap)
    with open_nofollow(path, "rb") as fh:
        try:
            payload = torch.load(fh, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise Tampered(f"model.pt is not a readable model file ({type(exc).__name__})") from None
    model = build_model(cfg, dataset)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state = payload.get("state_dict") if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise Tampered("model.pt holds no state_dict of tensors")
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found != expected:
        extra, missing = sorted(set(found) - set(expected)), sorted(set(expected) - set(found))
        wrong = sorted(k for k in set(found) & set(expected) if found[k] != expected[k])
        raise Tampered(f"model.pt does not hold the model's tensors (extra {extra[:5]}, missing {missing[:5]}, "
                       f"wrong shapes {wrong[:5]})")
    model.load_state_dict(state)
    return model


def collect_outputs(scratch: Path, run_dir: Path, cfg: ExperimentConfig, data: str, loop: str,
                    finished: bool) -> None:
    """Move what a contained run may hand back from ``scratch`` into ``run_dir`` (Tampered when
    it left anything it must not). ``finished``: the run exited 0, so model.pt and training.json
    must be there; otherwise only the checkpoint comes back (to resume)."""
    from neuralgraph.model import save_trained_model

    check_scratch(scratch)
    dataset = load_dataset(data, mmap=True)
    caps = output_caps(model_bytes(cfg, dataset))
    for name in DECLARED_OUTPUTS:
        if (scratch / name).exists() or os.path.lexists(scratch / name):
            _regular_file(scratch / name, caps[name])
    if finished:
        for name in (layout.MODEL_FILE, layout.TRAINING_RECORD_FILE):
            if not os.path.lexists(scratch / name):
                raise Tampered(f"it exited 0 without writing {name}")
        model = validated_model(scratch / layout.MODEL_FILE, cfg, dataset, caps[layout.MODEL_FILE])
        try:
            record = read_json(scratch / layout.TRAINING_RECORD_FILE)
        except (OSError, ValueError) as exc:
            raise Tampered(f"training.json is not valid JSON ({exc})") from None
        if not isinstance(record, dict) or record.get("status") not in FINISHED_STATUSES:
            raise Tampered(f"training.json has no finished status (one of {', '.join(FINISHED_STATUSES)})")
        record["loop_file"] = str(Path(loop))
    if os.path.lexists(scratch / layout.CHECKPOINT_FILE):
        os.replace(scratch / layout.CHECKPOINT_FILE, run_dir / layout.CHECKPOINT_FILE)
    if finished:
        save_trained_model(model, cfg, run_dir / layout.MODEL_FILE)  # rewritten here: only the tensors survive
        atomic_write_json(run_dir / layout.TRAINING_RECORD_FILE, record)


def _fresh_stage(run_dir: Path, cfg: ExperimentConfig, data: str) -> Path:
    """Clear RUN/.contained; a checkpoint a killed job left in its scratch is kept if it passes the checks."""
    stage = run_dir / CONTAINED_DIR
    leftover = stage / "scratch" / layout.CHECKPOINT_FILE
    if os.path.lexists(leftover):
        try:
            check_scratch(stage / "scratch")
            _regular_file(leftover, output_caps(model_bytes(cfg, load_dataset(data, mmap=True)))[layout.CHECKPOINT_FILE])
            os.replace(leftover, run_dir / layout.CHECKPOINT_FILE)
        except (Tampered, OSError) as exc:
            print(f"pipeline train: the previous attempt's checkpoint is not used: {exc}", flush=True)
    if os.path.lexists(stage):
        if os.path.islink(stage):
            stage.unlink()
        else:
            shutil.rmtree(stage)  # never follows a link inside
    return stage


# --------------------------------------------------------------------------- the job


def _record_stopped_run(*args, **kwargs) -> None:
    """:func:`neuralgraph.training.record_stopped_run`, imported here: it builds the model (torch),
    which the job needs only for a run it stopped; a packaged-loop job execs the engine without
    paying torch's import first."""
    from neuralgraph.training import record_stopped_run

    record_stopped_run(*args, **kwargs)


def run_train_job(config: str, data: str, out: str, loop: str, code_modification: str = "sandboxed",
                  threads: int = 1, stall_floor_s: float = STALL_FLOOR_S, startup_grace_s: float = STARTUP_GRACE_S,
                  default_wall_cap_s: float = DEFAULT_WALL_CAP_S, output_cap_bytes: int = OUTPUT_CAP_BYTES) -> int:
    """Train one iteration (see the module docstring); returns the trainer's exit code."""
    cfg = load_config(config)
    gpu = cfg.training.device != "cpu" and gpu_device_nodes_present()
    if is_packaged_loop(loop):
        sys.stdout.flush()
        command = trainer_command(config, data, out, loop)
        os.execve(sys.executable, command, contained_environment(threads=threads, cuda=gpu, environ=dict(os.environ)))
    refusal = code_modification_refusal(code_modification)
    if refusal:
        raise TrainJobError(f"{loop} differs from the packaged training loop: {refusal}")
    run_dir = Path(out)
    check_no_links(run_dir / layout.MODEL_FILE)
    run_dir.mkdir(parents=True, exist_ok=True)
    if finished_record(run_dir) is not None:
        print(f"pipeline train: {run_dir} already finished: nothing to do", flush=True)
        return 0
    stage = _fresh_stage(run_dir, cfg, data)
    staged = stage_inputs(stage, config, data, loop, cfg)
    scratch = staged["scratch"]
    if os.path.lexists(run_dir / layout.CHECKPOINT_FILE) and stat.S_ISREG(os.lstat(run_dir / layout.CHECKPOINT_FILE).st_mode):
        shutil.copyfile(run_dir / layout.CHECKPOINT_FILE, scratch / layout.CHECKPOINT_FILE)  # resume from the last checkpoint
    cap_s, origin = wall_cap_s(cfg, run_dir, startup_grace_s, default_wall_cap_s)
    watchdog = StallWatchdog(scratch, stall_floor_s, startup_grace_s, cap_s, origin)
    storage_cap = scratch_cap_bytes(model_bytes(cfg, load_dataset(data, mmap=True)))
    sandboxed = code_modification == "sandboxed"
    print(f"pipeline train: {loop} is an edited loop: training it {'inside the sandbox' if sandboxed else 'UNSANDBOXED'}"
          f" (stall watchdog on, wall cap {cap_s / 60:.1f} min: {origin}; output cap {output_cap_bytes} bytes)",
          flush=True)
    command = trainer_command(str(staged["config"]), str(staged["data"]), str(scratch), str(staged["loop"]), absolute=True)
    try:
        ended = run_contained(command, sandboxed=sandboxed, writable=[scratch],
                              readable=[staged["config"], staged["loop"], staged["data"]],
                              limits=training_limits(gpu), threads=threads, gpu=gpu, watchdog=watchdog, poll_s=2.0,
                              forward_signals=True, output_cap_bytes=output_cap_bytes, scratch_cap_bytes=storage_cap)
    except SandboxUnavailable as exc:
        raise TrainJobError(f"no sandbox for the edited loop {loop}: {exc}") from None
    try:
        if ended.killed_because and ended.killed_because.startswith(("wrote", "made")):
            raise Tampered(ended.killed_because)
        collect_outputs(scratch, run_dir, cfg, data, loop, finished=ended.returncode == 0)
    except (Tampered, LinkRefusedError) as exc:
        reason = f"the edited loop's run was not trusted: {exc}"
        print(f"pipeline train: {reason}; recorded as status {STATUS_TAMPERED!r}", flush=True)
        (run_dir / layout.CHECKPOINT_FILE).unlink(missing_ok=True)
        _record_stopped_run(cfg, data, run_dir, STATUS_TAMPERED, reason, use_checkpoint=False)
        return 0
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if ended.killed_because:
        reason = f"stopped by the watchdog: the edited loop {ended.killed_because}"
        print(f"pipeline train: {reason}; recorded as status {STATUS_STALLED!r}", flush=True)
        _record_stopped_run(cfg, data, run_dir, STATUS_STALLED, reason)
        return 0
    return int(ended.returncode or 0)


# --------------------------------------------------------------------------- python -m pipeline train
# Here, not in a train_cli.py: the command is this job's whole interface (the train rule runs
# nothing else), and its options are the job's own caps and paths.


def build_parser() -> argparse.ArgumentParser:
    """train's options: --plan --iteration (the train rule's form) or the paths one by one, and the job's caps."""
    p = argparse.ArgumentParser(prog="python -m pipeline train")
    p.add_argument("--plan", default=None, help="results/<exp>/plan.json: config, data, run folder, loop and "
                                                 "code-modification mode of --iteration from it (agent.run_plan)")
    p.add_argument("--iteration", type=int, default=None, help="the iteration to train (with --plan)")
    p.add_argument("--config", default=None, help="the run's config.yaml (without --plan)")
    p.add_argument("--data", default=None, help="dataset folder (without --plan)")
    p.add_argument("--out", default=None, help="the run folder (without --plan)")
    p.add_argument("--loop", default=None, help="the run's training module (default: the packaged one)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of the training")
    p.add_argument("--code-modification", default=None, choices=CODE_MODIFICATION_MODES,
                   help=f"how a loop that differs from the packaged one may run (agent.code_modification; "
                        f"default {DEFAULT_CODE_MODIFICATION})")
    p.add_argument("--stall-floor-s", type=float, default=STALL_FLOOR_S,
                   help="shortest time without progress that counts as a stall (edited loops only)")
    p.add_argument("--startup-grace-s", type=float, default=STARTUP_GRACE_S,
                   help="time allowed before the first progress report (edited loops only)")
    p.add_argument("--default-wall-cap-s", type=float, default=DEFAULT_WALL_CAP_S,
                   help="wall-clock cap of an edited loop without a time target or a parent's training time")
    return p


def train_inputs(args: argparse.Namespace) -> dict:
    """config, data, out, loop and code_modification of the train job: from the plan and the
    layout (the iteration's folder, the results' dataset folder), or as given one by one."""
    if args.plan is None:
        missing = [name for name in ("config", "data", "out") if getattr(args, name) is None]
        if missing:
            raise TrainJobError(f"{', '.join('--' + m for m in missing)}: required without --plan")
        return {"config": args.config, "data": args.data, "out": args.out, "loop": args.loop or str(PACKAGED_LOOP),
                "code_modification": args.code_modification or DEFAULT_CODE_MODIFICATION}
    given = ["--" + name.replace("_", "-") for name in TRAIN_FROM_PLAN if getattr(args, name) is not None]
    if given:
        raise TrainJobError(f"{', '.join(given)}: comes from the plan with --plan {args.plan}")
    if args.iteration is None:
        raise TrainJobError("--iteration: required with --plan")
    try:
        plan = read_plan(args.plan)
    except PlanError as exc:
        raise TrainJobError(str(exc)) from None
    folder = layout.IterationFolder.at(plan.results, args.iteration)
    return {"config": str(folder.config_path), "data": str(Path(plan.results) / layout.DATA_DIR),
            "out": str(folder.path), "loop": str(folder.loop_path), "code_modification": plan.agent.code_modification}


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m pipeline train``: the trainer's exit code, or :data:`EXIT_REFUSED` with one line naming the setting."""
    args = build_parser().parse_args(argv)
    try:
        job = train_inputs(args)
        return run_train_job(job["config"], job["data"], job["out"], job["loop"],
                             code_modification=job["code_modification"], threads=args.threads,
                             stall_floor_s=args.stall_floor_s, startup_grace_s=args.startup_grace_s,
                             default_wall_cap_s=args.default_wall_cap_s)
    except TrainJobError as exc:
        print(f"pipeline train: error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
