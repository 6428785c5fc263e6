"""A bad config.yaml (or experiment file) is refused before any job runs, naming the field."""
from __future__ import annotations

import pytest

from wf_helpers import snakemake, write_workflow_config


def _refused(workdir, *args):
    result = snakemake(workdir, *args)
    assert result.returncode != 0, f"accepted a bad config:\n{result.output[-3000:]}"
    assert "configuration refused, no job was run" in result.output, result.output[-3000:]
    assert not (workdir / "results").exists(), "a refused config must not leave results behind"
    assert "Job stats" not in result.output and "rule " not in result.stdout
    return result.output


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"schedule": [1, 3]}, "schedule[1] = 3: must be one of 1, 4, 16, 32, 64"),
        ({"schedule": "sometimes"}, "schedule = 'sometimes': must be a list of time_steps"),
        ({"n_blocks": 0}, "n_blocks = 0: 0 is less than the minimum of 1"),
        ({"n_blocks": 3}, "n_blocks = 3: the schedule lists only 2 time_step(s)"),
        ({"schedule": "agent"}, "n_blocks: required when schedule is 'agent'"),
        ({"agent": {"backend": "gpt"}}, "agent.backend = 'gpt': must be one of heuristic, anthropic, replay"),
        ({"agent": {"fallback": "retry"}}, "agent.fallback = 'retry': must be one of offline, fail"),
        ({"agent": {"backend": "replay"}}, "agent.replay_from: required when agent.backend is 'replay'"),
        ({"n_iter_blok": 2}, "n_iter_blok: unknown key; allowed keys: agent, experiment, n_blocks"),
        ({"experiment": "missing.yaml"}, "missing.yaml: config file not found"),
    ],
)
def test_bad_workflow_config_is_refused_naming_the_field(tmp_path, overrides, expected):
    write_workflow_config(tmp_path, **overrides)
    output = _refused(tmp_path)
    assert expected in output


def test_bad_experiment_field_is_refused_naming_file_and_field(tmp_path):
    experiment = tmp_path / "bad_experiment.yaml"
    experiment.write_text("training:\n  time_step: 3\n", encoding="utf-8")
    write_workflow_config(tmp_path, experiment=str(experiment))
    assert f"{experiment}: training.time_step = 3: must be one of 1, 4, 16, 32, 64" in _refused(tmp_path)
    experiment.write_text("training:\n  learning_rate_W_start: -1\n", encoding="utf-8")
    assert f"{experiment}: training.learning_rate_W_start = -1: must be > 0.0" in _refused(tmp_path)


def test_command_line_override_is_checked_too(tmp_path):
    write_workflow_config(tmp_path)
    output = _refused(tmp_path, "--config", "schedule=[1,5]")
    assert "(with --config overrides): schedule[1] = 5: must be one of 1, 4, 16, 32, 64" in output


def test_good_config_after_a_bad_one_runs_nothing_twice(tmp_path):
    """A refused config loses nothing: fixing it gives the normal dry run."""
    write_workflow_config(tmp_path, schedule=[1, 3])
    _refused(tmp_path, "--dry-run")
    write_workflow_config(tmp_path)
    assert snakemake(tmp_path, "--dry-run").check().returncode == 0
