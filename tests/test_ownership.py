"""One owner per file name, and a science package that knows nothing of the search.

Two scans of the source (python modules, the Snakefile and the .smk rule files; not the tests,
which spell the names they expect on purpose):

* every file name of an iteration folder appears as a string literal only in its owner, the
  module of the stage that writes it (docstrings and comments may mention it);
* ``neuralgraph/`` (the science) imports neither ``agent`` nor ``pipeline`` and spells none of
  the search's or the workflow's names (decision.json, memory.md, rounds, the secrets' hand-over).
"""
from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

from agent import layout, run_plan
from neuralgraph import analysis_log, config, run_files

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("neuralgraph", "agent", "pipeline")

#: file name -> the module(s) allowed to spell it, and the constant that must hold it there.
OWNERS = {
    run_files.MODEL_FILE: ("neuralgraph/run_files.py",),
    run_files.CHECKPOINT_FILE: ("neuralgraph/run_files.py",),
    run_files.TRAINING_RECORD_FILE: ("neuralgraph/run_files.py",),
    run_files.HEARTBEAT_FILE: ("neuralgraph/run_files.py",),
    run_files.METRICS_FILE: ("neuralgraph/run_files.py",),
    run_files.LOSS_PLOT: ("neuralgraph/run_files.py",),
    run_files.ROLLOUT_PLOT: ("neuralgraph/run_files.py",),
    run_files.EMBEDDINGS_PLOT: ("neuralgraph/run_files.py",),
    run_files.LIN_EDGE_PLOT: ("neuralgraph/run_files.py",),
    run_files.LIN_PHI_PLOT: ("neuralgraph/run_files.py",),
    # analyze's figure and the dataset folder's picture share a name (two folders, two writers)
    run_files.CONNECTIVITY_PLOT: ("neuralgraph/run_files.py", "neuralgraph/dataset.py"),
    analysis_log.ANALYSIS_LOG_FILE: ("neuralgraph/analysis_log.py",),
    config.CONFIG_FILE: ("neuralgraph/config.py",),
    layout.LOOP_FILE: ("neuralgraph/__init__.py",),  # the node's module carries the packaged module's name
    layout.PROPOSAL_FILE: ("agent/layout.py",),
    layout.DIFF_FILE: ("agent/layout.py",),
    layout.NODE_FILE: ("agent/layout.py",),
    layout.SCORES_FILE: ("agent/layout.py",),
    layout.DECISION_FILE: ("agent/layout.py",),
    layout.MEMORY_FILE: ("agent/layout.py",),
    layout.FULL_LOG_FILE: ("agent/layout.py",),
    layout.INSTRUCTIONS_FILE: ("agent/layout.py",),
    layout.PROGRESS_LOG_FILE: ("agent/layout.py",),
    run_plan.PLAN_FILE: ("agent/run_plan.py",),  # results/<exp>/plan.json, the workflow's contract
}


def _source_files() -> list[Path]:
    files = [p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))]
    return files + [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]


def _docstring_ids(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (module, class, function)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def python_literals(text: str) -> list[str]:
    """Every string literal of a Python source (f-string parts included), docstrings left out."""
    tree = ast.parse(text)
    docstrings = _docstring_ids(tree)
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


_TRIPLE = re.compile(r'("""|\'\'\')(.*?)\1', re.DOTALL)
_COMMENT = re.compile(r"#[^\n]*")
_QUOTED = re.compile(r'"([^"\n]*)"|\'([^\'\n]*)\'')


def smk_literals(text: str) -> list[str]:
    """The one-line string literals of a Snakemake file (docstrings and comments left out).

    Snakemake's grammar is not Python's, so the file is not parsed: triple-quoted texts (the
    rules' docstrings) and comments are dropped, then quoted strings are collected.
    """
    text = _COMMENT.sub("", _TRIPLE.sub("", text))
    return [a or b for a, b in _QUOTED.findall(text)]


@functools.cache
def literals_of(path: Path) -> list[str]:
    """A source file's literals, parsed once for every file name checked (the scan is the cost)."""
    text = path.read_text(encoding="utf-8")
    return python_literals(text) if path.suffix == ".py" else smk_literals(text)


#: Other files that share a name with an iteration folder's file: the workflow's own config.
NOT_ITERATION_FILES = ("config/config.yaml",)


def names_a_file(literal: str, name: str) -> bool:
    """The literal is the file name or a path ending in it (prose that mentions it is not)."""
    if any(literal.endswith(other) for other in NOT_ITERATION_FILES):
        return False
    return literal == name or literal.endswith("/" + name)


def test_the_literal_scanners_see_paths_and_skip_prose():
    assert names_a_file("/logs/train.log", "train.log") and names_a_file("model.pt", "model.pt")
    assert not names_a_file("run folder (model.pt, training.json)", "model.pt")
    assert not names_a_file("config/config.yaml", "config.yaml") and names_a_file("{d}/config.yaml", "config.yaml")
    py = '"""model.pt in a docstring"""\nA = "model.pt"\nB = f"{d}/metrics.json"\n# "node.json"\n'
    assert python_literals(py) == ["model.pt", "/metrics.json"]
    smk = 'rule a:\n    """memory.md"""\n    input:\n        f"{ITER}/memory.md",  # "decision.json"\n'
    assert smk_literals(smk) == ["{ITER}/memory.md"]


@pytest.mark.parametrize("name", sorted(OWNERS))
def test_each_iteration_file_name_is_spelled_only_by_its_owner(name):
    spelled = sorted(str(p.relative_to(REPO)) for p in _source_files()
                     if any(names_a_file(lit, name) for lit in literals_of(p)))
    assert spelled and set(spelled) <= set(OWNERS[name]), f"{name} spelled in {spelled}; owner: {OWNERS[name]}"


def test_no_iteration_folder_is_written_out():
    pattern = re.compile(rf"{layout.ITERATION_PREFIX}\d")
    spelled = sorted(str(p.relative_to(REPO)) for p in _source_files() if any(pattern.search(lit) for lit in literals_of(p)))
    assert spelled == [], f"an iter_NNN folder written out (use agent.layout.iteration_dir_name): {spelled}"


# --------------------------------------------------------------------------- the science package

#: What only the search or the workflow may know: the agent's files, rounds, the secrets' hand-over.
SEARCH_WORDS = (layout.DECISION_FILE, layout.MEMORY_FILE, layout.PROPOSAL_FILE, layout.NODE_FILE,
                layout.SCORES_FILE, layout.INSTRUCTIONS_FILE, layout.FULL_LOG_FILE, layout.ITERATION_PREFIX,
                "round_of", "round_end", "slots", "hand_over_secrets", "receive_secrets", "VAULT")


def _imported_modules(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("path", sorted((REPO / "neuralgraph").rglob("*.py")), ids=lambda p: p.name)
def test_the_science_package_knows_nothing_of_the_search(path):
    text = path.read_text(encoding="utf-8")
    roots = {name.split(".")[0] for name in _imported_modules(ast.parse(text))}
    assert not roots & {"agent", "pipeline"}, f"{path.name} imports {sorted(roots & {'agent', 'pipeline'})}"
    code = "\n".join(python_literals(text))
    names = {n.id for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Name)}
    names |= {n.name for n in ast.walk(ast.parse(text)) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    leaked = [w for w in SEARCH_WORDS if w in code or w in names]
    assert leaked == [], f"{path.name} knows of {leaked}"


def test_the_science_scan_would_catch_a_leak(tmp_path):
    """The check above fails on what it is meant to catch (no test that cannot fail)."""
    leaky = 'from agent import layout\nPATH = "decision.json"\n'
    roots = {name.split(".")[0] for name in _imported_modules(ast.parse(leaky))}
    assert "agent" in roots and any(w in "\n".join(python_literals(leaky)) for w in SEARCH_WORDS)
