"""The wall around code that did not ship with the package: bubblewrap, a clean environment, limits.

Whatever an agent (or a replay file) wrote into ``train_loop.py`` runs only through
:func:`run_contained`: the smoke run of an edit, and the real training of every iteration
whose loop differs from the packaged one, on a laptop and on a SLURM node alike. The static
checker (:mod:`agent.codeedit`) is the first line; this is the wall, and it must hold on its
own for code the checker wrongly accepts:

- ``bwrap`` with new user, PID, IPC, UTS and network namespaces (no socket reaches anything,
  not even 127.0.0.1; ``/proc`` shows only the sandbox's own processes);
- the environment is cleared *before* bwrap starts (bwrap's own process is PID 1 inside and
  keeps the environment it was started with) and rebuilt from :data:`ENV_ALLOW`, with HOME on
  a private tmpfs: no API key, no cluster token reaches any process inside;
- a minimal root, not the host's ``/``: the system's ``/usr`` (and ``/bin``, ``/lib*`` links),
  the few ``/etc`` files the dynamic loader needs, the Python installation and venv, the
  ``neuralgraph`` package folder, and exactly the files the caller names, all read-only; no
  home, no shared ``/tmp``, no ``/run`` (no UNIX socket is reachable by path), no ``.git``;
- writable only the scratch folder the caller names; every read-only input lies outside it
  (refused otherwise), so nothing written can shadow an input; HOME and TMPDIR are inside it;
- no privileges even when started by root: all capabilities dropped, uid/gid 65534 inside, and
  the seccomp filter of :mod:`agent.seccomp` (no mount, umount, unshare, setns, ptrace, ...);
- GPU device nodes (``/dev/nvidia*``) passed through when training on a GPU;
- killed with its whole tree when the timeout or a watchdog fires or when the parent dies
  (``--die-with-parent``: PID 1 of the namespace dies, the kernel kills the rest);
- resource limits (address space, file size, processes, CPU time) from :class:`Limits`.

``agent.code_modification`` (:data:`CODE_MODIFICATION_MODES`) decides what happens to code
modifications: ``sandboxed`` (default) needs a working bwrap and refuses edits up front
without one; ``unsandboxed`` runs them with the clean environment and limits but no
namespaces (an explicit opt-in, recorded in every decision.json); ``off`` refuses them.

Why in agent/: its two users are the agent's smoke run (:mod:`agent.smoke`) and the workflow's
train job (:mod:`pipeline.train_job`); pipeline imports agent, so both reach it, and the
science package, which never runs foreign code, does not know it. A package of its own would
add a fourth package for this one module without changing who may import it.
"""
from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from glob import glob
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from agent.secrets import VAULT_ENV
from neuralgraph.device import thread_environment
from neuralgraph.redaction import is_secret_name

#: Values of ``agent.code_modification``.
CODE_MODIFICATION_MODES = ("sandboxed", "unsandboxed", "off")
DEFAULT_CODE_MODIFICATION = "sandboxed"
#: Names the setting in every message that refuses a code modification.
SETTING = "agent.code_modification"
#: Environment variable naming the bwrap executable (default: ``bwrap`` on PATH).
BWRAP_ENV = "NEURALGRAPH_BWRAP"
#: Prefix of the project's own variables, passed into the sandbox.
PROJECT_ENV_PREFIX = "NEURALGRAPH_"
#: Variables copied from the caller's environment (never a secret-named one).
ENV_ALLOW = (
    "PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "CUDA_HOME",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "MPLBACKEND",
)
#: HOME and TMPDIR of a contained run: folders inside its scratch folder (the only writable one).
SCRATCH_HOME = ".home"
SCRATCH_TMP = ".tmp"
#: The unprivileged user and group a sandboxed run has inside (nobody / nogroup).
SANDBOX_UID = SANDBOX_GID = 65534
#: The few /etc entries a Python with torch needs (the dynamic loader's cache and configuration, the time zone).
ETC_ENTRIES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives")
#: Top-level system folders bound read-only (or re-created as the links they are on merged-/usr systems).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
REPO_ROOT = Path(__file__).resolve().parents[1]
#: The package folders contained Python may import (the trainer needs neuralgraph only).
PACKAGE_DIRS = (REPO_ROOT / "neuralgraph",)
KILL_POLL_S = 0.2
GiB = 1024 ** 3


class SandboxUnavailable(RuntimeError):
    """No working sandbox here; the message names the setting that allows unsandboxed runs."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of a contained run (None = the caller's own limit).

    ``extra_processes`` is added to the number of tasks the user already runs, because
    RLIMIT_NPROC counts every thread of the user, not only the sandbox's.
    """

    address_space_bytes: Optional[int] = None
    file_size_bytes: Optional[int] = None
    extra_processes: Optional[int] = None
    cpu_seconds: Optional[int] = None


def smoke_limits(timeout_s: float) -> Limits:
    """A smoke run: a few steps on a 16-neuron network need little of anything."""
    return Limits(address_space_bytes=16 * GiB, file_size_bytes=256 * 1024 ** 2, extra_processes=256,
                  cpu_seconds=int(max(10, 2 * timeout_s)))


def training_limits(gpu: bool) -> Limits:
    """A real training: no address-space cap on a GPU (CUDA reserves huge virtual ranges)."""
    return Limits(address_space_bytes=None if gpu else 64 * GiB, file_size_bytes=16 * GiB, extra_processes=1024)


@dataclass
class ContainedResult:
    """How a contained run ended: exit code (None when killed), why it was killed, wall time."""

    returncode: Optional[int]
    killed_because: Optional[str]
    wall_s: float
    sandboxed: bool


# --------------------------------------------------------------------------- availability


def bwrap_executable() -> Optional[str]:
    """Path of bwrap (``$NEURALGRAPH_BWRAP`` or ``bwrap`` on PATH), or None."""
    name = os.environ.get(BWRAP_ENV) or "bwrap"
    return shutil.which(name)


@lru_cache(maxsize=None)
def _probe(bwrap: Optional[str]) -> Optional[str]:
    if bwrap is None:
        return ("bubblewrap (bwrap) is not installed (Debian/Ubuntu: apt-get install bubblewrap; "
                f"or point ${BWRAP_ENV} at it)")
    true = shutil.which("true") or "/bin/true"
    try:
        with seccomp_fd() as fd:
            argv = bwrap_argv([true], writable=[], bwrap=bwrap, seccomp=fd)
            proc = subprocess.run(argv, env={"PATH": os.defpath}, capture_output=True, text=True, timeout=20,
                                  pass_fds=(fd,))
    except (OSError, subprocess.TimeoutExpired, RuntimeError) as exc:
        return f"bwrap could not be started ({exc})"
    if proc.returncode != 0:
        detail = " ".join(proc.stderr.split())[:300] or f"exit code {proc.returncode}"
        return f"bwrap cannot create its namespaces here ({detail}); are user namespaces disabled?"
    return None


def sandbox_unavailable_reason() -> Optional[str]:
    """None when a working sandbox exists, else why not (cached per bwrap path)."""
    return _probe(bwrap_executable())


def code_modification_refusal(mode: str) -> Optional[str]:
    """Why code modifications are refused under ``mode`` here, or None when they may run."""
    if mode not in CODE_MODIFICATION_MODES:
        return f"{SETTING} = {mode!r}: must be one of {', '.join(CODE_MODIFICATION_MODES)}"
    if mode == "off":
        return f"code modifications are switched off ({SETTING}: off)"
    if mode == "sandboxed":
        reason = sandbox_unavailable_reason()
        if reason:
            return (f"code modifications need the sandbox and none works here: {reason}. Install bubblewrap, "
                    f"or set {SETTING}: unsandboxed to run agent-written code without it (at your own risk), "
                    f"or {SETTING}: off")
    return None


# --------------------------------------------------------------------------- environment and argv


def contained_environment(threads: Optional[int] = None, cuda: bool = False,
                          environ: Optional[dict[str, str]] = None, scratch: Optional[Path] = None) -> dict[str, str]:
    """The whole environment of a contained run, built from an allow-list (never a secret).

    ``scratch``: HOME and TMPDIR lie inside it (a contained run writes nowhere else); without
    one (the packaged loop, trusted code) they keep the caller's temp folder and a fresh HOME.
    """
    source = os.environ if environ is None else environ
    env = {k: v for k, v in source.items()
           if (k in ENV_ALLOW or k.startswith(PROJECT_ENV_PREFIX)) and not is_secret_name(k) and k != VAULT_ENV}
    env.setdefault("PATH", os.defpath)
    python_dir = str(Path(sys.executable).parent)
    if python_dir not in env["PATH"].split(os.pathsep):
        env["PATH"] = python_dir + os.pathsep + env["PATH"]
    home, tmp = ((str(Path(scratch) / SCRATCH_HOME), str(Path(scratch) / SCRATCH_TMP)) if scratch is not None
                 else (tempfile.gettempdir(), tempfile.gettempdir()))
    env.update({"HOME": home, "TMPDIR": tmp, "PYTHONPATH": str(REPO_ROOT),
                "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg"})
    if threads is not None:
        env.update(thread_environment(threads))
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _namespace_flags() -> list[str]:
    return ["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session",
            "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID), "--cap-drop", "ALL"]


@contextmanager
def seccomp_fd():
    """A file descriptor holding the seccomp program (``bwrap --seccomp FD`` reads it), closed after."""
    from agent.seccomp import seccomp_program

    fd = os.memfd_create("neuralgraph-seccomp", 0) if hasattr(os, "memfd_create") else None
    if fd is None:
        handle = tempfile.TemporaryFile()
        fd = os.dup(handle.fileno())
        handle.close()
    try:
        os.write(fd, seccomp_program())
        os.lseek(fd, 0, os.SEEK_SET)
        yield fd
    finally:
        os.close(fd)


def _needed_read_only() -> list[Path]:
    """What every contained Python needs: its installation, the venv and the package folders."""
    paths = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent.parent, *PACKAGE_DIRS}
    for name in ("LD_LIBRARY_PATH", "CUDA_HOME"):
        paths |= {Path(p) for p in os.environ.get(name, "").split(os.pathsep) if p}
    return sorted({p.resolve() for p in paths if p.exists()})


def _system_binds() -> list[str]:
    """The minimal root: system folders (links kept as links), the loader's /etc entries."""
    argv: list[str] = []
    for folder in SYSTEM_DIRS:
        if os.path.islink(folder):
            argv += ["--symlink", os.readlink(folder), folder]
        elif os.path.isdir(folder):
            argv += ["--ro-bind", folder, folder]
    for entry in ETC_ENTRIES:
        if os.path.exists(f"/etc/{entry}"):
            argv += ["--ro-bind", f"/etc/{entry}", f"/etc/{entry}"]
    return argv


def _inside(path: Path, folders: Sequence[Path]) -> bool:
    return any(path == f or f in path.parents for f in folders)


def _read_only_binds(readable: Iterable[Path]) -> list[str]:
    """Read-only binds of each named path, at its own path; a link in a named folder (a staged
    dataset view's arrays) also gets its target bound, so it resolves inside too."""
    argv: list[str] = []
    for path in readable:
        path = Path(os.path.abspath(path))
        argv += ["--ro-bind", str(path.resolve()), str(path)]
        if path.is_dir():
            for entry in sorted(path.iterdir()):
                if entry.is_symlink():
                    target = entry.resolve()
                    argv += ["--ro-bind", str(target), str(target)]
    return argv


def bwrap_argv(command: Sequence[str], writable: Iterable[Path], readable: Iterable[Path] = (),
               gpu: bool = False, bwrap: Optional[str] = None, seccomp: Optional[int] = None) -> list[str]:
    """The bwrap command line around ``command``: minimal root, read-only inputs, one writable folder.

    Raises ValueError when a read-only path lies inside a writable one (it could be shadowed).
    ``seccomp``: the file descriptor of :func:`seccomp_fd` (passed to bwrap with ``pass_fds``).
    """
    writable = [Path(os.path.abspath(p)) for p in writable]
    readable = [Path(os.path.abspath(p)) for p in readable]
    shadowed = [str(p) for p in readable if _inside(p, writable)]
    if shadowed:
        raise ValueError(f"read-only inputs inside the writable folder could be replaced from inside: {', '.join(shadowed)}")
    argv = [bwrap or bwrap_executable() or "bwrap", *_namespace_flags(), *_system_binds(),
            "--dev", "/dev", "--proc", "/proc"]
    if gpu:
        for node in sorted(glob("/dev/nvidia*")):
            argv += ["--dev-bind", node, node]
        argv += ["--ro-bind", "/sys", "/sys"]  # the CUDA runtime reads the PCI topology
    for path in _needed_read_only():
        argv += ["--ro-bind", str(path), str(path)]
    argv += _read_only_binds(readable)
    for path in writable:
        argv += ["--bind", str(path.resolve()), str(path)]
    argv += ["--remount-ro", "/"]
    if seccomp is not None:
        argv += ["--seccomp", str(seccomp)]
    argv += ["--chdir", str(writable[0]) if writable else "/", "--", *command]
    return argv


# --------------------------------------------------------------------------- running


def _user_task_count() -> int:
    """Tasks (threads) the current user runs now: RLIMIT_NPROC counts all of them."""
    uid, total = os.getuid(), 0
    for status in glob("/proc/[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in Path(status).read_text().splitlines() if ":" in line)
        except OSError:
            continue
        if fields.get("Uid", "").split()[:1] == [str(uid)]:
            total += int(fields.get("Threads", "1").strip() or 1)
    return total


def _limit_setter(limits: Limits) -> Callable[[], None]:
    """A preexec function applying ``limits`` in the child before bwrap (or Python) starts."""
    nproc = _user_task_count() + limits.extra_processes if limits.extra_processes else None
    pairs = [(resource.RLIMIT_AS, limits.address_space_bytes), (resource.RLIMIT_FSIZE, limits.file_size_bytes),
             (resource.RLIMIT_NPROC, nproc), (resource.RLIMIT_CPU, limits.cpu_seconds)]

    def apply() -> None:
        for which, value in pairs:
            if value is not None:
                _, hard = resource.getrlimit(which)
                value = value if hard == resource.RLIM_INFINITY else min(value, hard)
                resource.setrlimit(which, (value, hard))

    return apply


def _descendants(pid: int) -> list[int]:
    """Host pids of every process below ``pid`` (the sandbox's processes included)."""
    children: dict[int, list[int]] = {}
    for stat in glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _terminate_tree(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM every process of the run (a trainer checkpoints on it), SIGKILL after ``grace_s``."""
    for pid in [proc.pid, *_descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _kill_tree(proc)


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the run's process group (bwrap and, through --die-with-parent, all inside)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _catch_signals(received: list[int]) -> dict[int, object]:
    """Record SIGTERM/SIGINT in ``received`` instead of dying; returns the previous handlers."""
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, lambda signum, _frame: received.append(signum))
    return previous


#: What a contained run may print (stdout and stderr together) before the rest is dropped.
OUTPUT_CAP_BYTES = 10 * 1024 ** 2
#: The note that replaces what a contained run printed beyond its cap.
OUTPUT_CAP_NOTE = "\n[output truncated: the contained run printed more than {cap} bytes; the rest was dropped]\n"
#: The most files and folders a scratch folder may hold (a walk of it stays cheap).
SCRATCH_MAX_ENTRIES = 10_000


def folder_usage(folder: Path) -> tuple[int, int]:
    """(bytes, entries) under ``folder``, links not followed (allocated blocks: sparse files count as stored)."""
    total, entries, todo = 0, 0, [str(folder)]
    while todo:
        try:
            with os.scandir(todo.pop()) as it:
                for entry in it:
                    entries += 1
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += max(info.st_size, getattr(info, "st_blocks", 0) * 512) if not entry.is_symlink() else 0
                    if entry.is_dir(follow_symlinks=False):
                        todo.append(entry.path)
        except OSError:
            continue
    return total, entries


def _relay(source, sink_fd: int, cap: int) -> threading.Thread:
    """Copy ``source`` (the run's stdout pipe) to ``sink_fd`` up to ``cap`` bytes, then a note;
    the rest is read and dropped so the run never blocks on a full pipe."""
    def pump() -> None:
        written, noted = 0, False
        while True:
            chunk = source.read1(65536) if hasattr(source, "read1") else source.read(65536)
            if not chunk:
                break
            if written < cap:
                part = chunk[:cap - written]
                os.write(sink_fd, part)
                written += len(part)
                if len(part) < len(chunk) and not noted:
                    os.write(sink_fd, OUTPUT_CAP_NOTE.format(cap=cap).encode())
                    noted = True
            elif not noted:
                os.write(sink_fd, OUTPUT_CAP_NOTE.format(cap=cap).encode())
                noted = True
        source.close()

    thread = threading.Thread(target=pump, name="contained-output", daemon=True)
    thread.start()
    return thread


def run_contained(command: Sequence[str], *, sandboxed: bool, writable: Sequence[Path], readable: Sequence[Path] = (),
                  limits: Limits = Limits(), timeout_s: Optional[float] = None, threads: Optional[int] = None,
                  gpu: bool = False, stdout=None, watchdog: Optional[Callable[[], Optional[str]]] = None,
                  poll_s: float = 1.0, forward_signals: bool = False, term_grace_s: float = 60.0,
                  output_cap_bytes: int = OUTPUT_CAP_BYTES, scratch_cap_bytes: Optional[int] = None) -> ContainedResult:
    """Run ``command`` contained; kill its whole tree at the timeout or when ``watchdog`` says why.

    ``writable[0]`` is the scratch folder (HOME and TMPDIR inside it); ``readable`` the inputs,
    which must lie outside every writable folder. ``sandboxed=False`` is the explicit
    ``unsandboxed`` mode: clean environment, own session, limits, caps and timeout, but no
    namespaces. Raises :class:`SandboxUnavailable` when a sandbox is asked for and none works.
    ``stdout``: a file object for stdout+stderr (None: the caller's stdout); what the run prints
    goes through this process and is cut at ``output_cap_bytes``. ``scratch_cap_bytes``: the
    run is killed when its writable folders hold more (checked every ``poll_s``; the per-file
    size limit of ``limits`` bounds what one poll interval can add to a single file).
    ``forward_signals``: a SIGTERM/SIGINT of the caller (SLURM preemption, Ctrl-C) reaches the
    contained processes as SIGTERM (a trainer checkpoints and exits), then the tree is killed
    after ``term_grace_s``; the run's own exit code is returned.
    """
    if sandboxed:
        reason = sandbox_unavailable_reason()
        if reason:
            raise SandboxUnavailable(reason)
    writable = [Path(os.path.abspath(p)) for p in writable]
    for path in writable:
        path.mkdir(parents=True, exist_ok=True)
    scratch = writable[0] if writable else None
    if scratch is not None:
        for name in (SCRATCH_HOME, SCRATCH_TMP):
            (scratch / name).mkdir(exist_ok=True)
    env = contained_environment(threads=threads, cuda=gpu, scratch=scratch)
    with contextlib.ExitStack() as stack:
        pass_fds: tuple[int, ...] = ()
        if sandboxed:
            fd = stack.enter_context(seccomp_fd())
            pass_fds = (fd,)
            argv = bwrap_argv(command, writable, readable, gpu=gpu, seccomp=fd)
        else:
            argv = list(command)
        sink = stdout.fileno() if stdout is not None else sys.stdout.fileno()
        if stdout is not None:
            stdout.flush()
        sys.stdout.flush()
        started = time.monotonic()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=str(scratch) if scratch else None, start_new_session=True,
                                preexec_fn=_limit_setter(limits), pass_fds=pass_fds)
    relay = _relay(proc.stdout, sink, output_cap_bytes)
    killed_because = None
    last_watch = started
    received: list[int] = []
    previous = _catch_signals(received) if forward_signals else {}
    try:
        while proc.poll() is None:
            if received:
                _terminate_tree(proc, term_grace_s)
                break
            now = time.monotonic()
            if timeout_s is not None and now - started > timeout_s:
                killed_because = f"timeout after {timeout_s:g} s"
            elif now - last_watch >= poll_s:
                last_watch = now
                killed_because = _scratch_over_cap(writable, scratch_cap_bytes) or (watchdog() if watchdog else None)
            if killed_because:
                _kill_tree(proc)
                break
            time.sleep(KILL_POLL_S)
    except BaseException:  # Ctrl-C / SIGTERM of the caller: take the sandbox down with us
        _kill_tree(proc)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        relay.join(timeout=10)
    rc = None if killed_because else proc.returncode
    return ContainedResult(rc, killed_because, time.monotonic() - started, sandboxed)


def _scratch_over_cap(writable: Sequence[Path], cap: Optional[int]) -> Optional[str]:
    """Why the run must stop for what it stored (over ``cap`` bytes, or too many files), or None."""
    if cap is None:
        return None
    used = [folder_usage(p) for p in writable]
    size, entries = sum(u[0] for u in used), sum(u[1] for u in used)
    if size > cap:
        return f"wrote {size} bytes into its scratch folder, over the cap of {cap} bytes"
    if entries > SCRATCH_MAX_ENTRIES:
        return f"made {entries} files in its scratch folder, over the cap of {SCRATCH_MAX_ENTRIES}"
    return None
