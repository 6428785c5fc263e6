rule train:
    """Train the GNN of one iteration with its own config and training-loop copy.

    A diverged training exits 0 with status "diverged" in training.json: a result, the chain
    goes on. A crash exits non-zero; --retries resubmits the job and the train CLI resumes from
    iter_NNN/checkpoint.pt, which is deliberately not a declared output so Snakemake never
    deletes it when it cleans up a failed job. stdout/stderr (progress, rate, ETA) go to
    train.log, appended so the history of a resumed run is kept.
    """
    input:
        DATA_ARRAYS,
        config=f"{ITER}/config.yaml",
        loop=f"{ITER}/train_loop.py",
        dataset=DATA_METADATA,
    output:
        model=f"{ITER}/model.pt",
        record=f"{ITER}/training.json",
    params:
        py=PY,
        data=input_folder("dataset"),
        out=output_folder("model"),
    log:
        f"{ITER}/train.log",
    benchmark:
        f"{ITER}/benchmarks/train.tsv"
    conda:
        ENVS / "neuralgraph.yaml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=240,
    shell:
        "echo \"=== $(date -u +%FT%TZ) train iteration {wildcards.it} on $(hostname)\" >> {log:q}; "
        "OMP_NUM_THREADS={threads} {params.py} -m neuralgraph train --config {input.config:q}"
        " --data {params.data:q} --out {params.out:q} --loop {input.loop:q} >> {log:q} 2>&1"
