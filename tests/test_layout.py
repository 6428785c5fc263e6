"""agent.layout: the iteration folder's typed readers and the round arithmetic."""
from __future__ import annotations

import pytest

from agent import layout
from agent.layout import IterationFolder
from neuralgraph.io import atomic_write_json, atomic_write_text


def test_a_folder_is_found_by_iteration_and_knows_its_number(tmp_path):
    folder = IterationFolder.at(tmp_path, 7)
    assert folder.path == tmp_path / "iter_007" and folder.name == "iter_007" and folder.iteration == 7
    assert IterationFolder(tmp_path / "elsewhere").iteration is None
    assert folder.metrics_path == folder.path / layout.METRICS_FILE
    assert folder.config_path.name == layout.CONFIG_FILE and folder.loop_path.name == layout.LOOP_FILE


def test_typed_readers_read_what_the_writers_wrote(tmp_path):
    folder = IterationFolder.at(tmp_path, 1)
    atomic_write_json(folder.metrics_path, {"connectivity_R2": 0.5})
    atomic_write_json(folder.training_record_path, {"status": "ok"})
    atomic_write_json(folder.decision_path, {"iteration": 1, "slots": []})
    atomic_write_text(folder.loop_path, "def train_step(): pass\n")
    assert folder.metrics() == {"connectivity_R2": 0.5}
    assert folder.training_record()["status"] == "ok" and folder.decision()["slots"] == []
    assert folder.code().startswith("def train_step")


def test_a_missing_file_is_named_or_empty_when_optional(tmp_path):
    folder = IterationFolder.at(tmp_path, 2)
    with pytest.raises(FileNotFoundError, match="iter_002"):
        folder.metrics()
    assert folder.proposal(optional=True) == {} and folder.memory(optional=True) == ""


def test_a_json_file_that_is_not_an_object_is_refused_naming_it(tmp_path):
    folder = IterationFolder.at(tmp_path, 3)
    atomic_write_json(folder.node_path, [1, 2])
    with pytest.raises(ValueError, match="node.json: not a JSON object"):
        folder.node_record()


def test_rounds_and_blocks():
    assert layout.round_iterations(2, 3) == [4, 5, 6] and layout.round_end(4, 3) == 6
    assert layout.block_of(9, 8) == 2 and layout.iter_in_block_of(9, 8) == 1
    assert layout.is_last_round(5, 3, 6) and not layout.is_last_round(3, 3, 6)
