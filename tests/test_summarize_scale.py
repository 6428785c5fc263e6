"""The shared colour scale of the exploration trees (PNG and HTML explorer) separates converged values."""
from __future__ import annotations

import pandas as pd
import pytest

from pipeline.summary import (
    NO_VALUE_COLOR,
    R2_NINES_MAX,
    STATE_DIVERGED,
    STATE_FAILED,
    STATE_OK,
    best_node_per_block,
    node_state,
    plot_exploration_tree,
    r2_color,
    r2_nines,
)


@pytest.mark.parametrize("r2, nines", [(0.9, 1.0), (0.99, 2.0), (0.999, 3.0), (0.0, 0.0), (-0.3, 0.0),
                                       (1.0, R2_NINES_MAX), (0.999999, R2_NINES_MAX), ("0.99", 2.0)])
def test_nines_count_the_nines_of_r2(r2, nines):
    assert r2_nines(r2) == pytest.approx(nines)


@pytest.mark.parametrize("missing", [None, float("nan"), "nan", "text"])
def test_missing_r2_has_no_nines_and_the_grey_colour(missing):
    assert r2_nines(missing) is None
    assert r2_color(missing) == NO_VALUE_COLOR


def test_colour_tells_099_from_0999():
    assert len({r2_color(0.99), r2_color(0.999), r2_color(0.9999)}) == 3
    assert r2_color(0.5) != r2_color(0.99)


@pytest.mark.parametrize("status, outcome, state", [("ok", "converged", STATE_OK), ("ok", "failed", STATE_FAILED),
                                                    ("diverged", "failed", STATE_DIVERGED), (None, None, STATE_OK)])
def test_node_state(status, outcome, state):
    assert node_state(status, outcome) == state


def _summary():
    return pd.DataFrame({
        "iteration": [1, 2, 3, 4, 5], "block": [1, 1, 1, 2, 2], "node": [1, 2, 3, 4, 5],
        "parent": [None, 1, 1, None, 4], "time_step": [1, 1, 1, 4, 4], "mutation": ["", "a", "b", "", "c"],
        "connectivity_R2": [0.9, 0.999, 0.999, None, 0.5], "status": ["ok", "ok", "ok", "diverged", "ok"],
        "outcome": ["converged", "converged", "converged", "failed", "partial"],
    })


def test_best_node_per_block_takes_the_highest_r2_and_the_lower_id_on_ties():
    assert best_node_per_block(_summary()) == {1: 2, 2: 5}


def test_tree_png_draws_with_failed_and_best_nodes(tmp_path):
    path = plot_exploration_tree(_summary(), tmp_path / "tree.png")
    assert path.stat().st_size > 10_000
