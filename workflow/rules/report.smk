# The report stage: plots over the raw samples, observations.md, the environment
# page, and HTML views of the Markdown documents for `snakemake --report`. Each
# output reruns only when its result files, its settings or its code change.


rule plot_speedup:
    input:
        results=rules.aggregate.input.results,
        code=report_code("report.plots", "report.rows"),
    output:
        png=report(
            f"{RESULTS}/plots/speedup_heatmap.png",
            caption="../report/speedup_heatmap.rst",
            category="Plots",
        ),
    params:
        context=report_context("baseline", "resamples", "seed"),
        baseline=config["report"]["baseline"],
    conda:
        CONDA_ENV
    log:
        "logs/plot_speedup/plot_speedup.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench plot --kind speedup --results {input.results:q}"
        " --context {params.context:q} --out {output.png:q} > {log:q} 2>&1"


rule plot_distributions:
    input:
        results=rules.aggregate.input.results,
        code=report_code("report.plots", "report.rows"),
    output:
        png=report(
            f"{RESULTS}/plots/latency_distributions.png",
            caption="../report/latency_distributions.rst",
            category="Plots",
        ),
    params:
        context=report_context("distribution_batch"),
    conda:
        CONDA_ENV
    log:
        "logs/plot_distributions/plot_distributions.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench plot --kind distributions --results {input.results:q}"
        " --context {params.context:q} --out {output.png:q} > {log:q} 2>&1"


rule plot_targets:
    input:
        results=rules.aggregate.input.results,
        code=report_code("report.plots", "report.rows"),
    output:
        png=report(
            f"{RESULTS}/plots/target_comparison.png",
            caption="../report/target_comparison.rst",
            category="Plots",
        ),
    params:
        context=report_context("prices", "resamples", "seed"),
    conda:
        CONDA_ENV
    log:
        "logs/plot_targets/plot_targets.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench plot --kind targets --results {input.results:q}"
        " --context {params.context:q} --out {output.png:q} > {log:q} 2>&1"


rule findings:
    input:
        results=rules.aggregate.input.results,
        accuracy=accuracy_results(),
        code=report_code("report.findings", "report.rows", "measure.accuracy"),
    output:
        md=f"{RESULTS}/observations.md",
        html=report(
            f"{RESULTS}/report/observations.html",
            caption="../report/observations.rst",
            category="Summary",
        ),
    params:
        context=report_context("baseline", "resamples", "seed", "prices"),
    conda:
        CONDA_ENV
    log:
        "logs/findings/findings.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench findings --results {input.results:q}"
        " --accuracy {input.accuracy:q} --context {params.context:q} --out {output.md:q}"
        " --html {output.html:q} > {log:q} 2>&1"


rule environment:
    input:
        results=rules.aggregate.input.results,
    output:
        md=f"{RESULTS}/environment.md",
        html=report(
            f"{RESULTS}/report/environment.html",
            caption="../report/environment.rst",
            category="Environment",
        ),
    params:
        config=json.dumps(config, sort_keys=True, default=str),
    conda:
        CONDA_ENV
    log:
        "logs/environment/environment.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench environment --results {input.results:q}"
        " --config {params.config:q} --out {output.md:q} --html {output.html:q}"
        " > {log:q} 2>&1"


rule summary_html:
    input:
        table=rules.aggregate.output.table,
    output:
        html=report(
            f"{RESULTS}/report/summary.html",
            caption="../report/summary_table.rst",
            category="Summary",
        ),
    conda:
        CONDA_ENV
    log:
        "logs/summary_html/summary_html.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench render-html --input {input.table:q} --out {output.html:q}"
        " --title 'inferbench summary' > {log:q} 2>&1"
