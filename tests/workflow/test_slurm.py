"""A tiny pipeline through profiles/slurm on a real one-node SLURM cluster started on this machine.

The session fixture runs tests/slurm/start_cluster.sh (installs slurm-wlm + munge with apt-get
when missing, starts munged, slurmctld and slurmd) and tests/slurm/stop_cluster.sh at the end,
which stops only what the start script started. This machine has no GPU, so the profile's GPU
request for train is overridden to none; everything else is the profile as shipped, scaled
down to the node (2 CPUs).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent import layout
from wf_helpers import REPO, SNAKEFILE, SNAKEMAKE, SnakemakeResult, job_counts, workflow_env, write_workflow_config

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

START = REPO / "tests" / "slurm" / "start_cluster.sh"
STOP = REPO / "tests" / "slurm" / "stop_cluster.sh"

#: Overrides that fit the profile to a 2-CPU node without a GPU (the one thing the issue overrides
#: is the GPU; memory, CPUs and runtime are scaled down so SLURM accepts the jobs here).
NODE_FIT = [
    "--set-resources", "train:gpu=0", "train:mem_mb=2000", "train:cpus_per_task=1", "train:runtime=30",
    "simulate:mem_mb=2000", "analyze:mem_mb=2000",
    "--set-threads", "train=1",
    "--slurm-no-account",
    "--slurm-init-seconds-before-status-checks", "1",
    "--jobs", "2",
]


@pytest.fixture(scope="session")
def slurm_cluster():
    if os.geteuid() != 0:
        pytest.skip("the one-node SLURM cluster needs root (apt-get, munged, slurmd)")
    started = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=900)
    assert started.returncode == 0, f"start_cluster.sh failed:\n{started.stdout}\n{started.stderr}"
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run(["bash", str(STOP)], capture_output=True, text=True, timeout=120)


def _completed_jobs() -> str:
    return subprocess.run(["scontrol", "show", "jobs"], capture_output=True, text=True, timeout=30).stdout


SECRET = "sk-ant-slurm-test-9876543210abcdef"


class SecretScanner(threading.Thread):
    """Reads /proc/*/environ of every process while the run goes on: who holds SECRET, and
    which training processes were seen (so the scan demonstrably covered the SLURM jobs)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.holders: dict[int, str] = {}
        self.trainers_seen: set[int] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    cmdline = (proc / "cmdline").read_bytes()
                    environ = (proc / "environ").read_bytes()
                    if (proc / "cmdline").read_bytes() != cmdline:
                        continue  # it exec'd between the reads: this environ belongs to neither program
                except OSError:
                    continue
                cmdline = cmdline.replace(b"\0", b" ").decode(errors="replace")
                if "neuralgraph train" in cmdline:
                    self.trainers_seen.add(int(proc.name))
                if SECRET.encode() in environ:
                    self.holders[int(proc.name)] = cmdline
            time.sleep(0.1)


class QueueWatcher(threading.Thread):
    """Polls squeue while the run goes on: the most train jobs seen RUNNING at the same moment."""

    def __init__(self):
        super().__init__(daemon=True)
        self.most_trains_running = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            queue = subprocess.run(["squeue", "-h", "-o", "%k %T"], capture_output=True, text=True).stdout
            running = sum(1 for line in queue.splitlines() if line.startswith("rule_train") and "RUNNING" in line)
            self.most_trains_running = max(self.most_trains_running, running)
            time.sleep(0.3)


def run_with_secret(workdir: Path, *args: str, timeout: float = 900
                    ) -> tuple[SnakemakeResult, int, SecretScanner, QueueWatcher]:
    """snakemake with ANTHROPIC_API_KEY=SECRET in its environment, scanned while it runs."""
    cmd = [str(SNAKEMAKE), "--snakefile", str(SNAKEFILE), "--directory", str(workdir), *args]
    scanner, queue = SecretScanner(), QueueWatcher()
    scanner.start()
    queue.start()
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=workdir,
                            env={**workflow_env(), "ANTHROPIC_API_KEY": SECRET})
    out, err = proc.communicate(timeout=timeout)
    for watcher in (scanner, queue):
        watcher.stop.set()
        watcher.join()
    return SnakemakeResult(proc.returncode, out, err, time.monotonic() - started), proc.pid, scanner, queue


def test_tiny_pipeline_through_the_slurm_profile(slurm_cluster, tmp_path):
    """A round of two slots: its two train jobs are RUNNING in the queue at the same time."""
    write_workflow_config(tmp_path, name="tiny_slurm", schedule=[1], n_iter_block=2, slots=2)
    result, snakemake_pid, scanner, queue = run_with_secret(
        tmp_path, "--profile", str(REPO / "profiles" / "slurm"), *NODE_FIT)
    result.check()
    assert queue.most_trains_running == 2, "the round's two trainings never ran side by side in the queue"
    # The API key in Snakemake's environment reached no SLURM job and no process they started:
    # only Snakemake itself holds it (its initial environment); agent-decide reads it from the
    # in-memory vault into its own process, not into an environment anyone inherits.
    assert scanner.trainers_seen, "the scan must have seen the SLURM train jobs running"
    # The SLURM executor plugin runs `scontrol show config` when Snakemake imports it, before the
    # Snakefile is parsed and the key leaves Snakemake's environment: that query on this host
    # inherits it (docs/workflow.md). No job and no process a job started holds it.
    # A process Snakemake forks shows Snakemake's own command line and initial environment block
    # until it execs (/proc/PID/environ is the block the process started with, not os.environ):
    # such a fork is Snakemake itself, caught between fork and exec; after exec its environment is
    # the one Snakemake passes on, which the scan checks like any other process.
    snakemake_cmdline = scanner.holders.get(snakemake_pid)
    probes = {pid for pid, cmd in scanner.holders.items() if cmd.split()[:1] in (["scontrol"], ["sacct"], ["squeue"])}
    forks = {pid for pid, cmd in scanner.holders.items() if cmd == snakemake_cmdline}
    leaked = {pid: cmd for pid, cmd in scanner.holders.items() if pid not in probes | forks | {snakemake_pid}}
    assert not leaked, "processes other than Snakemake held the API key:\n" + "\n".join(
        f"{pid}: {cmd[:300]}" for pid, cmd in leaked.items())
    counts = job_counts(result.output)
    assert counts["train"] == 2 and counts["analyze"] == 2 and counts["decide_002"] == 1

    results = tmp_path / "results" / "tiny_slurm"
    for it in (1, 2):
        folder = results / f"iter_{it:03d}"
        for name in ("model.pt", "training.json", "metrics.json", "node.json"):
            assert (folder / name).is_file(), f"{folder.name}/{name} missing"
    for name in ("decision.json", "memory.md"):  # the round's decision, in its last node's folder
        assert (results / "iter_002" / name).is_file() and not (results / "iter_001" / name).exists()
    assert (results / "summary" / "summary.tsv").is_file()

    # simulate, train and analyze went through sbatch; the agent's rules stayed on this host
    submitted = re.findall(r"submitted with SLURM jobid \d+ \(log: .*?/slurm_logs/rule_([A-Za-z0-9_]+)/", result.output)
    assert sorted(submitted) == ["analyze", "analyze", "simulate", "train", "train"], submitted
    slurm_logs = tmp_path / ".snakemake" / "slurm_logs"
    for rule in ("simulate", "train", "analyze"):  # the profile keeps the logs of successful jobs
        assert list((slurm_logs / f"rule_{rule}").rglob("*.log")), f"no SLURM job log for {rule}"
    for rule in ("init", "ucb", "decide_002", "summarize"):
        assert f"localrule {rule}:" in result.output, f"{rule} must run on the submitting host"
    jobs = _completed_jobs()
    assert jobs.count("JobState=COMPLETED") >= 5, jobs[-3000:]
    assert "gpu" not in " ".join(line for line in jobs.splitlines() if "TRES" in line).lower()


def test_a_round_as_one_grouped_slurm_job(slurm_cluster, tmp_path):
    """The profile's option: a round's trainings submitted as ONE SLURM job (Snakemake job group).

    Measured here: the plugin's job-step executor runs the group's jobs one after the other
    inside that allocation (profiles/slurm/config.yaml says so), so the test checks the grouping
    and the results, not an overlap.
    """
    write_workflow_config(tmp_path, name="grouped", schedule=[1], n_iter_block=2, slots=2)
    # Targets: the round's two trainings (what a user names to run part of the chain); the rest
    # of the chain is the first test's and would only add SLURM jobs this one does not read.
    trainings = [f"results/grouped/{layout.iteration_dir_name(it)}/{layout.TRAINING_RECORD_FILE}" for it in (1, 2)]
    result, _, _, _ = run_with_secret(tmp_path, *trainings, "--profile", str(REPO / "profiles" / "slurm"), *NODE_FIT,
                                      "--groups", "train=round", "--group-components", "round=2")
    result.check()
    submitted = re.findall(r"submitted with SLURM jobid \d+ \(log: .*?/slurm_logs/(\w+)/", result.output)
    assert "rule_train" not in submitted and submitted.count("group_round_train") == 1, submitted
    group_log = next((tmp_path / ".snakemake" / "slurm_logs" / "group_round_train").rglob("*.log")).read_text()
    assert "train iteration 001" in group_log and "train iteration 002" in group_log
    assert sorted(submitted) == ["group_round_train", "rule_simulate"], submitted  # nothing past the targets
    for training in trainings:
        assert json.loads((tmp_path / training).read_text())["status"] == "ok"
