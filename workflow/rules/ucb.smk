rule ucb:
    """Node record of one iteration and the UCB scores of its block's tree (ucb_scores.txt)."""
    input:
        plan=PLAN_INPUT,
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
        plan=plan_values("ucb_c"),
    shell:
        "{params.py} -m agent ucb --plan {input.plan:q} --iteration {wildcards.it} > {log:q} 2>&1"
