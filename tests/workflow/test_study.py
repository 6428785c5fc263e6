"""`snakemake study`: each policy over seeds, every run an ordinary workflow run (issue 12, part 5).

The study runs the tiny experiment with two policies and two seeds (four runs of two trainings
each) from a test working directory, as a user runs it: the `study` target with the spec named
by config/config.yaml's `study` key.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from agent import layout
from wf_helpers import (REPO, TINY_EXPERIMENT, SnakemakeResult, ctrl_c_once_started, snakemake, workflow_env,
                        write_workflow_config)

# The module fixture runs 6 workflow runs: ~6 min alone, 20+ min on a loaded 2-core CPU (the
# suite-wide pytest-timeout of 1200 s would cut it before its own 2400 s limit).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2700)]

SPEC = {
    "name": "tiny_study",
    "policies": ["heuristic", "random", "anthropic"],
    "benchmarks": [{"name": "tiny", "experiment": str(TINY_EXPERIMENT), "seeds": [0, 1], "seed_field": "training.seed",
                    "time_step": 1, "n_iter": 2, "slots": 1, "ceiling": 0.99},
                   # fixed-budget mode only: 80 steps asked, data_augmentation_loop 2 gives the nearest (75);
                   # its `set` records another network (a field of the start config for every run of it)
                   {"name": "tinyfix", "experiment": str(TINY_EXPERIMENT), "seeds": [0], "n_iter": 2, "slots": 1,
                    "budget": {"steps": 80}, "modes": ["fixed"], "set": {"simulation.seed": 11}}],
}


def write_spec(workdir, **changes):
    spec = {**SPEC, **changes}
    path = workdir / "config" / "study.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class StoppedStudy:
    """The module's one study: stopped by a Ctrl-C during its second run, then finished by the
    same command. ``kept``: mtimes of the first run's models at the stop; ``stopped``: whether
    Snakemake acted on the SIGINT; ``tables_after_stop``: whether study.tsv existed then."""
    workdir: Path
    result: SnakemakeResult
    kept: dict[Path, int]
    stopped: bool
    first_finished: bool
    tables_after_stop: bool

    @property
    def folder(self) -> Path:
        return self.workdir / "results" / "study" / SPEC["name"]


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> StoppedStudy:
    """One study serves every test: the resume test reads how it was stopped and resumed, the
    others read the tables it finally wrote (a second study for the resume alone cost minutes)."""
    workdir = tmp_path_factory.mktemp("study")
    write_workflow_config(workdir, study=str(write_spec(workdir)))
    folder = workdir / "results" / "study" / SPEC["name"]
    first = folder / "runs" / "tiny_heuristic_s0"  # runs go benchmark, mode, policy, seed: s1 is the second
    code, kept = ctrl_c_once_started(workdir, "study", folder / "runs" / "tiny_heuristic_s1" / "iter_001",
                                     (first, "iter_*/model.pt"))
    first_finished, tables_after_stop = (first / "summary" / "summary.tsv").is_file(), (folder / "study.tsv").exists()
    result = snakemake(workdir, "study", timeout=2400).check()  # 6 runs: minutes alone, more on a loaded 2-core CPU
    return StoppedStudy(workdir, result, kept, code != 0, first_finished, tables_after_stop)


def test_study_writes_one_row_per_policy_seed_and_iteration(study_dir):
    folder = study_dir.folder
    everything = pd.read_csv(folder / "study.tsv", sep="\t")
    table = everything[everything["benchmark"] == "tiny"]
    assert set(table["mode"]) == {"free"}
    assert sorted(set(zip(table["policy"], table["seed"]))) == [("heuristic", 0), ("heuristic", 1),
                                                                ("random", 0), ("random", 1)]
    assert (table.groupby(["policy", "seed"])["iteration"].apply(list) == pd.Series([[1, 2]] * 4).values).all()
    for (policy, seed), rows in table.groupby(["policy", "seed"]):
        run = pd.read_csv(folder / "runs" / f"tiny_{policy}_s{seed}" / "summary" / "summary.tsv", sep="\t")
        # The study's numbers are the run's own summary numbers, and best-so-far is their running max.
        assert list(rows["connectivity_R2"]) == pytest.approx(list(run.sort_values("iteration")["connectivity_R2"]))
        assert list(rows["best_so_far"]) == pytest.approx(list(rows["connectivity_R2"].cummax()))
        assert (rows["wall_time_s"] > 0).all() and (rows["cost_usd"] == 0).all()
        assert list(run.sort_values("iteration")["policy"]) == ["init", policy]  # the policy decided node 2
    # Compute columns: the trainer's recorded steps x horizon (training.json), summed over the
    # run's nodes in node order, and its training minutes likewise.
    for run, rows in table.groupby("run"):
        records = [json.loads((folder / "runs" / run / layout.iteration_dir_name(it) / "training.json").read_text())
                   for it in rows["iteration"]]
        assert list(rows["steps"]) == [r["iterations"] for r in records]
        assert all(r["horizon_steps"] == r["iterations"] * r["horizon"] for r in records)  # time_step 1: no warm-up
        assert list(rows["step_horizon"]) == [r["iterations"] * r["horizon"] for r in records]
        assert list(rows["compute"]) == list(pd.Series([r["iterations"] * r["horizon"] for r in records]).cumsum())
        assert list(rows["training_min"]) == pytest.approx(
            list(pd.Series([r["training_time_min"] for r in records]).cumsum()), abs=1e-3)
        assert rows["compute"].iloc[0] > 0
    # The study seed reached the run: training.seed of the root is the seed.
    root = yaml.safe_load((folder / "runs" / "tiny_random_s1" / "iter_001" / "config.yaml").read_text())
    assert root["training"]["seed"] == 1
    summary = pd.read_csv(folder / "study_summary.tsv", sep="\t")
    summary = summary[summary["benchmark"] == "tiny"]
    last = summary[(summary["policy"] == "random") & (summary["axis"] == "iteration") & (summary["x"] == 2)].iloc[0]
    finals = table[(table["policy"] == "random") & (table["iteration"] == 2)]["best_so_far"]
    assert last["median"] == pytest.approx(finals.median()) and last["seeds"] == 2
    # The equal-compute rows: at the common budget (the smallest run total), each run's best
    # within it, median over seeds.
    equal = summary[(summary["axis"] == "compute") & (summary["fraction"] == 1.0)].set_index("policy")
    common = table.groupby("run")["compute"].max().min()
    assert (equal["x"] == common).all()
    for policy in ("heuristic", "random"):
        within = [rows[rows["compute"] <= common]["connectivity_R2"].max()
                  for _, rows in table[table["policy"] == policy].groupby("seed")]
        assert equal.at[policy, "median"] == pytest.approx(pd.Series(within).median())
    assert equal.at["heuristic", "vs"] == "random"
    assert (folder / "best_so_far.png").stat().st_size > 10_000
    report = (folder / "study.md").read_text()
    median = f"{finals.median():.4f} [{finals.min():.4f} - {finals.max():.4f}]"
    assert f"| random | 2 | " in report and median in report, report
    assert "At equal compute" in report and f"100% ({int(common)})" in report, report


def test_fixed_budget_mode_holds_every_node_at_the_same_steps_x_horizon(study_dir):
    folder = study_dir.folder
    table = pd.read_csv(folder / "study.tsv", sep="\t")
    fixed = table[table["benchmark"] == "tinyfix"]
    assert set(fixed["mode"]) == {"fixed"} and set(fixed["run"]) == {"tinyfix-fixed_heuristic_s0", "tinyfix-fixed_random_s0"}
    for run, rows in fixed.groupby("run"):
        assert len(rows) == 2
        records = [json.loads((folder / "runs" / run / layout.iteration_dir_name(it) / "training.json").read_text())
                   for it in rows["iteration"]]
        # 80 steps asked: data_augmentation_loop 2 gives 75, the nearest; every node trains exactly that
        assert [r["iterations"] * r["horizon"] for r in records] == [75, 75], run
        assert [r["horizon_steps"] for r in records] == [75, 75] and list(rows["compute"]) == [75, 150]
        for it in rows["iteration"]:
            config = yaml.safe_load((folder / "runs" / run / layout.iteration_dir_name(it) / "config.yaml").read_text())
            assert config["claude"]["fixed_step_budget"] is True and config["training"]["data_augmentation_loop"] == 2
            assert config["simulation"]["seed"] == 11, (run, it)  # the benchmark's set reaches every node
    experiment = (folder / "experiments" / "tinyfix-fixed_s0.yaml").read_text()
    assert "simulation.seed = 11, data_augmentation_loop 2 (75 steps per iteration)" in experiment.splitlines()[0]
    tiny_config = yaml.safe_load((folder / "runs" / "tiny_heuristic_s0" / "iter_001" / "config.yaml").read_text())
    own_seed = yaml.safe_load(TINY_EXPERIMENT.read_text())["simulation"]["seed"]
    assert own_seed != 11 and tiny_config["simulation"]["seed"] == own_seed  # the other benchmark keeps its network
    report = (folder / "study.md").read_text()
    assert "## tinyfix, fixed budget" in report
    assert "Budget: 75 optimizer steps per iteration (data_augmentation_loop 2); every node is held to it" in report


def test_report_only_rewrites_the_tables_from_the_finished_runs_and_starts_none(study_dir, tmp_path):
    workdir, folder = study_dir.workdir, study_dir.folder
    before = (folder / "study.tsv").read_text()
    runs = sorted(p.name for p in (folder / "runs").iterdir())
    out = tmp_path / "results"
    shutil.copytree(folder, out / "study" / "tiny_study")
    shutil.rmtree(out / "study" / "tiny_study" / "runs" / "tiny_random_s1")
    done = subprocess.run([sys.executable, "-m", "pipeline", "study", "--spec", str(workdir / "config" / "study.yaml"),
                           "--results-dir", str(out), "--report-only"], capture_output=True, text=True, cwd=workdir,
                          env={**workflow_env(), "PYTHONPATH": str(REPO)}, timeout=300)
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(out / "study" / "tiny_study" / "study.tsv", sep="\t")
    assert set(table["run"]) == set(runs) - {"tiny_random_s1"}  # what was finished, nothing started
    assert sorted(p.name for p in (out / "study" / "tiny_study" / "runs").iterdir()) == sorted(set(runs) - {"tiny_random_s1"})
    assert (folder / "study.tsv").read_text() == before


def test_llm_policy_without_credentials_is_left_out_and_said_so(study_dir):
    folder = study_dir.folder
    log = (folder / "study.log").read_text()
    assert "policy anthropic left out of this study: no ANTHROPIC_API_KEY" in log
    assert not list((folder / "runs").glob("tiny_anthropic_*"))


def test_a_study_stopped_part_way_keeps_its_finished_runs_and_the_same_command_resumes(study_dir):
    """Ctrl-C (SIGINT to snakemake's process group) during the second run; the same command
    then runs only what was not finished and writes the tables."""
    assert study_dir.first_finished, "the finished run must be kept"
    assert len(study_dir.kept) == 2
    log = (study_dir.folder / "study.log").read_text()
    # Snakemake now and then does not act on the SIGINT while its job does (see
    # test_kill_resume._interrupt): the interrupted training is retried and the study completes.
    if study_dir.stopped:
        assert not study_dir.tables_after_stop, "an interrupted study must not write its tables"
        assert "6 runs in the study, 1 finished before, 5 to run" in log, log + study_dir.result.output[-2000:]
    else:
        assert "Nothing to be done" in study_dir.result.output, study_dir.result.output[-2000:]
    assert {p: p.stat().st_mtime_ns for p in study_dir.kept} == study_dir.kept, "finished runs must not be retrained"
    table = pd.read_csv(study_dir.folder / "study.tsv", sep="\t")
    assert sorted(set(table["seed"])) == [0, 1]
    assert table.groupby("run").size().to_dict() == {run: 2 for run in (  # every run, each with its 2 nodes
        "tiny_heuristic_s0", "tiny_heuristic_s1", "tiny_random_s0", "tiny_random_s1",
        "tinyfix-fixed_heuristic_s0", "tinyfix-fixed_random_s0")}


def test_a_bad_study_spec_is_refused_naming_the_field(tmp_path):
    write_workflow_config(tmp_path, study=str(write_spec(tmp_path, policies=["heuristic", "greedy"])))
    result = snakemake(tmp_path, "study", "-n")
    assert result.returncode != 0
    assert "policies" in result.output and "greedy" in result.output
    assert "allowed policies are heuristic, random, anthropic, claude-code" in result.output
    # The spec is read only for the study target: the exploration itself is unaffected.
    assert snakemake(tmp_path, "-n").returncode == 0
