"""Grid over training settings on one dataset: where the starting config fails and what fixes it.

Issue 12, part 2 needs a benchmark on which search matters: its starting config scores
connectivity_R2 <= 0.9 and some setting inside the agent's allowed ranges scores >= 0.98 at the
same per-iteration budget. This script finds one by measurement: it simulates the base
experiment once, then trains and analyzes every point of a grid (the product of the --grid
values) with the real `python -m neuralgraph train` / `analyze` commands, --jobs at a time with
one thread each, and prints one JSON object per point (then a summary object).

    python benchmarks/hard_grid.py --experiment config/experiments/bench_hard.yaml \\
        --grid coeff_W_L1=0,1e-5,1e-4 --grid learning_rate_W_start=1e-3,3e-3 --jobs 2 \\
        --out /tmp/hard_grid

--set KEY=VALUE changes the base (dotted: simulation.connectivity_filling_factor=0.1);
--grid names training parameters (or dotted keys). Finished points are kept in --out and
not retrained when the command is run again.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from neuralgraph.config import (ConfigError, ExperimentConfig, dump_config, load_config,  # noqa: E402
                                parse_assignments, with_updates)
from neuralgraph.device import thread_environment  # noqa: E402


def grid_points(grid: list[str]) -> list[dict]:
    """['coeff_W_L1=0,1e-5', 'simulation.seed=3'] ->
    [{'training.coeff_W_L1': 0, 'simulation.seed': 3}, {'training.coeff_W_L1': 1e-05, 'simulation.seed': 3}].

    Each NAME=VALUE is read by ``parse_assignments`` (the one reading of --set): an undotted
    name is a training field there, not here.
    """
    axes = []
    for spec in grid:
        name, _, values = spec.partition("=")
        if not values:
            raise ConfigError(f"--grid {spec!r}: expected NAME=V1,V2,...")
        axes.append([next(iter(parse_assignments([f"{name}={v}"], option="--grid").items()))
                     for v in values.split(",")])
    return [dict(combo) for combo in itertools.product(*axes)]


def point_label(point: dict) -> str:
    return "_".join(f"{k.split('.')[-1]}={v}" for k, v in point.items()) or "base"


def run(cmd: list[str], log_path: Path) -> None:
    env = {**os.environ, **thread_environment(1), "PYTHONPATH": str(REPO)}
    with open(log_path, "w") as log:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed (exit {done.returncode}); see {log_path}")


def point_configs(base: ExperimentConfig, points: list[dict]) -> list[ExperimentConfig]:
    """Every grid point's config: the base with the point's values (``with_updates``, so each
    is schema-checked here, before anything is simulated or trained)."""
    return [with_updates(base, point, source=f"--grid point {point_label(point)}") for point in points]


def train_point(config: ExperimentConfig, point: dict, data_dir: Path, out: Path) -> dict:
    """Train and analyze one grid point (kept when already analyzed); its metrics."""
    run_dir = out / point_label(point)
    metrics_path = run_dir / "metrics.json"
    started = time.perf_counter()
    if not metrics_path.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        config_path = dump_config(config, run_dir / "experiment.yaml")
        python = [sys.executable, "-m", "neuralgraph"]
        run([*python, "train", "--config", str(config_path), "--data", str(data_dir), "--out", str(run_dir)],
            run_dir / "train.log")
        run([*python, "analyze", "--run", str(run_dir), "--data", str(data_dir), "--config", str(config_path)],
            run_dir / "analyze.log")
    metrics = json.loads(metrics_path.read_text())
    return {**point, "connectivity_R2": metrics.get("connectivity_R2"), "test_R2": metrics.get("test_R2"),
            "training_time_min": metrics.get("training_time_min"), "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True, type=Path)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    try:
        updates = parse_assignments(args.set)
        points = grid_points(args.grid)
        base = with_updates(load_config(args.experiment), updates, source=f"{args.experiment} with --set")
        configs = point_configs(base, points)
    except ConfigError as error:
        parser.error(str(error))
    args.out.mkdir(parents=True, exist_ok=True)
    base_path = dump_config(base, args.out / "base.yaml")
    data_dir = args.out / "data"
    if not (data_dir / "metadata.json").exists():
        run([sys.executable, "-m", "neuralgraph", "simulate", "--config", str(base_path), "--out", str(data_dir),
             "--no-progress"], args.out / "simulate.log")

    results = []
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(train_point, config, point, data_dir, args.out)
                   for config, point in zip(configs, points)]
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            row = future.result()
            results.append(row)
            print(json.dumps(row), flush=True)
            elapsed = time.perf_counter() - started
            print(f"# {done}/{len(points)} points, {elapsed:.0f} s, ETA {elapsed / done * (len(points) - done):.0f} s",
                  file=sys.stderr, flush=True)
    best = max(results, key=lambda r: r["connectivity_R2"] if r["connectivity_R2"] is not None else -1e9)
    print(json.dumps({"summary": True, "points": len(results), "best": best,
                      "wall_seconds": round(time.perf_counter() - started, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
