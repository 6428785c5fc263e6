"""The wall around agent-written training code: the bubblewrap sandbox, the allow-list checker
in front of it, the job that trains an edited loop (stall watchdog included), and the
redaction of secrets in every written file.

Each sandbox check runs a real process inside ``agent.sandbox.run_contained`` and asserts
what it could (not) see or do, from inside (a findings file in its writable folder) and from
the host (files that must not exist, a TCP server that must never accept, processes that
must be gone).
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from agent import sandbox
from agent.codeedit import CodeEditError, check_code_modification
from agent.sandbox import (BWRAP_ENV, SETTING, SandboxUnavailable, code_modification_refusal, contained_environment,
                           run_contained, sandbox_unavailable_reason)
from neuralgraph.redaction import REDACTED, is_secret_name

REPO = Path(__file__).resolve().parents[1]

TRAIN_LOOP = REPO / "neuralgraph" / "train_loop.py"
PACKAGED = TRAIN_LOOP.read_text(encoding="utf-8")
SIGNATURE = "def train_step(model, optimizer, data, starts, ctx):\n"

needs_bwrap = pytest.mark.skipif(
    shutil.which(os.environ.get(BWRAP_ENV) or "bwrap") is None,
    reason="bubblewrap is not installed (the sandbox tests need it; a bwrap that is found but fails, fails them)")


def new_secret() -> str:
    return f"sk-ant-api03-{uuid.uuid4().hex}{uuid.uuid4().hex}"


@pytest.fixture
def fresh_probe():
    """sandbox_unavailable_reason caches per bwrap path: start and leave with an empty cache."""
    sandbox._probe.cache_clear()
    yield
    sandbox._probe.cache_clear()


def host_pids_with(marker: str) -> list[int]:
    """Host pids whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def with_train_step(body: str) -> str:
    """The packaged train_loop.py with train_step replaced by SIGNATURE + ``body`` (no checker)."""
    tree = ast.parse(PACKAGED)
    old = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train_step")
    lines = PACKAGED.splitlines(keepends=True)
    new = SIGNATURE + textwrap.indent(textwrap.dedent(body), "    ")
    return "".join(lines[:old.lineno - 1]) + new + "".join(lines[old.end_lineno:])


NORMAL_STEP = """\
optimizer.zero_grad(set_to_none=True)
loss = prediction_loss(model, data, starts, ctx) + regularisation(model, data, starts, ctx)
loss.backward()
optimizer.step()
return loss.detach()
"""


# =========================================================================== 1. inside the sandbox

PROBE_SCRIPT = r'''
import ctypes, json, os, socket, sys
out, real_home, repo_target, sibling_target, port, home_probe, unix_path, repo = sys.argv[1:9]
found = {"environ": {}, "unreadable": []}
libc = ctypes.CDLL(None, use_errno=True)

def call(fn, *args):
    rc = fn(*args)
    return "ok" if rc == 0 else f"errno {ctypes.get_errno()}"

MS_RDONLY, MS_REMOUNT, MS_BIND, MNT_DETACH, CLONE_NEWUSER, CLONE_NEWNS = 1, 32, 4096, 2, 0x10000000, 0x20000
found["remount_rw"] = call(libc.mount, None, b"/", None, MS_REMOUNT | MS_BIND, None)
found["mount_tmpfs"] = call(libc.mount, b"tmpfs", out.encode(), b"tmpfs", 0, None)
found["umount_proc"] = call(libc.umount2, b"/proc", MNT_DETACH)
found["unshare_user"] = call(libc.unshare, CLONE_NEWUSER)
found["unshare_mount"] = call(libc.unshare, CLONE_NEWNS)
found["uid"] = [os.getuid(), os.getgid()]
found["capabilities"] = [line.split()[1] for line in open("/proc/self/status") if line.startswith("CapEff")]
found["root_listing"] = sorted(os.listdir("/"))
found["etc_listing"] = sorted(os.listdir("/etc"))
found["git_visible"] = os.path.exists(os.path.join(repo, ".git"))
found["shadow_visible"] = os.path.exists("/etc/shadow")
try:
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.connect(unix_path)
    found["unix_connect"] = "connected"
except OSError as exc:
    found["unix_connect"] = f"error: {type(exc).__name__}: {exc}"
for entry in sorted(os.listdir("/proc")):
    if entry.isdigit():
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                found["environ"][entry] = fh.read().decode("utf-8", "replace")
        except OSError as exc:
            found["unreadable"].append(f"{entry}: {type(exc).__name__}")

def attempt_write(path):
    try:
        with open(path, "w") as fh:
            fh.write("escaped")
        return "written"
    except OSError as exc:
        return f"error: {type(exc).__name__}: {exc}"

found["own_write"] = attempt_write(os.path.join(out, "own.txt"))
found["repo_write"] = attempt_write(repo_target)
found["sibling_write"] = attempt_write(sibling_target)
found["home_write"] = attempt_write(home_probe)
try:
    sock = socket.create_connection(("127.0.0.1", int(port)), timeout=3)
    sock.sendall(b"escaped")
    found["connect"] = "connected"
except OSError as exc:
    found["connect"] = f"error: {type(exc).__name__}: {exc}"
found["home"] = os.environ.get("HOME")
found["cwd"] = os.getcwd()
try:
    found["real_home_listing"] = sorted(os.listdir(real_home))
except OSError as exc:
    found["real_home_listing"] = f"error: {type(exc).__name__}"
with open(os.path.join(out, "findings.json"), "w") as fh:
    json.dump(found, fh)
'''


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """Run PROBE_SCRIPT once in the sandbox with secrets in the parent's environment."""
    base = tmp_path_factory.mktemp("probe")
    out, outside = base / "out", base / "outside"
    outside.mkdir()
    script = base / "probe.py"
    script.write_text(PROBE_SCRIPT, encoding="utf-8")
    tag = uuid.uuid4().hex
    repo_target = REPO / f"sandbox-escape-{tag}.txt"
    sibling_target = outside / "escaped.txt"
    home_probe = str(out / sandbox.SCRATCH_HOME / f"probe-{tag}.txt")
    real_home = Path(os.path.expanduser("~")).resolve()
    # a UNIX socket in the host's shared temp folder, listening for the whole run
    unix_path = f"/var/tmp/neuralgraph-sandbox-{tag}.sock"
    unix_server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix_server.bind(unix_path)
    os.chmod(unix_path, 0o777)
    unix_server.listen(5)
    unix_server.setblocking(False)
    secrets = {"ANTHROPIC_API_KEY": new_secret(), "NEURALGRAPH_API_KEY": new_secret(), "GITHUB_TOKEN": new_secret()}
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name, value in secrets.items():
                mp.setenv(name, value)
            with open(base / "stdout.txt", "w") as fh:
                result = run_contained(
                    [sys.executable, str(script), str(out), str(real_home), str(repo_target), str(sibling_target),
                     str(port), home_probe, unix_path, str(REPO)],
                    sandboxed=True, writable=[out], readable=[script], timeout_s=60, stdout=fh)
        try:
            conn, _ = server.accept()
            conn.close()
            accepted = True
        except BlockingIOError:
            accepted = False
        repo_escaped = repo_target.exists()
        try:
            unix_server.accept()[0].close()
            unix_accepted = True
        except BlockingIOError:
            unix_accepted = False
    finally:
        server.close()
        unix_server.close()
        Path(unix_path).unlink(missing_ok=True)
        repo_target.unlink(missing_ok=True)  # only there if the sandbox failed
    stdout = (base / "stdout.txt").read_text()
    assert result.returncode == 0 and result.killed_because is None, stdout
    assert result.sandboxed is True
    findings = json.loads((out / "findings.json").read_text())
    return {"findings": findings, "secrets": secrets, "out": out, "sibling_target": sibling_target,
            "repo_escaped": repo_escaped, "accepted": accepted, "unix_accepted": unix_accepted, "home_probe": home_probe, "real_home": real_home}


@needs_bwrap
def test_no_process_in_the_sandbox_has_a_secret_in_its_environment(probe):
    findings = probe["findings"]
    environs = findings["environ"]
    # /proc shows only the sandbox's own processes (bwrap as PID 1 and the script), all readable
    assert "1" in environs and len(environs) <= 3, sorted(environs)
    assert findings["unreadable"] == []
    own = environs[str(max(map(int, environs)))]
    assert f"HOME={probe['out'] / sandbox.SCRATCH_HOME}" in own.split("\0")  # the reading works: the script sees its own environment
    everything = json.dumps(findings)
    for name, value in probe["secrets"].items():
        assert value not in everything, f"the value of {name} reached the sandbox"
        assert name not in everything, f"{name} reached the sandbox"
    for pid, text in environs.items():
        names = [item.split("=", 1)[0] for item in text.split("\0") if item]
        assert not [n for n in names if is_secret_name(n)], (pid, names)


@needs_bwrap
def test_only_the_named_folder_is_writable(probe):
    findings = probe["findings"]
    assert findings["own_write"] == "written"
    assert (probe["out"] / "own.txt").read_text() == "escaped"
    assert findings["cwd"] == str(probe["out"].resolve())
    # the repository is mounted read-only
    assert findings["repo_write"].startswith("error: OSError: [Errno 30] Read-only file system"), findings["repo_write"]
    assert probe["repo_escaped"] is False
    # a sibling folder on the host is not even there: /tmp is a private tmpfs
    assert findings["sibling_write"].startswith("error: FileNotFoundError"), findings["sibling_write"]
    assert not probe["sibling_target"].exists()
    assert os.listdir(probe["sibling_target"].parent) == []


@needs_bwrap
def test_no_socket_reaches_a_server_on_the_host_loopback(probe):
    connect = probe["findings"]["connect"]
    assert connect.startswith("error: "), connect
    assert ("Network is unreachable" in connect or "Connection refused" in connect), connect
    assert probe["accepted"] is False, "the host server accepted a connection from the sandbox"


@needs_bwrap
def test_home_is_inside_the_scratch_folder_and_the_real_home_is_hidden(probe):
    findings = probe["findings"]
    assert findings["home"] == str(probe["out"] / sandbox.SCRATCH_HOME)
    assert findings["home_write"] == "written"  # HOME is writable: it is part of the scratch folder
    real_home = probe["real_home"]
    # only the mount points of the Python paths re-bound read-only inside the home show
    rebound = {p.relative_to(real_home).parts[0] for p in sandbox._needed_read_only()
               if p.is_relative_to(real_home) and p != real_home}
    listing = findings["real_home_listing"]
    assert isinstance(listing, list) and set(listing) <= rebound or listing.startswith("error: FileNotFoundError"), listing
    hidden = set(os.listdir(real_home)) - rebound
    if not hidden:
        pytest.skip(f"the real home {real_home} holds nothing but the Python paths: nothing to hide")
    assert not isinstance(listing, list) or not hidden & set(listing)


@needs_bwrap
def test_the_root_is_minimal_no_git_no_shadow_no_run_no_shared_tmp(probe):
    findings = probe["findings"]
    assert not {"run", "var", "home", "srv", "mnt", "opt", "boot"} & set(findings["root_listing"]), findings["root_listing"]
    assert set(findings["etc_listing"]) <= set(sandbox.ETC_ENTRIES), findings["etc_listing"]
    assert findings["git_visible"] is False and findings["shadow_visible"] is False


@needs_bwrap
def test_no_unix_socket_is_reachable_by_path(probe):
    assert findings_error(probe, "unix_connect").startswith("error: FileNotFoundError"), probe["findings"]["unix_connect"]
    assert probe["unix_accepted"] is False, "the host's UNIX socket accepted a connection from the sandbox"


def findings_error(probe, key: str) -> str:
    return probe["findings"][key]


@needs_bwrap
def test_no_privileges_inside_even_when_started_by_root(probe):
    """Run as root (as CI does), contained code is nobody without capabilities, and the seccomp
    filter refuses mount, remount, umount and new namespaces (EPERM = errno 1)."""
    findings = probe["findings"]
    assert findings["uid"] == [sandbox.SANDBOX_UID, sandbox.SANDBOX_GID]
    assert findings["capabilities"] == ["0000000000000000"]
    for key in ("remount_rw", "mount_tmpfs", "umount_proc", "unshare_user", "unshare_mount"):
        assert findings[key] == "errno 1", (key, findings[key])


KILL_SCRIPT = r'''
import subprocess, sys, time
out, marker = sys.argv[1:3]
subprocess.Popen([sys.executable, "-c",
                  "import pathlib, sys, time; pathlib.Path(sys.argv[1]).write_text(sys.argv[2]); time.sleep(600)",
                  out + "/child_up.txt", marker], start_new_session=True)
time.sleep(600)
'''


@needs_bwrap
def test_timeout_kills_a_detached_grandchild_too(tmp_path):
    out = tmp_path / "out"
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT, encoding="utf-8")
    marker = f"sandbox-kill-marker-{uuid.uuid4().hex}"
    try:
        with open(tmp_path / "stdout.txt", "w") as fh:
            result = run_contained([sys.executable, str(script), str(out), marker], sandboxed=True, writable=[out],
                                   readable=[script], timeout_s=4, stdout=fh)
        assert result.killed_because == "timeout after 4 s"
        assert result.returncode is None
        assert 4 <= result.wall_s < 15
        # the detached child did start inside (so killing it means something) ...
        assert (out / "child_up.txt").read_text() == marker, (tmp_path / "stdout.txt").read_text()
        # ... and neither it nor the script survives on the host
        deadline = time.monotonic() + 5
        while host_pids_with(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert host_pids_with(marker) == []
    finally:
        for pid in host_pids_with(marker):  # only our own marked processes, if the sandbox leaked them
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


# =========================================================================== 2. the static checker


def refusal(body: str) -> CodeEditError:
    with pytest.raises(CodeEditError) as info:
        check_code_modification(PACKAGED, "train_step", SIGNATURE + textwrap.indent(textwrap.dedent(body), "    "))
    return info.value


BYPASSES = {
    "from os import environ": ("from os import environ\nreturn environ\n", "import", "import of 'os' is not allowed"),
    "import os": ("import os\nreturn os.environ\n", "import", "import of 'os' is not allowed"),
    "from torch import hub": ("from torch import hub\nreturn hub\n", "forbidden",
                              "'torch.hub' is not on the allow-list"),
    "from torch.serialization import pickle": ("from torch.serialization import pickle\nreturn pickle\n", "forbidden",
                                               "'torch.serialization' is not on the allow-list"),
    "g = getattr": ("g = getattr\nreturn g(model, 'forward')\n", "forbidden",
                    "use of 'getattr' (not among the allowed builtins)"),
    "f = __builtins__": ("f = __builtins__\nreturn f\n", "forbidden", "interpreter name '__builtins__'"),
    "open": ("return open('/proc/1/environ').read()\n", "forbidden", "use of 'open' (not among the allowed builtins)"),
    "gi_frame": ("return (x for x in []).gi_frame.f_globals\n", "forbidden",
                 "attribute 'gi_frame': frame, code, generator and traceback attributes are refused"),
    "f_back": ("return ctx.f_back\n", "forbidden", "attribute 'f_back': frame, code"),
    "__traceback__": ("try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    return e.__traceback__.tb_frame\n",
                      "forbidden", "attribute '__traceback__': attributes starting with an underscore"),
    "tb_frame": ("try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    t = e\n    return t.tb_frame\n",
                 "forbidden", "attribute 'tb_frame': frame, code, generator and traceback attributes are refused"),
    "torch.serialization.pickle": ("return torch.serialization.pickle.loads(b'')\n", "forbidden",
                                   "'torch.serialization' is not on the allow-list"),
    "torch.storage": ("return torch.storage.UntypedStorage.from_file('/etc/passwd')\n", "forbidden",
                      "'torch.storage' is not on the allow-list"),
    "torch.load": ("return torch.load('x.pt')\n", "forbidden", "'torch.load' is not on the allow-list"),
    "tensor.untyped_storage": ("return data.u.untyped_storage()\n", "forbidden",
                               "attribute 'untyped_storage': files, raw storage"),
    "torch.optim.Adam.step =": ("torch.optim.Adam.step = None\nreturn None\n", "forbidden",
                                "assigning into the module 'torch' is not allowed"),
    "ctx.cfg =": ("ctx.cfg = None\nreturn None\n", "forbidden", "assigning into 'ctx' is not allowed"),
    "ctx.cfg.training.n_epochs =": ("ctx.cfg.training.n_epochs = 99\nreturn None\n", "forbidden",
                                    "assigning into 'ctx' is not allowed"),
    "data.u =": ("data.u = data.du\nreturn None\n", "forbidden", "assigning into 'data' is not allowed"),
    "t = torch": ("t = torch\nreturn t\n", "forbidden", "the module 'torch' may only start an attribute path"),
    "n = torch.nn": ("n = torch.nn\nreturn n\n", "forbidden", "the module 'torch.nn' may only start an attribute path"),
    "str.format": ("return '{0.__class__}'.format(model)\n", "forbidden",
                   "attribute 'format': files, raw storage, format strings"),
    "__class__": ("return model.__class__\n", "forbidden", "attribute '__class__': attributes starting with an underscore"),
    "global": ("global EDITABLE_FUNCTIONS\nEDITABLE_FUNCTIONS = ()\nreturn None\n", "forbidden",
               "'global' statements are not allowed"),
    "generator": ("yield None\n", "forbidden", "generators (yield) are not allowed"),
}


@pytest.mark.parametrize("name", list(BYPASSES))
def test_checker_refuses_each_bypass_family_with_its_reason(name):
    body, kind, reason = BYPASSES[name]
    error = refusal(body)
    assert error.kind == kind, error
    assert reason in error.reason, error.reason
    assert error.reason.startswith("line "), error.reason  # the reason names the line of the new function


@pytest.mark.parametrize("body", ["c = ctx\nc.cfg = None\nreturn None\n",
                                  "A = torch.optim.Adam\nA.step = None\nreturn None\n",
                                  "T = torch.Tensor\nT.backward = None\nreturn None\n",
                                  "h = lambda m=ctx: m\nh().cfg = None\nreturn None\n",
                                  "data.u[0] = 0\nreturn None\n"],
                         ids=["alias of ctx", "alias of a torch class", "alias of Tensor", "call result", "engine data"])
def test_checker_refuses_engine_patching_through_a_local_alias(body):
    refusal(body)


def test_checker_accepts_a_realistic_edit():
    body = '''\
    """MSE loss, clipped gradients; a plateau scheduler is stepped with the loss."""
    optimizer.zero_grad(set_to_none=True)
    pred = model(data.u[starts])
    loss = torch.nn.functional.mse_loss(pred, data.du[starts]) + regularisation(model, data, starts, ctx)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    optimizer.step()
    if isinstance(ctx.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        ctx.scheduler.step(loss.detach())
    elif ctx.scheduler is not None:
        ctx.scheduler.step()
    return loss.detach()
    '''
    child = check_code_modification(PACKAGED, "train_step", SIGNATURE + textwrap.indent(textwrap.dedent(body), "    "))
    assert "torch.nn.functional.mse_loss(pred, data.du[starts])" in child
    assert "torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)" in child
    # everything but train_step is the packaged text
    assert child.split("def train_step(")[0] == PACKAGED.split("def train_step(")[0]
    compile(child, "train_loop.py", "exec")


# =========================================================================== 3. a wrongly accepted loop, for real

SPY_STEP = """\
if ctx.step == 0:
    import json, os, sys
    report = {{"environ": dict(os.environ), "cwd": os.getcwd(), "argv": sys.argv}}
    for path in ("/proc/1/environ", "/proc/self/environ"):
        try:
            with open(path, "rb") as fh:
                report[path] = fh.read().decode("utf-8", "replace")
        except OSError as exc:
            report[path] = "error: " + type(exc).__name__
    config_in, data_in, loop_in = (sys.argv[sys.argv.index(flag) + 1] for flag in ("--config", "--data", "--loop"))
    reads = {{name: os.path.join({data_dir!r}, name) for name in {dataset_files!r}}}
    reads.update({{"view_" + name: os.path.join(data_in, name) for name in ("W.npy", "types.npy", "stats.json", "u.npy")}})
    for name, path in reads.items():
        try:
            with open(path, "rb") as fh:
                report["read_" + name] = "read %d bytes" % len(fh.read())
        except OSError as exc:
            report["read_" + name] = "error: " + type(exc).__name__
    targets = dict({targets!r}, config=config_in, loop=loop_in)
    for name, target in targets.items():
        try:
            with open(target, "a") as fh:
                fh.write("# escaped")
            report[name] = "written"
        except OSError as exc:
            report[name] = "error: " + type(exc).__name__ + ": " + str(exc)
    print("SPY-REPORT " + json.dumps(report), flush=True)
""" + NORMAL_STEP


def pipeline_train(cfg_path: Path, data_dir: Path, run_dir: Path, loop: Path, env: dict, *extra: str,
                   timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", "train", "--config", str(cfg_path), "--data", str(data_dir),
                           "--out", str(run_dir), "--loop", str(loop), *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow  # a sandboxed training (the slow tier, pyproject.toml)
@needs_bwrap
def test_a_wrongly_accepted_loop_cannot_read_the_key_w_or_its_inputs_nor_write_outside(tmp_path, tiny_dataset):
    """The contained trainer sees its training view (u, du, trimmed metadata) read-only and
    nothing else of the dataset: W.npy, types, stats are neither in the view nor at their
    real paths; the config and loop it runs cannot be rewritten; only the scratch folder is
    writable, and nothing of it but the declared outputs comes back."""
    from neuralgraph.config import dump_config, parse_config

    cfg, data_dir = tiny_dataset
    data = cfg.to_dict()
    data["training"]["data_augmentation_loop"] = 1  # 37 steps are enough to spy
    cfg_path = dump_config(parse_config(data, source="spy test"), tmp_path / "config.yaml")
    run_dir, outside = tmp_path / "run", tmp_path / "outside"
    outside.mkdir()
    tag = uuid.uuid4().hex
    targets = {"sibling": str(outside / "escaped.txt"), "data": str(Path(data_dir) / f"escaped-{tag}.txt"),
               "repo": str(REPO / f"sandbox-escape-{tag}.txt"), "run": str(run_dir / "planted.txt")}
    dataset_files = sorted(p.name for p in Path(data_dir).iterdir())
    loop = tmp_path / "train_loop.py"
    loop.write_text(with_train_step(SPY_STEP.format(targets=targets, data_dir=str(data_dir), dataset_files=dataset_files)),
                    encoding="utf-8")
    loop_before, config_before = loop.read_bytes(), cfg_path.read_bytes()
    secret = new_secret()
    env = {**os.environ, "ANTHROPIC_API_KEY": secret}
    env.pop(BWRAP_ENV, None)
    try:
        proc = pipeline_train(cfg_path, data_dir, run_dir, loop, env)
        escaped = {name: Path(target).exists() for name, target in targets.items()}
    finally:
        for name in ("data", "repo"):  # only there if the sandbox failed
            Path(targets[name]).unlink(missing_ok=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "training it inside the sandbox" in proc.stdout
    record = json.loads((run_dir / "training.json").read_text())
    assert record["status"] == "ok", record
    assert record["loop_file"] == str(loop)
    found_text = next(line for line in proc.stdout.splitlines() if line.startswith("SPY-REPORT "))[len("SPY-REPORT "):]
    found = json.loads(found_text)
    scratch = run_dir / ".contained" / "scratch"
    assert found["cwd"] == str(scratch)
    assert found["environ"]["HOME"] == str(scratch / sandbox.SCRATCH_HOME)  # the spy ran, inside
    assert secret not in found_text and "ANTHROPIC_API_KEY" not in found_text
    assert not [k for k in found["environ"] if is_secret_name(k)]
    # nothing of the real dataset folder is reachable, W.npy included; the view holds u but no W
    assert "W.npy" in dataset_files and "stats.json" in dataset_files
    for name in dataset_files:
        if name in ("u.npy", "du.npy"):  # the training arrays: bound read-only where the view's links point
            assert found["read_" + name].startswith("read "), (name, found["read_" + name])
        else:
            assert found["read_" + name].startswith("error: FileNotFoundError"), (name, found["read_" + name])
    for name in ("W.npy", "types.npy", "stats.json"):
        assert found["read_view_" + name].startswith("error: FileNotFoundError"), (name, found["read_view_" + name])
    assert found["read_view_u.npy"].startswith("read "), found["read_view_u.npy"]
    # its config and loop are read-only, outside the writable scratch folder
    assert found["config"].startswith("error: OSError: [Errno 30] Read-only file system"), found["config"]
    assert found["loop"].startswith("error: OSError: [Errno 30] Read-only file system"), found["loop"]
    assert loop.read_bytes() == loop_before and cfg_path.read_bytes() == config_before
    assert found["sibling"].startswith("error: FileNotFoundError"), found["sibling"]
    assert found["run"].startswith("error: "), found["run"]
    assert found["data"].startswith("error: OSError: [Errno 30] Read-only file system"), found["data"]
    assert found["repo"].startswith("error: OSError: [Errno 30] Read-only file system"), found["repo"]
    assert escaped == {"sibling": False, "data": False, "repo": False, "run": False}
    assert os.listdir(outside) == []
    # only the declared outputs came back, and the staged layout is gone
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint.pt", "model.pt", "training.json"]


def test_contained_environment_holds_no_secret(monkeypatch):
    secrets = {"ANTHROPIC_API_KEY": new_secret(), "NEURALGRAPH_API_KEY": new_secret(), "SLURM_JOB_TOKEN": new_secret(),
               "DB_PASSWORD": new_secret(), "AWS_SECRET_ACCESS_KEY": new_secret(), "GCP_CREDENTIALS": new_secret()}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NEURALGRAPH_PLAIN_SETTING", "kept")
    monkeypatch.setenv("SOME_UNLISTED_VARIABLE", "dropped")
    env = contained_environment()
    assert not [name for name in env if is_secret_name(name)]
    assert not set(secrets.values()) & set(env.values())
    assert env["NEURALGRAPH_PLAIN_SETTING"] == "kept"
    assert "SOME_UNLISTED_VARIABLE" not in env
    assert env["HOME"] == env["TMPDIR"] == tempfile.gettempdir()  # no scratch: the packaged loop
    scratch = Path("/somewhere/scratch")
    contained = contained_environment(scratch=scratch)
    assert contained["HOME"] == str(scratch / sandbox.SCRATCH_HOME) and contained["TMPDIR"] == str(scratch / sandbox.SCRATCH_TMP)
    assert env["CUDA_VISIBLE_DEVICES"] == ""


def test_packaged_loop_is_execed_with_a_clean_environment(monkeypatch, tmp_path, tiny_dataset):
    """The packaged loop's path: the trainer replaces the job with an allow-listed environment."""
    from neuralgraph.config import dump_config
    from pipeline import train_job

    cfg, data_dir = tiny_dataset
    cfg_path = dump_config(cfg, tmp_path / "config.yaml")
    secret = new_secret()
    monkeypatch.setenv("ANTHROPIC_API_KEY", secret)
    calls = []

    class Execed(Exception):
        pass

    def fake_execve(path, argv, env):
        calls.append((path, argv, env))
        raise Execed

    monkeypatch.setattr(train_job.os, "execve", fake_execve)
    with pytest.raises(Execed):
        train_job.run_train_job(str(cfg_path), str(data_dir), str(tmp_path / "run"), str(TRAIN_LOOP))
    (path, argv, env), = calls
    assert path == sys.executable
    assert argv[1:4] == ["-m", "neuralgraph", "train"] and argv[argv.index("--loop") + 1] == str(TRAIN_LOOP)
    assert "ANTHROPIC_API_KEY" not in env and secret not in env.values()
    assert not [name for name in env if is_secret_name(name)]


# =========================================================================== 4. no bwrap


def test_without_bwrap_code_modifications_are_refused_by_name(monkeypatch, fresh_probe, tmp_path):
    monkeypatch.setenv(BWRAP_ENV, "/nonexistent/bwrap")
    reason = sandbox_unavailable_reason()
    assert reason is not None and "bubblewrap (bwrap) is not installed" in reason
    sandboxed = code_modification_refusal("sandboxed")
    assert sandboxed is not None
    assert SETTING == "agent.code_modification"
    assert f"{SETTING}: unsandboxed" in sandboxed and f"{SETTING}: off" in sandboxed
    assert "bwrap" in sandboxed
    off = code_modification_refusal("off")
    assert off == f"code modifications are switched off ({SETTING}: off)"
    assert code_modification_refusal("unsandboxed") is None
    bogus = code_modification_refusal("maybe")
    assert bogus is not None and SETTING in bogus and "sandboxed, unsandboxed, off" in bogus
    out = tmp_path / "out"
    with pytest.raises(SandboxUnavailable, match="bubblewrap \\(bwrap\\) is not installed"):
        run_contained([sys.executable, "-c", "pass"], sandboxed=True, writable=[out], timeout_s=10)
    assert not out.exists()  # refused before anything was created or started


def test_without_bwrap_the_job_refuses_an_edited_loop(tmp_path, tiny_dataset):
    from neuralgraph.config import dump_config

    cfg, data_dir = tiny_dataset
    cfg_path = dump_config(cfg, tmp_path / "config.yaml")
    loop = tmp_path / "train_loop.py"
    loop.write_text(PACKAGED + "\n# edited\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    env = {**os.environ, BWRAP_ENV: "/nonexistent/bwrap"}
    proc = pipeline_train(cfg_path, data_dir, run_dir, loop, env, timeout=90)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "pipeline train: error:" in proc.stderr
    assert "differs from the packaged training loop" in proc.stderr
    assert f"{SETTING}: unsandboxed" in proc.stderr
    assert not (run_dir / "training.json").exists()


# =========================================================================== 5. the stall watchdog

HANG_STEP = """\
import os, time
if ctx.step >= 20:
    if os.path.exists("progress.json"):  # the trainer's heartbeat is out: now hang
        print("HUNG-AT", ctx.step, flush=True)
        while True:
            time.sleep(3600)
    time.sleep(0.05)  # the first heartbeat comes after 5 s: keep the run from ending before it
""" + NORMAL_STEP


@pytest.mark.slow  # a sandboxed training (the slow tier, pyproject.toml)
@needs_bwrap
def test_stalled_edited_loop_is_stopped_recorded_and_scored_failed(tmp_path, tiny_dataset):
    from neuralgraph.config import dump_config, parse_config

    cfg, data_dir = tiny_dataset
    data = cfg.to_dict()
    data["training"]["n_epochs"] = 5  # plenty of steps: the run must not end before it hangs
    cfg_path = dump_config(parse_config(data, source="stall test"), tmp_path / "config.yaml")
    loop = tmp_path / "train_loop.py"
    loop.write_text(with_train_step(HANG_STEP), encoding="utf-8")
    run_dir = tmp_path / "run"
    started = time.monotonic()
    proc = pipeline_train(cfg_path, data_dir, run_dir, loop, dict(os.environ), "--stall-floor-s", "3",
                          "--startup-grace-s", "60", timeout=120)
    wall = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert wall < 50, f"the stall took {wall:.0f} s to be noticed"
    assert int(proc.stdout.split("HUNG-AT ")[1].split()[0]) >= 20
    record = json.loads((run_dir / "training.json").read_text())
    assert record["status"] == "stalled", record
    assert record["reason"].startswith("stopped by the watchdog: the edited loop no training progress for"), record
    assert "after step" in record["reason"]
    assert (run_dir / "model.pt").is_file()
    assert "recorded as status 'stalled'" in proc.stdout

    # `python -m neuralgraph analyze ...`, in this process (the same entry point, no second torch start-up)
    from neuralgraph.cli import main as neuralgraph_main

    assert neuralgraph_main(["analyze", "--run", str(run_dir), "--data", str(data_dir), "--config", str(cfg_path),
                             "--device", "cpu"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "stalled"
    assert metrics["outcome"] == "failed"
    assert metrics["outcome_reason"].startswith("training stalled: stopped by the watchdog"), metrics["outcome_reason"]


FAKE_PROGRESS_STEP = """\
import json, os, threading, time
if ctx.step == 3:
    def fake():
        step = 1000
        while True:
            step += 1
            with open("progress.json.tmp", "w") as fh:
                json.dump({"step": step, "seconds_per_step": 0.01}, fh)
            os.replace("progress.json.tmp", "progress.json")
            time.sleep(0.5)
    threading.Thread(target=fake, daemon=True).start()
    print("FAKING-PROGRESS", flush=True)
    while True:
        time.sleep(3600)
""" + NORMAL_STEP


@pytest.mark.slow
@needs_bwrap
def test_a_hung_loop_faking_its_heartbeat_is_stopped_by_the_wall_cap(tmp_path, tiny_dataset):
    """No time target and no parent: the default wall cap applies anyway, and a heartbeat the
    contained code fakes does not keep the run alive past it."""
    from neuralgraph.config import dump_config, parse_config

    cfg, data_dir = tiny_dataset
    assert cfg.training.training_time_target_min is None
    cfg_path = dump_config(cfg, tmp_path / "config.yaml")
    loop = tmp_path / "train_loop.py"
    loop.write_text(with_train_step(FAKE_PROGRESS_STEP), encoding="utf-8")
    run_dir = tmp_path / "run"
    started = time.monotonic()
    proc = pipeline_train(cfg_path, data_dir, run_dir, loop, dict(os.environ), "--stall-floor-s", "3",
                          "--startup-grace-s", "60", "--default-wall-cap-s", "25", timeout=120)
    wall = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAKING-PROGRESS" in proc.stdout
    assert 25 <= wall < 60, wall
    record = json.loads((run_dir / "training.json").read_text())
    assert record["status"] == "stalled", record
    assert "ran past its wall-clock cap of 0.4 min (the default cap" in record["reason"], record["reason"]


def test_the_wall_cap_always_applies(tmp_path):
    from neuralgraph.config import parse_config
    from pipeline.train_job import DEFAULT_WALL_CAP_S, PARENT_TIME_FACTOR, wall_cap_s
    from tiny_configs import tiny_config_dict

    cfg = parse_config(tiny_config_dict(), source="test")
    run = tmp_path / "iter_003"
    run.mkdir()
    assert wall_cap_s(cfg, run, 900.0) == (DEFAULT_WALL_CAP_S, "the default cap: no time target and no parent training time")
    (run / "proposal.json").write_text(json.dumps({"parent": 2}))
    (tmp_path / "iter_002").mkdir()
    (tmp_path / "iter_002" / "training.json").write_text(json.dumps({"training_time_min": 1.5}))
    cap, origin = wall_cap_s(cfg, run, 900.0)
    assert cap == PARENT_TIME_FACTOR * 90.0 + 900.0 and "parent's training time of 1.5 min" in origin
    data = tiny_config_dict()
    data["training"]["training_time_target_min"] = 2.0
    assert wall_cap_s(parse_config(data, source="test"), run, 900.0) == (3.0 * 120.0 + 900.0, "3 x the time target")


LOUD_STEP = """\
if ctx.step == 0:
    import sys
    for _ in range(12):
        sys.stdout.write("x" * (1024 ** 2) + "\\n")
    sys.stdout.flush()
""" + NORMAL_STEP


@pytest.mark.slow  # a sandboxed training (the slow tier, pyproject.toml)
@needs_bwrap
def test_what_a_contained_run_prints_is_capped(tmp_path, tiny_dataset):
    from agent.sandbox import OUTPUT_CAP_BYTES
    from neuralgraph.config import dump_config, parse_config

    cfg, data_dir = tiny_dataset
    data = cfg.to_dict()
    data["training"]["data_augmentation_loop"] = 1
    cfg_path = dump_config(parse_config(data, source="loud test"), tmp_path / "config.yaml")
    loop = tmp_path / "train_loop.py"
    loop.write_text(with_train_step(LOUD_STEP), encoding="utf-8")
    run_dir = tmp_path / "run"
    proc = pipeline_train(cfg_path, data_dir, run_dir, loop, dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert OUTPUT_CAP_BYTES < 12 * 1024 ** 2
    assert len(proc.stdout.encode()) < OUTPUT_CAP_BYTES + 10_000, len(proc.stdout)
    assert f"[output truncated: the contained run printed more than {OUTPUT_CAP_BYTES} bytes" in proc.stdout
    assert json.loads((run_dir / "training.json").read_text())["status"] == "ok"  # the run itself went on


TAMPER_STEPS = {
    "symlink": ("os.symlink('/etc/passwd', 'train.log')", "it left a symbolic link in its scratch folder: train.log"),
    "fifo": ("os.mkfifo('logs')", "it left a special file"),
    "extra tensor": ("model.register_buffer('stolen', torch.ones(7))", "model.pt does not hold the model's tensors"),
    "checkpoint link": ("os.symlink('/etc/shadow', 'checkpoint.pt.x'); os.rename('checkpoint.pt.x', 'checkpoint.pt')",
                        "a symbolic link in its scratch folder: checkpoint.pt"),
}


@pytest.mark.slow  # a sandboxed training (the slow tier, pyproject.toml)
@needs_bwrap
@pytest.mark.parametrize("kind", sorted(TAMPER_STEPS))
def test_a_run_that_leaves_a_link_fifo_or_foreign_tensor_is_tampered(kind, tmp_path, tiny_dataset):
    """Nothing the contained run wrote is trusted: the untrained model stands in, no checkpoint
    is kept, the staged layout is removed, and the chain can go on (exit 0)."""
    from neuralgraph.config import dump_config, parse_config

    action, reason = TAMPER_STEPS[kind]
    cfg, data_dir = tiny_dataset
    data = cfg.to_dict()
    data["training"]["data_augmentation_loop"] = 1
    cfg_path = dump_config(parse_config(data, source="tamper test"), tmp_path / "config.yaml")
    loop = tmp_path / "train_loop.py"
    step = "import os\nif ctx.step == 30:\n    " + action + "\n"
    loop.write_text(with_train_step(step + NORMAL_STEP), encoding="utf-8")
    run_dir = tmp_path / "run"
    proc = pipeline_train(cfg_path, data_dir, run_dir, loop, dict(os.environ))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads((run_dir / "training.json").read_text())
    assert record["status"] == "tampered", record
    assert reason in record["reason"], record["reason"]
    assert "recorded as status 'tampered'" in proc.stdout
    assert sorted(p.name for p in run_dir.iterdir()) == ["model.pt", "training.json"]
    assert not (run_dir / "model.pt").is_symlink()


# =========================================================================== 6. redaction


def test_atomic_writes_redact_secret_values(monkeypatch, tmp_path):
    from neuralgraph.io import atomic_write_json, atomic_write_text

    secret = new_secret()
    monkeypatch.setenv("ANTHROPIC_API_KEY", secret)
    text_file = atomic_write_text(tmp_path / "log.txt", f"request failed: x-api-key={secret} (retrying)\n")
    assert text_file.read_text() == f"request failed: x-api-key={REDACTED} (retrying)\n"
    json_file = atomic_write_json(tmp_path / "reply.json", {"error": f"bad key {secret}", "nested": [secret, 1]})
    raw = json_file.read_text()
    assert secret not in raw
    assert json.loads(raw) == {"error": f"bad key {REDACTED}", "nested": [REDACTED, 1]}
    # a value of a variable that is not secret-named stays as it is
    monkeypatch.setenv("NEURALGRAPH_PLAIN_SETTING", "plain-value-1234")
    assert atomic_write_text(tmp_path / "plain.txt", "plain-value-1234").read_text() == "plain-value-1234"


def test_secrets_are_handed_to_decide_through_memory_not_the_environment(monkeypatch):
    """hand_over_secrets empties the environment jobs inherit; receive_secrets (agent-decide)
    gets them back from the memfd named by the vault variable, which the sandbox never passes."""
    from agent import secrets

    key = "sk-ant-vault-test-0123456789"
    environ = {"ANTHROPIC_API_KEY": key, "PATH": "/usr/bin"}
    assert secrets.hand_over_secrets(environ) == {"ANTHROPIC_API_KEY": key}
    assert "ANTHROPIC_API_KEY" not in environ and key not in "".join(environ.values())
    vault = environ[secrets.VAULT_ENV]
    assert vault.startswith(f"/proc/{os.getpid()}/fd/")
    assert secrets.VAULT_ENV not in contained_environment(environ=environ)
    received: dict[str, str] = dict(environ)
    assert secrets.receive_secrets(received) == ["ANTHROPIC_API_KEY"]
    assert received["ANTHROPIC_API_KEY"] == key and secrets.VAULT_ENV not in received
    # a job step that parses the Snakefile again finds no secret and keeps the vault variable
    again = dict(environ)
    assert secrets.hand_over_secrets(again) == {} and again[secrets.VAULT_ENV] == vault
    with pytest.raises(secrets.SecretsUnavailable, match=secrets.VAULT_ENV):
        secrets.receive_secrets({secrets.VAULT_ENV: "/proc/1/fd/999999"})
