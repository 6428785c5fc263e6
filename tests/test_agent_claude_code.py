"""The claude-code backend against a fake ``claude`` executable first on PATH.

The fake (a Python script written into tmp_path) records its arguments, working folder,
environment and stdin, then plays the reply its ``modes.json`` names for that call: a good
decision, a malformed one, an error exit, or a hang (with a child process, to check that the
whole process group goes).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from agent.cli import main
from agent.policies.base import (BackendConfigError, BackendMissingError, RetryableBackendError,
                                 decide_with_fallback, get_policy)
from agent.policies.claude_code_policy import ClaudeCodePolicy, extract_json_object
from agent.policies.heuristic import HeuristicPolicy
from agent_helpers import decide_args, decision_of, fake_analyze, iter_dir, ucb_args, write_experiment_config
from test_agent_anthropic import MODEL, decision_dict, make_context

FAKE = '''#!{python}
import json, os, subprocess, sys, time
here = os.path.dirname(os.path.abspath(__file__))
prompt = sys.stdin.read()
calls = os.path.join(here, "calls.jsonl")
with open(calls, "a") as fh:
    fh.write(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ), "prompt": prompt}}) + "\\n")
n = sum(1 for _ in open(calls))
modes = json.load(open(os.path.join(here, "modes.json")))
mode = modes[min(n, len(modes)) - 1]
if mode["kind"] == "hang":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    with open(os.path.join(here, "pids.json"), "w") as fh:
        json.dump([os.getpid(), child.pid], fh)
    time.sleep(300)
if mode["kind"] == "exit":
    sys.stderr.write(mode["stderr"])
    sys.exit(mode["code"])
print(json.dumps({{"type": "result", "subtype": "success", "is_error": False, "result": mode["result"],
                  "session_id": "sess-1", "num_turns": 1, "duration_ms": 1234, "total_cost_usd": 0.0123,
                  "usage": {{"input_tokens": 900, "output_tokens": 400, "cache_creation_input_tokens": 100,
                            "cache_read_input_tokens": 0}},
                  "modelUsage": {{"{model}": {{"inputTokens": 900}}}}}}))
'''


class FakeClaude:
    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "claude"
        self.path.write_text(FAKE.format(python=sys.executable, model=MODEL))
        self.path.chmod(0o755)

    def plays(self, *modes: dict) -> "FakeClaude":
        (self.folder / "modes.json").write_text(json.dumps(list(modes)))
        return self

    @property
    def calls(self) -> list[dict]:
        path = self.folder / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def good(parent=3) -> dict:
    return {"kind": "reply", "result": json.dumps(decision_dict(parent=parent))}


@pytest.fixture
def fake_claude(tmp_path, monkeypatch):
    fake = FakeClaude(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{fake.folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("WORKFLOW_ONLY_SETTING", "must-not-reach-claude")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-fake-key-for-the-cli-0123456789")
    return fake


def test_good_reply_is_accepted_with_its_call_record(tmp_path, fake_claude):
    fake_claude.plays(good())
    policy = get_policy("claude-code", {"model": MODEL, "seed": 0})
    decision = policy.decide(make_context(tmp_path))
    assert decision.parent == 3 and decision.config_mutation.parameter == "learning_rate_W_start"
    [call] = fake_claude.calls
    argv = call["argv"]
    assert argv[:4] == ["-p", "--output-format", "json", "--tools"] and argv[4] == ""  # no tools at all
    assert argv[argv.index("--max-turns") + 1] == "1" and argv[argv.index("--model") + 1] == MODEL
    assert "--strict-mcp-config" in argv and "--system-prompt" in argv
    # the same prompt as the SDK backend's, as text: instructions, state, then the schema
    prompt = call["prompt"]
    for marker in ("RULE-MARKER-42", "MEMORY-MARKER", "LOG-MARKER", "CONFIG-MARKER", "CODE-MARKER",
                   "Decide the node of iteration 4", '"config_mutation"'):
        assert marker in prompt, marker
    assert prompt.index("RULE-MARKER-42") < prompt.index("MEMORY-MARKER")
    assert "picture is not shown" in prompt
    # only what it needs from the environment, in an empty temporary folder
    env = call["env"]
    assert "WORKFLOW_ONLY_SETTING" not in env and env["PATH"] == os.environ["PATH"]
    assert env["DISABLE_AUTOUPDATER"] == "1" and env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "16000"
    assert env["ANTHROPIC_API_KEY"] == os.environ["ANTHROPIC_API_KEY"]
    assert Path(call["cwd"]) != Path.cwd() and not Path(call["cwd"]).exists()
    record = policy.last_call
    assert record["cost_usd"] == 0.0123 and record["model"] == MODEL and record["exit_code"] == 0
    assert (record["input_tokens"], record["output_tokens"], record["cache_creation_input_tokens"]) == (900, 400, 100)
    assert os.environ["ANTHROPIC_API_KEY"] not in json.dumps(record)


def test_a_fenced_reply_is_read_too(tmp_path, fake_claude):
    text = "Here is my decision:\n```json\n" + json.dumps(decision_dict()) + "\n```"
    fake_claude.plays({"kind": "reply", "result": text})
    assert ClaudeCodePolicy({}).decide(make_context(tmp_path)).parent == 3
    assert "--model" not in fake_claude.calls[0]["argv"]  # no model named: the command's own default
    assert extract_json_object('  {"a": 1}  ') == '{"a": 1}'


def test_malformed_reply_is_retried_once_then_the_heuristic_decides(tmp_path, fake_claude):
    fake_claude.plays({"kind": "reply", "result": "I think node 3 is best."},
                      {"kind": "reply", "result": json.dumps({"parent": 3})})
    ctx = make_context(tmp_path)
    outcome = decide_with_fallback(ClaudeCodePolicy({}), ctx, fallback=HeuristicPolicy({}))
    assert outcome.policy.startswith("heuristic (fallback after: unusable output: the reply is not a valid decision")
    assert [(a.policy, a.accepted) for a in outcome.attempts] == \
        [("claude-code", False), ("claude-code", False), ("heuristic", True)]
    assert "contains no JSON object" in outcome.attempts[0].reason
    assert outcome.attempts[0].call["reply_excerpt"] == "I think node 3 is best."
    assert outcome.attempts[1].call["cost_usd"] == 0.0123  # the tokens of a refused reply are accounted
    first, second = fake_claude.calls
    assert "REFUSED" not in first["prompt"]
    assert "REFUSED" in second["prompt"] and "contains no JSON object" in second["prompt"]


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has exited; only its parent's bookkeeping is left


def test_a_hung_command_is_killed_with_its_children_at_the_timeout(tmp_path, fake_claude):
    fake_claude.plays({"kind": "hang"})
    policy = ClaudeCodePolicy({"timeout_s": 2})
    started = time.monotonic()
    with pytest.raises(RetryableBackendError, match=r"'claude' gave no answer within timeout_s = 2 s; its process group was killed"):
        policy.decide(make_context(tmp_path))
    elapsed = time.monotonic() - started
    assert 2.0 <= elapsed < 4.0, elapsed  # about the timeout, not the hang's 300 s
    pids = json.loads((fake_claude.folder / "pids.json").read_text())
    deadline = time.monotonic() + 2
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_running(pid) for pid in pids), pids
    assert policy.last_call["error"] == "timeout"


@pytest.mark.parametrize("stderr, error, words", [
    ("Invalid API key · Please run /login", BackendConfigError, "not logged in"),
    ("API Error: 529 Overloaded", RetryableBackendError, "try again later"),
    ("error: unknown option '--strict-mcp-config'", BackendConfigError, "does not accept the flags"),
    ("segmentation fault", BackendConfigError, "exited 3"),
])
def test_failed_runs_are_classified_from_the_commands_words(tmp_path, fake_claude, stderr, error, words):
    fake_claude.plays({"kind": "exit", "code": 3, "stderr": stderr})
    with pytest.raises(error, match=words):
        ClaudeCodePolicy({}).decide(make_context(tmp_path))


def test_missing_command_is_refused_with_its_name(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no claude here
    with pytest.raises(BackendMissingError, match="the command 'claude' was not found on PATH"):
        get_policy("claude-code", {})
    with pytest.raises(BackendMissingError, match="the command 'claude-nightly' was not found"):
        ClaudeCodePolicy({"command": "claude-nightly"})
    monkeypatch.setenv("PATH", str(FakeClaude(tmp_path / "bin").folder))
    with pytest.raises(BackendConfigError, match="option timeout_s = 'soon': must be a float"):
        ClaudeCodePolicy({"timeout_s": "soon"})


def test_missing_command_through_the_cli_exits_2_unless_offline(tmp_path, monkeypatch, capsys):
    exp = write_experiment_config(tmp_path / "exp.yaml")
    assert main(["init", "--config", str(exp), "--out-dir", str(iter_dir(tmp_path, 1))]) == 0
    fake_analyze(iter_dir(tmp_path, 1))
    assert main(ucb_args(tmp_path, 1)) == 0
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    args = decide_args(tmp_path, exp, 1, 3, 2, backend="claude-code")
    assert main(args) == 2
    assert "the command 'claude' was not found on PATH" in capsys.readouterr().err
    assert not (iter_dir(tmp_path, 1) / "decision.json").exists()
    assert main(args + ["--fallback", "offline"]) == 0
    record = decision_of(iter_dir(tmp_path, 1))
    assert record["policy"].startswith("heuristic (fallback after: backend unavailable: claude-code backend: "
                                       "the command 'claude' was not found")


def test_the_cost_bound_covers_the_prompt_and_assumes_the_dearest_model_when_none_is_named(tmp_path, fake_claude):
    ctx = make_context(tmp_path)
    named = ClaudeCodePolicy({"model": "claude-haiku-4-5"}).estimate_cost_usd(ctx)
    unnamed = ClaudeCodePolicy({}).estimate_cost_usd(ctx)
    assert 0 < named < unnamed
    assert ClaudeCodePolicy({"model": "claude-future-7"}).estimate_cost_usd(ctx) is None


def test_the_spend_cap_applies_to_the_command_too(tmp_path, fake_claude):
    from agent.policies.base import SpendCapReached
    from agent.policies.spend_cap import SpendCap

    fake_claude.plays(good())
    ctx = make_context(tmp_path)
    bound = ClaudeCodePolicy({"model": MODEL}).estimate_cost_usd(ctx)
    with pytest.raises(SpendCapReached, match="was not made"):
        SpendCap(ClaudeCodePolicy({"model": MODEL}), bound - 1e-6, 0.0).decide(ctx)
    assert fake_claude.calls == []
    cap = SpendCap(ClaudeCodePolicy({"model": MODEL}), bound, 0.0)
    assert cap.decide(ctx).parent == 3 and len(fake_claude.calls) == 1
    assert cap.record()["spent_this_decision_usd"] == 0.0123  # the command's own total_cost_usd
