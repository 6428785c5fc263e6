"""Where is a trained W right, and where does it keep its initialisation? Split it by the data.

Why (issue 18): a row of W acts on the recording only through tanh(u), so the recording pins W
down only along the directions it excites (the eigenvectors of C = E[tanh(u) tanh(u)^T] that
hold its energy). Along the others the loss gives W no gradient, and a W initialised N(0, 1)
(the reference's start, ~30x the true W's scale at N = 1000) keeps its start there unless a
penalty shrinks it. A low connectivity_R2 then says "W carries its init where the data are
silent", not "W is wrong where the data speak".

For each trained run folder (data/ and iter_001/, as ``snakemake reference`` writes them), the
script splits the learned and the true W into their parts along the excited directions (the
fewest eigenvectors of C holding ``--energy`` of its trace, over the training frames) and the
rest, and prints as JSON:

- ``excited_dims``: how many directions are excited;
- ``excited_R2``: connectivity_R2 (the free linear fit over the off-diagonal entries) of the
  learned against the true W, both restricted to the excited directions;
- ``silent_R2``: the same for the rest, where the data are (nearly) silent;
- ``silent_over_excited``: ||W (I - P)|| / ||W P||, learned and true (Frobenius; P the
  projector on the excited directions): how much of each W lies where the data are silent;
- ``connectivity_R2``: the whole matrices, as analyze scores them (without the plateau
  correction: a global scale does not change R2).

    python benchmarks/w_excited_split.py results/reference/n1000/runs/n1000_30k_s0

No training; seconds per run (an N x N eigen-decomposition).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.layout import DATA_DIR, iteration_dir_name  # noqa: E402
from neuralgraph import metrics as M  # noqa: E402
from neuralgraph.analyze import learned_W, load_model  # noqa: E402
from neuralgraph.dataset import load_dataset  # noqa: E402
from neuralgraph.stats import presynaptic_modes  # noqa: E402

DEFAULT_ENERGY = 0.99


def excited_projector(u: np.ndarray, energy: float) -> np.ndarray:
    """Projector on the fewest eigenvectors of C holding ``energy`` of its trace."""
    eigenvalues, eigenvectors = presynaptic_modes(u)
    order = np.argsort(eigenvalues)[::-1]
    kept = int(np.searchsorted(np.cumsum(eigenvalues[order]) / eigenvalues.sum(), energy) + 1)
    basis = eigenvectors[:, order[:kept]]
    return basis @ basis.T


def split_report(learned: np.ndarray, true: np.ndarray, projector: np.ndarray) -> dict:
    """The split of both W by the projector (rows act on tanh(u): W P is W's excited part)."""
    learned, true = learned.copy(), np.asarray(true, dtype=np.float64).copy()
    np.fill_diagonal(learned, 0.0)
    np.fill_diagonal(true, 0.0)
    silent = np.eye(projector.shape[0]) - projector

    def ratio(W: np.ndarray) -> float:
        return float(np.linalg.norm(W @ silent) / np.linalg.norm(W @ projector))

    return {"excited_dims": int(round(np.trace(projector))),
            "excited_R2": M.connectivity_r2(learned @ projector, true @ projector),
            "silent_R2": M.connectivity_r2(learned @ silent, true @ silent),
            "silent_over_excited_learned": ratio(learned), "silent_over_excited_true": ratio(true),
            "connectivity_R2": M.connectivity_r2(learned, true)}


def measure_run(run: Path, energy: float) -> dict:
    model, cfg, why = load_model(run / iteration_dir_name(1))
    if model is None:
        return {"run": run.name, "error": why}
    dataset = load_dataset(run / DATA_DIR, mmap=True)
    training_frames = np.asarray(dataset.u[: cfg.n_train_frames])
    return {"run": run.name, **split_report(learned_W(model), dataset.W, excited_projector(training_frames, energy))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="trained run folders (each with data/ and iter_001/)")
    parser.add_argument("--energy", type=float, default=DEFAULT_ENERGY,
                        help=f"share of C's trace the excited directions hold (default {DEFAULT_ENERGY})")
    args = parser.parse_args(argv)
    if not 0 < args.energy < 1:
        parser.error(f"--energy = {args.energy}: must be between 0 and 1 (exclusive)")
    print(json.dumps({"energy": args.energy, "runs": [measure_run(run, args.energy) for run in args.runs]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
