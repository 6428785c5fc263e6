"""The ``claude-code`` backend: the decision prompt goes to the Claude Code command line.

WHY: many users reach Claude through a Claude Code login (a subscription) rather than an API
key. This backend runs the installed ``claude`` command in non-interactive print mode, once
per attempt, and reads its JSON result:

    claude -p --output-format json --tools "" --strict-mcp-config --max-turns 1
           --system-prompt <role> [--model M]          (the prompt on stdin)

- the prompt is :mod:`agent.prompt`'s, the same as the anthropic backend's: the instructions
  and enforced rules, then this iteration's state, then the :class:`agent.decision.Decision`
  JSON schema the reply must follow. Pictures cannot travel as text: each is named, not shown.
  ``--system-prompt`` replaces Claude Code's own (coding-assistant) system prompt by the role line;
- no tools at all (``--tools ""``, and ``--strict-mcp-config`` without a config: no MCP
  servers), one turn, run in an empty temporary folder (no project files, no CLAUDE.md);
- environment: only :data:`PASSED_ENV` (path, home, locale, proxies, Claude/Anthropic
  credentials and settings) plus :data:`FIXED_ENV` (no auto-update, no telemetry, the reply
  limit). Nothing is installed or updated at run time;
- a timeout (``timeout_s``, default 600): the command runs in its own process group, and the
  whole group is terminated (SIGTERM, then SIGKILL after :data:`KILL_GRACE_S`) when it is over.

The reply's ``result`` text must hold one Decision JSON object (a fenced block is accepted).
Errors follow the contract of :mod:`agent.policies.base`, as for the SDK backend:
unusable reply -> :class:`InvalidOutputError` (the chain retries once with the reason, then the
heuristic decides); timeout, overload, rate or usage limits, network -> :class:`RetryableBackendError`;
not logged in, a flag this ``claude`` does not know, any other failure of the command ->
:class:`BackendConfigError`; ``claude`` not on PATH -> :class:`BackendMissingError`.

``last_call`` records the command's own report: tokens (``usage``), ``total_cost_usd`` as
``cost_usd`` (what the command says the call cost; for a subscription it is a notional
figure), model, turns, duration, exit code. Credentials are never written anywhere.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any, Mapping, Optional

import pydantic

from agent.decision import Decision, RoundDecision
from agent.policies.base import (BackendConfigError, BackendMissingError, InvalidOutputError, RetryableBackendError,
                                 backend_option)
from agent.pricing import (PriceTableError, TokenUsage, call_cost_usd, load_price_table, max_call_cost_usd,
                           price_bound)
from agent.prompt import ROLE_PREAMBLE, build_messages, build_round_messages, input_token_bound, system_blocks

DEFAULT_COMMAND = "claude"
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_MAX_TOKENS = 16_000
DEFAULT_MAX_TURNS = 1
#: Seconds between SIGTERM and SIGKILL of a timed-out command's process group.
KILL_GRACE_S = 2.0
REPLY_EXCERPT_CHARS = 600
#: Tokens Claude Code may add to our prompt (its framing, the user's own ~/.claude/CLAUDE.md);
#: part of the spend cap's bound only.
CLI_OVERHEAD_TOKENS = 20_000

#: Environment variables handed to the command when set: what it needs to run, reach the
#: service and find its login -- nothing else of the workflow's environment.
PASSED_ENV = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TMPDIR", "LANG", "LC_ALL", "LC_CTYPE", "TZ",
    "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR",
    "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy",
    "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "CLAUDE_CODE_OAUTH_TOKEN",
    "CLAUDE_CONFIG_DIR", "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX",
)
#: Values never shown in a message or record (they are credentials).
SECRET_ENV = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")
#: Always set for the command: install and report nothing, bound the reply's length.
FIXED_ENV = {"DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
MAX_TOKENS_ENV = "CLAUDE_CODE_MAX_OUTPUT_TOKENS"

_AUTH_WORDS = ("invalid api key", "/login", "not logged in", "please log in", "authentication", "unauthorized",
               "oauth token", "credit balance is too low")
_TRANSIENT_WORDS = ("overloaded", "rate limit", "rate_limit", "usage limit", "limit reached", "529", "429", "503",
                    "timed out", "timeout", "econnreset", "econnrefused", "enotfound", "network", "connection error",
                    "fetch failed", "internal server error", "api error: 5")


def prompt_text(ctx: Any, feedback: Optional[str] = None) -> tuple[str, list[dict[str, Any]]]:
    """(stdin text, the message list it was made from): agent.prompt's request as plain text.

    The system block's text first (role, instructions, enforced rules), then the user turn's
    text blocks in order (a picture becomes a note), then the Decision schema and the answer format.
    """
    messages = build_messages(ctx, feedback)
    return _as_text(ctx.instructions, messages, Decision), messages


def round_prompt_text(contexts: list[Any]) -> str:
    """The stdin text of a whole-round call (schema :class:`RoundDecision`)."""
    return _as_text(contexts[0].instructions, build_round_messages(contexts), RoundDecision)


def _as_text(instructions: str, messages: list[dict[str, Any]], schema: Any) -> str:
    parts = [block["text"] for block in system_blocks(instructions)]
    for block in messages[0]["content"]:
        if block.get("type") == "image":
            parts.append("(this picture is not shown: the claude-code backend sends text only; decide from the numbers)")
        else:
            parts.append(block["text"])
    parts.append("## Answer format\n\nReply with exactly one JSON object matching this JSON schema, and nothing "
                 "else (no prose, no code fence):\n\n" + json.dumps(schema.model_json_schema()))
    return "\n\n".join(parts) + "\n"


def extract_json_object(text: str) -> str:
    """The JSON object in a reply: the text itself, or the span from the first '{' to the last '}'
    (models sometimes wrap it in a ```json fence or a sentence)."""
    stripped = text.strip()
    if stripped.startswith("{") and stripped.endswith("}"):
        return stripped
    start, end = stripped.find("{"), stripped.rfind("}")
    if start < 0 or end <= start:
        raise InvalidOutputError(f"the reply contains no JSON object; reply began: {stripped[:200]!r}")
    return stripped[start:end + 1]


def _validation_summary(exc: pydantic.ValidationError, limit: int = 5) -> str:
    from agent.policies.anthropic_policy import _validation_summary as summary  # lazy: keeps the anthropic SDK out of this backend

    return summary(exc, limit)


def kill_process_group(proc: subprocess.Popen, grace_s: float = KILL_GRACE_S) -> None:
    """Terminate ``proc``'s whole process group (it leads one: ``start_new_session``), then reap it.

    SIGTERM first (lets the command end cleanly), SIGKILL after ``grace_s`` for whatever is
    left of the group -- members that ignored SIGTERM or outlived their leader included.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        proc.communicate(timeout=grace_s)
    except (subprocess.TimeoutExpired, ValueError, OSError):
        pass


class ClaudeCodePolicy:
    """Policy backed by the Claude Code command line (see the module docstring).

    Options (all optional): ``model`` (passed as ``--model``; default: the command's own);
    ``timeout_s`` (600); ``max_tokens`` (reply limit, 16000, passed as CLAUDE_CODE_MAX_OUTPUT_TOKENS);
    ``max_turns`` (1); ``command`` (the executable, default ``claude`` looked up on PATH).
    """

    name = "claude-code"

    def __init__(self, options: Optional[Mapping[str, Any]] = None) -> None:
        options = dict(options or {})
        self.command = str(options.get("command") or DEFAULT_COMMAND)
        self.executable = shutil.which(self.command)
        if self.executable is None:
            raise BackendMissingError(
                f"claude-code backend: the command {self.command!r} was not found on PATH; install Claude Code "
                f"and log in on the host that runs agent-decide, or choose agent backend 'anthropic' (API key) "
                f"or 'heuristic' (offline)")
        self.model: Optional[str] = str(options["model"]) if options.get("model") else None
        self.timeout_s = backend_option(options, "timeout_s", DEFAULT_TIMEOUT_S, float, "claude-code")
        self.max_tokens = backend_option(options, "max_tokens", DEFAULT_MAX_TOKENS, int, "claude-code")
        self.max_turns = backend_option(options, "max_turns", DEFAULT_MAX_TURNS, int, "claude-code")
        self.last_call: Optional[dict[str, Any]] = None
        try:
            self._prices = load_price_table()
        except PriceTableError:
            self._prices = {}

    # ------------------------------------------------------------------ the command

    def argv(self) -> list[str]:
        args = [self.executable, "-p", "--output-format", "json", "--tools", "", "--strict-mcp-config",
                "--max-turns", str(self.max_turns), "--system-prompt", ROLE_PREAMBLE]
        if self.model:
            args += ["--model", self.model]
        return args

    def environment(self) -> dict[str, str]:
        env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
        env.update(FIXED_ENV)
        env[MAX_TOKENS_ENV] = str(self.max_tokens)
        return env

    def _redact(self, text: str) -> str:
        for name in SECRET_ENV:
            secret = os.environ.get(name, "")
            if len(secret) >= 8:
                text = text.replace(secret, "***")
        return text

    def estimate_cost_usd(self, ctx: Any, feedback: Optional[str] = None) -> Optional[float]:
        """The most the next call can cost (spend cap): prompt bound + the command's overhead + reply limit."""
        text, messages = prompt_text(ctx, feedback)
        tokens = input_token_bound(text, []) + len(ROLE_PREAMBLE.encode("utf-8")) + CLI_OVERHEAD_TOKENS
        return max_call_cost_usd(self.model, tokens, self.max_tokens, self._prices)

    def estimate_round_cost_usd(self, contexts: list[Any]) -> Optional[float]:
        """The most a whole-round call can cost (spend cap)."""
        tokens = input_token_bound(round_prompt_text(contexts), []) + len(ROLE_PREAMBLE.encode("utf-8")) + \
            CLI_OVERHEAD_TOKENS
        return max_call_cost_usd(self.model, tokens, self.max_tokens, self._prices)

    def decide(self, ctx: Any, feedback: Optional[str] = None) -> Decision:
        """Run the command once; see the module docstring for the errors raised."""
        text, _ = prompt_text(ctx, feedback)
        return self._ask(text, Decision)

    def decide_round(self, contexts: list[Any]) -> list[Decision]:
        """The K children of a round in one run of the command (schema :class:`RoundDecision`)."""
        answer = self._ask(round_prompt_text(contexts), RoundDecision)
        if len(answer.children) != len(contexts):
            raise InvalidOutputError(f"the reply has {len(answer.children)} children for a round of "
                                     f"{len(contexts)} slots")
        return list(answer.children)

    def _ask(self, text: str, schema: Any) -> Any:
        self.last_call = None
        started = time.perf_counter()
        stdout, stderr, code = self._run(text, started)
        envelope = self._envelope(stdout)
        self.last_call = self._record(envelope, code, started)
        if envelope is None:
            raise self._failure(code, stderr, None)
        if envelope.get("is_error") or envelope.get("subtype") not in (None, "success") or code != 0:
            raise self._failure(code, stderr, envelope)
        return self._parse(str(envelope.get("result") or ""), schema)

    def _run(self, text: str, started: float) -> tuple[str, str, int]:
        with tempfile.TemporaryDirectory(prefix="neuralgraph-claude-code-") as workdir:
            try:
                proc = subprocess.Popen(self.argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, cwd=workdir, env=self.environment(),
                                        text=True, encoding="utf-8", errors="replace", start_new_session=True)
            except OSError as exc:
                raise BackendMissingError(f"claude-code backend: cannot start {self.executable!r}: {exc}") from None
            try:
                stdout, stderr = proc.communicate(text, timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                kill_process_group(proc)
                self.last_call = {**self._base_record(started), "error": "timeout", "cost_usd": None}
                raise RetryableBackendError(
                    f"claude-code backend: {self.command!r} gave no answer within timeout_s = {self.timeout_s:g} s; "
                    f"its process group was killed") from None
        return stdout, stderr, proc.returncode

    # ------------------------------------------------------------------ the reply

    @staticmethod
    def _envelope(stdout: str) -> Optional[dict[str, Any]]:
        """The command's JSON result object (the last ``type: result`` item of a list), or None."""
        try:
            data = json.loads(stdout)
        except (ValueError, TypeError):
            return None
        if isinstance(data, list):
            results = [item for item in data if isinstance(item, dict) and item.get("type") == "result"]
            data = results[-1] if results else None
        return data if isinstance(data, dict) else None

    def _parse(self, result: str, schema: Any = Decision) -> Any:
        try:
            return schema.model_validate_json(extract_json_object(result))
        except pydantic.ValidationError as exc:
            if self.last_call is not None:
                self.last_call["reply_excerpt"] = self._redact(result[:REPLY_EXCERPT_CHARS])
            raise InvalidOutputError(f"the reply is not a valid decision JSON ({_validation_summary(exc)}); "
                                     f"reply began: {result[:200]!r}") from None
        except InvalidOutputError:
            if self.last_call is not None:
                self.last_call["reply_excerpt"] = self._redact(result[:REPLY_EXCERPT_CHARS])
            raise

    def _failure(self, code: int, stderr: str, envelope: Optional[dict[str, Any]]) -> Exception:
        """The error class for a failed run, from the command's own words."""
        said = self._redact(" ".join(filter(None, [str((envelope or {}).get("result") or ""), stderr or ""])).strip())
        excerpt = said[:REPLY_EXCERPT_CHARS] or "(no message)"
        lower = said.lower()
        where = f"claude-code backend: {self.command!r} exited {code}"
        if envelope is not None and str(envelope.get("subtype", "")).startswith("error_max_turns"):
            return InvalidOutputError(f"{where} after its turn limit (max_turns = {self.max_turns}) without a reply")
        if any(word in lower for word in _AUTH_WORDS):
            return BackendConfigError(f"{where}: not logged in or refused the credentials ({excerpt}); run "
                                      f"'{self.command}' once interactively to log in, or set ANTHROPIC_API_KEY")
        if "unknown option" in lower or "unknown argument" in lower or "error: option" in lower:
            return BackendConfigError(f"{where}: this version does not accept the flags used ({excerpt}); "
                                      f"update Claude Code (the backend passes {' '.join(a for a in self.argv()[1:] if a.startswith('-'))})")
        if any(word in lower for word in _TRANSIENT_WORDS):
            return RetryableBackendError(f"{where}: the service is unavailable ({excerpt}); try again later")
        if envelope is not None and code == 0:
            return InvalidOutputError(f"{where} but reported an error ({envelope.get('subtype')}): {excerpt}")
        return BackendConfigError(f"{where}: {excerpt}")

    # ------------------------------------------------------------------ call records

    def _base_record(self, started: float) -> dict[str, Any]:
        return {"backend": self.name, "command": self.executable, "model_requested": self.model,
                "max_tokens": self.max_tokens, "latency_s": round(time.perf_counter() - started, 3)}

    def _record(self, envelope: Optional[dict[str, Any]], code: int, started: float) -> dict[str, Any]:
        record = {**self._base_record(started), "exit_code": code}
        if envelope is None:
            return {**record, "model": None, "error": "no JSON result on stdout", "cost_usd": None}
        usage = envelope.get("usage") if isinstance(envelope.get("usage"), dict) else None
        models = envelope.get("modelUsage") if isinstance(envelope.get("modelUsage"), dict) else {}
        model = next(iter(models), None) or self.model
        tokens = TokenUsage.from_api(usage or {})
        cost = envelope.get("total_cost_usd")
        if not isinstance(cost, (int, float)) or isinstance(cost, bool):
            priced = usage is not None and model and price_bound(model, self._prices) is not None
            cost = call_cost_usd(model, tokens, self._prices) if priced else None
        return {**record, "model": model, "session_id": envelope.get("session_id"),
                "subtype": envelope.get("subtype"), "is_error": bool(envelope.get("is_error")),
                "num_turns": envelope.get("num_turns"), "duration_ms": envelope.get("duration_ms"),
                **tokens.to_dict(), "cost_usd": cost}
