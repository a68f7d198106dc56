# One job per backend x batch size. The bench_slot resource (limit 1, set in
# profiles/default and by `all` users' --resources) keeps benchmarks from sharing a
# device whatever --cores says; preparation and builds still run in parallel.
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
    threads: config["threads"]
    resources:
        bench_slot=1,
    log:
        "logs/bench/{target}_{model}_{backend}_bs{batch}.log",
    shell:
        "python -m inferbench bench --settings {params.settings:q}"
        " --model-dir {params.model_dir:q} --card {input.card:q} --inputs {input.inputs:q}"
        " --reference {input.reference:q} {params.onnx} {params.build}"
        " --batch {wildcards.batch} --model {wildcards.model} --target {wildcards.target}"
        " --out {output.result:q} > {log:q} 2>&1"
