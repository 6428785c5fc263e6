"""Figures of every stage (matplotlib, Agg backend: no display needed on cluster nodes).

Shared by simulate (dataset pictures shown to the agent) and analyze (per-iteration plots).
Every figure is saved through :func:`save_figure`, which writes atomically.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from neuralgraph.io import atomic_path  # noqa: E402

TYPE_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray")


def type_color(t: int) -> str:
    """Colour of neuron type ``t`` (cycled), the same in every figure."""
    return TYPE_COLORS[int(t) % len(TYPE_COLORS)]


def save_figure(fig: "plt.Figure", path: str | Path, dpi: int = 110) -> Path:
    """Save ``fig`` as PNG atomically and close it."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)


# --------------------------------------------------------------------------- dataset figures (simulate)


def pick_neurons_per_type(types, per_type: int = 3, seed: int = 0):
    """A few neurons of each type (seeded, sorted): the traces shown in activity.png."""
    import numpy as np

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
    import numpy as np

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
    import numpy as np

    from matplotlib.lines import Line2D

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
    import numpy as np

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
    import numpy as np

    borders = np.flatnonzero(np.diff(types)) + 0.5
    if borders.size > len(np.unique(types)):  # shuffled types: lines would only add noise
        return
    for b in borders:
        ax.axhline(b, color="k", lw=0.4, alpha=0.5)
        ax.axvline(b, color="k", lw=0.4, alpha=0.5)
