"""Where an exploration's files live and how its iterations are numbered: the one owner.

An experiment's results folder holds one folder per node, ``iter_NNN`` (NNN = the node id =
its iteration number, three digits). Iterations come in blocks of ``n_iter_block`` (one
time_step per block) and, inside a block, in rounds of ``slots`` nodes trained side by side
(``slots`` = K; K = 1 is one node per round, the plain chain):

    block of iteration i     = (i - 1) // n_iter_block + 1
    round of iteration i     = (i - 1) // K + 1            (rounds never straddle blocks:
    slot of iteration i      = (i - 1) %  K + 1             n_iter_block is a multiple of K)

The round's decision (decision.json, memory.md, analysis.md, instructions.md) is written
into the folder of the round's last node; with K = 1 that is every node's own folder.

Why here, in the search package: iterations, blocks, rounds and slots are the search's
notions, and the agent's own stages (init, ucb, decide, the replay policy, costs) read and
write these folders. The workflow side (pipeline/, the .smk rules) imports this module, so the
dependency direction stays pipeline -> agent -> neuralgraph; the science package knows only
its run folder (:mod:`neuralgraph.run_files`) and names none of these files.

Each file name has one owner, its writer: the trainer and analyze name theirs in
:mod:`neuralgraph.run_files` (analysis.log in :mod:`neuralgraph.analysis_log`, config.yaml in
:mod:`neuralgraph.config`); the agent's files (proposal, code diff, node record, scores,
decision, memory, full log, instructions) are named here; this module composes the folder
from all of them, and every reader imports the names from it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from neuralgraph import PACKAGED_LOOP
# The science writers' names, composed into the folder below and read through this module.
from neuralgraph.analysis_log import ANALYSIS_LOG_FILE  # noqa: F401
from neuralgraph.config import CONFIG_FILE  # noqa: F401
from neuralgraph.io import read_json, read_text_nofollow
from neuralgraph.run_files import (CHECKPOINT_FILE, METRICS_FILE, MODEL_FILE, PLOT_FILES,  # noqa: F401
                                   PLOTS_DIR, TRAINING_RECORD_FILE)

#: Iteration folders are iter_NNN: three digits, so at most 999 iterations.
ITERATION_DIGITS = 3
MAX_ITERATIONS = 10**ITERATION_DIGITS - 1
ITERATION_PREFIX = "iter_"
ITERATION_DIR_PATTERN = re.compile(rf"^{ITERATION_PREFIX}(\d+)$")
#: What an iteration label looks like (the workflow's wildcard constraint).
ITERATION_LABEL_REGEX = rf"\d{{{ITERATION_DIGITS}}}"

# Files the agent writes into a node's folder (docs/workflow.md documents each).
#: The node's editable training module carries the packaged module's name.
LOOP_FILE = PACKAGED_LOOP.name
PROPOSAL_FILE = "proposal.json"
DIFF_FILE = "code.diff"
NODE_FILE = "node.json"
SCORES_FILE = "ucb_scores.txt"
# Files of a round's decision (in the round's last node folder).
DECISION_FILE = "decision.json"
MEMORY_FILE = "memory.md"
FULL_LOG_FILE = "analysis.md"  # the full log of every iteration so far (the seed's name for it)
INSTRUCTIONS_FILE = "instructions.md"

# What the workflow itself writes into a node's folder.
#: Each rule's log, logs/<rule>.log (Snakemake removes it when the job fails).
LOGS_DIR = "logs"
#: The train job's progress lines, appended over every attempt (kept when a job fails).
PROGRESS_LOG_FILE = "train.log"
#: results/<exp>/summary/: the tables and figures of the whole exploration (pipeline.summary).
SUMMARY_DIR = "summary"
#: results/<exp>/data/: the dataset folder (its files: neuralgraph.dataset).
DATA_DIR = "data"


def rule_log(rule: str) -> str:
    """A rule's log inside a node's folder ('train' -> 'logs/train.log')."""
    return f"{LOGS_DIR}/{rule}.log"


#: What the decide stage writes for the next round's nodes, and for its own round.
START_FILES = (CONFIG_FILE, LOOP_FILE, PROPOSAL_FILE, DIFF_FILE)
DECISION_FILES = (DECISION_FILE, MEMORY_FILE, FULL_LOG_FILE, INSTRUCTIONS_FILE)
#: What every node leaves (train, analyze, ucb), besides its start files.
NODE_RESULT_FILES = (MODEL_FILE, TRAINING_RECORD_FILE, rule_log("train"), ANALYSIS_LOG_FILE, METRICS_FILE,
                     NODE_FILE, SCORES_FILE)


def label(iteration: int) -> str:
    """Iteration number -> folder label ('7' -> '007')."""
    return f"{int(iteration):0{ITERATION_DIGITS}d}"


def iteration_dir_name(iteration: int) -> str:
    """Iteration number -> folder name ('7' -> 'iter_007')."""
    return f"{ITERATION_PREFIX}{label(iteration)}"


def iteration_of_dir(path: str | Path) -> Optional[int]:
    """The iteration number of an ``iter_NNN`` folder, else None."""
    match = ITERATION_DIR_PATTERN.match(Path(path).name)
    return int(match.group(1)) if match else None


def iteration_dirs(results: str | Path) -> list[Path]:
    """Every ``iter_NNN`` folder of an experiment, in iteration order."""
    found = [p for p in Path(results).glob(f"{ITERATION_PREFIX}*") if p.is_dir() and iteration_of_dir(p) is not None]
    return sorted(found, key=lambda p: iteration_of_dir(p))


def block_of(iteration: int, n_iter_block: int) -> int:
    """Block number (from 1) of an iteration (from 1)."""
    return (iteration - 1) // n_iter_block + 1


def iter_in_block_of(iteration: int, n_iter_block: int) -> int:
    """Position (from 1) of an iteration inside its block."""
    return (iteration - 1) % n_iter_block + 1


def round_of(iteration: int, slots: int) -> int:
    """Round number (from 1) of an iteration."""
    return (iteration - 1) // slots + 1


def round_iterations(round_number: int, slots: int) -> list[int]:
    """The iterations (node ids) of one round."""
    first = (round_number - 1) * slots + 1
    return list(range(first, first + slots))


def round_end(iteration: int, slots: int) -> int:
    """The last iteration of the round holding ``iteration`` (where its decision files live)."""
    return round_of(iteration, slots) * slots


def is_last_round(iteration: int, slots: int, n_iterations: int) -> bool:
    """True for the nodes of the experiment's last round: their decision plans no next round."""
    return round_end(iteration, slots) >= n_iterations


# --------------------------------------------------------------------------- one iteration's folder


class IterationFolder:
    """One ``iter_NNN`` folder: where each of its files is, and typed readers of them.

    Why: summary, explorer, study, ucb and decide read the same files; each asks for a file by
    what it is (``folder.metrics()``, ``folder.config_path``) instead of joining a name onto a
    path. A missing file is the reader's ``FileNotFoundError`` naming it, or ``{}`` / ``""``
    with ``optional=True``; JSON files are read without following links
    (:func:`neuralgraph.io.read_json`) and must hold an object.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def at(cls, results: str | Path, iteration: int) -> "IterationFolder":
        """The folder of ``iteration`` in an experiment's results folder."""
        return cls(Path(results) / iteration_dir_name(iteration))

    def __repr__(self) -> str:
        return f"IterationFolder({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def iteration(self) -> Optional[int]:
        """The iteration number its name carries (None for a folder not named iter_NNN)."""
        return iteration_of_dir(self.path)

    # ---- where each file is
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def loop_path(self) -> Path:
        return self.path / LOOP_FILE

    @property
    def proposal_path(self) -> Path:
        return self.path / PROPOSAL_FILE

    @property
    def diff_path(self) -> Path:
        return self.path / DIFF_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def training_record_path(self) -> Path:
        return self.path / TRAINING_RECORD_FILE

    @property
    def analysis_log_path(self) -> Path:
        return self.path / ANALYSIS_LOG_FILE

    @property
    def node_path(self) -> Path:
        return self.path / NODE_FILE

    @property
    def scores_path(self) -> Path:
        return self.path / SCORES_FILE

    @property
    def full_log_path(self) -> Path:
        return self.path / FULL_LOG_FILE

    @property
    def instructions_path(self) -> Path:
        return self.path / INSTRUCTIONS_FILE

    @property
    def decision_path(self) -> Path:
        return self.path / DECISION_FILE

    @property
    def memory_path(self) -> Path:
        return self.path / MEMORY_FILE

    @property
    def plots_dir(self) -> Path:
        return self.path / PLOTS_DIR

    # ---- typed readers
    def _json(self, path: Path, optional: bool) -> dict[str, Any]:
        if optional and not path.exists():
            return {}
        data = read_json(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a JSON object")
        return data

    def _text(self, path: Path, optional: bool) -> str:
        if optional and not path.exists():
            return ""
        return read_text_nofollow(path)

    def metrics(self, optional: bool = False) -> dict[str, Any]:
        """metrics.json (analyze)."""
        return self._json(self.metrics_path, optional)

    def training_record(self, optional: bool = False) -> dict[str, Any]:
        """training.json (the trainer)."""
        return self._json(self.training_record_path, optional)

    def proposal(self, optional: bool = False) -> dict[str, Any]:
        """proposal.json: how the node was made (init, or the previous round's decide)."""
        return self._json(self.proposal_path, optional)

    def node_record(self, optional: bool = False) -> dict[str, Any]:
        """node.json (agent ucb)."""
        return self._json(self.node_path, optional)

    def decision(self, optional: bool = False) -> dict[str, Any]:
        """decision.json of the round ending here (agent decide; its slots: agent.records)."""
        return self._json(self.decision_path, optional)

    def code(self, optional: bool = False) -> str:
        """train_loop.py, the node's training module."""
        return self._text(self.loop_path, optional)

    def code_diff(self, optional: bool = False) -> str:
        """code.diff, the node's module against its parent's."""
        return self._text(self.diff_path, optional)

    def memory(self, optional: bool = False) -> str:
        """memory.md of the round ending here."""
        return self._text(self.memory_path, optional)
