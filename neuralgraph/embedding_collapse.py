"""The reference's epoch-end embedding clustering, for one-type networks (``training.embedding_collapse_every``).

Why: the reference's landscape start config trains with ``sparsity: replace_embedding_function``,
``sparsity_freq: 4`` and ``fix_cluster_embedding: True``. Its signal trainer (read 2026-12-07,
facts only; docs/reference.md "Known differences") then, at the end of every epoch e with
``e % k == k - 1`` and ``e < n_epochs - k``:

1. replaces each neuron's embedding a_i by the per-dimension median of its cluster (a
   clustering of the neurons' lin_phi curves; this module uses ONE cluster, every neuron, which
   is the true partition of a one-type network);
2. refits lin_phi for 20 full-batch Adam steps (a fresh Adam at the MLP learning rate) so that
   lin_phi(u, a) matches the median over the neurons of their lin_phi curves before the
   collapse, on a grid of u;
3. trains the next epoch with lin_edge and the embedding frozen (learning rate 1e-12): only W
   and lin_phi learn.

A learned one-type embedding otherwise drifts apart neuron by neuron and lin_phi absorbs part of
each neuron's input; the collapse pulls every neuron back onto one node function, and the
frozen-message epoch lets W alone explain what lin_edge explained. Here "frozen" means
``requires_grad = False``: the optimizer skips the parameter, which is what a 1e-12 learning rate
does to within 1e-12.
"""
from __future__ import annotations

import torch

#: Adam steps of the lin_phi refit after a collapse (the reference's 20 sub-epochs).
REFIT_STEPS = 20
#: Points of the u grid on which lin_phi's curves are compared (the reference's 1000).
GRID_POINTS = 1000


def collapse_due(epoch: int, n_epochs: int, every: int) -> bool:
    """Whether the collapse runs at the end of 0-based ``epoch`` (never with ``every`` = 0).

    The reference's condition: every ``every``-th epoch, and not within the last ``every``
    epochs (so a collapse is always followed by at least ``every`` epochs of training).
    """
    return every > 0 and epoch % every == every - 1 and epoch < n_epochs - every


def messages_frozen(epoch: int, n_epochs: int, every: int) -> bool:
    """Whether 0-based ``epoch`` is the epoch right after a collapse: lin_edge and a frozen."""
    return epoch >= 1 and collapse_due(epoch - 1, n_epochs, every)


def set_epoch_trainability(model: torch.nn.Module, frozen: bool, embedding_learned: bool) -> None:
    """Freeze lin_edge and the embedding for a post-collapse epoch; otherwise restore them
    (the embedding only when the config trains it at all)."""
    for p in model.lin_edge.parameters():
        p.requires_grad_(not frozen)
    model.a.requires_grad_(embedding_learned and not frozen)


def lin_phi_curves(model: torch.nn.Module, grid: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """lin_phi(u, a_i) on the grid for every row a_i of ``embeddings``: (n, G)."""
    n, g = embeddings.shape[0], grid.shape[0]
    features = torch.cat([grid.view(1, g, 1).expand(n, g, 1), embeddings.view(n, 1, -1).expand(n, g, -1)], dim=-1)
    return model.lin_phi(features).squeeze(-1)


def collapse_embedding(model: torch.nn.Module, u_scale: float, learning_rate: float) -> dict[str, float]:
    """Replace every a_i by the median embedding and refit lin_phi to the median curve.

    Returns what the training log reports: the embedding's spread before the collapse and the
    refit's distance to the median curve (RMS over the grid) before and after its steps.
    """
    grid = torch.linspace(-u_scale, u_scale, GRID_POINTS, device=model.a.device)
    with torch.no_grad():
        target = lin_phi_curves(model, grid, model.a.detach()).median(dim=0).values
        spread = float(model.a.std(dim=0).mean()) if model.a.shape[0] > 1 else 0.0
        center = model.a.median(dim=0).values
        model.a.copy_(center.expand_as(model.a))
    params = list(model.lin_phi.parameters())
    was_trainable = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=learning_rate)
    center = center.unsqueeze(0)

    def distance() -> torch.Tensor:
        return (lin_phi_curves(model, grid, center)[0] - target).norm(2)

    before = float(distance().detach())
    for _ in range(REFIT_STEPS):
        optimizer.zero_grad(set_to_none=True)
        loss = distance()
        loss.backward()
        optimizer.step()
    after = float(distance().detach())
    for p, trainable in zip(params, was_trainable):
        p.requires_grad_(trainable)
    rms = GRID_POINTS ** 0.5
    return {"embedding_spread": spread, "refit_rms_before": before / rms, "refit_rms_after": after / rms}
