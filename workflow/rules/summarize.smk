from agent.costs import COSTS_NAME
from pipeline.explorer import EXPLORER_NAME
from pipeline import summary as summary_names

SUMMARY_DIR = f"{RES}/{layout.SUMMARY_DIR}"
# Every file of results/<exp>/summary/, by what it is (the names are owned by the modules that write them).
SUMMARY = {
    key: f"{SUMMARY_DIR}/{name}"
    for key, name in (
        ("table", summary_names.SUMMARY_NAME),
        ("best", summary_names.BEST_NAME),
        ("tree", summary_names.TREE_NAME),
        ("metrics", summary_names.METRICS_FIGURE_NAME),
        ("progress", summary_names.PROGRESS_FIGURE_NAME),
        ("costs", COSTS_NAME),
        ("explorer", EXPLORER_NAME),
    )
}
SUMMARY_FILES = list(SUMMARY.values())


rule summarize:
    """One row per iteration, the best node per time_step, the tree, metrics and wall-clock figures."""
    input:
        metrics=expand(f"{ITER}/{layout.METRICS_FILE}", it=PLAN.iterations),
        nodes=expand(f"{ITER}/{layout.NODE_FILE}", it=PLAN.iterations),
    output:
        table=report(
            SUMMARY["table"],
            caption="../report/summary.rst",
            category="Summary",
            labels={"file": "summary.tsv"},
        ),
        best=report(
            SUMMARY["best"],
            caption="../report/best_nodes.rst",
            category="Summary",
            labels={"file": "best_nodes.tsv"},
        ),
        tree=report(
            SUMMARY["tree"],
            caption="../report/exploration_tree.rst",
            category="Figures",
            labels={"figure": "exploration tree"},
        ),
        figure=report(
            SUMMARY["metrics"],
            caption="../report/metrics_vs_time_step.rst",
            category="Figures",
            labels={"figure": "metrics vs time_step"},
        ),
        progress=report(
            SUMMARY["progress"],
            caption="../report/best_r2_vs_wall_time.rst",
            category="Figures",
            labels={"figure": "best R2 vs wall-clock time"},
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
    """Tokens and cost of every LLM call, one row each, and the total (`python -m agent costs`
    reads the calls recorded in decision.json; summary.tsv has no cost column)."""
    input:
        decisions=expand(f"{ITER}/{layout.DECISION_FILE}", it=PLAN.round_ends),
    output:
        SUMMARY["costs"],
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
        "{params.py} -m agent costs --results {params.results:q} --out {output:q} > {log:q} 2>&1"


rule explorer:
    """explorer.html: the interactive page of the exploration (trees, table, each node's diffs,
    agent log, decision, plots and memory); rerun it to refresh the page of a running exploration."""
    input:
        metrics=expand(f"{ITER}/{layout.METRICS_FILE}", it=PLAN.iterations),
        nodes=expand(f"{ITER}/{layout.NODE_FILE}", it=PLAN.iterations),
        decisions=expand(f"{ITER}/{layout.DECISION_FILE}", it=PLAN.round_ends),
        memory=expand(f"{ITER}/{layout.MEMORY_FILE}", it=PLAN.round_ends),
    output:
        page=report(
            SUMMARY["explorer"],
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
