"""Fixtures of the workflow tests (helpers live in wf_helpers.py, a name no other test folder uses)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from wf_helpers import REPO, TinyRun, snakemake, write_workflow_config


def pytest_collection_modifyitems(items):
    """Every test in this folder starts Snakemake (or reads a run it started): the slow tier.

    ``pytest -m "not slow"`` (README: the inner loop) leaves them out; the README's full command
    runs them.
    """
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    """The tiny 2 x 2 pipeline, run once per pytest-xdist worker that needs it, through the local profile."""
    workdir = tmp_path_factory.mktemp("tiny_run")
    write_workflow_config(workdir)
    result = snakemake(workdir, "--profile", str(REPO / "profiles" / "local"), cores=None).check()
    return TinyRun(workdir, result.seconds, result)


@pytest.fixture
def tiny_run_copy(tiny_run, tmp_path) -> TinyRun:
    """A private copy of the tiny run (files, mtimes and Snakemake metadata) for tests that change it."""
    workdir = tmp_path / "tiny_copy"
    shutil.copytree(tiny_run.workdir, workdir, symlinks=True)
    return TinyRun(workdir, 0.0, tiny_run.result)
