# Config validation, wildcard constraints, and every input/param function.
import json
import os
import sys
from pathlib import Path

from snakemake.utils import validate

# The package lives in src/; jobs run `python -m inferbench` with the Python that
# runs Snakemake (or the conda env's, which conda puts first on PATH).
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))
os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])

from inferbench import config as ib_config  # noqa: E402  (light: no torch, no onnxruntime)
from inferbench.backends import registry as ib_registry  # noqa: E402
from inferbench.onnx_tools import VARIANTS  # noqa: E402


validate(config, schema="../schemas/config.schema.yaml")
try:
    config = ib_config.validate_config(config)
except ib_config.ConfigError as exc:
    raise WorkflowError(f"Invalid config: {exc}") from None

RESULTS = config["results_dir"]
MODEL = config["model"]["name"]
TARGET = config["target"]
BACKENDS = {spec.name: spec for spec in ib_config.backend_specs(config)}
BATCHES = config["batch_sizes"]
PACKAGE = Path(SRC) / "inferbench"


wildcard_constraints:
    model="[A-Za-z0-9._-]+",
    target="[A-Za-z0-9._-]+",
    backend="|".join(sorted(BACKENDS)),
    batch=r"\d+",
    variant="|".join(VARIANTS),


def backend_class(name):
    return ib_registry.get(BACKENDS[name].kind)


def backend_code(wildcards):
    """The backend's own module (and its base class): editing it reruns its jobs only."""
    cls = backend_class(wildcards.backend)
    files = {Path(sys.modules[c.__module__].__file__) for c in cls.__mro__
             if c.__module__.startswith("inferbench.backends")}
    return sorted(str(f) for f in files)


def needs_build(name):
    return "build" in backend_class(name).needs


def onnx_variant(name):
    return backend_class(name).onnx_variant(BACKENDS[name])


def bench_inputs(wildcards):
    inputs = {
        "card": rules.prepare_model.output.card,
        "inputs": rules.make_inputs.output.npz.format(**wildcards),
        "reference": rules.reference.output.npz.format(**wildcards),
        "code": backend_code(wildcards),
    }
    variant = onnx_variant(wildcards.backend)
    if variant:
        inputs["onnx"] = onnx_path(variant)
    if needs_build(wildcards.backend):
        inputs["build"] = rules.build_engine.output.manifest.format(**wildcards)
    return inputs


def onnx_path(variant):
    return f"{RESULTS}/onnx/{MODEL}/{variant}.onnx"


def optional_arg(flag, key):
    """Shell argument for an optional named input (empty when the job has none)."""

    def render(wildcards, input):
        return f"{flag} {input[key]}" if key in input.keys() else ""

    return render


def job_settings(wildcards):
    return json.dumps(ib_config.job_settings(config, wildcards.backend), sort_keys=True)


def bench_results():
    return expand(
        f"{RESULTS}/bench/{{target}}/{{model}}/{{backend}}/bs{{batch}}.json",
        target=TARGET,
        model=MODEL,
        backend=sorted(BACKENDS),
        batch=BATCHES,
    )


def foreign_results():
    """Results measured on other targets and copied into results/bench/ (not rerun)."""
    root = Path(RESULTS) / "bench"
    if not root.is_dir():
        return []
    return sorted(
        str(p)
        for p in root.glob(f"*/{MODEL}/*/bs*.json")
        if p.parts[-4] != TARGET and not p.name.startswith(".")
    )


def aggregate_context():
    return json.dumps(
        {
            "seq_len": config["seq_len"],
            "threads": config["threads"],
            "baseline": config["report"]["baseline"],
            "model": config["model"],
        },
        sort_keys=True,
    )


def all_outputs():
    return [
        f"{RESULTS}/summary_table.md",
        f"{RESULTS}/summary.csv",
        f"{RESULTS}/plots/latency_vs_batch.png",
        f"{RESULTS}/plots/throughput_vs_batch.png",
    ]
