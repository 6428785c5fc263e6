rule init:
    """Iteration 1 (the chain's base case): config, training-loop copy, proposal and an empty
    code.diff made from the experiment config by `python -m agent init` (block 1's time_step
    from the schedule)."""
    input:
        experiment=PLAN.experiment_path,
    output:
        config=f"{iter_dir(1)}/{layout.CONFIG_FILE}",
        code=f"{iter_dir(1)}/{layout.LOOP_FILE}",
        proposal=f"{iter_dir(1)}/{layout.PROPOSAL_FILE}",
        diff=f"{iter_dir(1)}/{layout.DIFF_FILE}",
        variants=[f"{iter_dir(j)}/{name}" for j in PLAN.round_iterations(1)[1:] for name in layout.START_FILES],
    log:
        f"{LOGS}/init.log",
    benchmark:
        f"{BENCH}/init.tsv"
    localrule: True
    conda:
        ENVS / "agent.yaml"
    params:
        py=PY,
        plan_file=PLAN_PATH,
        plan=plan_values("experiment", "schedule", "slots", "agent.seed"),
    shell:
        "{params.py} -m agent init --plan {params.plan_file:q} > {log:q} 2>&1"
