"""Figures of every stage (matplotlib, Agg backend: no display needed on cluster nodes).

Shared by simulate (dataset pictures shown to the agent) and analyze (per-iteration plots).
Every figure is saved through :func:`save_figure`, which writes atomically: the one owner of
that fact (the workflow-side summary figures use it too).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from neuralgraph.io import atomic_path  # noqa: E402
from neuralgraph.metrics import linear_fit, offdiagonal  # noqa: E402

TYPE_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray")


def type_color(t: int) -> str:
    """Colour of neuron type ``t`` (cycled), the same in every figure."""
    return TYPE_COLORS[int(t) % len(TYPE_COLORS)]


def save_figure(fig: "plt.Figure", path: str | Path, dpi: int = 110) -> Path:
    """Save ``fig`` as PNG atomically (temporary file renamed into place) and close it."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)


# --------------------------------------------------------------------------- dataset figures (simulate)


def pick_neurons_per_type(types, per_type: int = 3, seed: int = 0):
    """A few neurons of each type (seeded, sorted): the traces shown in activity.png."""
    rng = np.random.default_rng(seed)
    types = np.asarray(types)
    chosen = []
    for t in np.unique(types):
        members = np.flatnonzero(types == t)
        chosen.extend(sorted(rng.choice(members, size=min(per_type, members.size), replace=False)))
    return np.asarray(chosen, dtype=np.int64)


def plot_activity(u, types, delta_t: float, path: str | Path, type_params=None, per_type: int = 3,
                  max_points: int = 4000, zoom_frames: int = 1000) -> Path:
    """activity.png: traces of a few neurons per type, coloured by type, stacked with an offset.

    Left: the whole recording, decimated to ``max_points`` time points (only those rows of a
    memmap are read). Right: the first ``zoom_frames`` frames at full resolution, so the
    agent sees the time scale of the dynamics that the recurrent horizon (time_step) spans.
    """
    types = np.asarray(types)
    neurons = pick_neurons_per_type(types, per_type)
    n_frames = u.shape[0]
    stride = max(1, -(-n_frames // max_points))
    full = np.asarray(u[::stride][:, neurons], dtype=np.float64)
    zoom_end = min(zoom_frames, n_frames)
    zoom = np.asarray(u[:zoom_end][:, neurons], dtype=np.float64)
    offset = 2.2 * (float(np.nanmax(np.abs(full))) if full.size else 0.0 or 1.0)
    fig, (ax_full, ax_zoom) = plt.subplots(
        1, 2, figsize=(13, 0.42 * len(neurons) + 2.0), sharey=True, gridspec_kw={"width_ratios": [2.6, 1]})
    for ax, traces, first, step in ((ax_full, full, 0, stride), (ax_zoom, zoom, 0, 1)):
        time_axis = (first + np.arange(traces.shape[0]) * step) * delta_t
        for row, neuron in enumerate(neurons):
            ax.plot(time_axis, traces[:, row] - row * offset, color=type_color(types[neuron]), lw=0.7)
        ax.set_xlim(time_axis[0], time_axis[-1])
        ax.set_xlabel("time (frame x delta_t)")
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    ax_full.set_yticks([-row * offset for row in range(len(neurons))])
    ax_full.set_yticklabels([f"#{n} type {types[n]}" for n in neurons], fontsize=7)
    ax_full.set_title(f"activity u: {len(neurons)} of {u.shape[1]} neurons, all {n_frames} frames "
                      f"(every {stride}th shown; traces offset by {offset:.3g})", fontsize=10)
    ax_zoom.set_title(f"first {zoom_end} frames (delta_t = {delta_t:g})", fontsize=10)
    _legend_types_with_params(ax_zoom, types, type_params)
    fig.tight_layout()
    return save_figure(fig, path)


def _legend_types_with_params(ax, types, type_params) -> None:
    """Legend 'type t: g, s, c' (or just 'type t') outside the right edge of ``ax``."""
    handles = []
    for t in np.unique(types):
        label = f"type {int(t)}"
        if type_params is not None:
            g, s, c = (float(v) for v in np.asarray(type_params)[int(t)])
            label += f": g={g:g} s={s:g} c={c:g}"
        handles.append(Line2D([], [], color=type_color(t), lw=2, label=label))
    ax.legend(handles=handles, fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def plot_connectivity(W, types, path: str | Path, max_side: int = 1000, zoom: int = 40) -> Path:
    """connectivity.png: the true W as a heatmap (row i = postsynaptic) and its weight histogram.

    The colour scale is symmetric and clipped at the 99.5th percentile of |W| so that heavy-
    tailed (Lorentz) weights do not wash out the map; W larger than ``max_side`` is shown
    subsampled (every k-th row and column). A third panel zooms on W[:zoom, :zoom], where
    single weights are visible (the full map of 1e6 entries only shows their density).
    """
    W = np.asarray(W, dtype=np.float64)
    n = W.shape[0]
    step = max(1, -(-n // max_side))
    offdiag = W[~np.eye(n, dtype=bool)]
    abs_max = float(np.abs(offdiag).max()) if offdiag.size else 0.0
    vmax = float(np.percentile(np.abs(offdiag), 99.5)) if offdiag.size else 0.0
    vmax = vmax or abs_max or 1.0
    fig, (ax_map, ax_zoom, ax_hist) = plt.subplots(1, 3, figsize=(17, 5.2), gridspec_kw={"width_ratios": [1.15, 1, 1.1]})
    image = ax_map.imshow(W[::step, ::step], cmap="bwr", vmin=-vmax, vmax=vmax, interpolation="nearest",
                          extent=(-0.5, n - 0.5, n - 0.5, -0.5))
    fig.colorbar(image, ax=ax_map, fraction=0.046, pad=0.04, label=f"W[i, j] (colour clipped at +-{vmax:.3g})")
    _mark_type_blocks(ax_map, np.asarray(types))
    ax_map.set_xlabel("presynaptic j")
    ax_map.set_ylabel("postsynaptic i")
    shown = f", every {step}th row/column" if step > 1 else ""
    ax_map.set_title(f"true W ({n} x {n}{shown}; lines: type blocks)", fontsize=10)
    side = min(zoom, n)
    ax_zoom.imshow(W[:side, :side], cmap="bwr", vmin=-vmax, vmax=vmax, interpolation="nearest")
    ax_zoom.set_title(f"zoom: W[0:{side}, 0:{side}]", fontsize=10)
    ax_zoom.set_xlabel("presynaptic j")
    nonzero = offdiag[offdiag != 0]
    limit = 1.05 * (abs_max or 1.0)
    ax_hist.hist(nonzero, bins=201, range=(-limit, limit), color="0.3", log=True)
    ax_hist.set_xlim(-limit, limit)
    ax_hist.set_xlabel("weight W[i, j] (off-diagonal, non-zero)")
    ax_hist.set_ylabel("count (log scale)")
    ax_hist.set_title(
        f"mean {offdiag.mean():.2g}, std {offdiag.std():.3g}, max |W| {abs_max:.3g}, "
        f"{nonzero.size / max(offdiag.size, 1):.1%} non-zero", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def _mark_type_blocks(ax, types) -> None:
    """Thin lines at the borders of contiguous type blocks (none when types are shuffled)."""
    borders = np.flatnonzero(np.diff(types)) + 0.5
    if borders.size > len(np.unique(types)):  # shuffled types: lines would only add noise
        return
    for b in borders:
        ax.axhline(b, color="k", lw=0.4, alpha=0.5)
        ax.axvline(b, color="k", lw=0.4, alpha=0.5)


# --------------------------------------------------------------------------- analysis figures (analyze)


def _subsample_indices(n: int, max_points: int, seed: int = 0):
    """At most ``max_points`` of ``n`` indices (seeded): a 1e6-point scatter takes seconds and shows nothing more."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def plot_connectivity_scatter(true_W, learned_W, r2: float, r2_raw: float, path: str | Path,
                              max_points: int = 30000) -> Path:
    """connectivity.png: learned (plateau-corrected) against true off-diagonal weights, with the fit line and R^2."""
    x, y = offdiagonal(np.asarray(true_W, dtype=np.float64)), offdiagonal(np.asarray(learned_W, dtype=np.float64))
    keep = _subsample_indices(x.size, max_points)
    fig, ax = plt.subplots(figsize=(5.8, 5.4))
    ax.scatter(x[keep], y[keep], s=2, alpha=0.35, color="k", rasterized=True, linewidths=0)
    alpha, beta = linear_fit(x, y)
    if np.isfinite(alpha):
        xs = np.array([x.min(), x.max()])
        ax.plot(xs, alpha * xs + beta, color="tab:red", lw=1.2, label=f"fit: y = {alpha:.3g} x {beta:+.2g}")
        ax.legend(loc="upper left", fontsize=9, frameon=False)
    ax.set_xlabel("true W[i, j]")
    ax.set_ylabel("learned W[i, j] x message plateau of j")
    shown = f", {keep.size} of {x.size} shown" if keep.size < x.size else ""
    ax.set_title(f"connectivity R$^2$ = {r2:.4f} (raw {r2_raw:.4f}){shown}", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_rollout_traces(true_traj, pred_traj, types, neurons, delta_t: float, start_frame: int,
                        test_r2: float, test_pearson: float, path: str | Path) -> Path:
    """rollout.png: true (grey) and predicted (type colour, dashed) traces of a few neurons, stacked."""
    true_traj, pred_traj = np.asarray(true_traj), np.asarray(pred_traj)
    time_axis = (start_frame + np.arange(true_traj.shape[0])) * delta_t
    centers = true_traj[:, neurons].mean(axis=0)  # each row centred on its own true mean
    span = float(np.ptp(true_traj[:, neurons], axis=0).max()) or 1.0
    offset = 1.4 * span
    fig, ax = plt.subplots(figsize=(11, 0.55 * len(neurons) + 2.0))
    for row, i in enumerate(neurons):
        base = -row * offset - centers[row]
        ax.plot(time_axis, true_traj[:, i] + base, color="0.55", lw=2.2,
                label="true simulator" if row == 0 else None)
        lo, hi = centers[row] - 0.7 * offset, centers[row] + 0.7 * offset
        shown = np.clip(pred_traj[:, i], lo, hi)  # a runaway trace must not squash the others
        ax.plot(time_axis, shown + base, color=type_color(types[i]), lw=1.1, ls="--",
                label="learned model" if row == 0 else None)
        ax.text(time_axis[-1], -row * offset, f" {i} (type {int(types[i])})", fontsize=7, va="center")
    ax.set_yticks([])
    ax.set_ylabel(f"u per neuron (rows {offset:.3g} apart)")
    ax.set_xlabel("time (frames x delta_t)")
    ax.set_title(f"rollout from frame {start_frame} (held-out segment), no noise: "
                 f"test_R2 = {test_r2:.3f}, test_pearson = {test_pearson:.3f}", fontsize=10)
    ax.legend(loc="upper right", fontsize=8, ncol=2, frameon=False)
    fig.tight_layout()
    return save_figure(fig, path)


def _legend_by_type(ax, types) -> None:
    handles = [Line2D([], [], color=type_color(t), marker="o", ls="", label=f"type {int(t)}") for t in np.unique(types)]
    ax.legend(handles=handles, fontsize=8, frameon=False)


def plot_embeddings(embeddings, types, accuracy: float, path: str | Path) -> Path:
    """embeddings.png: learned embeddings a_i coloured by true type (dims 0-1; 1-D shown against the index)."""
    emb = np.asarray(embeddings, dtype=np.float64)
    types = np.asarray(types)
    fig, ax = plt.subplots(figsize=(5.6, 5.0))
    colors = [type_color(t) for t in types]
    if emb.shape[1] >= 2:
        ax.scatter(emb[:, 0], emb[:, 1], c=colors, s=10, alpha=0.7, linewidths=0)
        ax.set_xlabel("a[:, 0]")
        ax.set_ylabel("a[:, 1]")
    else:
        ax.scatter(np.arange(len(emb)), emb[:, 0], c=colors, s=10, alpha=0.7, linewidths=0)
        ax.set_xlabel("neuron")
        ax.set_ylabel("a[:, 0]")
    extra = f" (dims 0-1 of {emb.shape[1]})" if emb.shape[1] > 2 else ""
    ax.set_title(f"embeddings{extra}: cluster accuracy = {accuracy:.3f}", fontsize=10)
    _legend_by_type(ax, types)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


#: Half-width of the zoomed panel of the function figures: where tanh bends (|u| > 3 is flat).
FUNCTION_ZOOM_U = 5.0


def _full_and_zoom(u_grid, draw, title: str, ylabel: str, zoom: float = FUNCTION_ZOOM_U):
    """Figure with the whole u range (left) and |u| <= zoom (right), ``draw(ax, keep)`` filling each.

    Over the whole activity range (|u| up to ~50) the bend of tanh is a step; the zoom shows it.
    ``keep`` is the boolean mask of grid points to draw in that panel.
    """
    u_grid = np.asarray(u_grid)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for ax, keep, label in ((axes[0], np.ones(u_grid.shape, bool), "whole activity range"),
                            (axes[1], np.abs(u_grid) <= zoom, f"|u| <= {zoom:g}")):
        draw(ax, keep)
        ax.set_xlabel("u")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title} ({label})", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def plot_message_function(u_grid, learned, curve_types, scale: float, path: str | Path) -> Path:
    """lin_edge.png: learned message function(s) rescaled onto tanh(u), against the true tanh(u).

    The model only identifies W x lin_edge, so the learned curve is divided by its
    least-squares scale onto tanh (given in the legend) to compare shapes.
    """
    u_grid, learned = np.asarray(u_grid), np.atleast_2d(np.asarray(learned, dtype=np.float64))
    colour_note = "" if list(curve_types) == [None] else ", colour = type"

    def draw(ax, keep):
        for curve, t in zip(learned, curve_types):
            ax.plot(u_grid[keep], curve[keep] / scale, color=type_color(t) if t is not None else "tab:blue",
                    lw=1, alpha=0.6)
        ax.plot(u_grid[keep], np.tanh(u_grid[keep]), color="k", lw=2, ls="--", label="true tanh(u)")
        ax.plot([], [], color="tab:blue", lw=1, label=f"learned lin_edge / {scale:.3g}{colour_note}")

    return save_figure(_full_and_zoom(u_grid, draw, "message function lin_edge", "message"), path)


def plot_update_function(u_grid, learned, curve_types, type_params, path: str | Path) -> Path:
    """lin_phi.png: learned lin_phi(u, a_i) for sample neurons (thin) and the true -c u + s tanh(u) per type (dashed)."""
    u_grid, learned = np.asarray(u_grid), np.atleast_2d(np.asarray(learned, dtype=np.float64))
    params = np.asarray(type_params, dtype=np.float64)

    def draw(ax, keep):
        u = u_grid[keep]
        for curve, t in zip(learned, curve_types):
            ax.plot(u, curve[keep], color=type_color(t), lw=0.8, alpha=0.45)
        for t, (_g, s, c) in enumerate(params):
            ax.plot(u, -c * u + s * np.tanh(u), color=type_color(t), lw=2.2, ls="--",
                    label=f"type {t}: -{c:g} u + {s:g} tanh(u)")

    fig = _full_and_zoom(u_grid, draw, "lin_phi: learned (thin) vs true (dashed)", "du/dt contribution")
    return save_figure(fig, path)


def plot_loss_curve(loss_history, path: str | Path, status: str = "ok") -> Path:
    """loss.png: training loss per recorded step (log scale when positive), with the training status."""
    loss = np.asarray(loss_history, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(np.arange(1, loss.size + 1), loss, color="k", lw=1)
    finite = loss[np.isfinite(loss)]
    if finite.size and np.all(finite > 0):
        ax.set_yscale("log")
    ax.set_xlabel("recorded step")
    ax.set_ylabel("training loss")
    last = f"{finite[-1]:.4g}" if finite.size else "nan"
    ax.set_title(f"training loss (status {status}, last {last})", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return save_figure(fig, path)
