"""The workflow follows the field's conventions: snakefmt-formatted (`snakemake --lint`: test_dry_run.py).

Both run from the project folder, as a contributor would before a commit; the line length is
pyproject.toml's [tool.snakefmt] (120, the same width as the Python code).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from wf_helpers import REPO

BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else (shutil.which(name) or name)


def test_snakefmt_check_is_clean():
    files = ["Snakefile", *sorted(str(p.relative_to(REPO)) for p in (REPO / "workflow" / "rules").glob("*.smk"))]
    done = subprocess.run([_tool("snakefmt"), "--check", *files], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, f"snakefmt --check would reformat (run `snakefmt Snakefile workflow/`):\n{done.stderr}"
    assert "would be left unchanged" in done.stderr

