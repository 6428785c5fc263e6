"""Activity regime of low-rank W: effective rank and spectral radius per seed (issue 12, part 3).

The reference's low-rank case study (science.md section 8): rank-20 W, N = 100, 10,000 frames
gives activity of effective rank 12-14 (99% of the variance) and a spectral radius of about
0.95. This script simulates rank-20 W for a few seeds under two dynamics and prints, per seed,
what stats.json would hold (no files are kept):

- ``demo``: the demo's dynamics (4 neuron types, the reference's PDE_N2 table g = 10,
  s = 1 or 2, c = 1 or 2);
- ``reference``: a guess at the reference's dynamics for its low-rank studies (its "chaotic"
  base config: one neuron type, gain 7, no self term, decay 1: [g, s, c] = [7, 0, 1]).
  Measured: poorer activity than ``demo`` for the same W (docs/benchmarks.md), so
  config/experiments/bench_lowrank.yaml keeps the demo's dynamics.

    python benchmarks/lowrank_regime.py [--seeds 0 1 2] [--rank 20] [--n-neurons 100] [--n-frames 10000]

Prints one JSON object per line: regime, seed, spectral_radius, effective_rank_90/99,
tail_activity_ratio, seconds.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuralgraph.config import parse_config  # noqa: E402
from neuralgraph.io import read_json  # noqa: E402
from neuralgraph.simulate import simulate  # noqa: E402

REGIMES = {
    "demo": {"n_neuron_types": 4},
    "reference": {"n_neuron_types": 1, "neuron_type_params": [[7.0, 0.0, 1.0]]},
}


def measure(regime: str, seed: int, rank: int, n_neurons: int, n_frames: int, burn_in: int = 1000) -> dict:
    sim = {"n_neurons": n_neurons, "n_frames": n_frames, "connectivity_type": "low_rank",
           "connectivity_rank": rank, "seed": seed, "n_burn_in": burn_in, **REGIMES[regime]}
    cfg = parse_config({"simulation": sim, "training": {"held_out_frames": 2000}}, source=f"{regime} seed {seed}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = simulate(cfg, Path(tmp) / "data", progress=False, pictures=False)
        stats = read_json(out / "stats.json")
    return {"regime": regime, "seed": seed, "burn_in": burn_in, "spectral_radius": round(stats["spectral_radius"], 4),
            "effective_rank_90": stats["effective_rank_90"], "effective_rank_99": stats["effective_rank_99"],
            "tail_activity_ratio": round(stats["tail_activity_ratio"], 3),
            "seconds": round(time.perf_counter() - t0, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rank", type=int, default=20)
    parser.add_argument("--n-neurons", type=int, default=100)
    parser.add_argument("--n-frames", type=int, default=10_000)
    parser.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    parser.add_argument("--burn-in", type=int, nargs="+", default=[1000],
                        help="Euler steps discarded before the first saved frame (ours: 1000)")
    args = parser.parse_args(argv)
    for regime in args.regimes:
        for burn_in in args.burn_in:
            for seed in args.seeds:
                print(json.dumps(measure(regime, seed, args.rank, args.n_neurons, args.n_frames, burn_in)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
