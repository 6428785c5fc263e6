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
  never as a value; a class reached through one may only be called or named in isinstance();
- attributes of objects, per kind of object (:mod:`agent.step_kinds`): the model offers the
  members the loop contract names, the optimizer step / zero_grad / param_groups, ctx / data /
  cfg their fields (read-only), any other value torch.Tensor's numeric methods and properties
  (minus memory, storage, hooks, numpy); underscores, frame / code / generator attributes
  (:data:`FRAME_ATTRIBUTE_PREFIXES`) and :data:`DENIED_OBJECT_ATTRIBUTES` are refused on all;
- calls: only of known callables (allowed module functions and classes, safe builtins, the
  training module's functions, functions defined in the edit, modules, allowed methods);
- no ``global``/``nonlocal``, no nested class, no generator, no assignment into a module's
  attribute, a class, a function or the engine's records (``ctx``, ``data``, ``cfg``).

The child's module is composed, never copied: the packaged module, the parent's editable
functions that differ from it (each checked again) and the new function
(:func:`check_code_modification`, :func:`rebuild_module`).

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

from agent.layout import LOOP_FILE
from agent.step_kinds import (FUNCTION, GENERIC, TENSOR_DENIED_ATTRIBUTES, VALUE, Kind, describe_members, join,
                              local_class_kind, member_kind, module_value_kind, parameter_kinds)

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
    return frozenset(n for n in dir(module) if not n.startswith("_") and _plain_module_value(getattr(module, n)))


#: Top-level packages whose functions and classes a module path may reach.
_OWN_CODE_PACKAGES = ("torch", "math", "torchdiffeq")


def _plain_module_value(value: object) -> bool:
    """A number, string, dtype, or a function / class of torch, math or torchdiffeq. Not: modules,
    mutable module-level containers (``torch.nn.functional.GRID_SAMPLE_PADDING_MODES``: a ``.pop()``
    would change torch for the whole trainer), or helpers imported from typing / functools / weakref."""
    import torch

    if isinstance(value, types.ModuleType):
        return False
    if isinstance(value, (bool, int, float, complex, str)) or isinstance(value, torch.dtype):
        return True
    return callable(value) and (getattr(value, "__module__", None) or "").split(".")[0] in _OWN_CODE_PACKAGES


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
    return frozenset(names - TORCH_DENIED_NAMES - TENSOR_DENIED_ATTRIBUTES)


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


def _member_problem(where: str, kind: Kind, attr: str) -> str:
    """Why ``where.attr`` is refused, naming what ``where`` offers instead."""
    if kind.is_class:
        return (f"'{where}.{attr}': {kind.label} may only be called or named in isinstance(); its attributes are "
                f"not on the allow-list")
    if kind.members is None:
        if attr in TENSOR_DENIED_ATTRIBUTES:
            return (f"attribute '{attr}' of {where}: raw memory, storage, shared memory, hooks, per-element "
                    f"callbacks and numpy are out of the training loop's reach")
        return (f"attribute '{attr}' of {where} ({kind.label}) is not on the allow-list: a value offers "
                f"torch.Tensor's numeric methods and properties and list/dict basics; the members of the model, "
                f"the optimizer, ctx, data and cfg are reached directly from those parameters")
    if not kind.members:
        return f"{where} is {kind.label}: no attributes or methods ('{attr}' refused)"
    return (f"attribute '{attr}' of {where} is not on the allow-list; {where} is {kind.label}, which offers only: "
            f"{describe_members(kind)}")


def _describe(node: ast.AST) -> str:
    text = ast.unparse(node)
    return text if len(text) <= 60 else text[:57] + "..."


def _module_level_names(parent_tree: ast.Module) -> tuple[dict[str, Kind], dict[str, str]]:
    """({name: Kind} of what the training module defines, {alias: module path} of its allowed imports)."""
    names: dict[str, Kind] = {}
    modules: dict[str, str] = {}
    for node in parent_tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names[node.name] = FUNCTION
        elif isinstance(node, ast.ClassDef):
            names[node.name] = local_class_kind(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            names.update({n: VALUE for n in _assigned_names(node)})
        elif isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                target = alias.name if alias.asname else root
                if target in ALLOWED_MODULE_ATTRIBUTES:
                    modules[alias.asname or root] = target
    return names, modules


class _Bindings(ast.NodeVisitor):
    """Every name the function binds, with the expression bound when that is known (``x = e``)."""

    def __init__(self, func: ast.AST):
        self.func = func
        self.assigned: dict[str, list[Optional[ast.AST]]] = {}
        self.fixed: dict[str, list[Kind]] = {}
        for node in ast.walk(func):
            self._collect(node)

    def bind(self, name: str, value: Optional[ast.AST]) -> None:
        self.assigned.setdefault(name, []).append(value)

    def _targets(self, target: ast.AST, value: Optional[ast.AST]) -> None:
        if isinstance(target, ast.Name):
            self.bind(target.id, value)
        elif isinstance(target, (ast.Tuple, ast.List)):
            pairs = isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(target.elts)
            for k, elt in enumerate(target.elts):
                self._targets(elt.value if isinstance(elt, ast.Starred) else elt, value.elts[k] if pairs else None)
        elif isinstance(target, ast.Starred):
            self._targets(target.value, None)

    def _collect(self, node: ast.AST) -> None:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                self._targets(target, node.value)
        elif isinstance(node, ast.AnnAssign):
            self._targets(node.target, node.value)
        elif isinstance(node, ast.NamedExpr):
            self._targets(node.target, node.value)
        elif isinstance(node, (ast.AugAssign, ast.For, ast.AsyncFor, ast.comprehension)):
            self._targets(node.target, None)
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            self._targets(node.optional_vars, None)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            self.bind(node.name, None)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node is not self.func:
            self.fixed.setdefault(node.name, []).append(FUNCTION)
        elif isinstance(node, ast.arg) and not self._is_own_parameter(node):
            self.bind(node.arg, None)  # a parameter of a nested function or lambda: any value

    def _is_own_parameter(self, node: ast.arg) -> bool:
        args = self.func.args
        return any(node is a for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg])


class _AllowListChecker(ast.NodeVisitor):
    """Walks one function and records every construct outside the allow-list, with its line.

    Values have kinds (agent.step_kinds): the function's parameters by name, module values,
    and local names from what they are bound to (flow-insensitive: a name bound to different
    kinds gets the generic one, the narrowest).
    """

    def __init__(self, func: ast.FunctionDef | ast.AsyncFunctionDef, module_names: dict[str, Kind],
                 modules: dict[str, str]):
        self.func = func
        self.module_names = dict(module_names)
        self.modules = dict(modules)  # alias -> module path (local imports are added below)
        self.problems: list[tuple[int, int, str, str]] = []
        self.class_ok: set[int] = set()  # ids of class expressions that are called or named in isinstance
        self.bindings = _Bindings(func)
        self._prepare_imports()
        params = [*func.args.posonlyargs, *func.args.args, *func.args.kwonlyargs]
        for extra in (func.args.vararg, func.args.kwarg):
            if extra is not None:
                params.append(extra)
        self.param_kinds = {a.arg: parameter_kinds().get(a.arg, GENERIC) for a in params}
        self.kinds: dict[str, Kind] = {}
        self._infer_local_kinds()

    def refuse(self, node: ast.AST, kind: str, message: str) -> None:
        self.problems.append((getattr(node, "lineno", 0), getattr(node, "col_offset", 0), kind, message))

    # -- kinds
    def _prepare_imports(self) -> None:
        """Local ``import``/``from ... import`` bindings: module aliases and module-value kinds."""
        for node in ast.walk(self.func):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] in ALLOWED_MODULE_ATTRIBUTES and all(
                            f"{'.'.join(parts[:k])}" in ALLOWED_MODULE_ATTRIBUTES for k in range(1, len(parts) + 1)):
                        self.modules[alias.asname or parts[0]] = alias.name if alias.asname else parts[0]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                module = node.module or ""
                if module not in ALLOWED_MODULE_ATTRIBUTES:
                    continue
                for alias in node.names:
                    if alias.name == "*" or alias.name.startswith("_") or alias.name not in _module_names(module):
                        continue
                    child = f"{module}.{alias.name}"
                    if child in ALLOWED_MODULE_ATTRIBUTES:
                        self.modules[alias.asname or alias.name] = child
                    else:
                        self.bindings.fixed.setdefault(alias.asname or alias.name, []).append(
                            module_value_kind(module, alias.name))

    def _infer_local_kinds(self) -> None:
        names = set(self.bindings.assigned) | set(self.bindings.fixed) | set(self.param_kinds)
        for _ in range(6):  # to a fixpoint: x = cfg.training; y = x.lr
            new: dict[str, Kind] = {}
            for name in names:
                if name in self.modules:
                    continue
                found = list(self.bindings.fixed.get(name, []))
                if name in self.param_kinds:
                    found.append(self.param_kinds[name])
                found += [GENERIC if value is None else self.kind_of(value) for value in self.bindings.assigned.get(name, [])]
                new[name] = join(found)
            if all(new[n] is self.kinds.get(n) for n in new):
                break
            self.kinds = new

    def kind_of_name(self, name: str) -> Kind:
        if name in self.kinds:
            return self.kinds[name]
        if name in self.module_names:
            return self.module_names[name]
        if name in SAFE_BUILTINS:
            return VALUE if name in ("True", "False", "None") else FUNCTION
        return GENERIC

    def kind_of(self, node: ast.AST) -> Kind:
        """What ``node`` evaluates to, as far as the checker can tell (no refusals here)."""
        if isinstance(node, ast.Name):
            return GENERIC if node.id in self.modules else self.kind_of_name(node.id)
        if isinstance(node, ast.Attribute):
            module_value = self._module_value(node)
            if module_value is not None:
                return module_value
            return member_kind(self.kind_of(node.value), node.attr) or GENERIC
        if isinstance(node, ast.Call):
            return self.kind_of(node.func).result or GENERIC
        if isinstance(node, ast.IfExp):
            return join([self.kind_of(node.body), self.kind_of(node.orelse)])
        if isinstance(node, ast.NamedExpr):
            return self.kind_of(node.value)
        if isinstance(node, ast.Lambda):
            return FUNCTION
        return GENERIC

    def _module_chain(self, node: ast.Attribute) -> Optional[tuple[str, list[str]]]:
        chain: list[str] = []
        inner: ast.AST = node
        while isinstance(inner, ast.Attribute):
            chain.append(inner.attr)
            inner = inner.value
        if isinstance(inner, ast.Name) and inner.id in self.modules:
            return self.modules[inner.id], chain[::-1]
        return None

    def _module_value(self, node: ast.Attribute) -> Optional[Kind]:
        """Kind of ``module.path.value`` when node is exactly that (an allowed module value)."""
        found = self._module_chain(node)
        if found is None:
            return None
        path: Optional[str] = found[0]
        for attr in found[1][:-1]:
            problem, path = _resolve_module_attribute(path, attr)
            if problem or path is None:
                return GENERIC
        problem, child = _resolve_module_attribute(path, found[1][-1])
        if problem or child is not None:
            return GENERIC
        return module_value_kind(path, found[1][-1])

    # -- imports: every imported name is an attribute path
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            parts = alias.name.split(".")
            if parts[0] not in ALLOWED_MODULE_ATTRIBUTES:
                self.refuse(node, "import", f"import of {alias.name!r} is not allowed; allowed modules: "
                                            f"{', '.join(sorted(ALLOWED_MODULE_ATTRIBUTES))}")
                continue
            self._walk_path(node, parts[0], parts[1:])

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
            problem, _ = _resolve_module_attribute(module, alias.name)
            if problem:
                self.refuse(node, "forbidden", problem)

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

    # -- calls: every call is to a known callable
    def visit_Call(self, node: ast.Call) -> None:
        self.class_ok.add(id(node.func))
        if isinstance(node.func, ast.Name) and node.func.id == "isinstance" and len(node.args) == 2:
            kinds = node.args[1]
            self.class_ok.add(id(kinds))
            if isinstance(kinds, ast.Tuple):
                self.class_ok.update(id(e) for e in kinds.elts)
        self.generic_visit(node)
        func = node.func
        if isinstance(func, ast.Name) and (func.id in self.modules or func.id.startswith("__")):
            return  # refused by visit_Name
        if isinstance(func, ast.Attribute) and self._module_chain(func) is not None:
            return  # a module path: checked by visit_Attribute (a module itself is refused there)
        kind = self.kind_of(func)
        if kind.callable:
            return
        if isinstance(func, ast.Attribute) and member_kind(self.kind_of(func.value), func.attr) is None:
            return  # the attribute itself is refused
        if isinstance(func, ast.Name) and func.id not in self.bindings.assigned and func.id not in self.kinds \
                and func.id not in self.module_names and func.id not in SAFE_BUILTINS:
            return  # an unknown name: refused by visit_Name
        self.refuse(node, "forbidden", f"calling '{_describe(func)}' is not allowed: it is {kind.label}, not a known "
                                       f"callable (allowed: the listed torch / math / torchdiffeq functions and "
                                       f"classes, safe builtins, the training module's functions, functions "
                                       f"defined here, the model and torch.nn modules, and the allowed methods)")

    # -- names
    def visit_Name(self, node: ast.Name) -> None:
        name = node.id
        if name.startswith("__"):
            self.refuse(node, "forbidden", f"use of the interpreter name {name!r} is not allowed")
        elif name in self.modules and isinstance(node.ctx, ast.Load):
            self.refuse(node, "forbidden", f"the module {name!r} may only start an attribute path "
                                           f"({name}.something), not be used as a value")
        elif isinstance(node.ctx, ast.Load) and name not in self.kinds and name not in self.module_names \
                and name not in SAFE_BUILTINS:
            hint = " (not among the allowed builtins)" if hasattr(builtins, name) else ""
            self.refuse(node, "forbidden", f"use of {name!r}{hint} is not allowed: a step may use its parameters, "
                                           f"its own local names, the training module's names and safe builtins")
        elif isinstance(node.ctx, ast.Load) and self.kind_of_name(name).is_class and id(node) not in self.class_ok:
            self._refuse_class_value(node, self.kind_of_name(name))

    def _refuse_class_value(self, node: ast.AST, kind: Kind) -> None:
        self.refuse(node, "forbidden", f"{kind.label} may only be called or named in isinstance(), not bound to a "
                                       f"name or passed as a value (its attributes could then be assigned, "
                                       f"patching the code of the whole trainer)")

    # -- attributes
    def visit_Attribute(self, node: ast.Attribute) -> None:
        module_chain = self._module_chain(node)
        if module_chain is not None:
            if isinstance(node.ctx, (ast.Store, ast.Del)):
                root = node
                while isinstance(root, ast.Attribute):
                    root = root.value
                self.refuse(node, "forbidden", f"assigning into the module {root.id!r} is not allowed (it would "
                                               f"patch code outside this function)")
            self._check_module_chain(node, *module_chain)
            return
        chain: list[ast.Attribute] = []
        inner: ast.AST = node
        while isinstance(inner, ast.Attribute):
            chain.append(inner)
            inner = inner.value
        chain.reverse()
        self.visit(inner)  # first: an unknown root name is the clearer reason
        for link in chain:
            problem = _object_attribute_problem(link.attr)
            if problem:
                self.refuse(node, "forbidden", problem)
                return
        kind, where = self.kind_of(inner), _describe(inner)
        for link in chain:
            member = member_kind(kind, link.attr)
            if member is None:
                self.refuse(node, "forbidden", _member_problem(where, kind, link.attr) + self._rebound_hint(inner, kind))
                return
            kind, where = member, f"{where}.{link.attr}"
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            self._check_store(node, inner)

    def _rebound_hint(self, root: ast.AST, kind: Kind) -> str:
        """Why a parameter such as ``model`` counts as a generic value: it is bound again here."""
        if not isinstance(root, ast.Name) or kind is not GENERIC:
            return ""
        declared = self.param_kinds.get(root.id)
        if declared is None or declared is GENERIC:
            return ""
        return (f" ({root.id!r} is {declared.label} only while it is not bound again in the function: an "
                f"assignment, a loop variable or a nested function's parameter of that name makes it a generic "
                f"value; use another name there)")

    def _check_module_chain(self, node: ast.Attribute, module: str, chain: list[str]) -> None:
        path: Optional[str] = module
        for k, attr in enumerate(chain):
            if path is None:  # past the module part: the attribute of a class, function or constant
                value = f"{module}.{'.'.join(chain[:k])}"
                self.refuse(node, "forbidden", f"'{value}.{attr}': attributes of what a module path reaches (a class, "
                                               f"a function, a constant) are not on the allow-list; call it or use "
                                               f"it as a value")
                return
            problem, path = _resolve_module_attribute(path, attr)
            if problem:
                self.refuse(node, "forbidden", problem)
                return
        if path is not None:  # node is the whole chain (inner links are not visited): a module as a value
            self.refuse(node, "forbidden", f"the module '{path}' may only start an attribute path, not be used as a value")
            return
        kind = self.kind_of(node)
        if kind.is_class and id(node) not in self.class_ok:
            self._refuse_class_value(node, kind)

    def _check_store(self, node: ast.Attribute, root: ast.AST) -> None:
        """``x.attr = ...`` / ``del x.attr``: only a tensor's grad and data, never through an engine
        record, a name of the training module, a class, a function or a record kind."""
        name = root.id if isinstance(root, ast.Name) else ""
        target = self.kind_of(node.value)
        if name not in ENGINE_RECORDS and node.attr not in ASSIGNABLE_ATTRIBUTES:
            self.refuse(node, "forbidden", f"assigning the attribute {node.attr!r} is not allowed (only "
                                           f"{', '.join(sorted(ASSIGNABLE_ATTRIBUTES))} of a tensor may be set)")
        elif name in ENGINE_RECORDS:
            self.refuse(node, "forbidden", f"assigning into {name!r} is not allowed: it belongs to the training engine")
        elif name in self.module_names and name not in self.kinds:
            self.refuse(node, "forbidden", f"assigning into the training module's {name!r} is not allowed (it would "
                                           f"patch code outside this function)")
        elif target.is_class or target.members is not None:
            self.refuse(node, "forbidden", f"assigning '{_describe(node)}' is not allowed: {_describe(node.value)} is "
                                           f"{target.label}; only {', '.join(sorted(ASSIGNABLE_ATTRIBUTES))} of a "
                                           f"tensor may be set")

    def generic_visit(self, node: ast.AST) -> None:
        for statement_type, what in REFUSED_STATEMENTS.items():
            if isinstance(node, statement_type):
                self.refuse(node, "forbidden", f"{what} are not allowed in the training loop")
        super().generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        root: ast.AST = node
        while isinstance(root, (ast.Subscript, ast.Attribute)):
            root = root.value
        if isinstance(node.ctx, (ast.Store, ast.Del)) and isinstance(root, ast.Name):
            if root.id in ENGINE_RECORDS:
                self.refuse(node, "forbidden", f"assigning into {root.id!r} is not allowed: it belongs to the training engine")
            elif root.id in self.module_names and root.id not in self.kinds:
                self.refuse(node, "forbidden", f"assigning into the training module's {root.id!r} is not allowed")
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if node.name.startswith("__"):
            self.refuse(node, "forbidden", f"a function named {node.name!r} is not allowed")
        self.generic_visit(node)


def check_function_body(func: ast.FunctionDef | ast.AsyncFunctionDef, parent_tree: ast.Module) -> None:
    """Raise CodeEditError at the first construct outside the allow-list (reading order), naming its line."""
    module_names, modules = _module_level_names(parent_tree)
    for alias in modules:
        module_names.pop(alias, None)
    checker = _AllowListChecker(func, module_names, modules)
    for statement in func.body:  # the signature and decorators were compared with the parent's
        checker.visit(statement)
    for default in [*func.args.defaults, *[d for d in func.args.kw_defaults if d is not None]]:
        checker.visit(default)
    if checker.problems:
        line, _, kind, problem = min(checker.problems, key=lambda p: (p[0], p[1]))
        raise CodeEditError(kind, f"line {line} of the new function: {problem}")


# --------------------------------------------------------------------------- composing the child's module


def _function_text(source: str, node: ast.AST) -> str:
    """The lines of a top-level function, decorators included."""
    lines = source.splitlines(keepends=True)
    start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
    return "".join(lines[start:node.end_lineno])


def _same_function(a: ast.AST, b: ast.AST) -> bool:
    """Same code (comments and formatting ignored)."""
    return ast.dump(a, include_attributes=False) == ast.dump(b, include_attributes=False)


def _checked_function(base_tree: ast.Module, old: ast.AST, text: str, function_name: str) -> str:
    """``text`` normalized and checked as the new version of ``old`` (one function, same signature, allow-list)."""
    text = normalize_function_source(text)
    new = _single_function(_parse(text, "new function source"), function_name)
    _check_signature(old, new)
    check_function_body(new, base_tree)
    return text


def compose_module(base_source: str, edits: dict[str, str]) -> str:
    """``base_source`` with each function named in ``edits`` replaced by its (already checked) text."""
    base_tree = _parse(base_source, "base module")
    nodes = [n for n in base_tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name in edits]
    text = base_source
    for node in sorted(nodes, key=lambda n: n.lineno, reverse=True):  # bottom-up: line numbers stay valid
        text = _replace_function(text, node, edits[node.name])
    return text


def branch_edits(parent_source: str, base_source: str, editable: tuple[str, ...],
                 dropped: Optional[dict[str, str]] = None) -> dict[str, str]:
    """The parent's versions of the editable functions that differ from the base's, each re-checked.

    Only these flow into a child: the rest of the parent's file on disk (module-level code,
    other functions, its own EDITABLE_FUNCTIONS) is never copied. A parent function that no
    longer passes the checks (a file changed after its decision, or an edit made under an older,
    looser checker) raises CodeEditError, unless ``dropped`` is given: then the child gets the
    base's function instead, and ``dropped`` maps the function to the reason (the chain goes on
    without the unchecked code).
    """
    base_tree = _parse(base_source, "base module")
    parent_tree = _parse(parent_source, "parent's train_loop.py")
    edits: dict[str, str] = {}
    for name in editable:
        base = _top_level_function(base_tree, name)
        mine = _top_level_function(parent_tree, name)
        if base is None:
            raise CodeEditError("editable", f"the training module has no top-level function {name!r}")
        if mine is None:
            raise CodeEditError("module", f"the parent's train_loop.py lacks the function {name!r}")
        if _same_function(base, mine):
            continue
        try:
            edits[name] = _checked_function(base_tree, base, _function_text(parent_source, mine), name)
        except CodeEditError as exc:
            reason = f"the parent's {name} (an earlier edit on this branch) no longer passes the checks: {exc.reason}"
            if dropped is None:
                raise CodeEditError(exc.kind, reason) from None
            dropped[name] = reason
    return edits


def rebuild_module(parent_source: str, base_source: Optional[str] = None,
                   dropped: Optional[dict[str, str]] = None) -> str:
    """The parent's loop as a child gets it: the base module + the parent's re-checked edits
    (``dropped``: see :func:`branch_edits`)."""
    base = packaged_loop_source() if base_source is None else base_source
    editable = editable_functions(base)
    return compose_module(base, branch_edits(parent_source, base, editable, dropped))


@lru_cache(maxsize=1)
def packaged_loop_source() -> str:
    """The packaged neuralgraph/train_loop.py: what every child's module is rebuilt from."""
    from neuralgraph import PACKAGED_LOOP

    return PACKAGED_LOOP.read_text(encoding="utf-8")


def _replace_function(parent_source: str, old: ast.AST, new_function_source: str) -> str:
    """The parent text with the old function's lines (decorators included) replaced."""
    lines = parent_source.splitlines(keepends=True)
    start = min([old.lineno] + [d.lineno for d in old.decorator_list]) - 1
    end = old.end_lineno
    return "".join(lines[:start]) + new_function_source + "".join(lines[end:])


def check_code_modification(parent_source: str, function_name: str, new_source: str,
                            editable: tuple[str, ...] | None = None, *, base_source: Optional[str] = None) -> str:
    """Return the child module: the base module (default: the packaged neuralgraph/train_loop.py)
    with the parent's earlier edits and ``function_name`` replaced by ``new_source``.

    The child is composed, never copied from the parent's file: only the parent's editable
    functions that differ from the base's are taken over, and each is checked again. Raises
    CodeEditError (with ``kind`` and a reason meant for the agent) when the function is not
    editable, the new source does not parse, defines anything else, changes the signature,
    imports a module outside the allow-list, uses a forbidden construct or attribute, or the
    resulting module does not compile.
    """
    base = packaged_loop_source() if base_source is None else base_source
    base_tree = _parse(base, "base module")
    editable = editable_functions(base) if editable is None else tuple(editable)
    if function_name not in editable:
        raise CodeEditError(
            "editable", f"{function_name!r} is not editable; editable functions: {', '.join(editable) or 'none'}")
    old = _top_level_function(base_tree, function_name)
    if old is None:
        raise CodeEditError("editable", f"the training module has no top-level function {function_name!r}")
    text = _checked_function(base_tree, old, new_source, function_name)
    # the branch's earlier edits: every editable function of the base (``editable`` limits the new edit only)
    edits = branch_edits(parent_source, base, tuple(n for n in editable_functions(base) if n != function_name))
    child_source = compose_module(base, {**edits, function_name: text})
    try:
        compile(child_source, LOOP_FILE, "exec")
    except (SyntaxError, ValueError) as exc:
        raise CodeEditError("compile", f"the modified module does not compile: {exc}") from None
    return child_source


def code_diff(parent_source: str, child_source: str, label: str = LOOP_FILE) -> str:
    """Unified diff parent -> child (the ``code.diff`` stored beside the child's code)."""
    return "".join(difflib.unified_diff(
        parent_source.splitlines(keepends=True), child_source.splitlines(keepends=True),
        fromfile=f"a/{label}", tofile=f"b/{label}"))


