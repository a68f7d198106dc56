# Engine builds (TensorRT engines, ONNX Runtime TensorRT EP caches, AOTInductor
# packages) run per target: an engine is only valid on the machine it was built for.
rule build_engine:
    input:
        unpack(
            lambda wc: {
                "card": rules.prepare_model.output.card,
                "code": backend_code(wc),
                **(
                    {"onnx": onnx_path(onnx_variant(wc.backend))}
                    if onnx_variant(wc.backend)
                    else {}
                ),
                **build_calibration(wc),
            }
        ),
    output:
        manifest=f"{RESULTS}/engines/{{target}}/{{model}}/{{backend}}/build.json",
    params:
        settings=build_settings,
        batch_sizes=lambda wc: json.dumps(backend_batches(wc.backend)),
        model_dir=rules.prepare_model.output.model_dir,
        onnx=optional_arg("--onnx", "onnx"),
        calibration=optional_arg("--calibration", "calibration"),
    resources:
        **target_resources(),
    conda:
        CONDA_ENV
    log:
        "logs/build_engine/{target}_{model}_{backend}.log",
    benchmark:
        "logs/build_engine/{target}_{model}_{backend}.benchmark.tsv"
    shell:
        "\"$IB_PYTHON\" -m inferbench build --settings {params.settings:q}"
        " --batch-sizes {params.batch_sizes:q} --model-dir {params.model_dir:q}"
        " --card {input.card:q} {params.onnx} {params.calibration} --out {output.manifest:q} > {log:q} 2>&1"
