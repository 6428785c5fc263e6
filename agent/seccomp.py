"""The seccomp filter of the sandbox: a classic BPF program refusing the system calls that
change mounts, namespaces, kernel state or other processes.

bwrap loads it (``--seccomp FD``) just before it executes the contained command, after its
own mounts are done, so nothing inside can remount ``/`` read-write, unmount the hidden
folders, create a new namespace (where it would be root again), trace a process, or load a
kernel module, whatever capabilities it might regain. Built here with :mod:`struct` (no
libseccomp binding on PyPI is needed): x86_64 and aarch64.

The program, in order: a foreign architecture is killed (a 32-bit x86 or x32 call would
reach a different table); each refused call returns EPERM; ``clone`` with any namespace flag
returns EPERM; ``clone3`` returns ENOSYS (its flags sit in memory a filter cannot read; the C
library falls back to ``clone``, which is checked); everything else is allowed.
"""
from __future__ import annotations

import errno
import platform
import struct
from typing import Optional

# classic BPF opcodes (linux/filter.h, linux/bpf_common.h)
_LD_W_ABS = 0x00 | 0x00 | 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x05 | 0x10 | 0x00  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x05 | 0x30 | 0x00  # BPF_JMP | BPF_JGE | BPF_K
_JSET_K = 0x05 | 0x40 | 0x00  # BPF_JMP | BPF_JSET | BPF_K
_RET_K = 0x06 | 0x00  # BPF_RET | BPF_K

# seccomp return values (linux/seccomp.h)
_KILL_PROCESS = 0x80000000
_ERRNO = 0x00050000
_ALLOW = 0x7FFF0000

# offsets in struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]
_NR, _ARCH, _ARG0_LOW = 0, 4, 16

#: Namespace flags of clone(2): CLONE_NEWTIME, NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET.
CLONE_NAMESPACE_FLAGS = 0x80 | 0x20000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
#: x32 system calls on x86_64 carry this bit: refused as a whole.
_X32_BIT = 0x40000000

#: The refused calls (EPERM), by name: mounts, namespaces, keys, tracing, kernel state.
REFUSED_SYSCALLS = (
    "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount",
    "open_tree", "mount_setattr", "unshare", "setns", "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd", "open_by_handle_at",
    "name_to_handle_at", "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "swapon", "swapoff", "reboot", "acct", "settimeofday", "clock_settime", "adjtimex", "clock_adjtime",
    "sethostname", "setdomainname", "quotactl", "lookup_dcookie", "syslog", "vhangup",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
)

#: Per architecture: the AUDIT_ARCH value and the system call numbers (from the kernel's
#: asm/unistd_64.h for x86_64 and asm-generic/unistd.h for aarch64).
ARCHITECTURES = {
    "x86_64": (0xC000003E, {
        "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "fsopen": 430, "fsconfig": 431,
        "fsmount": 432, "fspick": 433, "move_mount": 429, "open_tree": 428, "mount_setattr": 442, "unshare": 272,
        "setns": 308, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312, "keyctl": 250,
        "add_key": 248, "request_key": 249, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323,
        "open_by_handle_at": 304, "name_to_handle_at": 303, "kexec_load": 246, "kexec_file_load": 320,
        "init_module": 175, "finit_module": 313, "delete_module": 176, "swapon": 167, "swapoff": 168, "reboot": 169,
        "acct": 163, "settimeofday": 164, "clock_settime": 227, "adjtimex": 159, "clock_adjtime": 305,
        "sethostname": 170, "setdomainname": 171, "quotactl": 179, "lookup_dcookie": 212, "syslog": 103,
        "vhangup": 153, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "iopl": 172, "ioperm": 173, "uselib": 134, "nfsservctl": 180,
        "clone": 56, "clone3": 435,
    }),
    "aarch64": (0xC00000B7, {
        "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
        "fspick": 433, "move_mount": 429, "open_tree": 428, "mount_setattr": 442, "unshare": 97, "setns": 268,
        "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "kcmp": 272, "keyctl": 219, "add_key": 217,
        "request_key": 218, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282, "open_by_handle_at": 265,
        "name_to_handle_at": 264, "kexec_load": 104, "kexec_file_load": 294, "init_module": 105,
        "finit_module": 273, "delete_module": 106, "swapon": 224, "swapoff": 225, "reboot": 142, "acct": 89,
        "settimeofday": 170, "clock_settime": 112, "adjtimex": 171, "clock_adjtime": 266, "sethostname": 161,
        "setdomainname": 162, "quotactl": 60, "lookup_dcookie": 18, "syslog": 116, "vhangup": 58,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "clone": 220, "clone3": 435,
    }),
}
#: x86_64-only calls refused there too (no aarch64 equivalent).
_X86_ONLY = ("iopl", "ioperm", "uselib", "nfsservctl")


def _insn(code: int, jt: int = 0, jf: int = 0, k: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def machine() -> str:
    """This machine's architecture name as :data:`ARCHITECTURES` spells it."""
    name = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(name, name)


def seccomp_program(arch: Optional[str] = None) -> bytes:
    """The filter as bytes of ``struct sock_filter`` (what ``bwrap --seccomp FD`` reads)."""
    arch = arch or machine()
    if arch not in ARCHITECTURES:
        raise RuntimeError(f"no seccomp filter for the architecture {arch!r} (known: {', '.join(ARCHITECTURES)})")
    audit_arch, numbers = ARCHITECTURES[arch]
    refused = sorted({numbers[name] for name in (*REFUSED_SYSCALLS, *(_X86_ONLY if arch == "x86_64" else ()))})
    # layout: [arch check] [nr load] [x32?] [refused...] [clone?] [clone3?] ALLOW, EPERM, ENOSYS, KILL
    body: list[tuple[str, int, str]] = []  # (kind, k, target) jumps resolved below
    if arch == "x86_64":
        body.append(("jge", _X32_BIT, "eperm"))
    body += [("jeq", nr, "eperm") for nr in refused]
    body.append(("jeq", numbers["clone3"], "enosys"))
    body.append(("jeq", numbers["clone"], "clone"))
    head = [_insn(_LD_W_ABS, k=_ARCH), None, _insn(_LD_W_ABS, k=_NR)]
    n_body = len(body)
    start = len(head)
    labels = {"allow": start + n_body, "eperm": start + n_body + 1, "enosys": start + n_body + 2,
              "kill": start + n_body + 3, "clone": start + n_body + 4}
    head[1] = _insn(_JEQ_K, jt=0, jf=labels["kill"] - 2, k=audit_arch)
    program = list(head)
    for index, (kind, k, target) in enumerate(body):
        offset = labels[target] - (start + index) - 1
        if not 0 <= offset <= 255:
            raise RuntimeError("seccomp program too long for classic BPF jumps")
        program.append(_insn(_JGE_K if kind == "jge" else _JEQ_K, jt=offset, jf=0, k=k))
    program += [
        _insn(_RET_K, k=_ALLOW),
        _insn(_RET_K, k=_ERRNO | errno.EPERM),
        _insn(_RET_K, k=_ERRNO | errno.ENOSYS),
        _insn(_RET_K, k=_KILL_PROCESS),
        # clone: its flags (the low 32 bits of the first argument hold every namespace flag)
        _insn(_LD_W_ABS, k=_ARG0_LOW),
        _insn(_JSET_K, jt=1, jf=0, k=CLONE_NAMESPACE_FLAGS),
        _insn(_RET_K, k=_ALLOW),
        _insn(_RET_K, k=_ERRNO | errno.EPERM),
    ]
    return b"".join(program)
