"""The offline policy's library of code modifications of ``neuralgraph/train_loop.py``.

Each :class:`LibraryEdit` replaces ONE editable function with a new version of the SAME
signature, motivated by one of the seed's "Specific Hypotheses Worth Testing via Code":

- ``grad-clip`` (train_step): clip the global gradient norm to 1 after ``backward``;
- ``cosine-lr`` (build_scheduler): cosine decay of every learning rate to 5% over the run;
- ``huber-loss`` (prediction_loss): a Huber-type robust norm instead of the L2 norm, same
  1/(delta_t T) scaling, identical to the L2 norm while no residual is an outlier;
- ``adamw-mlp`` (build_optimizer): AdamW with decoupled weight decay on the two MLPs only.

The new sources are generated from the packaged function's own text by anchored edits (a
docstring replaced, a line inserted or replaced); an anchor that is no longer found raises
:class:`LibraryEditError`, so a change of the packaged loop shows up in the tests instead of
silently producing a stale function.

An edit applies to a node's code only while the target function is still the packaged one
(compared as ASTs): once an edit (this library's or the LLM's) changed the function on a
branch, the library never overwrites it there. So no edit is applied twice on a branch,
and a loop file that differs from the packaged one gets no library edits for its changed
functions.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Optional

from agent.decision import CodeModification
from neuralgraph import PACKAGED_LOOP


class LibraryEditError(RuntimeError):
    """A library edit no longer fits the packaged function (an anchor was not found)."""


@lru_cache(maxsize=1)
def packaged_module_source() -> str:
    """Text of the packaged ``neuralgraph/train_loop.py``."""
    return PACKAGED_LOOP.read_text(encoding="utf-8")


def _function_node(module_source: str, name: str) -> Optional[ast.FunctionDef]:
    try:
        tree = ast.parse(module_source)
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return node
    return None


def function_source(module_source: str, name: str) -> Optional[str]:
    """Source lines of the top-level function ``name`` (decorators included), or None."""
    node = _function_node(module_source, name)
    if node is None:
        return None
    lines = module_source.splitlines(keepends=True)
    start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
    return "".join(lines[start:node.end_lineno])


def _dump(node: Optional[ast.AST]) -> Optional[str]:
    return None if node is None else ast.dump(node, include_attributes=False)


def is_packaged_function(module_source: str, name: str) -> bool:
    """True when ``name`` in ``module_source`` is the packaged function (same AST; comments ignored)."""
    mine = _dump(_function_node(module_source, name))
    return mine is not None and mine == _dump(_function_node(packaged_module_source(), name))


# --------------------------------------------------------------------------- anchored text edits


def _body_indent(source: str) -> str:
    node = _function_node(source, _function_name(source))
    line = source.splitlines()[node.body[0].lineno - 1]
    return line[: len(line) - len(line.lstrip())]


def _function_name(source: str) -> str:
    tree = ast.parse(source)
    return tree.body[0].name  # type: ignore[attr-defined]


def _indented(lines: list[str], indent: str) -> list[str]:
    return [(indent + line if line.strip() else "") + "\n" for line in lines]


def replace_docstring(source: str, doc: str, then: tuple[str, ...] = ()) -> str:
    """``source`` with its docstring replaced by ``doc``, followed by the body lines ``then``."""
    node = _function_node(source, _function_name(source))
    first = node.body[0]
    if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)):
        raise LibraryEditError(f"{node.name}: the packaged function has no docstring to replace")
    indent = _body_indent(source)
    lines = source.splitlines(keepends=True)
    new = [f'{indent}"""{doc}"""\n'] + _indented(list(then), indent)
    return "".join(lines[: first.lineno - 1] + new + lines[first.end_lineno:])


def _unique_line(source: str, stripped: str) -> int:
    hits = [i for i, line in enumerate(source.splitlines()) if line.strip() == stripped]
    if len(hits) != 1:
        raise LibraryEditError(f"{_function_name(source)}: expected the line {stripped!r} once, found it {len(hits)} times")
    return hits[0]


def replace_line(source: str, stripped: str, new_lines: tuple[str, ...]) -> str:
    """``source`` with the one line whose text is ``stripped`` replaced by ``new_lines`` (same indent)."""
    index = _unique_line(source, stripped)
    lines = source.splitlines(keepends=True)
    indent = lines[index][: len(lines[index]) - len(lines[index].lstrip())]
    return "".join(lines[:index] + _indented(list(new_lines), indent) + lines[index + 1:])


def insert_after(source: str, stripped: str, new_lines: tuple[str, ...]) -> str:
    """``source`` with ``new_lines`` inserted after the one line whose text is ``stripped``."""
    line = source.splitlines()[_unique_line(source, stripped)]
    return replace_line(source, stripped, (line.strip(),) + tuple(new_lines))


# --------------------------------------------------------------------------- the library


@dataclass(frozen=True)
class LibraryEdit:
    """One code modification: the function it replaces, why, and how its source is made."""

    name: str
    function: str
    hypothesis: str
    change_summary: str
    build: Callable[[str], str]  # packaged function source -> new function source

    def new_source(self) -> str:
        original = function_source(packaged_module_source(), self.function)
        if original is None:
            raise LibraryEditError(f"the packaged train_loop.py has no function {self.function!r}")
        return self.build(original)

    def modification(self) -> CodeModification:
        return CodeModification(function=self.function, new_source=self.new_source(),
                                hypothesis=self.hypothesis, change_summary=self.change_summary)

    def applies_to(self, module_source: str) -> bool:
        """True when the target function of ``module_source`` is still the packaged one."""
        return is_packaged_function(module_source, self.function)


def _grad_clip(src: str) -> str:
    src = replace_docstring(src, "One optimizer step on the batch starting at frames ``starts``, the global gradient "
                                 "norm clipped to 1;\n    returns the detached loss (prediction loss + regularisation).")
    return insert_after(src, "loss.backward()", (
        "# long unrolled chains give rare, very large gradients: clip their global norm",
        'torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], max_norm=1.0)',
    ))


def _cosine_lr(src: str) -> str:
    src = replace_docstring(src, "Cosine decay of every learning rate from its start value to 5% of it over "
                                 "total_steps\n    (stepped once per optimizer step by :func:`train_step`).")
    return replace_line(src, "return None", (
        "import math",
        "",
        "total = max(1, int(total_steps))",
        "",
        "def factor(step):",
        "    return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))",
        "",
        "return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)",
    ))


_NORM_RETURN = re.compile(r"^(\s*)return (.+)\.norm\(2\)\s*$")


def _strip_parens(expr: str) -> str:
    """``(a - b)`` -> ``a - b`` when the outer parentheses enclose the whole expression."""
    if not (expr.startswith("(") and expr.endswith(")")):
        return expr
    depth = 0
    for i, char in enumerate(expr):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and i < len(expr) - 1:
            return expr
    return expr[1:-1]


def _huber_loss(src: str) -> str:
    src = replace_docstring(
        src,
        "Huber-type robust norm of the prediction error of the batch (same scaling as the L2 norm).\n\n"
        "    single: f(u_k) - du_k; recurrent / ode: (u~_{k+T} - u_{k+T}) / (delta_t T). Residuals up to\n"
        "    3 x their RMS count quadratically (exactly the L2 norm), larger ones only linearly.\n    ",
        then=(
            "def robust_norm(err):",
            "    delta = (3.0 * err.detach().pow(2).mean().sqrt()).clamp_min(1e-12)",
            "    size = err.abs()",
            "    inner = torch.minimum(size, delta)",
            "    return (inner.pow(2) + 2.0 * delta * (size - inner)).sum().clamp_min(1e-30).sqrt()",
            "",
        ))
    lines, hits = [], 0
    for line in src.splitlines(keepends=True):
        match = _NORM_RETURN.match(line)
        if match:
            hits += 1
            line = f"{match.group(1)}return robust_norm({_strip_parens(match.group(2))})\n"
        lines.append(line)
    if hits != 2:
        raise LibraryEditError(f"prediction_loss: expected 2 'return ....norm(2)' lines, found {hits}")
    return "".join(lines)


def _adamw_mlp(src: str) -> str:
    src = replace_docstring(src, "AdamW with three learning rates: W, the two MLPs, the embeddings; decoupled weight "
                                 "decay 1e-2\n    on the MLPs only (W keeps its own L1 penalty), no scheduler.")
    src = insert_after(src, 'groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]', (
        'decay = {"W": 0.0, "mlp": 1e-2, "embedding": 0.0}',
        'groups = [{**g, "weight_decay": decay[g["name"]]} for g in groups]',
    ))
    return replace_line(src, 'return torch.optim.Adam([g for g in groups if g["params"]], fused=True)',
                        ('return torch.optim.AdamW([g for g in groups if g["params"]], fused=True)',))


#: The library, in a fixed order (the policy's random choice is made over this order).
LIBRARY: tuple[LibraryEdit, ...] = (
    LibraryEdit(
        "grad-clip", "train_step",
        "Long recurrent chains (time_step >= 4) cause exploding gradients that make W jump; clipping the "
        "global gradient norm to 1 stabilises the updates.",
        "train_step: clip_grad_norm_(all parameters, max_norm=1.0) between backward() and optimizer.step()",
        _grad_clip),
    LibraryEdit(
        "cosine-lr", "build_scheduler",
        "A fixed learning rate is suboptimal: large steps early, small steps late let W settle; cosine decay "
        "of every learning rate to 5% should raise the final connectivity_R2.",
        "build_scheduler: LambdaLR cosine decay from the start rates to 5% over the run (was: no scheduler)",
        _cosine_lr),
    LibraryEdit(
        "huber-loss", "prediction_loss",
        "The L2 loss is too sensitive to outliers (rare large residuals dominate the gradient); a Huber-type "
        "robust norm keeps the 1/(delta_t T) scaling but weighs residuals beyond 3 x RMS linearly.",
        "prediction_loss: L2 norm -> Huber-type robust norm (quadratic up to 3 x RMS of the residuals, then linear)",
        _huber_loss),
    LibraryEdit(
        "adamw-mlp", "build_optimizer",
        "Adam without weight decay lets the MLPs (lin_edge, lin_phi) grow and absorb scale that belongs to W; "
        "AdamW with decoupled weight decay on the MLPs only should keep W identifiable.",
        "build_optimizer: Adam -> AdamW, weight_decay 1e-2 on the MLP group (0 for W and embeddings)",
        _adamw_mlp),
)
