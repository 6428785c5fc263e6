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


def _frame_axis(n_frames: int, delta_t: float) -> tuple["object", str]:
    """Time axis in simulated seconds (frames x delta_t), the unit the agent reasons in."""
    import numpy as np

    return np.arange(n_frames) * delta_t, "time (frames x delta_t)"


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


def plot_activity(u, types, delta_t: float, path: str | Path, per_type: int = 3, max_points: int = 4000) -> Path:
    """activity.png: traces of a few neurons per type over the whole recording, coloured by type.

    Traces are stacked with a vertical offset so individual neurons stay readable; the
    recording is decimated to ``max_points`` time points (reads only those rows of a memmap).
    """
    import numpy as np

    neurons = pick_neurons_per_type(types, per_type)
    stride = max(1, -(-u.shape[0] // max_points))
    frames = np.arange(0, u.shape[0], stride)
    traces = np.asarray(u[::stride][:, neurons], dtype=np.float64)
    time_axis, xlabel = _frame_axis(u.shape[0], delta_t)
    spread = float(np.nanmax(np.abs(traces))) if traces.size else 1.0
    offset = 2.2 * (spread or 1.0)
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(neurons) + 1.8))
    types = np.asarray(types)
    for row, neuron in enumerate(neurons):
        ax.plot(time_axis[frames], traces[:, row] - row * offset, color=type_color(types[neuron]), lw=0.7)
    ax.set_yticks([-row * offset for row in range(len(neurons))])
    ax.set_yticklabels([f"{n} (type {types[n]})" for n in neurons], fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_xlim(time_axis[0], time_axis[frames[-1]])
    ax.set_title(f"activity u: {len(neurons)} of {u.shape[1]} neurons, {u.shape[0]} frames "
                 f"(offset {offset:.3g} between traces)", fontsize=10)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return save_figure(fig, path)


def plot_connectivity(W, types, path: str | Path, max_side: int = 500) -> Path:
    """connectivity.png: the true W as a heatmap (row i = postsynaptic) and its weight histogram.

    The colour scale is symmetric and clipped at the 99.5th percentile of |W| so that heavy-
    tailed (Lorentz) weights do not wash out the map; large W is shown block-subsampled.
    """
    import numpy as np

    W = np.asarray(W, dtype=np.float64)
    n = W.shape[0]
    step = max(1, -(-n // max_side))
    shown = W[::step, ::step]
    offdiag = W[~np.eye(n, dtype=bool)]
    vmax = float(np.percentile(np.abs(offdiag), 99.5)) or 1.0
    fig, (ax_map, ax_hist) = plt.subplots(1, 2, figsize=(12, 5.2), gridspec_kw={"width_ratios": [1.1, 1]})
    image = ax_map.imshow(shown, cmap="bwr", vmin=-vmax, vmax=vmax, interpolation="nearest",
                          extent=(-0.5, n - 0.5, n - 0.5, -0.5))
    fig.colorbar(image, ax=ax_map, fraction=0.046, pad=0.04, label="W[i, j] (clipped)")
    _mark_type_blocks(ax_map, np.asarray(types))
    ax_map.set_xlabel("presynaptic j")
    ax_map.set_ylabel("postsynaptic i")
    ax_map.set_title(f"true W ({n} x {n}{', every %dth' % step if step > 1 else ''})", fontsize=10)
    nonzero = offdiag[offdiag != 0]
    ax_hist.hist(nonzero, bins=200, range=(-vmax * 2, vmax * 2), color="0.3", log=True)
    ax_hist.set_xlabel("weight (off-diagonal, non-zero)")
    ax_hist.set_ylabel("count (log)")
    ax_hist.set_title(
        f"std {offdiag.std():.3g}, max |W| {np.abs(offdiag).max():.3g}, "
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
