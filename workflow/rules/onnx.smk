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


# A graph made from another depends on that graph's manifest (its sha256, checked by
# the job before it reads the graph), not on the graph file: a graph damaged in place
# (truncated, edited) then remakes, and so first deletes, none of the good graphs made
# from it; the rows that read the damaged graph say how to rebuild it. A rebuilt graph
# rewrites its manifest, which remakes everything made from it.
rule onnx_optimize:
    input:
        source=rules.onnx_export.output.manifest,
        card=rules.prepare_model.output.card,
    output:
        onnx=onnx_path("fused"),
        manifest=onnx_path("fused") + ".json",
    params:
        onnx=lambda wildcards, input: input.source.removesuffix(".json"),
        opt_level=config["export"]["optimizer_opt_level"],
    conda:
        CONDA_ENV
    log:
        f"logs/onnx_optimize/{MODEL}.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench optimize --input {params.onnx:q} --card {input.card:q}"
        " --opt-level {params.opt_level} --out {output.onnx:q} > {log:q} 2>&1"


rule onnx_fp16:
    input:
        source=rules.onnx_export.output.manifest,
        card=rules.prepare_model.output.card,
    output:
        onnx=onnx_path("fused-fp16"),
        manifest=onnx_path("fused-fp16") + ".json",
    params:
        onnx=lambda wildcards, input: input.source.removesuffix(".json"),
        opt_level=config["export"]["optimizer_opt_level"],
    conda:
        CONDA_ENV
    log:
        f"logs/onnx_fp16/{MODEL}.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench optimize --fp16 --input {params.onnx:q} --card {input.card:q}"
        " --opt-level {params.opt_level} --out {output.onnx:q} > {log:q} 2>&1"


# A fused graph made with transformer-optimizer choices beyond the defaults (an `ort`
# backend's fast_gelu / raw_attention_mask options): fused[-fp16]-<tuning>.onnx.
rule onnx_optimize_tuned:
    input:
        source=rules.onnx_export.output.manifest,
        card=rules.prepare_model.output.card,
    output:
        onnx=f"{RESULTS}/onnx/{{model}}/{{base}}-{{tuning}}.onnx",
        manifest=f"{RESULTS}/onnx/{{model}}/{{base}}-{{tuning}}.onnx.json",
    wildcard_constraints:
        base="fused|fused-fp16",
        tuning=TUNING_PATTERN,
    params:
        onnx=lambda wildcards, input: input.source.removesuffix(".json"),
        opt_level=config["export"]["optimizer_opt_level"],
        fp16=lambda wildcards: "--fp16" if wildcards.base == "fused-fp16" else "",
    conda:
        CONDA_ENV
    log:
        "logs/onnx_optimize_tuned/{model}_{base}-{tuning}.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench optimize {params.fp16} --tuning {wildcards.tuning}"
        " --input {params.onnx:q} --card {input.card:q} --opt-level {params.opt_level}"
        " --out {output.onnx:q} > {log:q} 2>&1"


rule onnx_quantize:
    input:
        source=f"{RESULTS}/onnx/{{model}}/{{graph}}.onnx.json",
    output:
        onnx=f"{RESULTS}/onnx/{{model}}/{{graph}}-int8.onnx",
        manifest=f"{RESULTS}/onnx/{{model}}/{{graph}}-int8.onnx.json",
    wildcard_constraints:
        graph="plain|fused",
    params:
        onnx=lambda wildcards, input: input.source.removesuffix(".json"),
    conda:
        CONDA_ENV
    log:
        "logs/onnx_quantize/{model}_{graph}.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench quantize --input {params.onnx:q} --out {output.onnx:q}"
        " > {log:q} 2>&1"
