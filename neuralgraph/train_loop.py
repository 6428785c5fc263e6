"""The editable training loop: how ONE optimizer step is made (the seed's ``data_train_signal``).

The exploring agent may rewrite the functions named in ``EDITABLE_FUNCTIONS`` (one at a time,
keeping their signatures). Everything else - reading the data, epochs, checkpoints, resume,
divergence detection, logging, the time budget - is the engine's job
(:mod:`neuralgraph.training`), which loads THIS FILE from a path, so every iteration of an
exploration runs its own copy (``python -m neuralgraph train ... --loop iter_007/train_loop.py``).

Contract
--------
Imports: only ``torch``, ``math``, ``numpy`` and ``neuralgraph`` modules.

Objects the engine passes in:

- ``model``: :class:`neuralgraph.model.SignalPropagation`. ``model(u)`` maps u (B, N) to
  du/dt (B, N). Learnable: ``model.connectivity_parameters()`` (W, or W_L and W_R),
  ``model.mlp_parameters()`` (lin_edge, lin_phi), ``model.embedding_parameters()`` (a; frozen,
  requires_grad False, with one neuron type). ``model.dense_W()`` is the masked (N, N) W;
  ``model.lin_edge`` / ``model.lin_phi`` the MLPs, ``model.edge_features(u)`` their input.
- ``cfg``: a read-only view of the validated :class:`neuralgraph.config.ExperimentConfig`
  (:func:`neuralgraph.step_views.config_view`: its sections and fields only, lists as tuples;
  read ``cfg.training``).
- ``data``: training frames only (the held-out test segment is never passed):
  ``data.u``, ``data.du`` float32 tensors (n_train_frames, N) on the training device, with
  ``u[k+1] = u[k] + delta_t * du[k]``; ``data.delta_t``; ``data.n_frames`` (= n_train_frames);
  ``data.u_scale`` (max |u| over the training frames); ``data.x_norm`` (the reference's scale,
  round(1.5 std(u)) over the training frames).
- ``ctx``: the step context (frozen): ``ctx.cfg`` (the view), ``ctx.epoch`` (0-based), ``ctx.step`` (global
  optimizer step, 0-based), ``ctx.step_in_epoch``, ``ctx.iterations_per_epoch``,
  ``ctx.n_epochs``, ``ctx.mode`` ("single", "recurrent" or "ode"), ``ctx.horizon`` (T of this
  epoch), ``ctx.scheduler`` (what :func:`build_scheduler` returned, or None), ``ctx.device``.

An edited function may use only what the checker of agent-written code allows
(``agent/codeedit.py``, ``agent/step_kinds.py``): of the model the members named above plus
``parameters``, ``named_parameters``, ``forward``, ``train``, ``eval``, ``zero_grad``; of the
optimizer ``step``, ``zero_grad``, ``param_groups``; of ``ctx``, ``data`` and ``cfg`` their fields
(read-only); of tensors their numeric methods and properties.

Functions (engine call order): :func:`build_optimizer` and :func:`build_scheduler` once per
run (their states are checkpointed and restored on resume); per epoch :func:`training_mode`;
per step :func:`sample_batch_starts` then :func:`train_step`, which returns the detached
scalar loss. :func:`train_step` uses :func:`prediction_loss` (which uses :func:`euler_unroll`
or :func:`ode_unroll`) and :func:`regularisation`. Randomness must come from torch's global
RNG or the given generator: the engine saves and restores both, so a resumed run continues
the same random stream. A loss that is NaN/inf or explodes ends the run as "diverged".

On a GPU the engine may record :func:`train_step` once as a CUDA graph and replay it
(``training.cuda_graph``: "auto" does so only for this packaged, unmodified file). A replayed
step repeats the recorded GPU work only: Python-side logic that depends on ``ctx.step`` or on
tensor values (``.item()``, ``if loss > ...``), CPU tensors and schedulers do not re-run. An
edited loop runs eagerly unless the config says ``cuda_graph: on``.
"""
from __future__ import annotations

import torch

EDITABLE_FUNCTIONS = (
    "training_mode",
    "build_optimizer",
    "build_scheduler",
    "sample_batch_starts",
    "euler_unroll",
    "ode_unroll",
    "prediction_loss",
    "regularisation",
    "train_step",
)


def training_mode(cfg, epoch):
    """(mode, horizon) of an epoch: single-step warm-up before recurrent_training_start_epoch.

    Returns ("single", 1), ("recurrent", time_step) or ("ode", time_step).
    """
    tr = cfg.training
    if epoch < tr.recurrent_training_start_epoch:
        return "single", 1
    if tr.neural_ODE_training:
        return "ode", tr.time_step
    if tr.recurrent_training:
        return "recurrent", tr.time_step
    return "single", 1


def build_optimizer(model, cfg):
    """Adam with three learning rates: W, the two MLPs, the embeddings (no weight decay, no scheduler)."""
    tr = cfg.training
    groups = [
        {"params": model.connectivity_parameters(), "lr": tr.learning_rate_W_start, "name": "W"},
        {"params": model.mlp_parameters(), "lr": tr.learning_rate_start, "name": "mlp"},
        {"params": model.embedding_parameters(), "lr": tr.learning_rate_embedding_start, "name": "embedding"},
    ]
    groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]
    # fused: one kernel for all parameters (~10x faster than the default on CPU for a 1000 x 1000 W)
    return torch.optim.Adam([g for g in groups if g["params"]], fused=True)


def build_scheduler(optimizer, cfg, total_steps):
    """Learning-rate scheduler stepped by :func:`train_step`; None = constant rates (the seed)."""
    return None


def sample_batch_starts(n_train_frames, horizon, batch_size, generator):
    """batch_size start frames k, uniform in [0, n_train_frames - horizon - 5], aligned down to
    a multiple of horizon (as in the seed). Returns a CPU int64 tensor (batch_size,)."""
    high = n_train_frames - horizon - 5
    k = torch.randint(0, high + 1, (batch_size,), generator=generator)
    return k - k % horizon


def euler_unroll(model, u0, n_steps, delta_t, noise_level):
    """u after n_steps explicit Euler steps of the learned field from u0 (B, N), each step
    optionally perturbed by noise_level * N(0, 1); gradients flow through every step."""
    u = u0
    for _ in range(n_steps):
        u = u + delta_t * model(u)
        if noise_level > 0:
            u = u + noise_level * torch.randn_like(u)
    return u


class _ODEField(torch.nn.Module):
    """The learned field as torchdiffeq wants it: f(t, u), state clamped to +-clamp."""

    def __init__(self, model, clamp):
        super().__init__()
        self.model = model
        self.clamp = clamp

    def forward(self, t, u):
        return self.model(u.clamp(-self.clamp, self.clamp))


def ode_unroll(model, u0, n_steps, delta_t, tr):
    """u at time n_steps * delta_t from u0 by torchdiffeq (tr = cfg.training: ode_method,
    ode_rtol, ode_atol, ode_adjoint, ode_state_clamp)."""
    from torchdiffeq import odeint, odeint_adjoint  # lazy: optional dependency, needed only in neural-ODE mode

    field = _ODEField(model, tr.ode_state_clamp)
    t = torch.tensor([0.0, n_steps * delta_t], device=u0.device, dtype=u0.dtype)
    options = {"step_size": delta_t} if tr.ode_method in ("rk4", "euler", "midpoint") else None
    solve = odeint_adjoint if tr.ode_adjoint else odeint
    kwargs = {"adjoint_params": tuple(p for p in model.parameters() if p.requires_grad)} if tr.ode_adjoint else {}
    path = solve(field, u0, t, method=tr.ode_method, rtol=tr.ode_rtol, atol=tr.ode_atol, options=options, **kwargs)
    return path[-1]


def prediction_loss(model, data, starts, ctx):
    """L2 norm (not squared, not averaged) of the prediction error of the batch.

    single: || f(u_k) - du_k ||; recurrent / ode: || (u~_{k+T} - u_{k+T}) / (delta_t T) ||.
    """
    u0 = data.u[starts]
    if ctx.mode == "single":
        return (model(u0) - data.du[starts]).norm(2)
    T, dt = ctx.horizon, data.delta_t
    if ctx.mode == "ode":
        u_end = ode_unroll(model, u0, T, dt, ctx.cfg.training)
    else:
        u_end = euler_unroll(model, u0, T, dt, ctx.cfg.training.noise_recurrent_level)
    return ((u_end - data.u[starts + T]) / (dt * T)).norm(2)


def _edge_monotonicity_penalty(model, u, delta):
    """|| relu(lin_edge(u) - lin_edge(u + delta)) ||: penalises a decreasing message function."""
    low = model.lin_edge(model.edge_features(u))
    high = model.lin_edge(model.edge_features(u + delta))
    return torch.relu(low - high).norm(2)


def _edge_monotonicity_penalty_per_frame(model, u, delta):
    """The reference's form: per frame, || relu(lin_edge(u) - lin_edge(u + delta)) || over the N
    neurons (states detached), summed over the frames of the batch."""
    u = u.detach()
    low = model.lin_edge(model.edge_features(u))
    high = model.lin_edge(model.edge_features(u + delta))
    return torch.relu(low - high).reshape(u.shape[0], -1).norm(2, dim=1).sum()


def penalty_count(tr, batch_size, penalty):
    """How many times ``penalty`` ("W_L1" or "lin_phi_zero") counts in one step: once, or once per
    frame of the batch with ``penalties_per_frame`` (the reference's older trainer adds both inside
    its loop over the batch's frames), except W's L1 with ``W_L1_once_per_step`` (its landscape
    trainer's regulariser applies L1 once per iteration, lin_phi(0) per frame). Another name is an
    error, not a silent per-frame count."""
    if penalty not in ("W_L1", "lin_phi_zero"):
        raise ValueError(f"penalty_count: penalty {penalty!r}: allowed 'W_L1', 'lin_phi_zero'")
    if not tr.penalties_per_frame or (penalty == "W_L1" and tr.W_L1_once_per_step):
        return 1
    return batch_size


def regularisation(model, data, starts, ctx):
    """Weighted sum of the configured penalties (a zero tensor when all coefficients are 0).

    ``penalties_per_frame``: L1 and lin_phi(0) count batch_size times, as in the reference
    (L1 once with ``W_L1_once_per_step``: :func:`penalty_count`).
    Two-phase training: the L1 penalty on W starts at epoch ``l1_start_epoch`` (0-based; the
    epochs before it fit W without it, the reference's n_epochs_init with first_coeff_L1 = 0);
    with ``edge_diff_stop_epoch`` > 0 the edge-difference penalty acts only before that epoch.
    """
    tr = ctx.cfg.training
    total = torch.zeros((), device=data.u.device)
    if tr.coeff_W_L1 > 0 and ctx.epoch >= tr.l1_start_epoch:
        total = total + tr.coeff_W_L1 * penalty_count(tr, starts.shape[0], "W_L1") * model.dense_W().abs().sum()
    if tr.coeff_edge_diff > 0 and (tr.edge_diff_stop_epoch == 0 or ctx.epoch < tr.edge_diff_stop_epoch):
        if tr.edge_diff_form == "reference":
            penalty = _edge_monotonicity_penalty_per_frame(model, data.u[starts], data.x_norm / 150)
        else:
            penalty = _edge_monotonicity_penalty(model, data.u[starts], data.u_scale / 100)
        total = total + tr.coeff_edge_diff * penalty
    if tr.coeff_lin_phi_zero > 0:
        zero = torch.zeros(1, model.n_neurons, device=data.u.device)
        total = total + tr.coeff_lin_phi_zero * penalty_count(tr, starts.shape[0], "lin_phi_zero") * \
            model.node_update(zero).norm(2)
    mlp_weights = model.lin_edge.weight_matrices() + model.lin_phi.weight_matrices()
    if tr.coeff_MLP_L1 > 0:
        total = total + tr.coeff_MLP_L1 * sum(w.abs().sum() for w in mlp_weights)
    if tr.coeff_MLP_L2 > 0:
        total = total + tr.coeff_MLP_L2 * sum(w.pow(2).sum() for w in mlp_weights)
    return total


def train_step(model, optimizer, data, starts, ctx):
    """One optimizer step on the batch starting at frames ``starts``; returns the detached loss
    (prediction loss + regularisation)."""
    optimizer.zero_grad(set_to_none=True)
    loss = prediction_loss(model, data, starts, ctx) + regularisation(model, data, starts, ctx)
    loss.backward()
    optimizer.step()
    if ctx.scheduler is not None:
        ctx.scheduler.step()
    return loss.detach()

