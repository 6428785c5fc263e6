"""The policy study: does a search policy beat random search at an equal budget? (issues 12 and 19)

A study spec (config/study.yaml) names benchmarks, policies and seeds. For every
(benchmark, mode, policy, seed) this module runs the ordinary workflow once, as its own
``snakemake`` process with ``--config`` overrides, into
``results/study/<name>/runs/<benchmark>[-fixed]_<policy>_s<seed>/``: one block of ``n_iter``
iterations at the benchmark's ``time_step``, ``slots`` per round. Then it reads every run's
summary table and each node's training.json and writes

- ``study.tsv``: one row per (benchmark, mode, policy, seed, iteration): connectivity_R2, its
  best-so-far, test_R2, the compute spent (the node's optimizer steps and steps x horizon, the
  run's cumulative steps x horizon and training minutes), wall seconds since the run's first
  training started, LLM cost so far;
- ``study_summary.tsv``: per (benchmark, mode, policy), the best over seeds at every iteration
  and within common compute budgets (:func:`equal_compute`), paired by seed with random;
- ``study.md``: the same as tables to read (per benchmark and mode, equal iterations, equal
  compute, per seed the network's regime and each policy's best; both modes side by side);
- ``best_so_far.png``: best-so-far against iteration and against compute, median and quartiles
  per policy, one column per benchmark and mode, the benchmark's ceiling dashed.

Why compute: an iteration's cost is a policy's choice (rule 6b of the heuristic doubles the step
budget), so winning at equal iterations may be "trained longer"; the equal-compute comparison
and the fixed-budget mode (a benchmark's ``budget``, every node held to it by
claude.fixed_step_budget, see agent.decision.lock_step_budget) tell that from "searched better".

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
import datetime as _dt
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.costs import COSTS_NAME
from agent import layout
from agent.decision import ALLOWED_PARAMETERS
from agent.secrets import VAULT_ENV
from neuralgraph.config import ALLOWED_TIME_STEPS, ConfigError, parse_config, what_trains
from neuralgraph.io import atomic_write_text, read_json
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
#: Compute columns of study.tsv, from each node's training.json: ``steps`` (optimizer steps of the
#: node), ``step_horizon`` (its steps x horizon, the trainer's ``horizon_steps``), ``compute`` (the
#: run's step_horizon summed over its nodes so far, in node order) and ``training_min`` (the run's
#: training minutes so far). An iteration's cost is a policy's choice (rule 6b doubles the step
#: budget), so policies are also compared at equal ``compute`` (:func:`equal_compute`).
COMPUTE_COLUMNS = ["steps", "step_horizon", "compute", "training_min"]
STUDY_COLUMNS = ["benchmark", "mode", "policy", "seed", "iteration", "round", "connectivity_R2", "best_so_far",
                 "test_R2", *COMPUTE_COLUMNS, "wall_time_s", "cost_usd", *DIAGNOSTIC_COLUMNS, "run"]
#: The equal-compute budgets, as fractions of the common budget: the smallest total compute of
#: the runs compared (every run spent at least that much, so each has a best within it).
EQUAL_COMPUTE_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
#: The policy the others are paired with, seed by seed, when it is in the study.
BASELINE_POLICY = "random"
#: Paired differences of best connectivity_R2 smaller than this are ties.
TIE_R2 = 0.001


class StudyError(ValueError):
    """A study spec that cannot run; the message names the field and the allowed values."""


#: A study mode: "free" lets every policy choose its step budget per iteration (rule 6b doubles
#: it); "fixed" holds every node of a run at the benchmark's budget (claude.fixed_step_budget).
MODES = ("free", "fixed")


class Budget(BaseModel):
    """A benchmark's budget per iteration: optimizer steps, or training minutes (the trainer then
    chooses data_augmentation_loop from its measured step rate). Neither: the experiment's own
    step budget (claude.n_epochs x its data_augmentation_loop)."""

    model_config = ConfigDict(extra="forbid")
    steps: Optional[int] = Field(None, ge=1, description="optimizer steps per iteration (the nearest data_augmentation_loop)")
    training_time_target_min: Optional[float] = Field(None, gt=0.0, le=10_000.0,
                                                      description="training minutes per iteration")


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
    budget: Optional[Budget] = Field(None, description="the budget per iteration of both modes (the root's step budget)")
    modes: Optional[list[Literal["free", "fixed"]]] = Field(
        None, min_length=1, description="free and/or fixed; default both with a budget, free without")
    set: dict[str, Any] = Field(default_factory=dict, description="dotted fields set on the experiment for this "
                                "benchmark (not its seed_field), e.g. simulation.W_draw: ours to keep the networks "
                                "a study was measured on when the case file moves on")

    @property
    def run_modes(self) -> list[str]:
        if self.modes is not None:
            return list(dict.fromkeys(self.modes))
        return list(MODES) if self.budget is not None else ["free"]

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
    labels = [case_label(b, m) for b in spec.benchmarks for m in b.run_modes]
    if len(set(labels)) != len(labels):
        raise StudyError(f"{path}: benchmarks: names must differ, also from another's '<name>-fixed' "
                         f"(runs named {', '.join(labels)})")
    for bench in spec.benchmarks:
        if "fixed" in bench.run_modes and bench.budget is None:
            raise StudyError(f"{path}: benchmarks[{bench.name}].modes = fixed needs a budget "
                             "(budget: {steps: N}, {training_time_target_min: M}, or {} for the experiment's own)")
        if bench.budget is not None and bench.budget.steps is not None and bench.budget.training_time_target_min is not None:
            raise StudyError(f"{path}: benchmarks[{bench.name}].budget: set steps or training_time_target_min, not both")
        if bench.budget is not None and bench.budget.steps is not None:
            step_budget(bench)  # refuses a step count no data_augmentation_loop reaches
        if bench.n_iter % bench.slots:
            raise StudyError(f"{path}: benchmarks[{bench.name}].n_iter = {bench.n_iter} must be a multiple of "
                             f"slots = {bench.slots} (a run is whole rounds)")
        check_benchmark_set(path, bench)
    return spec


def check_benchmark_set(path: Path, bench: Benchmark) -> None:
    """Refuse, naming the benchmark and the field, a ``set`` of its seed field (the study seed sets
    it) or one the config schema refuses."""
    from neuralgraph.config import ConfigError, load_config, with_updates

    if not bench.set:
        return
    where = f"{path}: benchmarks[{bench.name}].set"
    if bench.seed_field in bench.set:
        raise StudyError(f"{where}: {bench.seed_field} is the benchmark's seed_field: the study seeds set it")
    try:
        with_updates(load_config(bench.experiment), bench.set, source=where)
    except ConfigError as exc:
        raise StudyError(str(exc)) from None


def study_folder(results_dir: str | Path, spec: StudySpec) -> Path:
    return Path(results_dir) / STUDY_DIR / spec.name


def case_label(bench: Benchmark, mode: str) -> str:
    """The benchmark's name in run and file names: <name> (free mode) or <name>-fixed."""
    return bench.name if mode == "free" else f"{bench.name}-{mode}"


def run_name(bench: Benchmark, mode: str, policy: str, seed: int) -> str:
    return f"{case_label(bench, mode)}_{policy}_s{seed}"


def dal_for_steps(cfg, target: int) -> tuple[int, int]:
    """(data_augmentation_loop, optimizer steps per iteration) nearest ``target`` steps for the
    experiment ``cfg`` (the trainer's formula, claude.n_epochs epochs). Raises ValueError naming
    the reachable range when no allowed data_augmentation_loop gives about that many steps.
    Shared by the study's budgets and the reference cases' searches (pipeline/reference.py)."""
    from neuralgraph.training import iterations_per_epoch  # the trainer's own formula (one owner)

    high = int(ALLOWED_PARAMETERS["data_augmentation_loop"].high)
    steps = {dal: cfg.claude.n_epochs * iterations_per_epoch(cfg.simulation.n_frames, dal, cfg.training.batch_size)
             for dal in range(1, high + 1)}
    if not steps[1] <= target <= steps[high]:
        raise ValueError(f"{steps[1]} to {steps[high]} steps per iteration (data_augmentation_loop 1 to {high})")
    dal = min(steps, key=lambda d: (abs(steps[d] - target), d))
    return dal, steps[dal]


def step_budget(bench: Benchmark) -> tuple[int, int]:
    """(data_augmentation_loop, optimizer steps per iteration) for the benchmark's budget in steps;
    a step count outside what the allowed data_augmentation_loop range gives is refused."""
    from neuralgraph.config import load_config

    try:
        return dal_for_steps(load_config(bench.experiment), bench.budget.steps)
    except ValueError as exc:
        raise StudyError(f"benchmarks[{bench.name}].budget.steps = {bench.budget.steps}: {bench.experiment} gives "
                         f"{exc}") from None


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


def budgeted(config: dict, bench: Benchmark, mode: str) -> tuple[dict, str]:
    """The experiment (a dict) at the benchmark's budget per iteration, locked in fixed mode; and
    a note of what changed. Both modes start from the same root, so they differ only by the lock."""
    budget, notes = bench.budget, []
    if budget is None:
        return config, ""
    if budget.steps is not None:
        dal, steps = step_budget(bench)
        config.setdefault("training", {})["data_augmentation_loop"] = dal
        config.setdefault("claude", {})["data_augmentation_loop"] = dal
        notes.append(f"data_augmentation_loop {dal} ({steps} steps per iteration)")
    if budget.training_time_target_min is not None:
        config.setdefault("training", {})["training_time_target_min"] = budget.training_time_target_min
        notes.append(f"training_time_target_min {budget.training_time_target_min}")
    if mode == "fixed":
        config.setdefault("claude", {})["fixed_step_budget"] = True
        notes.append("claude.fixed_step_budget true")
    return config, ", ".join(notes)


def seeded_experiment(bench: Benchmark, mode: str, seed: int, folder: Path) -> Path:
    """The benchmark's experiment with the study seed in its seed field and the mode's budget (written once)."""
    config = yaml.safe_load(Path(bench.experiment).read_text(encoding="utf-8"))
    for dotted, value in {**bench.set, bench.seed_field: seed}.items():
        section, key = dotted.split(".")
        config.setdefault(section, {})[key] = value
    config, budget = budgeted(config, bench, mode)
    path = folder / "experiments" / f"{case_label(bench, mode)}_s{seed}.yaml"
    changes = "".join(f", {dotted} = {value}" for dotted, value in bench.set.items())
    text = (f"# {bench.experiment} with {bench.seed_field} = {seed} (study seed){changes}"
            + (f", {budget}" if budget else "") + "\n" + yaml.safe_dump(config, sort_keys=False))
    runs = [run_name(bench, mode, policy, seed) for policy in STUDY_POLICIES]  # every run trained from it
    return write_run_experiment(folder, path, text, runs)


def write_run_experiment(folder: Path, path: Path, text: str, runs: list[str]) -> Path:
    """Write a campaign run's experiment file, atomically and only when its text changes.

    Why the runs: a finished run is never redone, so a run trained from the file's OLD text would
    be reported as the new experiment's result. When what trains changes (not only a comment, the
    description or the reference metadata: :func:`neuralgraph.config.what_trains`), each of
    ``runs`` already present is moved aside to runs/<name>.stale-<UTC time> (kept, never
    deleted), so it is trained again from the new text, and the log names it."""
    if path.exists():
        old = path.read_text(encoding="utf-8")
        if old == text:
            return path
        if _trains_differently(old, text, path):
            retire_runs(folder, runs, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path


def _trains_differently(old: str, new: str, path: Path) -> bool:
    """Whether two texts of an experiment file train different runs (an old text the schema
    no longer accepts counts as different: nothing can vouch for its runs)."""
    try:
        before = parse_config(yaml.safe_load(old), source=str(path))
    except (ConfigError, yaml.YAMLError):
        return True
    return what_trains(before) != what_trains(parse_config(yaml.safe_load(new), source=str(path)))


def retire_runs(folder: Path, runs: list[str], experiment: Path) -> None:
    """Move each present run of ``runs`` aside to runs/<name>.stale-<UTC time> (kept), saying why."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for name in runs:
        run_dir = folder / RUNS_DIR / name
        if run_dir.exists():
            stale = run_dir.with_name(f"{name}.stale-{stamp}")
            run_dir.rename(stale)
            log.warning("%s: its experiment %s changed since it ran: moved to %s (kept) and trained again",
                        name, experiment, stale)


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


def run_command(bench: Benchmark, mode: str, policy: str, seed: int, folder: Path, cores: int,
                snakefile: Path, extra: list[str]) -> list[str]:
    """The `snakemake` command of one study run."""
    return workflow_command(seeded_experiment(bench, mode, seed, folder), run_name(bench, mode, policy, seed), folder,
                            cores, snakefile, extra, bench.time_step, bench.n_iter, bench.slots, policy, seed)


def workflow_finished(folder: Path, name: str) -> bool:
    """Whether the workflow run folder/runs/<name>/ finished (its summary table exists)."""
    return (folder / RUNS_DIR / name / layout.SUMMARY_DIR / summary_names.SUMMARY_NAME).exists()


def run_finished(folder: Path, bench: Benchmark, mode: str, policy: str, seed: int) -> bool:
    return workflow_finished(folder, run_name(bench, mode, policy, seed))


def study_cases(spec: StudySpec) -> list[tuple[Benchmark, str]]:
    """Every (benchmark, mode) of the spec: the sections of study.md and panels of the figure."""
    return [(b, m) for b in spec.benchmarks for m in b.run_modes]


def case_title(bench: Benchmark, mode: str) -> str:
    return bench.name if mode == "free" else f"{bench.name}, {mode} budget"


def study_runs(spec: StudySpec) -> list[tuple[Benchmark, str, str, int]]:
    """Every (benchmark, mode, policy, seed) of the spec, in the order they run."""
    return [(b, m, p, s) for b, m in study_cases(spec) for p in spec.policies for s in b.seeds]


def execute_runs(spec: StudySpec, folder: Path, cores: int, snakefile: Path, extra: list[str]) -> list[str]:
    """Run every (benchmark, mode, policy, seed) not finished yet; the names of the runs that failed."""
    skipped = {p: why for p in spec.policies if (why := policy_unavailable(p))}
    for policy, why in skipped.items():
        log.info("policy %s left out of this study: %s", policy, why)
    runnable = [(b, m, p, s) for b, m, p, s in study_runs(spec) if p not in skipped]
    written = set()
    for bench, mode, _, seed in runnable:  # before judging what finished: a changed experiment retires its runs
        if (case_label(bench, mode), seed) not in written:
            written.add((case_label(bench, mode), seed))
            seeded_experiment(bench, mode, seed, folder)
    todo = [run for run in runnable if not run_finished(folder, *run)]
    log.info("%d runs in the study, %d finished before, %d to run", len(runnable), len(runnable) - len(todo), len(todo))
    return run_workflows(folder, [(run_name(b, m, p, s), lambda b=b, m=m, p=p, s=s: run_command(b, m, p, s, folder,
                                                                                               cores, snakefile, extra))
                                  for b, m, p, s in todo])


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


def _training_records(run_dir: Path, iterations: list[int]) -> dict[int, dict]:
    return {it: layout.IterationFolder.at(run_dir, it).training_record() for it in iterations}


def _wall_seconds(records: dict[int, dict]) -> dict[int, float]:
    """Seconds from the run's first training start to each iteration's training end."""
    stamps = {it: (pd.Timestamp(r["started_at"]), pd.Timestamp(r["finished_at"])) for it, r in records.items()}
    first = min(start for start, _ in stamps.values())
    return {it: (end - first).total_seconds() for it, (_, end) in stamps.items()}


def step_horizon(record: dict) -> int:
    """A training's compute in optimizer steps x horizon, as its training.json records it.

    ``horizon_steps`` is exact (warm-up epochs are single-step); records written before it
    existed give steps x the last epoch's horizon.
    """
    if record.get("horizon_steps") is not None:
        return int(record["horizon_steps"])
    return int(record.get("iterations") or 0) * int(record.get("horizon") or record.get("time_step") or 1)


def compute_so_far(records: dict[int, dict]) -> dict[int, dict]:
    """Per iteration: the node's steps and steps x horizon, and the run's cumulative compute and
    training minutes up to and including it (node order = iteration order)."""
    out, compute, minutes = {}, 0, 0.0
    for it in sorted(records):
        record = records[it]
        node = step_horizon(record)
        compute += node
        minutes += float(record.get("training_time_min") or 0.0)
        out[it] = {"steps": int(record.get("iterations") or 0), "step_horizon": node, "compute": compute,
                   "training_min": round(minutes, 4)}
    return out


def _cost_by_iteration(run_dir: Path, iterations: list[int]) -> dict[int, float]:
    """LLM cost spent by the decisions made up to each iteration (0 for offline policies)."""
    path = run_dir / layout.SUMMARY_DIR / COSTS_NAME
    table = pd.read_csv(path, sep="\t") if path.exists() else pd.DataFrame()
    if table.empty or "iteration" not in table or "cost_usd" not in table:
        return {it: 0.0 for it in iterations}
    table = table[pd.to_numeric(table["iteration"], errors="coerce").notna()]
    costs = table.groupby(table["iteration"].astype(int))["cost_usd"].sum()
    return {it: float(costs[costs.index <= it].sum()) for it in iterations}


def run_rows(folder: Path, bench: Benchmark, mode: str, policy: str, seed: int) -> list[dict]:
    """study.tsv rows of one finished run, in iteration order."""
    name = run_name(bench, mode, policy, seed)
    run_dir = folder / RUNS_DIR / name
    table = pd.read_csv(run_dir / layout.SUMMARY_DIR / summary_names.SUMMARY_NAME, sep="\t").sort_values("iteration")
    iterations = [int(i) for i in table["iteration"]]
    records = _training_records(run_dir, iterations)
    wall, cost, spent = _wall_seconds(records), _cost_by_iteration(run_dir, iterations), compute_so_far(records)
    rows, best = [], -np.inf
    for _, row in table.iterrows():
        it, r2 = int(row["iteration"]), float(row["connectivity_R2"])
        best = max(best, r2) if np.isfinite(r2) else best
        metrics = layout.IterationFolder.at(run_dir, it).metrics()
        diagnostics = {c: np.nan if metrics.get(c) is None else metrics[c] for c in DIAGNOSTIC_COLUMNS}
        rows.append({"benchmark": bench.name, "mode": mode, "policy": policy, "seed": seed, "iteration": it,
                     "round": int(row["round"]) if "round" in row else it, "connectivity_R2": r2,
                     "best_so_far": best if np.isfinite(best) else np.nan, "test_R2": float(row["test_R2"]),
                     **spent[it], "wall_time_s": round(wall[it], 1), "cost_usd": cost[it], **diagnostics, "run": name})
    return rows


def collect(spec: StudySpec, folder: Path) -> pd.DataFrame:
    """study.tsv's table from every finished run (unfinished ones are simply absent)."""
    rows = [row for run in study_runs(spec) if run_finished(folder, *run) for row in run_rows(folder, *run)]
    return pd.DataFrame(rows, columns=STUDY_COLUMNS)


#: study_summary.tsv: one row per (benchmark, mode, axis, x, policy). ``axis`` "iteration": x is
#: the iteration and the statistics are of the best-so-far there; ``axis`` "compute": x is a
#: compute budget (steps x horizon; ``fraction`` of the common budget) and the statistics are of
#: the best each run reached within it. ``vs`` ... ``losses``: paired by seed with ``vs``.
SUMMARY_COLUMNS = ["benchmark", "mode", "axis", "x", "fraction", "policy", "seeds", "median", "min", "max", "q25",
                   "q75", "compute_median", "vs", "median_diff", "wins", "ties", "losses"]


def best_within(run: pd.DataFrame, budgets) -> np.ndarray:
    """The best connectivity_R2 one run reached within each compute budget (NaN before its
    first node fits): its best-so-far at the last node whose cumulative compute <= the budget."""
    run = run.sort_values("iteration")
    compute = run["compute"].to_numpy(dtype=float)
    best = run["connectivity_R2"].astype(float).cummax().to_numpy()  # NaN (failed) nodes do not count
    best = pd.Series(best).ffill().to_numpy()
    index = np.searchsorted(compute, np.asarray(budgets, dtype=float), side="right") - 1
    return np.where(index >= 0, best[np.clip(index, 0, None)], np.nan)


def paired_rows(values: pd.DataFrame, baseline: str = BASELINE_POLICY) -> list[dict]:
    """Per policy: the spread over seeds of ``values`` (columns policy, seed, value) and, when
    ``baseline`` is among the policies, the paired comparison with it: the median over shared
    seeds of (policy - baseline) and the wins / ties / losses (|difference| < TIE_R2 is a tie)."""
    rows = []
    base = values[values["policy"] == baseline].set_index("seed")["value"]
    for policy in pd.unique(values["policy"]):
        mine = values[values["policy"] == policy].set_index("seed")["value"]
        finite = mine.dropna()
        row = {"policy": policy, "seeds": int(finite.size), "median": finite.median() if finite.size else np.nan,
               "min": finite.min() if finite.size else np.nan, "max": finite.max() if finite.size else np.nan,
               "q25": finite.quantile(0.25) if finite.size else np.nan,
               "q75": finite.quantile(0.75) if finite.size else np.nan,
               "vs": "", "median_diff": np.nan, "wins": np.nan, "ties": np.nan, "losses": np.nan}
        if policy != baseline and not base.empty:
            diff = (mine - base).dropna()  # aligned on seed: the same network and start for both
            if diff.size:
                row.update(vs=baseline, median_diff=float(diff.median()), wins=int((diff >= TIE_R2).sum()),
                           ties=int((diff.abs() < TIE_R2).sum()), losses=int((diff <= -TIE_R2).sum()))
        rows.append(row)
    return rows


def common_budget(part: pd.DataFrame) -> float:
    """The smallest total compute of the runs in ``part``: a budget every one of them spent."""
    return float(part.groupby("run")["compute"].max().min())


def equal_compute(table: pd.DataFrame, fractions=EQUAL_COMPUTE_FRACTIONS,
                  baseline: str = BASELINE_POLICY) -> pd.DataFrame:
    """The policies compared at equal compute, per benchmark and mode: at each fraction of the
    common budget (:func:`common_budget`), the best each run reached within it (:func:`best_within`),
    median and spread over seeds per policy, paired by seed with ``baseline``.

    Equal iterations are not equal cost when a policy chooses its step budget (rule 6b doubles
    it); this is the comparison that separates "searched better" from "trained longer".
    """
    rows = []
    for (bench, mode), part in table.groupby(["benchmark", "mode"], sort=False):
        common = common_budget(part)
        for fraction in fractions:
            budget = round(common * fraction)
            values = [{"policy": policy, "seed": seed, "value": float(best_within(run, [budget])[0])}
                      for (policy, seed), run in part.groupby(["policy", "seed"], sort=False)]
            for row in paired_rows(pd.DataFrame(values), baseline):
                rows.append({"benchmark": bench, "mode": mode, "axis": "compute", "x": budget, "fraction": fraction,
                             **row, "compute_median": budget})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def by_iteration(table: pd.DataFrame, baseline: str = BASELINE_POLICY) -> pd.DataFrame:
    """Best-so-far at every iteration per benchmark, mode and policy (median, spread, paired by
    seed), with the median compute the runs had spent by then."""
    rows = []
    for (bench, mode, it), part in table.groupby(["benchmark", "mode", "iteration"], sort=False):
        values = part.rename(columns={"best_so_far": "value"})[["policy", "seed", "value"]]
        spent = part.groupby("policy")["compute"].median()
        for row in paired_rows(values, baseline):
            rows.append({"benchmark": bench, "mode": mode, "axis": "iteration", "x": int(it), "fraction": np.nan,
                         **row, "compute_median": float(spent[row["policy"]])})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def summarize_study(table: pd.DataFrame) -> pd.DataFrame:
    """study_summary.tsv: best-so-far against iteration and the comparison at equal compute."""
    if table.empty:  # no run finished yet: the tables and figure say so rather than fail
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    out = pd.concat([by_iteration(table), equal_compute(table)], ignore_index=True)
    return out.sort_values(["benchmark", "mode", "axis", "x"], kind="stable", ignore_index=True)


def _fmt(value: float) -> str:
    return "" if value is None or not np.isfinite(value) else f"{value:.4f}"


def _cell(row: pd.Series) -> str:
    if not np.isfinite(row["median"]):
        return "no node yet"
    return f"{_fmt(row['median'])} [{_fmt(row['min'])} - {_fmt(row['max'])}]"


def _paired_cell(row: pd.Series) -> str:
    if not row["vs"] or not np.isfinite(row["median_diff"]):
        return ""
    return f"{row['median_diff']:+.4f} ({int(row['wins'])}/{int(row['ties'])}/{int(row['losses'])})"


def _shown(spec: StudySpec, part: pd.DataFrame) -> list[str]:
    return [p for p in spec.policies if (part["policy"] == p).any()]


def _iteration_lines(spec: StudySpec, bench: Benchmark, part: pd.DataFrame) -> list[str]:
    rounds = list(range(bench.slots, bench.n_iter + 1, bench.slots))
    rows = part[part["axis"] == "iteration"]
    lines = ["At equal iterations: best connectivity_R2 so far, median over seeds [min - max], at each "
             "round's end; below it the median compute spent by then (steps x horizon).", "",
             "| policy | seeds | " + " | ".join(f"iteration {i}" for i in rounds) + " |",
             "|---|---|" + "---|" * len(rounds)]
    spent = []
    for policy in _shown(spec, rows):
        mine = rows[rows["policy"] == policy].set_index("x")
        cells = [_cell(mine.loc[i]) if i in mine.index else "" for i in rounds]
        lines.append(f"| {policy} | {int(mine['seeds'].max())} | " + " | ".join(cells) + " |")
        spent.append(f"| {policy} compute | | " + " | ".join(
            f"{mine.at[i, 'compute_median']:.0f}" if i in mine.index else "" for i in rounds) + " |")
    return lines + spent + [""]


def _compute_lines(spec: StudySpec, part: pd.DataFrame) -> list[str]:
    rows = part[part["axis"] == "compute"]
    if rows.empty:
        return []
    budgets = sorted(set(zip(rows["fraction"], rows["x"])))
    lines = ["At equal compute: the best connectivity_R2 each run reached within the same spent "
             "budget (steps x horizon; 100% = the smallest total of the runs), median over seeds "
             "[min - max]; paired by seed with " + f"{BASELINE_POLICY}: median difference (wins/ties/losses, "
             f"|difference| < {TIE_R2} a tie).", "",
             "| policy | seeds | " + " | ".join(f"{f:.0%} ({int(b)})" for f, b in budgets) + " |",
             "|---|---|" + "---|" * len(budgets)]
    paired = []
    for policy in _shown(spec, rows):
        mine = rows[rows["policy"] == policy].set_index("fraction")
        lines.append(f"| {policy} | {int(mine['seeds'].max())} | " + " | ".join(
            _cell(mine.loc[f]) if f in mine.index else "" for f, _ in budgets) + " |")
        if (mine["vs"] != "").any():
            paired.append(f"| {policy} - {BASELINE_POLICY} | | " + " | ".join(
                _paired_cell(mine.loc[f]) if f in mine.index else "" for f, _ in budgets) + " |")
    return lines + paired + [""]


def _seed_lines(spec: StudySpec, bench: Benchmark, rows: pd.DataFrame) -> list[str]:
    shown = _shown(spec, rows)
    common = common_budget(rows) if not rows.empty else np.nan
    budget = f"{common:.0f}" if np.isfinite(common) else "-"
    lines = ["Per seed: the network's regime and each policy's best node (its test_R2 and row "
             f"subspace R2 when W is low-rank), and its best within the common budget ({budget} steps x horizon).", "",
             "| seed | spectral radius | eff. rank 99% | " + " | ".join(
                 f"{p} best R2 | {p} test_R2 | {p} row subspace R2 | {p} at common budget" for p in shown) + " |",
             "|---|---|---|" + "---|---|---|---|" * len(shown)]
    for seed in bench.seeds:
        seed_rows = rows[rows["seed"] == seed]
        if seed_rows.empty:
            continue
        cells = [_fmt(seed_rows["spectral_radius"].iloc[0]), str(seed_rows["effective_rank_99"].iloc[0])]
        for policy in shown:
            runs = seed_rows[seed_rows["policy"] == policy]
            if runs.empty or runs["connectivity_R2"].isna().all():
                cells += ["", "", "", ""]
                continue
            best = runs.loc[runs["connectivity_R2"].idxmax()]
            cells += [_fmt(best["connectivity_R2"]), _fmt(best["test_R2"]), _fmt(best["W_row_subspace_R2"]),
                      _fmt(best_within(runs, [common])[0])]
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    return lines + [""]


def _budget_note(bench: Benchmark, mode: str) -> str:
    if bench.budget is None:
        return ""
    if bench.budget.steps is not None:
        dal, steps = step_budget(bench)
        what = f"{steps} optimizer steps per iteration (data_augmentation_loop {dal})"
    elif bench.budget.training_time_target_min is not None:
        what = f"{bench.budget.training_time_target_min} training minutes per iteration"
    else:
        what = "the experiment's own step budget per iteration"
    held = ("every node is held to it: a decision's change of the step budget is neutralised "
            "(proposal.json: step_budget_neutralised)" if mode == "fixed"
            else "the root starts at it; policies may change the step budget")
    return f"Budget: {what}; {held}."


def _last(part: pd.DataFrame, axis: str, policy: str) -> Optional[pd.Series]:
    rows = part[(part["axis"] == axis) & (part["policy"] == policy)]
    return None if rows.empty else rows.loc[rows["x"].idxmax()]


def _modes_lines(spec: StudySpec, bench: Benchmark, summary: pd.DataFrame) -> list[str]:
    """Both modes of one benchmark side by side: the last iteration and the common budget."""
    modes = bench.run_modes
    if len(modes) < 2:
        return []
    parts = {m: summary[(summary["benchmark"] == bench.name) & (summary["mode"] == m)] for m in modes}
    head = " | ".join(f"{m}: iteration {bench.n_iter} | {m}: at its common budget" for m in modes)
    lines = [f"## {bench.name}: the modes side by side", "",
             "Best connectivity_R2, median over seeds (paired with " + f"{BASELINE_POLICY}: median difference, "
             "wins/ties/losses).", "", f"| policy | {head} |", "|---|" + "---|---|" * len(modes)]
    for policy in spec.policies:
        cells = []
        for m in modes:
            for axis in ("iteration", "compute"):
                row = _last(parts[m], axis, policy)
                paired = _paired_cell(row) if row is not None else ""
                cells.append("" if row is None else f"{_fmt(row['median'])}" + (f" ({paired})" if paired else ""))
        if any(cells):
            lines.append(f"| {policy} | " + " | ".join(cells) + " |")
    return lines + [""]


def report_markdown(spec: StudySpec, table: pd.DataFrame, summary: pd.DataFrame) -> str:
    """study.md: per benchmark and mode, the policies at equal iterations and at equal compute,
    one row per seed with its network's regime and each policy's best; the modes side by side."""
    lines = [f"# Study `{spec.name}`", ""]
    for bench, mode in study_cases(spec):
        part = summary[(summary["benchmark"] == bench.name) & (summary["mode"] == mode)]
        rows = table[(table["benchmark"] == bench.name) & (table["mode"] == mode)]
        ceiling = f"; grid ceiling {bench.ceiling:.4f}" if bench.ceiling is not None else ""
        lines += [f"## {case_title(bench, mode)} (time_step {bench.time_step}, {bench.n_iter} iterations, "
                  f"{bench.slots} per round{ceiling})", ""]
        note = _budget_note(bench, mode)
        lines += [note, ""] if note else []
        lines += _iteration_lines(spec, bench, part) + _compute_lines(spec, part) + _seed_lines(spec, bench, rows)
    for bench in spec.benchmarks:
        lines += _modes_lines(spec, bench, summary)
    return "\n".join(lines)


def _compute_curve(rows: pd.DataFrame, n_levels: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Budget levels up to the smallest total of ``rows``' runs, and the median / quartiles over
    runs of the best within each."""
    top = common_budget(rows)
    levels = np.linspace(0, top, n_levels + 1)[1:]
    best = np.array([best_within(run, levels) for _, run in rows.groupby("run")])
    with warnings.catch_warnings():  # levels below every run's first node: NaN, said by the gap
        warnings.simplefilter("ignore", RuntimeWarning)
        return (levels, np.nanmedian(best, axis=0), np.nanquantile(best, 0.25, axis=0),
                np.nanquantile(best, 0.75, axis=0))


def draw_figure(spec: StudySpec, table: pd.DataFrame, summary: pd.DataFrame, path: Path) -> None:
    """Best-so-far connectivity_R2 against iteration (top row) and against compute spent (steps x
    horizon, bottom row): median line, interquartile band (min-max would span the whole axis when
    a few seeds fail), the common budget of the equal-compute table dotted, ceiling dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neuralgraph.plots import save_figure  # lazy: matplotlib

    cases = study_cases(spec)
    fig, axes = plt.subplots(2, len(cases), figsize=(5.2 * len(cases), 8), squeeze=False)
    for column, (bench, mode) in enumerate(cases):
        top, bottom = axes[0][column], axes[1][column]
        part = summary[(summary["benchmark"] == bench.name) & (summary["mode"] == mode) & (summary["axis"] == "iteration")]
        rows = table[(table["benchmark"] == bench.name) & (table["mode"] == mode)]
        for policy in spec.policies:
            mine = part[part["policy"] == policy]
            if mine.empty:
                continue
            line, = top.plot(mine["x"], mine["median"], marker="o", label=f"{policy} (median, quartiles of {mine['seeds'].max()})")
            top.fill_between(mine["x"], mine["q25"], mine["q75"], color=line.get_color(), alpha=0.2)
            levels, median, q25, q75 = _compute_curve(rows[rows["policy"] == policy])
            bottom.plot(levels, median, color=line.get_color(), label=policy, drawstyle="steps-post")
            bottom.fill_between(levels, q25, q75, color=line.get_color(), alpha=0.2, step="post")
        if not rows.empty:
            bottom.axvline(common_budget(rows), color="grey", linestyle=":", linewidth=1, label="common budget")
        for ax in (top, bottom):
            if bench.ceiling is not None:
                ax.axhline(bench.ceiling, color="black", linestyle="--", linewidth=1, label=f"grid ceiling {bench.ceiling:.4f}")
            ax.set_ylabel("best connectivity_R2 so far")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8, loc="lower right")
            else:
                ax.text(0.5, 0.5, "no finished run yet", ha="center", va="center", transform=ax.transAxes)
        top.set_title(f"{case_title(bench, mode)} (time_step {bench.time_step})")
        top.set_xlabel("iteration")
        top.xaxis.get_major_locator().set_params(integer=True)
        bottom.set_xlabel("compute spent (optimizer steps x horizon)")
    fig.tight_layout()
    save_figure(fig, path)


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
    draw_figure(spec, table, summary, folder / STUDY_FIGURE)
    atomic_write_text(folder / STUDY_REPORT, report_markdown(spec, table, summary))
    return folder, failed


def campaign_main(argv: Optional[list[str]], command: str, description: str, spec_help: str, outputs: str,
                  run: Callable[..., tuple[Path, list[str]]], error: type[Exception]) -> int:
    """The command line of a campaign of workflow runs (``study``, ``reference``): --spec,
    --results-dir, --report-only; exit 2 on a bad spec (named), 1 when a run failed (the
    finished ones are in the tables), 0 otherwise."""
    parser = argparse.ArgumentParser(prog=f"python -m pipeline {command}", description=description)
    parser.add_argument("--spec", required=True, help=spec_help)
    parser.add_argument("--results-dir", default="results", help="the workflow's results_dir")
    parser.add_argument("--report-only", action="store_true",
                        help="start no run: write the tables of the runs finished so far")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {command}: %(message)s", datefmt="%H:%M:%S")
    try:
        folder, failed = run(args.spec, args.results_dir, run=not args.report_only)
    except error as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        return 2
    logging.getLogger(f"pipeline.{command}").info("wrote %s in %s", outputs, folder)
    if failed:
        print(f"{command}: {len(failed)} run(s) failed (their logs: {folder / 'logs'}): {', '.join(failed)}; "
              "the finished runs are in the tables; rerun the same command to retry", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    return campaign_main(argv, "study", __doc__.splitlines()[0], "study spec YAML (config/study.yaml)",
                         f"{STUDY_TABLE}, {STUDY_SUMMARY}, {STUDY_REPORT} and {STUDY_FIGURE}", run_study, StudyError)
