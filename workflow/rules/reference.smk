# The reference's published cases (`snakemake reference`): each case and seed one ordinary
# workflow run with the reference's published recipe; pipeline/reference.py runs them and writes
# the table. REFERENCE_ROOT and reference_table() live in common.smk (functions go there).


rule reference:
    """Target: results/reference/<name>/reference.tsv, reference.md and reference.png."""
    input:
        reference_table,
    localrule: True


rule run_reference:
    """Runs (or resumes: finished runs are kept) every case x seed of the spec."""
    input:
        spec=config["reference"],
    output:
        table=f"{REFERENCE_ROOT}/{{reference}}/{reference_names.REFERENCE_TABLE}",
        report=f"{REFERENCE_ROOT}/{{reference}}/{reference_names.REFERENCE_REPORT}",
        figure=f"{REFERENCE_ROOT}/{{reference}}/{reference_names.REFERENCE_FIGURE}",
    log:
        f"{REFERENCE_ROOT}/{{reference}}/reference.log",
    benchmark:
        f"{REFERENCE_ROOT}/{{reference}}/reference.benchmark.tsv"
    localrule: True
    conda:
        ENVS / "neuralgraph.yaml"
    # the process only waits on its runs; each run's snakemake gets the spec's `cores`
    threads: 1
    params:
        py=PY,
        # results_dir from the output path: results/reference/<name>/reference.tsv
        results=lambda wildcards, output: str(Path(output.table).parents[2]),
    shell:
        "{params.py} -m pipeline reference --spec {input.spec:q} --results-dir {params.results:q} > {log:q} 2>&1"
