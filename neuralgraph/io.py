"""Atomic file writes shared by every stage.

Every text written here has the values of known secrets (API keys in the environment,
:mod:`neuralgraph.redaction`) replaced by a marker, whatever produced the text: an LLM's reply,
an API error message or a log line can never carry a key into a file.

Every output of the pipeline is written to a temporary file in the destination folder and
then renamed over the target, so a killed job (SLURM preemption, Ctrl-C) never leaves a
half-written file that a later rule or a resumed run would mistake for a finished one.

Links are refused, never followed (:func:`check_no_links`, :func:`open_nofollow`): every
stage after a training reads and writes the run folder through these helpers, so a link left
there (by agent-written code, or anyone else who could write there) cannot redirect a read
or a write of an unsandboxed stage to a file outside the results folder.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from neuralgraph.redaction import redact


#: Components checked of every path: the file, its folder and the folder above (for a node's
#: file: the file, ``iter_NNN`` or ``logs``/``plots``, and ``iter_NNN``), which is what a run
#: folder's writer could have replaced by a link. Folders higher up are the user's own choice
#: (``results/`` a link to cluster scratch storage, a /home that is a link) and are followed.
CHECKED_DEPTH = 3


class LinkRefusedError(OSError):
    """A path to read or write is, or runs through, a symbolic link (or is not a regular file)."""


def _checked_components(path: Path) -> list[Path]:
    """The last :data:`CHECKED_DEPTH` components of ``path`` (made absolute), those that must not be links."""
    absolute = Path(os.path.abspath(path))
    chain = [absolute, *absolute.parents][:CHECKED_DEPTH]
    return [p for p in chain if p != Path(p.anchor)]


def check_no_links(path: str | os.PathLike) -> Path:
    """Raise :class:`LinkRefusedError` when ``path`` or a folder above it (see
    :func:`_checked_components`) is a symbolic link; missing components are fine."""
    for component in _checked_components(Path(path)):
        try:
            mode = os.lstat(component).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(mode):
            raise LinkRefusedError(f"{component}: is a symbolic link; refusing to follow it (reading or writing {path})")
    return Path(path)


def open_nofollow(path: str | os.PathLike, mode: str = "rb", encoding: str | None = None):
    """``open`` that refuses links (in the file and the folders above, :func:`check_no_links`)
    and anything but a regular file; ``mode``: ``r``/``rb`` or ``a``/``ab`` (append)."""
    check_no_links(path)
    flags = os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0)  # a FIFO must not block the open
    flags |= os.O_RDONLY if mode.startswith("r") else (os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if exc.errno == getattr(os, "ELOOP", 40):
            raise LinkRefusedError(f"{path}: is a symbolic link; refusing to follow it") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LinkRefusedError(f"{path}: not a regular file; refusing to use it")
    os.set_blocking(fd, True)
    binary = "b" in mode
    return os.fdopen(fd, ("rb" if mode.startswith("r") else "ab") if binary else ("r" if mode.startswith("r") else "a"),
                     encoding=None if binary else (encoding or "utf-8"), errors=None if binary else "replace")


def read_bytes_nofollow(path: str | os.PathLike) -> bytes:
    """The bytes of a regular file reached without following any link."""
    with open_nofollow(path, "rb") as fh:
        return fh.read()


def read_text_nofollow(path: str | os.PathLike, errors: str = "strict") -> str:
    """The UTF-8 text of a regular file reached without following any link."""
    return read_bytes_nofollow(path).decode("utf-8", errors=errors)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (identifies a training-loop file)."""
    return hashlib.sha256(read_bytes_nofollow(path)).hexdigest()


@contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    The temporary file lives in the same folder so the final ``os.replace`` is atomic on
    POSIX file systems. On an exception the temporary file is removed and the target is left
    untouched.
    """
    target = Path(target)
    check_no_links(target)  # the rename replaces a link, but a linked folder above would redirect the write
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the file the permissions a plain open() would (shared clusters)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(target: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``target`` atomically (UTF-8), known secret values redacted."""
    with atomic_path(target) as tmp:
        tmp.write_text(redact(text), encoding="utf-8")
    return Path(target)


def _json_safe(value: Any) -> Any:
    """Replace NaN/inf floats by None so the JSON is standard (NaN is not valid JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return _json_safe(value.item())  # numpy / torch scalars
    if hasattr(value, "tolist") and callable(value.tolist):
        return _json_safe(value.tolist())  # numpy arrays
    return value


def atomic_write_json(target: str | os.PathLike, data: Any, indent: int = 2) -> Path:
    """Write ``data`` as standard JSON (NaN/inf written as null) atomically."""
    text = json.dumps(_json_safe(data), indent=indent, sort_keys=False, allow_nan=False)
    return atomic_write_text(target, text + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, naming the file in the error when it is missing or malformed."""
    path = Path(path)
    try:
        return json.loads(read_text_nofollow(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def atomic_save_npy(target: str | os.PathLike, array: Any) -> Path:
    """Save a numpy array as ``.npy`` atomically (memory-mappable with ``np.load(mmap_mode='r')``)."""
    import numpy as np  # lazy: io is imported by the agent side, which needs no numpy

    with atomic_path(target, suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(array), allow_pickle=False)
    return Path(target)


def atomic_torch_save(target: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` atomically: a checkpoint is either the old one or the complete new one."""
    import torch  # lazy: torch costs seconds; only checkpoint writers need it

    with atomic_path(target, suffix=".pt") as tmp:
        torch.save(obj, tmp)
    return Path(target)
