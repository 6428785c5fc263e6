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
