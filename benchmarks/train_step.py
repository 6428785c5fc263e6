"""Benchmark: one optimizer step of the GNN trainer, node-level versus per-edge.

    python benchmarks/train_step.py [--n-neurons 1000] [--batch 8] [--hidden 64] [--threads K]

Prints one JSON object: milliseconds per optimizer step (forward + backward + Adam, through the
packaged ``neuralgraph/train_loop.py``'s ``train_step``) and peak memory at N=1000, batch 8,
hidden 64, for time_step T in {1, 4, 16, 64} with the node-level model, and for T=1 with the
per-edge oracle (a couple of steps); the speed-up; the projected minutes of one seed-config
training run (37500 steps per epoch) at each T; the device. Random activity, no dataset.
On CUDA it also times the engine's CUDA-graph replay of the same step (training.cuda_graph).

``cpu_ms_per_step`` is the process CPU time per step: on a shared machine it stays close to
the unloaded wall time of a one-thread run when other jobs steal the cores.

Each measurement runs in its own subprocess so the peak memory (CUDA: max allocated; CPU:
the process's max RSS, which includes ~0.3 GB of Python + torch) belongs to that
measurement alone. Runs unchanged on CUDA (used when available).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SEED_STEPS_PER_EPOCH = 37500  # floor(floor(100000 * 15 / 8) * 0.2)
TIME_STEPS = (1, 4, 16, 64)
TARGETS_CPU = {"T1_ms_per_step_max": 25.0, "speedup_vs_per_edge_min": 300.0, "T64_peak_memory_gb_max": 4.0}


def _timed_steps(T: int) -> tuple[int, int]:
    """(warm-up, timed) steps: fewer for long unrolls so the whole benchmark stays ~2 minutes."""
    return {1: (5, 50), 4: (3, 20), 16: (2, 8), 64: (1, 4)}.get(T, (1, 3))


def _bench_config(n: int, batch: int, hidden: int, T: int):
    from neuralgraph.config import parse_config

    return parse_config({
        "simulation": {"n_neurons": n, "n_neuron_types": 4, "n_frames": 3000},
        "graph_model": {"hidden_dim": hidden},
        "training": {"batch_size": batch, "time_step": T, "recurrent_training": True, "held_out_frames": 1000},
        "analysis": {"rollout_frames": 500},
    }, source="benchmark")


def _random_data(n: int, n_frames: int, device):
    """Smooth random activity (random walk) with a consistent du: u[k+1] = u[k] + dt du[k]."""
    import torch
    from neuralgraph.training import TrainingData

    dt = 0.01
    gen = torch.Generator().manual_seed(0)
    du = torch.randn(n_frames, n, generator=gen) * 5.0
    u = torch.cumsum(du * dt, dim=0) + torch.randn(1, n, generator=gen) * 5.0
    return TrainingData(u=u.to(device), du=du.to(device), delta_t=dt, n_frames=n_frames, u_scale=float(u.abs().max()))


def _per_edge_chunk(n: int, batch: int, hidden: int, device) -> int:
    """0 (all edges at once) when the per-edge activations fit in half the free memory, else a
    chunk size evaluated with activation checkpointing."""
    import torch

    need = n * (n - 1) * batch * hidden * 4 * 6  # ~6 live (E*B, hidden) float tensors
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        meminfo = Path("/proc/meminfo").read_text().split("\n")
        free = next((int(l.split()[1]) * 1024 for l in meminfo if l.startswith("MemAvailable")), 8 << 30)
    if need < free / 2:
        return 0
    per_edge = batch * hidden * 4 * 6
    return max(1000, int(free / 8 / per_edge))


def worker(kind: str, T: int, n: int, batch: int, hidden: int) -> dict:
    """Time a few optimizer steps of one configuration in this process."""
    import torch
    from neuralgraph.device import choose_device
    from neuralgraph.model import PerEdgeSignalPropagation, SignalPropagation, build_model
    from neuralgraph.cuda_graph import GraphedStep, make_capturable
    from neuralgraph.training import StepContext, load_loop_module

    device = choose_device("auto")
    torch.manual_seed(0)
    cfg = _bench_config(n, batch, hidden, T)
    chunk = _per_edge_chunk(n, batch, hidden, device) if kind == "per_edge" else 0
    cls = PerEdgeSignalPropagation if kind == "per_edge" else SignalPropagation
    graphed = kind == "node_graph"
    model = build_model(cfg, cls=cls)
    if kind == "per_edge":
        model.edge_chunk = chunk
    model.to(device)
    loop = load_loop_module(None)
    optimizer = loop.build_optimizer(model, cfg)
    if graphed:
        make_capturable(optimizer)
    data = _random_data(n, cfg.n_train_frames, device)
    gen = torch.Generator().manual_seed(1)
    warmup, timed = (1, 2) if kind == "per_edge" else _timed_steps(T)
    if graphed:  # the engine's CUDA-graph replay (training.cuda_graph); capture happens in warm-up
        warmup, timed = GraphedStep.WARMUP + 2, timed * 5
        replay = GraphedStep(SimpleNamespace(loop=loop, model=model, optimizer=optimizer, data=data, device=device,
                                              tr=cfg.training))

    def step(i: int) -> None:
        starts = loop.sample_batch_starts(data.n_frames, T, batch, gen)
        ctx = StepContext(cfg=cfg, epoch=0, step=i, step_in_epoch=i, iterations_per_epoch=10**6, n_epochs=1,
                          mode="recurrent", horizon=T, scheduler=None, device=device)
        if graphed:
            replay(starts, ctx)
        else:
            loop.train_step(model, optimizer, data, starts.to(device), ctx)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":  # before warm-up: a CUDA graph allocates its memory pool at capture
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(warmup):
        step(i)
    sync()
    t0, cpu0 = time.perf_counter(), time.process_time()
    for i in range(timed):
        step(warmup + i)
    sync()
    ms = (time.perf_counter() - t0) / timed * 1e3
    cpu_ms = (time.process_time() - cpu0) / timed * 1e3
    result = {"kind": kind, "time_step": T, "ms_per_step": round(ms, 3), "cpu_ms_per_step": round(cpu_ms, 3),
              "timed_steps": timed,
              "rss_before_steps_mb": round(rss_before, 1),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    if kind == "per_edge":
        result["edge_chunk"] = chunk
    return result


def _run_worker(kind: str, T: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--time-step", str(T), "--n-neurons", str(args.n_neurons),
           "--batch", str(args.batch), "--hidden", str(args.hidden)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    print(f"benchmark: {kind} T={T} ...", file=sys.stderr, flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        return {"kind": kind, "time_step": T, "error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _peak_mb(r: dict) -> float:
    return r.get("peak_cuda_mb", r.get("peak_rss_mb", float("nan")))


def summarize(node: dict[int, dict], per_edge: dict, device: str, threads: int, args) -> dict:
    t1 = node[1].get("ms_per_step", float("nan"))
    speedup = per_edge.get("ms_per_step", float("nan")) / t1 if t1 else float("nan")
    t64_peak_gb = _peak_mb(node[64]) / 1024 if 64 in node else float("nan")
    return {
        "benchmark": "train_step",
        "device": device,
        "torch_threads": threads,
        "n_neurons": args.n_neurons, "batch_size": args.batch, "hidden_dim": args.hidden,
        "node_level": {f"T{T}": r for T, r in node.items()},
        "per_edge": {"T1": per_edge},
        "speedup_T1_node_vs_per_edge": round(speedup, 1),
        "projected_seed_run_min": {f"T{T}": round(r["ms_per_step"] * SEED_STEPS_PER_EPOCH / 60000, 2)
                                   for T, r in node.items() if "ms_per_step" in r},
        "peak_memory_unit": "CUDA max allocated MB" if device.startswith("cuda") else "process max RSS MB",
        "targets_cpu": TARGETS_CPU,
        "meets_targets": {
            "T1_ms_per_step": t1 <= TARGETS_CPU["T1_ms_per_step_max"],
            "speedup": speedup >= TARGETS_CPU["speedup_vs_per_edge_min"],
            "T64_peak_memory": t64_peak_gb < TARGETS_CPU["T64_peak_memory_gb_max"],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-neurons", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--time-steps", type=str, default=",".join(map(str, TIME_STEPS)))
    parser.add_argument("--skip-per-edge", action="store_true")
    parser.add_argument("--worker", choices=("node", "node_graph", "per_edge"), help=argparse.SUPPRESS)
    parser.add_argument("--time-step", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, args.time_step, args.n_neurons, args.batch, args.hidden)))
        return 0
    from neuralgraph.device import choose_device

    device = choose_device("auto")
    device_name = f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    time_steps = [int(T) for T in args.time_steps.split(",")]
    node = {T: _run_worker("node", T, args) for T in time_steps}
    per_edge = {} if args.skip_per_edge else _run_worker("per_edge", 1, args)
    summary = summarize(node, per_edge, device_name, torch.get_num_threads(), args)
    if device.type == "cuda":
        graph = {T: _run_worker("node_graph", T, args) for T in time_steps}
        summary["node_level_cuda_graph"] = {f"T{T}": r for T, r in graph.items()}
        summary["projected_seed_run_min_cuda_graph"] = {
            f"T{T}": round(r["ms_per_step"] * SEED_STEPS_PER_EPOCH / 60000, 2) for T, r in graph.items() if "ms_per_step" in r}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
