# Accuracy of one backend on accuracy.dataset (GLUE SST-2 dev TSV), on one target.
# Only requested when accuracy.dataset is set (see accuracy_results in common.smk);
# the job itself records a skip when the model card has random weights or no
# tokenizer. It shares the target's device slot with the benchmarks, so it never
# runs beside a timed job.
rule accuracy:
    input:
        unpack(accuracy_inputs),
    output:
        result=f"{RESULTS}/accuracy/{{target}}/{{model}}/{{backend}}.json",
    params:
        settings=job_settings,
        model_dir=rules.prepare_model.output.model_dir,
        batch=max(BATCHES),
        max_examples=config["accuracy"].get("max_examples") or 0,
        onnx=optional_arg("--onnx", "onnx"),
        build=optional_arg("--build", "build"),
    threads: config["threads"]
    resources:
        **target_resources(),
    conda:
        CONDA_ENV
    log:
        "logs/accuracy/{target}_{model}_{backend}.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench accuracy --settings {params.settings:q}"
        " --model-dir {params.model_dir:q} --card {input.card:q} --dataset {input.dataset:q}"
        " --batch {params.batch} --max-examples {params.max_examples} {params.onnx}"
        " {params.build} --model {wildcards.model} --target {wildcards.target}"
        " --out {output.result:q} > {log:q} 2>&1"
