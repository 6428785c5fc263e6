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
