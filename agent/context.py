"""What a policy sees when it decides: :class:`DecisionContext`.

The context mirrors what the seed's agent was shown (docs/agent.md, "Decisions"): block and
iteration info with the BLOCK END marker, the working memory, analysis.log, ucb_scores.txt,
the current config, the editable training code, the instructions and the dataset pictures.
It also carries the node records (structured, for offline policies and for validation) --
an LLM policy renders the text fields into its prompt and ignores the rest.

Numbering starts at 1 everywhere (:mod:`agent.layout` owns the arithmetic of blocks,
rounds and slots). With ``slots`` = K > 1 a round's K nodes are decided together: one
context per slot, whose ``current_node`` is the finished round's node in that slot (its log
entry), whose child is node ``iteration + K``, and whose ``planned`` lists the children the
earlier slots of this round already got (virtual visits in :attr:`scores`, no duplicates).
A block ends with the round whose last node ends it.

Interface for policy authors (stable): every attribute below may be read; nothing in the
context is meant to be modified by a policy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from agent.tree import NodeRecord, NodeScore, block_nodes, score_block
from agent.layout import block_of, is_last_round, iter_in_block_of, round_end, round_of

#: Slot roles (docs/agent.md): what each child of a round is for.
ROLE_EXPLOIT, ROLE_EXPLORE, ROLE_PRINCIPLE = "exploit", "explore", "principle-test"
ROLE_ROOT, ROLE_VARIANT = "root", "variant"  # the first round of a block: its root and variants of it


def slot_roles(slots: int, block_start: bool = False) -> list[str]:
    """Role of each slot of a round: K = 1 exploit; K = 2 exploit + explore; K >= 3 exploit x (K-2),
    explore, principle-test. The first round of a block: the block root and K-1 variants of it."""
    if block_start:
        return [ROLE_ROOT] + [ROLE_VARIANT] * (slots - 1)
    if slots == 1:
        return [ROLE_EXPLOIT]
    if slots == 2:
        return [ROLE_EXPLOIT, ROLE_EXPLORE]
    return [ROLE_EXPLOIT] * (slots - 2) + [ROLE_EXPLORE, ROLE_PRINCIPLE]


@dataclass(frozen=True)
class PlannedChild:
    """A child already given to an earlier slot of the round being planned."""

    slot: int
    role: str
    parent: Optional[int]  # node id; None for a block root
    training: dict[str, Any]
    code: str = ""


@dataclass
class DecisionContext:
    """Everything known at the end of iteration ``iteration`` when choosing node iteration+1.

    Fields:
      iteration, n_iter_block, n_blocks: the loop position (see module docstring).
      working_memory: text of the previous memory.md ("" at iteration 1).
      analysis_log: text of this iteration's analysis.log (metrics + dataset statistics).
      ucb_scores: text of this iteration's ucb_scores.txt (seed line format, best first).
      config: the current node's full experiment config (dict); config_yaml: same as YAML text.
      code: the current node's train_loop.py source; editable_functions: names the agent may edit.
      instructions: the current instruction text (previous iteration's instructions.md, or the
        shipped agent/instructions.md at iteration 1).
      image_paths: dataset pictures (activity, connectivity) to show as images.
      nodes: every node record known so far (all blocks), the current node included.
      current_node: the node of this iteration (its metrics are what is being analysed).
      ucb_c: exploration constant used for ``scores``.
      schedule: time_step per block when fixed by the experiment (None: the policy chooses).
      seed: base seed for deterministic offline policies.
      base_config: the experiment config (fixed fields: simulation, batch_size, claude).
      code_modification_refusal: why code modifications cannot be made at all this time (no
        working sandbox, or agent.code_modification: off), else None; policies then mutate
        the config only, and validation refuses any code modification with this message.
      prompt_images / prompt_code: whether an LLM's prompt shows the dataset pictures / the
        training code (agent.prompt_images / agent.prompt_code; the prompt says when left out).
    """

    iteration: int
    n_iter_block: int
    n_blocks: int
    working_memory: str
    analysis_log: str
    ucb_scores: str
    config: dict[str, Any]
    config_yaml: str
    code: str
    editable_functions: tuple[str, ...]
    instructions: str
    image_paths: list[Path]
    nodes: list[NodeRecord]
    current_node: NodeRecord
    ucb_c: float = 1.414
    schedule: Optional[list[int]] = None
    seed: int = 0
    base_config: dict[str, Any] = field(default_factory=dict)
    code_modification_refusal: Optional[str] = None
    slots: int = 1
    slot: int = 1
    role: str = ROLE_EXPLOIT
    round_nodes: list[NodeRecord] = field(default_factory=list)
    planned: list[PlannedChild] = field(default_factory=list)
    prompt_images: bool = True
    prompt_code: bool = True

    @property
    def round(self) -> int:
        return round_of(self.iteration, self.slots)

    @property
    def round_end(self) -> int:
        """The last iteration of this round (where the round's decision files live)."""
        return round_end(self.iteration, self.slots)

    @property
    def block(self) -> int:
        return block_of(self.iteration, self.n_iter_block)

    @property
    def iter_in_block(self) -> int:
        return iter_in_block_of(self.iteration, self.n_iter_block)

    @property
    def is_block_end(self) -> bool:
        """True in the round that ends the block (its children start the next block)."""
        return iter_in_block_of(self.round_end, self.n_iter_block) == self.n_iter_block

    @property
    def is_last_iteration(self) -> bool:
        """True in the last round of the last block: there is no next node to make."""
        return is_last_round(self.iteration, self.slots, self.n_iter_block * self.n_blocks)

    @property
    def next_iteration(self) -> int:
        """The iteration of this slot's child (the same slot of the next round)."""
        return self.iteration + self.slots

    @property
    def next_iter_in_block(self) -> int:
        return iter_in_block_of(self.next_iteration, self.n_iter_block)

    @property
    def time_step(self) -> int:
        return int(self.config.get("training", {}).get("time_step", self.current_node.time_step))

    @property
    def scheduled_next_time_step(self) -> Optional[int]:
        """time_step of the next block when the schedule fixes it (only meaningful at block end)."""
        if not self.schedule:
            return None
        index = self.block  # next block is block + 1 -> index block (0-based)
        return self.schedule[index] if index < len(self.schedule) else None

    @property
    def block_nodes(self) -> list[NodeRecord]:
        """Nodes of the current block (the tree the parent is chosen from)."""
        return block_nodes(self.nodes, self.block)

    @property
    def scores(self) -> list[NodeScore]:
        """UCB scores of the current block, best first (same rule as ucb_scores.txt)."""
        return score_block(self.nodes, self.block, self.ucb_c, virtual_parents=[p.parent for p in self.planned])

    def node(self, node_id: int) -> Optional[NodeRecord]:
        for node in self.nodes:
            if node.id == node_id:
                return node
        return None

    def block_info(self) -> str:
        """The seed's block line, with the BLOCK END marker on a block's last iteration."""
        text = (
            f"Iteration {self.iteration}/{self.n_iter_block * self.n_blocks}. "
            f"Block info: block {self.block}, iteration {self.iter_in_block}/{self.n_iter_block} within block"
        )
        if self.is_block_end:
            text += " -- BLOCK END"
            if self.is_last_iteration:
                text += " (last block: no next iteration)"
        return text
