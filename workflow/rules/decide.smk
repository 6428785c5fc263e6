# agent-decide: one job per iteration i. It writes iteration i's decision.json, memory.md,
# analysis.md (full log) and instructions.md, AND the next iteration's config.yaml,
# train_loop.py, proposal.json and code.diff into iter_{i+1}/ (docs/architecture.md).
#
# WHY one rule per iteration instead of a wildcard rule: Snakemake requires every output of a
# rule to carry the same wildcards, and no pattern can express "iter_{it}" and "iter_{it+1}"
# in one rule. The iteration count is fixed at parse time (n_blocks * n_iter_block), so the
# rules decide_001 .. decide_NNN are generated here with explicit paths; train, analyze and ucb
# stay ordinary wildcard rules. The last iteration makes no next node, so its decide writes
# only its own four files.
#
# decide runs on the submitting host (localrule): an LLM backend needs the network, which
# compute nodes often lack. It is the only job that reads the API key: common.smk took every
# secret out of Snakemake's environment (no job inherits it) and `python -m agent decide` reads
# it back from the in-memory file named by $NEURALGRAPH_AGENT_VAULT (agent/secrets.py). An unreachable API makes it exit 75 (retryable, --retries
# resubmits) or, with agent.fallback: offline, decide with the heuristic policy and say so in
# iter_NNN/logs/decide.log.
#
# The command is `python -m agent decide --plan results/<exp>/plan.json --iteration i`: every
# path follows from the plan and agent.layout (agent.decide.request_from_plan), the same files
# declared here. Its param is the whole plan, as the explicit options were: a changed agent
# option, schedule or ucb_c redoes every decide (docs/workflow.md, "What marks jobs out of date").

for _i in map(int, PLAN.round_ends):

    rule:
        name:
            f"decide_{label(_i)}"
        input:
            **decide_inputs(_i),
        output:
            **decide_outputs(_i),
        log:
            f"{iter_dir(_i)}/{layout.rule_log('decide')}",
        benchmark:
            f"{iter_dir(_i)}/benchmarks/decide.tsv"
        localrule: True
        conda:
            ENVS / "agent.yaml"
        params:
            py=PY,
            plan_file=PLAN_PATH,
            plan=plan_values(),
            iteration=_i,
        shell:
            "{params.py} -m agent decide --plan {params.plan_file:q} --iteration {params.iteration} > {log:q} 2>&1"
