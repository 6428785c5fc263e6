"""Which values are secrets, and how they are kept out of every file the project writes.

One owner for the rule "a variable whose name contains API_KEY, TOKEN, SECRET, PASSWORD or
CREDENTIAL is a secret": every text written through :mod:`neuralgraph.io` has such values
replaced by :data:`REDACTED`, whatever produced the text (an LLM's reply, an error message).
Keeping keys away from the jobs that do not need them is the workflow's and the agent's
business (:mod:`agent.secrets`); this module only filters what is written.
"""
from __future__ import annotations

import os
import re
from typing import Iterable, Mapping, Optional

#: Names of environment variables that hold secrets.
SECRET_NAME = re.compile(r"(API_KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL)", re.IGNORECASE)
#: What a secret value is replaced with in every written text.
REDACTED = "[REDACTED]"
#: Values shorter than this are not redacted (a "1" or "yes" would mangle every text).
MIN_SECRET_LENGTH = 8

_extra_values: set[str] = set()


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def secret_values(environ: Optional[Mapping[str, str]] = None) -> set[str]:
    """Secret values known to this process: secret-named variables plus registered values."""
    environ = os.environ if environ is None else environ
    found = {v for k, v in environ.items() if is_secret_name(k)} | _extra_values
    return {v for v in found if len(v) >= MIN_SECRET_LENGTH}


def register_secret(value: str) -> None:
    """Redact ``value`` from every text written by this process (a key read from a file)."""
    if value and len(value) >= MIN_SECRET_LENGTH:
        _extra_values.add(value)


def redact(text: str, values: Optional[Iterable[str]] = None) -> str:
    """``text`` with every known secret value replaced by :data:`REDACTED` (longest first)."""
    for value in sorted(secret_values() if values is None else values, key=len, reverse=True):
        if value in text:
            text = text.replace(value, REDACTED)
    return text
