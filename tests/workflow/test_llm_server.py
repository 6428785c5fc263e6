"""The anthropic backend through the whole workflow against a local server speaking the Messages API.

One real Snakemake run of the tiny experiment (3 blocks x 2 iterations, 2 slots: 6 short
trainings, decides at iterations 2, 4 and 6) with ``agent.backend: anthropic``. The SDK is
pointed at a threading ``http.server`` on 127.0.0.1 (``ANTHROPIC_BASE_URL``, which the SDK
honours); the API key goes through the workflow's secret hand-over like a user's. A test price
file (``NEURALGRAPH_PRICES``) makes each call's bound known to the cent: input tokens almost
free, output at 100 USD per million, so a call may cost up to 16000 x 100e-6 = 1.6 USD.

The server's script, and what the user must read about each step:

1. iteration 2 (a block end; slot 1 is asked, slot 2 is the block-start variant, here the better): HTTP 529,
   retried by the SDK; then a reply that is no JSON, refused, slot 1 asked again; then a
   valid decision whose ``config_mutation.old`` is read from the prompt's NEXT ROOT line --
   the block's best node, in slot 2 -- so it is accepted only if the prompt named the node the
   root is really copied from. That reply bills 1.6 USD.
2. iteration 4 (block end): spent 1.61 + bound 1.6 > agent.max_cost_usd = 2: the call is not
   made, the heuristic decides (its nodes carry the reason in summary.tsv).
3. iteration 6 (the last round, a whole-round call): refused by the cap too; its decisions
   create no node, which the explorer says.

Any request beyond the script is answered 400, which fails the run visibly.
"""
from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pandas as pd
import pytest

from agent.run_plan import PLAN_FILE
from wf_helpers import snakemake, write_workflow_config

pytestmark = pytest.mark.slow

MODEL = "claude-test-model"
CAP_USD = 2.0
PRICES = {"default_model": MODEL,
          "models": {MODEL: {"input": 0.01, "output": 100.0, "cache_write": 0.01, "cache_read": 0.01}}}
SMALL_USAGE = {"input_tokens": 1000, "output_tokens": 100}  # 0.01001 USD
FULL_USAGE = {"input_tokens": 1000, "output_tokens": 16000}  # 1.60001 USD: the whole reply limit
NEXT_ROOT = re.compile(r"NEXT ROOT: parent 'root' copies node (\d+), .*?value: (.*)$", re.MULTILINE)


def message(text: str, usage: dict[str, int]) -> dict[str, Any]:
    return {"id": "msg_test", "type": "message", "role": "assistant", "model": MODEL,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": usage}


def prompt_text(body: dict[str, Any]) -> str:
    return "\n".join(b.get("text", "") for m in body.get("messages", []) for b in m.get("content", [])
                     if isinstance(b, dict) and b.get("type") == "text")


def block_end_decision(body: dict[str, Any]) -> dict[str, Any]:
    """What a careful model answers at a block end: mutate the node the prompt says the root copies."""
    match = NEXT_ROOT.search(prompt_text(body))
    assert match, "the block-end prompt names no NEXT ROOT"
    values = dict(item.split("=", 1) for item in match.group(2).split(", "))
    old = float(values["learning_rate_W_start"])
    new = old * 1.5 if old * 1.5 <= 1e-2 else old / 1.5
    return {
        "parent": "root", "strategy": "exploit",
        "log": {"outcome": "partial", "mode": "block-end", "parent_rule": "best node of the block",
                "observation": f"node {match.group(1)} is the best", "next_parent": "root"},
        "memory_update": {"emerging_observations": "lr_W matters", "block_summary": "one round",
                          "key_finding": "variants differ", "next_block_hypothesis": "larger lr_W helps"},
        "config_mutation": {"parameter": "learning_rate_W_start", "old": old, "new": new},
        "next_time_step": 1, "time_step_reason": "the schedule", "selection_rule_edits": [],
    }


class MessagesAPI(ThreadingHTTPServer):
    """POST /v1/messages answered from a script; every request body is kept."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.script = [
            lambda body: (529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            lambda body: (200, message("{this is not json", SMALL_USAGE)),
            lambda body: (200, message(json.dumps(block_end_decision(body)), FULL_USAGE)),
        ]

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.bodies.append(body)
            index = len(self.bodies) - 1
        if index >= len(self.script):
            return 400, {"type": "error", "error": {"type": "invalid_request_error",
                                                    "message": f"test server: unexpected request {index + 1}"}}
        return self.script[index](body)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if not self.path.split("?")[0].endswith("/v1/messages"):
            status, reply = 404, {"type": "error", "error": {"type": "not_found_error", "message": self.path}}
        else:
            status, reply = self.server.answer(body)
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("request-id", f"req_test_{len(self.server.bodies)}")
        self.send_header("retry-after-ms", "10")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def llm_run(tmp_path_factory):
    """The one workflow run every test below reads."""
    workdir = tmp_path_factory.mktemp("llm_server")
    prices = workdir / "prices.json"
    prices.write_text(json.dumps(PRICES), encoding="utf-8")
    # seed 9: block 1's variant doubles learning_rate_W_start, which trains better in so short a run
    agent = {"backend": "anthropic", "model": MODEL, "seed": 9, "fallback": "fail", "max_cost_usd": CAP_USD,
             "prompt_images": False}
    write_workflow_config(workdir, name="llm", schedule=[1, 1, 1], n_iter_block=2, slots=2, agent=agent)
    server = MessagesAPI()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = {"ANTHROPIC_API_KEY": "sk-test-local-server-key-0123456789", "NEURALGRAPH_PRICES": str(prices),
           "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{server.server_address[1]}"}
    try:
        result = snakemake(workdir, env=env, timeout=1200)
    finally:
        server.shutdown()
        server.server_close()
    result.check()
    return workdir / "results" / "llm", server, result


def decision(results, iteration: int) -> dict[str, Any]:
    return json.loads((results / f"iter_{iteration:03d}" / "decision.json").read_text(encoding="utf-8"))


def decide_log(results, iteration: int) -> str:
    return (results / f"iter_{iteration:03d}" / "logs" / "decide.log").read_text(encoding="utf-8")


def summary(results) -> pd.DataFrame:
    return pd.read_csv(results / "summary" / "summary.tsv", sep="\t")


def test_the_server_got_exactly_the_scripted_calls_and_the_key_is_in_no_file(llm_run):
    results, server, _ = llm_run
    assert len(server.bodies) == 3, [prompt_text(b)[:200] for b in server.bodies]
    assert all(b["model"] == MODEL for b in server.bodies)
    assert not any(b["type"] == "image" for b in server.bodies[0]["messages"][0]["content"])  # prompt_images: false
    assert "picture(s) left out: agent.prompt_images is false" in prompt_text(server.bodies[0])
    assert (results / PLAN_FILE).is_file()  # the plan every agent stage read is among the files searched
    for path in results.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".log", ".md", ".tsv", ".html", ".yaml", ".txt"):
            assert "sk-test-local-server-key" not in path.read_text(encoding="utf-8", errors="replace"), path


def test_the_block_end_prompt_shows_every_node_and_names_the_best_as_the_root_source(llm_run):
    results, server, _ = llm_run
    table = summary(results)
    block1 = table[table["block"] == 1].set_index("node")
    best = int(block1["connectivity_R2"].idxmax())
    assert block1.loc[best, "slot"] == 2, "the tiny run's variant (slot 2) must beat the root for this test"
    text = prompt_text(server.bodies[-1])
    for node, row in block1.iterrows():  # every node it may choose from, R2 at full precision
        assert f"- node {node} (" in text and f"connectivity_R2={row['connectivity_R2']:.6g}" in text
    match = NEXT_ROOT.search(text)
    assert match and int(match.group(1)) == best
    lr_best = float(block1.loc[best, "training.learning_rate_W_start"])
    assert f"learning_rate_W_start={lr_best!r}" in match.group(2)
    # the model took old from that line and was accepted; the child starts from the best node's value
    record = decision(results, 2)
    slot1 = record["slots"][0]
    assert slot1["policy"] == "anthropic" and slot1["attempts"][-1]["accepted"]
    assert slot1["decision"]["config_mutation"]["old"] == pytest.approx(lr_best)
    assert slot1["next"]["derived_from"] == best
    assert slot1["next"]["mutation"]["old"] == pytest.approx(lr_best)


def test_a_529_and_a_refused_reply_are_in_decide_log_and_decision_json(llm_run):
    results, _, _ = llm_run
    log = decide_log(results, 2)
    assert "slot 1: anthropic call: HTTP 529 on HTTP attempt 1; tried again (attempt 2)" in log, log
    assert "slot 1: attempt 1 (anthropic) was refused: unusable output: the reply is not a valid decision JSON" in log
    assert "slot 1 asked again with the reason" in log
    slot1 = decision(results, 2)["slots"][0]
    assert slot1["attempts"][0]["call"]["http_retried"][0] == {"attempt": 1, "status": 529,
                                                               "request_id": "req_test_1"}
    kinds = [(e["event"], e.get("status"), e.get("asked_again")) for e in slot1["events"]]
    assert kinds == [("http_retry", 529, None), ("refused", None, True)], slot1["events"]
    assert decision(results, 2)["spend_cap"]["stopped"] is None
    assert decision(results, 2)["spend_cap"]["calls_made"] == 2


def test_every_spend_cap_refusal_is_stated_and_sets_stopped(llm_run):
    results, _, _ = llm_run
    for iteration, call in ((4, "slot 1"), (6, "whole round (slots 1, 2)")):
        record = decision(results, iteration)
        cap = record["spend_cap"]
        assert cap["calls_made"] == 0 and cap["stopped"], cap
        assert cap["stopped"].startswith("spent 1.610020 USD of agent.max_cost_usd = 2 USD")
        assert "was not made and the offline heuristic decides" in cap["stopped"]
        (refusal,) = cap["refusals"]
        assert refusal["call"] == call and refusal["spent_usd"] == pytest.approx(1.61002)
        assert refusal["spent_usd"] + refusal["bound_usd"] > CAP_USD >= refusal["spent_usd"]
        log = decide_log(results, iteration)
        assert f"spend cap: {cap['stopped']} (call: {call})" in log, log
        assert "slot 1: fallback: heuristic (fallback after: spend cap reached: spent 1.610020 USD" in log
        assert [e["event"] for e in record["round_events"]] == ["spend_cap"]
    assert "every slot of this round" in decision(results, 6)["spend_cap"]["stopped"]
    assert "slot 2: fallback: heuristic" in decide_log(results, 6)


def test_summary_tsv_says_how_each_node_was_decided(llm_run):
    results, _, _ = llm_run
    table = summary(results).set_index("node")
    assert table.loc[3, "policy"] == "anthropic"
    assert "HTTP 529 on HTTP attempt 1" in table.loc[3, "decide_events"]
    assert "slot 1 asked again with the reason" in table.loc[3, "decide_events"]
    assert table.loc[5, "policy"] == "heuristic"
    assert table.loc[5, "fallback_reason"].startswith("spend cap reached: spent 1.610020 USD")
    assert "spend cap: spent 1.610020 USD" in table.loc[5, "decide_events"]
    assert pd.isna(table.loc[4, "decide_events"]) and pd.isna(table.loc[6, "decide_events"])  # variants


def test_costs_tsv_has_every_call_with_its_prompt_parts(llm_run):
    results, _, _ = llm_run
    costs = pd.read_csv(results / "summary" / "costs.tsv", sep="\t", dtype=str)
    calls = costs[costs["iteration"] != "total"]
    assert list(calls["iteration"]) == ["2", "2"] and list(calls["accepted"]) == ["false", "true"]
    assert [float(c) for c in calls["cost_usd"]] == pytest.approx([0.01001, 1.60001])
    for part in ("system", "memory", "analyses", "code", "other"):
        assert (calls[f"est_tokens_{part}"].astype(int) > 0).all(), part
    assert (calls["est_tokens_images"].astype(int) == 0).all()  # prompt_images: false
    assert float(costs[costs["iteration"] == "total"]["cost_usd"].iloc[0]) == pytest.approx(1.61002)


def test_the_explorer_shows_the_real_start_value_and_no_next_node_for_the_last_round(llm_run):
    from pipeline.explorer import NO_NEXT_NODE, collect

    results, _, _ = llm_run
    data = collect(results, results / "summary")
    nodes = {n["id"]: n for n in data["nodes"]}
    best = int(decision(results, 2)["slots"][0]["next"]["derived_from"])
    child = decision(results, 2)["slots"][0]["next"]["mutation"]
    entry = nodes[1]["agent"]["log"]  # the decision after node 1 (slot 1) made node 3
    assert entry["next node"] == "3 (parent root)"
    assert entry["next change"].startswith(f"learning_rate_W_start: {child['old']:.4g} -> ")
    assert "nan" not in entry["next change"] and best == 2
    assert any("HTTP 529" in e for e in nodes[1]["agent"]["events"])
    for node in (5, 6):  # the last round's decisions create no node
        log = nodes[node]["agent"]["log"]
        assert log == {**log, "next node": NO_NEXT_NODE} and "next change" not in log
        assert any("spend cap: spent" in e for e in nodes[node]["agent"]["events"])
    html = (results / "summary" / "explorer.html").read_text(encoding="utf-8")
    assert NO_NEXT_NODE in html and "decide-events" in html
