"""The workflow's plan: config/config.yaml checked, defaults filled, iterations and blocks laid out.

WHY: a Snakemake run of the full experiment takes days on a cluster. A typo in
``config/config.yaml`` or in the experiment YAML must be refused when the Snakefile is
parsed, before any job is submitted, with the file, the field and the allowed values named,
instead of failing hours later inside a job. The Snakefile stays a list of includes; the
arithmetic of the chain (which block an iteration is in, which time_step a block uses) lives
here where it can be read and tested.

Blocks, rounds and slots of an iteration: :mod:`agent.layout` (their one owner).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import yaml
from pydantic import ValidationError

from agent import layout
from agent.layout import MAX_ITERATIONS, label
from agent.run_plan import AgentSettings, RunPlan
from neuralgraph.config import ALLOWED_TIME_STEPS, ConfigError, ExperimentConfig, load_config


class WorkflowConfigError(ValueError):
    """config/config.yaml (or the experiment config it names) was refused. Meant for the user."""


def _dotted(path: Any) -> str:
    parts = []
    for part in path:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(("." if parts else "") + str(part))
    return "".join(parts) or "(top level)"


def _describe_schema_error(err: Any, schema: dict[str, Any]) -> str:
    """'field = value: rule (allowed ...)' from one jsonschema error."""
    from jsonschema.exceptions import best_match

    if err.validator in ("oneOf", "anyOf") and err.context:
        # Errors of the branch whose type matches the value say what is wrong with it; a
        # value matching no branch's type is described by the field's own description.
        wrong_type = {sub.relative_schema_path[0] for sub in err.context
                      if sub.validator == "type" and len(sub.relative_schema_path) == 2}
        relevant = [sub for sub in err.context if sub.relative_schema_path[0] not in wrong_type]
        chosen = best_match(relevant) if relevant else None
        if chosen is None or list(chosen.absolute_path) == list(err.absolute_path):
            description = " ".join(str(err.schema.get("description", "")).split())
            return f"{_dotted(err.absolute_path)} = {err.instance!r}: must be {description}"
        err = chosen
    field = _dotted(err.absolute_path)
    if err.validator == "additionalProperties":
        allowed = ", ".join(sorted(err.schema.get("properties", {})))
        unknown = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        where = "" if field == "(top level)" else f" in {field}"
        return f"{', '.join(unknown)}: unknown key{'s' if len(unknown) > 1 else ''}{where}; allowed keys: {allowed}"
    if err.validator == "enum":
        allowed = ", ".join(str(v) for v in err.validator_value)
        return f"{field} = {err.instance!r}: must be one of {allowed}"
    if err.validator == "required":
        return f"{err.message}"
    return f"{field} = {err.instance!r}: {err.message}"


def normalize_config(config: dict[str, Any], schema_path: Optional[str | Path] = None) -> dict[str, Any]:
    """Accept the command-line spellings of the schedule and of the agent section.

    Schedule: `--config schedule=1` (one block; YAML reads it as the integer 1),
    `--config schedule=1,4,16` and `--config 'schedule=[1,4,16]'` (Snakemake passes the list
    items as strings). A lone integer that is not an allowed time_step is left as it is, so the
    schema refuses it naming `schedule` and every allowed value, "agent" included.

    Agent: Snakemake passes the values of `--config 'agent={seed: 3, max_cost_usd: 5}'` as
    strings ('3', '5', 'null'); with ``schema_path`` each is read back as the number, boolean or
    null it spells when the schema's type for that key allows it and not "string" (a model id
    stays a string). Anything else is left for the schema to refuse, naming the field.
    """
    schedule = config.get("schedule")
    if isinstance(schedule, int) and not isinstance(schedule, bool) and schedule in ALLOWED_TIME_STEPS:
        config["schedule"] = [schedule]
    elif isinstance(schedule, str) and schedule != "agent" and all(p.strip().isdigit() for p in schedule.split(",")):
        config["schedule"] = [int(p) for p in schedule.split(",")]
    elif isinstance(schedule, list):
        config["schedule"] = [int(t) if isinstance(t, str) and t.strip().isdigit() else t for t in schedule]
    if schema_path is not None and isinstance(config.get("agent"), dict):
        agent_schema = yaml.safe_load(Path(schema_path).read_text(encoding="utf-8"))["properties"]["agent"]["properties"]
        for key, value in config["agent"].items():
            if isinstance(value, str) and key in agent_schema:
                config["agent"][key] = _typed_scalar(value, agent_schema[key].get("type", []))
    return config


#: JSON-schema type name -> the Python types a command-line scalar may be read back as.
_SCHEMA_TYPES = {"integer": (int,), "number": (int, float), "boolean": (bool,), "null": (type(None),)}


def _typed_scalar(text: str, schema_type: str | list[str]) -> Any:
    """``text`` as the number / boolean / null it spells, when the schema type allows that."""
    types = [schema_type] if isinstance(schema_type, str) else list(schema_type)
    if "string" in types:
        return None if text.strip() == "null" and "null" in types else text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):  # '3e-3': YAML 1.1 floats need a dot
        try:
            value = float(value)
        except ValueError:
            return text
    if isinstance(value, float) and value.is_integer() and "integer" in types and "number" not in types:
        value = int(value)
    allowed = tuple(t for name in types for t in _SCHEMA_TYPES.get(name, ()))
    ok = isinstance(value, allowed) and not (isinstance(value, bool) and "boolean" not in types)
    return value if ok else text


def check_against_schema(config: dict[str, Any], schema_path: str | Path, source: str) -> None:
    """Raise WorkflowConfigError listing every schema violation of ``config``, field by field."""
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise WorkflowConfigError("\n".join(f"{source}: {_describe_schema_error(e, schema)}" for e in errors))


@dataclass(frozen=True)
class WorkflowPlan:
    """Everything the rules need to know, resolved once at parse time."""

    experiment_path: str
    experiment: ExperimentConfig
    name: str
    results_dir: str
    schedule: Union[str, tuple[int, ...]]
    n_blocks: int
    n_iter_block: int
    ucb_c: float
    agent: AgentSettings
    slots: int = 1

    @property
    def results(self) -> str:
        """results/<name>: everything of this experiment lives below it."""
        return f"{self.results_dir}/{self.name}"

    @property
    def n_iterations(self) -> int:
        return self.n_blocks * self.n_iter_block

    @property
    def iterations(self) -> list[str]:
        """Zero-padded labels '001', '002', ... of every iteration."""
        return [label(i) for i in range(1, self.n_iterations + 1)]

    @property
    def n_rounds(self) -> int:
        return self.n_iterations // self.slots

    @property
    def round_ends(self) -> list[str]:
        """Labels of each round's last iteration: the folders holding the rounds' decision files."""
        return [label(self.round_iterations(r)[-1]) for r in range(1, self.n_rounds + 1)]

    def round_iterations(self, round_number: int) -> list[int]:
        """Node ids of one round."""
        return layout.round_iterations(round_number, self.slots)

    def round_of(self, iteration: int) -> int:
        return layout.round_of(iteration, self.slots)

    def run_plan(self) -> RunPlan:
        """The plan the agent's stages read (results/<exp>/plan.json, agent.run_plan)."""
        schedule = self.schedule if isinstance(self.schedule, str) else list(self.schedule[: self.n_blocks])
        return RunPlan(experiment=self.experiment_path, results=self.results, schedule=schedule,
                       n_blocks=self.n_blocks, n_iter_block=self.n_iter_block, slots=self.slots, ucb_c=self.ucb_c,
                       agent=self.agent)


def _resolve_counts(config: dict[str, Any], experiment: ExperimentConfig, source: str) -> tuple[int, int]:
    schedule = config["schedule"]
    n_blocks: Optional[int] = config.get("n_blocks")
    if isinstance(schedule, list):
        if n_blocks is None:
            n_blocks = len(schedule)
        elif n_blocks > len(schedule):
            raise WorkflowConfigError(
                f"{source}: n_blocks = {n_blocks}: the schedule lists only {len(schedule)} time_step(s) "
                f"{schedule}; give one time_step per block or set schedule: agent"
            )
    elif n_blocks is None:
        raise WorkflowConfigError(f"{source}: n_blocks: required when schedule is 'agent' (number of blocks, >= 1)")
    n_iter_block = config.get("n_iter_block") or experiment.claude.n_iter_block
    if n_blocks * n_iter_block > MAX_ITERATIONS:
        raise WorkflowConfigError(
            f"{source}: n_blocks * n_iter_block = {n_blocks} * {n_iter_block}: must be <= {MAX_ITERATIONS} "
            f"(iteration folders are {layout.iteration_dir_name(1)} .. {layout.iteration_dir_name(MAX_ITERATIONS)})"
        )
    slots = int(config.get("slots") or 1)
    if n_iter_block % slots:
        raise WorkflowConfigError(
            f"{source}: slots = {slots}: n_iter_block = {n_iter_block} is not a multiple of it; a block is a whole "
            f"number of rounds of {slots} nodes (choose slots among "
            f"{', '.join(str(k) for k in range(1, n_iter_block + 1) if n_iter_block % k == 0)}, or change n_iter_block)"
        )
    return n_blocks, n_iter_block


def _agent_options(agent: dict[str, Any], source: str) -> AgentSettings:
    """The config's agent: section as the agent's settings (their defaults: agent.run_plan)."""
    try:
        settings = AgentSettings(**agent)
    except ValidationError as exc:
        fields = "; ".join(f"agent.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise WorkflowConfigError(f"{source}: {fields}") from None
    if settings.backend == "replay" and not settings.replay_from:
        raise WorkflowConfigError(f"{source}: agent.replay_from: required when agent.backend is 'replay' (a results/<exp> folder)")
    return settings


def make_plan(config: dict[str, Any], source: str) -> WorkflowPlan:
    """Resolve a schema-valid (defaults filled) workflow config into a plan.

    Loads the experiment config with :func:`neuralgraph.config.load_config`, so an invalid
    experiment file is refused here too, naming its field.
    """
    experiment_path = config["experiment"]
    try:
        experiment = load_config(experiment_path)
    except ConfigError as exc:
        raise WorkflowConfigError(f"{source}: experiment = {experiment_path!r}: refused:\n{exc}") from None
    name = config.get("name") or Path(experiment_path).stem
    n_blocks, n_iter_block = _resolve_counts(config, experiment, source)
    schedule = config["schedule"]
    if isinstance(schedule, list):
        bad = [t for t in schedule if t not in ALLOWED_TIME_STEPS]
        if bad:  # the schema refuses these already; kept for callers that skip it
            raise WorkflowConfigError(f"{source}: schedule = {schedule}: time_step must be one of {ALLOWED_TIME_STEPS}")
        schedule = tuple(schedule)
    return WorkflowPlan(
        experiment_path=str(experiment_path),
        experiment=experiment,
        name=name,
        results_dir=str(config.get("results_dir") or "results").rstrip("/"),
        schedule=schedule,
        n_blocks=n_blocks,
        n_iter_block=n_iter_block,
        ucb_c=float(config.get("ucb_c") or experiment.claude.ucb_c),
        agent=_agent_options(config.get("agent") or {}, source),
        slots=int(config.get("slots") or 1),
    )
