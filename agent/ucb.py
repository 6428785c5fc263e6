"""The ucb-score stage: one node's record and its block's UCB scores (``python -m agent ucb``).

node.json = proposal.json + metrics.json + the config + the code's hash; ucb_scores.txt = the
scores of the node's block (:func:`agent.tree.score_block`, the formula in docs/agent.md).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from agent import layout
from agent.inputs import InputError, read_json_object, read_text
from agent.run_plan import RunPlan
from agent.tree import (NodeRecord, NodeScore, code_hash, load_node, merge_nodes, score_block, write_node,
                        write_scores)
from neuralgraph.config import ExperimentConfig, load_config


def node_from_inputs(proposal: dict[str, Any], metrics: dict[str, Any], cfg: ExperimentConfig, code: str,
                     folder: str, source: str) -> NodeRecord:
    record = {**proposal, "dir": proposal.get("dir") or folder, "config": cfg.to_dict(), "code_hash": code_hash(code),
              "metrics": metrics, "time_step": proposal.get("time_step", cfg.training.time_step)}
    return NodeRecord.from_dict(record, source=source)


def score_iteration(proposal: Path, metrics: Path, config: Path, code: Path, earlier: list[Path],
                    ucb_c: Optional[float], out_node: Path, out_scores: Path) -> tuple[NodeRecord, list[NodeScore]]:
    """Write node.json and ucb_scores.txt; ``ucb_c`` None = the config's claude.ucb_c."""
    cfg = load_config(config)
    node = node_from_inputs(read_json_object(proposal, layout.PROPOSAL_FILE), read_json_object(metrics, layout.METRICS_FILE),
                            cfg, read_text(code, "training module (--code)"), out_node.parent.name, str(proposal))
    nodes = merge_nodes([load_node(p) for p in earlier], [node])
    scores = score_block(nodes, node.block, cfg.claude.ucb_c if ucb_c is None else ucb_c)
    write_node(node, out_node)
    write_scores(scores, out_scores)
    return node, scores


def score_from_plan(plan: RunPlan, iteration: int) -> tuple[NodeRecord, list[NodeScore]]:
    """The ucb job of one iteration, every path derived from the plan and the folder layout."""
    if not 1 <= iteration <= plan.n_iterations:
        raise InputError(f"--iteration {iteration}: the plan has iterations 1 .. {plan.n_iterations}")
    here = layout.IterationFolder.at(plan.results, iteration)
    earlier = [layout.IterationFolder.at(plan.results, j).node_path for j in range(1, iteration)]
    return score_iteration(here.proposal_path, here.metrics_path, here.config_path, here.loop_path, earlier,
                           plan.ucb_c, here.node_path, here.scores_path)
