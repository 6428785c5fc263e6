"""The exploration tree: node records and their UCB scores.

Every iteration leaves one structured record, ``node.json`` (see :class:`NodeRecord`). The
tree is always rebuilt from these records -- never by parsing markdown -- so a negative or
scientific-notation R^2 cannot make a node vanish and a parent link cannot be misread.
Ids are opaque integers: they need not equal iteration numbers (parallel rounds break that).

Scores follow the reference "PUCT" form (docs/agent.md, "UCB"), scoped to one block:

    UCB(u) = R(u) + c * sqrt(N) / (1 + V(u))

with R = connectivity_R2 (missing or NaN -> 0, negative kept as is), N = number of nodes in
the block, V(u) = 1 + number of descendants of u within the block, c = ``claude.ucb_c``.
A node whose parent lies outside the block (or is None) is a root of the block's tree.

Ties are broken deterministically: higher UCB first, then higher R, then lower id.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from neuralgraph.io import atomic_write_json, atomic_write_text, read_json
from agent.layout import iteration_dir_name


class TreeError(ValueError):
    """The node records do not form a valid tree (duplicate ids, cycles, bad fields)."""


@dataclass
class NodeRecord:
    """One iteration's node, as stored in ``iter_NNN/node.json``.

    ``parent`` is another node's id, or None for a root. ``metrics`` is the analyze stage's
    metrics.json (NaN already written as None). ``mutation`` is the config mutation that made
    this node from its parent (``{"parameter", "old", "new"}``), a code-modification summary,
    or None for a block root.
    """

    id: int
    parent: Optional[int]
    block: int
    iteration: int
    time_step: int
    dir: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    code_hash: str = ""
    code_modified: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)
    mutation: Optional[dict[str, Any]] = None
    strategy: str = ""
    policy: str = ""
    round: int = 0  # 0: written before rounds existed (then round = iteration)
    slot: int = 1
    role: str = ""
    tested_principle: str = ""

    @classmethod
    def from_dict(cls, data: Any, source: str = "<node>") -> "NodeRecord":
        """Build a record from parsed JSON, naming the file and field on bad input."""
        if not isinstance(data, dict):
            raise TreeError(f"{source}: a node record must be a JSON object, got {type(data).__name__}")
        missing = [key for key in ("id", "parent", "block", "iteration", "time_step") if key not in data]
        if missing:
            raise TreeError(f"{source}: node record lacks required field(s) {', '.join(missing)}")
        for key in ("id", "block", "iteration", "time_step"):
            if not isinstance(data[key], int) or isinstance(data[key], bool):
                raise TreeError(f"{source}: {key} = {data[key]!r}: must be an integer")
        parent = data["parent"]
        if parent == "root":
            parent = None
        if parent is not None and (not isinstance(parent, int) or isinstance(parent, bool)):
            raise TreeError(f"{source}: parent = {parent!r}: must be a node id (integer) or null for a root")
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["parent"] = parent
        kwargs["metrics"] = dict(kwargs.get("metrics") or {})
        kwargs["config"] = dict(kwargs.get("config") or {})
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def r2(self) -> Optional[float]:
        """connectivity_R2 as a float, or None when missing/NaN (shown as nan, scored as 0)."""
        return finite_or_none(self.metrics.get("connectivity_R2"))


def finite_or_none(value: Any) -> Optional[float]:
    """A float for finite numbers (also numeric strings like '1e-5'), otherwise None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def reward(node: NodeRecord) -> float:
    """R(u): connectivity_R2, with NaN/missing counted as 0 (a failed run earns nothing)."""
    value = node.r2
    return 0.0 if value is None else value


def node_folder(results_dir: Path, node: NodeRecord) -> Path:
    """A node's iteration folder: its recorded ``dir`` (relative to the results folder), else iter_NNN."""
    folder = Path(node.dir) if node.dir else Path(iteration_dir_name(node.iteration))
    return folder if folder.is_absolute() else Path(results_dir) / folder


def load_node(path: str | Path) -> NodeRecord:
    """Read a node.json; a missing or malformed file is a TreeError naming the file."""
    try:
        data = read_json(path)
    except (FileNotFoundError, ValueError) as exc:
        raise TreeError(f"{exc} (node record)") from None
    return NodeRecord.from_dict(data, source=str(path))


def write_node(node: NodeRecord, path: str | Path) -> Path:
    return atomic_write_json(path, node.to_dict())


def check_tree(nodes: Iterable[NodeRecord]) -> dict[int, NodeRecord]:
    """Index nodes by id, refusing duplicate ids and parent cycles (the reference allowed them)."""
    by_id: dict[int, NodeRecord] = {}
    for node in nodes:
        if node.id in by_id:
            raise TreeError(f"node id {node.id} appears twice (iterations {by_id[node.id].iteration} and {node.iteration})")
        by_id[node.id] = node
    for node in by_id.values():
        seen = {node.id}
        current = node
        while current.parent is not None and current.parent in by_id:
            if current.parent in seen:
                raise TreeError(f"node {node.id}: parent links form a cycle through node {current.parent}")
            seen.add(current.parent)
            current = by_id[current.parent]
    return by_id


def block_nodes(nodes: Iterable[NodeRecord], block: int) -> list[NodeRecord]:
    return [n for n in nodes if n.block == block]


def block_parent(node: NodeRecord, in_block: dict[int, NodeRecord]) -> Optional[int]:
    """The parent inside the block's tree, or None (a parent in another block makes a root)."""
    return node.parent if node.parent in in_block else None


def descendant_counts(in_block: dict[int, NodeRecord]) -> dict[int, int]:
    """Number of descendants of every node of one block (children, grandchildren, ...)."""
    counts = {node_id: 0 for node_id in in_block}
    for node in in_block.values():
        parent = block_parent(node, in_block)
        while parent is not None:
            counts[parent] += 1
            parent = block_parent(in_block[parent], in_block)
    return counts


@dataclass(frozen=True)
class NodeScore:
    """One line of ucb_scores.txt."""

    id: int
    parent: Optional[int]
    ucb: float
    visits: int
    r2: Optional[float]

    @property
    def reward(self) -> float:
        return 0.0 if self.r2 is None else self.r2

    def line(self) -> str:
        parent = "root" if self.parent is None else str(self.parent)
        r2 = "nan" if self.r2 is None else f"{self.r2:.3f}"
        return f"Node {self.id}: UCB={self.ucb:.3f}, parent={parent}, visits={self.visits}, R2={r2}"


def virtual_visits(in_block: dict[int, NodeRecord], parents: Iterable[Optional[int]]) -> dict[int, int]:
    """Visits that children already assigned in this round add: each counts once for its parent
    and once for every ancestor of that parent inside the block (docs/agent.md)."""
    counts = {node_id: 0 for node_id in in_block}
    for parent in parents:
        while parent is not None and parent in in_block:
            counts[parent] += 1
            parent = block_parent(in_block[parent], in_block)
    return counts


def score_block(nodes: Iterable[NodeRecord], block: int, c: float,
                virtual_parents: Iterable[Optional[int]] = ()) -> list[NodeScore]:
    """UCB scores of the nodes of ``block``, best first (ties: higher R, then lower id).

    UCB(n) = R(n) + c * sqrt(N) / (1 + visits(n)), N = nodes in the block, visits(n) = 1 + its
    descendants + its virtual visits (``virtual_parents``: parents of the children already
    assigned to earlier slots of the round being planned; none in ucb_scores.txt).
    """
    if not math.isfinite(c) or c < 0:
        raise TreeError(f"ucb_c = {c!r}: must be a finite number >= 0 (config range 0.5-3.0)")
    in_block = check_tree(block_nodes(nodes, block))
    total = len(in_block)
    counts = descendant_counts(in_block)
    virtual = virtual_visits(in_block, virtual_parents)
    scores = []
    for node_id, node in in_block.items():
        visits = 1 + counts[node_id] + virtual[node_id]
        ucb = reward(node) + c * math.sqrt(total) / (1 + visits)
        scores.append(NodeScore(node_id, block_parent(node, in_block), ucb, visits, node.r2))
    return sorted(scores, key=lambda s: (-s.ucb, -s.reward, s.id))


def format_scores(scores: Iterable[NodeScore]) -> str:
    """The text of ucb_scores.txt (seed line format), one node per line, best first."""
    lines = [score.line() for score in scores]
    return "\n".join(lines) + ("\n" if lines else "")


def check_scores_agree(scores: Iterable[NodeScore], written: str, source: str, c: float) -> None:
    """Refuse when ``written`` (an ucb_scores.txt) is not the text of ``scores``.

    The decide stage ranks parents with the same constant the ucb stage wrote the file with (the
    LLM reads that file); a second constant would make the two disagree silently.
    """
    expected = format_scores(scores)
    if written.strip() != expected.strip():
        raise TreeError(
            f"{source}: the UCB scores in this file differ from the ones computed here with ucb_c = {c!r}; "
            "the ucb and decide stages must use the same ucb_c (workflow setting ucb_c, or claude.ucb_c)"
        )


def write_scores(scores: Iterable[NodeScore], path: str | Path) -> Path:
    return atomic_write_text(path, format_scores(scores))


def best_node(nodes: Iterable[NodeRecord], block: int) -> Optional[NodeRecord]:
    """The block's node with the highest reward (ties: lower id): the carry-over at block end."""
    candidates = block_nodes(nodes, block)
    if not candidates:
        return None
    return min(candidates, key=lambda n: (-reward(n), n.id))


def fmt(value: Any, digits: int = 4) -> str:
    """Numbers for logs and tables: None/NaN -> nan, ints plain, floats with ``digits`` significant digits."""
    if value is None:
        return "nan"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if not math.isfinite(value) else f"{value:.{digits}g}"
    return str(value)


def format_mutation(mutation: Optional[dict[str, Any]], root: str = "none (block root)") -> str:
    """The one text of a node's mutation record, for memory.md, summary.tsv and the explorer.

    ``param: old -> new`` (plus data_augmentation_loop), ``[code] function: change summary``, or
    ``root`` for a node made without a mutation (a block root).
    """
    if not mutation:
        return root
    if mutation.get("function"):
        return f"[code] {mutation['function']}: {mutation.get('change_summary') or 'edited'}"
    text = f"{mutation.get('parameter')}: {fmt(mutation.get('old'))} -> {fmt(mutation.get('new'))}"
    dal = mutation.get("data_augmentation_loop")
    if isinstance(dal, dict):
        text += f"; data_augmentation_loop: {fmt(dal.get('old'))} -> {fmt(dal.get('new'))}"
    return text


def code_hash(code: str) -> str:
    """Short sha256 of a training module's text (identifies a code version in node records)."""
    import hashlib

    return hashlib.sha256(code.encode("utf-8")).hexdigest()[:16]


def merge_nodes(earlier: list[NodeRecord], current: list[NodeRecord]) -> list[NodeRecord]:
    """Earlier records plus the round's (a stale record with a round node's id is replaced)."""
    ids = {n.id for n in current}
    nodes = [n for n in earlier if n.id not in ids] + list(current)
    check_tree(nodes)
    return nodes
