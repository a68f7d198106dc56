# Static INT8 models calibrated on the workflow's own inputs: the input set of batch
# size `calibration.samples` (make_inputs: the sentences through the tokenizer where
# there is one, else seeded synthetic ids). Changing `calibration:` reruns these
# models and what reads them, nothing else.


# ONNX Runtime static INT8 of the plain or fused graph: QDQ or QOperator format, U8 or
# S8 activations, per-channel INT8 weights. A failing quantizer leaves an error
# manifest (and an empty model) so its rows are error rows with the quantizer's message.
rule onnx_quantize_static:
    input:
        onnx=f"{RESULTS}/onnx/{{model}}/{{graph}}.onnx",
        calibration=calibration_npz(),
    output:
        onnx=f"{RESULTS}/onnx/{{model}}/{{graph}}-int8-static-{{qformat}}-{{activations}}.onnx",
        manifest=f"{RESULTS}/onnx/{{model}}/{{graph}}-int8-static-{{qformat}}-{{activations}}.onnx.json",
    wildcard_constraints:
        graph="plain|fused",
        qformat="qdq|qoperator",
        activations="u8|s8",
    params:
        settings=json.dumps(config["calibration"], sort_keys=True),
    threads: config["threads"]
    conda:
        CONDA_ENV
    log:
        "logs/onnx_quantize_static/{model}_{graph}-{qformat}-{activations}.log",
    benchmark:
        "logs/onnx_quantize_static/{model}_{graph}-{qformat}-{activations}.benchmark.tsv"
    shell:
        "\"$IB_PYTHON\" -m inferbench quantize-static --input {input.onnx:q}"
        " --calibration {input.calibration:q} --settings {params.settings:q}"
        " --format {wildcards.qformat} --activations {wildcards.activations}"
        " --out {output.onnx:q} > {log:q} 2>&1"
