rule prepare_model:
    output:
        model_dir=directory(f"{RESULTS}/models/{MODEL}/hf"),
        card=f"{RESULTS}/models/{MODEL}/card.json",
    params:
        model=json.dumps(config["model"], sort_keys=True),
    conda:
        CONDA_ENV
    log:
        f"logs/prepare_model/{MODEL}.log",
    benchmark:
        f"logs/prepare_model/{MODEL}.benchmark.tsv"
    shell:
        "\"$IB_PYTHON\" -m inferbench prepare-model --model {params.model:q}"
        " --out-dir {output.model_dir:q} --card {output.card:q} > {log:q} 2>&1"


rule make_inputs:
    input:
        card=rules.prepare_model.output.card,
        sentences=config.get("sentences", []),
    output:
        npz=f"{RESULTS}/inputs/{{model}}/seq{config['seq_len']}_bs{{batch}}.npz",
        meta=f"{RESULTS}/inputs/{{model}}/seq{config['seq_len']}_bs{{batch}}.json",
    params:
        model_dir=rules.prepare_model.output.model_dir,
        seq_len=config["seq_len"],
        seed=config["model"]["seed"],
        sentences=lambda wildcards, input: (
            f"--sentences {shlex.quote(str(input.sentences))}" if input.sentences else ""
        ),
    conda:
        CONDA_ENV
    log:
        "logs/make_inputs/{model}_bs{batch}.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench inputs --model-dir {params.model_dir:q} --card {input.card:q}"
        " --seq-len {params.seq_len} --batch {wildcards.batch} --seed {params.seed}"
        " {params.sentences} --out {output.npz:q} > {log:q} 2>&1"


rule reference:
    input:
        card=rules.prepare_model.output.card,
        npz=rules.make_inputs.output.npz,
    output:
        npz=f"{RESULTS}/reference/{{model}}/seq{config['seq_len']}_bs{{batch}}.npz",
    params:
        model_dir=rules.prepare_model.output.model_dir,
        threads=config["threads"],
    threads: config["threads"]
    conda:
        CONDA_ENV
    log:
        "logs/reference/{model}_bs{batch}.log",
    shell:
        "\"$IB_PYTHON\" -m inferbench reference --model-dir {params.model_dir:q} --card {input.card:q}"
        " --inputs {input.npz:q} --out {output.npz:q} --threads {params.threads}"
        " > {log:q} 2>&1"
