"""Parallel rounds (slots: K) through the workflow, from a project folder.

A K = 2 run writes every layout file of every node, the round's decision files in the folder
of the round's last node, and the two trainings of a round run side by side (their recorded
start and end times overlap). A round interrupted after one slot finished is completed by the
same command without retraining that slot. A K = 4 plan dry-runs with 4 train jobs ready at
once, and a block that is not a whole number of rounds is refused before any job runs.
"""
from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from agent import layout
from test_kill_resume import _assert_resumed, _interrupt, _long_tiny_workdir, _wait_for
from wf_helpers import REPO, SnakemakeResult, job_counts, mtimes, snakemake, start_snakemake, write_workflow_config

pytestmark = pytest.mark.slow

PROFILE = ("--profile", str(REPO / "profiles" / "local"))


@dataclass
class RoundsRun:
    """The module's one K = 2 run and how its first round was interrupted: ``finished`` the slot
    that had finished at the Ctrl-C (``kept``: its files' mtimes then), ``running`` the one that
    had checkpointed, ``resumed`` the output of the same command that finished the run."""
    results: Path
    finished: Path
    running: Path
    kept: dict[Path, int]
    resumed: SnakemakeResult


@pytest.fixture(scope="module")
def rounds_run(tmp_path_factory) -> RoundsRun:
    """One block of 4 nodes in 2 rounds of 2 (a block start: root + variant; then exploit + explore),
    trainings of about 10 s so that side by side is visible in their start and end times.

    Round 1's two trainings are started on one core, so they run one after the other, and a
    Ctrl-C comes while the second trains; the workflow's command with two cores then finishes the
    run (round 2's trainings side by side). One run serves the interruption test and the tests
    that read it."""
    workdir = tmp_path_factory.mktemp("k2")
    results = _long_tiny_workdir(workdir, schedule=[1], n_iter_block=4, slots=2).parent
    folders = [results / "iter_001", results / "iter_002"]
    # Round 1's trainings are the first command's targets: when Snakemake does not act on the
    # Ctrl-C (see _interrupt) it finishes them on one core and stops there, so round 2 always
    # runs under the second command, on two cores, side by side.
    round_1 = [str((f / layout.TRAINING_RECORD_FILE).relative_to(workdir)) for f in folders]
    proc = start_snakemake(workdir, *round_1, *PROFILE, "--cores", "1", cores=None)
    try:
        def one_done_other_checkpointed():
            done = [f for f in folders if (f / layout.TRAINING_RECORD_FILE).is_file()]
            running = [f for f in folders if f not in done and (f / "checkpoint.pt").is_file()]
            return (done[0], running[0]) if len(done) == 1 and running else None

        finished, running = _wait_for(one_done_other_checkpointed, 400, "one finished slot and one checkpointed")
        kept = mtimes(p for p in finished.rglob("*") if p.is_file())
        _interrupt(proc, workdir)  # stopped, or (see there) the interrupted slot retried and resumed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    resumed = snakemake(workdir, *PROFILE, cores=None, timeout=1200).check()
    return RoundsRun(results, finished, running, kept, resumed)


@pytest.fixture(scope="module")
def two_slot_run(rounds_run) -> Path:
    """The finished run's results/long folder."""
    return rounds_run.results


def _interval(folder: Path) -> tuple[datetime, datetime]:
    record = json.loads((folder / layout.TRAINING_RECORD_FILE).read_text())
    return datetime.fromisoformat(record["started_at"]), datetime.fromisoformat(record["finished_at"])


def test_every_node_has_its_files_and_every_round_its_decision(two_slot_run):
    for i in range(1, 5):
        folder = two_slot_run / layout.iteration_dir_name(i)
        missing = [n for n in layout.START_FILES + layout.NODE_RESULT_FILES if not (folder / n).is_file()]
        assert not missing, f"{folder.name} lacks {missing}"
        round_end = i % 2 == 0
        for name in layout.DECISION_FILES:
            assert (folder / name).is_file() == round_end, f"{folder.name}/{name}"
    nodes = [json.loads((two_slot_run / layout.iteration_dir_name(i) / layout.NODE_FILE).read_text())
             for i in range(1, 5)]
    assert [(n["round"], n["slot"], n["role"]) for n in nodes] == [
        (1, 1, "root"), (1, 2, "variant"), (2, 1, "exploit"), (2, 2, "explore")]
    assert nodes[1]["parent"] == 1 and nodes[1]["mutation"]["parameter"]
    record = json.loads((two_slot_run / "iter_002" / layout.DECISION_FILE).read_text())
    assert [(s["slot"], s["node_id"], s["next"]["id"]) for s in record["slots"]] == [(1, 1, 3), (2, 2, 4)]
    # the round's entries in node order, Emerging Observations last (iter_004 ends the block: its
    # memory moved the block into the summary table, the full log keeps every entry)
    memory = (two_slot_run / "iter_002" / layout.MEMORY_FILE).read_text()
    assert memory.index("## Iter 1:") < memory.index("## Iter 2:") < memory.index("### Emerging Observations")
    full_log = (two_slot_run / "iter_004" / layout.FULL_LOG_FILE).read_text()
    assert full_log.index("## Iter 1:") < full_log.index("## Iter 2:") < full_log.index("## Iter 3:") \
        < full_log.index("## Iter 4:")


def test_the_two_trainings_of_a_round_ran_side_by_side(two_slot_run):
    """Round 2 (round 1 was started on one core, for the interruption test)."""
    (s1, e1), (s2, e2) = (_interval(two_slot_run / layout.iteration_dir_name(i)) for i in (3, 4))
    assert s1 < e2 and s2 < e1, f"nodes 3 and 4 did not overlap: {s1}-{e1} vs {s2}-{e2}"


def test_summary_shows_rounds_slots_and_wall_clock_progress(two_slot_run):
    lines = (two_slot_run / "summary" / "summary.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"))) for line in lines[1:]]
    assert [(r["round"], r["slot"], r["role"]) for r in rows] == [
        ("1", "1", "root"), ("1", "2", "variant"), ("2", "1", "exploit"), ("2", "2", "explore")]
    assert (two_slot_run / "summary" / "best_r2_vs_wall_time.png").stat().st_size > 10_000
    costs = (two_slot_run / "summary" / "costs.tsv").read_text()
    assert costs.splitlines()[-1].startswith("total")


def test_forcerun_of_a_node_redoes_it_and_what_follows_its_round_only(two_slot_run):
    workdir = two_slot_run.parent.parent
    forced = snakemake(workdir, "-n", "--forcerun", "results/long/iter_003/model.pt").check().output
    trained = sorted(line.split("iter_")[1][:3] for line in forced.splitlines()
                     if line.strip().startswith("output:") and "model.pt" in line)
    assert trained == ["003"], trained  # its sibling 004 trained on its own and is kept
    analysis_only = job_counts(snakemake(workdir, "-n", "results/long/iter_002/metrics.json", "-f").check().output)
    assert analysis_only.get("analyze") == 1 and "train" not in analysis_only


def test_interrupted_round_finishes_without_retraining_the_finished_slot(rounds_run):
    """One core: the round's two trainings ran one after the other; Ctrl-C while the second
    trained, then the same command with two cores finished the round from its checkpoint."""
    assert mtimes(rounds_run.kept) == rounds_run.kept, f"the finished slot {rounds_run.finished.name} was redone"
    _assert_resumed(rounds_run.running, rounds_run.running.name.split("_")[1])
    assert "rule simulate" not in rounds_run.resumed.output


def test_k4_plan_has_four_trainings_ready_at_once_and_bad_k_is_refused(tmp_path):
    write_workflow_config(tmp_path, schedule=[1, 4], n_iter_block=8, slots=4)
    output = snakemake(tmp_path, "-n").check().output
    counts = job_counts(output)
    assert counts["train"] == 16 and sorted(k for k in counts if k.startswith("decide_")) == [
        "decide_004", "decide_008", "decide_012", "decide_016"]
    init = next(block for block in output.split("\n\n") if "rule init:" in block)
    assert all(f"iter_00{i}/config.yaml" in init for i in range(1, 5))  # the first round: 4 nodes at once
    write_workflow_config(tmp_path, schedule=[1], n_iter_block=6, slots=4)
    refused = snakemake(tmp_path, "-n")
    assert refused.returncode != 0
    assert "slots = 4: n_iter_block = 6 is not a multiple of it" in refused.output
    assert "choose slots among 1, 2, 3, 6" in refused.output
