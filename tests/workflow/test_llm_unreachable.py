"""An unreachable LLM API: agent-decide fails with the retryable exit 75, or falls back to the
offline policy when configured to, and its log says so. Nothing already computed is lost."""
from __future__ import annotations

import json
import socket

import pytest

from agent.records import slot_views
from wf_helpers import snakemake, write_workflow_config

pytestmark = pytest.mark.slow

TARGET = "results/llm/iter_001/decision.json"


def _closed_port() -> int:
    """A local port nobody listens on: connections are refused at once (no network needed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_api_is_retryable_then_falls_back_when_configured(tmp_path):
    env = {"ANTHROPIC_API_KEY": "sk-test-not-a-key", "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{_closed_port()}"}
    agent = {"backend": "anthropic", "model": "claude-test-model", "fallback": "fail"}
    write_workflow_config(tmp_path, name="llm", schedule=[1], n_iter_block=2, agent=agent)

    failed = snakemake(tmp_path, TARGET, env=env, timeout=600)
    assert failed.returncode != 0, "decide must fail when the API is unreachable and fallback is fail"
    assert "returned non-zero exit status 75" in failed.output, failed.output[-3000:]
    run_dir = tmp_path / "results" / "llm" / "iter_001"
    decide_log = (run_dir / "logs" / "decide.log").read_text(encoding="utf-8")
    assert "cannot reach the API" in decide_log, decide_log
    assert "fallback offline" in decide_log, "the log must say how to let the heuristic decide"
    metrics_mtime = (run_dir / "metrics.json").stat().st_mtime_ns
    assert not (run_dir / "decision.json").exists()

    write_workflow_config(tmp_path, name="llm", schedule=[1], n_iter_block=2, agent={**agent, "fallback": "offline"})
    snakemake(tmp_path, TARGET, env=env, timeout=600).check()
    assert (run_dir / "metrics.json").stat().st_mtime_ns == metrics_mtime, "training/analysis were redone"
    decision = slot_views(json.loads((run_dir / "decision.json").read_text(encoding="utf-8")))[0]
    decide_log = (run_dir / "logs" / "decide.log").read_text(encoding="utf-8")
    assert decision["policy"].startswith("heuristic (fallback after: backend unavailable"), decision["policy"]
    assert "fallback" in decide_log and "cannot reach the API" in decide_log, decide_log
    assert (tmp_path / "results" / "llm" / "iter_002" / "config.yaml").is_file()
