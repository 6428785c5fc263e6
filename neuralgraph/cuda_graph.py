"""CUDA-graph replay of the training step: record the loop's ``train_step`` once, replay it.

Used by :class:`neuralgraph.training.Trainer` when ``training.cuda_graph`` allows it
(:func:`wants_cuda_graph`); the trainer falls back to eager steps when a capture fails. Kept
apart from the trainer because it is GPU-only machinery with its own rules (warm-up on a side
stream, static input/output tensors, capturable optimizers).
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import torch

from neuralgraph import PACKAGED_LOOP
from neuralgraph.io import file_sha256

log = logging.getLogger("neuralgraph.training")


def wants_cuda_graph(setting: str, device: torch.device, loop_sha: str, scheduler: Any) -> bool:
    """Whether steps are replayed as CUDA graphs (training.cuda_graph).

    "auto" trusts only the packaged loop: a replayed graph repeats the kernels recorded once, so
    Python-side logic in an edited train_step (a schedule on ctx.step, a scheduler, .item())
    would silently stop running. "on" is the user's promise that the loop is capture-safe.
    """
    if setting == "off" or device.type != "cuda" or scheduler is not None:
        return False
    return setting == "on" or loop_sha == file_sha256(PACKAGED_LOOP)


def make_capturable(optimizer: torch.optim.Optimizer) -> None:
    """Keep the optimizer's step counters on the GPU so its step can be captured (Adam & co.)."""
    if "capturable" in optimizer.defaults:
        optimizer.defaults["capturable"] = True
        for group in optimizer.param_groups:
            group["capturable"] = True


class GraphedStep:
    """The loop's train_step recorded once as a CUDA graph, then replayed with new batch starts.

    Why: at N = 1000 one step is ~100 small kernels whose launches from Python cost ~10x their
    GPU time; a replay is one launch (measured on an H100: 0.27 versus 2.4 ms per step at T=1).
    The first WARMUP steps run eagerly on a side stream, as capture requires (lazy cuBLAS and
    autograd set-up). The ctx seen at capture is frozen for the replays; random numbers drawn
    inside the step (noise) are fresh at every replay.
    """

    WARMUP = 3

    def __init__(self, trainer: Any):
        self.trainer = trainer
        self.stream = torch.cuda.Stream(trainer.device)
        self.eager_steps = 0
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.static_starts: Optional[torch.Tensor] = None
        self.static_loss: Optional[torch.Tensor] = None

    def _train_step(self, starts: torch.Tensor, ctx: Any) -> torch.Tensor:
        t = self.trainer
        return t.loop.train_step(t.model, t.optimizer, t.data, starts, ctx)

    def __call__(self, starts_cpu: torch.Tensor, ctx: Any) -> torch.Tensor:
        device = self.trainer.device
        if self.graph is None and self.eager_steps < self.WARMUP:
            self.stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(self.stream):
                loss = self._train_step(starts_cpu.to(device), ctx)
            torch.cuda.current_stream(device).wait_stream(self.stream)
            self.eager_steps += 1
            return loss
        if self.graph is None:
            self._capture(starts_cpu.to(device), ctx)
        self.static_starts.copy_(starts_cpu)
        self.graph.replay()
        return self.static_loss.clone()  # the static output is overwritten by the next replay

    def _capture(self, starts: torch.Tensor, ctx: Any) -> None:
        self.static_starts = starts.clone()
        graph = torch.cuda.CUDAGraph()
        self.trainer.optimizer.zero_grad(set_to_none=True)  # gradients get allocated in the graph's pool
        with torch.cuda.graph(graph):
            loss = self._train_step(self.static_starts, ctx)
        if not isinstance(loss, torch.Tensor):
            raise RuntimeError("train_step must return a tensor to be replayed as a CUDA graph")
        self.static_loss, self.graph = loss, graph
        log.info("steps of this epoch are replayed as a CUDA graph (training.cuda_graph = %s)", self.trainer.tr.cuda_graph)
