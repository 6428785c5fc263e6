from pipeline.explorer import EXPLORER_NAME

SUMMARY_DIR = f"{RES}/summary"
SUMMARY_FILES = [
    f"{SUMMARY_DIR}/{name}"
    for name in (
        "summary.tsv",
        "best_nodes.tsv",
        "exploration_tree.png",
        "metrics_vs_time_step.png",
        "costs.tsv",
        EXPLORER_NAME,
    )
]


rule summarize:
    """One row per iteration, the best node per time_step, the tree and metrics figures."""
    input:
        metrics=expand(f"{ITER}/metrics.json", it=PLAN.iterations),
        nodes=expand(f"{ITER}/node.json", it=PLAN.iterations),
    output:
        table=report(
            SUMMARY_FILES[0],
            caption="../report/summary.rst",
            category="Summary",
            labels={"file": "summary.tsv"},
        ),
        best=report(
            SUMMARY_FILES[1],
            caption="../report/best_nodes.rst",
            category="Summary",
            labels={"file": "best_nodes.tsv"},
        ),
        tree=report(
            SUMMARY_FILES[2],
            caption="../report/exploration_tree.rst",
            category="Figures",
            labels={"figure": "exploration tree"},
        ),
        figure=report(
            SUMMARY_FILES[3],
            caption="../report/metrics_vs_time_step.rst",
            category="Figures",
            labels={"figure": "metrics vs time_step"},
        ),
    log:
        f"{LOGS}/summarize.log",
    benchmark:
        f"{BENCH}/summarize.tsv"
    localrule: True
    conda:
        ENVS / "neuralgraph.yaml"
    params:
        py=PY,
        results=lambda wildcards, input: os.path.dirname(os.path.dirname(input.metrics[0])),
        out=output_folder("table"),
    shell:
        "{params.py} -m pipeline summarize --results {params.results:q} --out-dir {params.out:q} > {log:q} 2>&1"


rule costs:
    """Tokens and cost of every LLM call, one row each, and the total (agent.costs reads the
    calls recorded in decision.json; pipeline.summary does not import the agent)."""
    input:
        decisions=expand(f"{ITER}/decision.json", it=PLAN.round_ends),
    output:
        SUMMARY_FILES[4],
    log:
        f"{LOGS}/costs.log",
    benchmark:
        f"{BENCH}/costs.tsv"
    localrule: True
    conda:
        ENVS / "agent.yaml"
    params:
        py=PY,
        results=lambda wildcards, input: os.path.dirname(os.path.dirname(input.decisions[0])),
    shell:
        "{params.py} -m agent.costs --results {params.results:q} --out {output:q} > {log:q} 2>&1"


rule explorer:
    """explorer.html: the interactive page of the exploration (trees, table, each node's diffs,
    agent log, decision, plots and memory); rerun it to refresh the page of a running exploration."""
    input:
        metrics=expand(f"{ITER}/metrics.json", it=PLAN.iterations),
        nodes=expand(f"{ITER}/node.json", it=PLAN.iterations),
        decisions=expand(f"{ITER}/decision.json", it=PLAN.round_ends),
        memory=expand(f"{ITER}/memory.md", it=PLAN.round_ends),
    output:
        page=report(
            SUMMARY_FILES[5],
            caption="../report/explorer.rst",
            category="Summary",
            labels={"file": EXPLORER_NAME},
        ),
    log:
        f"{LOGS}/explorer.log",
    benchmark:
        f"{BENCH}/explorer.tsv"
    localrule: True
    conda:
        ENVS / "neuralgraph.yaml"
    params:
        py=PY,
        results=lambda wildcards, input: os.path.dirname(os.path.dirname(input.metrics[0])),
    shell:
        "{params.py} -m pipeline explorer --results {params.results:q} --out {output.page:q} > {log:q} 2>&1"
