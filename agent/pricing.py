"""What an LLM call cost, from its token counts and a price table kept as data.

Prices change more often than code, so they live in ``agent/prices.json`` (USD per million
tokens for input, output, cache write and cache read, keyed by model id). A model that is not
in the table is not an error: the call is still recorded, with ``cost_usd: null``, because a
decision must never be lost over bookkeeping.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

#: The shipped price table. ``NEURALGRAPH_PRICES`` may point at another file (a newer list).
DEFAULT_PRICES_PATH = Path(__file__).with_name("prices.json")
PRICE_FIELDS: tuple[str, ...] = ("input", "output", "cache_write", "cache_read")
_DATE_SUFFIX = re.compile(r"-\d{8}$")


class PriceTableError(ValueError):
    """The price file itself is malformed (a broken data file, not an unknown model)."""


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens of one model."""

    input: float
    output: float
    cache_write: float
    cache_read: float


@dataclass(frozen=True)
class TokenUsage:
    """Token counts of one call, as the API reports them (cache fields may be absent: 0)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    @classmethod
    def from_api(cls, usage: Any) -> "TokenUsage":
        """Build from the SDK's ``Usage`` object or a plain dict; None counts become 0."""
        def count(name: str) -> int:
            value = usage.get(name) if isinstance(usage, Mapping) else getattr(usage, name, None)
            return int(value or 0)

        return cls(*(count(name) for name in (
            "input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")))

    def to_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
        }


def _price_from_entry(model: str, entry: Any, source: Path) -> ModelPrice:
    if not isinstance(entry, Mapping):
        raise PriceTableError(f"{source}: models.{model}: must be a mapping with keys {', '.join(PRICE_FIELDS)}")
    values = {}
    for field in PRICE_FIELDS:
        value = entry.get(field)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise PriceTableError(
                f"{source}: models.{model}.{field} = {value!r}: must be a non-negative number (USD per million tokens)"
            )
        values[field] = float(value)
    return ModelPrice(**values)


def load_price_table(path: str | os.PathLike | None = None) -> dict[str, ModelPrice]:
    """Read the price table: ``{"models": {model_id: {input, output, cache_write, cache_read}}}``."""
    source = Path(path or os.environ.get("NEURALGRAPH_PRICES") or DEFAULT_PRICES_PATH)
    try:
        raw = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PriceTableError(f"{source}: price file not found") from None
    except json.JSONDecodeError as exc:
        raise PriceTableError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    models = raw.get("models") if isinstance(raw, Mapping) else None
    if not isinstance(models, Mapping):
        raise PriceTableError(f"{source}: needs a top-level 'models' mapping of model id -> prices")
    return {model: _price_from_entry(model, entry, source) for model, entry in models.items()}


def default_model_id(path: str | os.PathLike | None = None) -> Optional[str]:
    """The model id the price file names as default (configuration data, not code)."""
    source = Path(path or os.environ.get("NEURALGRAPH_PRICES") or DEFAULT_PRICES_PATH)
    try:
        raw = json.loads(source.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    value = raw.get("default_model") if isinstance(raw, Mapping) else None
    return value if isinstance(value, str) and value else None


def price_for(model: str, table: Mapping[str, ModelPrice]) -> Optional[ModelPrice]:
    """Price of ``model``; a dated id (``claude-x-20250929``) falls back to its alias."""
    if model in table:
        return table[model]
    undated = _DATE_SUFFIX.sub("", model)
    return table.get(undated)


def call_cost_usd(model: str, usage: TokenUsage, table: Mapping[str, ModelPrice] | None = None) -> Optional[float]:
    """Cost of one call in USD, or None when the model has no price in the table.

    ``input_tokens`` from the API excludes the cached tokens, so the four counts add up
    without double counting.
    """
    price = price_for(model, load_price_table() if table is None else table)
    if price is None:
        return None
    total = (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_creation_input_tokens * price.cache_write
        + usage.cache_read_input_tokens * price.cache_read
    ) / 1_000_000
    return round(total, 6)


def price_bound(model: Optional[str], table: Mapping[str, ModelPrice]) -> Optional[ModelPrice]:
    """The price a spend cap must assume for ``model``.

    A known model: its price. No model named (the backend's own default is used, e.g. the
    Claude Code command line's): the highest price of every kind in the table, since any of
    them may be billed. A named model missing from the table: None (no bound can be given).
    """
    if model:
        return price_for(model, table)
    if not table:
        return None
    return ModelPrice(*(max(getattr(p, field) for p in table.values()) for field in PRICE_FIELDS))


def max_call_cost_usd(model: Optional[str], input_tokens: int, max_output_tokens: int,
                      table: Mapping[str, ModelPrice] | None = None) -> Optional[float]:
    """The most one call can cost: an upper bound used by the spend cap, never a bill.

    Every input token is priced at the dearer of the input and cache-write prices (a call may
    write the prompt cache), and the reply at ``max_output_tokens`` (thinking included: the API
    counts it against max_tokens). ``input_tokens`` must itself be an upper bound (see
    :func:`agent.prompt.input_token_bound`). None when no price applies (see :func:`price_bound`).
    """
    price = price_bound(model, load_price_table() if table is None else table)
    if price is None:
        return None
    micro_usd = input_tokens * max(price.input, price.cache_write) + max_output_tokens * price.output
    return math.ceil(micro_usd) / 1_000_000  # rounded up: a bound must not shrink
