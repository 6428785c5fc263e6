"""``python -m agent <command>``: the table of the exploration agent's stage commands.

Only the table and :func:`main` (the shared :func:`neuralgraph.cli.dispatch`); each command's
parser lives beside its stage, and what the commands share (option readers, exit codes 0 / 2 /
75, the redaction of what they print) is :mod:`agent.command`.

- ``init``: iteration 1's config.yaml, train_loop.py, proposal.json (and an empty code.diff).
- ``ucb``: node.json (from proposal.json + metrics.json + config + code) and ucb_scores.txt.
- ``decide``: this iteration's decision.json, memory.md, analysis.md, instructions.md and the
  next iteration's config.yaml, train_loop.py, proposal.json, code.diff.
- ``costs``: costs.tsv, every recorded LLM call of an experiment (:mod:`agent.costs`).
"""
from __future__ import annotations

from typing import Optional

from neuralgraph.cli import dispatch

#: name -> (module with main(argv), one-line help); imported only when the command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("agent.start", "write iteration 1's config.yaml, train_loop.py, proposal.json"),
    "ucb": ("agent.ucb", "write node.json and ucb_scores.txt for one iteration"),
    "decide": ("agent.decide_cli", "decide the next node; write memory, full log, instructions, next config/code"),
    "costs": ("agent.costs", "tokens and cost of every LLM call of an experiment (costs.tsv)"),
}


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m agent`` (and the ``neuralgraph-agent`` script)."""
    return dispatch("python -m agent", COMMANDS, argv)
