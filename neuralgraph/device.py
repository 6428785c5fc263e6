"""Where the science runs: the device choice (auto / cpu / cuda) and the CPU thread limits.

The one owner of both facts: training, analysis, simulation and the workflow's train job
import them from here.

Thread limits come in three forms, one per layer that spawns threads:

- :func:`thread_environment`: the OpenMP/MKL/OpenBLAS variables of a child process (read once
  when the child starts its libraries);
- :func:`torch_threads` / :func:`limit_torch_threads`: torch's intra-op pool, in-process;
- :func:`single_threaded_blas`: numpy's BLAS pool, in-process (threadpoolctl).

torch is imported inside the functions that need it, not at the top: simulation and the
workflow's train job use this module without ever loading torch (seconds of import).
"""
from __future__ import annotations

import contextlib
import glob
import os
from typing import Iterator

#: The values of ``training.device`` and of ``--device``.
DEVICE_CHOICES = ("auto", "cpu", "cuda")
#: The thread-count variables a child process's numeric libraries read.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: Below this many (neuron x frame) rows per training step, extra CPU threads cost more in
#: syncing than they save.
SMALL_PROBLEM_ROWS = 2048


class DeviceUnavailableError(RuntimeError):
    """``cuda`` was asked for on a machine without a CUDA device."""


def cuda_wanted(name: str) -> bool:
    """Whether ``name`` (auto / cpu / cuda) runs on CUDA here: not ``cpu`` and a GPU present."""
    if name == "cpu":
        return False
    import torch  # lazy: see the module docstring

    return torch.cuda.is_available()


def gpu_device_nodes_present() -> bool:
    """Whether this machine exposes NVIDIA device nodes (/dev/nvidia0, ...).

    What a launcher asks before handing the GPU to a training it starts (the sandbox binds these
    nodes), without importing torch: the training itself then picks its device with
    :func:`choose_device`. A CPU-only torch on a GPU machine only means CUDA stays unused."""
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def choose_device(name: str = "auto", strict: bool = True):
    """The torch device for ``name``: ``cpu``; ``auto`` = CUDA when present, else CPU; ``cuda``.

    ``cuda`` without a GPU raises :class:`DeviceUnavailableError` when ``strict`` (training:
    the user asked for a GPU run), else falls back to the CPU (analysis of a GPU-trained run on
    a CPU node).
    """
    import torch  # lazy: see the module docstring

    if cuda_wanted(name):
        return torch.device("cuda")
    if name == "cuda" and strict:
        raise DeviceUnavailableError("training.device = 'cuda' but no CUDA device is available (use 'auto' or 'cpu')")
    return torch.device("cpu")


def thread_environment(threads: int) -> dict[str, str]:
    """The environment variables that cap a child process's OpenMP/MKL/OpenBLAS pools at ``threads``."""
    return {name: str(threads) for name in THREAD_ENV_VARS}


def limit_torch_threads(device, rows: int) -> None:
    """One torch CPU thread for small problems unless OMP_NUM_THREADS says otherwise (for the process).

    Why: a step of a 100-neuron model is a few hundred microsecond-sized kernels; with two
    threads on a busy machine each kernel waits for the other thread and steps get ~10x
    slower. Large problems (``rows`` >= :data:`SMALL_PROBLEM_ROWS`) keep torch's default.
    """
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ and rows < SMALL_PROBLEM_ROWS:
        import torch  # lazy: see the module docstring

        torch.set_num_threads(1)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch CPU ops on ``n`` threads, then restore the previous setting.

    The analysis rollout is 1000 small sequential steps (one (1, N) frame each): on a shared
    CPU a second OpenMP thread only waits for a core, and we measured 20 s instead of 1 s for
    a 1000-step N=1000 rollout under load with 2 threads. One thread is as fast when idle.
    """
    import torch  # lazy: see the module docstring

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def single_threaded_blas():
    """Context limiting numpy's BLAS/LAPACK to one thread (no-op without threadpoolctl).

    WHY: OpenBLAS threads busy-wait, and on a CPU shared with other jobs (2 cores, several
    processes) a multi-threaded call can be 10x slower than a single-threaded one. Measured
    under load: the 100000-frame simulator loop 153 s -> 10 s, eigvals of a 1000 x 1000 W
    13.4 s -> 1.0 s, the 20000 x 1000 Gram matrix 3.0 s -> 1.5 s. On an idle machine the
    loss is small (these are memory-bound or small).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")
