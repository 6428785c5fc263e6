"""Keeping API keys away from every job but agent-decide: the hand-over of secrets.

The workflow takes every secret-named variable (:func:`neuralgraph.redaction.is_secret_name`)
out of Snakemake's own environment when the Snakefile is parsed (so no job inherits them) and
hands them to agent-decide alone (:func:`hand_over_secrets`, :func:`receive_secrets`); the
sandbox never passes them. Why in the search package: agent-decide is the one reader, and
the workflow (pipeline/, the .smk rules) imports the agent, never the other way round. Values
taken here are registered with :mod:`neuralgraph.redaction`, so every text the project writes
keeps them out.
"""
from __future__ import annotations

import json
import os
from typing import MutableMapping, Optional

from neuralgraph.redaction import is_secret_name, register_secret


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
