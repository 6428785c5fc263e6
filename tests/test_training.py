"""The recurrent trainer: losses, learning, resume after a kill, divergence, loop files, CLI."""
from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tiny_configs import REPO, tiny_config_dict
from neuralgraph.config import dump_config, parse_config
from neuralgraph.cuda_graph import wants_cuda_graph
from neuralgraph.io import file_sha256
from neuralgraph.metrics import connectivity_r2
from neuralgraph.model import build_model, load_trained_model
from neuralgraph.training import (
    StepContext,
    Trainer,
    TrainingData,
    iterations_per_epoch,
    load_loop_module,
    main,
    subsample_history,
)

LOOP_SOURCE = (REPO / "neuralgraph" / "train_loop.py").read_text()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(**overrides):
    return parse_config(tiny_config_dict(**overrides), source="test")


def _write_cfg(cfg, path: Path) -> Path:
    return dump_config(cfg, path)


def _record(run: Path) -> dict:
    return json.loads((run / "training.json").read_text())


def _loop_copy(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """A copy of the packaged loop with one edit (as the agent would make)."""
    assert old in LOOP_SOURCE
    path = tmp_path / name
    path.write_text(LOOP_SOURCE.replace(old, new))
    return path


def _subprocess_env() -> dict:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


# ----------------------------------------------------------------------------- pure pieces
def test_iterations_per_epoch_is_the_reference_formula():
    assert iterations_per_epoch(100_000, 15, 8) == 37_500
    assert iterations_per_epoch(20_000, 11, 8) == 5_500
    assert iterations_per_epoch(1_500, 2, 8) == 75


@pytest.mark.parametrize("T", [1, 4, 16, 64])
def test_batch_starts_stay_in_the_training_segment_and_align_to_T(T):
    loop = load_loop_module(None)
    gen = torch.Generator().manual_seed(0)
    n_train = 300
    k = torch.cat([loop.sample_batch_starts(n_train, T, 8, gen) for _ in range(500)])
    assert k.min() >= 0 and k.max() <= n_train - T - 5
    assert torch.all(k % T == 0)
    assert len(torch.unique(k)) > min(20, (n_train - T - 5) // T)  # really random


def test_training_mode_warm_up_then_recurrent_or_ode():
    loop = load_loop_module(None)
    cfg = _cfg(**{"training.time_step": 4, "training.recurrent_training_start_epoch": 1})
    assert loop.training_mode(cfg, 0) == ("single", 1)
    assert loop.training_mode(cfg, 1) == ("recurrent", 4)
    ode = _cfg(**{"training.time_step": 4, "training.recurrent_training": False, "training.neural_ODE_training": True})
    assert loop.training_mode(ode, 0) == ("ode", 4)


def test_adam_has_three_parameter_groups_with_the_three_rates():
    cfg = _cfg(**{"training.learning_rate_W_start": 1e-2, "training.learning_rate_start": 2e-4,
                  "training.learning_rate_embedding_start": 3e-4})
    model = build_model(cfg)
    opt = load_loop_module(None).build_optimizer(model, cfg)
    assert isinstance(opt, torch.optim.Adam)
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["W"]["lr"] == 1e-2 and by_name["W"]["params"] == [model.W]
    assert by_name["mlp"]["lr"] == 2e-4 and len(by_name["mlp"]["params"]) == 12
    assert by_name["embedding"]["lr"] == 3e-4 and by_name["embedding"]["params"] == [model.a]


def test_loss_history_is_subsampled_by_window_means():
    means, steps = subsample_history([float(i) for i in range(10)], 4)
    assert means == [1.0, 4.0, 7.0, 9.0] and steps == [3, 6, 9, 10]


# ----------------------------------------------------------------------------- losses on data
def _data(dataset_dir: Path, cfg) -> TrainingData:
    u = torch.from_numpy(np.load(dataset_dir / "u.npy")[: cfg.n_train_frames].astype(np.float64))
    du = torch.from_numpy(np.load(dataset_dir / "du.npy")[: cfg.n_train_frames].astype(np.float64))
    return TrainingData(u=u, du=du, delta_t=cfg.simulation.delta_t, n_frames=cfg.n_train_frames, u_scale=float(u.abs().max()))


def _ctx(cfg, mode: str, horizon: int) -> StepContext:
    return StepContext(cfg=cfg, epoch=0, step=0, step_in_epoch=0, iterations_per_epoch=10, n_epochs=1, mode=mode,
                       horizon=horizon, scheduler=None, device=torch.device("cpu"))


def test_recurrent_T1_without_noise_equals_single_step_training(tiny_dataset):
    cfg, data_dir = tiny_dataset
    data = _data(data_dir, cfg)
    loop = load_loop_module(None)
    torch.manual_seed(0)
    model_single = build_model(cfg).double()
    with torch.no_grad():
        model_single.W.normal_(0, 0.05)
    model_rec = copy.deepcopy(model_single)
    initial_W = model_single.W.detach().clone()
    starts = torch.tensor([3, 100, 250, 400, 601, 777, 900, 1100])
    losses = {}
    for model, mode in ((model_single, "single"), (model_rec, "recurrent")):
        opt = loop.build_optimizer(model, cfg)
        losses[mode] = [float(loop.train_step(model, opt, data, starts, _ctx(cfg, mode, 1))) for _ in range(3)]
    # same loss ((u[k+1] - u[k]) / dt = du[k] up to the float32 storage of u) and, after 3 Adam steps
    # of up to 5e-3 each, the same parameters to within 1e-5 (float32 storage noise through Adam)
    np.testing.assert_allclose(losses["recurrent"], losses["single"], rtol=1e-4)
    assert losses["single"][0] > 1.0
    for (name, p_single), p_rec in zip(model_single.named_parameters(), model_rec.parameters()):
        torch.testing.assert_close(p_rec, p_single, rtol=1e-4, atol=1e-5, msg=name)
    assert (model_single.W - initial_W).abs().max() > 1e-3  # the comparison is after real steps


def test_recurrent_loss_is_scaled_L2_norm_of_the_T_step_error(tiny_dataset):
    cfg, data_dir = tiny_dataset
    data = _data(data_dir, cfg)
    loop = load_loop_module(None)
    model = build_model(cfg).double()
    starts = torch.tensor([8, 16, 400])
    T, dt = 4, cfg.simulation.delta_t
    with torch.no_grad():
        u = data.u[starts]
        for _ in range(T):
            u = u + dt * model(u)
        expected = torch.sqrt((((u - data.u[starts + T]) / (dt * T)) ** 2).sum())
        got = loop.prediction_loss(model, data, starts, _ctx(cfg, "recurrent", T))
    torch.testing.assert_close(got, expected)


def test_noise_recurrent_level_perturbs_the_unroll():
    loop = load_loop_module(None)
    model = build_model(_cfg())
    u0 = torch.randn(2, 24)
    with torch.no_grad():
        clean = loop.euler_unroll(model, u0, 4, 0.01, 0.0)
        torch.manual_seed(5)
        noisy = loop.euler_unroll(model, u0, 4, 0.01, 0.1)
    assert 0.05 < float((noisy - clean).std()) < 0.4  # ~ 0.1 * sqrt(4)


# ----------------------------------------------------------------------------- learning
@pytest.fixture(scope="module")
def small_network(tmp_path_factory):
    """60 Lorentz neurons, 4000 frames: rich enough activity for W to be learnable in ~1000 steps."""
    from neuralgraph.simulate import simulate

    cfg = _cfg(**{"simulation.n_neurons": 60, "simulation.n_frames": 4000, "training.held_out_frames": 500,
                  "training.data_augmentation_loop": 12, "training.learning_rate_W_start": 1e-2,
                  "training.log_every_s": 0.5})
    return cfg, simulate(cfg, tmp_path_factory.mktemp("small") / "data", progress=False)


def _initial_model(cfg):
    """The model a run starts from (the trainer seeds torch with training.seed, then builds)."""
    torch.manual_seed(cfg.training.seed)
    return build_model(cfg)


def test_short_training_lowers_loss_and_raises_connectivity_R2(small_network, tmp_path, capsys):
    cfg, data_dir = small_network
    true_W = np.load(data_dir / "W.npy")
    r2_start = connectivity_r2(_initial_model(cfg).dense_W().detach().numpy(), true_W)
    run = tmp_path / "run"
    assert main(["--config", str(_write_cfg(cfg, tmp_path / "c.yaml")), "--data", str(data_dir), "--out", str(run)]) == 0
    record = _record(run)
    r2_end = connectivity_r2(load_trained_model(run / "model.pt")[0].dense_W().detach().numpy(), true_W)
    assert record["status"] == "ok" and record["iterations"] == 1200 == iterations_per_epoch(4000, 12, 8)
    assert record["final_loss"] < 0.5 * record["first_loss"]
    assert r2_start < 0.05 and r2_end > 0.3, (r2_start, r2_end)
    assert record["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert record["seed"] == 0 and record["resumed_from_step"] == 0
    progress = [line for line in capsys.readouterr().err.splitlines() if "it/s" in line]
    assert progress and all("ETA" in line and "loss" in line and "W R2" in line for line in progress)


def test_training_is_reproducible_with_the_same_seed(tiny_dataset, tmp_path):
    cfg, data_dir = tiny_dataset
    Ws = []
    for name in ("a", "b"):
        Trainer(cfg, data_dir, tmp_path / name, max_steps=30).run()
        Ws.append(load_trained_model(tmp_path / name / "model.pt")[0].dense_W().detach())
    torch.testing.assert_close(Ws[0], Ws[1], rtol=0, atol=0)


# ----------------------------------------------------------------------------- run folder & CLI
def test_cli_writes_the_run_folder_and_a_rerun_is_a_no_op(tiny_dataset, tmp_path, capsys):
    cfg, data_dir = tiny_dataset
    cfg = _cfg(**{"training.n_epochs": 2})
    config = _write_cfg(cfg, tmp_path / "config.yaml")
    run = tmp_path / "run"
    assert main(["--config", str(config), "--data", str(data_dir), "--out", str(run)]) == 0
    # each epoch-end line names the epoch that ended, at the step where it ended
    ends = [line.split("] ", 2)[-1] for line in capsys.readouterr().err.splitlines() if "[epoch end]" in line]
    per_epoch = iterations_per_epoch(cfg.simulation.n_frames, 2, 8)
    assert [line.split(" (")[0] for line in ends] == [f"epoch 1/2 step {per_epoch}/{2 * per_epoch}",
                                                      f"epoch 2/2 step {2 * per_epoch}/{2 * per_epoch}"]
    record = _record(run)
    for key in ("status", "reason", "final_loss", "loss_history", "training_time_min", "iterations", "epochs",
                "data_augmentation_loop", "device", "time_step", "resumed_from_step", "seed"):
        assert key in record, key
    assert record["status"] == "ok" and record["epochs"] == 2
    assert record["iterations"] == 2 * iterations_per_epoch(cfg.simulation.n_frames, 2, 8)  # exactly n_epochs
    assert len(record["loss_history"]) == record["iterations"]
    assert record["data_augmentation_loop"] == 2 and record["time_step"] == 1
    assert (run / "model.pt").exists() and (run / "checkpoint.pt").exists()
    before = (run / "training.json").read_text()
    mtime = (run / "model.pt").stat().st_mtime_ns
    assert main(["--config", str(config), "--data", str(data_dir), "--out", str(run)]) == 0
    assert (run / "training.json").read_text() == before and (run / "model.pt").stat().st_mtime_ns == mtime
    assert main(["--config", str(config), "--data", str(data_dir), "--out", str(run), "--force", "--max-steps", "5"]) == 0
    assert _record(run)["iterations"] == 5 and "max-steps 5" in _record(run)["reason"]


def test_the_record_counts_steps_x_horizon_with_a_single_step_warm_up(tiny_dataset, tmp_path):
    """horizon_steps (the policy study's compute) sums each step's horizon: 1 in the warm-up
    epoch, time_step after it."""
    _, data_dir = tiny_dataset
    cfg = _cfg(**{"training.n_epochs": 2, "training.recurrent_training_start_epoch": 1, "training.time_step": 4,
                  "training.data_augmentation_loop": 1})
    record = Trainer(cfg, data_dir, tmp_path / "run").run()
    per_epoch = iterations_per_epoch(cfg.simulation.n_frames, 1, 8)
    assert record["iterations"] == 2 * per_epoch and record["horizon"] == 4
    assert record["horizon_steps"] == per_epoch * 1 + per_epoch * 4


def test_max_steps_caps_the_optimizer_steps(tiny_dataset, tmp_path):
    cfg, data_dir = tiny_dataset
    record = Trainer(cfg, data_dir, tmp_path / "run", max_steps=7).run()
    assert record["status"] == "ok" and record["iterations"] == 7 and record["epochs"] == 0


@pytest.mark.slow
def test_interrupted_run_resumes_from_its_checkpoint_and_finishes(tiny_dataset, tmp_path):
    """Kill -9 after the first periodic checkpoint (preemption), rerun the same command."""
    _, data_dir = tiny_dataset
    cfg = _cfg(**{"training.data_augmentation_loop": 40, "training.checkpoint_every_min": 0.002})
    config = _write_cfg(cfg, tmp_path / "config.yaml")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "neuralgraph", "train", "--config", str(config), "--data", str(data_dir), "--out", str(run)]
    proc = subprocess.Popen(cmd, env=_subprocess_env(), cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (run / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be interrupted"
    assert not (run / "training.json").exists()
    done = subprocess.run(cmd, env=_subprocess_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    record = _record(run)
    total = iterations_per_epoch(cfg.simulation.n_frames, 40, 8)
    assert record["status"] == "ok" and record["iterations"] == total
    assert 0 < record["resumed_from_step"] < total
    assert "resuming from checkpoint at step" in done.stderr
    # the resumed run is the uninterrupted run: same batches, same noise, same result
    Trainer(cfg, data_dir, tmp_path / "straight").run()
    resumed, _ = load_trained_model(run / "model.pt")
    straight, _ = load_trained_model(tmp_path / "straight" / "model.pt")
    torch.testing.assert_close(resumed.dense_W(), straight.dense_W(), rtol=1e-6, atol=1e-8)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_143(tiny_dataset, tmp_path):
    _, data_dir = tiny_dataset
    cfg = _cfg(**{"training.data_augmentation_loop": 200, "training.log_every_s": 0.2})
    config = _write_cfg(cfg, tmp_path / "config.yaml")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "neuralgraph", "train", "--config", str(config), "--data", str(data_dir), "--out", str(run)]
    proc = subprocess.Popen(cmd, env=_subprocess_env(), cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # wait for the first progress line: training is under way
        if "it/s" in line:
            break
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143, err
    assert "checkpoint saved" in err and (run / "checkpoint.pt").exists()
    state = torch.load(run / "checkpoint.pt", weights_only=False)["state"]
    assert state["global_step"] > 0


NAN_AT_STEP_3 = (
    "    return loss.detach()\n",
    "    return loss.detach() * (float('nan') if ctx.step >= 3 else 1.0)\n",
)
EXPLODES = (
    "    return loss.detach()\n",
    "    return loss.detach() * (10.0 ** ctx.step)\n",
)


@pytest.mark.parametrize("edit,reason", [(NAN_AT_STEP_3, "loss became nan at step 4"),
                                         (EXPLODES, "exceeded divergence_factor")])
def test_divergence_is_a_result_not_a_crash(tiny_dataset, tmp_path, edit, reason):
    cfg, data_dir = tiny_dataset
    loop = _loop_copy(tmp_path, "diverging_loop.py", *edit)
    config = _write_cfg(cfg, tmp_path / "config.yaml")
    run = tmp_path / "run"
    code = main(["--config", str(config), "--data", str(data_dir), "--out", str(run), "--loop", str(loop)])
    assert code == 0
    record = _record(run)
    assert record["status"] == "diverged" and reason in record["reason"], record["reason"]
    assert record["iterations"] < iterations_per_epoch(cfg.simulation.n_frames, 2, 8)
    assert (run / "model.pt").exists() and (run / "checkpoint.pt").exists()


def test_a_huge_learning_rate_is_caught_as_diverged(tiny_dataset, tmp_path):
    _, data_dir = tiny_dataset
    cfg = _cfg(**{"training.learning_rate_W_start": 1.0, "training.learning_rate_start": 1.0,
                  "training.divergence_factor": 3.0})
    record = Trainer(cfg, data_dir, tmp_path / "run").run()
    assert record["status"] == "diverged" and "divergence_factor" in record["reason"]


def test_the_loop_file_given_is_the_one_that_runs(tiny_dataset, tmp_path):
    """A copy that freezes W (lr 0) runs instead of the packaged loop; two copies coexist."""
    cfg, data_dir = tiny_dataset
    frozen = _loop_copy(tmp_path, "frozen_W.py", '"lr": tr.learning_rate_W_start', '"lr": 0.0')
    config = _write_cfg(cfg, tmp_path / "config.yaml")
    args = ["--config", str(config), "--data", str(data_dir), "--max-steps", "20"]
    assert main(args + ["--out", str(tmp_path / "frozen"), "--loop", str(frozen)]) == 0
    assert main(args + ["--out", str(tmp_path / "packaged")]) == 0
    init_W = _initial_model(cfg).dense_W().detach()
    W_frozen = load_trained_model(tmp_path / "frozen" / "model.pt")[0].dense_W().detach()
    W_packaged = load_trained_model(tmp_path / "packaged" / "model.pt")[0].dense_W().detach()
    torch.testing.assert_close(W_frozen, init_W, rtol=0, atol=0)
    assert (W_packaged - init_W).abs().max() > 1e-3
    assert _record(tmp_path / "frozen")["loop_file"] == str(frozen)
    assert load_loop_module(frozen).__name__ != load_loop_module(None).__name__


def test_time_target_chooses_data_augmentation_loop(tiny_dataset, tmp_path):
    cfg, data_dir = tiny_dataset
    cfg = _cfg(**{"training.training_time_target_min": 0.04, "training.data_augmentation_loop_max": 1000})
    record = Trainer(cfg, data_dir, tmp_path / "run").run()
    dal = record["data_augmentation_loop"]
    assert record["data_augmentation_loop_chosen_by_time_target"] and dal != 2
    assert record["iterations"] == iterations_per_epoch(cfg.simulation.n_frames, dal, 8)
    assert 0.01 < record["training_time_min"] < 0.2  # the 0.04 min target, on a noisy shared CPU


def test_neural_ode_mode_runs_a_few_steps(tiny_dataset, tmp_path):
    _, data_dir = tiny_dataset
    for method, adjoint in (("dopri5", True), ("rk4", False)):
        cfg = _cfg(**{"training.recurrent_training": False, "training.neural_ODE_training": True,
                      "training.time_step": 4, "training.ode_method": method, "training.ode_adjoint": adjoint})
        record = Trainer(cfg, data_dir, tmp_path / method, max_steps=3).run()
        assert record["status"] == "ok" and record["training_mode"] == "ode" and record["iterations"] == 3
        assert np.isfinite(record["final_loss"])
        model, _ = load_trained_model(tmp_path / method / "model.pt")
        assert (model.dense_W().detach() - build_model(cfg).dense_W().detach()).abs().max() > 0


def test_missing_dataset_exits_non_zero_with_one_clear_line(tmp_path, capsys):
    config = _write_cfg(_cfg(), tmp_path / "config.yaml")
    code = main(["--config", str(config), "--data", str(tmp_path / "no_data"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("train: error: --data") and "no_data" in err[-1] and "simulate" in err[-1]
    assert not (tmp_path / "run" / "training.json").exists()


def test_dataset_of_another_config_is_refused(tiny_dataset, tmp_path, capsys):
    _, data_dir = tiny_dataset
    config = _write_cfg(_cfg(**{"simulation.n_frames": 1600}), tmp_path / "config.yaml")
    assert main(["--config", str(config), "--data", str(data_dir), "--out", str(tmp_path / "run")]) == 2
    assert "1500 frames but simulation.n_frames = 1600" in capsys.readouterr().err


def test_broken_loop_file_and_bad_config_exit_non_zero(tiny_dataset, tmp_path, capsys):
    """A broken loop file exits 4 (the loop's fault), a bad config 2 (the input's): the smoke
    run tells an edit's failure from its harness's by these codes."""
    _, data_dir = tiny_dataset
    config = _write_cfg(_cfg(), tmp_path / "config.yaml")
    broken = tmp_path / "broken.py"
    broken.write_text("def train_step(:\n")
    assert main(["--config", str(config), "--data", str(data_dir), "--out", str(tmp_path / "r"), "--loop", str(broken)]) == 4
    assert "broken.py: failed to import: SyntaxError" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"training": {"time_step": 3}}))
    assert main(["--config", str(bad), "--data", str(data_dir), "--out", str(tmp_path / "r")]) == 2
    assert "training.time_step = 3: must be one of 1, 4, 16, 32, 64" in capsys.readouterr().err


def test_error_inside_the_loop_exits_1_and_names_the_loop_file(tiny_dataset, tmp_path, capsys):
    _, data_dir = tiny_dataset
    config = _write_cfg(_cfg(), tmp_path / "config.yaml")
    loop = _loop_copy(tmp_path, "buggy.py", "    loss.backward()\n", "    loss.backward()\n    raise KeyError('oops')\n")
    code = main(["--config", str(config), "--data", str(data_dir), "--out", str(tmp_path / "run"), "--loop", str(loop)])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and "KeyError" in last and "buggy.py" in last


# ----------------------------------------------------------------------------- CUDA graphs
def test_cuda_graphs_only_for_the_packaged_loop_unless_asked():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    packaged = file_sha256(REPO / "neuralgraph" / "train_loop.py")
    assert wants_cuda_graph("auto", cuda, packaged, None)
    assert not wants_cuda_graph("auto", cuda, "edited-loop-sha", None)  # an edited loop may not be capture-safe
    assert wants_cuda_graph("on", cuda, "edited-loop-sha", None)
    assert not wants_cuda_graph("on", cpu, packaged, None)
    assert not wants_cuda_graph("off", cuda, packaged, None)
    assert not wants_cuda_graph("on", cuda, packaged, object())  # a scheduler steps in Python


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_replay_trains_like_eager_steps(tiny_dataset, tmp_path):
    _, data_dir = tiny_dataset
    records, Ws = {}, {}
    for setting in ("off", "on"):
        cfg = _cfg(**{"training.cuda_graph": setting, "training.noise_recurrent_level": 0.0, "training.time_step": 4})
        records[setting] = Trainer(cfg, data_dir, tmp_path / setting, max_steps=40).run()
        Ws[setting] = load_trained_model(tmp_path / setting / "model.pt")[0].dense_W().detach()
    assert not records["off"]["cuda_graph"] and records["on"]["cuda_graph"]
    np.testing.assert_allclose(records["on"]["loss_history"], records["off"]["loss_history"], rtol=1e-3)
    torch.testing.assert_close(Ws["on"], Ws["off"], rtol=1e-3, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_loop_that_is_not_capture_safe_falls_back_to_eager(tiny_dataset, tmp_path):
    cfg, data_dir = tiny_dataset
    loop = _loop_copy(tmp_path, "syncing.py", "    loss.backward()\n", "    loss.backward()\n    assert loss.item() == loss.item()\n")
    cfg = _cfg(**{"training.cuda_graph": "on"})
    record = Trainer(cfg, data_dir, tmp_path / "run", loop_path=loop, max_steps=10).run()
    assert record["status"] == "ok" and record["iterations"] == 10 and not record["cuda_graph"]


def test_out_of_memory_exits_3_with_advice(tiny_dataset, tmp_path, capsys):
    _, data_dir = tiny_dataset
    config = _write_cfg(_cfg(), tmp_path / "config.yaml")
    loop = _loop_copy(tmp_path, "oom.py", "    loss.backward()\n",
                      "    loss.backward()\n    if ctx.step == 5:\n        raise MemoryError('simulated')\n")
    code = main(["--config", str(config), "--data", str(data_dir), "--out", str(tmp_path / "run"), "--loop", str(loop)])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 3 and "out of memory" in last and "reduce time_step or batch_size" in last
