"""The GNN: node-level aggregation equals the per-edge oracle; shapes, masks, save/load."""
from __future__ import annotations

import hashlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from neuralgraph.config import ConfigError, parse_config
from neuralgraph.train_loop import build_optimizer
from neuralgraph.model import (
    PerEdgeSignalPropagation,
    SignalPropagation,
    build_model,
    load_trained_model,
    save_trained_model,
)

N = 12


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sparse_mask() -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    return torch.rand(N, N, generator=gen) < 0.12


VARIANTS = {
    "dense_u": {},
    "dense_u_a": {"edge_input": "u_a"},
    "low_rank": {"low_rank": 3},
    "sparse_support": {"mask": _sparse_mask()},
    "sparse_low_rank_u_a": {"mask": _sparse_mask(), "low_rank": 2, "edge_input": "u_a"},
}


def _pair(**kwargs) -> tuple[SignalPropagation, PerEdgeSignalPropagation]:
    torch.manual_seed(0)
    node = SignalPropagation(N, hidden_dim=8, activation="tanh", W_init_std=0.3, embedding_init="randn", **kwargs).double()
    edge = PerEdgeSignalPropagation(N, hidden_dim=8, activation="tanh", **kwargs).double()
    edge.load_state_dict(node.state_dict())
    return node, edge


def _output_and_grads(model: torch.nn.Module, u: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    out = model(u)
    (out.pow(2).sum() + out.sum()).backward()
    return out.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_node_level_equals_per_edge_values_and_gradients(variant):
    node, edge = _pair(**VARIANTS[variant])
    assert node.use_sparse == variant.startswith("sparse")
    u = torch.randn(3, N, dtype=torch.float64) * 3
    out_node, grads_node = _output_and_grads(node, u)
    out_edge, grads_edge = _output_and_grads(edge, u)
    assert out_node.abs().max() > 0.1  # not a trivially zero comparison
    torch.testing.assert_close(out_node, out_edge, rtol=1e-10, atol=1e-12)
    assert grads_node.keys() == grads_edge.keys()
    for name in grads_node:
        torch.testing.assert_close(grads_node[name], grads_edge[name], rtol=1e-9, atol=1e-12, msg=name)


def test_chunked_per_edge_oracle_matches_unchunked():
    node, edge = _pair()
    edge.edge_chunk = 7  # checkpointed chunks, as the benchmark uses at N = 1000
    u = torch.randn(2, N, dtype=torch.float64)
    out_node, grads_node = _output_and_grads(node, u)
    out_edge, grads_edge = _output_and_grads(edge, u)
    torch.testing.assert_close(out_node, out_edge)
    for name in grads_node:
        torch.testing.assert_close(grads_node[name], grads_edge[name], msg=name)


def test_node_level_evaluates_lin_edge_once_per_node_not_per_edge():
    node, _ = _pair()
    rows_seen = []
    node.lin_edge.register_forward_hook(lambda mod, inp, out: rows_seen.append(inp[0].shape[:-1].numel()))
    node(torch.randn(5, N, dtype=torch.float64))
    assert rows_seen == [5 * N]  # one call, B*N rows; per edge would be B*N*(N-1)


def test_sparse_support_goes_through_message_and_aggregate_once():
    node, _ = _pair(mask=_sparse_mask())
    assert node.use_sparse
    calls = []
    original = node.message_and_aggregate
    node.message_and_aggregate = lambda adj, x: calls.append(adj.is_sparse) or original(adj, x)
    node(torch.randn(4, N, dtype=torch.float64))
    assert calls == [True]


def test_matches_the_equation_by_hand():
    """du_i = lin_phi(u_i, a_i) + sum_{j != i} W_ij lin_edge(u_j): checked with explicit loops."""
    node, _ = _pair()
    u = torch.randn(N, dtype=torch.float64)
    with torch.no_grad():
        out = node(u)
        W = node.W
        for i in range(N):
            phi = node.lin_phi(torch.cat([u[i:i + 1], node.a[i]]))
            msg = sum(W[i, j] * node.lin_edge(u[j:j + 1]) for j in range(N) if j != i)
            assert torch.allclose(out[i], (phi + msg).squeeze(), rtol=1e-10, atol=1e-12)


def test_batched_and_single_frame_shapes_agree():
    node, _ = _pair()
    u = torch.randn(4, N, dtype=torch.float64)
    batched = node(u)
    assert batched.shape == (4, N)
    single = node(u[2])
    assert single.shape == (N,)
    torch.testing.assert_close(single, batched[2])


def test_dense_W_masks_diagonal_and_non_edges():
    mask = _sparse_mask()
    node, _ = _pair(mask=mask)
    W = node.dense_W().detach()
    assert torch.all(W.diagonal() == 0)
    off_support = ~mask.clone().fill_diagonal_(False)
    assert torch.all(W[off_support] == 0)
    dense, _ = _pair()
    Wd = dense.dense_W().detach()
    assert torch.all(Wd.diagonal() == 0) and torch.count_nonzero(Wd) == N * (N - 1)


def test_diagonal_never_receives_gradient():
    node, _ = _pair()
    node(torch.randn(3, N, dtype=torch.float64)).sum().backward()
    assert torch.all(node.W.grad.diagonal() == 0)
    assert node.W.grad.abs().sum() > 0


def test_W_diagonal_stays_exactly_zero_under_adam_and_is_ignored_if_set():
    node, _ = _pair()
    opt = torch.optim.Adam(node.parameters(), lr=0.05)
    for _ in range(5):
        opt.zero_grad()
        node(torch.randn(4, N, dtype=torch.float64)).pow(2).sum().backward()
        opt.step()
    assert torch.all(node.W.diagonal() == 0) and node.W.abs().sum() > 0
    u = torch.randn(2, N, dtype=torch.float64)
    before = node(u).detach()
    with torch.no_grad():
        node.W.diagonal().fill_(5.0)  # e.g. edited by an agent's loop: self-edges still carry nothing
    torch.testing.assert_close(node(u), before)


def test_low_rank_dense_W_is_the_masked_factor_product_with_the_asked_init_scale():
    torch.manual_seed(1)
    model = SignalPropagation(200, low_rank=20, W_init_std=0.01)
    expected = (model.W_L @ model.W_R) * model.mask
    torch.testing.assert_close(model.dense_W(), expected)
    assert not hasattr(model, "W") or not isinstance(getattr(model, "W", None), torch.nn.Parameter)
    std = float(model.dense_W().detach()[model.mask.bool()].std())
    assert 0.007 < std < 0.013


def _cfg(simulation: dict | None = None, **graph_model) -> "ExperimentConfig":  # noqa: F821
    return parse_config({
        "simulation": {"n_neurons": N, "n_neuron_types": 4, "n_frames": 400, **(simulation or {})},
        "graph_model": {"hidden_dim": 8, **graph_model},
        "training": {"held_out_frames": 100},
        "analysis": {"rollout_frames": 50},
    })


def _fake_dataset(W: np.ndarray) -> SimpleNamespace:
    return SimpleNamespace(W=W)


def test_build_model_follows_the_config():
    cfg = _cfg(embedding_dim=3, hidden_dim=10, n_layers=4, activation="silu", edge_input="u_a", W_init_std=0.0)
    model = build_model(cfg)
    assert model.a.shape == (N, 3)
    assert model.lin_edge.layers[0].in_features == 4 and model.lin_phi.layers[0].in_features == 4
    assert sum(isinstance(m, torch.nn.Linear) for m in model.lin_phi.layers) == 4
    assert isinstance(model.lin_phi.layers[1], torch.nn.SiLU)
    assert torch.all(model.W == 0)
    assert torch.all(model.a == 1)  # embedding_init ones
    assert model.a.requires_grad


def _state_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def test_default_mlp_init_is_bit_identical_to_the_model_before_the_option():
    """graph_model.mlp_init defaults to PyTorch's init: the same seed builds the same model, byte for
    byte, as before the option existed (digest taken from b2b37b9's model.py)."""
    torch.manual_seed(0)
    model = SignalPropagation(N, hidden_dim=16, edge_input="u_a", W_init_std=1.0)
    assert _state_digest(model) == "1f78fd2a376b9930"
    assert build_model(_cfg()).lin_edge.layers[2].bias.abs().sum() > 0  # the config's default is PyTorch's too


def test_reference_mlp_init_draws_later_layers_from_n_0_std_0_1_with_zero_biases():
    model = build_model(_cfg(mlp_init="reference", hidden_dim=64, n_layers=4))
    for mlp in (model.lin_edge, model.lin_phi):
        first, *later = mlp.weight_layers()
        bound = 1 / first.in_features ** 0.5  # PyTorch's default, kept for the first layer as the reference does
        assert first.bias.abs().max() <= bound and first.bias.abs().sum() > 0
        assert len(later) == 3
        hidden_weights = torch.cat([layer.weight.detach().flatten() for layer in later[:-1]])  # 2 x 64 x 64 draws
        assert 0.095 < float(hidden_weights.std()) < 0.105 and abs(float(hidden_weights.mean())) < 0.005
        assert float(hidden_weights.abs().max()) > 1 / 64 ** 0.5  # not PyTorch's uniform bound 0.125
        assert all(torch.all(layer.bias == 0) for layer in later)


def test_mlp_init_refuses_an_unknown_value_naming_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"graph_model\.mlp_init.*'pytorch'.*'reference'"):
        _cfg(mlp_init="xavier")
    with pytest.raises(ValueError, match="mlp_init = 'xavier': must be one of pytorch, reference"):
        SignalPropagation(N, mlp_init="xavier")


def _one_type_cfg(**graph_model) -> "ExperimentConfig":  # noqa: F821
    return _cfg({"n_neuron_types": 1, "neuron_type_params": [[7.0, 0.0, 1.0]]}, **graph_model)


def test_one_type_embedding_is_fixed_unless_learn_embedding_is_always():
    """auto (the default) keeps a one-type network's embedding at its start, as before the option;
    always trains it (the reference landscape's a, in the optimizer's embedding group); several
    types train it either way; an unknown value is refused naming the allowed ones."""
    assert not build_model(_one_type_cfg()).a.requires_grad
    always = _one_type_cfg(learn_embedding="always")
    model = build_model(always)
    assert model.a.requires_grad and torch.all(model.a == 1)
    groups = {g["name"]: g for g in build_optimizer(model, always).param_groups}
    assert groups["embedding"]["params"] == [model.a]
    assert groups["embedding"]["lr"] == always.training.learning_rate_embedding_start
    assert "embedding" not in {g["name"] for g in build_optimizer(build_model(_one_type_cfg()), _one_type_cfg()).param_groups}
    assert build_model(_cfg()).a.requires_grad  # 4 types
    with pytest.raises(ConfigError, match=r"graph_model\.learn_embedding.*'auto'.*'always'"):
        _cfg(learn_embedding="never")


def test_true_support_mask_needs_the_dataset_and_uses_its_wiring():
    cfg = _cfg(connectivity_mask="true_support")
    with pytest.raises(ValueError, match="true_support.*dataset"):
        build_model(cfg)
    rng = np.random.default_rng(0)
    W_true = (rng.random((N, N)) < 0.15) * rng.normal(size=(N, N))
    np.fill_diagonal(W_true, 0)
    model = build_model(cfg, _fake_dataset(W_true.astype(np.float32)))
    assert torch.equal(model.mask.bool(), torch.as_tensor(W_true != 0))


def test_build_model_refuses_a_dataset_of_another_size():
    with pytest.raises(ValueError, match="dataset has 5 neurons but simulation.n_neurons = 12"):
        build_model(_cfg(), _fake_dataset(np.zeros((5, 5), np.float32)))


def test_one_neuron_type_freezes_the_embeddings():
    cfg = parse_config({
        "simulation": {"n_neurons": N, "n_neuron_types": 1, "n_frames": 400},
        "training": {"held_out_frames": 100}, "analysis": {"rollout_frames": 50},
    })
    assert not build_model(cfg).a.requires_grad


@pytest.mark.parametrize("graph_model", [{}, {"low_rank_factorization": True, "low_rank": 4}, {"connectivity_mask": "true_support"}])
def test_save_and_load_round_trip(tmp_path, graph_model):
    cfg = _cfg(**graph_model)
    rng = np.random.default_rng(1)
    W_true = ((rng.random((N, N)) < 0.2) * rng.normal(size=(N, N))).astype(np.float32)
    model = build_model(cfg, _fake_dataset(W_true))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = save_trained_model(model, cfg, tmp_path / "model.pt")
    payload = torch.load(path, weights_only=False)
    assert set(payload) == {"state_dict", "config", "n_neurons", "n_types"}
    assert payload["n_neurons"] == N and payload["n_types"] == 4
    loaded, loaded_cfg = load_trained_model(path)
    assert loaded_cfg == cfg
    assert not loaded.training
    u = torch.randn(3, N)
    torch.testing.assert_close(loaded(u), model(u))
    torch.testing.assert_close(loaded.dense_W(), model.dense_W())


def test_load_trained_model_names_a_missing_or_bad_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pt.*train stage"):
        load_trained_model(tmp_path / "nowhere.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="bad.pt: not a readable model file"):
        load_trained_model(bad)
