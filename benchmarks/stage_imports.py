"""What each workflow job pays before it works: the import time of its stage, in a fresh interpreter.

Why (issue 20 item 6): an end-to-end test is a chain of short jobs, each a new Python process.
The bookkeeping jobs (init, ucb, decide, summary) import no torch; the science jobs (train,
analyze) import the model, hence torch and torch_geometric. This script measures, side by side
in one run, how many seconds each import costs, so the suite's floor per iteration is a number,
not a guess.

    python benchmarks/stage_imports.py [--repeats 5]

Prints one JSON object: per module the median and min wall seconds of ``python -c "import M"``
over the repeats (interleaved, so a busy machine slows every module alike), and the Python
baseline (``python -c pass``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: What a job of each stage imports first (its CLI module), then the heavy libraries alone.
MODULES = {
    "baseline (python -c pass)": None,
    "ucb (agent.ucb)": "agent.ucb",
    "decide (agent.decide_cli)": "agent.decide_cli",
    "summary (pipeline.summary)": "pipeline.summary",
    "simulate (neuralgraph.simulate)": "neuralgraph.simulate",
    "train (neuralgraph.training)": "neuralgraph.training",
    "analyze (neuralgraph.analyze + model + plots)": "neuralgraph.analyze, neuralgraph.model, neuralgraph.plots",
    "torch": "torch",
    "torch_geometric": "torch_geometric",
    "matplotlib.pyplot": "matplotlib.pyplot",
}


def time_import(modules: str | None) -> float:
    """Wall seconds of a fresh interpreter that imports ``modules`` (None: nothing) and exits."""
    code = "pass" if modules is None else f"import {modules}"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="imports of each module (interleaved)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: must be >= 1")
    times: dict[str, list[float]] = {name: [] for name in MODULES}
    for _ in range(args.repeats):
        for name, modules in MODULES.items():
            times[name].append(time_import(modules))
    print(json.dumps({"python": sys.version.split()[0], "repeats": args.repeats,
                      "seconds": {name: {"median": round(statistics.median(t), 3), "min": round(min(t), 3)}
                                  for name, t in times.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
