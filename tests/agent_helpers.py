"""Helpers for the agent tests: node records, fake iteration folders, a fake analyze stage.

The fake analyze stage stands in for training + analysis (expensive, another engineer's
stage): it writes metrics.json and analysis.log whose connectivity_R2 is a smooth function of
the node's learning rates, so the agent's real CLI can be driven for many iterations in
milliseconds.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

import yaml

from agent.cli import main as agent_main
from agent import layout
from agent.context import DecisionContext, block_of
from agent.records import slot_views
from agent.tree import NodeRecord
from neuralgraph.config import parse_config
from neuralgraph.io import atomic_write_json, atomic_write_text
from tiny_configs import tiny_config_dict

REPO = Path(__file__).resolve().parents[1]
ANALYSIS_LOG = "spectral radius: 1.029\n--- activity ---\n  effective rank (90% var): 26\n  effective rank (99% var): 84\n"


def node(id: int, parent: Optional[int], r2: Any = 0.5, block: int = 1, iteration: Optional[int] = None,
         training: Optional[dict[str, Any]] = None, mutation: Optional[dict[str, Any]] = None,
         strategy: str = "exploit", time_step: int = 1) -> NodeRecord:
    config = parse_config(tiny_config_dict()).to_dict()  # every field explicit, as in config.yaml
    config["training"].update(training or {})
    config["training"]["time_step"] = time_step
    return NodeRecord(id=id, parent=parent, block=block, iteration=iteration or id, time_step=time_step,
                      dir=f"iter_{(iteration or id):03d}", config=config, metrics={"connectivity_R2": r2},
                      mutation=mutation, strategy=strategy)


def context(nodes: list[NodeRecord], iteration: Optional[int] = None, n_iter_block: int = 8, n_blocks: int = 2,
            schedule: Optional[list[int]] = None, seed: int = 0,
            editable: tuple[str, ...] = ("train_step",)) -> DecisionContext:
    current = max(nodes, key=lambda n: n.iteration) if iteration is None else next(n for n in nodes if n.iteration == iteration)
    return DecisionContext(
        iteration=current.iteration, n_iter_block=n_iter_block, n_blocks=n_blocks, working_memory="",
        analysis_log=ANALYSIS_LOG, ucb_scores="", config=current.config, config_yaml="", code="",
        editable_functions=editable, instructions="", image_paths=[], nodes=nodes, current_node=current,
        schedule=schedule, seed=seed)


def fake_r2(training: dict[str, Any]) -> float:
    """A smooth landscape: best at lr_W = 3e-3, lr = 2e-4; worse far away (can go negative)."""
    d_w = math.log10(training["learning_rate_W_start"] / 3e-3)
    d_lr = math.log10(training["learning_rate_start"] / 2e-4)
    return round(0.99 - 0.35 * d_w ** 2 - 0.2 * d_lr ** 2, 6)


def fake_analyze(folder: Path) -> dict[str, Any]:
    """Write metrics.json + analysis.log for an iteration folder from its config.yaml."""
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    r2 = fake_r2(cfg["training"])
    outcome = "converged" if r2 > 0.9 else "partial" if r2 >= 0.1 else "failed"
    metrics = {"iteration": int(folder.name.split("_")[1]), "status": "ok", "outcome": outcome,
               "outcome_reason": f"connectivity_R2 = {r2}", "connectivity_R2": r2, "test_R2": 0.8,
               "test_pearson": 0.9, "cluster_accuracy": 1.0, "final_loss": 0.01, "training_time_min": 1.5,
               "spectral_radius": 1.029, "effective_rank_90": 26, "effective_rank_99": 84,
               "config": cfg["training"]}
    atomic_write_json(folder / "metrics.json", metrics)
    atomic_write_text(folder / "analysis.log", ANALYSIS_LOG + f"connectivity_R2: {r2}\n")
    return metrics


def write_experiment_config(path: Path, **overrides: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(tiny_config_dict(**overrides)))
    return path


def iter_dir(results: Path, i: int) -> Path:
    return results / f"iter_{i:03d}"


def ucb_args(results: Path, i: int) -> list[str]:
    d = iter_dir(results, i)
    earlier = [str(iter_dir(results, k) / "node.json") for k in range(1, i)]
    return ["ucb", "--proposal", str(d / "proposal.json"), "--metrics", str(d / "metrics.json"),
            "--config", str(d / "config.yaml"), "--code", str(d / "train_loop.py"), "--nodes", *earlier,
            "--out-node", str(d / "node.json"), "--out-scores", str(d / "ucb_scores.txt")]


def decide_args(results: Path, exp: Path, i: int, n_iter_block: int, n_blocks: int, schedule: str = "1,4",
                backend: str = "heuristic", seed: int = 0, extra: Optional[list[str]] = None) -> list[str]:
    d = iter_dir(results, i)
    prev = iter_dir(results, i - 1)
    args = ["decide", "--node", str(d / "node.json"),
            "--nodes", *[str(iter_dir(results, k) / "node.json") for k in range(1, i)],
            "--ucb", str(d / "ucb_scores.txt"), "--analysis-log", str(d / "analysis.log"),
            "--config", str(d / "config.yaml"), "--code", str(d / "train_loop.py"),
            "--iteration", str(i), "--n-iter-block", str(n_iter_block), "--n-blocks", str(n_blocks),
            "--schedule", schedule, "--backend", backend, "--seed", str(seed),
            "--base-config", str(exp), "--results-dir", str(results), "--out-dir", str(d)]
    if i > 1:
        args += ["--memory", str(prev / "memory.md"), "--full-log", str(prev / "analysis.md"),
                 "--instructions", str(prev / "instructions.md")]
    if i < n_iter_block * n_blocks:
        args += ["--next-dir", str(iter_dir(results, i + 1))]
    return args + (extra or [])


def run_exploration(results: Path, n_iter_block: int = 3, n_blocks: int = 2, schedule: str = "1,4",
                    backend: str = "heuristic", seed: int = 0, extra: Optional[list[str]] = None) -> Path:
    """init, then (fake analyze, ucb, decide) per iteration, through the real agent CLI."""
    exp = write_experiment_config(results / "experiment.yaml")
    assert agent_main(["init", "--config", str(exp), "--out-dir", str(iter_dir(results, 1)),
                       "--schedule", schedule]) == 0
    for i in range(1, n_iter_block * n_blocks + 1):
        fake_analyze(iter_dir(results, i))
        assert agent_main(ucb_args(results, i)) == 0
        assert agent_main(decide_args(results, exp, i, n_iter_block, n_blocks, schedule, backend, seed, extra)) == 0
    return exp


def block_for(i: int, n_iter_block: int) -> int:
    return block_of(i, n_iter_block)


#: A valid edit of the packaged loop's build_optimizer (Adam -> AdamW), used by the code-edit
#: tests; derived from the packaged source so the two never drift apart.
def _adamw_optimizer_source() -> str:
    import ast

    loop = (REPO / "neuralgraph" / "train_loop.py").read_text()
    fn = next(n for n in ast.parse(loop).body if isinstance(n, ast.FunctionDef) and n.name == "build_optimizer")
    source = ast.get_source_segment(loop, fn)
    assert "torch.optim.Adam(" in source, "the packaged build_optimizer no longer uses Adam"
    return source.replace("torch.optim.Adam(", "torch.optim.AdamW(") + "\n"


ADAMW_OPTIMIZER = _adamw_optimizer_source()


def decision_of(folder: Path, slot: int = 1) -> dict[str, Any]:
    """One slot of the decision.json in ``folder``, with its round's fields (agent.records.slot_views)."""
    return slot_views(json.loads((Path(folder) / layout.DECISION_FILE).read_text()))[slot - 1]
