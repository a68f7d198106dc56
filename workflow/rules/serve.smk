# Serving scenarios (config `scenarios:`): traffic with real request lengths, its FP32
# reference, one LoadGen job per target x backend x scenario x padding strategy, and
# the serving table. Functions: serve_common.smk.


# The tokenizer of scenarios.traffic.tokenizer (package:<name> or a folder), saved once
# into results/tokenizers/<name>/: the traffic reads it when the model has no tokenizer.
rule traffic_tokenizer:
    input:
        unpack(traffic_tokenizer_inputs),
    output:
        folder=directory(SERVE_TOKENIZER_DIR),
    wildcard_constraints:
        tokenizer=traffic_tokenizer_name_pattern(),
    params:
        source=SERVE_TOKENIZER,
        # a package's files are not inputs: an upgrade of it saves the tokenizer again
        version=ib_tokenizer.package_version(SERVE_TOKENIZER) if SERVE_TOKENIZER else "",
    conda:
        CONDA_ENV
    log:
        "logs/traffic_tokenizer/{tokenizer}.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench traffic-tokenizer --source {params.source:q}"
        " --out {output.folder:q} > {log:q} 2>&1"


rule serve_traffic:
    input:
        card=rules.prepare_model.output.card,
        text=SERVE_TEXT or [],
        tokenizer=traffic_tokenizer_dir(),
    output:
        npz=SERVE_TRAFFIC,
        meta=SERVE_TRAFFIC.replace(".npz", ".json"),
    params:
        settings=SERVE_TRAFFIC_SETTINGS,
        model_dir=rules.prepare_model.output.model_dir,
        text=lambda wildcards, input: (
            f"--text {shlex.quote(str(input.text))}" if input.text else ""
        ),
        tokenizer=lambda wildcards, input: (
            f"--tokenizer {shlex.quote(str(input.tokenizer))}" if input.tokenizer else ""
        ),
    conda:
        CONDA_ENV
    log:
        f"logs/serve_traffic/{MODEL}.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench serve-traffic --model-dir {params.model_dir:q}"
        " --card {input.card:q} --settings {params.settings:q} {params.text}"
        " {params.tokenizer} --out {output.npz:q} > {log:q} 2>&1"


rule serve_reference:
    input:
        card=rules.prepare_model.output.card,
        traffic=rules.serve_traffic.output.npz,
    output:
        npz=SERVE_REFERENCE,
    params:
        model_dir=rules.prepare_model.output.model_dir,
        threads=config["threads"],
    threads: config["threads"]
    conda:
        CONDA_ENV
    log:
        f"logs/serve_reference/{MODEL}.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench serve-reference --model-dir {params.model_dir:q}"
        " --card {input.card:q} --traffic {input.traffic:q} --out {output.npz:q}"
        " --threads {params.threads} > {log:q} 2>&1"


# Same device slot and cores as a bench job: a serving job is a timed CPU/GPU run, so
# nothing else of the workflow runs beside it.
rule serve:
    input:
        unpack(serve_inputs),
    output:
        result=f"{SERVE_RESULT}.json",
        loadgen=directory(f"{SERVE_RESULT}.loadgen"),
    wildcard_constraints:
        scenario="|".join(ib_serve.SCENARIOS),
        padding="|".join(ib_serve.PADDINGS),
    params:
        settings=serve_settings,
        model_dir=rules.prepare_model.output.model_dir,
        onnx=optional_arg("--onnx", "onnx"),
        build=optional_arg("--build", "build"),
    threads: bench_threads
    resources:
        **target_resources(),
    conda:
        CONDA_ENV
    log:
        "logs/serve/{target}_{model}_{backend}_{scenario}-{padding}.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench serve --settings {params.settings:q}"
        " --model-dir {params.model_dir:q} --card {input.card:q} --traffic {input.traffic:q}"
        " --reference {input.reference:q} {params.onnx} {params.build}"
        " --log-dir {output.loadgen:q} --model {wildcards.model} --target {wildcards.target}"
        " --out {output.result:q} > {log:q} 2>&1"


rule serve_report:
    input:
        results=serving_results() + foreign_serving_results(),
        bench=ranking_bench_results(),
        code=report_code("serve.report", "results"),
    output:
        table=f"{RESULTS}/serving_table.md",
        csv=f"{RESULTS}/serving.csv",
        findings=f"{RESULTS}/serving_observations.md",
        latency=report(
            f"{RESULTS}/plots/serving_latency_vs_qps.png",
            caption="../report/serving_latency_vs_qps.rst",
            category="Serving",
        ),
        bars=report(
            f"{RESULTS}/plots/serving_max_qps.png",
            caption="../report/serving_max_qps.rst",
            category="Serving",
        ),
    params:
        context=json.dumps(
            {
                "prices": target_prices(),
                "latency_target_ms": config["scenarios"].get("latency_target_ms"),
                "latency_percentile": config["scenarios"].get("latency_percentile"),
                "ranking_batch": RANKING_BATCH,
            },
            sort_keys=True,
        ),
        plots_dir=lambda wildcards, output: os.path.dirname(output.latency),
    conda:
        CONDA_ENV
    log:
        "logs/serve_report/serve_report.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench serve-report --results {input.results:q}"
        " --bench {input.bench:q} --context {params.context:q} --table {output.table:q}"
        " --csv {output.csv:q} --findings {output.findings:q}"
        " --plots-dir {params.plots_dir:q} > {log:q} 2>&1"
