"""The files of a trained run folder, named by the science stages that write them.

A run folder is what ``python -m neuralgraph train --out RUN`` and ``analyze --run RUN`` work
on; the workflow's ``iter_NNN`` folders are run folders (agent/layout.py composes them from
these names). Each name belongs to its writer:

* the trainer (:mod:`neuralgraph.training`): the model, the resumable checkpoint, the training
  record and the heartbeat its watchdog reads;
* analyze (:mod:`neuralgraph.analyze`): metrics.json and the figures under plots/ (its
  ``analysis.log`` is named by :mod:`neuralgraph.analysis_log`, the owner of that format,
  which the dataset folder shares).

Why a module of its own instead of constants inside training.py / analyze.py: those import
torch and the numerical stack, and the workflow composes paths from these names every time
it parses the Snakefile. This module imports only neuralgraph.io (no torch): the train job
judges a run from these names and statuses before, or instead of, starting the engine. Nothing
here knows of iterations, rounds or the agent.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from neuralgraph.io import read_json

# --------------------------------------------------------------------------- written by the trainer
#: The final model: {"state_dict", "config", "n_neurons", "n_types"} (neuralgraph.model).
MODEL_FILE = "model.pt"
#: Resumable state (model, optimizer, RNG, epoch, step, loss history); kept after the run.
CHECKPOINT_FILE = "checkpoint.pt"
#: The training record: status, reason, final_loss, loss_history, timings, ...
TRAINING_RECORD_FILE = "training.json"
#: Heartbeat: step, rate and time, rewritten every few seconds (the stall watchdog reads it).
HEARTBEAT_FILE = "progress.json"

#: Statuses of a finished run (training.json next to model.pt): a result, the chain goes on.
#: "stalled" is written by the job launcher when its watchdog ends an edited loop that made no
#: progress or ran past its wall-clock cap (neuralgraph.training.record_stopped_run).
STATUS_STALLED = "stalled"
#: Written by the job launcher when a contained run left something it must not (a link, a
#: FIFO, an oversized or malformed output): nothing it wrote is used (pipeline.train_job).
STATUS_TAMPERED = "tampered"
FINISHED_STATUSES = ("ok", "diverged", STATUS_STALLED, STATUS_TAMPERED)


def finished_record(run_dir: Path) -> Optional[dict[str, Any]]:
    """training.json of a finished run (a FINISHED_STATUSES status, model.pt present), else None."""
    record_path, model_path = run_dir / TRAINING_RECORD_FILE, run_dir / MODEL_FILE
    if not (record_path.exists() and model_path.exists()):
        return None
    try:
        record = read_json(record_path)
    except ValueError:
        return None
    return record if isinstance(record, dict) and record.get("status") in FINISHED_STATUSES else None


# --------------------------------------------------------------------------- the trainer's exit codes
# Here rather than in training.py so a launcher can judge a run without importing torch (the
# decide job's smoke run, agent.smoke).
EXIT_RUNTIME_ERROR = 1
#: The config or the dataset was refused before any training code ran.
EXIT_BAD_INPUT = 2
EXIT_OUT_OF_MEMORY = 3
#: The training module (an edited train_loop.py) could not be loaded.
EXIT_BAD_LOOP = 4
EXIT_TERMINATED = 143

# --------------------------------------------------------------------------- written by analyze
#: The scores of the run (docs/architecture.md, "metrics.json").
METRICS_FILE = "metrics.json"
#: Folder of analyze's figures, inside the run folder (or analyze's --out).
PLOTS_DIR = "plots"
LOSS_PLOT = "loss.png"
CONNECTIVITY_PLOT = "connectivity.png"
ROLLOUT_PLOT = "rollout.png"
EMBEDDINGS_PLOT = "embeddings.png"
LIN_EDGE_PLOT = "lin_edge.png"
LIN_PHI_PLOT = "lin_phi.png"
#: Every figure analyze may draw, in the order a reader shows them (the explorer does).
PLOT_FILES = (CONNECTIVITY_PLOT, ROLLOUT_PLOT, LOSS_PLOT, EMBEDDINGS_PLOT, LIN_EDGE_PLOT, LIN_PHI_PLOT)
