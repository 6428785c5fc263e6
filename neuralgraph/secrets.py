"""Which environment variables are secrets, and how their values are kept out of files.

One owner for the rule "a variable whose name contains API_KEY, TOKEN, SECRET, PASSWORD or
CREDENTIAL is a secret": the workflow takes such variables out of Snakemake's own
environment (so no job inherits them) and hands them to agent-decide alone (:func:`hand_over_secrets`,
:func:`receive_secrets`), the sandbox never passes them, and every text file
the project writes (:mod:`neuralgraph.io`) has their values replaced by :data:`REDACTED`.
"""
from __future__ import annotations

import json
import os
import re
from typing import Iterable, Mapping, MutableMapping, Optional

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


def take_secrets(environ: MutableMapping[str, str]) -> dict[str, str]:
    """Remove every secret-named variable from ``environ`` and return them.

    The workflow calls this on ``os.environ`` when the Snakefile is parsed: Snakemake's
    local jobs and ``sbatch --export=ALL`` inherit that environment, so a key left there
    would reach every job. Only agent-decide gets the returned values back.
    """
    taken = {k: environ[k] for k in list(environ) if is_secret_name(k)}
    for name in taken:
        del environ[name]
    for value in taken.values():
        register_secret(value)
    return taken


# --------------------------------------------------------------------------- handing secrets to agent-decide
#: Environment variable naming where agent-decide reads the secrets the workflow took away:
#: ``/proc/<snakemake pid>/fd/<n>``, an anonymous in-memory file (memfd) held open by the
#: Snakemake process. No file on any disk or tmpfs; gone when Snakemake exits (even killed);
#: unreachable from the sandbox (own PID namespace) and from other hosts (SLURM nodes).
VAULT_ENV = "NEURALGRAPH_AGENT_VAULT"


class SecretsUnavailable(RuntimeError):
    """The secrets handed over by the workflow cannot be read (its Snakemake process is gone)."""


_vault_fd: Optional[int] = None


def hand_over_secrets(environ: MutableMapping[str, str]) -> dict[str, str]:
    """Take the secrets out of ``environ`` (see :func:`take_secrets`) and keep them where only
    agent-decide looks (:data:`VAULT_ENV`). Returns the secrets taken ({} when there were none,
    e.g. in a Snakemake job step that parses the Snakefile again: the vault variable stays)."""
    global _vault_fd

    taken = take_secrets(environ)
    if taken:
        fd = os.memfd_create("neuralgraph-agent-secrets")  # close-on-exec: no child inherits the fd
        os.write(fd, json.dumps(taken).encode("utf-8"))
        os.fchmod(fd, 0o600)
        _vault_fd = fd
        environ[VAULT_ENV] = f"/proc/{os.getpid()}/fd/{fd}"
    return taken


def receive_secrets(environ: MutableMapping[str, str]) -> list[str]:
    """In agent-decide: put the handed-over secrets into this process's environment (and the
    redaction list); returns their names. Nothing to do without :data:`VAULT_ENV`."""
    path = environ.pop(VAULT_ENV, None)
    if not path:
        return []
    try:
        with open(path, encoding="utf-8") as fh:
            values = json.load(fh)
    except (OSError, ValueError) as exc:
        raise SecretsUnavailable(f"{VAULT_ENV}={path}: the secrets handed over by the workflow cannot be read "
                           f"({type(exc).__name__}); is the Snakemake process that started this job gone?") from None
    for name, value in values.items():
        environ.setdefault(name, value)
        register_secret(value)
    return sorted(values)
