rule train:
    """Train the GNN of one iteration with its own config and training-loop copy.

    `python -m pipeline train` runs the packaged loop as is and an edited loop only inside the
    sandbox, with a stall watchdog (pipeline/train_job.py); neither sees an API key.

    A diverged training exits 0 with status "diverged" in training.json: a result, the chain
    goes on. A crash exits non-zero; --retries resubmits the job and the train CLI resumes from
    iter_NNN/checkpoint.pt, which is deliberately not a declared output so Snakemake never
    deletes it when it cleans up a failed job. Progress (step, loss, rate, ETA) is appended to
    iter_NNN/train.log by `python -m pipeline append-log` (which refuses a link there, unlike
    `tee -a`), which is not a declared log either: Snakemake removes the log of a
    failed job, and the history of a killed-and-resumed run is worth keeping. The declared log
    iter_NNN/logs/train.log holds the latest attempt.
    """
    input:
        DATA_ARRAYS,
        config=f"{ITER}/{layout.CONFIG_FILE}",
        loop=f"{ITER}/{layout.LOOP_FILE}",
        dataset=DATA_METADATA,
    output:
        model=f"{ITER}/{layout.MODEL_FILE}",
        record=f"{ITER}/{layout.TRAINING_RECORD_FILE}",
    log:
        f"{ITER}/{layout.rule_log('train')}",
    benchmark:
        f"{ITER}/benchmarks/train.tsv"
    conda:
        ENVS / "neuralgraph.yaml"
    # One torch thread by default: on a shared CPU a second thread that loses its core stalls
    # every step (measured 30x slower under load). The SLURM profile gives train 4 threads.
    threads: 1
    resources:
        mem_mb=16000,
        runtime=240,
    params:
        py=PY,
        plan_file=PLAN_PATH,
        plan=plan_values("agent.code_modification"),
        progress=lambda wildcards, output: os.path.join(os.path.dirname(output.model), layout.PROGRESS_LOG_FILE),
    shell:
        '(echo "=== $(date -u +%FT%TZ) train iteration {wildcards.it} on $(hostname)";'
        " {params.py} -m pipeline train --plan {params.plan_file:q} --iteration {wildcards.it} --threads {threads} 2>&1)"
        " | {params.py} -m pipeline append-log {params.progress:q} > {log:q}"
