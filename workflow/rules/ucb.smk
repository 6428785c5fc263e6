rule ucb:
    """Node record of one iteration and the UCB scores of its block's tree (ucb_scores.txt)."""
    input:
        proposal=f"{ITER}/{layout.PROPOSAL_FILE}",
        metrics=f"{ITER}/{layout.METRICS_FILE}",
        config=f"{ITER}/{layout.CONFIG_FILE}",
        code=f"{ITER}/{layout.LOOP_FILE}",
        nodes=earlier_nodes,
    output:
        node=f"{ITER}/{layout.NODE_FILE}",
        scores=f"{ITER}/{layout.SCORES_FILE}",
    log:
        f"{ITER}/{layout.rule_log('ucb')}",
    benchmark:
        f"{ITER}/benchmarks/ucb.tsv"
    localrule: True
    conda:
        ENVS / "agent.yaml"
    params:
        py=PY,
        nodes=lambda wildcards, input: cli_list("--nodes", input.nodes),
        ucb_c=repr(PLAN.ucb_c),
    shell:
        "{params.py} -m agent ucb --proposal {input.proposal:q} --metrics {input.metrics:q} --config {input.config:q}"
        " --code {input.code:q} {params.nodes} --ucb-c {params.ucb_c} --out-node {output.node:q}"
        " --out-scores {output.scores:q} > {log:q} 2>&1"
