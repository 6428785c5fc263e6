"""The checker's per-kind attribute allow-list (issue 17): the red-team gadgets are refused with
their reasons, every attribute two hops from the real step arguments is allowed by name or
refused, the step gets read-only views, and a child's loop is rebuilt from the packaged
module (a parent file's module-level code never reaches it)."""
from __future__ import annotations

import ast
import dataclasses
import json
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from agent.codeedit import (CodeEditError, _function_text, check_code_modification, check_function_body,
                            editable_functions, packaged_loop_source, rebuild_module)
from agent.step_kinds import GENERIC, generic_attributes, member_kind, parameter_kinds

REPO = Path(__file__).resolve().parents[1]
PACKAGED = packaged_loop_source()
TRAIN_STEP = "def train_step(model, optimizer, data, starts, ctx):\n"
#: Libraries whose methods reached files, code or the engine's state in the red-team run.
INTERNALS = ("pydantic", "numpy", "torch_geometric")


def refusal(body: str, header: str = TRAIN_STEP, function: str = "train_step") -> CodeEditError:
    source = header + textwrap.indent(textwrap.dedent(body), "    ")
    with pytest.raises(CodeEditError) as info:
        check_code_modification(PACKAGED, function, source)
    return info.value


def test_every_packaged_editable_function_passes_the_checker_unchanged():
    tree = ast.parse(PACKAGED)
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    for name in editable_functions(PACKAGED):
        assert check_code_modification(PACKAGED, name, _function_text(PACKAGED, functions[name])) == PACKAGED, name


# --------------------------------------------------------------------------- the red-team gadgets
GADGETS = {
    "inspector.eval_type": ('model.inspector.eval_type("__import__(\'os\').system(\'id\')")\n',
                            "attribute 'inspector' of model is not on the allow-list; model is the model, which "
                            "offers only: W, W_L, W_R, a,"),
    "inspector.get_source": ("return model.inspector.get_source()\n", "attribute 'inspector' of model"),
    "cfg.parse_raw": ('ctx.cfg.parse_raw(b"x", proto="pickle", allow_pickle=True)\n',
                      "attribute 'parse_raw' of ctx.cfg is not on the allow-list; ctx.cfg is the config (read-only "
                      "fields), which offers only: analysis, claude, description, graph_model, reference, simulation, training"),
    "cfg.training.parse_file": ('ctx.cfg.training.parse_file("/etc/passwd")\n',
                                "attribute 'parse_file' of ctx.cfg.training is not on the allow-list; "
                                "ctx.cfg.training is the config section cfg.training (read-only fields)"),
    "numpy().dump": ('data.u.cpu().numpy().dump("/tmp/payload")\n',
                     "attribute 'numpy' of data.u.cpu(): raw memory, storage, shared memory, hooks, per-element "
                     "callbacks and numpy are out of the training loop's reach"),
    "T = torch.Tensor": ("T = torch.Tensor\nT.grad = None\n",
                         "the class 'torch.Tensor' may only be called or named in isinstance(), not bound to a name"),
    "plateau_u_range.clear": ("ctx.cfg.analysis.plateau_u_range.clear()\n",
                              "ctx.cfg.analysis.plateau_u_range is the config value cfg.analysis.plateau_u_range "
                              "(read-only): no attributes or methods ('clear' refused)"),
    "register_buffer": ('model.register_buffer("x", torch.ones(150_000_000))\n',
                        "attribute 'register_buffer' of model is not on the allow-list"),
}


@pytest.mark.parametrize("name", list(GADGETS))
def test_each_red_team_gadget_is_refused_with_its_reason(name):
    body, reason = GADGETS[name]
    error = refusal(body)
    assert error.kind == "forbidden"
    assert reason in error.reason, error.reason
    assert error.reason.startswith("line 2 of the new function"), error.reason


# each: (body, the reason's words); aliases and containers must not widen what a value offers
ALIASES = {
    "from torch import Tensor": ("from torch import Tensor\nTensor.grad = None\n", "the class 'torch.Tensor' may only"),
    "torch.Tensor.grad =": ("torch.Tensor.grad = None\n", "assigning into the module 'torch' is not allowed"),
    "class attribute": ("f = torch.Tensor.add\n", "'torch.Tensor.add': attributes of what a module path reaches"),
    "optimizer class as value": ("opt = torch.optim.SGD\nreturn opt\n", "the class 'torch.optim.SGD' may only"),
    "module class as value": ("F = _ODEField\nreturn F\n", "the class '_ODEField' of the training module may only"),
    "alias of a config list": ("r = ctx.cfg.analysis.plateau_u_range\nr.clear()\n",
                               "r is the config value cfg.analysis.plateau_u_range (read-only)"),
    "model through a list": ("m = [model][0]\nreturn m.inspector\n",
                             "attribute 'inspector' of m (a tensor or plain value) is not on the allow-list"),
    "config through a list": ("c = [ctx.cfg][0]\nreturn c.parse_raw(b'')\n", "attribute 'parse_raw' of c"),
    "sub-module": ("model.lin_edge.register_forward_hook(print)\n",
                   "attribute 'register_forward_hook' of model.lin_edge is not on the allow-list"),
    "own torch.nn module": ("lin = torch.nn.Linear(2, 3)\nlin.load_state_dict({})\n",
                            "attribute 'load_state_dict' of lin is not on the allow-list; lin is a torch.nn module"),
    "grad_fn": ("return data.u.grad_fn.next_functions\n", "attribute 'grad_fn' of data.u"),
    "register_hook": ("model.W.register_hook(print)\n", "attribute 'register_hook' of model.W"),
    "optimizer.state_dict": ("return optimizer.state_dict()\n",
                             "optimizer is the optimizer, which offers only: param_groups, step, zero_grad"),
    "record field store": ("model.W = None\n", "assigning the attribute 'W' is not allowed (only data, grad"),
    "store on a torch function": ("f = torch.relu\nf.data = 1\n", "f is a function: no attributes or methods"),
    "store on a module-level function": ("prediction_loss.data = 1\n",
                                         "prediction_loss is a function: no attributes or methods ('data' refused)"),
    "model's grad": ("model.grad = None\n", "attribute 'grad' of model is not on the allow-list"),
    "data is not callable": ("return data.u()\n", "calling 'data.u' is not allowed: it is a tensor or plain value"),
    "a field is not a method": ("return ctx.epoch()\n", "calling 'ctx.epoch' is not allowed: it is a read-only"),
    "unknown callable": ("fns = [torch.relu]\nreturn fns[0](data.u)\n", "calling 'fns[0]' is not allowed"),
}


@pytest.mark.parametrize("name", list(ALIASES))
def test_aliases_and_containers_do_not_widen_the_allow_list(name):
    body, reason = ALIASES[name]
    error = refusal(body)
    assert error.kind == "forbidden"
    assert reason in error.reason, error.reason


def test_what_a_training_step_needs_is_still_accepted():
    body = '''\
    """Realistic: MSE, clipping, a per-step lr, weight projection, an own module and helpers."""
    from torch.optim.lr_scheduler import ReduceLROnPlateau
    tr = ctx.cfg.training
    optimizer.zero_grad(set_to_none=True)
    loss_fn = torch.nn.MSELoss()
    act = torch.tanh if ctx.mode == "single" else torch.relu
    pred = model(data.u[starts])
    low, high = ctx.cfg.analysis.plateau_u_range
    scale = data.u_scale * (high - low) + act(torch.zeros(())).item()
    loss = loss_fn(pred, data.du[starts]) + tr.coeff_W_L1 * model.dense_W().abs().sum() * scale
    loss = loss + sum(w.pow(2).sum() for w in model.lin_edge.weight_matrices())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * 0.999 if ctx.step > 10 else group["lr"]
    optimizer.step()
    with torch.no_grad():
        model.W.data = model.W.data.clamp(-1, 1)
    for p in model.parameters():
        if p.grad is not None and not torch.isfinite(p.grad).all():
            p.grad = None
    if isinstance(ctx.scheduler, (ReduceLROnPlateau, torch.optim.lr_scheduler.StepLR)):
        ctx.scheduler.step()
    return loss.detach()
    '''
    child = check_code_modification(PACKAGED, "train_step", TRAIN_STEP + textwrap.indent(textwrap.dedent(body), "    "))
    compile(child, "train_loop.py", "exec")


# --------------------------------------------------------------------------- the real objects, two hops


@pytest.fixture(scope="module")
def step_arguments(tiny_dataset, tmp_path_factory):
    """The objects the loop's functions receive, built by the real Trainer (tiny config)."""
    from neuralgraph.training import Trainer

    cfg, data_dir = tiny_dataset
    trainer = Trainer(cfg, data_dir, tmp_path_factory.mktemp("fuzz") / "run")
    scheduler = torch.optim.lr_scheduler.StepLR(trainer.optimizer, step_size=10)  # what an edited build_scheduler returns
    ctx = dataclasses.replace(trainer._context("recurrent", 1), scheduler=scheduler)
    return {"model": trainer.model, "optimizer": trainer.optimizer, "data": trainer.data, "ctx": ctx,
            "cfg": trainer.cfg_view, "tr": trainer.cfg_view.training, "generator": trainer.generator,
            "starts": torch.zeros(3, dtype=torch.long)}


#: Which editable function has each argument (the parameters' kinds come from their names).
SIGNATURES = {"model": "train_step(model, optimizer, data, starts, ctx)", "optimizer": "train_step(model, optimizer, data, starts, ctx)",
              "data": "train_step(model, optimizer, data, starts, ctx)", "ctx": "train_step(model, optimizer, data, starts, ctx)",
              "starts": "train_step(model, optimizer, data, starts, ctx)", "cfg": "build_optimizer(model, cfg)",
              "tr": "ode_unroll(model, u0, n_steps, delta_t, tr)",
              "generator": "sample_batch_starts(n_train_frames, horizon, batch_size, generator)"}


def _public(obj) -> list[str]:
    return [n for n in dir(obj) if not n.startswith("_")]


def _get(obj, attr):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation notes of properties such as a 1-D tensor's .T
            return True, getattr(obj, attr)
    except Exception:  # e.g. .H of a 1-D tensor, .imag of a real one
        return False, None


def _owner(obj, attr: str) -> str:
    """Module of the class that defines ``attr`` (or of the value, for an instance attribute)."""
    for cls in type(obj).__mro__:
        if attr in vars(cls):
            return cls.__module__ or ""
    return type(getattr(obj, attr)).__module__ or ""


def _accepted(arg: str, path: str, base_tree: ast.Module) -> tuple[bool, str]:
    func = ast.parse(f"def {SIGNATURES[arg]}:\n    x = {arg}.{path}\n").body[0]
    try:
        check_function_body(func, base_tree)
        return True, ""
    except CodeEditError as exc:
        return False, exc.reason


def _on_allow_list(arg: str, path: list[str]) -> bool:
    """Whether the per-kind tables of agent.step_kinds allow ``arg.path`` (the checker's source of truth)."""
    kind = parameter_kinds().get(arg, GENERIC)
    for attr in path:
        kind = member_kind(kind, attr)
        if kind is None:
            return False
    return True


def test_every_attribute_two_hops_from_the_step_arguments_is_allowed_by_name_or_refused(step_arguments):
    """dir() of each argument, then dir() of each attribute's value: ``x = arg.a`` / ``x = arg.a.b``.

    Accepted means on the per-kind allow-list, and never a member defined by pydantic, numpy or
    torch_geometric (nor such an object itself); refused means a reason naming the attribute.
    """
    base_tree = ast.parse(PACKAGED)
    checked, accepted, internals = 0, [], []
    for arg, obj in step_arguments.items():
        for a in _public(obj):
            hops = [[a]]
            ok, value = _get(obj, a)
            if ok:
                hops += [[a, b] for b in _public(value)]
            for path in hops:
                checked += 1
                allowed, reason = _accepted(arg, ".".join(path), base_tree)
                assert allowed == _on_allow_list(arg, path), (arg, path, reason)
                if not allowed:
                    assert f"'{path[0]}'" in reason or f"'{path[-1]}'" in reason, (arg, path, reason)
                    continue
                accepted.append(f"{arg}.{'.'.join(path)}")
                holder = obj if len(path) == 1 else value
                ok, leaf = _get(holder, path[-1])
                if ok and (_owner(holder, path[-1]).startswith(INTERNALS)
                           or (type(leaf).__module__ or "").startswith(INTERNALS)):
                    internals.append(f"{arg}.{'.'.join(path)}")
    assert internals == []
    assert checked > 5000  # really two hops over the real objects (tensors alone offer ~600 names)
    # what the contract names is allowed; the red-team gadgets are not
    for path in ("model.lin_edge.weight_matrices", "model.dense_W", "optimizer.param_groups", "ctx.cfg.training",
                 "ctx.scheduler.step", "data.u.abs", "tr.time_step", "cfg.training.coeff_W_L1", "ctx.device.type"):
        assert path in accepted, path
    for path in ("model.inspector", "model.register_buffer", "ctx.cfg.parse_raw", "cfg.training.parse_file",
                 "data.u.numpy", "tr.model_dump", "ctx.scheduler.load_state_dict", "optimizer.state_dict"):
        assert path not in accepted, path


def _all_member_names() -> set[str]:
    """Every attribute name some kind allows (an edited function may get another object under a
    parameter's name when another edit calls it, so each name is tried on every object)."""
    from agent.step_kinds import DEVICE, MLP, NN_MODULE, SCHEDULER

    names, todo, seen = set(), [*parameter_kinds().values(), MLP, NN_MODULE, SCHEDULER, DEVICE], set()
    while todo:
        kind = todo.pop()
        if id(kind) in seen or not kind.members:
            continue
        seen.add(id(kind))
        names |= set(kind.members)
        todo += list(kind.members.values())
    return names


def test_the_generic_value_list_is_harmless_on_every_object_the_step_reaches(step_arguments):
    """Through a container any object is a 'generic value', and under a parameter's name any
    object may arrive: the names these allow must not reach pydantic, numpy or torch_geometric
    members on ANY of the objects two hops away."""
    reached = dict(step_arguments)
    for arg, obj in step_arguments.items():
        for a in _public(obj):
            ok, value = _get(obj, a)
            if ok and _on_allow_list(arg, [a]):
                reached[f"{arg}.{a}"] = value
    leaks = []
    for name, obj in reached.items():
        for attr in (generic_attributes() | _all_member_names()) & set(dir(obj)):
            try:
                owner = _owner(obj, attr)
            except Exception:
                continue
            if owner.startswith(INTERNALS):
                leaks.append(f"{name}.{attr} ({owner})")
    assert leaks == []


# --------------------------------------------------------------------------- read-only views


def test_the_step_gets_a_deep_read_only_config_and_frozen_records(step_arguments):
    from pydantic import BaseModel

    ctx, cfg, data = step_arguments["ctx"], step_arguments["cfg"], step_arguments["data"]
    assert ctx.cfg is cfg and not isinstance(cfg, BaseModel) and not isinstance(cfg.training, BaseModel)
    assert isinstance(cfg.analysis.plateau_u_range, tuple)
    assert set(_public(cfg)) == set(parameter_kinds()["cfg"].members)
    assert set(_public(cfg.training)) == set(parameter_kinds()["tr"].members)
    for attempt in (lambda: setattr(cfg.training, "n_epochs", 500), lambda: setattr(ctx, "cfg", None),
                    lambda: setattr(data, "u", data.du)):
        with pytest.raises(dataclasses.FrozenInstanceError):
            attempt()
    for method in ("parse_raw", "parse_file", "model_dump", "copy", "model_validate"):
        assert not hasattr(cfg, method) and not hasattr(cfg.training, method)


# --------------------------------------------------------------------------- the child's module is composed

SCHEDULER_EDIT = '''\
def build_scheduler(optimizer, cfg, total_steps):
    """Cosine decay (an earlier edit on this branch)."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
'''
CLIP_EDIT = '''\
def train_step(model, optimizer, data, starts, ctx):
    """Clipped gradients."""
    optimizer.zero_grad(set_to_none=True)
    loss = prediction_loss(model, data, starts, ctx) + regularisation(model, data, starts, ctx)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    optimizer.step()
    if ctx.scheduler is not None:
        ctx.scheduler.step()
    return loss.detach()
'''
PLANTED = "import os\nos.system('touch /tmp/planted-by-the-parent')\nEXTRA_GLOBAL = 42\n"


def _tampered_parent() -> str:
    """A parent whose file has a checked edit (build_scheduler) and planted module-level code."""
    parent = check_code_modification(PACKAGED, "build_scheduler", SCHEDULER_EDIT)
    return parent.replace("import torch\n", "import torch\n" + PLANTED, 1)


def test_a_parents_module_level_code_never_reaches_the_child():
    parent = _tampered_parent()
    child = check_code_modification(parent, "train_step", CLIP_EDIT)
    assert "os.system" not in child and "EXTRA_GLOBAL" not in child
    assert "CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))" in child  # the branch's edit is carried
    assert "clip_grad_norm_(model.parameters(), max_norm=1.0)" in child
    # exactly: the packaged module with the two checked functions replaced
    expected = check_code_modification(check_code_modification(PACKAGED, "build_scheduler", SCHEDULER_EDIT),
                                       "train_step", CLIP_EDIT)
    assert child == expected
    # without a new edit (a config mutation) the parent's code is rebuilt the same way
    rebuilt = rebuild_module(parent)
    assert "os.system" not in rebuilt and "CosineAnnealingLR" in rebuilt
    assert rebuilt == check_code_modification(PACKAGED, "build_scheduler", SCHEDULER_EDIT)


def test_a_parent_function_that_no_longer_passes_the_checks_is_refused():
    parent = PACKAGED.replace('    return None\n\n\ndef sample_batch_starts',
                              '    return cfg.parse_raw(b"pickle")\n\n\ndef sample_batch_starts', 1)
    assert parent != PACKAGED
    with pytest.raises(CodeEditError) as info:
        check_code_modification(parent, "train_step", CLIP_EDIT)
    assert "the parent's build_scheduler (an earlier edit on this branch) no longer passes the checks" in info.value.reason
    assert "attribute 'parse_raw' of cfg" in info.value.reason


def test_build_child_without_an_edit_drops_the_planted_code_and_shows_it_in_the_diff():
    from agent.decision import DecisionInvalid, build_child, validate_decision
    from test_agent_decision import _cfg, make, mid_block_ctx

    ctx = mid_block_ctx(editable=("build_optimizer",))
    decision = validate_decision(make(4, mutation={"parameter": "lr", "new": 1e-4}), ctx)
    plan = build_child(decision, ctx, parent_cfg=_cfg(), parent_code=_tampered_parent(), base_cfg=_cfg(),
                       next_time_step=None, child_id=7, child_dir="iter_007", policy_label="heuristic")
    assert "os.system" not in plan.code and "CosineAnnealingLR" in plan.code
    assert "-os.system('touch /tmp/planted-by-the-parent')" in plan.diff
    bad = PACKAGED.replace("    return None\n\n\ndef sample_batch_starts",
                           "    return cfg.parse_raw(b'')\n\n\ndef sample_batch_starts", 1)
    # a parent function that no longer passes the checks: the chain goes on with the packaged one, on record
    plan = build_child(decision, ctx, parent_cfg=_cfg(), parent_code=bad, base_cfg=_cfg(), next_time_step=None,
                       child_id=7, child_dir="iter_007", policy_label="heuristic")
    assert plan.code == PACKAGED and "parse_raw" in plan.diff
    assert list(plan.proposal["dropped_edits"]) == ["build_scheduler"]
    assert "attribute 'parse_raw' of cfg" in plan.proposal["dropped_edits"]["build_scheduler"]
    with pytest.raises(DecisionInvalid, match="lacks the function"):  # a file that is no loop at all is refused
        build_child(decision, ctx, parent_cfg=_cfg(), parent_code="x = 1\n", base_cfg=_cfg(), next_time_step=None,
                    child_id=7, child_dir="iter_007", policy_label="heuristic")


# --------------------------------------------------------------------------- for real, contained


@pytest.fixture(scope="module")
def smoke_cache(tmp_path_factory) -> Path:
    from agent.smoke import ensure_smoke_dataset

    cache = tmp_path_factory.mktemp("smoke_cache")
    ensure_smoke_dataset(cache)
    return cache


@pytest.mark.slow
def test_a_checked_edit_trains_for_real_on_the_views_and_the_view_stops_what_the_checker_cannot_type(
        tmp_path, smoke_cache):
    """The smoke harness (sandboxed when bwrap works) trains an edit that reads the config
    view, ctx, data and the optimizer; an edit that reaches a config list through a container
    (so the checker sees a generic value, where pop is allowed) fails on the tuple."""
    from agent.smoke import validate_and_smoke

    reads = CLIP_EDIT.replace('    """Clipped gradients."""\n', '''\
    """Clipped gradients; lr scaled by the plateau range (reads every view)."""
    low, high = ctx.cfg.analysis.plateau_u_range
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * (1.0 if ctx.cfg.training.time_step >= 1 else high - low)
''')
    edit = validate_and_smoke(PACKAGED, "train_step", reads, tmp_path / "reads", timeout_s=120, cache_dir=smoke_cache)
    assert edit.smoke.status == "ok" and edit.smoke.steps >= 1 and edit.smoke.sandboxed is True
    record = json.loads((tmp_path / "reads" / "smoke.json").read_text())
    assert record["accepted"] is True

    through_a_list = CLIP_EDIT.replace('    """Clipped gradients."""\n', '''\
    """Tries to change the engine's config through a container."""
    holder = [ctx.cfg.analysis.plateau_u_range]
    holder[0].pop()
''')
    with pytest.raises(CodeEditError) as info:
        validate_and_smoke(PACKAGED, "train_step", through_a_list, tmp_path / "list", timeout_s=120,
                           cache_dir=smoke_cache)
    assert info.value.kind == "smoke-crash"
    assert "AttributeError: 'tuple' object has no attribute 'pop'" in info.value.reason


def test_a_rebound_parameter_is_explained():
    error = refusal("def helper(model):\n    return model\nreturn model.dense_W()\n")
    assert "attribute 'dense_W' of model (a tensor or plain value)" in error.reason
    assert "'model' is the model only while it is not bound again in the function" in error.reason


@pytest.mark.parametrize("body, reason", [
    ("d = torch.nn.functional.GRID_SAMPLE_PADDING_MODES\nd.pop('zeros')\n",
     "'torch.nn.functional.GRID_SAMPLE_PADDING_MODES' is not on the allow-list"),
    ("w = torch.optim.lr_scheduler.wraps(torch.relu)\n", "'torch.optim.lr_scheduler.wraps' is not on the allow-list"),
    ("from torch.optim.lr_scheduler import partial\n", "'torch.optim.lr_scheduler.partial' is not on the allow-list"),
])
def test_module_state_and_imported_helpers_are_not_reachable_through_a_module_path(body, reason):
    error = refusal(body)
    assert reason in error.reason, error.reason
