rule aggregate:
    input:
        results=bench_results() + foreign_results(),
        card=rules.prepare_model.output.card,
        accuracy=accuracy_results(),
        # serving-scenario rows join summary.csv (serve.smk; none when scenarios are off)
        serving=lambda wildcards: serving_summary_csv(),
        code=aggregate_code(),
    output:
        csv=f"{RESULTS}/summary.csv",
        # shown in the report through its HTML view (rule summary_html)
        table=f"{RESULTS}/summary_table.md",
        latency=report(
            f"{RESULTS}/plots/latency_vs_batch.png",
            caption="../report/latency_vs_batch.rst",
            category="Plots",
        ),
        throughput=report(
            f"{RESULTS}/plots/throughput_vs_batch.png",
            caption="../report/throughput_vs_batch.rst",
            category="Plots",
        ),
    params:
        context=aggregate_context(),
        plots_dir=lambda wildcards, output: os.path.dirname(output.latency),
        serving=lambda wildcards, input: (
            f"--serving {shlex.quote(str(input.serving))}" if input.serving else ""
        ),
    conda:
        CONDA_ENV
    log:
        "logs/aggregate/aggregate.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench aggregate --results {input.results:q} --card {input.card:q}"
        " --context {params.context:q} --csv {output.csv:q} --table {output.table:q}"
        " --plots-dir {params.plots_dir:q} --accuracy {input.accuracy:q} {params.serving}"
        " > {log:q} 2>&1"
