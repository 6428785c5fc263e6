"""A training process killed mid-run; the same command then finishes it from its checkpoint."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml

from wf_helpers import REPO, TINY_EXPERIMENT, mtimes, snakemake, start_snakemake, write_workflow_config

pytestmark = pytest.mark.slow

#: 10 epochs of floor(floor(1500 * 25 / 8) * 0.2) = 937 steps: long enough to be killed mid-run
#: (about 10 s on an idle core). agent init copies the claude section's values into training.
LONG = {"n_epochs": 10, "data_augmentation_loop": 25}
TARGET = "results/long/iter_001/training.json"


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (read from /proc), so only what this test started is touched."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def _training_process(snakemake_pid: int, out_arg: str) -> int | None:
    """pid of `python -m neuralgraph train ... --out OUT_ARG` below snakemake, if running."""
    for pid in _descendants(snakemake_pid):
        args = _cmdline(pid)
        if "neuralgraph" in args and "train" in args and out_arg in args:
            return pid
    return None


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _long_tiny_workdir(tmp_path: Path, **overrides) -> Path:
    """Workflow config whose iterations train long enough to be killed; returns iteration 1's folder."""
    experiment = yaml.safe_load(TINY_EXPERIMENT.read_text(encoding="utf-8"))
    experiment["training"].update(LONG, checkpoint_every_min=0.005)
    experiment["claude"].update(LONG)
    experiment_path = tmp_path / "long_tiny.yaml"
    experiment_path.write_text(yaml.safe_dump(experiment), encoding="utf-8")
    write_workflow_config(tmp_path, experiment=str(experiment_path), name="long", **overrides)
    return tmp_path / "results" / "long" / "iter_001"


def _kill_training_after_first_checkpoint(proc, run_dir: Path) -> None:
    _wait_for((run_dir / "checkpoint.pt").is_file, 300, "the first checkpoint")
    pid = _wait_for(lambda: _training_process(proc.pid, "results/long/iter_001"), 30, "the training process")
    os.kill(pid, signal.SIGKILL)  # a hard crash: no chance to save anything more


#: What Snakemake prints when it sees the user's Ctrl-C and stops.
SNAKEMAKE_STOPS = "Terminating processes on user request"


def _interrupt(proc, workdir: Path) -> bool:
    """SIGINT to Snakemake's whole process group, as Ctrl-C in a terminal; True when Snakemake stopped.

    Seen in CI (2026-12-01, the run's output kept): now and then Snakemake does not act on a
    SIGINT that its train job does act on. The job checkpoints and exits 143, the local
    profile's `retries: 1` resubmits it, the retry resumes from the checkpoint and the run
    completes with exit 0. That is Snakemake's to explain; ours is that in both cases no finished
    work is redone and the interrupted training resumes, which the callers check.
    """
    os.killpg(proc.pid, signal.SIGINT)
    code = proc.wait(timeout=600)
    output = (workdir / "snakemake.out").read_text()
    if code != 0:
        return True
    assert SNAKEMAKE_STOPS not in output, "Snakemake stopped on the interrupt but reported success"
    assert "returned non-zero exit status 143" in output, (
        "exit 0 after an interrupt, without the interrupted training having been retried:\n" + output[-3000:])
    return False


def _assert_resumed(run_dir: Path, label: str = "001") -> None:
    record = json.loads((run_dir / "training.json").read_text(encoding="utf-8"))
    assert record["status"] == "ok"
    assert record["resumed_from_step"] > 0, "training restarted from scratch instead of the checkpoint"
    assert record["iterations"] > record["resumed_from_step"]
    log = (run_dir / "train.log").read_text(encoding="utf-8")
    assert log.count(f"train iteration {label}") == 2, "train.log must keep both attempts"
    assert "resuming from checkpoint" in log


def _run_and_kill(tmp_path: Path, *args: str) -> tuple[Path, int]:
    run_dir = _long_tiny_workdir(tmp_path)
    proc = start_snakemake(tmp_path, TARGET, *args)
    try:
        _kill_training_after_first_checkpoint(proc, run_dir)
        return run_dir, proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_killed_training_then_the_same_command_finishes_from_checkpoint(tmp_path):
    run_dir, returncode = _run_and_kill(tmp_path)
    assert returncode != 0, "snakemake must report the killed training as a failed job"
    assert (run_dir / "checkpoint.pt").is_file(), "the checkpoint must survive the failed job"
    assert not (run_dir / "training.json").exists()
    snakemake(tmp_path, TARGET, timeout=600).check()
    _assert_resumed(run_dir)


def test_retries_resubmit_a_killed_training_which_resumes(tmp_path):
    run_dir, returncode = _run_and_kill(tmp_path, "--retries", "1")
    assert returncode == 0, (tmp_path / "snakemake.out").read_text()[-3000:]
    _assert_resumed(run_dir)


def test_interrupted_run_then_the_same_command_finishes_without_redoing_finished_iterations(tmp_path):
    """Ctrl-C (SIGINT to the whole foreground group) during iteration 2's training; then the
    same command: iteration 1 and the dataset are kept as they are, iteration 2 resumes."""
    first = _long_tiny_workdir(tmp_path, schedule=[1], n_iter_block=2)
    second = first.parent / "iter_002"
    profile = ("--profile", str(REPO / "profiles" / "local"))
    proc = start_snakemake(tmp_path, *profile, cores=None)
    try:
        _wait_for((second / "checkpoint.pt").is_file, 300, "iteration 2's first checkpoint")
        kept = mtimes(p for p in first.parent.parent.rglob("*") if p.is_file()
                      and (first in p.parents or p.parent.name == "data"))
        stopped = _interrupt(proc, tmp_path)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if stopped:
        assert not (second / "training.json").exists()

    result = snakemake(tmp_path, *profile, cores=None, timeout=900).check()
    assert "rule simulate" not in result.output and "rule init" not in result.output
    if not stopped:
        assert "Nothing to be done" in result.output
    assert mtimes(kept) == kept, "files of iteration 1 or of the dataset were rewritten"
    _assert_resumed(second, "002")
    assert (first.parent / "summary" / "summary.tsv").is_file()
