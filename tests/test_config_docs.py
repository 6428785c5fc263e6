"""config/README.md documents every workflow setting of workflow/schemas/config.schema.yaml.

The schema is the owner of the keys, their defaults and their allowed values; the page is
written by hand and this test keeps it in step: a key added to or removed from the schema, a
changed default or a new allowed value fails here until config/README.md says the same.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
PAGE = REPO / "config" / "README.md"

#: Marks a key without a default in the "default" column.
REQUIRED = "(required)"


def schema_keys(schema: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(dotted key, its schema) of every property, nested objects' properties included."""
    for name, sub in schema.get("properties", {}).items():
        key = f"{prefix}{name}"
        yield key, sub
        if "properties" in sub:
            yield from schema_keys(sub, prefix=f"{key}.")


def page_rows(text: str) -> dict[str, dict[str, str]]:
    """{key: {column: cell}} of the settings table (the table whose header starts with 'key')."""
    rows: dict[str, dict[str, str]] = {}
    header: list[str] = []
    for line in text.splitlines():
        if not line.startswith("|"):
            header = [] if rows else header
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not header:
            if cells and cells[0] == "key":
                header = cells
            continue
        if set(cells[0]) <= set("-: "):
            continue
        match = re.fullmatch(r"`([^`]+)`", cells[0])
        assert match, f"config/README.md: first cell of a settings row is not a `key`: {line!r}"
        rows[match.group(1)] = dict(zip(header, cells))
    return rows


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def rows() -> dict[str, dict[str, str]]:
    found = page_rows(PAGE.read_text(encoding="utf-8"))
    assert found, "config/README.md: no settings table (a table whose header starts with 'key')"
    return found


def _enum_values(sub: dict[str, Any]) -> list[Any]:
    """Every enum value of a key's schema, through oneOf/anyOf branches and array items."""
    values = list(sub.get("enum", []))
    for branch in [*sub.get("oneOf", []), *sub.get("anyOf", []), *([sub["items"]] if "items" in sub else [])]:
        values += _enum_values(branch)
    return values


def test_every_schema_key_is_documented_and_no_other(schema, rows):
    keys = {key for key, _ in schema_keys(schema)}
    missing = sorted(keys - set(rows))
    unknown = sorted(set(rows) - keys)
    assert not missing, f"config/README.md does not describe these schema keys: {missing}"
    assert not unknown, f"config/README.md describes keys the schema lacks: {unknown}"


def test_documented_defaults_are_the_schema_defaults(schema, rows):
    wrong = []
    for key, sub in schema_keys(schema):
        if key not in rows:
            continue  # test_every_schema_key_is_documented_and_no_other names it
        cell = rows[key]["default"]
        if "default" not in sub:
            if cell != REQUIRED:
                wrong.append(f"{key}: the schema has no default, the page says {cell!r} (write {REQUIRED})")
            continue
        literal = re.fullmatch(r"`([^`]*)`", cell)
        documented = yaml.safe_load(literal.group(1)) if literal else cell
        if documented != sub["default"]:
            wrong.append(f"{key}: page says {cell!r}, schema default is {sub['default']!r}")
    assert not wrong, "config/README.md defaults differ from the schema:\n" + "\n".join(wrong)


def test_required_keys_are_marked_required(schema, rows):
    for key in schema.get("required", []):
        if "default" not in schema["properties"][key]:
            assert rows[key]["default"] == REQUIRED, key


def test_every_allowed_value_is_named(schema, rows):
    missing = []
    for key, sub in schema_keys(schema):
        for value in _enum_values(sub) if key in rows else []:
            if f"`{value}`" not in rows[key]["allowed values"]:
                missing.append(f"{key}: `{value}`")
    assert not missing, f"config/README.md does not name these allowed values: {missing}"


def test_page_parser_sees_a_wrong_default():
    page = "| key | default | allowed values | meaning |\n|---|---|---|---|\n| `seed` | `1` | int | x |\n"
    assert yaml.safe_load(re.fullmatch(r"`([^`]*)`", page_rows(page)["seed"]["default"]).group(1)) == 1
