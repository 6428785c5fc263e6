"""The policy study: does a search policy beat random search at an equal budget? (issue 12, part 5)

A study spec (config/study.yaml) names benchmarks, policies and seeds. For every
(benchmark, policy, seed) this module runs the ordinary workflow once, as its own
``snakemake`` process with ``--config`` overrides, into ``results/study/<name>/runs/<run>/``:
one block of ``n_iter`` iterations at the benchmark's ``time_step``, ``slots`` per round. Then it
reads every run's summary table and writes

- ``study.tsv``: one row per (benchmark, policy, seed, iteration): connectivity_R2, its
  best-so-far, test_R2, wall seconds since the run's first training started, LLM cost so far;
- ``study_summary.tsv``: per (benchmark, policy) and round end, the median / min / max of the
  best-so-far over seeds;
- ``study.md``: the same as tables to read (medians per round end; per seed, the network's
  regime and each policy's best node);
- ``best_so_far.png``: best-so-far against iteration, median and quartiles per policy, one panel
  per benchmark, the benchmark's ceiling (docs/benchmarks.md) as a dashed line.

Why one workflow run per seed rather than a study inside one DAG: each run is then exactly what
a user gets from ``snakemake`` with that config (same files, same summary), and resuming is
Snakemake's: a run whose outputs exist is not redone, so a study stopped part-way keeps what it
finished and the same command carries on. A failed run does not stop the others; the study
reports the failures by name and exits non-zero.

The study seed ``s`` sets ``agent.seed`` and the benchmark's ``seed_field``: ``training.seed``
(a new search on the same network, so the ceiling applies to every seed) or ``simulation.seed``
(a new network, as bench_lowrank's 10 W realisations).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Literal, Optional

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.costs import COSTS_NAME
from neuralgraph import layout
from neuralgraph.config import ALLOWED_TIME_STEPS
from neuralgraph.io import atomic_write_text, read_json
from neuralgraph.secrets import VAULT_ENV
from pipeline import summary as summary_names

log = logging.getLogger("pipeline.study")

REPO = Path(__file__).resolve().parents[1]
#: Policies a study may compare; the LLM ones run only where their credentials are (see
#: :func:`policy_unavailable`), the others always.
STUDY_POLICIES = ("heuristic", "random", "anthropic", "claude-code")
#: Where a study's files go, under the workflow's results_dir.
STUDY_DIR = "study"
STUDY_TABLE = "study.tsv"
STUDY_SUMMARY = "study_summary.tsv"
STUDY_FIGURE = "best_so_far.png"
STUDY_REPORT = "study.md"
#: results/study/<name>/runs/<run>/: each run's ordinary results folder.
RUNS_DIR = "runs"
#: Per-node diagnostics copied from each node's metrics.json: the activity regime of the seed's
#: network (a settled network is a different problem, docs/benchmarks.md) and, for low-rank W,
#: the subspace diagnostic.
DIAGNOSTIC_COLUMNS = ["spectral_radius", "effective_rank_99", "W_column_subspace_R2", "W_row_subspace_R2"]
STUDY_COLUMNS = ["benchmark", "policy", "seed", "iteration", "round", "connectivity_R2", "best_so_far",
                 "test_R2", "wall_time_s", "cost_usd", *DIAGNOSTIC_COLUMNS, "run"]


class StudyError(ValueError):
    """A study spec that cannot run; the message names the field and the allowed values."""


class Benchmark(BaseModel):
    """One benchmark of a study: an experiment file and how its seeds and budget are set."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="short name, used in run folder names")
    experiment: str = Field(description="experiment YAML (relative to the working directory or absolute)")
    seeds: list[int] = Field(min_length=1, description="study seeds; each sets agent.seed and seed_field")
    seed_field: Literal["training.seed", "simulation.seed"] = Field(
        "training.seed", description="training.seed = a new search on one network; simulation.seed = a new network")
    time_step: int = Field(1, description="recurrence depth of the one block each run explores")
    n_iter: int = Field(ge=1, le=200, description="iterations (trainings) per run: the equal budget")
    slots: int = Field(1, ge=1, le=16, description="nodes per round; n_iter must be a multiple")
    ceiling: Optional[float] = Field(None, description="best connectivity_R2 of the benchmark's grid (docs/benchmarks.md)")

    @field_validator("time_step")
    @classmethod
    def _allowed_time_step(cls, value: int) -> int:
        if value not in ALLOWED_TIME_STEPS:
            raise ValueError(f"must be one of {', '.join(map(str, ALLOWED_TIME_STEPS))}")
        return value


class StudySpec(BaseModel):
    """config/study.yaml: which policies, on which benchmarks, with how many seeds."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="results/study/<name>/")
    policies: list[str] = Field(min_length=1)
    benchmarks: list[Benchmark] = Field(min_length=1)
    cores: int = Field(2, ge=1, le=1024, description="--cores of each run's snakemake (its slots train side by side)")
    snakemake_args: list[str] = Field(
        default_factory=list, description="extra arguments of each run's snakemake, e.g. [--profile, profiles/slurm]")

    @field_validator("policies")
    @classmethod
    def _known_policies(cls, values: list[str]) -> list[str]:
        unknown = [v for v in values if v not in STUDY_POLICIES]
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: allowed policies are {', '.join(STUDY_POLICIES)}")
        return values


def load_spec(path: str | Path) -> StudySpec:
    """The study spec at ``path``, checked; a bad field is named with its allowed values."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise StudyError(f"{path}: cannot read the study spec ({exc})") from None
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise StudyError(f"{path}: {problems}") from None
    for bench in spec.benchmarks:
        if bench.n_iter % bench.slots:
            raise StudyError(f"{path}: benchmarks[{bench.name}].n_iter = {bench.n_iter} must be a multiple of "
                             f"slots = {bench.slots} (a run is whole rounds)")
    return spec


def study_folder(results_dir: str | Path, spec: StudySpec) -> Path:
    return Path(results_dir) / STUDY_DIR / spec.name


def run_name(bench: Benchmark, policy: str, seed: int) -> str:
    return f"{bench.name}_{policy}_s{seed}"


def policy_unavailable(policy: str, environ: Optional[dict] = None) -> Optional[str]:
    """Why ``policy`` cannot run here (None when it can): the LLM policies need credentials.

    Under Snakemake the key is no longer in this job's environment: the Snakemake that started
    the study took it and left VAULT_ENV, which the runs' agent-decide jobs read (never this one).
    """
    environ = os.environ if environ is None else environ
    if policy == "anthropic" and not (environ.get("ANTHROPIC_API_KEY") or environ.get(VAULT_ENV)):
        return "no ANTHROPIC_API_KEY in the environment of the snakemake that started the study"
    if policy == "claude-code" and shutil.which("claude", path=environ.get("PATH")) is None:
        return "no `claude` command on PATH"
    return None


def seeded_experiment(bench: Benchmark, seed: int, folder: Path) -> Path:
    """The benchmark's experiment with the study seed in its seed field (written once)."""
    config = yaml.safe_load(Path(bench.experiment).read_text(encoding="utf-8"))
    section, key = bench.seed_field.split(".")
    config.setdefault(section, {})[key] = seed
    path = folder / "experiments" / f"{bench.name}_s{seed}.yaml"
    text = f"# {bench.experiment} with {bench.seed_field} = {seed} (study seed)\n" + yaml.safe_dump(config, sort_keys=False)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    return path


def workflow_command(experiment: Path, name: str, folder: Path, cores: int, snakefile: Path, extra: list[str],
                     time_step: int, n_iter: int, slots: int, policy: str, seed: int) -> list[str]:
    """The `snakemake` command of one ordinary workflow run into folder/runs/<name>/ (targets
    first, then --config, as the README says): one block of n_iter iterations. Shared by the
    study and the reference cases (pipeline/reference.py)."""
    agent = json.dumps({"backend": policy, "seed": seed})  # JSON is YAML: Snakemake's --config parser reads it
    return [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--cores", str(cores),
            "--rerun-incomplete", *extra, "--config", f"experiment={experiment}", f"name={name}",
            f"results_dir={folder / RUNS_DIR}", f"schedule=[{time_step}]", f"n_iter_block={n_iter}",
            f"slots={slots}", f"agent={agent}"]


def run_command(bench: Benchmark, policy: str, seed: int, folder: Path, cores: int,
                snakefile: Path, extra: list[str]) -> list[str]:
    """The `snakemake` command of one study run."""
    return workflow_command(seeded_experiment(bench, seed, folder), run_name(bench, policy, seed), folder, cores,
                            snakefile, extra, bench.time_step, bench.n_iter, bench.slots, policy, seed)


def workflow_finished(folder: Path, name: str) -> bool:
    """Whether the workflow run folder/runs/<name>/ finished (its summary table exists)."""
    return (folder / RUNS_DIR / name / layout.SUMMARY_DIR / summary_names.SUMMARY_NAME).exists()


def run_finished(folder: Path, bench: Benchmark, policy: str, seed: int) -> bool:
    return workflow_finished(folder, run_name(bench, policy, seed))


def study_runs(spec: StudySpec) -> list[tuple[Benchmark, str, int]]:
    """Every (benchmark, policy, seed) of the spec, in the order they run."""
    return [(b, p, s) for b in spec.benchmarks for p in spec.policies for s in b.seeds]


def execute_runs(spec: StudySpec, folder: Path, cores: int, snakefile: Path, extra: list[str]) -> list[str]:
    """Run every (benchmark, policy, seed) not finished yet; the names of the runs that failed."""
    skipped = {p: why for p in spec.policies if (why := policy_unavailable(p))}
    for policy, why in skipped.items():
        log.info("policy %s left out of this study: %s", policy, why)
    runnable = [(b, p, s) for b, p, s in study_runs(spec) if p not in skipped]
    todo = [(b, p, s) for b, p, s in runnable if not run_finished(folder, b, p, s)]
    log.info("%d runs in the study, %d finished before, %d to run", len(runnable), len(runnable) - len(todo), len(todo))
    return run_workflows(folder, [(run_name(b, p, s), lambda b=b, p=p, s=s: run_command(b, p, s, folder, cores,
                                                                                       snakefile, extra))
                                  for b, p, s in todo])


def run_workflows(folder: Path, todo: list[tuple[str, Callable[[], list[str]]]]) -> list[str]:
    """Run each (name, command maker) in turn, its output in folder/logs/<name>.log; a failed
    run does not stop the others. Returns the names of the runs that failed."""
    failed: list[str] = []
    started = time.monotonic()
    for done, (name, command) in enumerate(todo, 1):
        log_path = folder / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as out:
            code = subprocess.run(command(), stdout=out, stderr=subprocess.STDOUT).returncode
        if code != 0:
            failed.append(name)
        elapsed = time.monotonic() - started
        log.info("run %d/%d %s: %s; %.0f s elapsed, ETA %.0f s", done, len(todo), name,
                 "done" if code == 0 else f"FAILED (exit {code}, see {log_path})", elapsed,
                 elapsed / done * (len(todo) - done))
    return failed


def _wall_seconds(run_dir: Path, iterations: list[int]) -> dict[int, float]:
    """Seconds from the run's first training start to each iteration's training end."""
    stamps = {}
    for it in iterations:
        record = read_json(run_dir / layout.iteration_dir_name(it) / layout.TRAINING_RECORD_FILE)
        stamps[it] = (pd.Timestamp(record["started_at"]), pd.Timestamp(record["finished_at"]))
    first = min(start for start, _ in stamps.values())
    return {it: (end - first).total_seconds() for it, (_, end) in stamps.items()}


def _cost_by_iteration(run_dir: Path, iterations: list[int]) -> dict[int, float]:
    """LLM cost spent by the decisions made up to each iteration (0 for offline policies)."""
    path = run_dir / layout.SUMMARY_DIR / COSTS_NAME
    table = pd.read_csv(path, sep="\t") if path.exists() else pd.DataFrame()
    if table.empty or "iteration" not in table or "cost_usd" not in table:
        return {it: 0.0 for it in iterations}
    table = table[pd.to_numeric(table["iteration"], errors="coerce").notna()]
    costs = table.groupby(table["iteration"].astype(int))["cost_usd"].sum()
    return {it: float(costs[costs.index <= it].sum()) for it in iterations}


def run_rows(folder: Path, bench: Benchmark, policy: str, seed: int) -> list[dict]:
    """study.tsv rows of one finished run, in iteration order."""
    name = run_name(bench, policy, seed)
    run_dir = folder / RUNS_DIR / name
    table = pd.read_csv(run_dir / layout.SUMMARY_DIR / summary_names.SUMMARY_NAME, sep="\t").sort_values("iteration")
    iterations = [int(i) for i in table["iteration"]]
    wall, cost = _wall_seconds(run_dir, iterations), _cost_by_iteration(run_dir, iterations)
    rows, best = [], -np.inf
    for _, row in table.iterrows():
        it, r2 = int(row["iteration"]), float(row["connectivity_R2"])
        best = max(best, r2) if np.isfinite(r2) else best
        metrics = read_json(run_dir / layout.iteration_dir_name(it) / layout.METRICS_FILE)
        diagnostics = {c: np.nan if metrics.get(c) is None else metrics[c] for c in DIAGNOSTIC_COLUMNS}
        rows.append({"benchmark": bench.name, "policy": policy, "seed": seed, "iteration": it,
                     "round": int(row["round"]) if "round" in row else it, "connectivity_R2": r2,
                     "best_so_far": best if np.isfinite(best) else np.nan, "test_R2": float(row["test_R2"]),
                     "wall_time_s": round(wall[it], 1), "cost_usd": cost[it], **diagnostics, "run": name})
    return rows


def collect(spec: StudySpec, folder: Path) -> pd.DataFrame:
    """study.tsv's table from every finished run (unfinished ones are simply absent)."""
    rows = [row for b, p, s in study_runs(spec) if run_finished(folder, b, p, s) for row in run_rows(folder, b, p, s)]
    return pd.DataFrame(rows, columns=STUDY_COLUMNS)


def summarize_study(table: pd.DataFrame) -> pd.DataFrame:
    """Median, min, max and quartiles over seeds of the best-so-far at every iteration, per benchmark and policy."""
    columns = ["benchmark", "policy", "iteration", "median", "min", "max", "seeds", "q25", "q75"]
    if table.empty:  # no run finished yet: the tables and figure say so rather than fail
        return pd.DataFrame(columns=columns)
    grouped = table.groupby(["benchmark", "policy", "iteration"])["best_so_far"]
    out = grouped.agg(median="median", min="min", max="max", seeds="count").reset_index()
    quartiles = grouped.quantile([0.25, 0.75]).unstack()
    out["q25"], out["q75"] = quartiles[0.25].to_numpy(), quartiles[0.75].to_numpy()
    return out


def _fmt(value: float) -> str:
    return "" if value is None or not np.isfinite(value) else f"{value:.4f}"


def report_markdown(spec: StudySpec, table: pd.DataFrame, summary: pd.DataFrame) -> str:
    """study.md: per benchmark, the median best-so-far per policy at every round end (with the
    spread over seeds), and one row per seed with its network's regime and each policy's best."""
    lines = [f"# Study `{spec.name}`", "",
             "Best connectivity_R2 so far, median over seeds [min - max], at each round's end.", ""]
    for bench in spec.benchmarks:
        part = summary[summary["benchmark"] == bench.name]
        rounds = list(range(bench.slots, bench.n_iter + 1, bench.slots))
        ceiling = f"; grid ceiling {bench.ceiling:.4f}" if bench.ceiling is not None else ""
        lines += [f"## {bench.name} (time_step {bench.time_step}, {bench.n_iter} iterations, "
                  f"{bench.slots} per round{ceiling})", "",
                  "| policy | seeds | " + " | ".join(f"iteration {i}" for i in rounds) + " |",
                  "|---|---|" + "---|" * len(rounds)]
        for policy in spec.policies:
            rows = part[part["policy"] == policy].set_index("iteration")
            if rows.empty:
                continue
            cells = [f"{_fmt(rows.at[i, 'median'])} [{_fmt(rows.at[i, 'min'])} - {_fmt(rows.at[i, 'max'])}]"
                     if i in rows.index else "" for i in rounds]
            lines.append(f"| {policy} | {int(rows['seeds'].max())} | " + " | ".join(cells) + " |")
        lines += ["", "Per seed: the network's regime and each policy's best node (its test_R2 and row "
                  "subspace R2 when W is low-rank).", "",
                  "| seed | spectral radius | eff. rank 99% | " + " | ".join(
                      f"{p} best R2 | {p} test_R2 | {p} row subspace R2" for p in spec.policies
                      if (table["policy"] == p).any()) + " |"]
        shown = [p for p in spec.policies if (table["policy"] == p).any()]
        lines.append("|---|---|---|" + "---|---|---|" * len(shown))
        bench_rows = table[table["benchmark"] == bench.name]
        for seed in bench.seeds:
            seed_rows = bench_rows[bench_rows["seed"] == seed]
            if seed_rows.empty:
                continue
            cells = [_fmt(seed_rows["spectral_radius"].iloc[0]), str(seed_rows["effective_rank_99"].iloc[0])]
            for policy in shown:
                runs = seed_rows[seed_rows["policy"] == policy]
                if runs.empty or runs["connectivity_R2"].isna().all():
                    cells += ["", "", ""]
                    continue
                best = runs.loc[runs["connectivity_R2"].idxmax()]
                cells += [_fmt(best["connectivity_R2"]), _fmt(best["test_R2"]), _fmt(best["W_row_subspace_R2"])]
            lines.append(f"| {seed} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def draw_figure(spec: StudySpec, summary: pd.DataFrame, path: Path) -> None:
    """Best-so-far connectivity_R2 against iteration: median line, interquartile band (min-max
    would span the whole axis when a few seeds fail), ceiling dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = spec.benchmarks
    fig, axes = plt.subplots(1, len(benches), figsize=(5.2 * len(benches), 4), squeeze=False)
    for ax, bench in zip(axes[0], benches):
        part = summary[summary["benchmark"] == bench.name]
        for policy in spec.policies:
            rows = part[part["policy"] == policy]
            if rows.empty:
                continue
            line, = ax.plot(rows["iteration"], rows["median"], marker="o", label=f"{policy} (median, quartiles of {rows['seeds'].max()})")
            ax.fill_between(rows["iteration"], rows["q25"], rows["q75"], color=line.get_color(), alpha=0.2)
        if bench.ceiling is not None:
            ax.axhline(bench.ceiling, color="black", linestyle="--", linewidth=1, label=f"grid ceiling {bench.ceiling:.4f}")
        ax.set_title(f"{bench.name} (time_step {bench.time_step})")
        ax.set_xlabel("iteration")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("best connectivity_R2 so far")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="lower right")
        else:
            ax.text(0.5, 0.5, "no finished run yet", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def run_study(spec_path: str | Path, results_dir: str | Path = "results",
              snakefile: Optional[Path] = None, run: bool = True) -> tuple[Path, list[str]]:
    """Run (or resume) a study and write its tables and figure; returns the folder and failed runs.

    ``run=False`` starts nothing: the tables and figure of the runs finished so far (a look at a
    study in progress, or at one stopped part-way).
    """
    spec = load_spec(spec_path)
    folder = study_folder(results_dir, spec)
    folder.mkdir(parents=True, exist_ok=True)
    failed = execute_runs(spec, folder, spec.cores, snakefile or REPO / "Snakefile", spec.snakemake_args) if run else []
    table = collect(spec, folder)
    atomic_write_text(folder / STUDY_TABLE, table.to_csv(sep="\t", index=False))
    summary = summarize_study(table)
    atomic_write_text(folder / STUDY_SUMMARY, summary.to_csv(sep="\t", index=False))
    draw_figure(spec, summary, folder / STUDY_FIGURE)
    atomic_write_text(folder / STUDY_REPORT, report_markdown(spec, table, summary))
    return folder, failed


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline study", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="study spec YAML (config/study.yaml)")
    parser.add_argument("--results-dir", default="results", help="the workflow's results_dir")
    parser.add_argument("--report-only", action="store_true",
                        help="start no run: write the tables and figure of the runs finished so far")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s study: %(message)s", datefmt="%H:%M:%S")
    try:
        folder, failed = run_study(args.spec, args.results_dir, run=not args.report_only)
    except StudyError as exc:
        print(f"study: error: {exc}", file=sys.stderr)
        return 2
    log.info("wrote %s, %s, %s and %s in %s", STUDY_TABLE, STUDY_SUMMARY, STUDY_REPORT, STUDY_FIGURE, folder)
    if failed:
        print(f"study: {len(failed)} run(s) failed (their logs: {folder / 'logs'}): {', '.join(failed)}; "
              "the finished runs are in the tables; rerun the same command to retry", file=sys.stderr)
        return 1
    return 0
