"""benchmarks/stage_imports.py, run as a developer runs it: one JSON object with a time per module."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~15 interpreters, 9 of them loading torch
def test_the_benchmark_prints_each_stages_import_time_and_refuses_zero_repeats():
    script = ROOT / "benchmarks" / "stage_imports.py"
    done = subprocess.run([sys.executable, str(script), "--repeats", "1"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    seconds = report["seconds"]
    assert {"decide (agent.decide_cli)", "train (neuralgraph.training)", "torch_geometric"} <= set(seconds)
    assert all(t["median"] > 0 and t["min"] <= t["median"] for t in seconds.values())
    # the science job loads what the bookkeeping job does not
    assert seconds["train (neuralgraph.training)"]["min"] > seconds["decide (agent.decide_cli)"]["min"]
    bad = subprocess.run([sys.executable, str(script), "--repeats", "0"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "--repeats 0: must be >= 1" in bad.stderr
