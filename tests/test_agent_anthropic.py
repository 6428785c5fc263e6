"""The anthropic backend through the real SDK with a mock HTTP transport (no network), the
prompt it sends, and the price table.

Every test talks to ``anthropic.Anthropic`` for real; only the HTTP layer is replaced by an
``httpx2.MockTransport`` whose handler plays the API (canned JSON replies, 529s, 401s...).
"""
from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any, Callable

import httpx2
import pytest

from agent.context import DecisionContext
from agent.decision import ALLOWED_PARAMETERS, Decision
from agent.policies.anthropic_policy import AnthropicPolicy
from agent.policies.base import (
    BackendConfigError,
    InvalidOutputError,
    PromptTooLongError,
    RetryableBackendError,
    decide_with_fallback,
)
from agent.pricing import (
    PriceTableError,
    TokenUsage,
    call_cost_usd,
    load_price_table,
    price_for,
)
from agent.prompt import image_blocks
from agent.tree import NodeRecord
from neuralgraph.config import ExperimentConfig
from neuralgraph.io import atomic_write_json, atomic_write_text

SECRET = "sk-ant-api03-THIS-IS-THE-SECRET-TEST-KEY-0123456789"
MODEL = "claude-sonnet-4-6"
INSTRUCTIONS = "# Instructions\nChoose the parent with the highest UCB. RULE-MARKER-42."

# ---------------------------------------------------------------------------- fixtures


def tiny_png(path: Path, color: tuple[int, int, int]) -> bytes:
    """A real 2x2 PNG (matplotlib writes it), returned as bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    plt.imsave(path, np.full((2, 2, 3), color, dtype=np.uint8))
    return path.read_bytes()


def make_context(tmp_path: Path, iteration: int = 3, n_iter_block: int = 4) -> DecisionContext:
    config = ExperimentConfig().to_dict()
    nodes = [
        NodeRecord(id=i, parent=None if i == 1 else i - 1, block=1, iteration=i, time_step=1, config=config,
                   metrics={"connectivity_R2": 0.5 + 0.1 * i})
        for i in range(1, iteration + 1)
    ]
    images = [tmp_path / "activity.png", tmp_path / "connectivity.png"]
    tiny_png(images[0], (255, 0, 0))
    tiny_png(images[1], (0, 0, 255))
    return DecisionContext(
        iteration=iteration, n_iter_block=n_iter_block, n_blocks=2,
        working_memory="# Working Memory\nMEMORY-MARKER", analysis_log="spectral radius: 1.029\nLOG-MARKER",
        ucb_scores="Node 3: UCB=2.175, parent=2, visits=1, R2=0.800", config=config,
        config_yaml="training:\n  learning_rate_W_start: 0.001  # CONFIG-MARKER\n",
        code="def train_step(model, optimizer, data, starts, ctx):\n    return 0  # CODE-MARKER\n",
        editable_functions=("train_step",), instructions=INSTRUCTIONS, image_paths=images,
        nodes=nodes, current_node=nodes[-1], ucb_c=1.414, schedule=None, seed=0, base_config=config,
    )


def decision_dict(parent: Any = 3, **changes: Any) -> dict[str, Any]:
    data = {
        "parent": parent,
        "strategy": "exploit",
        "log": {"outcome": "partial", "mode": "success-exploit", "parent_rule": "highest UCB",
                "observation": "lr_W helps", "next_parent": parent},
        "memory_update": {"emerging_observations": "larger lr_W converges faster"},
        "config_mutation": {"parameter": "learning_rate_W_start", "old": 0.001, "new": 0.002},
    }
    data.update(changes)
    return data


def reply(text: str, stop_reason: str = "end_turn", model: str = MODEL, thinking: bool = False,
          request_id: str = "req_0001") -> httpx2.Response:
    content = [{"type": "thinking", "thinking": "Node 3 has the highest UCB...", "signature": "sig"}] if thinking else []
    if text is not None:
        content.append({"type": "text", "text": text})
    return httpx2.Response(200, headers={"request-id": request_id}, json={
        "id": "msg_01", "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": stop_reason, "stop_sequence": None,
        "usage": {"input_tokens": 1200, "output_tokens": 300,
                  "cache_creation_input_tokens": 2000, "cache_read_input_tokens": 5000},
    })


def api_error(status: int, kind: str, message: str) -> httpx2.Response:
    return httpx2.Response(status, headers={"request-id": f"req_err_{status}", "retry-after-ms": "1"},
                           json={"type": "error", "error": {"type": kind, "message": message}})


class FakeAPI:
    """The mock transport's handler: replays a list of responses and keeps every request."""

    def __init__(self, *responses: httpx2.Response | Callable[[httpx2.Request], httpx2.Response]):
        self.responses = list(responses)
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        item = self.responses[min(len(self.requests), len(self.responses)) - 1]
        return item(request) if callable(item) else item

    def body(self, index: int = -1) -> dict[str, Any]:
        return json.loads(self.requests[index].content)


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    monkeypatch.delenv("NEURALGRAPH_CLAUDE_MODEL", raising=False)
    monkeypatch.delenv("NEURALGRAPH_PRICES", raising=False)
    return SECRET


def make_policy(api: FakeAPI, max_retries: int = 2, **options: Any) -> AnthropicPolicy:
    client = httpx2.Client(transport=httpx2.MockTransport(api))
    return AnthropicPolicy({"model": MODEL, "base_url": "http://testserver", "http_client": client,
                            "max_retries": max_retries, "max_tokens": 4000, **options})


# ---------------------------------------------------------------------------- the request


def test_request_carries_schema_cached_system_block_model_and_all_inputs(tmp_path, api_key):
    api = FakeAPI(reply(json.dumps(decision_dict())))
    ctx = make_context(tmp_path, iteration=4, n_iter_block=4)  # block end
    make_policy(api).decide(ctx)
    body = api.body()
    request = api.requests[0]

    assert request.url.path == "/v1/messages"
    assert request.headers["authorization"] == f"Bearer {SECRET}"  # how this SDK sends the key
    assert body["model"] == MODEL and body["max_tokens"] == 4000
    # structured output: the Decision schema, strict objects
    schema = body["output_config"]["format"]["schema"]
    assert body["output_config"]["format"]["type"] == "json_schema"
    assert {"parent", "strategy", "log", "memory_update", "config_mutation", "code_modification"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False
    assert "exploit" in json.dumps(schema["properties"]["strategy"])
    # the static instructions are one cached system block
    [system] = body["system"]
    assert system["cache_control"] == {"type": "ephemeral"}
    assert "RULE-MARKER-42" in system["text"]
    for rule in ALLOWED_PARAMETERS.values():  # the enforced ranges, generated from the validator
        assert f"- {rule.name}: {rule.allowed()}" in system["text"]
    # the user turn: what the seed's agent saw
    [message] = body["messages"]
    assert message["role"] == "user"
    texts = "\n".join(b["text"] for b in message["content"] if b["type"] == "text")
    assert "Block info: block 1, iteration 4/4 within block -- BLOCK END" in texts
    assert "must be 'root'" in texts and "selection_rule_edits" in texts
    for marker in ("MEMORY-MARKER", "LOG-MARKER", "Node 3: UCB=2.175", "CONFIG-MARKER", "CODE-MARKER"):
        assert marker in texts
    assert "RULE-MARKER-42" not in texts  # instructions only in the cached block
    images = [b for b in message["content"] if b["type"] == "image"]
    assert [b["source"]["media_type"] for b in images] == ["image/png", "image/png"]
    assert base64.b64decode(images[0]["source"]["data"]) == (tmp_path / "activity.png").read_bytes()
    assert base64.b64decode(images[1]["source"]["data"]) == (tmp_path / "connectivity.png").read_bytes()


def test_model_comes_from_options_then_environment(tmp_path, api_key, monkeypatch):
    api = FakeAPI(reply(json.dumps(decision_dict())))
    monkeypatch.setenv("NEURALGRAPH_CLAUDE_MODEL", "claude-from-env")
    client = httpx2.Client(transport=httpx2.MockTransport(api))
    policy = AnthropicPolicy({"base_url": "http://testserver", "http_client": client})
    assert policy.model == "claude-from-env"
    policy.decide(make_context(tmp_path))
    assert api.body()["model"] == "claude-from-env"
    assert make_policy(FakeAPI(), model="claude-from-options").model == "claude-from-options"


def test_missing_picture_is_described_not_fatal(tmp_path):
    blocks = image_blocks(tmp_path / "absent.png")
    assert blocks == [{"type": "text", "text": "(picture absent.png is not available: No such file or directory)"}]
    (tmp_path / "notes.png").write_text("not an image")
    assert "is not a PNG/JPEG/GIF/WebP image" in image_blocks(tmp_path / "notes.png")[0]["text"]


# ---------------------------------------------------------------------------- the reply


def test_canned_reply_is_parsed_into_a_decision_with_its_call_record(tmp_path, api_key):
    api = FakeAPI(reply(json.dumps(decision_dict()), thinking=True, model="claude-sonnet-4-6-20260101",
                        request_id="req_abc"))
    policy = make_policy(api)
    decision = policy.decide(make_context(tmp_path))

    assert isinstance(decision, Decision)
    assert decision.parent == 3 and decision.strategy == "exploit"
    assert decision.config_mutation.parameter == "learning_rate_W_start" and decision.config_mutation.new == 0.002
    call = policy.last_call
    assert call["model_requested"] == MODEL and call["model"] == "claude-sonnet-4-6-20260101"
    assert call["request_id"] == "req_abc" and call["stop_reason"] == "end_turn"
    assert call["thinking_blocks"] == 1 and call["http_attempts"] == 1
    assert (call["input_tokens"], call["output_tokens"]) == (1200, 300)
    assert (call["cache_creation_input_tokens"], call["cache_read_input_tokens"]) == (2000, 5000)
    # sonnet-4-6 prices from prices.json (the dated id falls back to its alias): 3 / 15 / 3.75 / 0.30 USD per M tokens
    assert call["cost_usd"] == pytest.approx((1200 * 3 + 300 * 15 + 2000 * 3.75 + 5000 * 0.30) / 1e6)
    json.dumps(call)  # JSON-able, as decision.json needs


def test_529_then_success_is_retried_by_the_sdk(tmp_path, api_key):
    api = FakeAPI(api_error(529, "overloaded_error", "Overloaded"), reply(json.dumps(decision_dict())))
    policy = make_policy(api, max_retries=2)
    decision = policy.decide(make_context(tmp_path))
    assert decision.parent == 3
    assert len(api.requests) == 2
    assert policy.last_call["http_attempts"] == 2
    # each retried attempt is kept (decide.log and decision.json state it): its status and number
    assert policy.last_call["http_retried"] == [{"attempt": 1, "status": 529, "request_id": "req_err_529"}]


def test_a_connection_failure_that_was_retried_is_recorded(tmp_path, api_key):
    def flaky(request):
        if len(api.requests) == 1:
            raise httpx2.ConnectError("connection reset", request=request)
        return reply(json.dumps(decision_dict()))

    api = FakeAPI(flaky)
    policy = make_policy(api, max_retries=2, timeout_s=5)
    assert policy.decide(make_context(tmp_path)).parent == 3
    assert policy.last_call["http_retried"] == [{"attempt": 1, "status": None, "error": "APIConnectionError"}]
    assert policy.last_call["http_attempts"] == 2


def test_the_call_record_estimates_the_input_tokens_of_each_prompt_part(tmp_path, api_key):
    from agent.prompt import PROMPT_PARTS

    api = FakeAPI(reply(json.dumps(decision_dict())))
    ctx = make_context(tmp_path)
    ctx.code = "x = 1\n" * 700  # 4,200 bytes of code: 1,200 tokens at 3.5 bytes per token
    policy = make_policy(api)
    policy.decide(ctx)
    estimate = policy.last_call["prompt_tokens_estimate"]
    assert set(estimate) == set(PROMPT_PARTS)
    assert 1200 <= estimate["code"] <= 1230  # the code plus its heading and fence
    # two 2x2 pictures (4 pixels / 750 per token: at least 1 each) and their captions "Picture: NAME"
    assert estimate["images"] == 1 + 1 + math.ceil(len("Picture: activity.png") / 3.5) + \
        math.ceil(len("Picture: connectivity.png") / 3.5)
    assert estimate["system"] > estimate["memory"] > 0 and estimate["analyses"] > 0


def test_block_end_prompt_lists_every_node_and_names_the_root_source_with_its_values(tmp_path, api_key):
    ctx = make_context(tmp_path, iteration=4, n_iter_block=4)  # block end; node 4 is the current node
    best = ctx.nodes[1]  # node 2, not the current node, is the block's best
    best.metrics = {"connectivity_R2": 0.998571, "outcome": "converged"}
    ctx.nodes[3].metrics = {"connectivity_R2": 0.998523}
    best.config = {**best.config, "training": {**best.config["training"], "learning_rate_W_start": 0.0022}}
    api = FakeAPI(reply(json.dumps(decision_dict())))
    make_policy(api).decide(ctx)
    texts = "\n".join(b["text"] for b in api.body()["messages"][0]["content"] if b["type"] == "text")
    for node in ctx.nodes:
        assert f"- node {node.id} (" in texts
    assert "- node 2 (parent 1, iteration 2): connectivity_R2=0.998571, outcome=converged;" in texts
    assert "connectivity_R2=0.998523" in texts  # full precision, where ucb_scores.txt shows 0.999 twice
    assert ("NEXT ROOT: parent 'root' copies node 2, the block's best (connectivity_R2=0.998571); a "
            "config_mutation.old must equal node 2's value: time_step=1, learning_rate_W_start=0.0022,") in texts


def test_pictures_and_code_can_be_left_out_of_the_prompt(tmp_path, api_key):
    ctx = make_context(tmp_path)
    ctx.prompt_images, ctx.prompt_code = False, False
    api = FakeAPI(reply(json.dumps(decision_dict())))
    policy = make_policy(api)
    policy.decide(ctx)
    content = api.body()["messages"][0]["content"]
    texts = "\n".join(b["text"] for b in content if b["type"] == "text")
    assert not [b for b in content if b["type"] == "image"] and "CODE-MARKER" not in texts
    assert "(2 picture(s) left out: agent.prompt_images is false)" in texts
    assert "left out of the prompt: agent.prompt_code is false" in texts
    assert policy.last_call["prompt_tokens_estimate"]["images"] == 0


@pytest.mark.parametrize("status, kind", [(529, "overloaded_error"), (429, "rate_limit_error"), (500, "api_error")])
def test_persistent_unavailability_is_a_retryable_error(tmp_path, api_key, status, kind):
    api = FakeAPI(api_error(status, kind, "try later"))
    policy = make_policy(api, max_retries=2)
    with pytest.raises(RetryableBackendError) as info:
        policy.decide(make_context(tmp_path))
    assert len(api.requests) == 3  # first try + 2 SDK retries
    assert f"HTTP {status}" in str(info.value) and "after 3 attempt(s)" in str(info.value)
    assert policy.last_call["request_id"] == f"req_err_{status}"


def test_network_failure_is_a_retryable_error(tmp_path, api_key):
    def unreachable(request):
        raise httpx2.ConnectError("connection refused", request=request)

    api = FakeAPI(unreachable)
    with pytest.raises(RetryableBackendError, match="cannot reach the API after 2 attempt"):
        make_policy(api, max_retries=1, timeout_s=5).decide(make_context(tmp_path))
    assert len(api.requests) == 2


def test_refusal_is_an_invalid_output_with_tokens_recorded(tmp_path, api_key):
    api = FakeAPI(reply("I can't help with that.", stop_reason="refusal"))
    policy = make_policy(api)
    with pytest.raises(InvalidOutputError, match="the model refused to answer"):
        policy.decide(make_context(tmp_path))
    assert policy.last_call["stop_reason"] == "refusal"
    assert policy.last_call["output_tokens"] == 300 and policy.last_call["cost_usd"] > 0
    assert len(api.requests) == 1  # not retried by the SDK: the chain decides


def test_refusal_without_text_is_an_invalid_output(tmp_path, api_key):
    api = FakeAPI(reply(None, stop_reason="refusal"))
    with pytest.raises(InvalidOutputError, match="refused"):
        make_policy(api).decide(make_context(tmp_path))


def test_max_tokens_truncation_names_the_limit(tmp_path, api_key):
    truncated = json.dumps(decision_dict())[:80]
    api = FakeAPI(reply(truncated, stop_reason="max_tokens"))
    policy = make_policy(api, max_tokens=1234)
    with pytest.raises(InvalidOutputError, match="cut off at max_tokens = 1234"):
        policy.decide(make_context(tmp_path))
    assert policy.last_call["stop_reason"] == "max_tokens"
    assert policy.last_call["reply_excerpt"] == truncated


@pytest.mark.parametrize("text, expected", [
    ('{"parent": 3, "strategy": ', "not a valid decision JSON"),
    ("Sure! I think node 3 is best.", "not a valid decision JSON"),
    (json.dumps(decision_dict(strategy="yolo")), "strategy"),
    (json.dumps({**decision_dict(), "surprise": 1}), "surprise"),
])
def test_malformed_or_off_schema_json_is_an_invalid_output(tmp_path, api_key, text, expected):
    policy = make_policy(FakeAPI(reply(text)))
    with pytest.raises(InvalidOutputError) as info:
        policy.decide(make_context(tmp_path))
    assert expected in str(info.value)
    assert policy.last_call["request_id"] == "req_0001"


# ---------------------------------------------------------------------------- configuration errors


def test_authentication_failure_is_a_config_error_without_the_key(tmp_path, api_key):
    api = FakeAPI(api_error(401, "authentication_error", "invalid x-api-key"))
    with pytest.raises(BackendConfigError) as info:
        make_policy(api, max_retries=3).decide(make_context(tmp_path))
    assert "authentication failed, check ANTHROPIC_API_KEY" in str(info.value)
    assert "invalid x-api-key" in str(info.value)
    assert SECRET not in str(info.value)
    assert len(api.requests) == 1  # never retried


@pytest.mark.parametrize("status, kind, message", [
    (400, "invalid_request_error", "max_tokens: too large"),
    (403, "permission_error", "model not allowed"),
    (404, "not_found_error", "model: claude-nonexistent"),
])
def test_bad_request_and_unknown_model_are_config_errors(tmp_path, api_key, status, kind, message):
    api = FakeAPI(api_error(status, kind, message))
    with pytest.raises(BackendConfigError) as info:
        make_policy(api).decide(make_context(tmp_path))
    assert f"HTTP {status}" in str(info.value) and message in str(info.value)
    assert len(api.requests) == 1


def test_missing_key_is_a_config_error(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(BackendConfigError, match="ANTHROPIC_API_KEY is not set"):
        AnthropicPolicy({"model": MODEL})


def test_bad_option_is_a_config_error(api_key):
    with pytest.raises(BackendConfigError, match="option max_tokens = 'lots': must be a int"):
        AnthropicPolicy({"model": MODEL, "max_tokens": "lots"})


# ---------------------------------------------------------------------------- with the fallback chain


def test_refused_decision_is_retried_once_with_the_reason_in_the_prompt(tmp_path, api_key):
    bad = decision_dict(parent=99)   # not a node of the block
    api = FakeAPI(reply(json.dumps(bad), request_id="req_1"), reply(json.dumps(decision_dict()), request_id="req_2"))
    outcome = decide_with_fallback(make_policy(api), make_context(tmp_path))
    assert outcome.policy == "anthropic" and outcome.decision.parent == 3
    assert [a.accepted for a in outcome.attempts] == [False, True]
    assert [a.call["request_id"] for a in outcome.attempts] == ["req_1", "req_2"]
    retry_texts = "\n".join(b.get("text", "") for b in api.body(1)["messages"][0]["content"])
    assert "REFUSED" in retry_texts and "parent = 99" in retry_texts
    first = json.dumps(api.body(0))
    assert "REFUSED" not in first
    assert "Decide the node of iteration 4 (iteration 4 of block 1; time_step stays 1" in first
    assert "BLOCK END" not in first


def test_no_output_file_contains_the_api_key(tmp_path, api_key):
    """Run the backend as the decide stage would and write what it writes; scan every file."""
    api = FakeAPI(reply("not json"), reply(json.dumps(decision_dict())))
    outcome = decide_with_fallback(make_policy(api), make_context(tmp_path))
    out = tmp_path / "iter_003"
    atomic_write_json(out / "decision.json", {
        "decision": outcome.decision.model_dump(mode="json"), "policy": outcome.policy,
        "attempts": [a.to_dict() for a in outcome.attempts]})
    for i, request in enumerate(api.requests):  # even the raw request bodies
        atomic_write_text(out / f"request_{i}.json", request.content.decode())
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 5
    for path in files:
        data = path.read_bytes()
        assert SECRET.encode() not in data, path
        assert base64.b64encode(SECRET.encode()) not in data, path
    record = json.loads((out / "decision.json").read_text())
    assert record["attempts"][0]["accepted"] is False
    assert "not a valid decision JSON" in record["attempts"][0]["reason"]
    assert record["attempts"][1]["call"]["cost_usd"] > 0


# ---------------------------------------------------------------------------- prompt too long, garbage bodies

PROMPT_TOO_LONG = ("invalid_request_error", "prompt is too long: 215000 tokens > 200000 maximum")


def _texts(body: dict[str, Any]) -> str:
    return "\n".join(b.get("text", "") for b in body["messages"][0]["content"])


def _offline() -> Any:
    from agent.policies.heuristic import HeuristicPolicy

    return HeuristicPolicy({"seed": 0})


def test_prompt_parts_are_cut_to_their_budgets_keeping_head_and_tail(tmp_path, api_key):
    from agent.prompt import budget

    ctx = make_context(tmp_path)
    ctx.working_memory = "# Working Memory\nKNOWLEDGE-HEAD\n" + "x" * 1_000_000 + "\nEMERGING-TAIL"
    api = FakeAPI(reply(json.dumps(decision_dict())))
    make_policy(api).decide(ctx)
    [memory] = [b["text"] for b in api.body()["messages"][0]["content"] if "Working memory" in b.get("text", "")]
    assert len(memory) <= budget("memory") + 100
    assert "KNOWLEDGE-HEAD" in memory and "EMERGING-TAIL" in memory and "left out to fit the prompt" in memory


def test_prompt_too_long_is_retried_once_trimmed_harder(tmp_path, api_key):
    ctx = make_context(tmp_path)
    ctx.working_memory = "MEMORY-HEAD " + "m" * 100_000
    api = FakeAPI(api_error(400, *PROMPT_TOO_LONG), reply(json.dumps(decision_dict())))
    policy = make_policy(api, max_retries=2)
    assert policy.decide(ctx).parent == 3
    assert len(api.requests) == 2  # the SDK does not retry a 400: the second call is ours
    first, second = api.body(0), api.body(1)
    assert len(json.dumps(second)) < len(json.dumps(first)) / 2
    assert [b["type"] for b in second["messages"][0]["content"]].count("image") == 0
    assert "2 picture(s) left out to fit the prompt" in _texts(second) and "MEMORY-HEAD" in _texts(second)
    assert policy.last_call["prompt_trim"] == 1


def test_prompt_too_long_even_trimmed_lets_the_offline_policy_decide_and_says_why(tmp_path, api_key):
    api = FakeAPI(api_error(400, *PROMPT_TOO_LONG))
    outcome = decide_with_fallback(make_policy(api), make_context(tmp_path), fallback=_offline(),
                                   offline_on_unavailable=True)
    assert len(api.requests) == 2
    assert outcome.policy.startswith("heuristic (fallback after: prompt too long: anthropic backend: the prompt is too long")
    first = outcome.attempts[0]
    assert not first.accepted and "prompt is too long: 215000 tokens" in first.reason
    assert "still too long with the prompt trimmed at level 1" in first.reason
    assert first.call["prompt_trim"] == 1 and first.call["error"] == "BadRequestError (HTTP 400)"
    assert [a.accepted for a in outcome.attempts] == [False, True]


def test_prompt_too_long_without_offline_fallback_is_a_config_error(tmp_path, api_key):
    api = FakeAPI(api_error(400, *PROMPT_TOO_LONG))
    with pytest.raises(BackendConfigError, match="prompt is too long") as info:
        decide_with_fallback(make_policy(api), make_context(tmp_path), fallback=_offline())
    assert isinstance(info.value, PromptTooLongError)


def test_prompt_too_long_through_the_decide_cli_exits_2_or_falls_back_offline(tmp_path, api_key, monkeypatch, capsys):
    import agent.cli as cli
    import agent.decide as decide_stage
    from agent_helpers import decide_args, decision_of, fake_analyze, iter_dir, ucb_args, write_experiment_config

    exp = write_experiment_config(tmp_path / "exp.yaml")
    assert cli.main(["init", "--config", str(exp), "--out-dir", str(iter_dir(tmp_path, 1))]) == 0
    fake_analyze(iter_dir(tmp_path, 1))
    assert cli.main(ucb_args(tmp_path, 1)) == 0
    api = FakeAPI(api_error(400, *PROMPT_TOO_LONG))
    monkeypatch.setattr(decide_stage, "get_policy", lambda backend, options: make_policy(api))
    args = decide_args(tmp_path, exp, 1, 3, 2, backend="anthropic", extra=["--smoke-timeout", "0"])

    assert cli.main(args) == 2  # re-running would send the same prompt: configuration, not 75
    assert "backend configuration error: anthropic backend: the prompt is too long" in capsys.readouterr().err
    assert not (iter_dir(tmp_path, 1) / "decision.json").exists() and not iter_dir(tmp_path, 2).exists()

    assert cli.main(args + ["--fallback", "offline"]) == 0
    record = decision_of(iter_dir(tmp_path, 1))
    assert record["policy"].startswith("heuristic (fallback after: prompt too long:")
    assert record["attempts"][0]["reason"].startswith("prompt too long: ") and record["attempts"][-1]["accepted"]
    assert (iter_dir(tmp_path, 2) / "config.yaml").exists()


@pytest.mark.parametrize("garbage", [
    httpx2.Response(200, headers={"content-type": "text/html"}, content=b"<html>gateway says hi</html>"),
    httpx2.Response(200, headers={"content-type": "application/json"}, content=b"<html>not json</html>"),
    httpx2.Response(200, json={}),
    httpx2.Response(200, json=[1, 2]),
    httpx2.Response(200, json={"id": "x", "type": "message", "content": "nope"}),
], ids=["html", "json-header-html", "empty-object", "list", "content-not-a-list"])
def test_a_200_whose_body_is_no_reply_is_retried_once_then_the_offline_policy_decides(tmp_path, api_key, garbage):
    api = FakeAPI(garbage)
    outcome = decide_with_fallback(make_policy(api, max_retries=3), make_context(tmp_path), fallback=_offline())
    assert len(api.requests) == 2  # one retry, like an invalid reply; the SDK itself does not retry a 200
    assert [a.accepted for a in outcome.attempts] == [False, False, True]
    assert "is not a Messages API reply" in outcome.attempts[0].reason
    assert outcome.attempts[0].call["http_attempts"] == 1
    assert outcome.policy.startswith("heuristic (fallback after: unusable output: the API answered 200")
    retry = _texts(api.body(1))
    assert "REFUSED" in retry and "not a Messages API reply" in retry


def test_a_200_with_garbage_then_a_good_reply_is_used(tmp_path, api_key):
    api = FakeAPI(httpx2.Response(200, json={}), reply(json.dumps(decision_dict())))
    outcome = decide_with_fallback(make_policy(api), make_context(tmp_path), fallback=_offline())
    assert outcome.policy == "anthropic" and outcome.decision.parent == 3


# ---------------------------------------------------------------------------- prices


def test_cost_from_the_price_table():
    table = load_price_table()
    usage = TokenUsage(input_tokens=1_000_000, output_tokens=1_000_000,
                       cache_creation_input_tokens=1_000_000, cache_read_input_tokens=1_000_000)
    assert call_cost_usd("claude-haiku-4-5", usage, table) == pytest.approx(1.0 + 5.0 + 1.25 + 0.10)
    assert price_for("claude-haiku-4-5-20251001", table) == table["claude-haiku-4-5"]
    assert call_cost_usd("claude-unknown-9", usage, table) is None


def test_usage_from_the_api_tolerates_missing_cache_fields():
    usage = TokenUsage.from_api({"input_tokens": 10, "output_tokens": 2, "cache_read_input_tokens": None})
    assert usage.to_dict() == {"input_tokens": 10, "output_tokens": 2,
                               "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def test_price_file_errors_name_the_file_and_field(tmp_path, monkeypatch):
    bad = tmp_path / "prices.json"
    bad.write_text(json.dumps({"models": {"m": {"input": 1, "output": -2, "cache_write": 1, "cache_read": 1}}}))
    with pytest.raises(PriceTableError, match=r"prices.json: models.m.output = -2: must be a non-negative number"):
        load_price_table(bad)
    bad.write_text("{oops")
    with pytest.raises(PriceTableError, match="prices.json: not valid JSON"):
        load_price_table(bad)
    good = tmp_path / "new_prices.json"
    good.write_text(json.dumps({"models": {"m": {"input": 2, "output": 4, "cache_write": 0, "cache_read": 0}}}))
    monkeypatch.setenv("NEURALGRAPH_PRICES", str(good))
    assert call_cost_usd("m", TokenUsage(input_tokens=500_000, output_tokens=250_000)) == pytest.approx(2.0)


def test_unpriced_model_still_gives_a_decision(tmp_path, api_key):
    policy = make_policy(FakeAPI(reply(json.dumps(decision_dict()), model="claude-future-7")),
                         model="claude-future-7")
    assert policy.decide(make_context(tmp_path)).parent == 3
    assert policy.last_call["cost_usd"] is None and policy.last_call["input_tokens"] == 1200


# ---------------------------------------------------------------------------- the decide stage end to end


class _LoopbackAPI:
    """A tiny local HTTP server playing the Messages API for a decide run in this process.

    The decide CLI builds its own SDK client, so the mock sits behind ANTHROPIC_BASE_URL on
    127.0.0.1 (no network leaves the machine).
    """

    def __init__(self, reply_text: str):
        import http.server
        import threading

        api = self
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server naming)
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                api.requests.append((dict(self.headers), body))
                canned = reply(reply_text, request_id="req_e2e")
                payload = canned.content
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("request-id", "req_e2e")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_decide_cli_with_the_anthropic_backend_writes_no_key(tmp_path, api_key, monkeypatch, tiny_config_dict_factory):
    import yaml

    from agent.cli import main as agent_main

    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(tiny_config_dict_factory()))
    results, it1 = tmp_path / "results", tmp_path / "results" / "iter_001"
    assert agent_main(["init", "--config", str(base), "--out-dir", str(it1)]) == 0
    atomic_write_json(it1 / "metrics.json", {"status": "ok", "connectivity_R2": 0.62, "test_R2": 0.5})
    (it1 / "analysis.log").write_text("spectral radius: 1.02\n--- activity ---\n  effective rank (99% var): 12\n")
    assert agent_main(["ucb", "--proposal", str(it1 / "proposal.json"), "--metrics", str(it1 / "metrics.json"),
                       "--config", str(it1 / "config.yaml"), "--code", str(it1 / "train_loop.py"),
                       "--out-node", str(it1 / "node.json"), "--out-scores", str(it1 / "ucb_scores.txt")]) == 0
    picture = tmp_path / "activity.png"
    tiny_png(picture, (0, 255, 0))
    lr_w = tiny_config_dict_factory()["training"]["learning_rate_W_start"]
    canned = decision_dict(parent=1, config_mutation={"parameter": "learning_rate_W_start", "old": lr_w, "new": 0.002})

    server = _LoopbackAPI(json.dumps(canned))
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    try:
        rc = agent_main([
            "decide", "--node", str(it1 / "node.json"), "--ucb", str(it1 / "ucb_scores.txt"),
            "--analysis-log", str(it1 / "analysis.log"), "--config", str(it1 / "config.yaml"),
            "--code", str(it1 / "train_loop.py"), "--images", str(picture), "--iteration", "1",
            "--n-iter-block", "4", "--n-blocks", "1", "--backend", "anthropic", "--model", MODEL,
            "--base-config", str(base), "--results-dir", str(results), "--out-dir", str(it1),
            "--next-dir", str(results / "iter_002"), "--smoke-timeout", "0"])
    finally:
        server.close()

    assert rc == 0
    [(headers, body)] = server.requests
    assert headers["Authorization"] == f"Bearer {SECRET}"  # the key was used ...
    assert body["model"] == MODEL and body["system"][0]["cache_control"] == {"type": "ephemeral"}
    from agent_helpers import decision_of

    record = decision_of(it1)
    assert record["policy"] == "anthropic"
    call = record["attempts"][0]["call"]
    assert call["request_id"] == "req_e2e" and call["model"] == MODEL and call["cost_usd"] > 0
    proposal = json.loads((results / "iter_002" / "proposal.json").read_text())
    assert proposal["parent"] == 1
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"decision.json", "memory.md", "analysis.md", "instructions.md", "config.yaml"} <= {p.name for p in written}
    for path in written:  # ... and is in no file the stage wrote
        assert SECRET.encode() not in path.read_bytes(), path
