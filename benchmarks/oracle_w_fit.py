"""Is a W draw hard because of its data, or because of the learned functions? Fit W alone.

Why (issue 18): in the low-rank case's published regime the recipe recovers W (connectivity_R2
> 0.999) on 9 of 10 draws; seed 45 stays at 0.994, and a search of its lr and lr_W does not
move it (0.990-0.9954). Two causes are possible: the recording itself leaves some directions of
W weakly excited (so any gradient-trained W converges slowly there), or the two MLPs
(lin_edge, lin_phi) learn their functions imperfectly on this draw and W compensates.

This script removes the second cause. Per W seed it simulates the case, then trains W ALONE in
the true model du/dt = -c u + g W tanh(u) (the case's one neuron type: the true lin_phi and
lin_edge, nothing else learned), with the recipe's optimiser settings: Adam at lr_W, W
initialised N(0, W_init_std) with a zero diagonal, batches of batch_size random training frames
(the held-out frames left out), the trainer's unsquared L2 loss, its L1 penalty on W from the
epoch its two phases start it (l1_start_epoch), the recipe's step count. ``--set`` changes a
field first (graph_model.W_init_std=0: does W's start decide the result?). It
prints the oracle's connectivity_R2 at a few step counts, and two facts of the recording that
bear on W's identifiability:

- ``weak_energy``: the fraction of the true W's energy (sum of ||W v_k||^2) along the
  eigen-directions v_k of the presynaptic second moment C = E[tanh(u) tanh(u)^T] whose
  eigenvalue is below 1e-3 / 1e-4 of the largest: the part of W the recording excites least;
- ``condition``: the eigenvalue ratio of C, largest to smallest.

A seed whose oracle also stalls below 0.999 is hard because of its data; a seed whose oracle
reaches it while the GNN does not is hard because of the learned functions.

    python benchmarks/oracle_w_fit.py config/experiments/reference/lowrank.yaml --seeds 45 46 --recipe
    python benchmarks/oracle_w_fit.py config/experiments/reference/n1000_30k.yaml --recipe --steps 20000 \
        --set graph_model.W_init_std=0

Prints one JSON object. No GNN, no workflow: about a minute per seed on one CPU core.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuralgraph.config import ConfigError, ExperimentConfig, load_config, parse_assignments, with_updates  # noqa: E402
from neuralgraph.dataset import load_dataset  # noqa: E402
from neuralgraph.metrics import connectivity_r2  # noqa: E402
from neuralgraph.simulate import simulate  # noqa: E402
from neuralgraph.stats import presynaptic_modes  # noqa: E402
from neuralgraph.train_loop import penalty_count  # noqa: E402
from neuralgraph.training import iterations_per_epoch  # noqa: E402
from pipeline.reference import recipe_steps  # noqa: E402

WEAK_THRESHOLDS = (1e-3, 1e-4)


def recording(cfg: ExperimentConfig, folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u, du, W) of the case's simulation, the held-out frames dropped from u and du."""
    data = load_dataset(simulate(cfg, folder, progress=False, pictures=False), mmap=False)
    keep = cfg.n_train_frames
    return (np.asarray(data.u[:keep], dtype=np.float32), np.asarray(data.du[:keep], dtype=np.float32),
            np.asarray(data.W, dtype=np.float64))


def weak_energy(u: np.ndarray, W: np.ndarray) -> dict[str, float]:
    """Share of W's energy along the least-excited directions of tanh(u), and C's condition."""
    eigenvalues, eigenvectors = presynaptic_modes(u)
    energy_along = np.square(W @ eigenvectors).sum(axis=0)  # ||W v_k||^2 per direction k
    total = energy_along.sum()
    shares = {f"weak_energy_below_{t:g}": float(energy_along[eigenvalues < t * eigenvalues[-1]].sum() / total)
              for t in WEAK_THRESHOLDS}
    return {**shares, "condition": float(eigenvalues[-1] / max(eigenvalues[0], 1e-300))}


def l1_start_step(cfg: ExperimentConfig) -> int | None:
    """Steps trained before the L1 penalty on W starts (the two phases' l1_start_epoch whole
    epochs), or None when the configuration never applies it."""
    tr = cfg.training
    if tr.coeff_W_L1 <= 0 or tr.l1_start_epoch >= tr.n_epochs:
        return None
    return tr.l1_start_epoch * iterations_per_epoch(cfg.simulation.n_frames, tr.data_augmentation_loop, tr.batch_size)


def fit_w_alone(cfg: ExperimentConfig, u: np.ndarray, du: np.ndarray, W_true: np.ndarray, steps: int,
                checkpoints: list[int]) -> dict[int, float]:
    """Adam on W in the true model (one type: g, c of the case), the recipe's batch, lr_W, init,
    loss and L1 phase."""
    (g, s, c), = cfg.simulation.type_params()
    tr = cfg.training
    gen = torch.Generator().manual_seed(tr.seed)
    n = u.shape[1]
    mask = 1.0 - torch.eye(n)
    W = torch.nn.Parameter(torch.randn(n, n, generator=gen) * cfg.graph_model.W_init_std * mask)
    optimizer = torch.optim.Adam([W], lr=tr.learning_rate_W_start)
    u_t, du_t = torch.from_numpy(u), torch.from_numpy(du)
    phi = torch.tanh(u_t)
    linear_part = -c * u_t + s * phi
    l1_from = l1_start_step(cfg)
    scores = {}
    for step in range(1, steps + 1):
        frames = torch.randint(0, u_t.shape[0], (tr.batch_size,), generator=gen)
        pred = linear_part[frames] + g * phi[frames] @ (W * mask).T
        loss = (pred - du_t[frames]).norm(2)
        if l1_from is not None and step > l1_from:
            loss = loss + tr.coeff_W_L1 * penalty_count(tr, tr.batch_size, "W_L1") * (W * mask).abs().sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step in checkpoints:
            scores[step] = round(connectivity_r2(W.detach().numpy().astype(np.float64), W_true), 6)
    return scores


def seed_report(cfg: ExperimentConfig, seed: int, folder: Path, steps: int) -> dict:
    cfg = with_updates(cfg, {"simulation.seed": seed}, source="oracle_w_fit")
    u, du, W = recording(cfg, folder / f"seed_{seed}")
    checkpoints = sorted({max(1, steps // 10), steps // 4, steps // 2, steps})
    started = time.perf_counter()
    scores = fit_w_alone(cfg, u, du, W, steps, checkpoints)
    return {"seed": seed, "oracle_connectivity_R2": scores[steps],
            "oracle_connectivity_R2_by_step": {str(k): v for k, v in scores.items()},
            **weak_energy(u, W), "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="an experiment config with one neuron type, e.g. a reference case")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="simulation.seed values (W draws)")
    parser.add_argument("--recipe", action="store_true", help="apply the case's reference recipe first")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the config's, as trained)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="change a dotted config field after the recipe (graph_model.W_init_std=0); repeatable")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    if cfg.simulation.n_neuron_types != 1:
        parser.error(f"{args.config}: simulation.n_neuron_types = {cfg.simulation.n_neuron_types}: "
                     "the oracle knows one type's functions only (must be 1)")
    if args.recipe:
        cfg = cfg.with_recipe()
    if args.set:
        try:
            cfg = with_updates(cfg, parse_assignments(args.set), source="--set")
        except ConfigError as error:
            parser.error(str(error))
    steps = args.steps or recipe_steps(cfg)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="oracle_w_fit_") as scratch:
        seeds = [seed_report(cfg, seed, Path(scratch), steps) for seed in args.seeds]
    print(json.dumps({"config": str(args.config), "recipe": args.recipe, "steps": steps,
                      "set": args.set, "lr_W": cfg.training.learning_rate_W_start,
                      "W_init_std": cfg.graph_model.W_init_std, "l1_from_step": l1_start_step(cfg),
                      "seeds": seeds}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
