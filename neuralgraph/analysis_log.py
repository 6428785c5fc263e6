"""Read and write ``analysis.log``: the seed's ``key: value`` text the agent reads.

Format (one entry per line, sections introduced by ``--- name ---``, entries under a section
indented by two spaces)::

    spectral radius: 1.029
    --- activity ---
      effective rank (90% var): 26
      effective rank (99% var): 84
    connectivity_R2: -3.2e-02

Several stages write into the same file (simulate writes the dataset lines, analyze adds the
metrics). :func:`update_analysis_log` therefore merges: it replaces the value of a key that is
already present, appends new keys, and never drops a line another stage wrote (the reference
code reopened the file in write mode and erased the generation metrics).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping

from neuralgraph.io import atomic_write_text

#: The file's name, in the dataset folder (simulate's lines) and in a run folder (analyze's).
ANALYSIS_LOG_FILE = "analysis.log"

_SECTION = re.compile(r"^---\s*(?P<name>.+?)\s*---\s*$")
_ENTRY = re.compile(r"^(?P<indent>\s*)(?P<key>[^:]+?):\s*(?P<value>.*?)\s*$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$|^[+-]?(nan|inf)$", re.IGNORECASE)


def format_value(value: Any) -> str:
    """Format a value for the log: ints as ints, floats with 6 significant digits, NaN as nan."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.6g}"
    return str(value)


def parse_value(text: str) -> Any:
    """Inverse of :func:`format_value`: numbers (incl. negative, scientific, nan) become int/float."""
    text = text.strip()
    if _NUMBER.match(text):
        if re.fullmatch(r"[+-]?\d+", text):
            return int(text)
        return float(text)
    return text


def parse_analysis_log(path_or_text: str | Path) -> dict[str, Any]:
    """Parse an analysis.log into a flat dict.

    Keys under a section are returned both plainly (``effective rank (99% var)``) and, to avoid
    clashes, qualified (``activity/effective rank (99% var)``). Lines that are not entries
    (free text such as ``CONFIG EDITED: ...``) are ignored.
    """
    if isinstance(path_or_text, Path) or (isinstance(path_or_text, str) and "\n" not in path_or_text and Path(path_or_text).exists()):
        text = Path(path_or_text).read_text(encoding="utf-8")
    else:
        text = str(path_or_text)
    result: dict[str, Any] = {}
    section = None
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _SECTION.match(line.strip())
        if m:
            section = m.group("name")
            continue
        m = _ENTRY.match(line)
        if not m:
            continue
        key, value = m.group("key").strip(), parse_value(m.group("value"))
        if m.group("indent") and section:
            result[f"{section}/{key}"] = value
            result.setdefault(key, value)
        else:
            section = None if not m.group("indent") else section
            result[key] = value
    return result


def render_entries(entries: Mapping[str, Any], section: str | None = None) -> list[str]:
    """Lines for ``entries``; under ``section`` they are indented as in the seed's example."""
    lines = [f"--- {section} ---"] if section else []
    indent = "  " if section else ""
    lines += [f"{indent}{key}: {format_value(value)}" for key, value in entries.items()]
    return lines


def update_analysis_log(
    path: str | Path, entries: Mapping[str, Any], section: str | None = None
) -> Path:
    """Merge ``entries`` into the log at ``path`` (created if missing), atomically.

    Existing keys (in the same section) get their value replaced in place; new keys are added
    at the end of that section (or of the file). Every other line is kept as it was.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    pending = dict(entries)
    current = None
    section_end = None  # index after the last line of the wanted section
    for i, line in enumerate(lines):
        m = _SECTION.match(line.strip())
        if m:
            current = m.group("name")
            if current == section:
                section_end = i + 1
            continue
        m = _ENTRY.match(line)
        if not m:
            continue
        in_section = bool(m.group("indent")) and current == section if section else not m.group("indent")
        if section and in_section:
            section_end = i + 1
        key = m.group("key").strip()
        if in_section and key in pending:
            indent = m.group("indent")
            lines[i] = f"{indent}{key}: {format_value(pending.pop(key))}"
    if pending:
        if section and section_end is not None:
            new = render_entries(pending, section)[1:]
            lines[section_end:section_end] = new
        else:
            lines += render_entries(pending, section)
    return atomic_write_text(path, "\n".join(lines) + "\n")
