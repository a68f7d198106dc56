# Input and param functions of the summary and report stages: aggregation
# (workflow/rules/aggregate.smk), accuracy (accuracy.smk), plots, findings and
# documents (report.smk), and comparing runs and machines (compare.smk). Kept out of
# common.smk, which is about the benchmark sweep.


def aggregate_context():
    return json.dumps(
        {
            "seq_len": config["seq_len"],
            "threads": config["threads"],
            "baseline": config["report"]["baseline"],
            "model": config["model"],
            "expect": ib_config.target_expectations(config),
            "prices": target_prices(),
            "accuracy": {"dataset": accuracy_dataset()},
            "configfiles": [str(f) for f in workflow.overwrite_configfiles]
            or ["config/config.yaml"],
            "sentences": bool(config.get("sentences")),
            "sources": row_sources(),
        },
        sort_keys=True,
    )


def aggregate_code():
    """The modules the summary runs: editing one reruns the aggregation."""
    return report_code("results", "report.table", "report.rows")


def accuracy_dataset():
    return config["accuracy"].get("dataset")


def accuracy_results():
    """One accuracy JSON per target and backend, when accuracy.dataset is set."""
    if not accuracy_dataset():
        return []
    return expand(
        f"{RESULTS}/accuracy/{{target}}/{{model}}/{{backend}}.json",
        target=TARGETS,
        model=MODEL,
        backend=sorted(BACKENDS),
    )


def accuracy_inputs(wildcards):
    inputs = {
        "card": rules.prepare_model.output.card,
        "dataset": accuracy_dataset(),
        "code": backend_code(wildcards) + [str(PACKAGE / "measure" / "accuracy.py")],
    }
    variant = onnx_variant(wildcards.backend)
    if variant:
        inputs["onnx"] = onnx_path(variant)
    if needs_build(wildcards.backend):
        inputs["build"] = rules.build_engine.output.manifest.format(**wildcards)
    return inputs


def target_prices():
    """Target name -> price per hour, for the targets whose price is configured."""
    return {
        name: entry["price_per_hour"]
        for name, entry in config["targets"].items()
        if entry.get("price_per_hour") is not None
    }


def report_context(*keys):
    """JSON of the named report settings: each plot gets only what it uses, so that
    changing, say, a price reruns the cost plot and the findings, nothing else."""
    facts = {
        "baseline": config["report"]["baseline"],
        "distribution_batch": config["report"].get("distribution_batch"),
        "resamples": config["measurement"]["bootstrap_resamples"],
        "seed": 0,
        "prices": target_prices(),
    }
    return json.dumps({key: facts[key] for key in keys}, sort_keys=True)


def report_code(*modules):
    """Package modules a report rule runs; editing one reruns the rule."""
    return [str(PACKAGE.joinpath(*name.split(".")).with_suffix(".py")) for name in modules]


def report_outputs():
    return [
        rules.plot_speedup.output.png,
        rules.plot_distributions.output.png,
        rules.plot_targets.output.png,
        rules.findings.output.md,
        rules.findings.output.html,
        rules.environment.output.html,
        rules.summary_html.output.html,
    ]


# -- comparing runs and machines (workflow/rules/compare.smk) -------------------------

COMPARE = config.get("compare") or {}


def compare_baseline_files():
    """The baseline run's result files (none when no baseline is configured)."""
    from inferbench.report.compare import result_files

    baseline = COMPARE.get("baseline")
    return [str(p) for p in result_files(Path(baseline))] if baseline else []


def compare_outputs():
    outputs = [rules.machine_comparison.output.md, rules.machine_comparison.output.png]
    if COMPARE.get("baseline"):
        outputs += [rules.compare_runs.output.md, rules.compare_runs.output.png]
    return outputs


