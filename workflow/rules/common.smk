# Parse-time setup shared by every rule: the config is checked and the plan laid out here, so a
# bad config/config.yaml or experiment file is refused before any job runs.
import os
import shlex
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

from neuralgraph.secrets import hand_over_secrets
from pipeline.plan import WorkflowConfigError, check_against_schema, label, make_plan, normalize_config

# API keys and tokens leave Snakemake's own environment here, before any job starts: local jobs
# and `sbatch --export=ALL` inherit that environment. Only agent-decide reads them back, from an
# in-memory file this process holds open (neuralgraph/secrets.py); edited loops run sandboxed.
hand_over_secrets(os.environ)

min_version("9.0")

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
CONFIG_SOURCE = ", ".join(str(p) for p in workflow.configfiles) or "workflow config"
if workflow.config_settings.overwrite_config:
    CONFIG_SOURCE += " (with --config overrides)"

try:
    normalize_config(config)
    check_against_schema(config, SCHEMA, source=CONFIG_SOURCE)
    validate(config, str(SCHEMA))  # fills the schema's defaults into config
    PLAN = make_plan(config, source=CONFIG_SOURCE)
except WorkflowConfigError as err:
    raise WorkflowError(f"configuration refused, no job was run:\n{err}") from None


wildcard_constraints:
    it=r"\d{3}",


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
DATA = f"{RES}/data"
ITER = f"{RES}/iter_{{it}}"
LOGS = f"{RES}/logs"
BENCH = f"{RES}/benchmarks"

# The dataset folder (docs/architecture.md); metadata.json is written last and marks it complete.
DATA_ARRAYS = [f"{DATA}/{name}" for name in ("u.npy", "du.npy", "W.npy", "types.npy", "type_params.npy")]
DATA_EXTRAS = [f"{DATA}/{name}" for name in ("stats.json", "analysis.log", "activity.png", "connectivity.png")]
DATA_METADATA = f"{DATA}/metadata.json"

# What one iteration leaves in results/<exp>/iter_NNN/ (docs/workflow.md documents each file).
ITERATION_FILES = (
    "config.yaml",
    "train_loop.py",
    "proposal.json",
    "code.diff",
    "model.pt",
    "training.json",
    "logs/train.log",
    "analysis.log",
    "metrics.json",
    "node.json",
    "ucb_scores.txt",
    "decision.json",
    "memory.md",
    "analysis.md",
    "instructions.md",
)


def iter_dir(iteration):
    """results/<exp>/iter_NNN for an iteration number or label."""
    return f"{RES}/iter_{label(iteration)}"


def iteration_outputs(labels):
    """Every declared file of the given iterations (the final targets)."""
    return [f"{iter_dir(it)}/{name}" for it in labels for name in ITERATION_FILES]


def earlier_nodes(wildcards):
    """node.json of every iteration before this one (the tree the UCB scores are computed on)."""
    return [f"{iter_dir(i)}/node.json" for i in range(1, int(wildcards.it))]


def input_folder(name):
    """Param function: folder of the named input (a path prefix derived, not hard-coded)."""
    return lambda wildcards, input: os.path.dirname(input[name])


def output_folder(name):
    """Param function: folder of the named output."""
    return lambda wildcards, output: os.path.dirname(output[name])


def cli_list(option, paths):
    """'--option a b c', or '' when there is nothing to pass (argparse refuses an empty list)."""
    return f"{option} {' '.join(shlex.quote(str(p)) for p in paths)}" if paths else ""


# --- agent-decide (one rule per iteration, generated in decide.smk) -----------------------
DECISION_FILES = ("decision.json", "memory.md", "analysis.md", "instructions.md")
NEXT_ITERATION_FILES = ("config.yaml", "train_loop.py", "proposal.json", "code.diff")


def decide_inputs(i):
    """Everything decide(i) reads: this node and the tree so far, its analysis, config and code,
    the previous iteration's memory / full log / instructions, the dataset pictures."""
    here = iter_dir(i)
    inputs = {
        "node": f"{here}/node.json",
        "scores": f"{here}/ucb_scores.txt",
        "analysis_log": f"{here}/analysis.log",
        "metrics": f"{here}/metrics.json",
        "config": f"{here}/config.yaml",
        "code": f"{here}/train_loop.py",
        "activity": f"{DATA}/activity.png",
        "connectivity": f"{DATA}/connectivity.png",
        "base_config": PLAN.experiment_path,
        "nodes": [f"{iter_dir(j)}/node.json" for j in range(1, i)],
    }
    if i > 1:
        previous = iter_dir(i - 1)
        inputs.update(
            previous_memory=f"{previous}/memory.md",
            previous_full_log=f"{previous}/analysis.md",
            previous_instructions=f"{previous}/instructions.md",
        )
    return inputs


def decide_outputs(i):
    """Iteration i's decision files, plus iteration i+1's starting files unless i is the last."""
    here = iter_dir(i)
    outputs = {name.split(".")[0]: f"{here}/{name}" for name in DECISION_FILES}
    if i < PLAN.n_iterations:
        following = iter_dir(i + 1)
        outputs.update({f"next_{name.replace('.', '_')}": f"{following}/{name}" for name in NEXT_ITERATION_FILES})
    return outputs


def decide_command(i):
    """The `python -m agent decide` command line of iteration i (paths from decide_inputs/outputs)."""
    inputs, outputs = decide_inputs(i), decide_outputs(i)
    q = shlex.quote
    agent = PLAN.agent
    parts = [
        f"{PY} -m agent decide --iteration {i} --n-iter-block {PLAN.n_iter_block} --n-blocks {PLAN.n_blocks}",
        f"--schedule {PLAN.schedule_arg()} --backend {agent.backend} --seed {agent.seed} --fallback {agent.fallback}",
        f"--model {q(agent.model)}" if agent.model else "",
        f"--replay-from {q(agent.replay_from)}" if agent.replay_from else "",
        f"--smoke-timeout {agent.smoke_timeout}" if agent.smoke_timeout is not None else "",
        f"--code-modification {agent.code_modification}",
        f"--max-cost-usd {agent.max_cost_usd!r}" if agent.max_cost_usd is not None else "",
        f"--ucb-c {PLAN.ucb_c!r}",
        f"--node {q(inputs['node'])}",
        cli_list("--nodes", inputs["nodes"]),
        f"--ucb {q(inputs['scores'])} --analysis-log {q(inputs['analysis_log'])}",
        f"--config {q(inputs['config'])} --code {q(inputs['code'])}",
        f"--images {q(inputs['activity'])} {q(inputs['connectivity'])}",
        f"--base-config {q(inputs['base_config'])} --results-dir {q(RES)}",
    ]
    if i > 1:
        parts.append(
            f"--memory {q(inputs['previous_memory'])} --full-log {q(inputs['previous_full_log'])}"
            f" --instructions {q(inputs['previous_instructions'])}"
        )
    parts.append(f"--out-dir {q(iter_dir(i))}")
    if i < PLAN.n_iterations:
        parts.append(f"--next-dir {q(iter_dir(i + 1))}")
    return " ".join(p for p in parts if p)
