"""Read-only views of the config handed to the editable training loop (``cfg``, ``ctx.cfg``).

Why: the live :class:`neuralgraph.config.ExperimentConfig` is a pydantic model. Its methods
(``parse_raw`` with a pickle protocol, ``parse_file``, ``copy``, ``model_validate`` ...) read
files and run code, and its list fields are the engine's own lists (``.clear()`` changed the
analysis settings in place). The loop only needs to READ settings, so the engine hands it a
deep, frozen copy made of plain frozen dataclasses: every section and field of the config
under the same names, lists turned into tuples, mappings into read-only mappings, and
nothing else (no methods; assigning a field raises).

:func:`view_schema` gives the same structure from the config CLASS, for the static checker of
agent-written code (``agent.codeedit``), so the names it allows are exactly the names the
view has.
"""
from __future__ import annotations

import dataclasses
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Optional

from pydantic import BaseModel


@lru_cache(maxsize=None)
def _view_class(model_cls: type[BaseModel]) -> type:
    """A frozen dataclass with one field per declared field of ``model_cls`` (made once per class)."""
    return dataclasses.make_dataclass(f"{model_cls.__name__}View", list(model_cls.model_fields), frozen=True,
                                      slots=True)


def read_only_view(value: Any) -> Any:
    """A deep, frozen copy of ``value``: pydantic models become frozen dataclasses of their
    declared fields, lists/tuples become tuples, dicts read-only mappings, sets frozensets."""
    if isinstance(value, BaseModel):
        cls = _view_class(type(value))
        return cls(**{name: read_only_view(getattr(value, name)) for name in type(value).model_fields})
    if isinstance(value, (list, tuple)):
        return tuple(read_only_view(v) for v in value)
    if isinstance(value, dict):
        return MappingProxyType({k: read_only_view(v) for k, v in value.items()})
    if isinstance(value, (set, frozenset)):
        return frozenset(read_only_view(v) for v in value)
    return value


def config_view(cfg: BaseModel) -> Any:
    """The read-only view of an experiment config that the training loop receives."""
    return read_only_view(cfg)


def view_schema(model_cls: type[BaseModel]) -> dict[str, Optional[dict]]:
    """{field: nested schema for a section, None for a value} of a config class's view."""
    schema: dict[str, Optional[dict]] = {}
    for name, field in model_cls.model_fields.items():
        annotation = field.annotation
        is_section = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        schema[name] = view_schema(annotation) if is_section else None
    return schema
