"""The trainer options of issue 18 that express the reference's recipes exactly: its two phases
(edge-difference penalty only before ``edge_diff_stop_epoch``, L1 only from ``l1_start_epoch``),
its edge-difference penalty definition (``edge_diff_form: reference``), its activity scale
x_norm, the fixed embedding of a one-type network; and the defaults, bit-identical to before."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tiny_configs import REPO, tiny_config_dict
from neuralgraph.config import ConfigError, parse_config
from neuralgraph.model import build_model, load_trained_model
from neuralgraph.training import StepContext, Trainer, TrainingData, load_loop_module, reference_x_norm

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LOOP_SOURCE = (REPO / "neuralgraph" / "train_loop.py").read_text()
STARTS = torch.tensor([3, 100, 250, 400, 601, 777, 900, 1100])


class _Square(torch.nn.Module):
    """A hand-made message function, decreasing for u > 0 and increasing for u < 0: -u^2."""

    def forward(self, x):
        return -(x[..., :1] ** 2)

    def weight_matrices(self):
        return []


def _cfg(**training):
    return parse_config(tiny_config_dict(**{f"training.{k}": v for k, v in training.items()}), source="test")


def _data(u: torch.Tensor, x_norm: float = 3.0) -> TrainingData:
    return TrainingData(u=u, du=torch.zeros_like(u), delta_t=0.01, n_frames=u.shape[0],
                        u_scale=float(u.abs().max()), x_norm=x_norm)


def _ctx(cfg, epoch: int) -> StepContext:
    return StepContext(cfg=cfg, epoch=epoch, step=0, step_in_epoch=0, iterations_per_epoch=10,
                       n_epochs=cfg.training.n_epochs, mode="single", horizon=1, scheduler=None,
                       device=torch.device("cpu"))


def _hand_made_model(cfg):
    model = build_model(cfg)
    model.lin_edge = _Square()
    with torch.no_grad():
        model.W.normal_(0, 0.05)
    return model


@pytest.fixture(scope="module")
def u_frames():
    return torch.from_numpy(np.random.default_rng(0).normal(0, 2.0, (1200, 24)).astype(np.float32))


# ----------------------------------------------------------------------------- schema

def test_the_options_default_to_todays_behaviour_and_refuse_bad_values_naming_the_field():
    tr = _cfg().training
    assert (tr.edge_diff_stop_epoch, tr.edge_diff_form) == (0, "batch")
    assert _cfg(edge_diff_form="reference", edge_diff_stop_epoch=2, n_epochs=2).training.edge_diff_stop_epoch == 2
    with pytest.raises(ConfigError, match=r"training.edge_diff_form = 'per_frame': must be one of 'batch' or 'reference'"):
        _cfg(edge_diff_form="per_frame")
    with pytest.raises(ConfigError, match=r"training.edge_diff_stop_epoch = -1: must be >= 0"):
        _cfg(edge_diff_stop_epoch=-1)
    # the reference's LLM loop set data_augmentation_loop 200 in its claude section
    assert parse_config(tiny_config_dict(**{"claude.data_augmentation_loop": 200})).claude.data_augmentation_loop == 200


# ----------------------------------------------------------------------------- penalty values

def test_reference_x_norm_is_round_of_one_and_a_half_std():
    u = torch.tensor([[0.0, 4.0], [0.0, 4.0]])  # unbiased std 2.309 -> 1.5 std 3.46 -> 3
    assert reference_x_norm(u) == 3.0
    assert reference_x_norm(torch.full((5, 3), 2.0)) == 0.0  # constant activity: no shift


def test_reference_form_is_a_per_frame_norm_summed_over_frames_with_shift_x_norm_over_150(u_frames):
    cfg = _cfg(coeff_edge_diff=7.0, edge_diff_form="reference")
    model = _hand_made_model(cfg)
    data = _data(u_frames, x_norm=3.0)
    u = u_frames[STARTS].double().numpy()
    d = 3.0 / 150
    per_entry = np.maximum((u + d) ** 2 - u ** 2, 0.0)  # relu(f(u) - f(u + d)) for f = -u^2
    expected = 7.0 * np.sqrt((per_entry ** 2).sum(axis=1)).sum()
    got = float(load_loop_module(None).regularisation(model, data, STARTS, _ctx(cfg, 0)))
    assert got == pytest.approx(expected, rel=1e-5)
    # the batch form of the same model: one norm over all B x N entries, shift u_scale / 100
    batch = _cfg(coeff_edge_diff=7.0)
    d = float(u_frames.abs().max()) / 100
    per_entry = np.maximum((u + d) ** 2 - u ** 2, 0.0)
    expected_batch = 7.0 * np.sqrt((per_entry ** 2).sum())
    got_batch = float(load_loop_module(None).regularisation(model, data, STARTS, _ctx(batch, 0)))
    assert got_batch == pytest.approx(expected_batch, rel=1e-5)
    assert got_batch != pytest.approx(got, rel=1e-2)


def test_reference_form_acts_on_lin_edge_only_through_detached_states(u_frames):
    cfg = _cfg(coeff_edge_diff=1.0, edge_diff_form="reference")
    model = build_model(cfg)
    u = u_frames.clone().requires_grad_(True)
    data = _data(u, x_norm=3.0)
    penalty = load_loop_module(None).regularisation(model, data, STARTS, _ctx(cfg, 0))
    penalty.backward()
    assert u.grad is None  # the node states are detached
    assert model.W.grad is None or float(model.W.grad.abs().sum()) == 0.0
    assert model.a.grad is None or float(model.a.grad.abs().sum()) == 0.0


# ----------------------------------------------------------------------------- phases

def test_two_phases_edge_difference_before_the_switch_L1_from_it(u_frames):
    """The reference's semantics: epochs < n_epochs_init have the penalty and no L1; later ones L1 only."""
    cfg = _cfg(coeff_edge_diff=5.0, coeff_W_L1=1e-2, n_epochs=4, l1_start_epoch=2, edge_diff_stop_epoch=2,
               edge_diff_form="reference")
    model = _hand_made_model(cfg)
    data = _data(u_frames)
    loop = load_loop_module(None)
    edge_only = _cfg(coeff_edge_diff=5.0, edge_diff_form="reference")
    l1_only = _cfg(coeff_W_L1=1e-2)
    for epoch in (0, 1):
        expected = loop.regularisation(model, data, STARTS, _ctx(edge_only, epoch))
        assert float(expected) > 0
        torch.testing.assert_close(loop.regularisation(model, data, STARTS, _ctx(cfg, epoch)), expected, rtol=0, atol=0)
    for epoch in (2, 3):
        expected = 1e-2 * model.dense_W().abs().sum()
        torch.testing.assert_close(loop.regularisation(model, data, STARTS, _ctx(cfg, epoch)), expected, rtol=0, atol=0)
        torch.testing.assert_close(loop.regularisation(model, data, STARTS, _ctx(l1_only, epoch)), expected)
    # the published low-rank recipe: n_epochs = n_epochs_init = 2, so the penalty all along and L1 never
    recipe = _cfg(coeff_edge_diff=5.0, coeff_W_L1=1e-5, n_epochs=2, l1_start_epoch=2, edge_diff_stop_epoch=2,
                  edge_diff_form="reference")
    for epoch in (0, 1):
        torch.testing.assert_close(loop.regularisation(model, data, STARTS, _ctx(recipe, epoch)),
                                   loop.regularisation(model, data, STARTS, _ctx(edge_only, epoch)), rtol=0, atol=0)


def test_penalties_per_frame_count_L1_and_lin_phi_zero_once_per_frame_of_the_batch(u_frames):
    """The reference adds ||W||_1 and ||lin_phi(0, a)|| inside its loop over the batch's frames."""
    loop = load_loop_module(None)
    data = _data(u_frames)
    model = _hand_made_model(_cfg())
    zero = torch.zeros(1, model.n_neurons)
    l1, phi0 = model.dense_W().abs().sum(), model.node_update(zero).norm(2)
    edge_only = _cfg(coeff_edge_diff=5.0, edge_diff_form="reference")
    edge = loop.regularisation(model, data, STARTS, _ctx(edge_only, 0))
    for per_frame, times in ((False, 1), (True, len(STARTS))):
        cfg = _cfg(coeff_W_L1=1e-3, coeff_lin_phi_zero=2.0, coeff_edge_diff=5.0, edge_diff_form="reference",
                   penalties_per_frame=per_frame)
        got = loop.regularisation(model, data, STARTS, _ctx(cfg, 0))
        torch.testing.assert_close(got, times * (1e-3 * l1 + 2.0 * phi0) + edge)
    assert _cfg().training.penalties_per_frame is False
    # the landscape trainer's count: W's L1 once per step, lin_phi(0) still once per frame
    cfg = _cfg(coeff_W_L1=1e-3, coeff_lin_phi_zero=2.0, coeff_edge_diff=5.0, edge_diff_form="reference",
               penalties_per_frame=True, W_L1_once_per_step=True)
    got = loop.regularisation(model, data, STARTS, _ctx(cfg, 0))
    torch.testing.assert_close(got, 1e-3 * l1 + len(STARTS) * 2.0 * phi0 + edge)
    assert _cfg().training.W_L1_once_per_step is False
    with pytest.raises(ValueError, match="penalty 'W_l1': allowed 'W_L1', 'lin_phi_zero'"):
        loop.penalty_count(cfg.training, len(STARTS), "W_l1")


def test_W_L1_once_per_step_without_penalties_per_frame_is_refused_naming_both_fields():
    with pytest.raises(ConfigError) as info:
        _cfg(coeff_W_L1=1e-3, W_L1_once_per_step=True)
    assert "training.W_L1_once_per_step" in str(info.value) and "training.penalties_per_frame = true" in str(info.value)


def test_default_keeps_the_penalty_in_every_epoch_with_the_old_formula(u_frames):
    cfg = _cfg(coeff_edge_diff=3.0, n_epochs=6)
    model = _hand_made_model(cfg)
    data = _data(u_frames)
    loop = load_loop_module(None)
    u = u_frames[STARTS]
    old = 3.0 * torch.relu(model.lin_edge(model.edge_features(u))
                           - model.lin_edge(model.edge_features(u + data.u_scale / 100))).norm(2)
    for epoch in range(6):
        torch.testing.assert_close(loop.regularisation(model, data, STARTS, _ctx(cfg, epoch)), old, rtol=0, atol=0)


def test_default_training_is_bit_identical_to_the_loop_before_the_options(tiny_dataset, tmp_path):
    """The packaged loop with the defaults trains exactly like the loop before issue 18."""
    cfg, data_dir = tiny_dataset
    cfg = parse_config({**cfg.to_dict(), "training": {**cfg.to_dict()["training"], "coeff_edge_diff": 50.0,
                                                      "coeff_W_L1": 1e-3}})
    start = LOOP_SOURCE.index("    if tr.coeff_edge_diff > 0 and (tr.edge_diff_stop_epoch")
    end = LOOP_SOURCE.index("        total = total + tr.coeff_edge_diff * penalty\n") + len(
        "        total = total + tr.coeff_edge_diff * penalty\n")
    before = ("    if tr.coeff_edge_diff > 0:\n"
              "        total = total + tr.coeff_edge_diff * _edge_monotonicity_penalty(model, data.u[starts], "
              "data.u_scale / 100)\n")
    old_loop = tmp_path / "old_loop.py"
    old_loop.write_text(LOOP_SOURCE[:start] + before + LOOP_SOURCE[end:])
    Ws = []
    for name, loop in (("packaged", None), ("before", old_loop)):
        Trainer(cfg, data_dir, tmp_path / name, loop_path=loop, max_steps=20).run()
        Ws.append(load_trained_model(tmp_path / name / "model.pt")[0].dense_W().detach())
    torch.testing.assert_close(Ws[0], Ws[1], rtol=0, atol=0)


def test_trainer_gives_the_loop_the_reference_x_norm_of_the_training_frames(tiny_dataset, tmp_path):
    cfg, data_dir = tiny_dataset
    trainer = Trainer(cfg, data_dir, tmp_path / "run", max_steps=1)
    assert trainer.data.x_norm == reference_x_norm(trainer.data.u) == float(round(1.5 * float(trainer.data.u.std())))
    assert trainer.data.x_norm > 0


# ----------------------------------------------------------------------------- embedding, W init

def test_one_type_network_keeps_its_embedding_fixed_and_W_init_std_sets_the_scale():
    cfg = parse_config(tiny_config_dict(**{"simulation.n_neuron_types": 1, "simulation.neuron_type_params": [[7.0, 0.0, 1.0]],
                                           "graph_model.W_init_std": 1.0, "graph_model.edge_input": "u_a"}))
    torch.manual_seed(0)
    model = build_model(cfg)
    assert not model.a.requires_grad and torch.equal(model.a.detach(), torch.ones_like(model.a))
    optimizer = load_loop_module(None).build_optimizer(model, cfg)
    assert all(p is not model.a for group in optimizer.param_groups for p in group["params"])
    std = float(model.W.detach().std())
    assert math.isclose(std, 1.0, rel_tol=0.1)
