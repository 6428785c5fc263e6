"""``python -m pipeline <command>``: the table of the workflow-side commands.

Only the table and :func:`main` (the shared :func:`neuralgraph.cli.dispatch`): each command's
options live beside its stage, in a ``main(argv)`` (or the named function) imported only when
the command runs, so this module imports nothing heavy: ``append-log``, run beside every
training, and the bookkeeping commands start without torch.

``train`` is the train command users and the workflow meet (:mod:`pipeline.train_job`); it runs
the engine, ``python -m neuralgraph train``, plainly or inside the sandbox.
"""
from __future__ import annotations

from typing import Optional

from neuralgraph.cli import dispatch

#: name -> ("module" or "module:function" taking argv, one-line help).
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("pipeline.train_job",
              "train one iteration; an edited loop runs in the sandbox with a stall watchdog"),
    "append-log": ("pipeline.append_log", "copy stdin to stdout and append it to FILE (never through a link)"),
    "explorer": ("pipeline.explorer",
                 "write the experiment's self-contained HTML explorer (tree, table, node details)"),
    "summarize": ("pipeline.summary", "summary table, best nodes and figures of one experiment"),
    "archive": ("pipeline.archive", "pack a results folder with a sha256 manifest"),
    "verify-archive": ("pipeline.archive:main_verify", "check an archive (or unpacked folder) against its manifest"),
    "study": ("pipeline.study", "run each policy on the benchmarks over seeds; tables and figure"),
    "reference": ("pipeline.reference", "run the reference's published cases with their recipes; their table"),
}


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m pipeline``."""
    return dispatch("python -m pipeline", COMMANDS, argv)
