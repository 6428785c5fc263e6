"""Does a case's activity stay alive? Per W seed, the recording cut into windows: each window's
effective rank (99%, the method of stats.json) and mean |du| per frame.

Why: a recording whose network settles on a fixed point or a low-dimensional cycle holds little
to identify W from, however long it is (issue 18, gain2_30k: W seeds whose activity dies after
a few thousand frames). The simulation only, no training: seconds per seed.

Prints one JSON object: the case, and per seed the whole recording's effective rank, the
tail activity ratio (stats.json's) and the windows.

    python benchmarks/activity_windows.py config/experiments/reference/gain2_30k.yaml --seeds 0 1 2 --window 5000

``--set FIELD=VALUE`` changes a dotted config field first (repeatable), e.g.
``--set simulation.W_draw=ours`` for this project's W draws where the case draws the reference's.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuralgraph.config import ConfigError, ExperimentConfig, load_config, parse_assignments, with_updates  # noqa: E402
from neuralgraph.simulate import simulate  # noqa: E402
from neuralgraph.stats import effective_ranks, tail_activity_ratio  # noqa: E402


def windows(u: np.ndarray, size: int) -> list[dict]:
    """Each window's first frame, effective rank (99%) and mean |du| per frame and neuron."""
    return [{"start": start, "effective_rank_99": effective_ranks(u[start:start + size], (0.99,))[0],
             "mean_abs_du": round(float(np.abs(np.diff(u[start:start + size], axis=0)).mean()), 6)}
            for start in range(0, u.shape[0] - 1, size)]


def seed_report(cfg: ExperimentConfig, seed: int, size: int, folder: Path) -> dict:
    """Simulate the case with simulation.seed = seed and describe its recording."""
    cfg = with_updates(cfg, {"simulation.seed": seed}, source="activity_windows")
    u = np.load(simulate(cfg, folder / f"seed_{seed}", progress=False, pictures=False) / "u.npy")
    return {"seed": seed, "n_frames": int(u.shape[0]), "effective_rank_99": effective_ranks(u, (0.99,))[0],
            "tail_activity_ratio": round(tail_activity_ratio(u), 4), "windows": windows(u, size)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="an experiment config, e.g. a reference case")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="simulation.seed values (W draws)")
    parser.add_argument("--window", type=int, default=5000, help="frames per window")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="change a dotted config field first (simulation.W_draw=ours); repeatable")
    args = parser.parse_args(argv)
    try:
        cfg = with_updates(load_config(args.config), parse_assignments(args.set), source="--set")
    except ConfigError as error:
        parser.error(str(error))
    with tempfile.TemporaryDirectory(prefix="activity_windows_") as scratch:
        seeds = [seed_report(cfg, seed, args.window, Path(scratch)) for seed in args.seeds]
    print(json.dumps({"config": str(args.config), "set": args.set, "window": args.window, "seeds": seeds}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
