rule analyze:
    """Score one iteration: metrics.json, analysis.log and plots/ (a diverged run scores as failed)."""
    input:
        DATA_ARRAYS,
        model=f"{ITER}/{layout.MODEL_FILE}",
        record=f"{ITER}/{layout.TRAINING_RECORD_FILE}",
        config=f"{ITER}/{layout.CONFIG_FILE}",
        dataset=DATA_METADATA,
        stats=f"{DATA}/{dataset.STATS_FILE}",
        dataset_log=f"{DATA}/{layout.ANALYSIS_LOG_FILE}",
    output:
        metrics=f"{ITER}/{layout.METRICS_FILE}",
        log=f"{ITER}/{layout.ANALYSIS_LOG_FILE}",
    log:
        f"{ITER}/{layout.rule_log('analyze')}",
    benchmark:
        f"{ITER}/benchmarks/analyze.tsv"
    conda:
        ENVS / "neuralgraph.yaml"
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        py=PY,
        run=input_folder("model"),
        data=input_folder("dataset"),
    shell:
        "{params.py} -m neuralgraph analyze --run {params.run:q} --data {params.data:q} --config {input.config:q}"
        " --iteration {wildcards.it} > {log:q} 2>&1"
