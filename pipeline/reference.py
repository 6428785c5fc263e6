"""The reference's published cases, run with its published recipes (issue 18): ``snakemake reference``.

A reference spec (config/reference.yaml) lists case files (config/experiments/reference/*.yaml,
each with a ``reference:`` section: sources, published result, recipe, seeds). For every
(case, seed) this module runs the ordinary workflow once (the study's machinery,
:mod:`pipeline.study`): one block of ONE iteration, the root, whose config is the case's start
config with its published recipe applied and the seed in the case's seed field. No search:
the table compares the reference's recipe, trained here, with the reference's published number.
Then it writes, under ``results/reference/<name>/``:

- ``reference.tsv``: one row per (case, seed): connectivity_R2, test_R2 held out (ours) and on
  the training trajectory (the reference's way), the published numbers, effective rank (ours,
  exact, and the reference's top-100 version), spectral radius, training steps and minutes;
- ``reference.md``: one row per case (ours beside the published number, and whether the target
  holds), then the per-seed rows of every case run on several seeds.

Resuming is the study's: a finished run (its summary table exists) is not redone, and a run
stopped part-way resumes from its checkpoints. ``--report-only`` writes the tables of the runs
finished so far and starts none.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent import layout
from neuralgraph.config import ConfigError, ExperimentConfig, dump_config, load_config, with_updates
from neuralgraph.dataset import STATS_FILE
from neuralgraph.io import atomic_write_text, read_json
from pipeline.study import REPO, RUNS_DIR, run_workflows, workflow_command, workflow_finished

log = logging.getLogger("pipeline.reference")

REFERENCE_DIR = "reference"
REFERENCE_TABLE = "reference.tsv"
REFERENCE_REPORT = "reference.md"
#: Targets of issue 18: the low-rank case succeeds on a seed above this connectivity_R2 with
#: test_R2 above LOWRANK_TEST_R2 (the reference: 8 of 10 seeds); every other case within
#: PUBLISHED_TOLERANCE of the reference's published best, or better.
LOWRANK_SUCCESS = 0.999
LOWRANK_TEST_R2 = 0.98
LOWRANK_SEEDS_NEEDED = 8
PUBLISHED_TOLERANCE = 0.01
COLUMNS = ["case", "seed", "connectivity_R2", "published_connectivity_R2", "test_R2_held_out", "test_R2_training",
           "published_test_R2", "effective_rank_99", "effective_rank_99_top100", "published_effective_rank_99",
           "spectral_radius", "steps", "training_time_min", "status", "run"]


class ReferenceError(ValueError):
    """A reference spec or case that cannot run; the message names the field."""


class CaseEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    experiment: str = Field(description="case file with a reference: section")
    seeds: Optional[list[int]] = Field(None, min_length=1, description="seeds to run (default: the case's reference.seeds)")


class ReferenceSpec(BaseModel):
    """config/reference.yaml: which cases, on which seeds."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="results/reference/<name>/")
    cases: list[CaseEntry] = Field(min_length=1)
    cores: int = Field(1, ge=1, le=1024, description="--cores of each run's snakemake")
    snakemake_args: list[str] = Field(default_factory=list, description="extra arguments of each run's snakemake")


def load_spec(path: str | Path) -> ReferenceSpec:
    """The spec at ``path`` with every case file loaded and checked (a bad one is named)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        spec = ReferenceSpec.model_validate(raw)
    except (OSError, yaml.YAMLError) as exc:
        raise ReferenceError(f"{path}: cannot read the reference spec ({exc})") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ReferenceError(f"{path}: {problems}") from None
    for entry in spec.cases:
        case_config(entry)
    return spec


def case_config(entry: CaseEntry) -> ExperimentConfig:
    try:
        cfg = load_config(entry.experiment)
    except ConfigError as exc:
        raise ReferenceError(str(exc)) from None
    if cfg.reference is None:
        raise ReferenceError(f"{entry.experiment}: has no reference: section (name, sources, published, recipe)")
    return cfg


def case_runs(spec: ReferenceSpec) -> list[tuple[ExperimentConfig, int]]:
    """Every (case config, seed) of the spec, in the order they run."""
    return [(cfg, seed) for entry in spec.cases for cfg in [case_config(entry)]
            for seed in (entry.seeds or cfg.reference.seeds)]


def run_name(cfg: ExperimentConfig, seed: int) -> str:
    return f"{cfg.reference.name}_s{seed}"


def recipe_experiment(cfg: ExperimentConfig, seed: int, folder: Path) -> Path:
    """The case with its recipe applied and the seed set, written once: the run's experiment.

    The workflow copies claude.n_epochs / data_augmentation_loop into the root's training, so
    they follow the recipe's training values."""
    run = cfg.with_recipe()
    run = with_updates(run, {cfg.reference.seed_field: seed,
                             "claude.n_epochs": run.training.n_epochs,
                             "claude.data_augmentation_loop": run.training.data_augmentation_loop},
                       source=f"{cfg.reference.name} recipe")
    path = folder / "experiments" / f"{run_name(cfg, seed)}.yaml"
    if not path.exists() or load_config(path) != run:
        path.parent.mkdir(parents=True, exist_ok=True)
        dump_config(run, path)
    return path


def execute_runs(spec: ReferenceSpec, folder: Path, snakefile: Path) -> list[str]:
    """Run every (case, seed) not finished yet; the names of the runs that failed."""
    runs = case_runs(spec)
    todo = [(cfg, seed) for cfg, seed in runs if not workflow_finished(folder, run_name(cfg, seed))]
    log.info("%d runs in the reference table, %d finished before, %d to run", len(runs), len(runs) - len(todo), len(todo))
    return run_workflows(folder, [
        (run_name(cfg, seed),
         lambda cfg=cfg, seed=seed: workflow_command(recipe_experiment(cfg, seed, folder), run_name(cfg, seed), folder,
                                                     spec.cores, snakefile, spec.snakemake_args, time_step=1, n_iter=1,
                                                     slots=1, policy="heuristic", seed=seed))
        for cfg, seed in todo])


def _number(value: Any) -> float:
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def run_row(folder: Path, cfg: ExperimentConfig, seed: int) -> dict[str, Any]:
    """reference.tsv's row of one finished run (its root node, iter_001)."""
    from neuralgraph.analyze import training_trajectory_test_r2  # lazy: torch

    name = run_name(cfg, seed)
    run_dir = folder / RUNS_DIR / name
    node = layout.IterationFolder.at(run_dir, 1)
    metrics, training = node.metrics(), node.training_record()
    stats_path = run_dir / layout.DATA_DIR / STATS_FILE
    stats = read_json(stats_path) if stats_path.exists() else {}
    pub = cfg.reference.published
    return {
        "case": cfg.reference.name, "seed": seed, "connectivity_R2": _number(metrics.get("connectivity_R2")),
        "published_connectivity_R2": pub.connectivity_R2, "test_R2_held_out": _number(metrics.get("test_R2")),
        "test_R2_training": training_trajectory_test_r2(node.path, run_dir / layout.DATA_DIR),
        "published_test_R2": _number(pub.test_R2),
        "effective_rank_99": metrics.get("effective_rank_99"),
        "effective_rank_99_top100": stats.get("effective_rank_99_top100"),
        "published_effective_rank_99": pub.effective_rank_99 or "",
        "spectral_radius": _number(metrics.get("spectral_radius")), "steps": training.get("iterations"),
        "training_time_min": _number(training.get("training_time_min")), "status": metrics.get("status"),
        "run": name,
    }


def collect(spec: ReferenceSpec, folder: Path) -> pd.DataFrame:
    """reference.tsv's table from every finished run (unfinished ones are absent)."""
    rows = [run_row(folder, cfg, seed) for cfg, seed in case_runs(spec) if workflow_finished(folder, run_name(cfg, seed))]
    return pd.DataFrame(rows, columns=COLUMNS)


def _fmt(value: Any, digits: int = 4) -> str:
    number = _number(value)
    return "" if not np.isfinite(number) else f"{number:.{digits}f}"


def _span(values: pd.Series) -> str:
    """'12' or '6-14': the range of a column over a case's seeds."""
    low, high = values.min(), values.max()
    return f"{low}" if low == high else f"{low}-{high}"


def target_verdict(cfg: ExperimentConfig, rows: pd.DataFrame, n_seeds: int) -> str:
    """Whether issue 18's target holds for a case, in words (with what it rests on)."""
    if rows.empty:
        return "not run"
    if cfg.reference.name == "lowrank":
        good = int(((rows["connectivity_R2"] > LOWRANK_SUCCESS) & (rows["test_R2_held_out"] > LOWRANK_TEST_R2)).sum())
        verdict = "holds" if good >= LOWRANK_SEEDS_NEEDED else (
            "misses" if good + n_seeds - len(rows) < LOWRANK_SEEDS_NEEDED else "open")
        return (f"{verdict}: {good} of {len(rows)} seeds run above {LOWRANK_SUCCESS} with test_R2 > {LOWRANK_TEST_R2} "
                f"(target {LOWRANK_SEEDS_NEEDED} of {n_seeds})")
    best = float(rows["connectivity_R2"].max())
    published = cfg.reference.published.connectivity_R2
    verdict = "holds" if best >= published - PUBLISHED_TOLERANCE else "misses"
    return f"{verdict}: {best - published:+.4f} against the published {published:.4f} (target: within {PUBLISHED_TOLERANCE})"


def report_markdown(spec: ReferenceSpec, table: pd.DataFrame) -> str:
    """reference.md: one row per case, then the per-seed rows of the multi-seed cases."""
    lines = [f"# Reference cases `{spec.name}`", "",
             "Each case trained once per seed with the reference's published recipe (no search). test_R2 "
             "held out: our rollout from the first held-out frame; on training: the reference's way, from "
             "frame 0 of the training data. Effective rank 99%: ours (all components) / the reference's "
             "(top 100 components). Published numbers are the reference's best after its own search.", "",
             "| case | seeds run | connectivity_R2 (median [min - max]) | published | test_R2 held out | "
             "test_R2 on training | published test_R2 | eff. rank 99% (ours / ref. way) | published eff. rank | "
             "spectral radius | steps | minutes | target |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    multi = []
    for entry in spec.cases:
        cfg = case_config(entry)
        seeds = entry.seeds or cfg.reference.seeds
        rows = table[table["case"] == cfg.reference.name]
        pub = cfg.reference.published
        if len(seeds) > 1:
            multi.append((cfg, rows))
        if rows.empty:
            lines.append(f"| {cfg.reference.name} | 0 of {len(seeds)} | not run | {pub.connectivity_R2:.4f} |  |  | "
                         f"{_fmt(pub.test_R2)} |  | {pub.effective_rank_99 or ''} |  |  |  | not run |")
            continue
        r2 = rows["connectivity_R2"]
        spread = f"{r2.median():.4f} [{r2.min():.4f} - {r2.max():.4f}]" if len(rows) > 1 else f"{r2.iloc[0]:.4f}"
        ranks = f"{_span(rows['effective_rank_99'])} / {_span(rows['effective_rank_99_top100'])}"
        lines.append(
            f"| {cfg.reference.name} | {len(rows)} of {len(seeds)} | {spread} | {pub.connectivity_R2:.4f} | "
            f"{_fmt(rows['test_R2_held_out'].median())} | {_fmt(rows['test_R2_training'].median())} | {_fmt(pub.test_R2)} | "
            f"{ranks} | {pub.effective_rank_99 or ''} | {_fmt(rows['spectral_radius'].median(), 3)} | "
            f"{int(rows['steps'].median())} | {_fmt(rows['training_time_min'].median(), 1)} | "
            f"{target_verdict(cfg, rows, len(seeds))} |")
    for cfg, rows in multi:
        lines += ["", f"## {cfg.reference.name} per seed", "",
                  f"Published: {cfg.reference.published.seeds_above or cfg.reference.published.connectivity_R2}.", "",
                  "| seed | connectivity_R2 | test_R2 held out | test_R2 on training | eff. rank 99% (ours / ref. way) | "
                  "spectral radius | steps | minutes |", "|---|---|---|---|---|---|---|---|"]
        for _, row in rows.iterrows():
            lines.append(f"| {row['seed']} | {_fmt(row['connectivity_R2'])} | {_fmt(row['test_R2_held_out'])} | "
                         f"{_fmt(row['test_R2_training'])} | {row['effective_rank_99']} / {row['effective_rank_99_top100']} | "
                         f"{_fmt(row['spectral_radius'], 3)} | {row['steps']} | {_fmt(row['training_time_min'], 1)} |")
    return "\n".join(lines) + "\n"


def reference_folder(results_dir: str | Path, spec: ReferenceSpec) -> Path:
    return Path(results_dir) / REFERENCE_DIR / spec.name


def run_reference(spec_path: str | Path, results_dir: str | Path = "results", snakefile: Optional[Path] = None,
                  run: bool = True) -> tuple[Path, list[str]]:
    """Run (or resume) every case and seed, then write reference.tsv and reference.md."""
    spec = load_spec(spec_path)
    folder = reference_folder(results_dir, spec)
    folder.mkdir(parents=True, exist_ok=True)
    failed = execute_runs(spec, folder, snakefile or REPO / "Snakefile") if run else []
    table = collect(spec, folder)
    atomic_write_text(folder / REFERENCE_TABLE, table.to_csv(sep="\t", index=False))
    atomic_write_text(folder / REFERENCE_REPORT, report_markdown(spec, table))
    return folder, failed


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline reference", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="reference spec YAML (config/reference.yaml)")
    parser.add_argument("--results-dir", default="results", help="the workflow's results_dir")
    parser.add_argument("--report-only", action="store_true",
                        help="start no run: write the tables of the runs finished so far")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s reference: %(message)s", datefmt="%H:%M:%S")
    try:
        folder, failed = run_reference(args.spec, args.results_dir, run=not args.report_only)
    except ReferenceError as exc:
        print(f"reference: error: {exc}", file=sys.stderr)
        return 2
    log.info("wrote %s and %s in %s", REFERENCE_TABLE, REFERENCE_REPORT, folder)
    if failed:
        print(f"reference: {len(failed)} run(s) failed (their logs: {folder / 'logs'}): {', '.join(failed)}; "
              "the finished runs are in the table; rerun the same command to retry", file=sys.stderr)
        return 1
    return 0
