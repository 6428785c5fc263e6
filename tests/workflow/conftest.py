"""Fixtures of the workflow tests (helpers live in wf_helpers.py, a name no other test folder uses)."""
from __future__ import annotations

import shutil

import pytest

from wf_helpers import REPO, TinyRun, snakemake, write_workflow_config


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    """The tiny 2 x 2 pipeline, run once per session through the local profile."""
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
