# The policy study (`snakemake study`): each policy on each benchmark over seeds, every run an
# ordinary workflow run of its own; pipeline/study.py runs them and writes the tables and figure.
from pipeline import study as study_names

STUDY_ROOT = f"{PLAN.results_dir}/{study_names.STUDY_DIR}"


def study_outputs(wildcards):
    """The study's files, named by the spec's `name` (read only when `study` is asked for)."""
    spec = study_names.load_spec(config["study"])
    return f"{STUDY_ROOT}/{spec.name}/{study_names.STUDY_TABLE}"


rule study:
    """Target: results/study/<name>/study.tsv, study_summary.tsv, study.md and best_so_far.png."""
    input:
        study_outputs,
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
        results=PLAN.results_dir,
    shell:
        "{params.py} -m pipeline study --spec {input.spec:q} --results-dir {params.results:q} > {log:q} 2>&1"
