# Parse-time setup shared by every rule: the config is checked and the plan laid out here, so a
# bad config/config.yaml or experiment file is refused before any job runs.
import json
import os
import shlex
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

from agent import layout
from agent.run_plan import PLAN_FILE, write_plan
from agent.secrets import hand_over_secrets
from neuralgraph import dataset
from pipeline import reference as reference_names
from pipeline import study as study_names
from pipeline.plan import WorkflowConfigError, check_against_schema, label, make_plan, normalize_config

# API keys and tokens leave Snakemake's own environment here, before any job starts: local jobs
# and `sbatch --export=ALL` inherit that environment. Only agent-decide reads them back, from an
# in-memory file this process holds open (agent/secrets.py); edited loops run sandboxed.
hand_over_secrets(os.environ)

min_version("9.0")

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
CONFIG_SOURCE = ", ".join(str(p) for p in workflow.configfiles) or "workflow config"
if workflow.config_settings.overwrite_config:
    CONFIG_SOURCE += " (with --config overrides)"

try:
    normalize_config(config, SCHEMA)
    check_against_schema(config, SCHEMA, source=CONFIG_SOURCE)
    validate(config, str(SCHEMA))  # fills the schema's defaults into config
    PLAN = make_plan(config, source=CONFIG_SOURCE)
except WorkflowConfigError as err:
    raise WorkflowError(f"configuration refused, no job was run:\n{err}") from None


wildcard_constraints:
    it=layout.ITERATION_LABEL_REGEX,


def _uses_conda():
    """True when jobs run in the envs/*.yaml conda environments (--software-deployment-method conda)."""
    methods = getattr(workflow.deployment_settings, "deployment_method", None) or ()
    return any("conda" in str(m).lower() for m in methods)


# Rules call the stage CLIs as `python -m ...` with the interpreter Snakemake runs under, so a
# virtualenv works without conda; under conda the env's `python` is used instead. PYTHONPATH
# makes the checkout's packages importable whether or not they are pip-installed.
PY = "{env} {python}".format(
    env=f"PYTHONPATH={shlex.quote(str(REPO))}${{PYTHONPATH:+:$PYTHONPATH}}",
    python="python" if _uses_conda() else shlex.quote(sys.executable),
)
ENVS = REPO / "envs"

RES = PLAN.results
DATA = f"{RES}/{layout.DATA_DIR}"
ITER = f"{RES}/{layout.ITERATION_PREFIX}{{it}}"
LOGS = f"{RES}/logs"
BENCH = f"{RES}/benchmarks"

# The dataset folder (docs/architecture.md); metadata.json is written last and marks it complete.
DATA_ARRAYS = [f"{DATA}/{name}" for name in dataset.ARRAY_FILES]
DATA_EXTRAS = [
    f"{DATA}/{name}"
    for name in (dataset.STATS_FILE, layout.ANALYSIS_LOG_FILE, dataset.ACTIVITY_PICTURE, dataset.CONNECTIVITY_PICTURE)
]
DATA_METADATA = f"{DATA}/{dataset.METADATA_FILE}"

# results/<exp>/plan.json (docs/architecture.md, "The contract"): resolved here, written by the
# onstart handler below, read by init, ucb, decide and train through `--plan`. No rule declares
# it (no rule makes it); the plan values each of them reads are its params (plan_values), so a
# changed config reruns the stages that read the changed value, in the same run that rewrites
# the plan (Snakemake's params trigger).
PLAN_RESOLVED = PLAN.run_plan()
PLAN_PATH = f"{RES}/{PLAN_FILE}"


onstart:
    # WHY onstart and not a rule: Snakemake calls it in the main process of a real run, before
    # the first job is started or submitted, and never in a dry run (which writes nothing). A
    # plan rule would itself have to run after a config change, and Snakemake does not compare
    # the params of the jobs below a job that must run, so the changed stages waited for a
    # second run. Jobs started elsewhere (SLURM: `snakemake --no-hooks` on the node) read the
    # file this process wrote. write_plan leaves an unchanged plan (and its mtime) alone.
    write_plan(PLAN_RESOLVED, PLAN_PATH)


def plan_values(*fields):
    """Param: the named plan values ('agent.seed' for an agent setting), or the whole plan when
    none is named, as one line of JSON."""
    values = PLAN_RESOLVED.model_dump(mode="json")
    if not fields:
        return json.dumps(values, sort_keys=True, separators=(",", ":"))
    picked = {}
    for field in fields:
        value = values
        for part in field.split("."):
            value = value[part]
        picked[field] = value
    return json.dumps(picked, sort_keys=True, separators=(",", ":"))


# What each node leaves in results/<exp>/iter_NNN/, and what each round's decide adds to the
# folder of the round's last node (agent/layout.py composes the names; docs/workflow.md
# documents each file). With slots = 1 every node is a round of its own.
ITERATION_FILES = layout.START_FILES + layout.NODE_RESULT_FILES
ROUND_FILES = layout.DECISION_FILES


def iter_dir(iteration):
    """results/<exp>/iter_NNN for an iteration number or label."""
    return f"{RES}/{layout.iteration_dir_name(int(iteration))}"


def iteration_outputs(labels):
    """Every declared file of the given iterations (the final targets)."""
    files = []
    for it in map(int, labels):
        names = ITERATION_FILES + (ROUND_FILES if it == layout.round_end(it, PLAN.slots) else ())
        files += [f"{iter_dir(it)}/{name}" for name in names]
    return files


def earlier_nodes(wildcards):
    """node.json of every iteration before this one (the tree the UCB scores are computed on)."""
    return [f"{iter_dir(i)}/{layout.NODE_FILE}" for i in range(1, int(wildcards.it))]


def input_folder(name):
    """Param function: folder of the named input (a path prefix derived, not hard-coded)."""
    return lambda wildcards, input: os.path.dirname(input[name])


def output_folder(name):
    """Param function: folder of the named output."""
    return lambda wildcards, output: os.path.dirname(output[name])


# --- agent-decide (one rule per round, generated in decide.smk) ---------------------------


def decide_inputs(i):
    """Everything the decide of the round ending at iteration i reads: the round's nodes, their
    analyses, configs and code, the tree so far, the previous round's memory / full log /
    instructions, the dataset pictures."""
    here = iter_dir(i)
    members = [iter_dir(j) for j in PLAN.round_iterations(PLAN.round_of(i))]
    first = PLAN.round_iterations(PLAN.round_of(i))[0]
    inputs = {
        "node": [f"{m}/{layout.NODE_FILE}" for m in members],
        "scores": f"{here}/{layout.SCORES_FILE}",
        "analysis_log": [f"{m}/{layout.ANALYSIS_LOG_FILE}" for m in members],
        "metrics": [f"{m}/{layout.METRICS_FILE}" for m in members],
        "config": [f"{m}/{layout.CONFIG_FILE}" for m in members],
        "code": [f"{m}/{layout.LOOP_FILE}" for m in members],
        "activity": f"{DATA}/{dataset.ACTIVITY_PICTURE}",
        "connectivity": f"{DATA}/{dataset.CONNECTIVITY_PICTURE}",
        "base_config": PLAN.experiment_path,
        "nodes": [f"{iter_dir(j)}/{layout.NODE_FILE}" for j in range(1, first)],
    }
    if first > 1:
        previous = iter_dir(first - 1)
        inputs.update(
            previous_memory=f"{previous}/{layout.MEMORY_FILE}",
            previous_full_log=f"{previous}/{layout.FULL_LOG_FILE}",
            previous_instructions=f"{previous}/{layout.INSTRUCTIONS_FILE}",
        )
    return inputs


def next_round(i):
    """Folders of the round after the one ending at iteration i (none after the last round)."""
    if layout.is_last_round(i, PLAN.slots, PLAN.n_iterations):
        return []
    return [iter_dir(j) for j in PLAN.round_iterations(PLAN.round_of(i) + 1)]


def decide_outputs(i):
    """The round's decision files (in its last node's folder), plus the next round's start files."""
    here = iter_dir(i)
    outputs = {name.split(".")[0]: f"{here}/{name}" for name in ROUND_FILES}
    for slot, folder in enumerate(next_round(i), start=1):
        tag = "next" if PLAN.slots == 1 else f"next{slot}"
        outputs.update({f"{tag}_{name.replace('.', '_')}": f"{folder}/{name}" for name in layout.START_FILES})
    return outputs


# The policy study (workflow/rules/study.smk): its folder, and its table named by the spec's
# `name`, read only when the `study` target is asked for (a bad spec spoils no other target).
STUDY_ROOT = f"{PLAN.results_dir}/{study_names.STUDY_DIR}"


def study_table(wildcards):
    spec = study_names.load_spec(config["study"])
    return f"{STUDY_ROOT}/{spec.name}/{study_names.STUDY_TABLE}"


# The reference cases (workflow/rules/reference.smk): their folder, and the table named by the
# spec's `name`, read only when the `reference` target is asked for.
REFERENCE_ROOT = f"{PLAN.results_dir}/{reference_names.REFERENCE_DIR}"


def reference_table(wildcards):
    spec = reference_names.load_spec(config["reference"])
    return f"{REFERENCE_ROOT}/{spec.name}/{reference_names.REFERENCE_TABLE}"
