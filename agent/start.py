"""The init stage: the experiment's first round from its config (``python -m agent init``).

Iteration 1 is the block root: the experiment config with ``claude.n_epochs`` /
``claude.data_augmentation_loop`` copied into ``training`` and the schedule's first
time_step. With ``slots`` = K > 1 the first round also holds K-1 one-mutation variants of the
root (nodes 2..K, recorded as its children), made by the same seeded rule decide uses at
later block starts (:func:`agent.policies.heuristic.variant_mutations`).
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any, Optional

from agent import layout
from agent.command import add_plan_options, parse_schedule, plan_or_explicit, run_command
from agent.decision import ALLOWED_PARAMETERS
from agent.inputs import read_text
from agent.policies.heuristic import variant_mutations
from agent.run_plan import AGENT_DEFAULTS, RunPlan
from agent.tree import code_hash
from neuralgraph import PACKAGED_LOOP
from neuralgraph.config import ExperimentConfig, dump_config, inert_training_fields, load_config, with_updates
from neuralgraph.io import atomic_write_json, atomic_write_text


def experiment_start_config(cfg: ExperimentConfig, schedule: Optional[list[int]]) -> ExperimentConfig:
    """Iteration 1's config: claude.n_epochs / data_augmentation_loop copied into training,
    time_step = the schedule's first entry (or the experiment's own time_step)."""
    updates: dict[str, Any] = {"training.n_epochs": cfg.claude.n_epochs,
                               "training.data_augmentation_loop": cfg.claude.data_augmentation_loop}
    if schedule:
        updates["training.time_step"] = schedule[0]
    return with_updates(cfg, updates, source="init")


def block_start_variants(start: ExperimentConfig, n: int, seed: int) -> list[tuple[ExperimentConfig, dict]]:
    """``n`` one-mutation variants of block 1's root (config, mutation record), as decide makes them
    for later blocks (agent.policies.heuristic.variant_mutations, seeded)."""
    config = start.to_dict()
    training = config["training"]
    variants = []
    for mutation in variant_mutations(training, n, random.Random(f"{seed}:variants:0"), inert_training_fields(config)):
        value = int(round(mutation.new)) if ALLOWED_PARAMETERS[mutation.parameter].integer else mutation.new
        config = with_updates(start, {f"training.{mutation.parameter}": value}, source="init (block-start variant)")
        variants.append((config, {"parameter": mutation.parameter, "old": training.get(mutation.parameter),
                                  "new": value}))
    return variants


def start_experiment(config: Path, out_dir: Path, schedule: Optional[list[int]], loop: Path, slots: int = 1,
                     seed: int = 0) -> list[Path]:
    """Write the first round's folders (config.yaml, train_loop.py, proposal.json, empty code.diff)."""
    start = experiment_start_config(load_config(config), schedule)
    code = read_text(loop, "training module (--loop)")
    base = {"block": 1, "time_step": start.training.time_step, "code_modified": False, "code_hash": code_hash(code),
            "round": 1}
    nodes = [(out_dir, start, {**base, "id": 1, "parent": None, "iteration": 1, "strategy": "init",
                               "mutation": None, "derived_from": None, "policy": "init", "slot": 1, "role": "root"})]
    for slot, (cfg, mutation) in enumerate(block_start_variants(start, slots - 1, seed), start=2):
        folder = out_dir.parent / layout.iteration_dir_name(slot)
        nodes.append((folder, cfg, {**base, "id": slot, "parent": 1, "iteration": slot, "strategy": "explore",
                                    "mutation": mutation, "derived_from": 1, "policy": "block-start variant",
                                    "slot": slot, "role": "variant"}))
    for folder, cfg, proposal in nodes:
        dump_config(cfg, folder / layout.CONFIG_FILE)
        atomic_write_text(folder / layout.LOOP_FILE, code)
        atomic_write_text(folder / layout.DIFF_FILE, "")
        atomic_write_json(folder / layout.PROPOSAL_FILE, {**proposal, "dir": folder.name})
    return [folder for folder, _, _ in nodes]


def start_from_plan(plan: RunPlan, loop: Path) -> list[Path]:
    """The init job: the first round's folders, from the plan (experiment, schedule, slots, seed)."""
    return start_experiment(Path(plan.experiment), layout.IterationFolder.at(plan.results, 1).path,
                            plan.schedule_list(), loop, slots=plan.slots, seed=plan.agent.seed)


# --------------------------------------------------------------------------- python -m agent init


def build_parser() -> argparse.ArgumentParser:
    """init's options: --plan (the workflow's form) or the explicit ones (SUPPRESS: absent unless given)."""
    p = argparse.ArgumentParser(prog="python -m agent init", argument_default=argparse.SUPPRESS,
                                description="Either --plan P (experiment, schedule, slots and seed from plan.json) "
                                            "or the explicit options.")
    add_plan_options(p)
    p.add_argument("--loop", default=str(PACKAGED_LOOP), help="training module to copy (default: packaged)")
    explicit = p.add_argument_group("without --plan")
    explicit.add_argument("--config", help="experiment config (YAML)")
    explicit.add_argument("--out-dir", help=f"iteration 1's folder, e.g. results/exp/{layout.iteration_dir_name(1)}")
    explicit.add_argument("--n-iter-block", type=int, help="iterations per block (default: claude.n_iter_block)")
    explicit.add_argument("--schedule", help="comma list of time_steps per block, or 'agent' (the default)")
    explicit.add_argument("--slots", type=int,
                          help="nodes of the first round (default 1): the root and slots-1 one-mutation variants")
    explicit.add_argument("--seed", type=int, help=f"seed of the variants' mutations (default {AGENT_DEFAULTS.seed})")
    return p


def run_init(args: argparse.Namespace) -> int:
    """The first round's folders from the plan, or from the explicit options."""
    plan = plan_or_explicit(args, ("config", "out_dir"))
    if plan is not None:
        written = start_from_plan(plan, Path(args.loop))
    else:
        written = start_experiment(Path(args.config), Path(args.out_dir), parse_schedule(getattr(args, "schedule", None)),
                                   Path(args.loop), slots=getattr(args, "slots", 1),
                                   seed=getattr(args, "seed", AGENT_DEFAULTS.seed))
    print(f"agent init: wrote config.yaml, train_loop.py, proposal.json, code.diff into "
          f"{', '.join(p.name for p in written)}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m agent init``: exit codes of :func:`agent.command.run_command`."""
    return run_command(build_parser(), run_init, argv)
