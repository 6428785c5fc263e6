"""The ucb-score stage: one node's record and its block's UCB scores (``python -m agent ucb``).

node.json = proposal.json + metrics.json + the config + the code's hash; ucb_scores.txt = the
scores of the node's block (:func:`agent.tree.score_block`, the formula in docs/agent.md).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional

from agent import layout
from agent.command import add_plan_options, plan_or_explicit, run_command
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


# --------------------------------------------------------------------------- python -m agent ucb


def build_parser() -> argparse.ArgumentParser:
    """ucb's options: --plan --iteration (the workflow's form) or the explicit paths (SUPPRESS: absent unless given)."""
    p = argparse.ArgumentParser(prog="python -m agent ucb", argument_default=argparse.SUPPRESS,
                                description="Either --plan P --iteration I (every path from plan.json and the folder "
                                            "layout) or the explicit options.")
    add_plan_options(p)
    explicit = p.add_argument_group("without --plan")
    explicit.add_argument("--proposal")
    explicit.add_argument("--metrics")
    explicit.add_argument("--config")
    explicit.add_argument("--code")
    explicit.add_argument("--nodes", nargs="*", help="node.json of earlier iterations")
    explicit.add_argument("--ucb-c", type=float, help="exploration constant (default: claude.ucb_c)")
    explicit.add_argument("--out-node")
    explicit.add_argument("--out-scores")
    return p


def run_ucb(args: argparse.Namespace) -> int:
    """One iteration's node.json and ucb_scores.txt, from the plan or the explicit paths."""
    plan = plan_or_explicit(args, ("proposal", "metrics", "config", "code", "out_node", "out_scores"))
    if plan is not None:
        if args.iteration is None:
            raise InputError("--iteration: required with --plan")
        node, scores = score_from_plan(plan, args.iteration)
    else:
        node, scores = score_iteration(Path(args.proposal), Path(args.metrics), Path(args.config), Path(args.code),
                                       [Path(p) for p in getattr(args, "nodes", [])], getattr(args, "ucb_c", None),
                                       Path(args.out_node), Path(args.out_scores))
    print(f"agent ucb: node {node.id} (block {node.block}) R2={node.r2}; {len(scores)} nodes scored")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m agent ucb``: exit codes of :func:`agent.command.run_command`."""
    return run_command(build_parser(), run_ucb, argv)
