"""Static checks of the agent's code modifications of the editable training module: an allow-list.

The agent may rewrite ONE function of ``neuralgraph/train_loop.py`` per iteration (the names
listed in the module's ``EDITABLE_FUNCTIONS``). :func:`check_code_modification` accepts the
new source only when the function is editable, parses, is exactly that one function with the
very same signature, and uses nothing outside what a training step needs:

- names: the function's own parameters and local names, the training module's own top-level
  names, and the builtins in :data:`SAFE_BUILTINS`;
- modules and attribute paths: :data:`ALLOWED_MODULE_ATTRIBUTES` (torch tensor ops and
  dtypes, torch.nn / torch.nn.functional / torch.nn.init, torch.optim and its schedulers,
  torch.nn.utils clipping, math, torchdiffeq's solvers); a ``from X import Y`` name is checked
  like the attribute ``X.Y``; a module may appear only at the start of an attribute path,
  never as a value that could be passed around;
- attributes of objects (``model.lin_edge``, ``ctx.horizon``, ``loss.backward``): any name
  except those starting with an underscore, the frame / code / generator attributes
  (:data:`FRAME_ATTRIBUTE_PREFIXES`) and :data:`DENIED_OBJECT_ATTRIBUTES` (files, storage,
  format strings);
- no ``global``/``nonlocal``, no nested class, no generator, no assignment into a module's
  attribute or into the engine's records (``ctx``, ``data``, ``cfg``).

The checker is the first line; the sandbox (:mod:`agent.sandbox`) is the wall. Each must hold
on its own: the smoke run and the real training of an edited loop run contained whatever
the checker said. The smoke run itself lives in :mod:`agent.smoke`.
"""
from __future__ import annotations

import ast
import builtins
import difflib
import importlib
import re
import textwrap
import types
from functools import lru_cache
from typing import Optional

#: Builtins a training step may use (anything reaching files, code objects, attributes by
#: name or the interpreter - open, exec, getattr, type, vars, globals, __import__ - is absent).
SAFE_BUILTINS: frozenset[str] = frozenset({
    "abs", "all", "any", "bool", "dict", "divmod", "enumerate", "filter", "float", "int", "isinstance",
    "iter", "len", "list", "map", "max", "min", "next", "pow", "print", "range", "reversed", "round",
    "set", "slice", "sorted", "str", "sum", "tuple", "zip", "True", "False", "None",
    "ArithmeticError", "AssertionError", "Exception", "IndexError", "KeyError", "NotImplementedError",
    "RuntimeError", "StopIteration", "TypeError", "ValueError", "ZeroDivisionError",
})

#: torch names beyond the tensor ops (functions that are also Tensor methods): creation and
#: combination functions, grad modes, constants and the types a step may name.
TORCH_EXTRA_NAMES: frozenset[str] = frozenset({
    "arange", "as_tensor", "atleast_1d", "atleast_2d", "block_diag", "broadcast_tensors", "cat", "cdist",
    "concat", "cosine_similarity", "diag_embed", "dstack", "e", "einsum", "empty", "empty_like", "enable_grad",
    "eye", "finfo", "full", "full_like", "hstack", "iinfo", "inf", "inference_mode", "is_grad_enabled",
    "is_tensor", "linspace", "logspace", "meshgrid", "nan", "no_grad", "normal", "ones", "ones_like", "pi",
    "poisson", "rand", "rand_like", "randint", "randint_like", "randn", "randn_like", "randperm", "scalar_tensor",
    "set_grad_enabled", "stack", "std_mean", "tensor", "tensordot", "tril_indices", "triu_indices", "var_mean",
    "vstack", "zeros", "zeros_like", "Generator", "Size", "Tensor", "device", "dtype",
    "nn", "optim", "autograd",
})
#: Tensor-op names refused although torch has them: they reach files, memory or other processes.
TORCH_DENIED_NAMES: frozenset[str] = frozenset({
    "load", "save", "from_file", "frombuffer", "from_dlpack", "to_dlpack", "compile", "set_default_device",
    "set_default_dtype", "set_default_tensor_type", "set_num_threads", "set_num_interop_threads",
    "set_rng_state", "set_flush_denormal", "storage", "untyped_storage", "share_memory_", "data_ptr",
})

#: Allowed attributes per module path (``None``: every public name of that module, computed
#: from the module itself). A path listed here is a module and may start an attribute path.
ALLOWED_MODULE_ATTRIBUTES: dict[str, Optional[frozenset[str]]] = {
    "torch": None,  # the tensor ops + TORCH_EXTRA_NAMES - TORCH_DENIED_NAMES (see _torch_names)
    "torch.nn": frozenset({"Module", "Parameter", "Linear", "Sequential", "ModuleList", "ReLU", "Tanh", "GELU",
                           "SiLU", "Softplus", "MSELoss", "L1Loss", "HuberLoss", "SmoothL1Loss",
                           "functional", "init", "utils"}),
    "torch.nn.functional": None,
    "torch.nn.init": None,
    "torch.nn.utils": frozenset({"clip_grad_norm_", "clip_grad_value_"}),
    "torch.optim": frozenset({"Adam", "AdamW", "SGD", "RMSprop", "Adagrad", "Adamax", "NAdam", "RAdam",
                              "Optimizer", "lr_scheduler"}),
    "torch.optim.lr_scheduler": None,
    "torch.autograd": frozenset({"grad"}),
    "math": None,
    "torchdiffeq": frozenset({"odeint", "odeint_adjoint"}),
}
#: Object attributes refused everywhere: files and raw storage, format strings (which read
#: attributes by name at run time), and process control.
DENIED_OBJECT_ATTRIBUTES: frozenset[str] = frozenset({
    "save", "load", "from_file", "tofile", "fromfile", "storage", "untyped_storage", "share_memory_",
    "data_ptr", "format", "format_map", "system", "popen", "spawn", "fork", "environ", "getenv", "putenv",
    "mro", "modules_dict",
})
#: Attribute prefixes of frames, code objects, generators, coroutines and tracebacks.
FRAME_ATTRIBUTE_PREFIXES: tuple[str, ...] = ("gi_", "f_", "cr_", "ag_", "tb_", "co_")
#: Parameters that hold the engine's own records: assigning into them patches the engine.
ENGINE_RECORDS: frozenset[str] = frozenset({"ctx", "data", "cfg", "tr"})
#: The only attributes a step may assign (a tensor's gradient and values). Any other attribute
#: store could rebind a method of a class reached through an alias (``A = torch.optim.Adam;
#: A.step = ...``) or an engine record (``c = ctx; c.cfg = ...``): names are not typed here.
ASSIGNABLE_ATTRIBUTES: frozenset[str] = frozenset({"grad", "data"})
#: Statements a training step never needs.
REFUSED_STATEMENTS = {ast.Global: "'global' statements", ast.Nonlocal: "'nonlocal' statements",
                      ast.ClassDef: "class definitions inside the function", ast.Yield: "generators (yield)",
                      ast.YieldFrom: "generators (yield from)", ast.Await: "await",
                      ast.AsyncFunctionDef: "async functions", ast.AsyncFor: "async for", ast.AsyncWith: "async with"}

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


# --------------------------------------------------------------------------- the allow-list


@lru_cache(maxsize=None)
def _module_names(path: str) -> frozenset[str]:
    """Allowed attribute names of the module ``path`` (see ALLOWED_MODULE_ATTRIBUTES)."""
    listed = ALLOWED_MODULE_ATTRIBUTES[path]
    if listed is not None:
        return listed
    if path == "torch":
        return _torch_names()

    module = importlib.import_module(path)
    return frozenset(n for n in dir(module) if not n.startswith("_")
                     and not isinstance(getattr(module, n), types.ModuleType))


@lru_cache(maxsize=None)
def _torch_names() -> frozenset[str]:
    """torch's tensor ops (functions that are also Tensor methods), dtypes and TORCH_EXTRA_NAMES."""
    import torch  # lazy: torch costs seconds; only an edit naming torch needs its names

    tensor_methods = set(dir(torch.Tensor))
    names = set(TORCH_EXTRA_NAMES)
    for name in dir(torch):
        if name.startswith("_"):
            continue
        value = getattr(torch, name)
        if isinstance(value, torch.dtype) or (name in tensor_methods and callable(value)
                                               and not isinstance(value, types.ModuleType)):
            names.add(name)
    return frozenset(names - TORCH_DENIED_NAMES)


def _resolve_module_attribute(module: str, attr: str) -> tuple[Optional[str], Optional[str]]:
    """(problem, module path of ``module.attr`` if that is itself an allowed module)."""
    if attr.startswith("_"):
        return f"'{module}.{attr}': names starting with an underscore are internals", None
    if attr not in _module_names(module):
        return (f"'{module}.{attr}' is not on the allow-list of the training loop (allowed: torch tensor ops, "
                f"torch.nn / torch.nn.functional / torch.nn.init, torch.optim and its lr_scheduler, "
                f"torch.nn.utils clipping, math, torchdiffeq.odeint)"), None
    child = f"{module}.{attr}"
    return None, child if child in ALLOWED_MODULE_ATTRIBUTES else None


def _object_attribute_problem(attr: str) -> Optional[str]:
    if attr.startswith("_"):
        return f"attribute '{attr}': attributes starting with an underscore are refused (interpreter and library internals)"
    if attr.startswith(FRAME_ATTRIBUTE_PREFIXES):
        return f"attribute '{attr}': frame, code, generator and traceback attributes are refused"
    if attr in DENIED_OBJECT_ATTRIBUTES:
        return f"attribute '{attr}': files, raw storage, format strings and processes are out of the training loop's reach"
    return None


def _bound_names(func: ast.AST) -> set[str]:
    """Every name the function binds itself: parameters, assignments, loop/with/except targets, nested defs."""
    names: set[str] = set()
    for node in ast.walk(func):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node is not func:
            names.add(node.name)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
    return names


def _module_level_names(parent_tree: ast.Module) -> tuple[set[str], dict[str, str]]:
    """(plain names the training module defines, {alias: module path} of its allowed imports)."""
    names: set[str] = set()
    modules: dict[str, str] = {}
    for node in parent_tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            names |= _assigned_names(node)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                target = alias.name if alias.asname else root
                if target in ALLOWED_MODULE_ATTRIBUTES:
                    modules[alias.asname or root] = target
    return names, modules


class _AllowListChecker(ast.NodeVisitor):
    """Walks one function and records every construct outside the allow-list, with its line."""

    def __init__(self, bound: set[str], module_names: set[str], modules: dict[str, str]):
        self.bound = bound
        self.module_names = module_names
        self.modules = dict(modules)  # alias -> module path (local imports are added as met)
        self.problems: list[tuple[int, int, str, str]] = []

    def refuse(self, node: ast.AST, kind: str, message: str) -> None:
        self.problems.append((getattr(node, "lineno", 0), getattr(node, "col_offset", 0), kind, message))

    # -- imports: every imported name is an attribute path
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            parts = alias.name.split(".")
            if parts[0] not in ALLOWED_MODULE_ATTRIBUTES:
                self.refuse(node, "import", f"import of {alias.name!r} is not allowed; allowed modules: "
                                            f"{', '.join(sorted(ALLOWED_MODULE_ATTRIBUTES))}")
                continue
            path = self._walk_path(node, parts[0], parts[1:])
            if path is not None:
                self.modules[alias.asname or parts[0]] = path if alias.asname else parts[0]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            self.refuse(node, "import", "relative imports are not allowed (the loop file is run from a copy)")
            return
        parts = (node.module or "").split(".")
        if parts[0] not in ALLOWED_MODULE_ATTRIBUTES:
            self.refuse(node, "import", f"import of {node.module!r} is not allowed; allowed modules: "
                                        f"{', '.join(sorted(ALLOWED_MODULE_ATTRIBUTES))}")
            return
        module = self._walk_path(node, parts[0], parts[1:])
        if module is None:
            return
        for alias in node.names:
            if alias.name == "*":
                self.refuse(node, "import", "'from ... import *' is not allowed")
                continue
            problem, child = _resolve_module_attribute(module, alias.name)
            if problem:
                self.refuse(node, "forbidden", problem)
            elif child:
                self.modules[alias.asname or alias.name] = child
            else:
                self.bound.add(alias.asname or alias.name)

    def _walk_path(self, node: ast.AST, root: str, attrs: list[str]) -> Optional[str]:
        """The module path root.attrs... if every step is allowed and is a module, else None (refused)."""
        path = root
        for attr in attrs:
            problem, child = _resolve_module_attribute(path, attr)
            if problem or child is None:
                self.refuse(node, "forbidden", problem or f"'{path}.{attr}' is not a module that may be imported")
                return None
            path = child
        return path

    # -- names
    def visit_Name(self, node: ast.Name) -> None:
        name = node.id
        if name.startswith("__"):
            self.refuse(node, "forbidden", f"use of the interpreter name {name!r} is not allowed")
        elif name in self.modules and isinstance(node.ctx, ast.Load):
            self.refuse(node, "forbidden", f"the module {name!r} may only start an attribute path "
                                           f"({name}.something), not be used as a value")
        elif isinstance(node.ctx, ast.Load) and name not in self.bound | self.module_names | SAFE_BUILTINS:
            hint = " (not among the allowed builtins)" if hasattr(builtins, name) else ""
            self.refuse(node, "forbidden", f"use of {name!r}{hint} is not allowed: a step may use its parameters, "
                                           f"its own local names, the training module's names and safe builtins")

    # -- attributes
    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain: list[str] = []
        inner: ast.AST = node
        while isinstance(inner, ast.Attribute):
            chain.append(inner.attr)
            inner = inner.value
        chain.reverse()
        if isinstance(inner, ast.Name) and inner.id in self.modules:
            self._check_module_chain(node, self.modules[inner.id], chain)
            self._check_store(node, inner.id, is_module=True)
            return
        self.visit(inner)  # first: an unknown root name is the clearer reason
        for attr in chain:
            problem = _object_attribute_problem(attr)
            if problem:
                self.refuse(node, "forbidden", problem)
                break
        self._check_store(node, inner.id if isinstance(inner, ast.Name) else "", is_module=False)

    def _check_module_chain(self, node: ast.Attribute, module: str, chain: list[str]) -> None:
        path: Optional[str] = module
        for attr in chain:
            if path is None:  # past the module part: an object's attribute
                problem = _object_attribute_problem(attr)
            else:
                problem, path = _resolve_module_attribute(path, attr)
            if problem:
                self.refuse(node, "forbidden", problem)
                return
        if path is not None:  # node is the whole chain (inner links are not visited): a module as a value
            self.refuse(node, "forbidden", f"the module '{path}' may only start an attribute path, not be used as a value")

    def _check_store(self, node: ast.Attribute, root: str, is_module: bool) -> None:
        if not isinstance(node.ctx, (ast.Store, ast.Del)):
            return
        if not is_module and root not in ENGINE_RECORDS and node.attr not in ASSIGNABLE_ATTRIBUTES:
            self.refuse(node, "forbidden", f"assigning the attribute {node.attr!r} is not allowed (only "
                                           f"{', '.join(sorted(ASSIGNABLE_ATTRIBUTES))} of a tensor may be set)")
            return
        if is_module:
            self.refuse(node, "forbidden", f"assigning into the module {root!r} is not allowed (it would patch "
                                           f"code outside this function)")
        elif root in ENGINE_RECORDS:
            self.refuse(node, "forbidden", f"assigning into {root!r} is not allowed: it belongs to the training engine")

    def generic_visit(self, node: ast.AST) -> None:
        for statement_type, what in REFUSED_STATEMENTS.items():
            if isinstance(node, statement_type):
                self.refuse(node, "forbidden", f"{what} are not allowed in the training loop")
        super().generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        root: ast.AST = node
        while isinstance(root, (ast.Subscript, ast.Attribute)):
            root = root.value
        if isinstance(node.ctx, (ast.Store, ast.Del)) and isinstance(root, ast.Name) and root.id in ENGINE_RECORDS:
            self.refuse(node, "forbidden", f"assigning into {root.id!r} is not allowed: it belongs to the training engine")
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if node.name.startswith("__"):
            self.refuse(node, "forbidden", f"a function named {node.name!r} is not allowed")
        self.generic_visit(node)


def check_function_body(func: ast.AST, parent_tree: ast.Module) -> None:
    """Raise CodeEditError at the first construct outside the allow-list (reading order), naming its line."""
    module_names, modules = _module_level_names(parent_tree)
    checker = _AllowListChecker(_bound_names(func), module_names - set(modules), modules)
    for statement in func.body:  # the signature and decorators were compared with the parent's
        checker.visit(statement)
    for default in [*func.args.defaults, *[d for d in func.args.kw_defaults if d is not None]]:
        checker.visit(default)
    if checker.problems:
        line, _, kind, problem = min(checker.problems, key=lambda p: (p[0], p[1]))
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
    check_function_body(new, parent_tree)
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


