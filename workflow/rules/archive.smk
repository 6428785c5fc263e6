ARCHIVE_DIR = f"{PLAN.results_dir}/archives"
ARCHIVE = f"{ARCHIVE_DIR}/{PLAN.name}.tar.gz"


rule archive:
    """results/archives/<exp>.tar.gz: the whole results/<exp> folder with a sha256 MANIFEST.

    A separate target (`snakemake archive`): it needs the finished summary and is not part of
    `all`. Its log lives beside the archive, outside the folder being packed.
    """
    input:
        iteration_outputs(PLAN.iterations),
        SUMMARY_FILES[1:],  # the rest of the summary (figures, explorer.html) is packed too
        summary=SUMMARY_FILES[0],
    output:
        ARCHIVE,
    log:
        f"{ARCHIVE_DIR}/{PLAN.name}.log",
    benchmark:
        f"{ARCHIVE_DIR}/{PLAN.name}.benchmark.tsv"
    localrule: True
    conda:
        ENVS / "neuralgraph.yaml"
    params:
        py=PY,
        results=lambda wildcards, input: os.path.dirname(os.path.dirname(input.summary)),
    shell:
        "{params.py} -m pipeline archive --results {params.results:q} --out {output:q} > {log:q} 2>&1"
        " && {params.py} -m pipeline verify-archive {output:q} >> {log:q} 2>&1"
