"""The GNN whose learned connectivity W should match the simulated network's.

    du_i/dt = lin_phi(u_i, a_i) + sum_{j != i} W_ij * lin_edge(u_j [, a_j])

Why node-level: the message W_ij * lin_edge(u_j) factorises into a weight times a function of
the SOURCE neuron only. Evaluating lin_edge once per edge (the reference) costs N(N-1) MLP
calls per frame (~1e6 at N=1000, ~13 s per CPU step); evaluating it once per node and
aggregating with one product ``W_eff @ m`` gives the same numbers for N MLP calls plus one
matrix product (~ms). :class:`SignalPropagation` does the latter inside PyG's
``message_and_aggregate``; :class:`PerEdgeSignalPropagation` keeps the straightforward
per-edge version, with the same parameters, as a test oracle and benchmark baseline.

Connectivity variants (config ``graph_model``):

- dense W (N x N) with the diagonal masked out of every message;
- ``connectivity_mask: true_support``: only the edges of the true W carry messages (a known
  wiring diagram); a sparse mask is aggregated with a sparse product through PyG's
  ``propagate``, a dense-ish one with the masked dense product;
- ``low_rank_factorization``: W = W_L @ W_R (rank r), masked the same way.

Shapes: ``forward(u)`` takes u of shape (B, N) or (N,) and returns du/dt of the same shape.
Internally node-first tensors (N, B) are used for PyG (``node_dim=0``).
"""
from __future__ import annotations

import math
import typing
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn
from torch_geometric.nn import MessagePassing

from neuralgraph.config import ExperimentConfig, MlpInit, embedding_is_learned, parse_config
from neuralgraph.io import atomic_torch_save, open_nofollow

#: Masks denser than this are aggregated with a dense product; sparser ones with a sparse one.
SPARSE_DENSITY_THRESHOLD = 0.25

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
}


#: How the MLPs' Linear layers start. "pytorch": PyTorch's default for every layer (uniform in
#: +-1/sqrt(fan_in), weights and biases). "reference": the reference's MLP class (science.md
#: section 9) keeps PyTorch's default for the first layer only and draws every later layer's
#: weights from N(0, 0.1) with zero biases.
MLP_INITS = typing.get_args(MlpInit)
REFERENCE_MLP_WEIGHT_STD = 0.1


class MLP(nn.Module):
    """``n_layers`` linear layers in -> hidden -> ... -> hidden -> 1, activation between them.

    No activation after the last layer: messages and node updates must be able to be negative.
    """

    def __init__(self, in_dim: int, hidden_dim: int, n_layers: int, activation: str = "relu", init: str = "pytorch"):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation = {activation!r}: must be one of {', '.join(_ACTIVATIONS)}")
        if init not in MLP_INITS:
            raise ValueError(f"mlp_init = {init!r}: must be one of {', '.join(MLP_INITS)}")
        dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [1]
        layers: list[nn.Module] = []
        for k, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(d_in, d_out))
            if k < n_layers - 1:
                layers.append(_ACTIVATIONS[activation]())
        self.layers = nn.Sequential(*layers)
        if init == "reference":
            self._reference_init()

    def _reference_init(self) -> None:
        """The reference's start: layers after the first get N(0, 0.1) weights and zero biases
        (at width 64 PyTorch's default draws weights with std 1/sqrt(3 * 64) = 0.072, biases too)."""
        with torch.no_grad():
            for layer in self.weight_layers()[1:]:
                layer.weight.normal_(0.0, REFERENCE_MLP_WEIGHT_STD)
                layer.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def weight_layers(self) -> list[nn.Linear]:
        return [m for m in self.layers if isinstance(m, nn.Linear)]

    def weight_matrices(self) -> list[torch.Tensor]:
        """The Linear weights (not biases): what the MLP L1/L2 penalties act on."""
        return [m.weight for m in self.weight_layers()]


def off_diagonal_mask(n_neurons: int) -> torch.Tensor:
    """All-ones N x N mask with a zero diagonal: no neuron sends a message to itself."""
    mask = torch.ones(n_neurons, n_neurons)
    mask.fill_diagonal_(0.0)
    return mask


class OffDiagonalProduct(torch.autograd.Function):
    """(W @ x) without the diagonal terms, and a gradient for W with an exactly zero diagonal.

    Why not ``(W * mask) @ x``: the mask product reads and writes N^2 values forward and
    backward at every unrolled step (and keeps an N x N copy per step for backward); removing
    W_ii x_i costs N*B. The zero diagonal gradient keeps Adam from ever moving W_ii.
    """

    @staticmethod
    def forward(ctx, W: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(W, x)
        return W @ x - W.diagonal().unsqueeze(1) * x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        W, x = ctx.saved_tensors
        grad_W = grad_x = None
        if ctx.needs_input_grad[0]:
            grad_W = grad @ x.T
            grad_W.diagonal().zero_()
        if ctx.needs_input_grad[1]:
            grad_x = W.T @ grad - W.diagonal().unsqueeze(1) * grad
        return grad_W, grad_x


class SignalPropagation(MessagePassing):
    """Node-level GNN: lin_edge once per neuron, one dense or sparse product to aggregate.

    Parameters: ``W`` (N x N) or ``W_L`` (N x r), ``W_R`` (r x N); ``a`` (N x emb);
    ``lin_edge`` and ``lin_phi``. Buffer ``mask`` (N x N, zero diagonal) selects the edges that
    carry messages; it is saved in the state dict so a trained model reloads without the data.
    """

    def __init__(
        self,
        n_neurons: int,
        embedding_dim: int = 2,
        hidden_dim: int = 64,
        n_layers: int = 3,
        activation: str = "relu",
        edge_input: str = "u",
        W_init_std: float = 1e-3,
        embedding_init: str = "ones",
        low_rank: Optional[int] = None,
        mask: Optional[torch.Tensor] = None,
        learn_embeddings: bool = True,
        mlp_init: str = "pytorch",
    ):
        super().__init__(aggr="add", node_dim=0)
        if edge_input not in ("u", "u_a"):
            raise ValueError(f"edge_input = {edge_input!r}: must be one of u, u_a")
        self.n_neurons = n_neurons
        self.embedding_dim = embedding_dim
        self.edge_input = edge_input
        self.low_rank = low_rank
        self._init_connectivity(n_neurons, W_init_std, low_rank)
        init = torch.ones if embedding_init == "ones" else torch.randn
        self.a = nn.Parameter(init(n_neurons, embedding_dim), requires_grad=learn_embeddings)
        edge_in_dim = 1 + (embedding_dim if edge_input == "u_a" else 0)
        self.lin_edge = MLP(edge_in_dim, hidden_dim, n_layers, activation, init=mlp_init)
        self.lin_phi = MLP(1 + embedding_dim, hidden_dim, n_layers, activation, init=mlp_init)
        self._set_mask(off_diagonal_mask(n_neurons) if mask is None else mask)

    # ----------------------------------------------------------------- construction
    def _init_connectivity(self, n: int, std: float, rank: Optional[int]) -> None:
        """Small random W: a large init (the reference's std 1) makes early messages swamp lin_phi."""
        if rank is None:
            self.W = nn.Parameter((torch.randn(n, n) * std).fill_diagonal_(0.0))
            return
        # each factor entry has std s so that (W_L W_R)_ij has std sqrt(r) s^2 = std
        factor_std = math.sqrt(std / math.sqrt(rank)) if std > 0 else 0.0
        self.W_L = nn.Parameter(torch.randn(n, rank) * factor_std)
        self.W_R = nn.Parameter(torch.randn(rank, n) * factor_std)

    def _set_mask(self, mask: torch.Tensor) -> None:
        mask = (mask != 0).to(torch.float32)
        if mask.shape != (self.n_neurons, self.n_neurons):
            raise ValueError(f"connectivity mask has shape {tuple(mask.shape)}: must be ({self.n_neurons}, {self.n_neurons})")
        mask.fill_diagonal_(0.0)
        self.register_buffer("mask", mask)
        density = float(mask.sum()) / max(1, self.n_neurons * self.n_neurons)
        self.use_sparse = density < SPARSE_DENSITY_THRESHOLD
        self.all_off_diagonal = bool(mask.sum()) == self.n_neurons * (self.n_neurons - 1)
        rows, cols = mask.nonzero(as_tuple=True)
        # non-persistent: derived from the mask, rebuilt on load
        self.register_buffer("edge_rows", rows, persistent=False)
        self.register_buffer("edge_cols", cols, persistent=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: D401
        """Accept a saved mask (true_support) and rebuild the edge lists from it."""
        key = prefix + "mask"
        if key in state_dict:
            self._set_mask(state_dict[key].to(self.mask.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ----------------------------------------------------------------- parameter groups
    def connectivity_parameters(self) -> list[nn.Parameter]:
        return [self.W] if self.low_rank is None else [self.W_L, self.W_R]

    def mlp_parameters(self) -> list[nn.Parameter]:
        return list(self.lin_edge.parameters()) + list(self.lin_phi.parameters())

    def embedding_parameters(self) -> list[nn.Parameter]:
        return [self.a]

    # ----------------------------------------------------------------- connectivity
    def raw_W(self) -> torch.Tensor:
        """W before masking (the factor product in low-rank mode)."""
        return self.W if self.low_rank is None else self.W_L @ self.W_R

    def dense_W(self) -> torch.Tensor:
        """Effective (N, N) connectivity: W[i, j] weighs j -> i; diagonal and non-edges are 0."""
        return self.raw_W() * self.mask

    def sparse_adjacency(self) -> torch.Tensor:
        """Sparse (N, N) COO matrix of the masked W (values differentiable)."""
        if self.low_rank is None:
            values = self.W[self.edge_rows, self.edge_cols]
        else:  # one dot product per edge, never the full N x N product
            values = (self.W_L[self.edge_rows] * self.W_R[:, self.edge_cols].T).sum(-1)
        indices = torch.stack([self.edge_rows, self.edge_cols])
        return torch.sparse_coo_tensor(
            indices, values, (self.n_neurons, self.n_neurons), is_coalesced=True, check_invariants=False
        )

    # ----------------------------------------------------------------- forward
    def _with_embedding(self, u: torch.Tensor) -> torch.Tensor:
        """[u_i, a_i] for every neuron of every frame: (B, N) -> (B, N, 1 + emb)."""
        a = self.a.unsqueeze(0).expand(u.shape[0], -1, -1)
        return torch.cat([u.unsqueeze(-1), a], dim=-1)

    def edge_features(self, u: torch.Tensor) -> torch.Tensor:
        """lin_edge input per source neuron: (B, N) -> (B, N, 1) or (B, N, 1 + emb)."""
        return self._with_embedding(u) if self.edge_input == "u_a" else u.unsqueeze(-1)

    def node_messages(self, u: torch.Tensor) -> torch.Tensor:
        """lin_edge evaluated once per source neuron: (B, N)."""
        return self.lin_edge(self.edge_features(u)).squeeze(-1)

    def node_update(self, u: torch.Tensor) -> torch.Tensor:
        """lin_phi(u_i, a_i): (B, N)."""
        return self.lin_phi(self._with_embedding(u)).squeeze(-1)

    def message_and_aggregate(self, adj_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """sum_j W_ij m_j for every target i as ONE product; x is node-first (N, B).

        ``adj_t``: a sparse matrix of the masked W, a dense masked W, or the raw parameter
        ``self.W`` itself, meaning "all off-diagonal edges": the j = i term is then removed
        inside the product (no masked N x N copy).
        """
        if adj_t.is_sparse:
            return torch.sparse.mm(adj_t, x)
        if adj_t is getattr(self, "W", None):
            return OffDiagonalProduct.apply(adj_t, x)
        return adj_t @ x

    def aggregate_messages(self, messages: torch.Tensor) -> torch.Tensor:
        """(B, N) source messages -> (B, N) summed weighted input of every target neuron."""
        x = messages.T
        if self.use_sparse:
            out = self.propagate(self.sparse_adjacency(), x=x)
        elif self.all_off_diagonal and self.low_rank is None:  # the default: dense W, no mask product
            out = self.message_and_aggregate(self.W, x)
        else:  # PyG's propagate takes no dense adjacency; the fused step is the same product
            out = self.message_and_aggregate(self.dense_W(), x)
        return out.T

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        single = u.dim() == 1
        if single:
            u = u.unsqueeze(0)
        du = self.node_update(u) + self.aggregate_messages(self.node_messages(u))
        return du.squeeze(0) if single else du


class PerEdgeSignalPropagation(SignalPropagation):
    """The straightforward per-edge GNN (one lin_edge call per edge and frame).

    Same parameters and state dict as :class:`SignalPropagation`: load one's state into the
    other to compare. Only for tests and the speed benchmark: O(N^2 B hidden) memory.
    ``edge_chunk`` > 0 evaluates the edges in chunks with activation checkpointing so the
    benchmark fits in memory at N = 1000 (same arithmetic, recomputed in backward).
    """

    def __init__(self, *args: Any, edge_chunk: int = 0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.edge_chunk = edge_chunk

    def message(self, x_j: torch.Tensor, w: torch.Tensor, a_j: torch.Tensor) -> torch.Tensor:
        """W_ij * lin_edge(u_j [, a_j]) for every edge: x_j (E, B), w (E,), a_j (E, emb)."""
        feats = x_j.unsqueeze(-1)
        if self.edge_input == "u_a":
            feats = torch.cat([feats, a_j.unsqueeze(1).expand(-1, x_j.shape[1], -1)], dim=-1)
        return w.unsqueeze(-1) * self.lin_edge(feats).squeeze(-1)

    def _edge_weights(self) -> torch.Tensor:
        return self.raw_W()[self.edge_rows, self.edge_cols]

    def _propagate_edges(self, x: torch.Tensor, edge_index: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.propagate(edge_index, x=x, w=w, a=self.a, size=(self.n_neurons, self.n_neurons))

    def aggregate_messages(self, messages: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError("PerEdgeSignalPropagation aggregates raw activity per edge")

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        single = u.dim() == 1
        if single:
            u = u.unsqueeze(0)
        x = u.T  # (N, B)
        edge_index = torch.stack([self.edge_cols, self.edge_rows])  # source j -> target i
        w = self._edge_weights()
        n_edges = edge_index.shape[1]
        chunk = self.edge_chunk if self.edge_chunk > 0 else n_edges
        agg = torch.zeros_like(x)
        for start in range(0, n_edges, chunk):
            sl = slice(start, start + chunk)
            if chunk < n_edges:
                part = torch.utils.checkpoint.checkpoint(
                    self._propagate_edges, x, edge_index[:, sl], w[sl], use_reentrant=False
                )
            else:
                part = self._propagate_edges(x, edge_index[:, sl], w[sl])
            agg = agg + part
        du = self.node_update(u) + agg.T
        return du.squeeze(0) if single else du


# --------------------------------------------------------------------- build / save / load
def _model_kwargs(cfg: ExperimentConfig) -> dict[str, Any]:
    gm = cfg.graph_model
    return dict(
        n_neurons=cfg.simulation.n_neurons,
        embedding_dim=gm.embedding_dim,
        hidden_dim=gm.hidden_dim,
        n_layers=gm.n_layers,
        activation=gm.activation,
        edge_input=gm.edge_input,
        W_init_std=gm.W_init_std,
        embedding_init=gm.embedding_init,
        mlp_init=gm.mlp_init,
        low_rank=gm.low_rank if gm.low_rank_factorization else None,
        learn_embeddings=embedding_is_learned(cfg.simulation.n_neuron_types, gm.learn_embedding),
    )


def _n_neurons(dataset: Any) -> int:
    """Neurons of a dataset (full, or a training view without W)."""
    W = getattr(dataset, "W", None)
    return int(W.shape[0]) if W is not None else int(dataset.u.shape[1])


def _true_support_mask(cfg: ExperimentConfig, dataset: Any) -> torch.Tensor:
    support = getattr(dataset, "support", None)
    if support is not None:  # a training view carries the mask, not W
        return torch.as_tensor(np.asarray(support, dtype=bool))
    if dataset is None or getattr(dataset, "W", None) is None:
        raise ValueError("graph_model.connectivity_mask = 'true_support' needs the dataset (its true W)")
    W = torch.as_tensor(dataset.W[...], dtype=torch.float32)
    return W != 0


def build_model(cfg: ExperimentConfig, dataset: Any = None, cls: type = SignalPropagation) -> SignalPropagation:
    """The model an experiment config asks for (on CPU; move it with ``.to(device)``).

    ``dataset`` (from ``neuralgraph.dataset.load_dataset``) is checked against the config and is required
    for ``connectivity_mask: true_support``.
    """
    n = cfg.simulation.n_neurons
    if dataset is not None and _n_neurons(dataset) != n:
        raise ValueError(
            f"dataset has {_n_neurons(dataset)} neurons but simulation.n_neurons = {n}: "
            f"the dataset was made from another config"
        )
    mask = _true_support_mask(cfg, dataset) if cfg.graph_model.connectivity_mask == "true_support" else None
    return cls(mask=mask, **_model_kwargs(cfg))


def save_trained_model(model: SignalPropagation, cfg: ExperimentConfig, path: str | Path) -> Path:
    """Write model.pt: {"state_dict", "config", "n_neurons", "n_types"} (atomic, CPU tensors)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "state_dict": state,
        "config": cfg.to_dict(),
        "n_neurons": model.n_neurons,
        "n_types": cfg.simulation.n_neuron_types,
    }
    return atomic_torch_save(path, payload)


def load_trained_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[SignalPropagation, ExperimentConfig]:
    """Rebuild a trained model (eval mode) and its config from model.pt."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: trained model not found (run the train stage first)")
    try:
        # weights_only: model.pt of an edited loop was written inside the sandbox; reading it must not run code
        # open_nofollow: a link planted in the run folder is refused, not followed
        with open_nofollow(path, "rb") as fh:
            payload = torch.load(fh, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt / truncated file, a link
        raise ValueError(f"{path}: not a readable model file ({exc})") from None
    missing = [k for k in ("state_dict", "config", "n_neurons") if k not in payload]
    if missing:
        raise ValueError(f"{path}: model file lacks {', '.join(missing)}")
    cfg = parse_config(payload["config"], source=str(path))
    state = payload["state_dict"]
    model = SignalPropagation(mask=state.get("mask"), **_model_kwargs(cfg))
    model.load_state_dict(state)
    model.to(map_location)
    model.eval()
    return model, cfg
