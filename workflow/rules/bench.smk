# One job per target x backend x batch size, with the target's executor resources.
# Each target's slot resource (limit bench_slot, default 1; see target_resources in
# common.smk) keeps its benchmarks and engine builds from sharing a device whatever
# --cores or --jobs say. A CPU benchmark also takes every core (bench_threads), so
# nothing else of the workflow runs beside it on this machine.
rule bench:
    input:
        unpack(bench_inputs),
    output:
        result=f"{RESULTS}/bench/{{target}}/{{model}}/{{backend}}/bs{{batch}}.json",
    params:
        settings=job_settings,
        model_dir=rules.prepare_model.output.model_dir,
        onnx=optional_arg("--onnx", "onnx"),
        build=optional_arg("--build", "build"),
    threads: bench_threads
    resources:
        **target_resources(),
    conda:
        CONDA_ENV
    log:
        "logs/bench/{target}_{model}_{backend}_bs{batch}.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench bench --settings {params.settings:q}"
        " --model-dir {params.model_dir:q} --card {input.card:q} --inputs {input.inputs:q}"
        " --reference {input.reference:q} {params.onnx} {params.build}"
        " --batch {wildcards.batch} --model {wildcards.model} --target {wildcards.target}"
        " --out {output.result:q} > {log:q} 2>&1"
