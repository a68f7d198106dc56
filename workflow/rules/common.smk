# Config validation, wildcard constraints, and the input/param functions of the
# sweep (model, ONNX, builds, benchmarks); the report and serving stages have theirs
# in report_common.smk and serve_common.smk.
import json
import os
import re
import shlex
import sys
from pathlib import Path

from snakemake.resources import Resources
from snakemake.utils import validate

from snakemake.settings.types import DeploymentMethod

# The package lives in src/. Jobs run it with the Python that runs Snakemake, or
# with the conda env's Python under --software-deployment-method conda.
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
USE_CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
PYTHON = "python" if USE_CONDA else sys.executable
from inferbench import config as ib_config  # noqa: E402  (light: no torch, no onnxruntime)
from inferbench import foreign as ib_foreign  # noqa: E402
from inferbench import recovery as ib_recovery  # noqa: E402
from inferbench.backends import registry as ib_registry  # noqa: E402
from inferbench.prepare.onnx import OPTIMIZER_TUNINGS, VARIANTS  # noqa: E402

# The command that reruns this workflow on this config (cores, Snakefile, folder, the
# user's --configfile), for the hints jobs print, e.g. how to rebuild a corrupted file.
try:
    _CORES = workflow.cores
except WorkflowError:  # --unlock, --lint: no --cores given
    _CORES = None
RERUN = shlex.join(ib_recovery.rerun_command(
    _CORES, Path(workflow.main_snakefile), Path.cwd(),
    workflow.overwrite_configfiles, workflow.config_settings.config_args or [], sys.argv))
# Shell variables (not params), so neither the interpreter path nor the rerun command
# ever reruns a job.
shell.prefix(
    f"export PYTHONPATH={shlex.quote(SRC)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
    f"IB_PYTHON={shlex.quote(PYTHON)}; "
    f"export {ib_recovery.RERUN_ENV}={shlex.quote(RERUN)}; "
)
# A lock left by a Snakemake killed with SIGKILL: say what to type (parse time, so it
# comes before Snakemake's LockException).
if not (workflow.remote_exec or workflow.subprocess_exec):
    _lock_hint = ib_recovery.stale_lock_hint(Path.cwd(), sys.argv)
    if _lock_hint:
        print(_lock_hint, file=sys.stderr)


# inferbench's checks first: one line that names the key and the allowed values
# (Snakemake's validate prints the whole schema and instance instead). Snakemake's
# validate then checks the same schema and cannot fail; it stays as the catalog's
# habit and for tools that look for it.
try:
    _checked = ib_config.validate_config(config)
except ib_config.ConfigError as exc:
    raise WorkflowError(f"Invalid config: {exc}") from None
validate(config, schema="../schemas/config.schema.yaml")
config = _checked

RESULTS = config["results_dir"]
CONDA_ENV = str(Path(workflow.basedir) / "envs" / f"inferbench-{config['conda_env']}.yaml")
MODEL = config["model"]["name"]
TARGETS = ib_config.target_names(config)
BACKENDS = {spec.name: spec for spec in ib_config.backend_specs(config)}
BATCHES = config["batch_sizes"]
PACKAGE = Path(SRC) / "inferbench"
# Optimizer tuning tokens, sorted and joined by "-" (see onnx_tools.tuned_variant).
_TOKENS = "|".join(sorted(OPTIMIZER_TUNINGS))
TUNING_PATTERN = f"({_TOKENS})(-({_TOKENS}))*"


wildcard_constraints:
    model="[A-Za-z0-9._-]+",
    # only the targets this run measures: results/bench/<other target>/ are inputs
    # of the summary, never jobs (copied or committed results are not rerun)
    target="|".join(re.escape(t) for t in TARGETS),
    backend="|".join(sorted(BACKENDS)),
    batch=r"\d+",
    launch=r"\d+",
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


def launch_path(wildcards, launch):
    return (f"{RESULTS}/launches/{wildcards.target}/{wildcards.model}/{wildcards.backend}/"
            f"bs{wildcards.batch}-{launch}.json")


def bench_launch_inputs(wildcards):
    """A launch's inputs: the row's, and the launch before it (launches run in order)."""
    inputs = bench_inputs(wildcards)
    launch = int(wildcards.launch)
    if launch > 0:
        inputs["previous"] = launch_path(wildcards, launch - 1)
    return inputs


def launch_records(wildcards):
    """Every launch record of one row (`measurement.repeats` of them)."""
    repeats = int(ib_config.job_settings(config, wildcards.backend)["measurement"]["repeats"])
    return [launch_path(wildcards, launch) for launch in range(repeats)]


def launch_priority(wildcards):
    """Rounds: the scheduler starts every ready row's launch K before any launch K+1."""
    return -int(wildcards.launch)


def onnx_path(variant):
    return f"{RESULTS}/onnx/{MODEL}/{variant}.onnx"


def optional_arg(flag, key):
    """Shell argument for an optional named input (empty when the job has none)."""

    def render(wildcards, input):
        # quoted like {x:q}: results_dir may hold spaces or shell metacharacters
        return f"{flag} {shlex.quote(str(input[key]))}" if key in input.keys() else ""

    return render


def bench_threads(wildcards):
    """A benchmark job takes every core Snakemake may use, so that no other job of the
    workflow (an export, an engine build, another benchmark) runs beside it whatever
    --cores says: CPU rows time the cores themselves, GPU rows' latency view times the
    host. Its runtimes still get `threads` intra-op threads (job_settings)."""
    threads = config["threads"]
    if workflow.local_exec:
        return max(threads, workflow.cores or threads)
    return threads


def job_settings(wildcards):
    return json.dumps(ib_config.job_settings(config, wildcards.backend), sort_keys=True)


def build_settings(wildcards):
    return json.dumps(ib_config.build_settings(config, wildcards.backend), sort_keys=True)


def backend_batches(name):
    """The batch sizes of one backend (its own `batch_sizes`, else the sweep's)."""
    return ib_config.backend_batch_sizes(config, name)


def bench_results():
    return [
        path
        for name in sorted(BACKENDS)
        for path in expand(
            f"{RESULTS}/bench/{{target}}/{{model}}/{{backend}}/bs{{batch}}.json",
            target=TARGETS,
            model=MODEL,
            backend=name,
            batch=backend_batches(name),
        )
    ]


def _foreign_files():
    """{(target, backend, file): path} of the results measured on other targets."""
    included = []
    for folder in config["include_results"]:
        if not Path(folder).is_dir():
            print(f"inferbench: include_results folder {folder} is missing; skipped",
                  file=sys.stderr)
            continue
        included.append(Path(folder))
    root = Path(RESULTS) / "bench"
    copied = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    return ib_foreign.pick_foreign(included, copied, MODEL, TARGETS)


FOREIGN = _foreign_files()


def foreign_results():
    """Results measured on other targets, merged without being rerun.

    Those copied into results/bench/<target>/, then those in `include_results`
    folders (e.g. the committed docs/results/h100), a copy in results/bench/ winning
    over an included one, except that an `unavailable` row (a machine that could not
    measure it) never hides a measured one (inferbench.foreign). Targets this run
    measures are never read from either.
    """
    return [str(path) for path in FOREIGN.values()]


def row_sources():
    """{target: {folder: rows}} for the summary header: where each target's rows are from."""
    own = {t: {f"{RESULTS}/bench/{t} (this run)": sum(
        len(backend_batches(name)) for name in BACKENDS)} for t in TARGETS}
    return {**own, **ib_foreign.source_counts(FOREIGN)}


# Per-target executor resources and device slots, for build_engine and bench. A
# rule's resource names are fixed, so each name any target of this run sets becomes
# a function of the job's {target}; a target that leaves it unset gets the
# default-resources value (profile or --default-resources). Each target also gets a
# slot resource of its own, registered with limit `bench_slot` (default 1): the jobs
# of one target never run at once, jobs of different targets do. Custom resources
# are global in Snakemake's scheduler, so this holds locally and with
# --executor slurm alike (the main process counts them before it submits a job).
for _target in TARGETS:
    if ib_config.slot_resource(_target) not in workflow.global_resources:
        workflow.register_resource(
            ib_config.slot_resource(_target),
            workflow.global_resources.get("bench_slot").value or 1,
        )


def _target_resource(key):
    def value(wildcards, input, threads, attempt):
        own = ib_config.target_resources(config, wildcards.target)
        if key in own:
            return own[key]
        defaults = workflow.resource_settings.default_resources or {}
        default = Resources.from_mapping(defaults).get(key)
        return default.evaluate(wildcards, input=input, threads=threads,
                                attempt=attempt).value

    return value


def _target_slot(target):
    return lambda wildcards: int(wildcards.target == target)


def target_resources():
    """`resources:` of the per-target rules (use as `resources: **target_resources()`)."""
    keys = {key for t in TARGETS for key in ib_config.target_resources(config, t)}
    return {
        **{key: _target_resource(key) for key in sorted(keys)},
        **{ib_config.slot_resource(t): _target_slot(t) for t in TARGETS},
    }


def all_outputs():
    return [
        f"{RESULTS}/summary_table.md",
        f"{RESULTS}/summary.csv",
        f"{RESULTS}/plots/latency_vs_batch.png",
        f"{RESULTS}/plots/throughput_vs_batch.png",
        *report_outputs(),
        *compare_outputs(),
    ]


# -- calibration of the static INT8 models (workflow/rules/calibration.smk, build.smk) --


def calibration_npz():
    return rules.make_inputs.output.npz.format(
        model=MODEL, batch=ib_config.calibration_samples(config)
    )


def calibrated(name):
    """Whether a backend's build calibrates (OpenVINO INT8, torchao PT2E)."""
    return backend_class(name).calibrated(BACKENDS[name])


def build_calibration(wildcards):
    return {"calibration": calibration_npz()} if calibrated(wildcards.backend) else {}


# A run that stopped with failed jobs may have rewritten rows without reaching the
# summary: the old summary would then show rows that no longer hold, so it goes
# (the next run that gets that far rebuilds it).
onerror:
    _stale = ib_recovery.stale_summary(
        Path(f"{RESULTS}/summary.csv"), [Path(p) for p in bench_results()]
    )
    if _stale:
        for _path in (f"{RESULTS}/summary.csv", f"{RESULTS}/summary_table.md"):
            Path(_path).unlink(missing_ok=True)
        print(
            f"inferbench: removed {RESULTS}/summary_table.md and summary.csv: {_stale}; "
            "the summary is rebuilt once the failed jobs succeed",
            file=sys.stderr,
        )
