"""Benchmark of the analyze stage at full scale: N = 1000 neurons, 1000-frame test rollout.

Builds a real dataset folder with the simulator (a short recording: analysis reads only the
start frame of the rollout and the statistics) and a run folder holding an untrained model of
the seed architecture (hidden 64, 3 layers) whose W is set to 10 x the true W plus noise, so the
rollout stays bounded as a trained model's would. Then times ``analyze_run`` end to end (load,
metrics, metrics.json, analysis.log, six figures) and, separately, the model-based metrics.
The issue's budget: under 120 s on a 2-core CPU.

Prints one JSON object.

    python benchmarks/analyze.py [--n-neurons 1000] [--rollout-frames 1000] [--edge-input u|u_a] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from neuralgraph import analyze  # noqa: E402
from neuralgraph.config import dump_config, parse_config  # noqa: E402
from neuralgraph.io import atomic_write_json  # noqa: E402
from neuralgraph.model import build_model, load_trained_model, save_trained_model  # noqa: E402
from neuralgraph.dataset import load_dataset  # noqa: E402
from neuralgraph.device import choose_device  # noqa: E402
from neuralgraph.simulate import simulate  # noqa: E402

BUDGET_S = 120.0


def _config(n_neurons: int, rollout_frames: int, edge_input: str):
    held_out = rollout_frames + 500
    return parse_config({
        "simulation": {"n_neurons": n_neurons, "n_neuron_types": 4, "n_frames": held_out + 1500, "seed": 42},
        "graph_model": {"edge_input": edge_input},
        "training": {"held_out_frames": held_out},
        "analysis": {"rollout_frames": rollout_frames},
    }, source="benchmarks/analyze.py")


def _make_run(run: Path, cfg, dataset) -> None:
    """A run folder as the train stage leaves it: config.yaml, model.pt, training.json."""
    torch.manual_seed(0)
    model = build_model(cfg, dataset)
    with torch.no_grad():
        model.W.copy_(10.0 * torch.as_tensor(np.array(dataset.W)) + 0.01 * torch.randn(model.W.shape))
    run.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run / "config.yaml")
    save_trained_model(model, cfg, run / "model.pt")
    loss = (np.exp(-np.linspace(0, 6, 37500)) + 0.01).tolist()  # one seed-config epoch of loss values
    atomic_write_json(run / "training.json", {
        "status": "ok", "reason": "", "final_loss": loss[-1], "loss_history": loss, "training_time_min": 120.0,
        "iterations": len(loss), "data_augmentation_loop": 15, "device": "cpu"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-neurons", type=int, default=1000)
    parser.add_argument("--rollout-frames", type=int, default=1000)
    parser.add_argument("--edge-input", choices=("u", "u_a"), default="u")
    parser.add_argument("--keep", help="build the folders here and keep them (default: a temp folder, removed)")
    parser.add_argument("--verbose", action="store_true", help="show the analysis log lines on stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    cfg = _config(args.n_neurons - args.n_neurons % 4, args.rollout_frames, args.edge_input)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_analyze_"))
    try:
        t0 = time.perf_counter()
        data_dir = simulate(cfg, root / "data", progress=False)
        dataset = load_dataset(data_dir)
        run = root / "iter_001"
        _make_run(run, cfg, dataset)
        setup_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        phases: dict[str, float] = {}
        result = analyze.analyze_run(run, data_dir, device="auto", timings=phases)
        total_s = time.perf_counter() - t0

        model, _ = load_trained_model(run / "model.pt")
        u_max = analyze.activity_max_abs(data_dir, dataset)
        device = choose_device("auto")
        t0 = time.perf_counter()
        analyze.analyze_model(model, cfg, dataset, u_max, device)
        metrics_s = time.perf_counter() - t0
        report = {
            "benchmark": "analyze",
            "n_neurons": cfg.simulation.n_neurons,
            "rollout_frames": cfg.analysis.rollout_frames,
            "edge_input": cfg.graph_model.edge_input,
            "device": str(device),
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "machine": platform.processor() or platform.machine(),
            "analyze_run_s": round(total_s, 2),
            "phases_s": {k: round(v, 2) for k, v in phases.items()},
            "model_metrics_again_s": round(metrics_s, 2),
            "setup_s": round(setup_s, 2),
            "budget_s": BUDGET_S,
            "within_budget": total_s < BUDGET_S,
            "connectivity_R2": result["connectivity_R2"],
            "test_R2": result["test_R2"],
            "outcome": result["outcome"],
            "figures": sorted(p.name for p in (run / "plots").iterdir()),
        }
        print(json.dumps(report))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
