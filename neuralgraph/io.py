"""Atomic file writes shared by every stage.

Every text written here has the values of known secrets (API keys in the environment,
:mod:`neuralgraph.secrets`) replaced by a marker, whatever produced the text: an LLM's reply,
an API error message or a log line can never carry a key into a file.

Every output of the pipeline is written to a temporary file in the destination folder and
then renamed over the target, so a killed job (SLURM preemption, Ctrl-C) never leaves a
half-written file that a later rule or a resumed run would mistake for a finished one.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from neuralgraph.secrets import redact


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (identifies a training-loop file)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    The temporary file lives in the same folder so the final ``os.replace`` is atomic on
    POSIX file systems. On an exception the temporary file is removed and the target is left
    untouched.
    """
    target = Path(target)
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
        return json.loads(path.read_text(encoding="utf-8"))
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
