# Serving scenarios (config `scenarios:`): traffic with real request lengths, its FP32
# reference, one LoadGen job per target x backend x scenario x padding strategy, and
# the serving table. The input and param functions of this stage live here, not in
# common.smk, to keep that file about the benchmark sweep.
from inferbench.serve import settings as ib_serve  # noqa: E402  (light: no runtime, no LoadGen)

SERVE_PACKAGE = PACKAGE / "serve"
SERVE_TRAFFIC = f"{RESULTS}/traffic/{MODEL}/seq{config['seq_len']}.npz"
SERVE_REFERENCE = f"{RESULTS}/reference/{MODEL}/traffic_seq{config['seq_len']}.npz"
SERVE_RESULT = f"{RESULTS}/serve/{{target}}/{{model}}/{{backend}}/{{scenario}}-{{padding}}"
SERVE_TEXT = ib_serve.traffic_file(config) if ib_serve.enabled(config) else None
SERVE_TRAFFIC_SETTINGS = json.dumps(ib_serve.traffic_settings(config), sort_keys=True)
# The batch whose latency ranking the serving ranking is compared with.
RANKING_BATCH = 16 if 16 in BATCHES else max(BATCHES)


def serving_results():
    if not ib_serve.enabled(config):
        return []
    return expand(
        f"{SERVE_RESULT}.json",
        target=TARGETS,
        model=MODEL,
        backend=ib_serve.served_backends(config),
        scenario=config["scenarios"]["run"],
        padding=config["scenarios"]["padding"],
    )


def _serving_files(folder):
    """{(target, backend, file name): path} of the serving results in one target's folder."""
    name = re.compile(
        f"({'|'.join(ib_serve.SCENARIOS)})-({'|'.join(ib_serve.PADDINGS)})\\.json")
    return {
        (Path(folder).name, p.parts[-2], p.name): str(p)
        for p in Path(folder).glob(f"{MODEL}/*/*.json")
        if name.fullmatch(p.name)
    }


def foreign_serving_results():
    """Serving results of other targets, merged without being rerun: those in
    `include_results` folders (beside their bench rows, e.g. docs/results/h100), then
    those copied into results/serve/<target>/, as foreign_results does for bench rows."""
    found = {}
    for folder in config["include_results"]:
        if Path(folder).is_dir():
            found.update(_serving_files(folder))
    root = Path(RESULTS) / "serve"
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        found.update(_serving_files(folder))
    return sorted(path for key, path in found.items() if key[0] not in TARGETS)


def serving_summary_csv():
    return [rules.serve_report.output.csv] if ib_serve.enabled(config) else []


def serving_outputs():
    if not ib_serve.enabled(config):
        return []
    return [
        rules.serve_report.output.table,
        rules.serve_report.output.csv,
        rules.serve_report.output.findings,
        rules.serve_report.output.latency,
        rules.serve_report.output.bars,
    ]


def serve_inputs(wildcards):
    """The traffic, its reference, the backend's artifacts and the code that runs."""
    inputs = {
        "card": rules.prepare_model.output.card,
        "traffic": SERVE_TRAFFIC,
        "reference": SERVE_REFERENCE,
        "code": backend_code(wildcards)
        + [str(SERVE_PACKAGE / f"{m}.py") for m in ("job", "sut", "batcher", "search", "traffic")],
    }
    variant = onnx_variant(wildcards.backend)
    if variant:
        inputs["onnx"] = onnx_path(variant)
    if needs_build(wildcards.backend):
        inputs["build"] = rules.build_engine.output.manifest.format(**wildcards)
    return inputs


def serve_settings(wildcards):
    return json.dumps(
        ib_serve.serve_settings(config, wildcards.backend, wildcards.scenario, wildcards.padding),
        sort_keys=True,
    )


def ranking_bench_results():
    """Bench rows at RANKING_BATCH: the served backends' on this run's targets, and
    those merged from other targets."""
    own = [
        path
        for path in bench_results()
        if path.endswith(f"/bs{RANKING_BATCH}.json")
        and Path(path).parent.name in ib_serve.served_backends(config)
    ]
    foreign = [p for p in foreign_results() if p.endswith(f"/bs{RANKING_BATCH}.json")]
    return own + foreign


rule serve_traffic:
    input:
        card=rules.prepare_model.output.card,
        text=SERVE_TEXT or [],
    output:
        npz=SERVE_TRAFFIC,
        meta=SERVE_TRAFFIC.replace(".npz", ".json"),
    params:
        settings=SERVE_TRAFFIC_SETTINGS,
        model_dir=rules.prepare_model.output.model_dir,
        text=lambda wildcards, input: (
            f"--text {shlex.quote(str(input.text))}" if input.text else ""
        ),
    conda:
        CONDA_ENV
    log:
        f"logs/serve_traffic/{MODEL}.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench serve-traffic --model-dir {params.model_dir:q}"
        " --card {input.card:q} --settings {params.settings:q} {params.text}"
        " --out {output.npz:q} > {log:q} 2>&1"


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
