"""Experiment configs: the shipped files, and every bad config refused with a clear message.

A clear message names the file, the dotted field, the offending value and what is allowed.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tiny_configs import REPO, tiny_config_dict
from neuralgraph.config import (
    ALLOWED_TIME_STEPS,
    ConfigError,
    ExperimentConfig,
    section_model,
    describe_schema,
    dump_config,
    load_config,
    parse_assignments,
    with_updates,
)

SEED_CONFIG = REPO / "config" / "experiments" / "seed_recurrent.yaml"
DEMO_CONFIG = REPO / "config" / "experiments" / "demo.yaml"


def _write(path: Path, data) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def _refused(tmp_path: Path, name: str = "bad.yaml", **overrides) -> str:
    """Load tiny_config_dict(**overrides) from a file; return the ConfigError message."""
    path = _write(tmp_path / name, tiny_config_dict(**overrides))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


# ----------------------------------------------------------------- shipped configs


def test_seed_config_is_the_full_scale_recurrent_experiment():
    cfg = load_config(SEED_CONFIG)
    sim, tr = cfg.simulation, cfg.training
    assert (sim.n_neurons, sim.n_neuron_types, sim.n_frames) == (1000, 4, 100_000)
    assert (sim.connectivity_type, sim.signal_model, sim.delta_t, sim.seed) == ("Lorentz", "PDE_N2", 0.01, 42)
    assert sim.type_params() == [[10, 1, 1], [10, 2, 1], [10, 1, 2], [10, 2, 2]]
    assert (tr.batch_size, tr.n_epochs, tr.data_augmentation_loop) == (8, 1, 15)
    assert (tr.learning_rate_W_start, tr.learning_rate_start, tr.learning_rate_embedding_start) == (1e-3, 5e-4, 7.5e-4)
    assert tr.recurrent_training and tr.time_step in ALLOWED_TIME_STEPS
    assert 0 <= tr.coeff_W_L1 <= 1e-5
    assert (cfg.graph_model.embedding_dim, cfg.graph_model.hidden_dim, cfg.graph_model.n_layers) == (2, 64, 3)
    assert cfg.claude.model_dump() == {"n_epochs": 1, "data_augmentation_loop": 15, "n_iter_block": 8, "ucb_c": 1.414,
                                      "fixed_step_budget": False, "lever_below": None}


def test_demo_config_is_a_small_network_that_trains_in_minutes():
    cfg = load_config(DEMO_CONFIG)
    tr = cfg.training
    assert cfg.simulation.n_neurons <= 200 and cfg.simulation.n_frames <= 50_000
    steps_per_epoch = int(int(cfg.simulation.n_frames * tr.data_augmentation_loop / tr.batch_size) * 0.2)
    # about 13 ms per step at N = 1000; N = 100 is cheaper still
    assert 1000 <= steps_per_epoch * tr.n_epochs <= 10_000
    assert cfg.simulation.n_frames - tr.held_out_frames > cfg.analysis.rollout_frames


def test_every_field_is_documented_with_default_and_allowed_values():
    schema = describe_schema()
    sections = {name: section_model(f.annotation) for name, f in ExperimentConfig.model_fields.items() if name != "description"}
    for section_name, section in sections.items():
        for name, field in section.model_fields.items():
            assert field.description, f"{section_name}.{name} has no description"
            assert f"| {section_name}.{name} | " in schema, f"{section_name}.{name} missing from describe_schema()"
    time_step_row = next(row for row in schema.splitlines() if "| training.time_step |" in row)
    assert "1, 4, 16, 32, 64" in time_step_row
    batch_row = next(row for row in schema.splitlines() if "| training.batch_size |" in row)
    assert batch_row.startswith("| training.batch_size | int | 8 | >= 1, <= 4096 |")
    target_row = next(row for row in schema.splitlines() if "| training.training_time_target_min |" in row)
    assert "| float or null | None | > 0.0, <= 10000.0 |" in target_row


def test_dumped_config_loads_back_identical(tmp_path):
    cfg = load_config(SEED_CONFIG)
    again = load_config(dump_config(cfg, tmp_path / "dumped.yaml"))
    assert again == cfg and again.simulation_hash() == cfg.simulation_hash()


def test_yaml_scientific_notation_without_dot_is_read_as_a_number(tmp_path):
    # PyYAML reads `1e-3` (no dot) as the string "1e-3": a user writing it must still get 0.001
    text = SEED_CONFIG.read_text().replace("learning_rate_W_start: 1.0e-3", "learning_rate_W_start: 1e-3")
    assert "learning_rate_W_start: 1e-3" in text
    assert load_config(_write(tmp_path / "sci.yaml", text)).training.learning_rate_W_start == 1e-3


# ----------------------------------------------------------------- bad configs


def test_unknown_key_is_refused_with_the_allowed_keys(tmp_path):
    path = _write(tmp_path / "typo.yaml", {**tiny_config_dict(), "training": {"learning_rate": 0.1}})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "typo.yaml" in message and "training.learning_rate: unknown key in training" in message
    assert "allowed keys:" in message and "learning_rate_W_start" in message and "time_step" in message


def test_unknown_section_and_keys_outside_the_claude_section_are_refused(tmp_path):
    data = {**tiny_config_dict(), "trainer": {}}
    with pytest.raises(ConfigError, match=r"trainer: unknown key in top level; allowed keys: analysis, claude"):
        load_config(_write(tmp_path / "section.yaml", data))
    message = _refused(tmp_path, **{"claude.time_step": 4})
    assert "claude.time_step: unknown key in claude; allowed keys: data_augmentation_loop, fixed_step_budget, lever_below, n_epochs, n_iter_block, ucb_c" in message


@pytest.mark.parametrize("field, value, expected", [
    ("training.batch_size", "eight", "training.batch_size = 'eight': Input should be a valid integer"),
    ("training.batch_size", True, "training.batch_size = True: wrong type, must be a number, not true/false"),
    ("training.batch_size", 8.5, "training.batch_size = 8.5: Input should be a valid integer"),
    ("training.learning_rate_W_start", "fast", "training.learning_rate_W_start = 'fast': Input should be a valid number"),
    ("training.recurrent_training", "maybe", "training.recurrent_training = 'maybe': Input should be a valid boolean"),
    ("simulation.n_neurons", [24], "simulation.n_neurons = [24]: Input should be a valid integer"),
])
def test_wrong_type_is_refused_naming_file_field_and_value(tmp_path, field, value, expected):
    message = _refused(tmp_path, "wrong_type.yaml", **{field: value})
    assert message.startswith(str(tmp_path / "wrong_type.yaml") + ": ")
    assert expected in message


@pytest.mark.parametrize("field, value, expected", [
    ("training.learning_rate_W_start", 2.0, "= 2.0: must be <= 1.0 (allowed: > 0.0 and <= 1.0)"),
    ("training.batch_size", 0, "= 0: must be >= 1 (allowed: >= 1 and <= 4096)"),
    ("simulation.delta_t", -0.01, "= -0.01: must be > 0.0 (allowed: > 0.0 and <= 1.0)"),
    ("claude.ucb_c", 5.0, "= 5.0: must be <= 3.0 (allowed: >= 0.5 and <= 3.0)"),
    ("simulation.connectivity_type", "lorentz", "= 'lorentz': must be one of 'Lorentz', 'Gaussian' or 'low_rank'"),
])
def test_out_of_range_is_refused_with_the_allowed_range(tmp_path, field, value, expected):
    message = _refused(tmp_path, "range.yaml", **{field: value})
    assert "range.yaml" in message and f"{field} {expected}" in message


@pytest.mark.parametrize("time_step", [0, 2, 3, 8, 128])
def test_time_step_outside_the_allowed_set_is_refused(tmp_path, time_step):
    message = _refused(tmp_path, "ts.yaml", **{"training.time_step": time_step})
    assert "ts.yaml" in message and f"training.time_step = {time_step}: must be one of 1, 4, 16, 32, 64" in message


@pytest.mark.parametrize("time_step", ALLOWED_TIME_STEPS)
def test_every_allowed_time_step_is_accepted(tmp_path, time_step):
    path = _write(tmp_path / "ok.yaml", tiny_config_dict(**{"training.time_step": time_step}))
    assert load_config(path).training.time_step == time_step


def test_n_neurons_not_divisible_by_types_is_refused(tmp_path):
    message = _refused(tmp_path, "div.yaml", **{"simulation.n_neurons": 25})
    assert "div.yaml" in message
    assert "simulation.n_neurons = 25: must be divisible by n_neuron_types = 4" in message


def test_batch_size_and_simulation_changes_against_the_base_config_are_refused(tmp_path):
    base = load_config(_write(tmp_path / "base.yaml", tiny_config_dict()))
    child = _write(tmp_path / "iter_002.yaml", tiny_config_dict(**{"training.batch_size": 16}))
    with pytest.raises(ConfigError) as info:
        load_config(child, base=base)
    assert "iter_002.yaml: training.batch_size changed from 8 to 16: batch_size is fixed for the whole experiment" in str(info.value)
    resimulated = _write(tmp_path / "iter_003.yaml", tiny_config_dict(**{"simulation.seed": 8}))
    with pytest.raises(ConfigError, match=r"iter_003\.yaml: simulation\.seed changed from 7 to 8"):
        load_config(resimulated, base=base)
    # a change of what the agent may explore is fine
    tuned = _write(tmp_path / "iter_004.yaml", tiny_config_dict(**{"training.learning_rate_W_start": 2e-3}))
    assert load_config(tuned, base=base).training.learning_rate_W_start == 2e-3


def test_unreadable_files_are_refused_naming_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.yaml: config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        load_config(_write(tmp_path / "broken.yaml", "simulation: {n_neurons: [1, 2\n"))
    with pytest.raises(ConfigError, match=r"list\.yaml: top level must be a mapping of sections, got list"):
        load_config(_write(tmp_path / "list.yaml", "- 1\n- 2\n"))


def test_check_config_cli_exits_nonzero_with_the_message(tmp_path):
    bad = _write(tmp_path / "cli_bad.yaml", tiny_config_dict(**{"training.time_step": 5}))
    result = subprocess.run([sys.executable, "-m", "neuralgraph", "check-config", str(bad)],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "cli_bad.yaml: training.time_step = 5: must be one of 1, 4, 16, 32, 64" in result.stderr
    ok = subprocess.run([sys.executable, "-m", "neuralgraph", "check-config", str(DEMO_CONFIG)],
                        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "ok" in ok.stdout


def test_lowrank_benchmark_is_the_references_hard_case_with_the_demos_training():
    bench = load_config(REPO / "config" / "experiments" / "bench_lowrank.yaml")
    demo = load_config(DEMO_CONFIG)
    sim = bench.simulation
    assert (sim.connectivity_type, sim.connectivity_rank, sim.n_neurons, sim.n_frames) == ("low_rank", 20, 100, 10_000)
    assert sim.type_params() == demo.simulation.type_params() and sim.n_neuron_types == demo.simulation.n_neuron_types
    assert bench.training == demo.training and bench.claude == demo.claude and bench.graph_model == demo.graph_model


def test_field_assignments_are_read_one_way_numbers_lists_and_undotted_training_fields():
    """The benchmarks' --set FIELD=VALUE: '3e-3' is a number (YAML alone keeps it a string)."""
    updates = parse_assignments(["training.learning_rate_W_start=3e-3", "coeff_W_L1=0", "seed = 4",
                                 "graph_model.edge_input=u_a", "simulation.neuron_type_params=[[7, 0, 1]]",
                                 "training.recurrent_training=true"])
    assert updates == {"training.learning_rate_W_start": 0.003, "training.coeff_W_L1": 0, "training.seed": 4,
                       "graph_model.edge_input": "u_a", "simulation.neuron_type_params": [[7, 0, 1]],
                       "training.recurrent_training": True}
    assert type(updates["training.learning_rate_W_start"]) is float and type(updates["training.seed"]) is int
    with pytest.raises(ConfigError, match=r"--set 'seed': must be FIELD=VALUE"):
        parse_assignments(["seed"])
    with pytest.raises(ConfigError, match=r"--set: training.no_such_field"):
        with_updates(load_config(DEMO_CONFIG), parse_assignments(["no_such_field=1"]), source="--set")
