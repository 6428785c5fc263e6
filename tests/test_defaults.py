"""Every agent option has one default, in agent.run_plan.AgentSettings; the workflow schema, the
agent CLI and the stage function's request are held to it (config/README.md is held to the schema
by test_config_docs.py)."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import yaml

from agent.decide_cli import build_parser, decide_request
from agent.decide import DecideRequest
from agent.run_plan import AgentSettings
from agent.smoke import DEFAULT_SMOKE_TIMEOUT_S

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


def test_the_schema_defaults_are_the_agent_settings():
    schema = yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))["properties"]["agent"]["properties"]
    assert {key: spec.get("default") for key, spec in schema.items()} == AgentSettings().model_dump()


def _explicit_request(tmp_path) -> DecideRequest:
    args = build_parser().parse_args(["--iteration", "1", "--node", "n.json", "--ucb", "u.txt",
                                      "--analysis-log", "a.log", "--config", "c.yaml", "--code", "l.py",
                                      "--n-blocks", "1", "--base-config", "e.yaml", "--results-dir", str(tmp_path),
                                      "--out-dir", str(tmp_path)])
    return decide_request(args)


def test_the_cli_and_the_request_default_to_the_agent_settings(tmp_path):
    """Options left out on the command line, and fields left out of a DecideRequest, take the settings'
    defaults (smoke_timeout None there: the smoke run's own default)."""
    request = _explicit_request(tmp_path)
    defaults = {f.name: f.default for f in fields(DecideRequest)}
    for name, value in AgentSettings().model_dump().items():
        expected = DEFAULT_SMOKE_TIMEOUT_S if name == "smoke_timeout" and value is None else value
        assert getattr(request, name) == expected, f"--{name.replace('_', '-')}"
        assert defaults[name] == expected, f"DecideRequest.{name}"
