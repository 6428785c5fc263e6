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
        out_dir=output_folder("config"),
        n_iter_block=PLAN.n_iter_block,
        schedule=PLAN.schedule_arg(),
        slots=PLAN.slots,
        seed=PLAN.agent.seed,
    shell:
        "{params.py} -m agent init --config {input.experiment:q} --out-dir {params.out_dir:q}"
        " --n-iter-block {params.n_iter_block} --schedule {params.schedule} --slots {params.slots} --seed {params.seed}"
        " > {log:q} 2>&1"
