rule analyze:
    """Score one iteration: metrics.json, analysis.log and plots/ (a diverged run scores as failed)."""
    input:
        DATA_ARRAYS,
        model=f"{ITER}/model.pt",
        record=f"{ITER}/training.json",
        config=f"{ITER}/config.yaml",
        dataset=DATA_METADATA,
        stats=f"{DATA}/stats.json",
        dataset_log=f"{DATA}/analysis.log",
    output:
        metrics=f"{ITER}/metrics.json",
        log=f"{ITER}/analysis.log",
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
