"""The workflow's bookkeeping jobs, and the train job before it execs the engine, start without torch.

A Snakemake job is a fresh Python process: importing torch and torch_geometric costs ~3-4 s of
CPU before any work. init, ucb, decide (unless it smokes a code edit), costs, summarize, explorer
and archive need none of it; on the tiny pipeline that import was a third of the run. This holds
the line: each module below, imported alone in a fresh interpreter, leaves torch unimported.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

#: The modules a bookkeeping job imports (its CLI and its stage), and the trainer's exit codes.
TORCH_FREE = ["agent.cli", "agent.command", "agent.start", "agent.ucb", "agent.decide", "agent.decide_cli", "agent.costs",
              "agent.smoke", "pipeline.cli", "pipeline.append_log", "pipeline.train_job", "pipeline.summary", "pipeline.explorer",
              "pipeline.archive", "neuralgraph.cli", "neuralgraph.run_files"]


@pytest.mark.parametrize("module", TORCH_FREE)
def test_a_bookkeeping_module_does_not_import_torch(module):
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'torch_geometric') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", f"importing {module} imports {out.stdout.strip()}"
