# Input and param functions of the serving stage (workflow/rules/serve.smk), kept out
# of common.smk, which is about the benchmark sweep.
from inferbench.serve import settings as ib_serve  # noqa: E402  (light: no runtime, no LoadGen)
from inferbench.serve import tokenizer as ib_tokenizer  # noqa: E402  (light: no transformers)

SERVE_PACKAGE = PACKAGE / "serve"
SERVE_TRAFFIC = f"{RESULTS}/traffic/{MODEL}/seq{config['seq_len']}.npz"
SERVE_REFERENCE = f"{RESULTS}/reference/{MODEL}/traffic_seq{config['seq_len']}.npz"
SERVE_RESULT = f"{RESULTS}/{ib_serve.RESULT}"
SERVE_TEXT = ib_serve.traffic_file(config) if ib_serve.enabled(config) else None
SERVE_TRAFFIC_SETTINGS = json.dumps(ib_serve.traffic_settings(config), sort_keys=True)
# scenarios.traffic.tokenizer (package:<name> or a folder), saved by rule traffic_tokenizer
# into SERVE_TOKENIZER_DIR; None when the traffic reads no text file or names none.
SERVE_TOKENIZER = ib_serve.traffic_tokenizer(config)
SERVE_TOKENIZER_DIR = f"{RESULTS}/tokenizers/{{tokenizer}}"
# The batch whose latency ranking the serving ranking is compared with.
RANKING_BATCH = 16 if 16 in BATCHES else max(BATCHES)


def traffic_tokenizer_dir():
    """The saved tokenizer the traffic reads, or nothing."""
    if SERVE_TOKENIZER is None:
        return []
    return SERVE_TOKENIZER_DIR.format(tokenizer=ib_tokenizer.tokenizer_name(SERVE_TOKENIZER))


def traffic_tokenizer_name_pattern():
    """Only the configured tokenizer's folder: another name has no source to save."""
    if SERVE_TOKENIZER is None:
        return "(?!)"
    return re.escape(ib_tokenizer.tokenizer_name(SERVE_TOKENIZER))


def traffic_tokenizer_inputs(wildcards):
    """A folder source's tokenizer files (editing one saves it again) and the code."""
    return {
        "files": ib_tokenizer.source_files(SERVE_TOKENIZER) if SERVE_TOKENIZER else [],
        "code": report_code("serve.tokenizer"),
    }


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
        if Path(path).name == f"bs{RANKING_BATCH}.json"
        and Path(path).parent.name in ib_serve.served_backends(config)
    ]
    foreign = [p for p in foreign_results() if Path(p).name == f"bs{RANKING_BATCH}.json"]
    return own + foreign
