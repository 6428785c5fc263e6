rule simulate:
    """The network and its recorded activity: once per experiment, shared by every iteration.

    Rerun only when the experiment's simulation section changes (its hash is a param), not
    when training settings in the same file are edited.
    """
    output:
        DATA_ARRAYS,
        DATA_EXTRAS,
        metadata=DATA_METADATA,
    log:
        f"{LOGS}/simulate.log",
    benchmark:
        f"{BENCH}/simulate.tsv"
    conda:
        ENVS / "neuralgraph.yaml"
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        py=PY,
        config=PLAN.experiment_path,
        simulation_hash=PLAN.experiment.simulation_hash(),
        out=output_folder("metadata"),
    shell:
        "{params.py} -m neuralgraph simulate --config {params.config:q} --out {params.out:q} --no-progress"
        " > {log:q} 2>&1"
