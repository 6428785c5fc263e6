"""What each object an editable training-loop function receives offers it: the checker's
allow-list of object ATTRIBUTES, per kind of object (see :mod:`agent.codeedit`).

Why per kind: "any public attribute" was the hole. The model is a torch_geometric
``MessagePassing`` (``model.inspector.eval_type(...)`` evaluates a string), the config was a
pydantic model (``parse_raw(..., proto="pickle")`` unpickles, ``parse_file`` reads any file),
a tensor leads to numpy (``.numpy().dump(path)`` writes a file). So every value the checker
can name has a :class:`Kind` that lists what it offers:

- the step's parameters by name (the signatures are fixed): ``model`` (:data:`MODEL`: the
  members the loop contract names), ``optimizer`` (step, zero_grad, param_groups), ``ctx``,
  ``data``, ``cfg`` / ``tr`` (their declared fields only, read-only, no methods: the engine
  hands them frozen views, :mod:`neuralgraph.step_views`), ``generator`` (nothing);
- what the allowed modules give: torch.nn modules, optimizers and schedulers built by the
  step, functions; a class reached through a module path may only be called or named in
  ``isinstance`` (bound to a name, its attributes could be assigned: ``T = torch.Tensor;
  T.grad = None`` patched torch for the whole trainer);
- everything else (local tensors, numbers, lists, what a call returns, what a loop yields)
  is :data:`GENERIC`: torch.Tensor's numeric methods and properties minus memory, storage,
  hooks and numpy (:data:`TENSOR_DENIED_ATTRIBUTES`), plus a few list/dict methods. This
  list is what every object can be reached as through a container or an alias, so it must
  be harmless on every object the step can reach (tests/test_checker_gadgets.py checks that
  on the real objects).
"""
from __future__ import annotations

import importlib
import types
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Optional


@dataclass(eq=False)
class Kind:
    """What the checker knows about a value.

    ``members``: attribute name -> Kind of its value; None means the generic list
    (:func:`generic_attributes`). ``result``: the Kind a call returns (None: not callable).
    ``is_class``: a class, which may only be called or named in ``isinstance``.
    """

    label: str
    members: Optional[dict[str, "Kind"]] = None
    result: Optional["Kind"] = None
    is_class: bool = False

    @property
    def callable(self) -> bool:
        return self.result is not None


#: Tensor attributes refused although torch.Tensor has them: raw memory and storage, shared
#: memory, hooks that run code later in the engine, per-element Python callbacks, numpy, the
#: autograd graph's internals (grad_fn reaches saved tensors), unchecked views.
TENSOR_DENIED_ATTRIBUTES: frozenset[str] = frozenset({
    "numpy", "data_ptr", "const_data_ptr", "storage", "untyped_storage", "storage_offset", "storage_type",
    "share_memory_", "is_shared", "pin_memory", "record_stream", "set_", "is_set_to", "as_strided",
    "as_strided_", "as_strided_scatter", "as_subclass", "register_hook", "register_post_accumulate_grad_hook",
    "grad_fn", "apply_", "map_", "map2_", "module_load", "new", "unsafe_chunk", "unsafe_split",
    "unsafe_split_with_sizes", "sparse_resize_", "sparse_resize_and_clear_", "resize_as_sparse_", "reinforce",
    "volatile",
})
#: Beyond the tensor's: what local lists and dicts (param_groups included) and torch.finfo need.
VALUE_HELPER_ATTRIBUTES: frozenset[str] = frozenset({
    "append", "extend", "insert", "pop", "items", "keys", "values", "get", "index", "eps", "tiny", "resolution",
})


@lru_cache(maxsize=None)
def generic_attributes() -> frozenset[str]:
    """torch.Tensor's public attributes minus TENSOR_DENIED_ATTRIBUTES, plus VALUE_HELPER_ATTRIBUTES."""
    import torch  # lazy: only a check that meets an attribute needs it

    tensor = {n for n in dir(torch.Tensor) if not n.startswith("_")}
    return frozenset((tensor - TENSOR_DENIED_ATTRIBUTES) | VALUE_HELPER_ATTRIBUTES)


GENERIC = Kind("a tensor or plain value")
#: An allowed attribute of a GENERIC value: a method or a property, so callable, and generic.
GENERIC_MEMBER = Kind("a tensor's or plain value's member", result=GENERIC)
VALUE = Kind("a read-only field value", members={})
FUNCTION = Kind("a function", members={}, result=GENERIC)
METHOD = Kind("an allowed method", members={}, result=GENERIC)
GENERATOR = Kind("the random generator (pass it as generator=...)", members={})
DEVICE = Kind("a device", members={"type": VALUE, "index": VALUE})

_MODULE_METHODS = ("forward", "parameters", "named_parameters", "train", "eval", "zero_grad")
MLP = Kind("an MLP of the model", members={**{m: METHOD for m in _MODULE_METHODS}, "weight_matrices": METHOD},
           result=GENERIC)
#: A torch.nn module the step builds itself (torch.nn.Linear(...)), or a class of the training module.
NN_MODULE = Kind("a torch.nn module", members={**{m: METHOD for m in _MODULE_METHODS}, "weight": GENERIC,
                                               "bias": GENERIC}, result=GENERIC)
#: The members of neuralgraph.model.SignalPropagation the loop contract names (train_loop.py).
MODEL = Kind("the model", members={
    **{m: METHOD for m in _MODULE_METHODS},
    **{m: METHOD for m in ("connectivity_parameters", "mlp_parameters", "embedding_parameters", "dense_W", "raw_W",
                           "edge_features", "node_messages", "node_update", "aggregate_messages")},
    **{t: GENERIC for t in ("W", "W_L", "W_R", "a")},
    "lin_edge": MLP, "lin_phi": MLP,
    **{v: VALUE for v in ("n_neurons", "embedding_dim", "low_rank", "edge_input", "training")},
}, result=GENERIC)
OPTIMIZER = Kind("the optimizer", members={"step": METHOD, "zero_grad": METHOD, "param_groups": GENERIC})
SCHEDULER = Kind("the learning-rate scheduler", members={"step": METHOD, "get_last_lr": METHOD})
def _data_kind() -> Kind:
    """The engine's TrainingData (the one owner of its fields): tensors are generic values, the rest plain.

    Built on first use (the engine imports torch; a decide that meets no code edit never needs it)."""
    from neuralgraph.training import TrainingData

    members = {f.name: GENERIC if str(f.type).endswith("Tensor") else VALUE for f in fields(TrainingData)}
    return Kind("the training data (read-only)", members=members)


def _config_kind(path: str, schema: dict[str, Optional[dict]]) -> Kind:
    """Kinds of a config view: sections offer their fields, values nothing (read-only, no methods)."""
    members = {name: (_config_kind(f"{path}.{name}", sub) if sub is not None
                      else Kind(f"the config value {path}.{name} (read-only)", members={}))
               for name, sub in schema.items()}
    label = "the config (read-only fields)" if path == "cfg" else f"the config section {path} (read-only fields)"
    return Kind(label, members=members)


@lru_cache(maxsize=None)
def parameter_kinds() -> dict[str, Kind]:
    """Kinds of the editable functions' parameters, by name (their signatures are fixed)."""
    from neuralgraph.config import ExperimentConfig
    from neuralgraph.step_views import view_schema

    cfg = _config_kind("cfg", view_schema(ExperimentConfig))
    ctx = Kind("the step context (read-only fields)", members={
        "cfg": cfg, "scheduler": SCHEDULER, "device": DEVICE,
        **{v: VALUE for v in ("epoch", "step", "step_in_epoch", "iterations_per_epoch", "n_epochs", "mode", "horizon")},
    })
    return {"model": MODEL, "optimizer": OPTIMIZER, "data": _data_kind(), "ctx": ctx, "cfg": cfg,
            "tr": cfg.members["training"], "generator": GENERATOR}


def member_kind(kind: Kind, attr: str) -> Optional[Kind]:
    """The Kind of ``value.attr`` for a value of ``kind``; None when the attribute is not allowed."""
    if kind.members is None:
        return GENERIC_MEMBER if attr in generic_attributes() else None
    return kind.members.get(attr)


def join(kinds: list[Kind]) -> Kind:
    """One Kind for a name bound several times: the common one, else the generic (the narrowest)."""
    if not kinds:
        return GENERIC
    first = kinds[0]
    if all(k is first for k in kinds):
        return first
    if all(k.callable and not k.is_class and k.members == {} for k in kinds):
        return FUNCTION
    return GENERIC


@lru_cache(maxsize=None)
def module_value_kind(path: str, attr: str) -> Kind:
    """Kind of the allowed module value ``path.attr`` (a class, a function or a constant)."""
    import torch

    value = getattr(importlib.import_module(path), attr)
    if isinstance(value, type):
        return Kind(f"the class '{path}.{attr}'", members={}, result=_instance_kind(path, value), is_class=True)
    if callable(value) and not isinstance(value, types.ModuleType) and not isinstance(value, torch.dtype):
        return FUNCTION
    return GENERIC


def _instance_kind(path: str, cls: type) -> Kind:
    import torch

    if path.startswith("torch.optim.lr_scheduler") or issubclass(cls, torch.optim.lr_scheduler.LRScheduler):
        return SCHEDULER
    if issubclass(cls, torch.optim.Optimizer):
        return OPTIMIZER
    if issubclass(cls, torch.nn.Module):
        return NN_MODULE
    if cls is torch.Generator:
        return GENERATOR
    if cls is torch.device:
        return DEVICE
    return GENERIC


def local_class_kind(name: str) -> Kind:
    """A class defined by the training module itself (e.g. its torch.nn.Module for torchdiffeq)."""
    return Kind(f"the class '{name}' of the training module", members={}, result=NN_MODULE, is_class=True)


def describe_members(kind: Kind, limit: int = 40) -> str:
    names = sorted(kind.members or {})
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
