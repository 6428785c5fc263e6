"""plan.json: the resolved workflow plan, the contract between the workflow and the agent's stages.

The workflow resolves config/config.yaml once (:func:`pipeline.plan.make_plan`) into a
:class:`RunPlan`; written to ``results/<exp>/plan.json`` it is all an agent stage needs besides
the iteration: ``python -m agent decide --plan P --iteration I`` derives every other path from
the plan and the folder layout (:mod:`agent.layout`, :func:`agent.decide.request_from_plan`).

Why the agent owns this format: the agent's stages read it, and the workflow side (pipeline/)
imports the agent, never the other way round. The file is schema-checked when read: an unknown
or missing field, or a value of the wrong type, is refused naming the field. This module only
needs pydantic, so the workflow can build a plan while it parses the Snakefile.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.sandbox import CODE_MODIFICATION_MODES, DEFAULT_CODE_MODIFICATION
from neuralgraph.io import atomic_write_text, read_bytes_nofollow, read_json

#: The plan's file name, in the experiment's results folder.
PLAN_FILE = "plan.json"
#: Bumped when a field changes meaning; a plan of another version is refused.
PLAN_VERSION = 1


class PlanError(ValueError):
    """plan.json cannot be used: the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgentSettings(_Strict):
    """The agent options of the workflow config (``agent:``), with their defaults: their one home.

    The workflow schema's defaults, the agent CLI's and docs/workflow.md are held to these by
    tests/test_defaults.py.
    """

    backend: str = "heuristic"
    model: Optional[str] = None
    seed: int = 0
    fallback: Literal["offline", "fail"] = "fail"
    replay_from: Optional[str] = None
    #: None: the agent's own default (agent.smoke.DEFAULT_SMOKE_TIMEOUT_S).
    smoke_timeout: Optional[Union[int, float]] = None
    code_modification: Literal[CODE_MODIFICATION_MODES] = DEFAULT_CODE_MODIFICATION  # type: ignore[valid-type]
    max_cost_usd: Optional[Union[int, float]] = None
    prompt_images: bool = True
    prompt_code: bool = True


#: The agent options' defaults, read by every command that offers them without a plan.
AGENT_DEFAULTS = AgentSettings()


class RunPlan(_Strict):
    """What every stage of one exploration shares (see the module docstring)."""

    version: Literal[1] = PLAN_VERSION
    experiment: str = Field(description="the experiment config (path as the workflow sees it)")
    results: str = Field(description="results/<exp>: every iteration folder lives below it")
    schedule: Union[Literal["agent"], list[int]]
    n_blocks: int = Field(ge=1)
    n_iter_block: int = Field(ge=1)
    slots: int = Field(ge=1)
    ucb_c: float
    agent: AgentSettings = Field(default_factory=AgentSettings)

    @property
    def n_iterations(self) -> int:
        return self.n_blocks * self.n_iter_block

    def schedule_list(self) -> Optional[list[int]]:
        """The time_step of each block, or None when the agent chooses them."""
        return None if self.schedule == "agent" else list(self.schedule[: self.n_blocks])

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def write_plan(plan: RunPlan, path: str | Path) -> Path:
    """Write plan.json atomically, and only when its text differs from the file already there.

    WHY only then: the workflow writes the plan at the start of every run (its ``onstart``
    handler, workflow/rules/common.smk), and an unchanged plan keeps its mtime, so nothing that
    looks at the file's age sees a change that did not happen.
    """
    text = plan.to_json()
    try:
        if read_bytes_nofollow(path) == text.encode("utf-8"):
            return Path(path)
    except FileNotFoundError:
        pass
    return atomic_write_text(path, text)


def read_plan(path: str | Path) -> RunPlan:
    """Read and check plan.json; PlanError names the file and each refused field."""
    try:
        raw = read_json(path)
    except FileNotFoundError:
        raise PlanError(f"{path}: plan not found (the workflow writes results/<exp>/{PLAN_FILE} when a run"
                        " starts; not with --no-hooks)") from None
    except (OSError, ValueError) as exc:
        raise PlanError(f"{path}: not a readable JSON plan ({exc})") from None
    try:
        return RunPlan.model_validate(raw)
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise PlanError(f"{path}: {fields}") from None
