"""An edited loop that the checker wrongly accepted, through a real Snakemake run with retries:
it crashes once (leaving a checkpoint the harness brings back), then on the retry plants links
and a FIFO for every later stage (train.log, code.diff, metrics.json, logs/, plots/) and tries
to write the host's files directly. The run must end ``tampered``, the chain go on, no link
appear under results/, and no file outside results/ change (a victim file writable by the
run's user included). The same run as root and, when started by root, as ``nobody``.

The evil loop is written over iteration 1's train_loop.py after ``init`` made it: the test
bypasses the checker on purpose, the wall must hold on its own.
"""
from __future__ import annotations

import ast
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from wf_helpers import REPO, SNAKEFILE, SNAKEMAKE, job_counts, workflow_env, write_workflow_config

pytestmark = pytest.mark.slow

NAME = "evil"
PACKAGED = (REPO / "neuralgraph" / "train_loop.py").read_text(encoding="utf-8")
EVIL_STEP = '''\
import os
if ctx.step == 0:
    if not os.path.exists("checkpoint.pt"):  # first attempt: a checkpoint the harness brings back, then crash
        torch.save({{"marker": torch.ones(1)}}, "checkpoint.pt")
        raise RuntimeError("EVIL-FIRST-ATTEMPT crash")
    for name in ("train.log", "code.diff", "metrics.json", "analysis.log"):
        os.symlink({victim!r}, name)
    for name in ("logs", "plots"):
        os.symlink({victim_dir!r}, name)
    os.mkfifo("node.json")
    for target in ({victim!r}, {iter_dir!r} + "/train.log", {iter_dir!r} + "/config.yaml"):
        try:
            with open(target, "a") as fh:
                fh.write("escaped")
            print("EVIL-WROTE", target, flush=True)
        except OSError as exc:
            print("EVIL-REFUSED", target, type(exc).__name__, flush=True)
    print("EVIL-PLANTED", flush=True)
optimizer.zero_grad(set_to_none=True)
loss = prediction_loss(model, data, starts, ctx) + regularisation(model, data, starts, ctx)
loss.backward()
optimizer.step()
return loss.detach()
'''
# Becomes nobody inside a private mount namespace; a folder on the way to the Python
# installation that nobody may not enter (/root, 0700, under pyenv) is replaced there by a
# tmpfs holding only that installation, re-bound read-only.
AS_NOBODY = r'''set -e
home="$1"; blocked="$2"; child="$3"; shift 3
if [ -n "$blocked" ]; then
    hold=$(mktemp -d)
    mount --bind "$blocked/$child" "$hold"
    mount -t tmpfs -o mode=0755 tmpfs "$blocked"
    mkdir "$blocked/$child"
    mount --bind "$hold" "$blocked/$child"
fi
exec setpriv --reuid=nobody --regid=nogroup --clear-groups env HOME="$home" XDG_CACHE_HOME="$home/.cache" "$@"
'''


def evil_loop(victim: Path, victim_dir: Path, iter_dir: Path) -> str:
    """The packaged loop with train_step replaced (no checker on the way)."""
    tree = ast.parse(PACKAGED)
    old = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train_step")
    lines = PACKAGED.splitlines(keepends=True)
    body = EVIL_STEP.format(victim=str(victim), victim_dir=str(victim_dir), iter_dir=str(iter_dir))
    new = "def train_step(model, optimizer, data, starts, ctx):\n" + textwrap.indent(body, "    ")
    return "".join(lines[:old.lineno - 1]) + new + "".join(lines[old.end_lineno:])


def snapshot(roots: list[Path], skip: tuple[Path, ...] = ()) -> dict[str, str]:
    """sha256 of every regular file under ``roots`` (links noted as links), minus ``skip``."""
    found = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if Path(folder, d) not in skip and d not in ("__pycache__", ".pytest_cache")]
            for name in files:
                path = Path(folder, name)
                if path.is_symlink():
                    found[str(path)] = "link -> " + os.readlink(path)
                elif path.is_file():
                    found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _blocked_ancestor() -> tuple[str, str]:
    """The first folder above the Python installation that others may not enter, and its child on the way."""
    base = Path(sys.base_prefix).resolve()
    for parent in reversed(base.parents):
        if parent != Path("/") and not parent.stat().st_mode & 0o001:
            return str(parent), base.relative_to(parent).parts[0]
    return "", ""


def _site_packages_pth() -> dict[str, str]:
    found = {}
    for path in sorted(Path(sys.prefix).glob("lib/python*/site-packages/*.pth")):
        found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture(scope="module", params=["root", "nobody"])
def escape_run(request, tmp_path_factory):
    as_nobody = request.param == "nobody"
    if as_nobody:
        if os.geteuid() != 0:
            pytest.skip("not started by root: the run as the current user is already the unprivileged one")
        if shutil.which("setpriv") is None or shutil.which("unshare") is None:
            pytest.skip("setpriv/unshare (util-linux) not installed")
        workdir = Path(tempfile.mkdtemp(prefix="neuralgraph-nobody-", dir="/tmp"))
        workdir.chmod(0o755)
        shutil.chown(workdir, "nobody", "nogroup")
        script = Path(tempfile.mkdtemp(prefix="neuralgraph-as-nobody-", dir="/tmp")) / "as_nobody.sh"
        script.write_text(AS_NOBODY, encoding="utf-8")
        script.parent.chmod(0o755)
        prefix = ["unshare", "--mount", "--propagation", "private", "bash", str(script), str(workdir / "home"),
                  *_blocked_ancestor()]
    else:
        workdir, prefix = tmp_path_factory.mktemp("escape"), []
    results = workdir / "results" / NAME
    outside = workdir / "outside"
    victim_dir = outside / "dir"
    victim_dir.mkdir(parents=True)
    victim = outside / "victim.txt"
    victim.write_text("original\n", encoding="utf-8")
    for path in (outside, victim_dir):
        path.chmod(0o777)
    victim.chmod(0o666)  # writable by the run's user: only the wall keeps it unchanged
    write_workflow_config(workdir, name=NAME, schedule=[1], n_iter_block=2)
    (workdir / "home").mkdir()
    if as_nobody:
        subprocess.run(["chown", "-R", "nobody:nogroup", str(workdir)], check=True)

    def snakemake(*args: str, timeout: float) -> subprocess.CompletedProcess:
        cmd = [*prefix, str(SNAKEMAKE), "--snakefile", str(SNAKEFILE), "--directory", str(workdir),
               "--profile", str(REPO / "profiles" / "local"), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=workdir,
                              env={**workflow_env(), "HOME": str(workdir / "home")})

    init = snakemake(f"results/{NAME}/iter_001/train_loop.py", timeout=600)
    assert init.returncode == 0, init.stdout[-3000:] + init.stderr[-3000:]
    first = results / "iter_001"
    (first / "train_loop.py").write_text(evil_loop(victim, victim_dir, first), encoding="utf-8")
    watched = [workdir, REPO / "neuralgraph", REPO / "agent", REPO / "pipeline", REPO / "workflow", REPO / "config"]
    skip = (workdir / "results", workdir / ".snakemake", workdir / "home")
    before, pth_before = snapshot(watched, skip), _site_packages_pth()

    run = snakemake(timeout=1500)
    yield {"run": run, "results": results, "first": first, "victim": victim, "victim_dir": victim_dir,
           "changed": {k: v for k, v in snapshot(watched, skip).items() if before.get(k) != v},
           "removed": sorted(set(before) - set(snapshot(watched, skip))), "pth_changed": _site_packages_pth() != pth_before,
           "as_nobody": as_nobody, "workdir": workdir}
    if as_nobody:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(script.parent, ignore_errors=True)


def test_the_workflow_completes_with_the_planted_links_making_the_run_tampered(escape_run):
    run, first = escape_run["run"], escape_run["first"]
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert job_counts(run.stdout + run.stderr)["train"] == 2
    record = json.loads((first / "training.json").read_text(encoding="utf-8"))
    assert record["status"] == "tampered", record
    assert "in its scratch folder" in record["reason"], record["reason"]
    log = (first / "train.log").read_text(encoding="utf-8")
    # two attempts appended by the train rule (the crash, then the retry), the evil code ran both times
    assert log.count("=== ") == 2 and "EVIL-FIRST-ATTEMPT crash" in log and "EVIL-PLANTED" in log, log[-3000:]
    assert "EVIL-WROTE" not in log and log.count("EVIL-REFUSED") == 3
    assert "recorded as status 'tampered'" in log
    metrics = json.loads((first / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["status"] == "tampered" and metrics["outcome"] == "failed", metrics
    assert (first / "decision.json").is_file(), "decide must run after a tampered training"
    assert (escape_run["results"] / "iter_002" / "metrics.json").is_file(), "the chain goes on"
    with open(escape_run["results"] / "summary" / "summary.tsv", encoding="utf-8", newline="") as fh:
        rows = {int(r["iteration"]): r for r in csv.DictReader(fh, delimiter="\t")}
    assert rows[1]["status"] == "tampered", rows[1]


def test_no_link_reaches_a_later_stage_and_nothing_outside_results_changes(escape_run):
    results = escape_run["results"]
    links = [str(p) for p in results.rglob("*") if p.is_symlink()]
    special = [str(p) for p in results.rglob("*") if not p.is_symlink() and p.exists() and not (p.is_file() or p.is_dir())]
    assert links == [] and special == [], (links, special)
    assert not list(results.rglob(".contained")), "the staged layout is removed after the run"
    assert escape_run["victim"].read_text(encoding="utf-8") == "original\n"
    assert os.listdir(escape_run["victim_dir"]) == []
    assert escape_run["changed"] == {} and escape_run["removed"] == [], (escape_run["changed"], escape_run["removed"])
    assert escape_run["pth_changed"] is False


def test_the_unprivileged_run_owns_its_results(escape_run):
    if not escape_run["as_nobody"]:
        pytest.skip("the run as root")
    owners = {p.stat().st_uid for p in escape_run["results"].rglob("*") if not p.is_symlink()}
    assert owners == {65534}, owners
