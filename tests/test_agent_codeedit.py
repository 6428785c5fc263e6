"""Code modifications of the editable training module: static refusals, the smoke run, the diff."""
from __future__ import annotations

import ast
import json
import os
import textwrap
import time
from pathlib import Path

import pytest

from agent.codeedit import CodeEditError, check_code_modification, code_diff, editable_functions
from agent.smoke import ensure_smoke_dataset, validate_and_smoke

REPO = Path(__file__).resolve().parents[1]
TRAIN_LOOP = REPO / "neuralgraph" / "train_loop.py"

# A small stand-in for the training module: the static checks only read its text.
PARENT = textwrap.dedent('''\
    """Editable loop (test copy)."""
    import os
    from pathlib import Path

    import torch

    EDITABLE_FUNCTIONS = ("build_scheduler", "prediction_loss")


    def build_scheduler(optimizer, cfg, total_steps):
        """Constant rates."""
        return None


    def prediction_loss(model, data, starts, ctx, *, scale=1.0, **extra):
        return (model(data.u[starts]) - data.du[starts]).norm(2) * scale


    def _engine_helper():
        return Path(os.getcwd())
    ''')

GOOD_SCHEDULER = '''\
def build_scheduler(optimizer, cfg, total_steps):
    """Cosine decay of every learning rate."""
    import math
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
'''


def refused(new_source: str, function: str = "build_scheduler", parent: str = PARENT) -> CodeEditError:
    with pytest.raises(CodeEditError) as info:
        check_code_modification(parent, function, new_source, base_source=parent)
    return info.value


def test_accepted_edit_replaces_only_that_function():
    child = check_code_modification(PARENT, "build_scheduler", GOOD_SCHEDULER, base_source=PARENT)
    tree = ast.parse(child)
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "CosineAnnealingLR" in ast.unparse(functions["build_scheduler"])
    assert ast.get_source_segment(child, functions["prediction_loss"]) in PARENT
    # everything outside the function is byte-identical
    assert child.startswith(PARENT.split("def build_scheduler")[0])
    assert child.endswith(PARENT.split("return None\n", 1)[1])
    assert editable_functions(child) == ("build_scheduler", "prediction_loss")


def test_llm_style_fenced_and_indented_source_is_accepted():
    fenced = "```python\n" + textwrap.indent(GOOD_SCHEDULER, "    ") + "```"
    child = check_code_modification(PARENT, "build_scheduler", fenced, base_source=PARENT)
    assert "CosineAnnealingLR" in child
    compile(child, "x", "exec")


@pytest.mark.parametrize("body, expected", [
    ("import os\n    return None", "import of 'os' is not allowed"),
    ("import subprocess\n    return subprocess.run(['ls'])", "import of 'subprocess' is not allowed"),
    ("from socket import socket\n    return None", "import of 'socket' is not allowed"),
    ("import requests\n    return None", "import of 'requests' is not allowed"),
    ("from . import model\n    return None", "relative imports are not allowed"),
])
def test_forbidden_import_is_refused(body, expected):
    err = refused(f"def build_scheduler(optimizer, cfg, total_steps):\n    {body}\n")
    assert err.kind == "import"
    assert expected in err.reason
    if "relative" not in expected:
        assert "allowed modules: math, torch, torch.autograd, torch.nn" in err.reason


@pytest.mark.parametrize("body, expected", [
    ("return os.system('rm -rf /')", "use of 'os'"),
    ("return Path('/etc/passwd').read_text()", "use of 'Path'"),  # bound from pathlib by the parent
    ("return torch.os.getcwd()", "'torch.os' is not on the allow-list"),
    ("return open('/etc/passwd').read()", "use of 'open' (not among the allowed builtins)"),
    ("return eval('1 + 1')", "use of 'eval'"),
    ("return exec('x = 1')", "use of 'exec'"),
    ("return __import__('os')", "interpreter name '__import__'"),
    ("return globals()['torch']", "use of 'globals'"),
    ("return torch.__class__.__subclasses__()", "names starting with an underscore"),
    ("return getattr(torch, '__dict__')", "use of 'getattr'"),
    ("return getattr(torch, 'o' + 's')", "use of 'getattr'"),
    ("global EDITABLE_FUNCTIONS\n    EDITABLE_FUNCTIONS = ()", "'global' statements"),
    ("breakpoint()", "use of 'breakpoint'"),
    ("return torch.load('/tmp/evil.pt')", "'torch.load' is not on the allow-list"),
    ("return torch.utils.cpp_extension.load_inline('x', '')", "'torch.utils' is not on the allow-list"),
    ("return numpy.ctypeslib", "use of 'numpy'"),
])
def test_os_subprocess_and_escape_hatches_are_refused(body, expected):
    err = refused(f"def build_scheduler(optimizer, cfg, total_steps):\n    {body}\n")
    assert err.kind == "forbidden"
    assert expected in err.reason
    assert "line 2 of the new function" in err.reason


@pytest.mark.parametrize("signature", [
    "build_scheduler(optimizer, cfg)",                      # dropped a parameter
    "build_scheduler(optimizer, cfg, total_steps, extra)",  # added one
    "build_scheduler(optimizer, cfg, steps)",               # renamed one
    "build_scheduler(optimizer, cfg, total_steps=10)",      # added a default
    "build_scheduler(optimizer, cfg, *total_steps)",        # varargs
])
def test_changed_signature_is_refused(signature):
    err = refused(f"def {signature}:\n    return None\n")
    assert err.kind == "signature"
    assert "the signature must stay build_scheduler(optimizer, cfg, total_steps)" in err.reason


def test_ordinary_names_that_resemble_modules_are_accepted():
    # 'signal', 'code', 'io' are common variable names; only real module access is refused
    new = ("def build_scheduler(optimizer, cfg, total_steps):\n"
           "    signal, code, io = 1, 2, 3\n"
           "    for group in optimizer.param_groups:\n"
           "        group['lr'] = group['lr'] * (signal + code + io) / 6\n"
           "    return None\n")
    assert "(signal + code + io) / 6" in check_code_modification(PARENT, "build_scheduler", new, base_source=PARENT)


@pytest.mark.parametrize("call", ["optimizer.state_dict()", "optimizer.load_state_dict({})"])
def test_optimizer_offers_only_step_zero_grad_and_param_groups(call):
    err = refused(f"def build_scheduler(optimizer, cfg, total_steps):\n    {call}\n    return None\n")
    assert err.kind == "forbidden"
    assert "optimizer is the optimizer, which offers only: param_groups, step, zero_grad" in err.reason


def test_changed_keyword_only_default_is_refused():
    new = "def prediction_loss(model, data, starts, ctx, *, scale=2.0, **extra):\n    return 0\n"
    err = refused(new, function="prediction_loss")
    assert err.kind == "signature"
    assert "scale=1.0" in err.reason and "scale=2.0" in err.reason


def test_another_function_is_refused():
    # not in EDITABLE_FUNCTIONS
    err = refused("def _engine_helper():\n    return None\n", function="_engine_helper")
    assert err.kind == "editable"
    assert "'_engine_helper' is not editable; editable functions: build_scheduler, prediction_loss" in err.reason
    # the source defines a different function than the one named
    err = refused("def prediction_loss(model, data, starts, ctx, *, scale=1.0, **extra):\n    return 0\n")
    assert err.kind == "shape"
    assert "defines 'prediction_loss', but the modification names 'build_scheduler'" in err.reason
    # two functions at once
    err = refused(GOOD_SCHEDULER + "\n\ndef helper():\n    return 1\n")
    assert err.kind == "shape"
    assert "def helper (line" in err.reason


def test_top_level_code_beside_the_function_is_refused():
    err = refused("import torch\n" + GOOD_SCHEDULER)
    assert err.kind == "shape"
    assert "import statement (line 1)" in err.reason


def test_syntax_error_is_refused_with_its_line():
    err = refused("def build_scheduler(optimizer, cfg, total_steps)\n    return None\n")
    assert err.kind == "syntax"
    assert "new function source is not valid Python" in err.reason
    assert "line 1" in err.reason


def test_parent_without_editable_functions_is_refused():
    err = refused(GOOD_SCHEDULER, parent="def build_scheduler(optimizer, cfg, total_steps):\n    return None\n")
    assert err.kind == "editable"
    assert "no literal EDITABLE_FUNCTIONS" in err.reason


def test_explicit_editable_list_overrides_the_module():
    child = check_code_modification(PARENT, "build_scheduler", GOOD_SCHEDULER, editable=("build_scheduler",),
                                    base_source=PARENT)
    assert "CosineAnnealingLR" in child
    err = pytest.raises(CodeEditError, check_code_modification, PARENT, "build_scheduler", GOOD_SCHEDULER,
                        editable=("prediction_loss",), base_source=PARENT).value
    assert err.kind == "editable"


def test_code_diff_is_a_unified_diff_of_the_change():
    child = check_code_modification(PARENT, "build_scheduler", GOOD_SCHEDULER, base_source=PARENT)
    diff = code_diff(PARENT, child, "iter_004/train_loop.py")
    assert diff.startswith("--- a/iter_004/train_loop.py\n+++ b/iter_004/train_loop.py\n@@")
    assert "-    return None\n" in diff
    assert "+    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))\n" in diff
    assert code_diff(PARENT, PARENT) == ""


# --------------------------------------------------------------------------- smoke runs (subprocesses)
# Each runs `python -m neuralgraph train` on the cached 16-neuron dataset (a few seconds each).


@pytest.fixture(scope="module")
def smoke_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("smoke_cache")
    ensure_smoke_dataset(cache)
    return cache


def loop_source() -> str:
    return TRAIN_LOOP.read_text(encoding="utf-8")


def train_step_with(body: str) -> str:
    """A train_step of the real training module with the given body (signature kept)."""
    return "def train_step(model, optimizer, data, starts, ctx):\n" + textwrap.indent(textwrap.dedent(body), "    ")


def test_smoke_dataset_is_simulated_once_and_reused(smoke_cache):
    first = ensure_smoke_dataset(smoke_cache)
    stamp = (first / "metadata.json").stat().st_mtime_ns
    again = ensure_smoke_dataset(smoke_cache)
    assert again == first and (again / "metadata.json").stat().st_mtime_ns == stamp
    assert (first / "u.npy").is_file() and (first / "W.npy").is_file()
    assert [p.name for p in smoke_cache.iterdir() if p.name.startswith(".smoke_building_")] == []


@pytest.mark.slow
def test_accepted_edit_runs_and_an_endless_loop_is_refused_by_timeout(tmp_path, smoke_cache):
    new = GOOD_SCHEDULER.replace('"""Cosine decay of every learning rate."""', '"""Cosine decay (smoke test)."""')
    edit = validate_and_smoke(loop_source(), "build_scheduler", new, tmp_path / "good",
                              timeout_s=120, cache_dir=smoke_cache)
    assert "CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))" in edit.child_source
    assert edit.smoke.status == "ok" and edit.smoke.steps >= 1
    assert edit.smoke.final_loss == edit.smoke.final_loss  # finite, not NaN
    record = json.loads((tmp_path / "good" / "smoke.json").read_text())
    assert record["accepted"] is True
    assert (tmp_path / "good" / "train_loop.py").read_text() == edit.child_source

    # Same module, but train_step never returns. The timeout is well above what the accepted
    # run needed, so only the endless loop can explain hitting it.
    endless = train_step_with("""\
        while True:
            optimizer.zero_grad(set_to_none=True)
        """)
    timeout = round(1.5 * edit.smoke.wall_s + 2, 1)
    started = time.perf_counter()
    with pytest.raises(CodeEditError) as info:
        validate_and_smoke(loop_source(), "train_step", endless, tmp_path / "endless",
                           timeout_s=timeout, cache_dir=smoke_cache)
    assert info.value.kind == "smoke-timeout"
    assert f"did not finish within {timeout:g} s" in info.value.reason
    assert time.perf_counter() - started < timeout + 10  # killed, not waited for
    assert json.loads((tmp_path / "endless" / "smoke.json").read_text())["kind"] == "smoke-timeout"


@pytest.mark.slow
def test_crashing_edit_is_refused_with_the_end_of_its_traceback(tmp_path, smoke_cache):
    crash = train_step_with("""\
        raise RuntimeError("edited step exploded on purpose")
        """)
    with pytest.raises(CodeEditError) as info:
        validate_and_smoke(loop_source(), "train_step", crash, tmp_path, timeout_s=120, cache_dir=smoke_cache)
    assert info.value.kind == "smoke-crash"
    assert "exit code" in info.value.reason
    assert "RuntimeError: edited step exploded on purpose" in info.value.reason


@pytest.mark.slow
def test_non_finite_loss_is_refused(tmp_path, smoke_cache):
    nan_loss = train_step_with("""\
        optimizer.zero_grad(set_to_none=True)
        loss = prediction_loss(model, data, starts, ctx) * float("nan")
        return loss.detach()
        """)
    with pytest.raises(CodeEditError) as info:
        validate_and_smoke(loop_source(), "train_step", nan_loss, tmp_path, timeout_s=120, cache_dir=smoke_cache)
    assert info.value.kind == "smoke-diverged"


def test_smoke_environment_is_an_allow_list(monkeypatch):
    from agent.sandbox import SCRATCH_HOME, contained_environment

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    monkeypatch.setenv("HF_TOKEN", "hf-secret")
    monkeypatch.setenv("SOME_UNLISTED_VARIABLE", "x")
    env = contained_environment(threads=1, scratch=Path("/scratch"))
    assert "ANTHROPIC_API_KEY" not in env and "HF_TOKEN" not in env and "SOME_UNLISTED_VARIABLE" not in env
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["HOME"] == f"/scratch/{SCRATCH_HOME}"
    assert str(REPO) in env["PYTHONPATH"].split(os.pathsep)


def test_smoke_network_stays_active(tmp_path, capsys):
    """The smoke dataset is built without the 'activity decayed' warning (seed chosen for it)."""
    ensure_smoke_dataset(tmp_path / "fresh")
    assert "decayed" not in capsys.readouterr().out + capsys.readouterr().err


@pytest.mark.slow
def test_smoke_run_uses_the_childs_depth(tmp_path, smoke_cache, tiny_config_dict_factory):
    """An edit that only breaks at depth 64 is caught when the child trains at 64, not at 1."""
    from neuralgraph.config import parse_config

    tiny_config_dict = tiny_config_dict_factory

    deep_only = train_step_with("""\
        if ctx.horizon > 32:
            raise RuntimeError("breaks only in deep recurrence")
        optimizer.zero_grad(set_to_none=True)
        loss = prediction_loss(model, data, starts, ctx) + regularisation(model, data, starts, ctx)
        loss.backward()
        optimizer.step()
        return loss.detach()
        """)
    shallow = parse_config(tiny_config_dict(**{"training.time_step": 1}), source="child")
    deep = parse_config(tiny_config_dict(**{"training.time_step": 64, "training.held_out_frames": 300}), source="child")
    edit = validate_and_smoke(loop_source(), "train_step", deep_only, tmp_path / "t1", child_config=shallow,
                              timeout_s=120, cache_dir=smoke_cache)
    assert edit.smoke.status == "ok" and edit.smoke.sandboxed is True
    with pytest.raises(CodeEditError) as info:
        validate_and_smoke(loop_source(), "train_step", deep_only, tmp_path / "t64", child_config=deep,
                           timeout_s=120, cache_dir=smoke_cache)
    assert info.value.kind == "smoke-crash" and "breaks only in deep recurrence" in info.value.reason
