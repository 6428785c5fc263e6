"""Safety checks for the agent's code modifications of the editable training module.

The agent may rewrite ONE function of ``neuralgraph/train_loop.py`` per iteration (the names
listed in the module's ``EDITABLE_FUNCTIONS``). A proposed function goes through two gates
before it becomes the child's ``train_loop.py``:

1. static checks (:func:`check_code_modification`): the function is editable, the new source
   parses and defines exactly that one function with the very same signature, imports only
   allowed modules, and touches none of the escape hatches listed below; the resulting module
   compiles;
2. a smoke run (:func:`smoke_run`): ``python -m neuralgraph train`` on a tiny cached dataset in
   a subprocess with a wall-clock timeout. An endless loop, a crash or a non-finite loss is
   refused here, before an expensive GPU job is spent on it.

Allowed imports: :data:`BASE_ALLOWED_MODULES` (torch, its companions, math, numpy, neuralgraph) plus every
top-level module the parent training module itself imports, minus :data:`FORBIDDEN_MODULES`,
which are never allowed (even when the parent module uses them for its own plumbing).

These checks catch accidents and the obvious ways out of the training loop; they are not a
sandbox against a determined adversary. The smoke run is a separate process with a timeout so
that whatever slips through cannot hang or crash the agent itself.
"""
from __future__ import annotations

import ast
import difflib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from neuralgraph.io import atomic_write_json, atomic_write_text, read_json

#: Modules a new function may always import (top-level package names).
#: ``neuralgraph`` is there because the training module's own contract allows its modules.
BASE_ALLOWED_MODULES: frozenset[str] = frozenset({"torch", "torch_geometric", "torchdiffeq", "math", "numpy", "neuralgraph"})

#: Modules that are never allowed in an edited function: files, processes, network,
#: interpreter internals and dynamic imports.
FORBIDDEN_MODULES: frozenset[str] = frozenset({
    "os", "sys", "subprocess", "socket", "shutil", "importlib", "pathlib", "builtins", "ctypes",
    "multiprocessing", "threading", "signal", "pickle", "marshal", "tempfile", "glob", "io",
    "http", "urllib", "requests", "httpx", "httpx2", "ftplib", "smtplib", "inspect", "runpy",
    "code", "codeop", "gc", "resource", "pty", "fcntl", "mmap", "webbrowser", "asyncio",
})

#: Module names refused also as plain names or attributes (``os.system``, ``torch.os``): the
#: unmistakable ones only, so an ordinary variable called ``signal`` or ``code`` stays legal.
FORBIDDEN_MODULE_NAMES: frozenset[str] = frozenset({
    "os", "sys", "subprocess", "socket", "shutil", "importlib", "pathlib", "builtins", "ctypes",
})

#: Attributes that reach files, processes or native code through torch / numpy
#: (``torch.load`` unpickles, ``torch.utils.cpp_extension.load_inline`` compiles C++...).
#: Checkpoints are the engine's job, so the training step never needs them.
FORBIDDEN_ATTRIBUTES: frozenset[str] = frozenset({
    "system", "popen", "spawn", "fork", "cpp_extension", "load_inline", "load_library", "hub",
    "ctypeslib", "save", "load", "savetxt", "loadtxt", "fromfile", "tofile", "memmap", "open_memmap",
})

#: Built-in callables that run, load or look up arbitrary code or files, or wait for a human.
FORBIDDEN_BUILTINS: frozenset[str] = frozenset({
    "exec", "eval", "compile", "open", "__import__", "globals", "locals", "vars", "breakpoint",
    "input", "exit", "quit", "help", "memoryview", "delattr",
})

#: Attribute helpers whose name argument must be a plain, non-dunder string literal.
ATTRIBUTE_HELPERS: frozenset[str] = frozenset({"getattr", "setattr", "hasattr"})

DEFAULT_SMOKE_TIMEOUT_S = 120.0
DEFAULT_SMOKE_MAX_STEPS = 5
STDERR_TAIL_LINES = 15
_FENCE = re.compile(r"^\s*```[a-zA-Z0-9_+-]*\s*\n(.*?)\n\s*```\s*$", re.DOTALL)


class CodeEditError(ValueError):
    """A code modification was refused. ``reason`` is the message shown to the agent/user;
    ``kind`` names the gate that refused it (e.g. ``signature``, ``smoke-timeout``)."""

    def __init__(self, kind: str, reason: str):
        super().__init__(f"code modification refused ({kind}): {reason}")
        self.kind = kind
        self.reason = reason


# --------------------------------------------------------------------------- static checks


def editable_functions(module_source: str) -> tuple[str, ...]:
    """The module's ``EDITABLE_FUNCTIONS`` tuple, read with ``ast`` (the module is not imported)."""
    tree = _parse(module_source, "parent module")
    for node in tree.body:
        if "EDITABLE_FUNCTIONS" in _assigned_names(node) and getattr(node, "value", None) is not None:
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                break
            if isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value):
                return tuple(value)
            break
    raise CodeEditError("editable", "the training module defines no literal EDITABLE_FUNCTIONS tuple of function names")


def _assigned_names(node: ast.stmt) -> set[str]:
    """Plain names a top-level assignment binds (``X = ...`` or ``X: T = ...``)."""
    if isinstance(node, ast.Assign):
        return {t.id for t in node.targets if isinstance(t, ast.Name)}
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return {node.target.id}
    return set()


def _parse(source: str, what: str) -> ast.Module:
    try:
        return ast.parse(source)
    except SyntaxError as exc:
        where = f"line {exc.lineno}" + (f", column {exc.offset}" if exc.offset else "")
        text = f": {exc.text.strip()}" if exc.text else ""
        raise CodeEditError("syntax", f"{what} is not valid Python ({exc.msg} at {where}{text})") from None


def normalize_function_source(new_source: str) -> str:
    """Strip a surrounding Markdown code fence and common indentation (LLM replies carry both)."""
    fenced = _FENCE.match(new_source)
    text = fenced.group(1) if fenced else new_source
    return textwrap.dedent(text).strip("\n") + "\n"


def _top_level_function(tree: ast.Module, name: str) -> Optional[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return node
    return None


def _describe_statement(node: ast.stmt) -> str:
    name = getattr(node, "name", None)
    kind = {ast.FunctionDef: "def", ast.AsyncFunctionDef: "async def", ast.ClassDef: "class"}.get(type(node))
    return f"{kind} {name} (line {node.lineno})" if kind else f"{type(node).__name__.lower()} statement (line {node.lineno})"


def _single_function(tree: ast.Module, function_name: str) -> ast.FunctionDef | ast.AsyncFunctionDef:
    """The one function the new source must consist of (nothing else at top level)."""
    if len(tree.body) != 1 or not isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
        found = ", ".join(_describe_statement(n) for n in tree.body) or "nothing"
        raise CodeEditError(
            "shape", f"the new source must be exactly one top-level function definition of {function_name!r}, "
                     f"nothing else (found: {found})")
    func = tree.body[0]
    if func.name != function_name:
        raise CodeEditError(
            "shape", f"the new source defines {func.name!r}, but the modification names {function_name!r}; "
                     f"one modification replaces one function with the same name")
    return func


def _signature_dump(func: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    return ast.dump(func.args, annotate_fields=True, include_attributes=False)


def _signature_text(func: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    return f"{func.name}({ast.unparse(func.args)})"


def _check_signature(old: ast.FunctionDef | ast.AsyncFunctionDef, new: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
    """Same parameters, defaults, kw-only and varargs (the engine calls it the same way)."""
    if type(old) is not type(new) or _signature_dump(old) != _signature_dump(new):
        raise CodeEditError(
            "signature", f"the signature must stay {_signature_text(old)}; got {_signature_text(new)}")
    old_decorators = [ast.dump(d) for d in old.decorator_list]
    if old_decorators != [ast.dump(d) for d in new.decorator_list]:
        raise CodeEditError("signature", f"the decorators of {old.name!r} must stay unchanged")


def _import_roots(tree: ast.AST) -> set[str]:
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def allowed_modules(parent_tree: ast.Module) -> frozenset[str]:
    """Modules an edited function may import: the base set plus the parent's own imports."""
    return frozenset((BASE_ALLOWED_MODULES | _import_roots(parent_tree)) - FORBIDDEN_MODULES - {"__future__"})


def _names_bound_to_forbidden_modules(parent_tree: ast.Module) -> set[str]:
    """Names the parent module binds from forbidden modules (``import os``, ``from pathlib import Path``)."""
    names = set()
    for node in parent_tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in FORBIDDEN_MODULES:
            names.update(alias.asname or alias.name for alias in node.names)
    return names


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__") and len(name) > 4


def _import_problem(node: ast.Import | ast.ImportFrom, allowed: frozenset[str]) -> Optional[str]:
    if isinstance(node, ast.ImportFrom) and node.level:
        return "relative imports are not allowed (the loop file is run from a copy)"
    modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
    for module in modules:
        if module.split(".")[0] not in allowed:
            return f"import of {module!r} is not allowed; allowed modules: {', '.join(sorted(allowed))}"
    return None


def _call_problem(node: ast.Call) -> Optional[str]:
    func = node.func
    if not (isinstance(func, ast.Name) and func.id in ATTRIBUTE_HELPERS):
        return None
    if len(node.args) < 2:
        return None
    name_arg = node.args[1]
    if not (isinstance(name_arg, ast.Constant) and isinstance(name_arg.value, str)):
        return f"{func.id}() needs a literal attribute name (a computed name could reach interpreter internals)"
    if _is_dunder(name_arg.value):
        return f"{func.id}() on the dunder attribute {name_arg.value!r} is not allowed"
    if name_arg.value in FORBIDDEN_MODULES | FORBIDDEN_ATTRIBUTES | FORBIDDEN_BUILTINS:
        return f"{func.id}() reaching {name_arg.value!r} is not allowed"
    return None


def _node_problem(node: ast.AST, allowed: frozenset[str], forbidden_names: set[str]) -> Optional[str]:
    """Why one AST node is refused, or None."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return _import_problem(node, allowed)
    if isinstance(node, ast.Name):
        if node.id in FORBIDDEN_BUILTINS:
            return f"use of {node.id!r} is not allowed"
        if node.id in FORBIDDEN_MODULE_NAMES or node.id in forbidden_names:
            return f"use of {node.id!r} (file system / process / interpreter access) is not allowed"
        if _is_dunder(node.id):
            return f"use of the interpreter name {node.id!r} is not allowed"
    if isinstance(node, ast.Attribute):
        if _is_dunder(node.attr):
            return f"access to the dunder attribute {node.attr!r} is not allowed"
        if node.attr in FORBIDDEN_MODULE_NAMES:
            return f"access to {node.attr!r} through another module is not allowed"
        if node.attr in FORBIDDEN_ATTRIBUTES:
            return f"access to {node.attr!r} (files, processes or native code) is not allowed"
    if isinstance(node, (ast.Global, ast.Nonlocal)):
        return f"'{type(node).__name__.lower()}' statements are not allowed (the function must not rebind module state)"
    if isinstance(node, ast.Call):
        return _call_problem(node)
    return None


def check_function_body(func: ast.AST, allowed: frozenset[str], forbidden_names: Iterable[str] = ()) -> None:
    """Raise CodeEditError at the first forbidden construct in reading order, naming its line."""
    forbidden_names = set(forbidden_names)
    problems = [((node.lineno, node.col_offset, node.end_lineno or 0, node.end_col_offset or 0), node, problem)
                for node in ast.walk(func)
                if hasattr(node, "lineno") and (problem := _node_problem(node, allowed, forbidden_names))]
    if problems:
        (line, *_), node, problem = min(problems, key=lambda item: item[0])
        kind = "import" if isinstance(node, (ast.Import, ast.ImportFrom)) else "forbidden"
        raise CodeEditError(kind, f"line {line} of the new function: {problem}")


def _replace_function(parent_source: str, old: ast.AST, new_function_source: str) -> str:
    """The parent text with the old function's lines (decorators included) replaced."""
    lines = parent_source.splitlines(keepends=True)
    start = min([old.lineno] + [d.lineno for d in old.decorator_list]) - 1
    end = old.end_lineno
    return "".join(lines[:start]) + new_function_source + "".join(lines[end:])


def check_code_modification(parent_source: str, function_name: str, new_source: str,
                            editable: tuple[str, ...] | None = None) -> str:
    """Return the parent module with ``function_name`` replaced by ``new_source``.

    Raises CodeEditError (with ``kind`` and a reason meant for the agent) when the function
    is not editable, the new source does not parse, defines anything else, changes the
    signature, imports a module outside the allow-list, uses a forbidden construct, or the
    resulting module does not compile.
    """
    parent_tree = _parse(parent_source, "parent module")
    editable = editable_functions(parent_source) if editable is None else tuple(editable)
    if function_name not in editable:
        raise CodeEditError(
            "editable", f"{function_name!r} is not editable; editable functions: {', '.join(editable) or 'none'}")
    old = _top_level_function(parent_tree, function_name)
    if old is None:
        raise CodeEditError("editable", f"the training module has no top-level function {function_name!r}")
    text = normalize_function_source(new_source)
    new = _single_function(_parse(text, "new function source"), function_name)
    _check_signature(old, new)
    check_function_body(new, allowed_modules(parent_tree), _names_bound_to_forbidden_modules(parent_tree))
    child_source = _replace_function(parent_source, old, text)
    try:
        compile(child_source, "train_loop.py", "exec")
    except (SyntaxError, ValueError) as exc:
        raise CodeEditError("compile", f"the modified module does not compile: {exc}") from None
    return child_source


def code_diff(parent_source: str, child_source: str, label: str = "train_loop.py") -> str:
    """Unified diff parent -> child (the ``code.diff`` stored beside the child's code)."""
    return "".join(difflib.unified_diff(
        parent_source.splitlines(keepends=True), child_source.splitlines(keepends=True),
        fromfile=f"a/{label}", tofile=f"b/{label}"))


# --------------------------------------------------------------------------- smoke run

#: The tiny network every smoke run trains on (a second or two to simulate, once per cache).
SMOKE_SIMULATION: dict[str, Any] = {
    "n_neurons": 16, "n_neuron_types": 4, "n_frames": 800, "n_burn_in": 100, "seed": 11,
}
SMOKE_HELD_OUT_FRAMES = 100
#: Environment variables a smoke run never inherits (the edited code must not see secrets).
_SECRET_ENV = re.compile(r"(API_KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL)", re.IGNORECASE)
_REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class SmokeResult:
    """What the smoke run of an accepted edit showed (recorded in decision.json)."""

    status: str
    final_loss: float
    steps: int
    wall_s: float
    run_dir: str

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "final_loss": self.final_loss, "steps": self.steps,
                "wall_s": self.wall_s, "run_dir": self.run_dir}


@dataclass(frozen=True)
class ValidatedEdit:
    """An accepted code modification: the child's module text and its smoke run."""

    child_source: str
    smoke: SmokeResult


def smoke_config(base: Any = None):
    """The config of a smoke run: the tiny network, the base config's training scheme.

    The training section (time_step, recurrence, ODE settings, penalties) is kept from
    ``base`` (an ExperimentConfig, a dict, or None for defaults) so the edited code runs the
    branch it will run for real; sizes are shrunk so the run takes seconds on a CPU.
    """
    from neuralgraph.config import ExperimentConfig, parse_config

    data = base.to_dict() if isinstance(base, ExperimentConfig) else dict(base or {})
    data = json.loads(json.dumps(data))  # deep copy of plain data
    data["simulation"] = dict(SMOKE_SIMULATION)
    n = SMOKE_SIMULATION["n_neurons"]
    graph = data.setdefault("graph_model", {})
    graph["hidden_dim"] = min(int(graph.get("hidden_dim", 64)), 16)
    graph["low_rank"] = min(int(graph.get("low_rank", 20)), n)
    training = data.setdefault("training", {})
    training.update({"n_epochs": 1, "data_augmentation_loop": 1, "held_out_frames": SMOKE_HELD_OUT_FRAMES,
                     "batch_size": min(int(training.get("batch_size", 8)), 8)})
    training["recurrent_training_start_epoch"] = 0
    data["analysis"] = {**data.get("analysis", {}), "rollout_frames": SMOKE_HELD_OUT_FRAMES // 2}
    return parse_config(data, source="<smoke config>")


def ensure_smoke_dataset(cache_dir: str | os.PathLike) -> Path:
    """The tiny dataset of the smoke runs, simulated once and cached under ``cache_dir``.

    The folder is named by the simulation hash and built in a temporary folder renamed into
    place, so concurrent decide jobs never see (or clobber) a half-written dataset.
    """
    from neuralgraph.simulate import simulate

    cfg = smoke_config()
    cache = Path(cache_dir)
    target = cache / f"smoke_{cfg.simulation_hash()}"
    if (target / "metadata.json").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".smoke_building_", dir=cache))
    try:
        simulate(cfg, staging, progress=False, pictures=False)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "metadata.json").is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _smoke_environment() -> dict[str, str]:
    """The subprocess environment: no secrets, CPU only, one thread, this checkout importable."""
    env = {k: v for k, v in os.environ.items() if not _SECRET_ENV.search(k)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO_ROOT), env.get("PYTHONPATH")]))
    env.update({"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"})
    return env


def _tail(text: str, n_lines: int = STDERR_TAIL_LINES) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-n_lines:])


def _run_with_timeout(cmd: list[str], timeout_s: float, log_path: Path) -> tuple[Optional[int], str, float]:
    """Run ``cmd`` in its own process group; kill the whole group at the timeout.

    Returns (return code or None on timeout, combined stdout+stderr, wall seconds).
    """
    started = time.perf_counter()
    with open(log_path, "w+", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_smoke_environment(),
                                cwd=str(log_path.parent), start_new_session=True)
        try:
            rc: Optional[int] = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
        log.seek(0)
        output = log.read()
    return rc, output, time.perf_counter() - started


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_training_record(run_dir: Path) -> SmokeResult:
    """Refuse a run that diverged or reported a non-finite loss (training.json)."""
    record_path = run_dir / "training.json"
    try:
        record = read_json(record_path)
    except (FileNotFoundError, ValueError) as exc:
        raise CodeEditError("smoke-crash", f"the smoke run exited normally but left no readable training.json ({exc})") from None
    status = record.get("status")
    final_loss = record.get("final_loss")
    if status != "ok":
        raise CodeEditError("smoke-diverged", f"the smoke run ended with status {status!r}: {record.get('reason') or 'no reason given'}")
    history = record.get("loss_history") or []
    if not _finite(final_loss) or not all(_finite(v) for v in history):
        raise CodeEditError("smoke-diverged", f"the smoke run gave a non-finite loss (final_loss = {final_loss!r})")
    return SmokeResult(status=status, final_loss=float(final_loss), steps=int(record.get("iterations") or len(history)),
                       wall_s=0.0, run_dir=str(run_dir))


def smoke_run(module_source: str, smoke_dir: str | os.PathLike, timeout_s: float = DEFAULT_SMOKE_TIMEOUT_S,
              max_steps: int = DEFAULT_SMOKE_MAX_STEPS, base_config: Any = None,
              cache_dir: str | os.PathLike | None = None, python: str | None = None) -> SmokeResult:
    """Train a few steps with ``module_source`` as the loop file; refuse it if that fails.

    Runs ``python -m neuralgraph train --config <tiny> --data <tiny data> --out <smoke_dir>/run
    --loop <smoke_dir>/train_loop.py --max-steps N`` in a subprocess (own process group, no
    secrets in its environment, CPU only). Raises CodeEditError ``smoke-timeout`` (endless loop
    or far too slow), ``smoke-crash`` (non-zero exit; the last lines of its output are quoted)
    or ``smoke-diverged`` (status not ok, NaN/inf loss). Writes ``smoke.log`` and
    ``smoke.json`` into ``smoke_dir`` for the record.
    """
    from neuralgraph.config import dump_config

    smoke = Path(smoke_dir).resolve()
    smoke.mkdir(parents=True, exist_ok=True)
    data_dir = ensure_smoke_dataset(Path(cache_dir) if cache_dir else smoke / "dataset")
    config_path = dump_config(smoke_config(base_config), smoke / "config.yaml")
    loop_path = atomic_write_text(smoke / "train_loop.py", module_source)
    run_dir = smoke / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir, ignore_errors=True)  # a previous attempt's checkpoint must not be resumed
    cmd = [python or sys.executable, "-m", "neuralgraph", "train", "--config", str(config_path),
           "--data", str(data_dir), "--out", str(run_dir), "--loop", str(loop_path), "--max-steps", str(max_steps)]
    rc, output, wall = _run_with_timeout(cmd, timeout_s, smoke / "smoke.log")
    try:
        if rc is None:
            raise CodeEditError("smoke-timeout", f"the smoke run ({max_steps} steps on a {SMOKE_SIMULATION['n_neurons']}-neuron "
                                                 f"network) did not finish within {timeout_s:g} s: an endless loop or far too slow")
        if rc != 0:
            raise CodeEditError("smoke-crash", f"the smoke run crashed (exit code {rc}); last lines:\n{_tail(output)}")
        result = _check_training_record(run_dir)
    except CodeEditError as exc:
        atomic_write_json(smoke / "smoke.json", {"accepted": False, "kind": exc.kind, "reason": exc.reason,
                                                 "wall_s": round(wall, 3), "command": cmd})
        raise
    result = SmokeResult(result.status, result.final_loss, result.steps, round(wall, 3), result.run_dir)
    atomic_write_json(smoke / "smoke.json", {"accepted": True, **result.to_dict(), "command": cmd})
    return result


def validate_and_smoke(parent_source: str, function_name: str, new_source: str, smoke_dir: str | os.PathLike,
                       timeout_s: float = DEFAULT_SMOKE_TIMEOUT_S, max_steps: int = DEFAULT_SMOKE_MAX_STEPS,
                       base_config: Any = None, cache_dir: str | os.PathLike | None = None,
                       editable: tuple[str, ...] | None = None) -> ValidatedEdit:
    """Static checks, then the smoke run: what the decide CLI calls for a code modification.

    The cheap static checks run first so an obviously bad edit never costs a subprocess.
    """
    child = check_code_modification(parent_source, function_name, new_source, editable)
    result = smoke_run(child, smoke_dir, timeout_s=timeout_s, max_steps=max_steps,
                       base_config=base_config, cache_dir=cache_dir)
    return ValidatedEdit(child_source=child, smoke=result)
