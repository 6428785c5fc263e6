rule plan:
    """results/<exp>/plan.json, the contract of init, ucb, decide and train (agent/run_plan.py):
    the plan resolved when the Snakefile was parsed, checked and written atomically by
    `python -m pipeline plan`. The plan is a param, so a changed config rewrites it; the rules
    that read it take it as an ancient input (common.smk: PLAN_INPUT)."""
    output:
        PLAN_PATH,
    log:
        f"{LOGS}/plan.log",
    benchmark:
        f"{BENCH}/plan.tsv"
    localrule: True
    conda:
        ENVS / "agent.yaml"
    params:
        py=PY,
        plan=PLAN_RESOLVED.to_compact_json(),
    shell:
        "{params.py} -m pipeline plan --json {params.plan:q} --out {output:q} > {log:q} 2>&1"
