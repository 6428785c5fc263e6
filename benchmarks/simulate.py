"""Benchmark of the simulate stage: the whole command (dynamics, statistics, pictures, writes).

Prints one JSON object: frames/s (dynamics only and end to end), wall seconds per phase, peak
RSS of the process (resource.getrusage, includes the interpreter and numpy/matplotlib, about
100 MB) and the bytes the dataset takes on disk. Defaults: the seed scale, N = 1000 neurons x
100000 frames (Lorentz, PDE_N2). The issue's budget there: < 30 s on a 2-core CPU,
peak RSS < 1.5 GB beyond the arrays written, < 1 GB on disk.

    python benchmarks/simulate.py [--n-neurons 1000] [--n-frames 100000] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuralgraph.config import parse_config  # noqa: E402
from neuralgraph.io import read_json  # noqa: E402
from neuralgraph.simulate import simulate  # noqa: E402


def _config(n_neurons: int, n_frames: int):
    held_out = min(2000, n_frames // 5)
    return parse_config({
        "simulation": {"n_neurons": n_neurons, "n_neuron_types": 4, "n_frames": n_frames,
                       "connectivity_type": "Lorentz", "seed": 42},
        "training": {"held_out_frames": held_out},
        "analysis": {"rollout_frames": max(10, held_out // 2)},
    }, source="benchmarks/simulate.py")


def _peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-neurons", type=int, default=1000)
    parser.add_argument("--n-frames", type=int, default=100_000)
    parser.add_argument("--keep", help="write the dataset here and keep it (default: a temp folder, removed)")
    parser.add_argument("--progress", action="store_true", help="show the progress bar on stderr")
    args = parser.parse_args(argv)
    n_neurons = args.n_neurons - args.n_neurons % 4
    cfg = _config(n_neurons, args.n_frames)
    out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_simulate_")) / "data"
    rss_before = _peak_rss_mb()
    started = time.perf_counter()
    try:
        simulate(cfg, out, progress=args.progress)
        wall = time.perf_counter() - started
        meta = read_json(out / "metadata.json")
        array_bytes = 2 * 4 * args.n_frames * n_neurons + 4 * n_neurons * n_neurons
        sim_steps = cfg.simulation.n_burn_in + args.n_frames
        result = {
            "benchmark": "simulate",
            "n_neurons": n_neurons,
            "n_frames": args.n_frames,
            "wall_seconds": round(wall, 2),
            "dynamics_seconds": meta["simulation_seconds"],
            "statistics_pictures_writes_seconds": round(wall - meta["simulation_seconds"], 2),
            "phase_seconds": meta["phase_seconds"],
            "frames_per_second_dynamics": round(sim_steps / meta["simulation_seconds"], 1),
            "frames_per_second_end_to_end": round(args.n_frames / wall, 1),
            "peak_rss_mb": round(_peak_rss_mb(), 1),
            "peak_rss_mb_before_simulate": round(rss_before, 1),
            "arrays_written_mb": round(array_bytes / 2**20, 1),
            "disk_bytes": _disk_bytes(out),
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
        }
    finally:
        if not args.keep:
            shutil.rmtree(out.parent, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
