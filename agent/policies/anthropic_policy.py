"""The ``anthropic`` backend: Claude chooses the next node through the official SDK.

One call per attempt: ``client.messages.parse(..., output_format=Decision)`` with the
instructions as a cached system block and this iteration's state (memory, analysis.log,
ucb_scores.txt, config, editable code, pictures) as the user message (:mod:`agent.prompt`).
The SDK turns the pydantic :class:`agent.decision.Decision` into the request's JSON schema
and validates the reply into ``.parsed_output``; range rules are checked afterwards by
:func:`agent.decision.validate_decision` (schema bounds are not enforced by the model).

What can go wrong, and what the caller gets (classes from :mod:`agent.policies.base`):

- no ``ANTHROPIC_API_KEY``, 401/403, 400/404/413/422 (bad request, unknown model, too large):
  :class:`BackendConfigError` -- retrying cannot help, a person must fix the setup;
- "prompt is too long" (400 invalid_request_error) or 413 request_too_large: the call is
  repeated once with the prompt trimmed harder (:data:`agent.prompt.TRIM_LEVELS`: budgets
  divided, no pictures); still too long: :class:`PromptTooLongError`, which the fallback
  chain hands to the offline policy under ``--fallback offline`` (else exit 2);
- network failure, timeout, 408/409/429/5xx/529 after the SDK's own retries:
  :class:`RetryableBackendError` -- the CLI exits 75 or lets the offline policy decide;
- a reply without a usable decision (``stop_reason`` refusal or max_tokens, malformed or
  schema-violating JSON) or a 2xx answer whose body is no Messages API reply at all (the SDK
  then fails inside its own parsing): :class:`InvalidOutputError` -- the fallback chain
  retries once with the reason, then hands over to the offline policy.

Every call that reached the API leaves ``last_call`` (model requested and returned, request
id, stop reason, token counts incl. cache fields, cost from :mod:`agent.pricing`, HTTP
attempts and ``http_retried`` -- each attempt the SDK retried: its number, status or connection
error, request id --, ``prompt_tokens_estimate`` -- each prompt part's input tokens estimated
before the call (:func:`agent.prompt.part_token_estimates`) --, latency), also when the reply is
then refused. The API key is read from the
environment only, passed to the SDK and never stored: no record, log or message holds it.
"""
from __future__ import annotations

import os
import time
from typing import Any, Mapping, Optional

import anthropic
import pydantic

from agent.decision import Decision, RoundDecision
from agent.policies.base import (BackendConfigError, InvalidOutputError, PromptTooLongError, RetryableBackendError,
                                 backend_option)
from agent.pricing import PriceTableError, TokenUsage, call_cost_usd, default_model_id, load_price_table
from agent.pricing import max_call_cost_usd
from agent.prompt import (TRIM_LEVELS, input_token_bound, part_token_estimates, round_user_parts, system_blocks,
                          user_parts)

API_KEY_ENV = "ANTHROPIC_API_KEY"
MODEL_ENV = "NEURALGRAPH_CLAUDE_MODEL"
DEFAULT_MAX_TOKENS = 16_000
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_MAX_RETRIES = 4
REPLY_EXCERPT_CHARS = 600

#: HTTP statuses that no retry can fix: the request or the account must change.
CONFIG_STATUSES = frozenset({400, 401, 402, 403, 404, 413, 422})


class _ResponseRecorder(anthropic.Middleware):
    """Keeps every HTTP response of a call (one per attempt, retries included).

    ``messages.parse`` validates the reply inside the SDK; when that validation fails the
    parsed message is lost, but the stop reason, usage and request id are still needed to
    explain the failure and to account for the tokens. This middleware keeps them.

    The SDK calls it once per HTTP attempt inside its own retry loop (``retries_taken``
    counts the attempts before), so it also sees every retried failure -- an error status or
    a connection failure -- that the SDK otherwise hides: :attr:`log`, one entry per attempt.
    """

    def __init__(self) -> None:
        self.responses: list[Any] = []
        self.log: list[dict[str, Any]] = []

    def reset(self) -> None:
        self.responses = []
        self.log = []

    def handle(self, request, call_next):
        attempt = int(getattr(request, "retries_taken", len(self.log)) or 0) + 1
        try:
            response = call_next(request)
        except Exception as exc:  # a connection failure or timeout; the SDK decides whether to retry
            self.log.append({"attempt": attempt, "status": None, "error": type(exc).__name__})
            raise
        self.responses.append(response)
        self.log.append({"attempt": attempt, "status": response.http_response.status_code,
                         "request_id": response.request_id})
        return response

    def retried(self) -> list[dict[str, Any]]:
        """The attempts that failed and were tried again (every attempt but the last)."""
        return [dict(entry) for entry in self.log[:-1]]

    @property
    def attempts(self) -> int:
        return len(self.responses)

    def last_body(self) -> dict[str, Any]:
        """JSON body of the last response ({} when there is none or it is not JSON)."""
        if not self.responses:
            return {}
        try:
            body = self.responses[-1].http_response.json()
        except (ValueError, UnicodeDecodeError):
            return {}
        return body if isinstance(body, dict) else {}

    def last_request_id(self) -> Optional[str]:
        return self.responses[-1].request_id if self.responses else None

    def last_was_success(self) -> bool:
        """Whether the last HTTP answer had a 2xx status (so a failure after it is the body's)."""
        return bool(self.responses) and 200 <= self.responses[-1].http_response.status_code < 300

    def last_text(self) -> str:
        """The last answer's raw body text ('' when there is none or it is not text)."""
        if not self.responses:
            return ""
        try:
            return self.responses[-1].http_response.text
        except (ValueError, UnicodeDecodeError):
            return ""


def resolve_model(options: Mapping[str, Any]) -> str:
    """Model id from the options, else ``NEURALGRAPH_CLAUDE_MODEL``, else the price file's default."""
    model = options.get("model") or os.environ.get(MODEL_ENV) or default_model_id()
    if not model:
        raise BackendConfigError(
            f"anthropic backend: no model id; pass the agent's model option or set {MODEL_ENV}")
    return str(model)


def _api_message(exc: anthropic.APIStatusError) -> str:
    """The API's own error message (not the SDK's 'Error code: ...' dump of the body)."""
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    return str(error.get("message") or exc.message)


def _prompt_too_long(exc: anthropic.APIStatusError) -> bool:
    """The API's answer to a request above the model's context (400) or size limit (413)."""
    return (exc.status_code == 400 and "prompt is too long" in _api_message(exc).lower()) or exc.status_code == 413


def _text_of(body: Mapping[str, Any]) -> str:
    return "".join(block.get("text", "") for block in body.get("content") or []
                   if isinstance(block, dict) and block.get("type") == "text")


def _validation_summary(exc: pydantic.ValidationError, limit: int = 5) -> str:
    lines = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(part) for part in err.get("loc", ())) or "reply"
        lines.append(f"{where}: {err.get('msg')}")
    more = len(exc.errors()) - limit
    if more > 0:
        lines.append(f"... and {more} more")
    return "; ".join(lines)


class AnthropicPolicy:
    """Policy backed by Claude (see the module docstring for the error contract).

    Options (all optional): ``model``; ``max_tokens`` (default 16000); ``timeout_s`` (per
    HTTP attempt, default 600); ``max_retries`` (SDK retries, default 4); ``thinking`` (the
    API's thinking config, e.g. ``{"type": "adaptive"}``); ``base_url`` and ``http_client``
    (an ``httpx2.Client``; tests use a MockTransport). Unknown keys (``seed``...) are ignored.
    """

    name = "anthropic"

    def __init__(self, options: Optional[Mapping[str, Any]] = None) -> None:
        options = dict(options or {})
        api_key = os.environ.get(API_KEY_ENV, "").strip()
        if not api_key:
            raise BackendConfigError(
                f"anthropic backend: {API_KEY_ENV} is not set; export it in the environment of the "
                f"decide job, or choose agent backend 'heuristic' to run offline")
        self.model = resolve_model(options)
        self.max_tokens = backend_option(options, "max_tokens", DEFAULT_MAX_TOKENS, int, "anthropic")
        self.timeout_s = backend_option(options, "timeout_s", DEFAULT_TIMEOUT_S, float, "anthropic")
        self.max_retries = backend_option(options, "max_retries", DEFAULT_MAX_RETRIES, int, "anthropic", allow_zero=True)
        self.thinking = options.get("thinking")
        self.last_call: Optional[dict[str, Any]] = None
        self._trim = TRIM_LEVELS[0]
        self._part_tokens: dict[str, int] = {}
        self._recorder = _ResponseRecorder()
        client_args: dict[str, Any] = {"api_key": api_key, "max_retries": self.max_retries,
                                       "timeout": self.timeout_s, "middleware": [self._recorder]}
        if options.get("base_url"):
            client_args["base_url"] = str(options["base_url"])
        if options.get("http_client") is not None:
            client_args["http_client"] = options["http_client"]
        self._client = anthropic.Anthropic(**client_args)
        try:
            self._prices = load_price_table()
        except PriceTableError:
            self._prices = {}  # a broken price file costs the cost figure, never the decision

    # ------------------------------------------------------------------ the call

    def _request(self, ctx: Any, feedback: Optional[str], trim: int = 0) -> dict[str, Any]:
        return self._request_for(ctx.instructions, user_parts(ctx, feedback, trim), Decision, trim)

    def _round_request(self, contexts: list[Any], trim: int = 0) -> dict[str, Any]:
        return self._request_for(contexts[0].instructions, round_user_parts(contexts, None, trim), RoundDecision,
                                 trim)

    def _request_for(self, instructions: str, parts: list[tuple[str, dict[str, Any]]], output: Any,
                     trim: int) -> dict:
        """The API call's arguments; the per-part token estimate is kept aside for the call record."""
        system = system_blocks(instructions, trim)
        request: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "system": system,
            "messages": [{"role": "user", "content": [block for _, block in parts]}],
            "output_format": output,
        }
        if self.thinking:
            request["thinking"] = dict(self.thinking)
        self._part_tokens = part_token_estimates(system, parts)
        return request

    def decide(self, ctx: Any, feedback: Optional[str] = None) -> Decision:
        """Ask Claude for the next decision; see the module docstring for the errors raised.

        A "prompt is too long" answer is retried at the next trim level; after the last one
        it becomes :class:`PromptTooLongError` (the call record keeps ``prompt_trim``).
        """
        return self._with_trims(lambda trim: self._request(ctx, feedback, trim))

    def decide_round(self, contexts: list[Any]) -> list[Decision]:
        """The K children of a round in one call (structured output :class:`RoundDecision`).

        A reply with another number of children than slots is :class:`InvalidOutputError`;
        the decide stage then asks each slot on its own (agent.decide).
        """
        answer = self._with_trims(lambda trim: self._round_request(contexts, trim))
        if len(answer.children) != len(contexts):
            raise InvalidOutputError(f"the reply has {len(answer.children)} children for a round of "
                                     f"{len(contexts)} slots")
        return list(answer.children)

    def _with_trims(self, make_request) -> Any:
        self._trim = TRIM_LEVELS[0]
        for trim in TRIM_LEVELS:
            self._trim = trim
            try:
                return self._call(make_request(trim))
            except PromptTooLongError as exc:
                too_long = exc
        raise PromptTooLongError(
            f"{too_long} -- still too long with the prompt trimmed at level {self._trim} (memory, logs, code "
            f"and instructions cut to smaller budgets, no pictures); choose a model with a larger context, or "
            f"pass --fallback offline to let the heuristic decide such iterations") from None

    def _call(self, request: dict[str, Any]) -> Any:
        """One API call at trim level ``self._trim``; the parsed reply (a Decision or RoundDecision)."""
        self.last_call = None
        self._recorder.reset()
        started = time.perf_counter()
        try:
            message = self._client.messages.parse(**request)
        except pydantic.ValidationError as exc:
            body = self._recorder.last_body()
            self.last_call = self._record_from_body(body, started)
            self._raise_for_stop_reason(body.get("stop_reason"))
            raise InvalidOutputError(
                f"the reply is not a valid decision JSON ({_validation_summary(exc)}); "
                f"reply began: {_text_of(body)[:200]!r}") from None
        except anthropic.APIStatusError as exc:
            self.last_call = self._record_error(exc, started)
            raise self._translate_status_error(exc) from None
        except anthropic.APIConnectionError as exc:
            self.last_call = self._record_error(exc, started)
            raise RetryableBackendError(
                f"anthropic backend: cannot reach the API after {self.max_retries + 1} attempt(s) "
                f"({type(exc).__name__}: {exc}); try again later") from None
        except anthropic.APIResponseValidationError as exc:
            self.last_call = self._record_error(exc, started)
            raise InvalidOutputError(f"the API's response had an unexpected shape: {exc.message}") from None
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            if not self._recorder.last_was_success():
                raise  # not the answer's fault: a bug to see, not to retry
            body = self._recorder.last_text()
            self.last_call = {**self._record_error(exc, started), "reply_excerpt": body[:REPLY_EXCERPT_CHARS]}
            raise InvalidOutputError(
                f"the API answered {self._recorder.responses[-1].http_response.status_code} but its body is not a "
                f"Messages API reply ({type(exc).__name__}: {exc}); body began: {body[:200]!r}") from None
        self.last_call = self._record_from_message(message, started)
        decision = message.parsed_output
        if decision is None:
            self._raise_for_stop_reason(message.stop_reason)
            raise InvalidOutputError(
                f"the reply contains no decision JSON (stop_reason {message.stop_reason!r}, "
                f"content block types: {', '.join(b.type for b in message.content) or 'none'})")
        return decision

    def _raise_for_stop_reason(self, stop_reason: Optional[str]) -> None:
        if stop_reason == "refusal":
            raise InvalidOutputError("the model refused to answer (stop_reason 'refusal'); no decision was given")
        if stop_reason == "max_tokens":
            raise InvalidOutputError(
                f"the reply was cut off at max_tokens = {self.max_tokens} before the decision JSON was complete; "
                f"raise the agent's max_tokens option or ask for shorter text fields")

    def _translate_status_error(self, exc: anthropic.APIStatusError) -> Exception:
        status = exc.status_code
        detail = f"HTTP {status} ({type(exc).__name__}): {_api_message(exc)}; request id {exc.request_id}"
        if _prompt_too_long(exc):
            return PromptTooLongError(f"anthropic backend: the prompt is too long for model {self.model!r}: {detail}")
        if status == 401:
            return BackendConfigError(f"anthropic backend: authentication failed, check {API_KEY_ENV}: {detail}")
        if status == 403:
            return BackendConfigError(f"anthropic backend: permission denied for model {self.model!r}: {detail}")
        if status in CONFIG_STATUSES:
            return BackendConfigError(f"anthropic backend: the request was refused (model {self.model!r}): {detail}")
        return RetryableBackendError(
            f"anthropic backend: the API is unavailable after {self._recorder.attempts} attempt(s): {detail}; "
            f"try again later")

    def estimate_cost_usd(self, ctx: Any, feedback: Optional[str] = None) -> Optional[float]:
        """The most the next call can cost (for the spend cap); None when the model has no price."""
        return self._bound(self._request(ctx, feedback))

    def estimate_round_cost_usd(self, contexts: list[Any]) -> Optional[float]:
        """The most a whole-round call can cost (for the spend cap)."""
        return self._bound(self._round_request(contexts))

    def _bound(self, request: dict[str, Any]) -> Optional[float]:
        schema = request["output_format"].model_json_schema()
        tokens = input_token_bound(request["system"], request["messages"], schema)
        return max_call_cost_usd(self.model, tokens, self.max_tokens, self._prices)

    # ------------------------------------------------------------------ call records

    def _base_record(self, started: float) -> dict[str, Any]:
        return {"backend": self.name, "model_requested": self.model, "max_tokens": self.max_tokens,
                "prompt_trim": self._trim, "http_attempts": len(self._recorder.log) or self._recorder.attempts,
                "http_retried": self._recorder.retried(), "prompt_tokens_estimate": dict(self._part_tokens),
                "latency_s": round(time.perf_counter() - started, 3)}

    def _usage_record(self, model: Optional[str], usage: Any) -> dict[str, Any]:
        """Token counts and cost; without a usage report the cost is unknown (None), not 0."""
        tokens = TokenUsage.from_api(usage or {})
        known = usage is not None and bool(self._prices)
        cost = call_cost_usd(model or self.model, tokens, self._prices) if known else None
        return {**tokens.to_dict(), "cost_usd": cost}

    def _record_from_message(self, message: Any, started: float) -> dict[str, Any]:
        thinking = sum(1 for block in message.content if block.type in ("thinking", "redacted_thinking"))
        return {**self._base_record(started), "model": message.model,
                "request_id": getattr(message, "_request_id", None) or self._recorder.last_request_id(),
                "stop_reason": message.stop_reason, "thinking_blocks": thinking,
                **self._usage_record(message.model, message.usage)}

    def _record_from_body(self, body: Mapping[str, Any], started: float) -> dict[str, Any]:
        """Record of a reply the SDK could not turn into a Decision (read from the raw JSON)."""
        return {**self._base_record(started), "model": body.get("model"),
                "request_id": self._recorder.last_request_id(), "stop_reason": body.get("stop_reason"),
                **self._usage_record(body.get("model"), body.get("usage")),
                "reply_excerpt": _text_of(body)[:REPLY_EXCERPT_CHARS]}

    def _record_error(self, exc: Exception, started: float) -> dict[str, Any]:
        status = getattr(exc, "status_code", None)
        return {**self._base_record(started), "model": None,
                "request_id": getattr(exc, "request_id", None) or self._recorder.last_request_id(),
                "error": f"{type(exc).__name__}" + (f" (HTTP {status})" if status else ""),
                "cost_usd": None}
