# Comparing runs: this run against a baseline run (config `compare:`), and the merged
# targets side by side (machines). Both read the result files only; the logic is in
# inferbench.report.compare; the input functions are in common.smk.


rule compare_runs:
    input:
        baseline=compare_baseline_files(),
        current=bench_results(),
        code=report_code("report.compare", "report.rows", "results"),
    output:
        md=f"{RESULTS}/compare/{COMPARE.get('name', 'baseline')}.md",
        png=report(
            f"{RESULTS}/compare/{COMPARE.get('name', 'baseline')}.png",
            caption="../report/compare_forest.rst",
            category="Comparison",
        ),
    params:
        baseline=COMPARE.get("baseline", ""),
        noise_band=COMPARE.get("noise_band_pct", 2),
        regression=COMPARE.get("regression_pct", 5),
        resamples=config["measurement"]["bootstrap_resamples"],
    conda:
        CONDA_ENV
    log:
        "logs/compare_runs/compare_runs.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench compare {params.baseline:q} {input.current:q}"
        " --noise-band {params.noise_band} --mark-regressions {params.regression}"
        " --resamples {params.resamples} --out {output.md:q} --plot {output.png:q}"
        " > {log:q} 2>&1"


rule machine_comparison:
    input:
        results=rules.aggregate.input.results,
        code=report_code("report.compare", "report.machines", "report.rows", "results"),
    output:
        md=f"{RESULTS}/machine_comparison.md",
        png=report(
            f"{RESULTS}/plots/machine_comparison.png",
            caption="../report/machine_comparison.rst",
            category="Plots",
        ),
    params:
        context=report_context("prices", "resamples"),
        # this run's (first) target: the machine the others are compared with
        reference=TARGETS[0],
    conda:
        CONDA_ENV
    log:
        "logs/machine_comparison/machine_comparison.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench compare-machines {input.results:q}"
        " --reference {params.reference:q} --context {params.context:q}"
        " --out {output.md:q} --plot {output.png:q} > {log:q} 2>&1"
