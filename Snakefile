# neuralgraph: recover a network's wiring W from its activity with a recurrent GNN, explored by
# an agent in a UCB tree. This Snakefile only includes the rule files and names the targets;
# docs/workflow.md explains the results layout, the cluster profile, reruns and the archive.
#
#   snakemake --profile profiles/local                    # the demo, on a laptop
#   snakemake --profile profiles/slurm                    # on a SLURM cluster (GPU for train)
#   snakemake archive --profile profiles/local            # results/archives/<experiment>.tar.gz
#   snakemake --report report.html                        # HTML report: summary table + figures
import sys
from pathlib import Path

REPO = Path(workflow.basedir).resolve()
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # neuralgraph importable at parse time without installing it


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/init.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/analyze.smk"
include: "workflow/rules/ucb.smk"
include: "workflow/rules/decide.smk"
include: "workflow/rules/summarize.smk"
include: "workflow/rules/archive.smk"
include: "workflow/rules/study.smk"
include: "workflow/rules/reference.smk"


# Every iteration of every block, then the summary (the archive is its own target).
rule all:
    default_target: True
    input:
        iteration_outputs(PLAN.iterations),
        SUMMARY_FILES,
