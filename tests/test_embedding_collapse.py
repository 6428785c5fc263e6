"""The reference's epoch-end embedding clustering (``training.embedding_collapse_every``) and its
optimizer rebuild (``training.reset_optimizer_each_epoch``): the schedule, the collapse on a
hand-made model, which parameters each epoch trains, resume, and the defaults."""
from __future__ import annotations

import json

import pytest
import torch

from tiny_configs import tiny_config_dict
from neuralgraph.config import ConfigError, parse_config
from neuralgraph.embedding_collapse import (GRID_POINTS, collapse_due, collapse_embedding, lin_phi_curves,
                                            messages_frozen)
from neuralgraph.model import build_model, load_trained_model
from neuralgraph.training import Trainer, TrainingTerminated, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ONE_TYPE = {"simulation.n_neuron_types": 1, "simulation.neuron_type_params": [[7.0, 0.0, 1.0]],
            "graph_model.learn_embedding": "always", "graph_model.edge_input": "u_a",
            "training.data_augmentation_loop": 1}


def _cfg(**overrides):
    return parse_config(tiny_config_dict(**{**ONE_TYPE, **overrides}), source="test")


@pytest.fixture(scope="module")
def one_type_data(tmp_path_factory):
    from neuralgraph.simulate import simulate

    return simulate(_cfg(), tmp_path_factory.mktemp("one_type") / "data", progress=False)


# ----------------------------------------------------------------------------- schedule and schema

def test_the_schedule_is_every_kth_epoch_and_never_in_the_last_k():
    def collapses(n_epochs, every):
        return [e for e in range(n_epochs) if collapse_due(e, n_epochs, every)]

    # the reference's landscape runs: sparsity_freq 4 with 12, 8 and 5 epochs
    assert collapses(12, 4) == [3, 7]
    assert collapses(8, 4) == [3]
    assert collapses(5, 4) == []
    assert collapses(6, 2) == [1, 3]
    assert collapses(50, 0) == []
    assert [e for e in range(12) if messages_frozen(e, 12, 4)] == [4, 8]
    assert not messages_frozen(0, 12, 1)


def test_the_options_default_off_and_refuse_several_types_naming_the_field():
    tr = parse_config(tiny_config_dict()).training
    assert (tr.embedding_collapse_every, tr.reset_optimizer_each_epoch) == (0, False)
    with pytest.raises(ConfigError, match=r"training.embedding_collapse_every = 4: needs simulation.n_neuron_types "
                                          r"= 1 \(got 4\)"):
        parse_config(tiny_config_dict(**{"training.embedding_collapse_every": 4}))
    with pytest.raises(ConfigError, match=r"training.embedding_collapse_every = -1: must be >= 0"):
        _cfg(**{"training.embedding_collapse_every": -1})
    assert _cfg(**{"training.embedding_collapse_every": 4}).training.embedding_collapse_every == 4


# ----------------------------------------------------------------------------- the collapse itself

def test_collapse_sets_every_embedding_to_the_median_and_refits_lin_phi_to_the_median_curve():
    cfg = _cfg()
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        model.a.normal_(1.0, 0.5)
    W, edge = model.W.detach().clone(), [p.detach().clone() for p in model.lin_edge.parameters()]
    grid = torch.linspace(-3.0, 3.0, GRID_POINTS)
    with torch.no_grad():
        median_a = model.a.median(dim=0).values.clone()
        target = lin_phi_curves(model, grid, model.a).median(dim=0).values
        start = (lin_phi_curves(model, grid, median_a.unsqueeze(0))[0] - target).pow(2).mean().sqrt()

    summary = collapse_embedding(model, u_scale=3.0, learning_rate=1e-3)

    assert torch.equal(model.a.detach(), median_a.expand_as(model.a))
    assert summary["embedding_spread"] == pytest.approx(0.5, rel=0.35)
    assert summary["refit_rms_before"] == pytest.approx(float(start), rel=1e-4)
    with torch.no_grad():
        after = (lin_phi_curves(model, grid, median_a.unsqueeze(0))[0] - target).pow(2).mean().sqrt()
    assert summary["refit_rms_after"] == pytest.approx(float(after), rel=1e-4)
    assert summary["refit_rms_after"] < summary["refit_rms_before"]
    # only a and lin_phi change
    assert torch.equal(model.W.detach(), W)
    assert all(torch.equal(p.detach(), q) for p, q in zip(model.lin_edge.parameters(), edge))
    assert model.a.requires_grad and all(p.requires_grad for p in model.lin_phi.parameters())


# ----------------------------------------------------------------------------- through the trainer

def _params(model):
    return {"W": model.W.detach().clone(), "a": model.a.detach().clone(),
            "lin_edge": torch.cat([p.detach().flatten() for p in model.lin_edge.parameters()]),
            "lin_phi": torch.cat([p.detach().flatten() for p in model.lin_phi.parameters()])}


def _run_recording_epoch_ends(cfg, data_dir, run_dir):
    """Train in one go; the parameters after each epoch's end events (collapse included)."""
    trainer = Trainer(cfg, data_dir, run_dir)
    after, end_epoch = [], trainer._end_epoch

    def recording(finished):
        end_epoch(finished)
        after.append(_params(trainer.model))

    trainer._end_epoch = recording
    return trainer.run(), after


def _stopped_at(cfg, data_dir, run_dir, step):
    """Stop the run after optimizer step ``step`` as SIGTERM does (checkpoint, TrainingTerminated)."""
    trainer = Trainer(cfg, data_dir, run_dir)
    one_step = trainer._one_step

    def stepping(*args):
        one_step(*args)
        if trainer.state.global_step == step:
            trainer.stop_signal = 15

    trainer._one_step = stepping
    with pytest.raises(TrainingTerminated):
        trainer.run()


def test_the_epoch_after_a_collapse_trains_W_and_lin_phi_only(one_type_data, tmp_path):
    """6 epochs, collapse every 2: after epochs 2 and 4 (1-based); epochs 3 and 5 freeze lin_edge and a."""
    cfg = _cfg(**{"training.n_epochs": 6, "training.embedding_collapse_every": 2})
    record, after = _run_recording_epoch_ends(cfg, one_type_data, tmp_path / "run")
    assert record["embedding_collapse_epochs"] == [1, 3] and record["epochs"] == 6
    assert json.loads((tmp_path / "run" / "training.json").read_text())["embedding_collapse_epochs"] == [1, 3]
    changed = [{k for k in after[e] if not torch.equal(after[e][k], after[e - 1][k])} for e in range(1, 6)]
    assert changed == [{"W", "a", "lin_edge", "lin_phi"}, {"W", "lin_phi"}, {"W", "a", "lin_edge", "lin_phi"},
                       {"W", "lin_phi"}, {"W", "a", "lin_edge", "lin_phi"}]
    for e in (1, 3):  # collapsed at the end of these epochs, and still one value after the frozen epoch
        for snapshot in (after[e], after[e + 1]):
            assert torch.equal(snapshot["a"], snapshot["a"][0].expand_as(snapshot["a"]))
    assert not torch.equal(after[0]["a"], after[0]["a"][0].expand_as(after[0]["a"]))
    # the default trains every parameter in every epoch
    _, plain = _run_recording_epoch_ends(_cfg(**{"training.n_epochs": 3}), one_type_data, tmp_path / "plain")
    assert all(not torch.equal(plain[e][k], plain[e - 1][k]) for e in (1, 2) for k in plain[e])


def test_reset_optimizer_rebuilds_adam_at_each_epoch_end_and_resumes_mid_frozen_epoch(one_type_data, tmp_path):
    cfg = _cfg(**{"training.n_epochs": 4, "training.embedding_collapse_every": 1,
                  "training.reset_optimizer_each_epoch": True})
    plain = _cfg(**{"training.n_epochs": 4})
    ipe = Trainer(cfg, one_type_data, tmp_path / "probe", max_steps=0).state.iterations_per_epoch
    for config, name in ((cfg, "reset"), (plain, "plain")):
        trainer = Trainer(config, one_type_data, tmp_path / name, max_steps=ipe)
        trainer.run()
        steps = {int(s["step"]) for s in trainer.optimizer.state_dict()["state"].values()}
        assert steps == (set() if name == "reset" else {ipe})
    # k = 1 with 4 epochs collapses after epochs 1, 2 and 3; epoch 2 (0-based 1) trains without lin_edge and a,
    # so its optimizer holds fewer parameters: a resume inside it must rebuild the same groups
    straight = train(cfg, one_type_data, tmp_path / "straight")
    assert straight["embedding_collapse_epochs"] == [0, 1, 2]
    resumed = tmp_path / "resumed"
    _stopped_at(cfg, one_type_data, resumed, ipe + ipe // 2)
    record = train(cfg, one_type_data, resumed)
    assert record["resumed_from_step"] == ipe + ipe // 2 and record["embedding_collapse_epochs"] == [0, 1, 2]
    models = [load_trained_model(run / "model.pt")[0] for run in (tmp_path / "straight", resumed)]
    for name, value in _params(models[0]).items():
        torch.testing.assert_close(value, _params(models[1])[name], rtol=0, atol=0)
