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
        plan_file=PLAN_PATH,
        plan=plan_values("ucb_c"),
    shell:
        "{params.py} -m agent ucb --plan {params.plan_file:q} --iteration {wildcards.it} > {log:q} 2>&1"
