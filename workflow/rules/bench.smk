# One job per launch: target x backend x batch size x launch. Each target's slot
# resource (limit bench_slot, default 1; see target_resources in common.smk) keeps its
# benchmarks and engine builds from sharing a device whatever --cores or --jobs say. A
# CPU benchmark also takes every core (bench_threads), so nothing else of the workflow
# runs beside it on this machine. Launches run in rounds (launch_priority): every
# row's first launch before any second one, so a row's launches are spread over the
# run and its interval sees the machine's drift over that time. Launch K waits for
# launch K-1 and is skipped when that one was unavailable or failed.
rule bench:
    input:
        unpack(bench_launch_inputs),
    output:
        # temporary: the row keeps every launch's raw samples, and a row forced to
        # rerun (--forcerun <row>.json) then measures its launches again
        record=temp(
            f"{RESULTS}/launches/{{target}}/{{model}}/{{backend}}/bs{{batch}}-{{launch}}.json"
        ),
    params:
        settings=job_settings,
        model_dir=rules.prepare_model.output.model_dir,
        onnx=optional_arg("--onnx", "onnx"),
        build=optional_arg("--build", "build"),
        previous=optional_arg("--previous", "previous"),
    threads: bench_threads
    resources:
        **target_resources(),
    priority: launch_priority
    conda:
        CONDA_ENV
    log:
        "logs/bench/{target}_{model}_{backend}_bs{batch}-{launch}.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench bench --settings {params.settings:q}"
        " --model-dir {params.model_dir:q} --card {input.card:q} --inputs {input.inputs:q}"
        " --reference {input.reference:q} {params.onnx} {params.build} {params.previous}"
        " --batch {wildcards.batch} --model {wildcards.model} --target {wildcards.target}"
        " --launch {wildcards.launch} --out {output.record:q} > {log:q} 2>&1"


# One row: its launches' raw records combined (hierarchical intervals, status).
rule bench_row:
    localrule: True
    input:
        launches=launch_records,
    output:
        result=f"{RESULTS}/bench/{{target}}/{{model}}/{{backend}}/bs{{batch}}.json",
    params:
        settings=job_settings,
    conda:
        CONDA_ENV
    log:
        "logs/bench/{target}_{model}_{backend}_bs{batch}.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench bench-combine --settings {params.settings:q}"
        " --launches {input.launches:q} --batch {wildcards.batch} --model {wildcards.model}"
        " --target {wildcards.target} --out {output.result:q} > {log:q} 2>&1"
