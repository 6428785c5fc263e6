ARCHIVE_DIR = f"{PLAN.results_dir}/archives"
ARCHIVE = f"{ARCHIVE_DIR}/{PLAN.name}.tar.gz"


rule archive:
    """results/archives/<exp>.tar.gz: the whole results/<exp> folder with a sha256 MANIFEST.

    A separate target (`snakemake archive`): it needs the finished summary and is not part of
    `all`. Its log lives beside the archive, outside the folder being packed.
    """
    input:
        iteration_outputs(PLAN.iterations),
        [path for key, path in SUMMARY.items() if key != "table"],  # figures, explorer.html: packed too
        summary=SUMMARY["table"],
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
