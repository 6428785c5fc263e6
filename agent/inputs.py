"""Reading a stage's input files: a missing or malformed one is an :class:`InputError` naming it.

Why a module of its own: the init, ucb and decide stages (and the agent CLI, which turns the
error into exit 2) all read their inputs this way; ucb and init need not import the decide
stage (and what it imports) to do so.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from neuralgraph.io import LinkRefusedError, read_json, read_text_nofollow


class InputError(ValueError):
    """A missing or malformed input; the message names the file or option."""


def read_text(path: Optional[str | Path], what: str, required: bool = True) -> str:
    if path is None:
        if required:
            raise InputError(f"{what}: path is required")
        return ""
    try:
        return read_text_nofollow(path)  # a link in a run folder is refused, not followed
    except LinkRefusedError as exc:
        raise InputError(f"{what}: {exc}") from None
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: {what} is not UTF-8 text") from None


def read_json_object(path: str | Path, what: str) -> dict[str, Any]:
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except ValueError as exc:
        raise InputError(f"{exc} ({what})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: {what} must be a JSON object, got {type(data).__name__}")
    return data
