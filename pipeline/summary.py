"""Summary of an exploration: one table row per iteration, the best node per time_step, and pictures.

WHY: the question the experiment answers is "how well is the wiring recovered at each
recurrence depth, and what got us there". After a run the user wants, without opening
dozens of folders:

* ``summary.tsv``: one row per iteration with the node (id, parent, block, strategy, mutation),
  every metric of ``metrics.json`` and every training / graph_model value of that iteration's
  ``config.yaml`` (dotted column names such as ``training.learning_rate_W_start``);
* ``best_nodes.tsv``: the best node (highest connectivity_R2) per time_step;
* ``exploration_tree.png``: the UCB tree of each block, nodes coloured by the "nines" of
  connectivity_R2 (:func:`r2_nines`), failed / diverged nodes marked, the best node of each
  block ringed, edges parent -> child labelled with the mutation that made the child;
* ``metrics_vs_time_step.png``: connectivity_R2, test_R2 and training time versus time_step;
* ``best_r2_vs_wall_time.png``: the best connectivity_R2 so far in each block against
  wall-clock hours (what K slots per round buy).

Reads only the files the stages write (``metrics.json``, ``node.json`` or ``proposal.json``,
``config.yaml``), so it works on a finished run, a partial run, or an unpacked archive::

    python -m pipeline summarize --results results/demo [--out-dir results/demo/summary]
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, Optional

import yaml

from agent import layout
from agent.tree import format_mutation
from neuralgraph.plots import save_figure
from neuralgraph.io import atomic_write_text, read_text_nofollow

# pandas and matplotlib are imported inside the functions that use them: the pipeline CLI and
# the explorer import this module for its names and colours and should not pay ~1 s for them.
os.environ.setdefault("MPLBACKEND", "Agg")

SUMMARY_NAME = "summary.tsv"
BEST_NAME = "best_nodes.tsv"
TREE_NAME = "exploration_tree.png"
METRICS_FIGURE_NAME = "metrics_vs_time_step.png"
PROGRESS_FIGURE_NAME = "best_r2_vs_wall_time.png"

NODE_COLUMNS = ("iteration", "block", "round", "slot", "role", "node", "parent", "time_step", "strategy", "mutation", "code_modified", "policy",
                "fallback_reason", "decide_events")
#: Characters of the decide_events cell (the whole lines are in decision.json and decide.log).
MAX_EVENTS_CHARS = 2_000
#: How the agent labels a decision its primary policy did not make (agent.policies.base
#: decide_with_fallback, agent.decide run_policy): "<name> (fallback after: <reason>)" or
#: "<name> (after: <reason>)". summary.tsv splits it into policy and fallback_reason.
FALLBACK_LABEL = re.compile(r"(?P<name>[^()]+?) \((?:fallback )?after: (?P<reason>.*)\)", re.DOTALL)
INTEGER_COLUMNS = ("iteration", "block", "round", "slot", "node", "parent", "time_step")
CONFIG_SECTIONS = ("training", "graph_model")
BEST_COLUMNS = (
    "time_step", "iteration", "node", "round", "slot", "role", "connectivity_R2", "test_R2", "test_pearson", "cluster_accuracy",
    "final_loss", "training_time_min", "outcome", "n_iterations_at_time_step", "mutation",
    "training.learning_rate_W_start", "training.learning_rate_start",
    "training.learning_rate_embedding_start", "training.coeff_W_L1", "training.data_augmentation_loop",
)


#: Colour scale of node quality, shared by exploration_tree.png and the HTML explorer
#: (pipeline.explorer): the "nines" of connectivity_R2, -log10(1 - R2), so that 0.9, 0.99,
#: 0.999 are 1, 2, 3 apart instead of crowding the top 1 % of a linear scale.
R2_NINES_MAX = 4.0  # R2 >= 0.9999 saturates the colour map
R2_COLORMAP = "viridis"
NO_VALUE_COLOR = "#cccccc"  # connectivity_R2 missing (diverged / crashed training)
#: Node states marked on the trees (see :func:`node_state`).
STATE_OK, STATE_FAILED, STATE_DIVERGED = "ok", "failed", "diverged"


class SummaryError(ValueError):
    """The results folder holds nothing to summarise, or a file in it is unreadable."""


def iteration_dirs(results: Path) -> list[Path]:
    """Iteration folders that hold a finished analysis (metrics.json), in iteration order.

    A folder holding only the next iteration's proposal (written by the last decide) is not
    an iteration that ran, so it is left out.
    """
    return [d for d in layout.iteration_dirs(results) if (d / layout.METRICS_FILE).is_file()]


def flatten_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Dotted 'section.field' -> value for the sections the exploration varies."""
    flat = {}
    for section in CONFIG_SECTIONS:
        for key, value in (cfg.get(section) or {}).items():
            flat[f"{section}.{key}"] = value if not isinstance(value, (list, dict)) else str(value)
    return flat


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return yaml.safe_load(read_text_nofollow(path)) or {}
    except yaml.YAMLError as exc:
        raise SummaryError(f"{path}: not valid YAML ({exc})") from None


def policy_and_fallback_reason(node: dict[str, Any]) -> tuple[str, str]:
    """(the policy's name, why the fallback decided or '') from a node / proposal record.

    A record's own ``fallback_reason`` field wins; otherwise the reason is read from the policy
    label (:data:`FALLBACK_LABEL`), the only place the agent records it in proposal.json today.
    """
    label = " ".join(str(node.get("policy") or "").split())
    reason = " ".join(str(node.get("fallback_reason") or "").split())
    match = FALLBACK_LABEL.fullmatch(label)
    if match:
        return match["name"].strip(), reason or match["reason"].strip()
    return label, reason


def decide_events_text(proposal: dict[str, Any]) -> str:
    """What happened in the decision that made a node (proposal.json ``decide_events``: HTTP retries,
    refused replies, spend-cap refusals, the fallback), one cell, lines joined by " | "."""
    events = proposal.get("decide_events")
    if not isinstance(events, list):
        return ""
    text = " | ".join(" ".join(str(e).split()) for e in events if e)
    return text if len(text) <= MAX_EVENTS_CHARS else text[:MAX_EVENTS_CHARS] + " ..."


def iteration_row(path: Path) -> dict[str, Any]:
    """The summary row of one iteration folder (node info, metrics, config values)."""
    folder = layout.IterationFolder(path)
    metrics = folder.metrics()
    proposal = folder.proposal(optional=True)
    node = folder.node_record(optional=True) or proposal
    config = _read_config(folder.config_path) or {"training": metrics.get("config") or {}}
    iteration = metrics.get("iteration") or node.get("iteration") or folder.iteration
    policy, fallback_reason = policy_and_fallback_reason(node)
    training = folder.training_record(optional=True)
    row: dict[str, Any] = {
        "iteration": int(iteration),
        "block": node.get("block"),
        "round": node.get("round") or int(iteration),  # records from before rounds: one node per round
        "slot": node.get("slot") or 1,
        "role": node.get("role", ""),
        "node": node.get("id", iteration),
        "parent": node.get("parent"),
        "time_step": node.get("time_step") or (config.get("training") or {}).get("time_step"),
        "strategy": node.get("strategy", ""),
        "mutation": format_mutation(node.get("mutation"), root=""),
        "code_modified": node.get("code_modified"),
        "policy": policy,
        "fallback_reason": fallback_reason,
        "decide_events": decide_events_text(proposal),
    }
    for key, value in metrics.items():
        if key not in row and key != "config" and not isinstance(value, (dict, list)):
            row[key] = value
    row.update(flatten_config(config))
    row["started_at"], row["finished_at"] = training.get("started_at"), training.get("finished_at")
    row["dir"] = folder.name
    return row


def build_summary(results: Path):
    """DataFrame with one row per finished iteration, sorted by iteration."""
    import pandas as pd

    folders = iteration_dirs(results)
    if not folders:
        raise SummaryError(f"{results}: no iteration folder with a metrics.json (nothing to summarise)")
    frame = pd.DataFrame([iteration_row(folder) for folder in folders])
    for column in INTEGER_COLUMNS:
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    first = [c for c in NODE_COLUMNS if c in frame.columns]
    rest = [c for c in frame.columns if c not in first]
    return frame[first + rest].sort_values("iteration").reset_index(drop=True)


def best_per_time_step(summary):
    """The row with the highest connectivity_R2 at each time_step (NaN counts as worst)."""
    import pandas as pd

    rows = []
    for time_step, group in summary.groupby("time_step", sort=True):
        score = pd.to_numeric(group.get("connectivity_R2"), errors="coerce").fillna(-math.inf)
        best = group.loc[score.idxmax()].to_dict()
        best["n_iterations_at_time_step"] = len(group)
        rows.append(best)
    frame = pd.DataFrame(rows)
    return frame[[c for c in BEST_COLUMNS if c in frame.columns]]


def write_tsv(frame, path: Path) -> Path:
    """Write a table atomically as TSV (empty cell for missing values)."""
    return atomic_write_text(path, frame.to_csv(sep="\t", index=False, na_rep=""))



def _as_float(value: Any) -> Optional[float]:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def r2_nines(r2: Any) -> Optional[float]:
    """-log10(1 - R2) clipped to [0, R2_NINES_MAX]; None when R2 is missing or not finite.

    WHY: the interesting differences between converged nodes are 0.99 vs 0.999, which a
    linear 0-1 colour scale cannot show; R2 <= 0 (no recovery at all) is 0 nines.
    """
    value = _as_float(r2)
    if value is None:
        return None
    if value <= 0.0:
        return 0.0
    if value >= 1.0:
        return R2_NINES_MAX
    return min(-math.log10(1.0 - value), R2_NINES_MAX)


def r2_color(r2: Any) -> str:
    """Hex colour of a node on the shared scale (grey when R2 has no value)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    nines = r2_nines(r2)
    if nines is None:
        return NO_VALUE_COLOR
    return to_hex(colormaps[R2_COLORMAP](nines / R2_NINES_MAX))


def r2_color_stops(n: int = 9) -> list[tuple[float, str]]:
    """(nines, hex colour) at ``n`` evenly spaced points: what a legend needs to draw the scale."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps[R2_COLORMAP]
    return [(R2_NINES_MAX * k / (n - 1), to_hex(cmap(k / (n - 1)))) for k in range(n)]


def node_state(status: Any, outcome: Any) -> str:
    """STATE_DIVERGED when the training did not finish ok, STATE_FAILED for a failed outcome, else STATE_OK."""
    if status not in (None, "", STATE_OK) and not (isinstance(status, float) and math.isnan(status)):
        return STATE_DIVERGED
    return STATE_FAILED if outcome == STATE_FAILED else STATE_OK


def best_node_per_block(summary) -> dict[Any, int]:
    """{block: node id} of the highest connectivity_R2 in each block (ties: lower node id).

    The same rule as the agent's carry-over at a block end (agent.tree.best_node); kept here
    because the science package must not import the agent. A block without any R2 has none.
    """
    best: dict[Any, int] = {}
    for block, group in summary.groupby("block", sort=True):
        scored = [(_as_float(r2), int(node)) for r2, node in zip(group.get("connectivity_R2", []), group["node"])]
        scored = [(r2, node) for r2, node in scored if r2 is not None]
        if scored:
            best[block] = min(scored, key=lambda item: (-item[0], item[1]))[1]
    return best


def tree_layout(summary) -> dict[int, tuple[float, float]]:
    """(x, y) of every node: one tidy tree per block, blocks side by side, y = -depth.

    Leaves take consecutive x slots in iteration order and a parent sits over the middle of
    its children, which keeps edges from crossing without graphviz.
    """
    positions: dict[int, tuple[float, float]] = {}
    next_x = 0.0
    for _, block in summary.groupby("block", sort=True, dropna=False):
        ids = [int(n) for n in block["node"]]
        parent_of = {int(n): (int(p) if _as_float(p) is not None and int(p) in ids else None)
                     for n, p in zip(block["node"], block["parent"])}
        children: dict[Optional[int], list[int]] = {}
        for node in ids:
            children.setdefault(parent_of[node], []).append(node)

        def place(node: int, depth: int) -> float:
            nonlocal next_x
            kids = children.get(node, [])
            if not kids:
                x = next_x
                next_x += 1.0
            else:
                xs = [place(kid, depth + 1) for kid in kids]
                x = (min(xs) + max(xs)) / 2.0
            positions[node] = (x, -float(depth))
            return x

        for root in children.get(None, []):
            place(root, 0)
        next_x += 0.8  # gap between blocks
    return positions


def edge_label(mutation: Any, width: int = 26) -> str:
    """Mutation text fitted to an edge: section prefix dropped, wrapped onto short lines."""
    import textwrap

    text = str(mutation or "").replace("training.", "").replace("graph_model.", "")
    return "\n".join(textwrap.wrap(text, width=width, max_lines=3, placeholder="..."))


def plot_exploration_tree(summary, path: Path) -> Path:
    """Exploration tree picture: nodes coloured by R2 nines, failures marked, best ringed, edges labelled."""
    import matplotlib.pyplot as plt
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    positions = tree_layout(summary)
    best = set(best_node_per_block(summary).values())
    width = max(6.0, 2.0 * (max(x for x, _ in positions.values()) + 1) + 1.5)
    depth = max(-y for _, y in positions.values()) + 1
    fig, ax = plt.subplots(figsize=(min(width, 60.0), 1.6 * depth + 1.5))
    for _, row in summary.iterrows():
        node, parent = int(row["node"]), _as_float(row["parent"])
        if parent is None or int(parent) not in positions or int(parent) == node:
            continue
        (x0, y0), (x1, y1) = positions[int(parent)], positions[node]
        ax.plot([x0, x1], [y0, y1], color="0.55", lw=1.0, zorder=1)
        label = edge_label(row.get("mutation"))
        if label:
            ax.text(x0 + 0.65 * (x1 - x0), y0 + 0.65 * (y1 - y0), label, fontsize=6, ha="center", va="center",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8}, zorder=2)
    rounds = "slot" in summary.columns and (summary["slot"].fillna(1).astype(int) > 1).any()
    for _, row in summary.iterrows():
        _draw_tree_node(ax, row, positions[int(row["node"])], int(row["node"]) in best, rounds)
    for block, group in summary.groupby("block", sort=True):
        xs = [positions[int(n)][0] for n in group["node"]]
        ts = group["time_step"].iloc[0]
        ax.text((min(xs) + max(xs)) / 2, 0.6, f"block {block} (time_step {ts})", ha="center", fontsize=9)
    norm = Normalize(vmin=0.0, vmax=R2_NINES_MAX)
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=colormaps[R2_COLORMAP]), ax=ax,
                       label="connectivity_R2 nines: -log10(1 - R2)", shrink=0.8, fraction=0.03, pad=0.02)
    ticks = range(int(R2_NINES_MAX) + 1)
    bar.set_ticks(list(ticks), labels=[f"{n}  (R2 {1 - 10.0 ** -n:.{max(n, 1)}f})" for n in ticks])
    xs_all = [x for x, _ in positions.values()]
    ax.set_xlim(min(xs_all) - 0.7, max(xs_all) + 0.9)  # room for the labels right of the nodes
    ax.set_ylim(-depth + 0.2, 1.0)
    ax.set_axis_off()
    ax.set_title("Exploration tree (parent -> child, labelled by mutation; ringed: best of block, "
                 "red x: failed / diverged)", fontsize=9)
    save_figure(fig, path)
    return path


def _draw_tree_node(ax, row, xy: tuple[float, float], is_best: bool, rounds: bool = False) -> None:
    """One node of the tree picture: colour from :func:`r2_color`, a red x on failures, a gold ring on the best."""
    x, y = xy
    r2 = _as_float(row.get("connectivity_R2"))
    state = node_state(row.get("status"), row.get("outcome"))
    ax.scatter([x], [y], s=420, color=r2_color(r2), edgecolors="black", zorder=3)
    if is_best:
        ax.scatter([x], [y], s=820, facecolors="none", edgecolors="gold", linewidths=2.5, zorder=3)
    if state != STATE_OK:
        ax.scatter([x], [y], s=160, marker="x", color="tab:red", linewidths=2.0, zorder=4)
    note = "" if state == STATE_OK else f"\n{state}"
    where = f" (r{int(row['round'])}.s{int(row['slot'])} {row.get('role') or ''})" if rounds else ""
    ax.text(x + 0.14, y, f"node {int(row['node'])}{where}\nR2={'nan' if r2 is None else f'{r2:.4f}'}{note}",
            fontsize=6, ha="left", va="center", zorder=4)


def plot_metrics_vs_time_step(summary, best, path: Path) -> Path:
    """connectivity_R2, test_R2 and training time of every iteration (dots) and the best (line)."""
    import matplotlib.pyplot as plt

    panels = (("connectivity_R2", "connectivity R2"), ("test_R2", "rollout test R2"),
              ("training_time_min", "training time (min)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(12, 3.6))
    for ax, (column, label) in zip(axes, panels):
        if column in summary.columns:
            values = summary[column].map(_as_float)
            ax.scatter(summary["time_step"], values, color="0.5", s=18, label="iterations")
            best_values = best[column].map(_as_float) if column in best.columns else None
            if best_values is not None:
                ax.plot(best["time_step"], best_values, "o-", color="tab:red", label="best connectivity_R2 node")
        ax.set_xscale("log", base=2)
        ticks = sorted(set(int(t) for t in summary["time_step"].dropna()))
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("time_step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Connectivity recovery, rollout quality and cost versus recurrence depth")
    save_figure(fig, path)
    return path


def plot_best_vs_wall_time(summary, path: Path) -> Path:
    """Best connectivity_R2 so far in each block against hours since the first training started.

    With K slots per round the K trainings of a round finish close together, so the curve
    climbs in steps of a round; it shows what parallel rounds buy in wall-clock time.
    """
    import matplotlib.pyplot as plt
    import pandas as pd

    start = pd.to_datetime(summary.get("started_at"), errors="coerce", utc=True)
    end = pd.to_datetime(summary.get("finished_at"), errors="coerce", utc=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    if end.notna().any():
        origin = start.min() if start.notna().any() else end.min()  # records without started_at: first end
        hours = (end - origin).dt.total_seconds() / 3600.0
        frame = summary.assign(hours=hours, r2=summary["connectivity_R2"].map(_as_float)).dropna(subset=["hours"])
        for block, group in frame.sort_values("hours").groupby("block", sort=True):
            best = group["r2"].astype(float).fillna(-math.inf).cummax().replace(-math.inf, math.nan)
            ts = group["time_step"].iloc[0]
            ax.step(group["hours"], best, where="post", label=f"block {block} (time_step {ts})")
            ax.scatter(group["hours"], group["r2"], s=14, color="0.5", zorder=3)
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no training times recorded", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("hours since the first training started (end of each training)")
    ax.set_ylabel("best connectivity R2 so far")
    ax.grid(alpha=0.3)
    ax.set_title("Best connectivity R2 so far against wall-clock time (dots: each node)", fontsize=9)
    save_figure(fig, path)
    return path


def summarize(results: Path, out_dir: Path) -> dict[str, Path]:
    """Write the summary tables and figures into ``out_dir``; return their paths by name."""
    summary = build_summary(results)
    best = best_per_time_step(summary)
    out_dir.mkdir(parents=True, exist_ok=True)
    return {
        "summary": write_tsv(summary, out_dir / SUMMARY_NAME),
        "best": write_tsv(best, out_dir / BEST_NAME),
        "tree": plot_exploration_tree(summary, out_dir / TREE_NAME),
        "metrics": plot_metrics_vs_time_step(summary, best, out_dir / METRICS_FIGURE_NAME),
        "progress": plot_best_vs_wall_time(summary, out_dir / PROGRESS_FIGURE_NAME),
    }


def main(argv: list[str] | None = None) -> int:
    """``pipeline summarize``: summary table, best nodes and figures of one experiment."""
    parser = argparse.ArgumentParser(prog="python -m pipeline summarize", description=main.__doc__)
    parser.add_argument("--results", required=True, type=Path, help="experiment results folder, e.g. results/demo")
    parser.add_argument("--out-dir", type=Path, default=None, help="where to write (default: RESULTS/summary)")
    args = parser.parse_args(argv)
    out_dir = args.out_dir or args.results / layout.SUMMARY_DIR
    try:
        written = summarize(args.results, out_dir)
    except (SummaryError, FileNotFoundError, ValueError) as exc:
        print(f"pipeline summarize: {exc}", file=sys.stderr)
        return 1
    for path in written.values():
        print(f"wrote {path}")
    return 0
