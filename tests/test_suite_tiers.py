"""The suite's tiers hold: README's inner-loop command leaves out every workflow run, and a hang has a limit."""
from __future__ import annotations

from pathlib import Path

WORKFLOW_TESTS = Path(__file__).parent / "workflow"


def test_a_hang_fails_by_name_within_the_configured_limit(request):
    assert float(request.config.getini("timeout")) > 0


def test_every_workflow_test_is_in_the_slow_tier(request):
    """Only meaningful when the session collected tests/workflow (the full run CI makes)."""
    workflow_items = [it for it in request.session.items if WORKFLOW_TESTS in Path(it.fspath).parents]
    unmarked = [it.nodeid for it in workflow_items if it.get_closest_marker("slow") is None]
    assert unmarked == []


def test_the_fast_tier_keeps_the_unit_tests(request):
    """`-m "not slow"` must not empty the inner loop: this very test is in it."""
    assert request.node.get_closest_marker("slow") is None


def test_slow_files_are_handed_out_first_and_each_file_stays_together(request):
    """README's command gives pytest-xdist workers whole files in collection order: a file split
    in two builds its module fixtures twice, and a workflow file left to the end runs alone."""
    files = [item.path for item in request.session.items]
    runs = [path for k, path in enumerate(files) if k == 0 or files[k - 1] != path]
    assert len(runs) == len(set(runs)), "a file's tests are split"
    slow = [any(it.get_closest_marker("slow") for it in request.session.items if it.path == path) for path in runs]
    assert slow == sorted(slow, reverse=True), "a fast file comes before a slow one"
