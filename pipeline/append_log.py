"""``python -m pipeline append-log FILE``: the train rule's ``tee -a`` that refuses links.

Copies stdin to stdout and appends it to FILE opened with :func:`neuralgraph.io.open_nofollow`
(a link at FILE or a linked folder above it is refused: the run folder's train.log must never
lead a write elsewhere). Dispatched before :mod:`pipeline.cli` is imported, so it starts in a
fraction of a second beside the training it logs.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from neuralgraph.io import LinkRefusedError, open_nofollow

CHUNK_BYTES = 65536


def main(argv: list[str]) -> int:
    """Exit 0, or 1 when FILE is refused (stdout is still copied: the declared log keeps it)."""
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m pipeline append-log FILE", file=sys.stderr)
        return 2
    target = Path(argv[0])
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
