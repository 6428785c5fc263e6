# The policy study (`snakemake study`): each policy on each benchmark over seeds, every run an
# ordinary workflow run of its own; pipeline/study.py runs them and writes the tables and figure.
# STUDY_ROOT and study_table() live in common.smk (functions go there, as snakemake --lint asks).


rule study:
    """Target: results/study/<name>/study.tsv, study_summary.tsv, study.md and best_so_far.png."""
    input:
        study_table,
    localrule: True


rule run_study:
    """Runs (or resumes: finished runs are kept) every policy x benchmark x seed of the spec."""
    input:
        spec=config["study"],
    output:
        table=f"{STUDY_ROOT}/{{study}}/{study_names.STUDY_TABLE}",
        summary=f"{STUDY_ROOT}/{{study}}/{study_names.STUDY_SUMMARY}",
        figure=f"{STUDY_ROOT}/{{study}}/{study_names.STUDY_FIGURE}",
        report=f"{STUDY_ROOT}/{{study}}/{study_names.STUDY_REPORT}",
    log:
        f"{STUDY_ROOT}/{{study}}/study.log",
    benchmark:
        f"{STUDY_ROOT}/{{study}}/study.benchmark.tsv"
    localrule: True
    conda:
        ENVS / "neuralgraph.yaml"
    # the study process only waits on its runs; each run's snakemake gets the spec's `cores`
    threads: 1
    params:
        py=PY,
        # results_dir from the output path: results/study/<name>/study.tsv
        results=lambda wildcards, output: str(Path(output.table).parents[2]),
    shell:
        "{params.py} -m pipeline study --spec {input.spec:q} --results-dir {params.results:q} > {log:q} 2>&1"
