"""What every ``python -m agent <command>`` shares: its option readers and its exit codes.

Each command's parser lives beside its stage (``agent/start.py`` init, ``agent/ucb.py`` ucb,
``agent/decide_cli.py`` decide, ``agent/costs.py`` costs); each one's ``main(argv)`` hands its
parser and its handler to :func:`run_command`, so all four answer the same way:

Exit codes: 0 done; 2 (:data:`EX_USAGE`) bad input or backend configuration (the message names
the file or option, after ``agent <command>:``); 75 (:data:`EX_TEMPFAIL`) the LLM backend is
temporarily unavailable and ``--fallback fail`` (the default): re-run later. What a command
prints goes through :func:`neuralgraph.redaction.redact` (an API error text may quote a key).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Optional

from agent.decision import DecisionInvalid
from agent.inputs import InputError
from agent.policies.base import BackendConfigError, RetryableBackendError
from agent.run_plan import PlanError, RunPlan, read_plan
from agent.secrets import SecretsUnavailable
from agent.tree import TreeError
from neuralgraph.cli import EX_USAGE
from neuralgraph.config import ALLOWED_TIME_STEPS, ConfigError
from neuralgraph.redaction import redact

#: The LLM backend is temporarily unavailable (sysexits' EX_TEMPFAIL): re-run later.
EX_TEMPFAIL = 75
#: What a command takes besides the plan (everything else the plan holds).
PLAN_FREE_OPTIONS = ("plan", "iteration", "backend_option", "loop")
#: Refused inputs: the message names the file or option; exit EX_USAGE.
REFUSED_INPUTS = (InputError, ConfigError, TreeError, DecisionInvalid, SecretsUnavailable, PlanError)


# --------------------------------------------------------------------------- option readers


def parse_schedule(text: Optional[str], n_blocks: Optional[int] = None) -> Optional[list[int]]:
    """'agent' (or empty) -> None; '1,4,16' -> [1, 4, 16] (each in ALLOWED_TIME_STEPS)."""
    if text is None or text.strip().lower() in ("", "agent"):
        return None
    allowed = ", ".join(map(str, ALLOWED_TIME_STEPS))
    values = []
    for part in text.split(","):
        try:
            value = int(part.strip())
        except ValueError:
            raise InputError(f"--schedule {text!r}: {part.strip()!r} is not an integer; use 'agent' or a "
                             f"comma list of {allowed}") from None
        if value not in ALLOWED_TIME_STEPS:
            raise InputError(f"--schedule {text!r}: time_step {value} must be one of {allowed}")
        values.append(value)
    if n_blocks is not None and len(values) < n_blocks:
        raise InputError(f"--schedule {text!r}: {len(values)} time_steps for --n-blocks {n_blocks}; give one per block")
    return values


def parse_backend_options(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (values read as YAML scalars: 4096 -> int, 60.0 -> float) for the backend."""
    import yaml

    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--backend-option {item!r}: expected KEY=VALUE, e.g. max_tokens=8000")
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            options[key.strip()] = value
    return options


def add_plan_options(parser: argparse.ArgumentParser) -> None:
    """--plan and --iteration: the form the workflow's rules use (agent.run_plan)."""
    parser.add_argument("--plan", default=None, help="results/<exp>/plan.json written by the workflow (agent.run_plan)")
    parser.add_argument("--iteration", type=int, default=None, help="the iteration (with --plan)")


def plan_or_explicit(args: argparse.Namespace, required: tuple[str, ...]) -> Optional[RunPlan]:
    """The plan of ``--plan`` (None without it), refusing the options the plan already holds, or
    refusing a command without the plan that lacks a ``required`` option. The options a plan can
    replace have no argparse default (SUPPRESS): present in ``args`` only when given."""
    given = sorted(k for k in vars(args) if k not in PLAN_FREE_OPTIONS)
    if args.plan is not None:
        if given:
            raise InputError(f"{', '.join(map(_option, given))}: comes from the plan with --plan {args.plan}")
        return read_plan(args.plan)
    missing = [name for name in required if name not in vars(args)]
    if missing:
        raise InputError(f"{', '.join(map(_option, missing))}: required without --plan")
    return None


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_numbers(args: argparse.Namespace) -> None:
    for name in ("iteration", "n_iter_block", "n_blocks", "slots"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')} {value}: must be >= 1")


# --------------------------------------------------------------------------- running a command


class _RedactingStream:
    """stdout/stderr of the agent CLI with known secret values replaced (API error texts, logs)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(redact(text))

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def run_command(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], Optional[int]],
                argv: Optional[list[str]]) -> int:
    """Parse ``argv`` with ``parser`` and ``run`` it, every output redacted; a refused input or
    backend configuration is one line ``agent <command>: ...`` (the parser's prog without its
    ``python -m``) and exit 2, an unavailable backend exit 75."""
    prog = parser.prog.removeprefix("python -m ")
    if not isinstance(sys.stderr, _RedactingStream):
        sys.stdout, sys.stderr = _RedactingStream(sys.stdout), _RedactingStream(sys.stderr)
    args = parser.parse_args(argv)
    try:
        _check_numbers(args)
        return int(run(args) or 0)
    except RetryableBackendError as exc:
        print(f"{prog}: the LLM backend is temporarily unavailable ({exc}); nothing was written. "
              f"Re-run later, or pass --fallback offline to let the heuristic decide (exit {EX_TEMPFAIL})",
              file=sys.stderr)
        return EX_TEMPFAIL
    except BackendConfigError as exc:
        print(f"{prog}: backend configuration error: {exc}", file=sys.stderr)
        return EX_USAGE
    except REFUSED_INPUTS as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EX_USAGE
