rule analyze:
    """Score one iteration: metrics.json, analysis.log and plots/ (a diverged run scores as failed)."""
    input:
        DATA_ARRAYS,
        model=f"{ITER}/model.pt",
        record=f"{ITER}/training.json",
        config=f"{ITER}/config.yaml",
        dataset=DATA_METADATA,
        stats=f"{DATA}/{dataset.STATS_FILE}",
        dataset_log=f"{DATA}/{layout.ANALYSIS_LOG_FILE}",
    output:
        metrics=f"{ITER}/{layout.METRICS_FILE}",
        log=f"{ITER}/{layout.ANALYSIS_LOG_FILE}",
    log:
        f"{ITER}/logs/analyze.log",
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
        " > {log:q} 2>&1"
