"""``python -m pipeline append-log FILE``: the train rule's ``tee -a`` that refuses links.

Copies stdin to stdout and appends it to FILE opened with :func:`neuralgraph.io.open_nofollow`
(a link at FILE or a linked folder above it is refused: the run folder's train.log must never
lead a write elsewhere). It imports nothing heavy (nor does :mod:`pipeline.cli`, which imports
only this module when the command runs), so it starts in a fraction of a second beside the
training it logs.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional

from neuralgraph.io import LinkRefusedError, open_nofollow

CHUNK_BYTES = 65536


def main(argv: Optional[list[str]] = None) -> int:
    """Exit 0, or 1 when FILE is refused (stdout is still copied: the declared log keeps it)."""
    parser = argparse.ArgumentParser(prog="python -m pipeline append-log",
                                     description="Copy stdin to stdout and append it to FILE (never through a link).")
    parser.add_argument("file", metavar="FILE", help="the log to append to")
    target = Path(parser.parse_args(argv).file)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        log = open_nofollow(target, "ab")
    except (LinkRefusedError, OSError) as exc:
        print(f"pipeline append-log: {exc}", file=sys.stderr)
        log = None
    out = sys.stdout.buffer
    with log if log is not None else open(os.devnull, "wb") as sink:
        while True:
            chunk = sys.stdin.buffer.read1(CHUNK_BYTES)
            if not chunk:
                break
            out.write(chunk)
            out.flush()
            sink.write(chunk)
            sink.flush()
    return 0 if log is not None else 1
