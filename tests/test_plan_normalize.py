"""pipeline.plan.normalize_config: the command-line spellings of the schedule."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.plan import WorkflowConfigError, check_against_schema, normalize_config

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


@pytest.mark.parametrize(
    "given, expected",
    [
        (1, [1]),  # --config schedule=1: YAML reads an integer
        (64, [64]),
        ("1,4,16", [1, 4, 16]),  # --config schedule=1,4,16
        (["1", "4"], [1, 4]),  # --config 'schedule=[1,4]': Snakemake passes strings
        ([1, 4], [1, 4]),
        ("agent", "agent"),
        (3, 3),  # not a time_step: left for the schema to refuse, naming the field
        (True, True),
        ("sometimes", "sometimes"),
    ],
)
def test_schedule_spellings(given, expected):
    assert normalize_config({"schedule": given})["schedule"] == expected


def test_refused_lone_value_is_named_by_the_schema():
    config = normalize_config({"experiment": "x.yaml", "schedule": 3})
    with pytest.raises(WorkflowConfigError) as refused:
        check_against_schema(config, SCHEMA, source="cfg")
    message = str(refused.value)
    assert message.startswith("cfg: schedule = 3: must be a list of time_steps"), message
    assert "1, 4, 16, 32, 64" in message and '"agent"' in message


@pytest.mark.parametrize(
    "given, expected",
    [
        # --config 'agent={seed: 3, max_cost_usd: 5}': Snakemake hands every value over as a string.
        ({"seed": "3"}, {"seed": 3}),
        ({"max_cost_usd": "5"}, {"max_cost_usd": 5}),
        ({"max_cost_usd": "2.5e-1"}, {"max_cost_usd": 0.25}),
        ({"max_cost_usd": "1e-3"}, {"max_cost_usd": 0.001}),
        ({"max_cost_usd": "null", "smoke_timeout": "30"}, {"max_cost_usd": None, "smoke_timeout": 30}),
        ({"model": "null", "replay_from": "results/demo"}, {"model": None, "replay_from": "results/demo"}),
        ({"model": "12345"}, {"model": "12345"}),  # a string key stays a string
        ({"backend": "random"}, {"backend": "random"}),
        ({"seed": "2.5"}, {"seed": "2.5"}),  # not an integer: left for the schema to refuse
        ({"seed": "true"}, {"seed": "true"}),
        ({"seed": "abc"}, {"seed": "abc"}),
    ],
)
def test_agent_values_from_the_command_line_are_read_as_their_schema_type(given, expected):
    assert normalize_config({"agent": dict(given)}, SCHEMA)["agent"] == expected


def test_agent_value_of_the_wrong_kind_is_still_refused_naming_the_field():
    config = normalize_config({"experiment": "x.yaml", "schedule": [1], "agent": {"seed": "abc"}}, SCHEMA)
    with pytest.raises(WorkflowConfigError) as refused:
        check_against_schema(config, SCHEMA, source="cfg")
    assert "agent.seed = 'abc'" in str(refused.value)
