rule onnx_export:
    input:
        card=rules.prepare_model.output.card,
        inputs=rules.make_inputs.output.npz.format(model=MODEL, batch=min(BATCHES)),
        reference=rules.reference.output.npz.format(model=MODEL, batch=min(BATCHES)),
    output:
        onnx=onnx_path("plain"),
        manifest=onnx_path("plain") + ".json",
    params:
        model_dir=rules.prepare_model.output.model_dir,
        export=json.dumps(config["export"], sort_keys=True),
    conda:
        CONDA_ENV
    log:
        f"logs/onnx_export/{MODEL}.log",
    benchmark:
        f"logs/onnx_export/{MODEL}.benchmark.tsv"
    shell:
        "\"$IB_PYTHON\" -m inferbench export --model-dir {params.model_dir:q} --card {input.card:q}"
        " --inputs {input.inputs:q} --reference {input.reference:q} --export {params.export:q}"
        " --out {output.onnx:q} > {log:q} 2>&1"


# Graphs made from another read it as ancient(): a newer timestamp alone (the source
# graph truncated or edited in place) does not remake them, so good derived graphs
# stay; the rows that read the damaged graph say how to rebuild it, and a rebuilt
# source (its job rerun) still remakes everything made from it.
rule onnx_optimize:
    input:
        onnx=ancient(rules.onnx_export.output.onnx),
        card=rules.prepare_model.output.card,
    output:
        onnx=onnx_path("fused"),
        manifest=onnx_path("fused") + ".json",
    params:
        opt_level=config["export"]["optimizer_opt_level"],
    conda:
        CONDA_ENV
    log:
        f"logs/onnx_optimize/{MODEL}.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench optimize --input {input.onnx:q} --card {input.card:q}"
        " --opt-level {params.opt_level} --out {output.onnx:q} > {log:q} 2>&1"


rule onnx_fp16:
    input:
        onnx=ancient(rules.onnx_export.output.onnx),
        card=rules.prepare_model.output.card,
    output:
        onnx=onnx_path("fused-fp16"),
        manifest=onnx_path("fused-fp16") + ".json",
    params:
        opt_level=config["export"]["optimizer_opt_level"],
    conda:
        CONDA_ENV
    log:
        f"logs/onnx_fp16/{MODEL}.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench optimize --fp16 --input {input.onnx:q} --card {input.card:q}"
        " --opt-level {params.opt_level} --out {output.onnx:q} > {log:q} 2>&1"


# A fused graph made with transformer-optimizer choices beyond the defaults (an `ort`
# backend's fast_gelu / raw_attention_mask options): fused[-fp16]-<tuning>.onnx.
rule onnx_optimize_tuned:
    input:
        onnx=ancient(rules.onnx_export.output.onnx),
        card=rules.prepare_model.output.card,
    output:
        onnx=f"{RESULTS}/onnx/{{model}}/{{base}}-{{tuning}}.onnx",
        manifest=f"{RESULTS}/onnx/{{model}}/{{base}}-{{tuning}}.onnx.json",
    wildcard_constraints:
        base="fused|fused-fp16",
        tuning=TUNING_PATTERN,
    params:
        opt_level=config["export"]["optimizer_opt_level"],
        fp16=lambda wildcards: "--fp16" if wildcards.base == "fused-fp16" else "",
    conda:
        CONDA_ENV
    log:
        "logs/onnx_optimize_tuned/{model}_{base}-{tuning}.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench optimize {params.fp16} --tuning {wildcards.tuning}"
        " --input {input.onnx:q} --card {input.card:q} --opt-level {params.opt_level}"
        " --out {output.onnx:q} > {log:q} 2>&1"


rule onnx_quantize:
    input:
        onnx=ancient(f"{RESULTS}/onnx/{{model}}/{{graph}}.onnx"),
    output:
        onnx=f"{RESULTS}/onnx/{{model}}/{{graph}}-int8.onnx",
        manifest=f"{RESULTS}/onnx/{{model}}/{{graph}}-int8.onnx.json",
    wildcard_constraints:
        graph="plain|fused",
    conda:
        CONDA_ENV
    log:
        "logs/onnx_quantize/{model}_{graph}.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench quantize --input {input.onnx:q} --out {output.onnx:q}"
        " > {log:q} 2>&1"
