"""Helpers for the workflow tests: each drives the real `snakemake` command line in a subprocess.

Every test works in its own working directory (``--directory``) holding its own
``config/config.yaml``, so the repository's results/ and .snakemake/ are never touched and
tests do not lock each other. The tiny 2 blocks x 2 iterations pipeline is run once per
session (:func:`tiny_run`) and shared by the tests that only read its results; tests that
change files work on a copy (:func:`tiny_run_copy`).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from agent.run_plan import PLAN_FILE

REPO = Path(__file__).resolve().parents[2]
SNAKEFILE = REPO / "Snakefile"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
TINY_EXPERIMENT = REPO / "config" / "experiments" / "tiny.yaml"
#: The tiny pipeline: 2 blocks (time_step 1 then 4) of 2 iterations.
TINY_SCHEDULE = [1, 4]
TINY_N_ITER_BLOCK = 2
TINY_NAME = "tiny"


def workflow_env() -> dict[str, str]:
    """Environment of the snakemake subprocess: the venv first on PATH, no display, no API key."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MPLBACKEND"] = "Agg"
    env.pop("ANTHROPIC_API_KEY", None)
    return env


def write_workflow_config(workdir: Path, **overrides: Any) -> Path:
    """workdir/config/config.yaml for the tiny pipeline; ``overrides`` replace top-level keys."""
    cfg: dict[str, Any] = {
        "experiment": str(TINY_EXPERIMENT),
        "name": TINY_NAME,
        "results_dir": "results",
        "schedule": TINY_SCHEDULE,
        "n_iter_block": TINY_N_ITER_BLOCK,
        "agent": {"backend": "heuristic", "seed": 0, "fallback": "fail"},
    }
    cfg.update(overrides)
    path = workdir / "config" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class SnakemakeResult:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def check(self) -> "SnakemakeResult":
        assert self.returncode == 0, f"snakemake failed (rc={self.returncode}):\n{self.output[-6000:]}"
        return self


def snakemake(workdir: Path, *args: str, timeout: float = 900, cores: Optional[int] = 2,
              env: Optional[dict[str, str]] = None) -> SnakemakeResult:
    """Run `snakemake --snakefile REPO/Snakefile --directory WORKDIR ARGS...` and capture it.

    ``env`` adds variables to the subprocess environment (e.g. an API endpoint)."""
    cmd = [str(SNAKEMAKE), "--snakefile", str(SNAKEFILE), "--directory", str(workdir)]
    if cores is not None:
        cmd += ["--cores", str(cores)]
    cmd += list(args)
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**workflow_env(), **(env or {})},
                          cwd=workdir)
    return SnakemakeResult(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)


def start_snakemake(workdir: Path, *args: str, cores: Optional[int] = 2) -> subprocess.Popen:
    """Start snakemake without waiting (kill tests); output goes to workdir/snakemake.out.

    It runs in its own session, so its process group holds only what this test started: a
    Ctrl-C can be imitated by signalling that group."""
    cmd = [str(SNAKEMAKE), "--snakefile", str(SNAKEFILE), "--directory", str(workdir)]
    cmd += ["--cores", str(cores)] if cores is not None else []
    out = open(workdir / "snakemake.out", "w")
    return subprocess.Popen([*cmd, *args], stdout=out, stderr=subprocess.STDOUT, env=workflow_env(), cwd=workdir,
                            start_new_session=True)


def ctrl_c_once_started(workdir: Path, target: str, started: Path, keep_glob: tuple[Path, str],
                        timeout: float = 600) -> tuple[int, dict[Path, int]]:
    """Start ``snakemake target``, wait until the folder ``started`` exists, note the mtimes of
    ``keep_glob`` (folder, pattern: what must not be redone), then Ctrl-C (SIGINT to snakemake's
    process group) and wait. Returns (exit code, the noted mtimes)."""
    proc = start_snakemake(workdir, target)
    try:
        deadline = time.monotonic() + timeout
        while not started.is_dir():
            assert proc.poll() is None, (workdir / "snakemake.out").read_text()[-3000:]
            assert time.monotonic() < deadline, f"{started} never appeared"
            time.sleep(0.2)
        folder, pattern = keep_glob
        kept = {p: p.stat().st_mtime_ns for p in folder.glob(pattern)}
        os.killpg(proc.pid, signal.SIGINT)
        return proc.wait(timeout=timeout), kept
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a snakemake run or dry run: {rule: count}."""
    counts: dict[str, int] = {}
    lines = output.splitlines()
    for start, line in enumerate(lines):
        if line.strip() == "Job stats:":
            for row in lines[start + 3:]:
                parts = row.split()
                if len(parts) != 2 or not parts[1].isdigit():
                    break
                counts[parts[0]] = int(parts[1])
            break
    return counts


def shell_commands(output: str, marker: str) -> list[str]:
    """The printed shell commands (`--printshellcmds`) holding ``marker``, e.g. " -m agent decide "."""
    return [line for line in output.splitlines() if marker in line]


def planned(workdir: Path, *args: str) -> dict[str, Any]:
    """The plan a run of ``workdir``'s config with ``args`` (e.g. ``--config schedule=1``) writes.

    A dry run writes no plan (the workflow's onstart handler writes it, in real runs only), so
    this runs the init job alone, the cheapest job that reads it, in a scratch copy of
    ``workdir/config`` (``workdir`` is left untouched), and reads results/<exp>/plan.json back.
    """
    with tempfile.TemporaryDirectory(prefix="planned_") as scratch:
        shutil.copytree(workdir / "config", Path(scratch) / "config")
        snakemake(Path(scratch), "init", *args).check()  # the target before --config
        plans = list(Path(scratch).glob(f"*/*/{PLAN_FILE}"))
        assert len(plans) == 1, plans
        return json.loads(plans[0].read_text(encoding="utf-8"))


@dataclass
class TinyRun:
    workdir: Path
    seconds: float
    result: SnakemakeResult

    @property
    def results(self) -> Path:
        return self.workdir / "results" / TINY_NAME

    def iter_dir(self, iteration: int) -> Path:
        return self.results / f"iter_{iteration:03d}"


def mtimes(paths) -> dict[Path, int]:
    return {Path(p): Path(p).stat().st_mtime_ns for p in paths}
