"""Command-line entry points the Snakemake rules call (``python -m inferbench ...``).

Heavy imports (torch, onnxruntime) happen inside the sub-commands, after thread
settings are in the environment.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

# The standard library only: `bench` and `serve` start a worker per launch and must
# stay cheap (see inferbench.measure.launches); sub-commands import what they use.
from inferbench.measure.launches import set_thread_env


def _path_or_none(value: str | None) -> Path | None:
    return Path(value) if value else None


def cmd_prepare_model(args: argparse.Namespace) -> None:
    from inferbench.prepare.model import ModelSourceError, prepare_model

    model = json.loads(args.model)
    try:
        prepare_model(model, Path(args.out_dir), Path(args.card))
    except (ModelSourceError, KeyboardInterrupt):
        raise
    except Exception as exc:
        # e.g. a model type transformers has no class of this task for: one line, the
        # refusal, with what to change
        first = (str(exc).strip().splitlines() or [""])[0][:400]
        raise ModelSourceError(
            f"the model could not be prepared for task {model.get('task')!r}: "
            f"{type(exc).__name__}: {first}. Check model.task (sequence-classification or "
            "feature-extraction) and the model's config.json") from exc


def cmd_inputs(args: argparse.Namespace) -> None:
    """Inputs of one batch size; a failure is recorded in the outputs (prepare.failures)."""
    from inferbench.io import atomic_write_json
    from inferbench.prepare.failures import run_stage, write_failed_npz
    from inferbench.prepare.model import build_inputs, read_json

    out = Path(args.out)

    def record(reason: str, trace: str) -> None:
        write_failed_npz(out, reason)
        atomic_write_json(out.with_suffix(".json"), {"status": "error", "reason": reason,
                                                     "batch": args.batch, "traceback": trace})

    run_stage("inputs", lambda: build_inputs(
        Path(args.model_dir), read_json(Path(args.card)), args.seq_len, args.batch,
        _path_or_none(args.sentences), args.seed, out), record)


def cmd_reference(args: argparse.Namespace) -> None:
    set_thread_env(args.threads)
    from inferbench.prepare.failures import npz_failure, run_stage, write_failed_npz
    from inferbench.prepare.model import compute_reference, read_json

    out = Path(args.out)
    upstream = npz_failure(Path(args.inputs))
    if upstream:
        write_failed_npz(out, upstream)
        return
    run_stage("reference", lambda: compute_reference(
        Path(args.model_dir), read_json(Path(args.card)), Path(args.inputs), out,
        args.threads), lambda reason, _: write_failed_npz(out, reason))


def cmd_export(args: argparse.Namespace) -> None:
    import numpy as np

    from inferbench.prepare.failures import npz_failure, write_failed_onnx
    from inferbench.prepare.model import load_inputs, read_json
    from inferbench.prepare.onnx import export_onnx

    upstream = npz_failure(Path(args.inputs)) or npz_failure(Path(args.reference))
    if upstream:  # nothing to check the graph against: the rows say why
        write_failed_onnx(Path(args.out), f"no ONNX export: {upstream}", "plain")
        return
    with np.load(args.reference) as ref:
        reference = ref["output"]
    export = json.loads(args.export)
    export_onnx(Path(args.model_dir), read_json(Path(args.card)), Path(args.out),
                opset=export["opset"], attn_implementation=export["attn_implementation"],
                exporter=export["exporter"], check_inputs=load_inputs(Path(args.inputs)),
                check_reference=reference,
                dynamic_sequence=bool(export.get("dynamic_sequence", False)))


def _derive_onnx(make: Callable[[], object], out: Path, variant: str, command: str) -> None:
    """Make a graph from another; when that one is corrupt, write a failure record so
    that the rows of this graph say so (and the summary is rebuilt from current rows)."""
    from inferbench.io import CorruptArtifactError
    from inferbench.prepare.failures import write_failed_onnx

    try:
        make()
    except CorruptArtifactError as exc:
        write_failed_onnx(out, f"corrupt artifact: {exc}", variant)
        print(f"inferbench {command}: error (recorded for the benchmark rows): corrupt "
              f"artifact: {exc}", file=sys.stderr)


def cmd_optimize(args: argparse.Namespace) -> None:
    from inferbench.prepare.model import read_json
    from inferbench.prepare.onnx import optimize_onnx, parse_tuning, tuned_variant

    tuning = parse_tuning(args.tuning or "")
    _derive_onnx(lambda: optimize_onnx(Path(args.input), Path(args.out),
                                       read_json(Path(args.card)), args.opt_level,
                                       float16=args.fp16, tuning=tuning),
                 Path(args.out), tuned_variant("fused-fp16" if args.fp16 else "fused", tuning),
                 "optimize")


def cmd_quantize(args: argparse.Namespace) -> None:
    from inferbench.prepare.onnx import quantize_onnx

    _derive_onnx(lambda: quantize_onnx(Path(args.input), Path(args.out)), Path(args.out),
                 f"{Path(args.input).stem}-int8", "quantize")


def cmd_quantize_static(args: argparse.Namespace) -> None:
    from inferbench.prepare.calibration import quantize_static_onnx

    manifest = quantize_static_onnx(Path(args.input), Path(args.out), Path(args.calibration),
                                    json.loads(args.settings), args.format, args.activations)
    print(f"inferbench quantize-static: {manifest['variant']}: {manifest['status']} "
          f"{manifest.get('reason', '')}")


def _job_args(args: argparse.Namespace) -> list[str]:
    return [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
            if k not in ("func",) and v is not None]


def _run_in_worker(worker: str, args: argparse.Namespace, out: Path,
                   extra: list[str] | None = None) -> str | None:
    """Run ``inferbench <worker>`` with the same arguments in a child process.

    Returns None when the worker wrote ``out``, else how it died. The parent blocks
    in waitpid (no busy-waiting on a core the benchmark needs). An interrupted
    worker (the user or the scheduler) leaves nothing, so the job reruns.
    """
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", "inferbench", worker, *_job_args(args), *(extra or [])]
    completed = subprocess.run(command, check=False)
    if completed.returncode == 0 and out.is_file():
        return None
    if completed.returncode in (-signal.SIGINT, -signal.SIGTERM, 130, 143):
        raise SystemExit(completed.returncode)
    return (f"signal {signal.Signals(-completed.returncode).name}" if completed.returncode < 0
            else f"exit code {completed.returncode}")


def _crash_hint(settings: dict) -> str:
    """"; <what is known>" about the backend's crashes, or ""."""
    from inferbench.backends import registry

    try:
        hint = registry.get(settings["backend"]["kind"]).crash_hint()
    except Exception:
        return ""
    return f"; {hint}" if hint else ""


def cmd_bench(args: argparse.Namespace) -> None:
    """Benchmark launches, each a fresh process; a record is left even if one crashes.
    With ``--launch K`` (the workflow's job) one launch, written to ``--out`` as its raw
    record; it is skipped, repeating the outcome, when ``--previous`` (launch K-1's
    record) was unavailable or failed. Without it, every launch of the row and their
    combination. This process imports no runtime, and with ``--launch`` nothing beyond
    the standard library."""
    from inferbench.io import atomic_write_json
    from inferbench.measure.launches import launch_record, repeatable, skipped_record

    settings = json.loads(args.settings)

    def launch(index: int, path: Path) -> str | None:
        launch_args = argparse.Namespace(**{**vars(args), "out": str(path), "launch": None,
                                            "previous": None})
        how = _run_in_worker("bench-launch", launch_args, path)
        # the hint imports every backend module: only for a worker that died
        return None if how is None else how + _crash_hint(settings)

    out = Path(args.out)
    if args.launch is None:
        from inferbench.measure.harness import run_job

        run_job(settings, args.batch, args.model, args.target, out, launch)
        return
    if args.previous:
        previous = json.loads(Path(args.previous).read_text())
        if not repeatable(previous):
            atomic_write_json(out, skipped_record(previous, args.launch))
            return
    worker_out = out.parent / f".{out.name}.worker.json"
    record = launch_record(launch, args.launch, worker_out)
    worker_out.unlink(missing_ok=True)
    atomic_write_json(out, record)


def cmd_bench_combine(args: argparse.Namespace) -> None:
    """One row's result from its launches' records."""
    from inferbench.measure.harness import combine_job

    records = [json.loads(Path(path).read_text()) for path in args.launches]
    records.sort(key=lambda r: r.get("launch", 0))
    combine_job(json.loads(args.settings), args.batch, args.model, args.target, records,
                Path(args.out))


def cmd_bench_launch(args: argparse.Namespace) -> None:
    settings = json.loads(args.settings)
    set_thread_env(int(settings["threads"]))
    from inferbench.measure.harness import JobPaths, measure_launch, write_launch

    paths = JobPaths(model_dir=Path(args.model_dir), card=Path(args.card),
                     inputs=Path(args.inputs), reference=Path(args.reference),
                     onnx=_path_or_none(args.onnx), build_manifest=_path_or_none(args.build))
    write_launch(Path(args.out), measure_launch(settings, args.batch, paths))


def cmd_build(args: argparse.Namespace) -> None:
    """One engine build; a crashed build (seen: AOTInductor's loader segfaulting)
    still leaves an error manifest, so its benchmark rows say why."""
    from inferbench.io import atomic_write_json

    out = Path(args.out)
    how = _run_in_worker("build-worker", args, out)
    if how is None:
        return
    settings = json.loads(args.settings)
    spec = settings["backend"]
    atomic_write_json(out, {"backend": spec["name"], "kind": spec["kind"], "status": "error",
                            "reason": f"build worker died ({how}); a crash in the compiler "
                            "or runtime" + _crash_hint(settings),
                            "batch_sizes": json.loads(args.batch_sizes)})


def cmd_build_worker(args: argparse.Namespace) -> None:
    settings = json.loads(args.settings)
    set_thread_env(int(settings["threads"]))
    from inferbench.prepare.engines import build_engine

    build_engine(settings, json.loads(args.batch_sizes), Path(args.model_dir), Path(args.card),
                 _path_or_none(args.onnx), Path(args.out),
                 calibration=_path_or_none(args.calibration))


def cmd_aggregate(args: argparse.Namespace) -> None:
    from inferbench.prepare.model import read_json
    from inferbench.report.table import aggregate

    context = {**json.loads(args.context), "card": read_json(Path(args.card))}
    aggregate([Path(p) for p in args.results], context, Path(args.csv), Path(args.table),
              Path(args.plots_dir), accuracy_paths=[Path(p) for p in args.accuracy or []],
              serving_csv=_path_or_none(args.serving))


def cmd_upgrade_results(args: argparse.Namespace) -> None:
    """Rewrite result files of an older schema version in place, through the model."""
    from inferbench.results import SCHEMA_VERSION, load_result, write_result

    upgraded = 0
    for path in sorted(Path(args.folder).rglob("bs*.json")):
        if path.name.startswith("."):
            continue
        before = json.loads(path.read_text()).get("schema_version")
        if before == SCHEMA_VERSION:
            continue
        write_result(path, load_result(path))
        upgraded += 1
    print(f"inferbench upgrade-results: {upgraded} file(s) upgraded to schema {SCHEMA_VERSION}")


def cmd_backends(_: argparse.Namespace) -> None:
    from inferbench.backends import registry

    for kind in sorted(registry.kinds()):
        cls = registry.get(kind)
        print(f"{kind:22s} devices={','.join(sorted(cls.devices)):9s} "
              f"precisions={','.join(sorted(cls.precisions))}")


def _refuse_unknown(args: argparse.Namespace, known: list[str]) -> None:
    """Exit 2 naming the choices if a backend asked for is not one of ``known``."""
    unknown = sorted(set(args.backends) - set(known))
    if unknown:
        print(f"unknown backend(s) {unknown}; in {' + '.join(args.config)}: {', '.join(known)}",
              file=sys.stderr)
        raise SystemExit(2)


def cmd_bench_targets(args: argparse.Namespace) -> None:
    """Result paths of some backends' benchmark jobs, one a line: Snakemake targets
    for running part of a sweep (scripts/device_session.sh ONLY=...)."""
    from inferbench.config import backend_batch_sizes, load_config, target_names

    config = load_config(*args.config)
    _refuse_unknown(args, [entry["name"] for entry in config["backends"]])
    results = args.results_dir or config["results_dir"]
    for target in target_names(config):
        for name in args.backends:
            for batch in backend_batch_sizes(config, name):
                print(f"{results}/bench/{target}/{config['model']['name']}/{name}/bs{batch}.json")


def cmd_serve_targets(args: argparse.Namespace) -> None:
    """Result paths of some backends' serving jobs (every scenario and padding the
    config runs), one a line (scripts/device_session.sh SERVE_ONLY=...)."""
    from inferbench.config import load_config, target_names
    from inferbench.serve import settings as serve_settings

    config = load_config(*args.config)
    if not serve_settings.enabled(config):
        print(f"{' + '.join(args.config)}: no serving scenario to run (scenarios.run is empty)",
              file=sys.stderr)
        raise SystemExit(2)
    _refuse_unknown(args, serve_settings.served_backends(config))
    results = args.results_dir or config["results_dir"]
    scenarios = config["scenarios"]
    for target, name, scenario, padding in itertools.product(
            target_names(config), args.backends, scenarios["run"], scenarios["padding"]):
        path = serve_settings.RESULT.format(target=target, model=config["model"]["name"],
                                            backend=name, scenario=scenario, padding=padding)
        print(f"{results}/{path}.json")


def cmd_check_config(args: argparse.Namespace) -> None:
    from inferbench.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"{args.config}: valid")
    model = config["model"]
    # Not a config error: the folder need only exist where the prepare_model job runs
    # (Snakemake's --directory, a cluster node), which need not be here.
    if model["source"] == "local" and not Path(model["path"]).is_dir():
        print(f"note: model.path {model['path']!r} is not a folder here ({Path.cwd()}); "
              "the prepare_model job fails unless it is one where that job runs",
              file=sys.stderr)


# -- report stage: accuracy, plots, findings, environment, HTML views ----------------

def cmd_accuracy(args: argparse.Namespace) -> None:
    settings = json.loads(args.settings)
    set_thread_env(int(settings["threads"]))
    from inferbench.io import atomic_write_json
    from inferbench.measure.accuracy import evaluate
    from inferbench.prepare.model import read_json

    result = evaluate(settings, args.batch, Path(args.model_dir), read_json(Path(args.card)),
                      Path(args.dataset), args.model, args.target, onnx=_path_or_none(args.onnx),
                      build_manifest=_path_or_none(args.build),
                      max_examples=args.max_examples or None)
    atomic_write_json(Path(args.out), result)
    print(f"{result['backend']}: {result['status']} {result.get('accuracy', '')} "
          f"{result.get('reason', '')}")


def cmd_plot(args: argparse.Namespace) -> None:
    from inferbench.report.plots import draw

    draw(args.kind, [Path(p) for p in args.results], json.loads(args.context), Path(args.out))


def cmd_findings(args: argparse.Namespace) -> None:
    from inferbench.report.findings import summary_counts, write_observations

    found = write_observations([Path(p) for p in args.results], json.loads(args.context),
                               Path(args.out), [Path(p) for p in args.accuracy or []])
    print(f"{len(found)} statements; supported per topic: {summary_counts(found)}")
    if args.html:
        from inferbench.report.documents import render_file

        render_file(Path(args.out), Path(args.html), "inferbench observations")


def cmd_environment(args: argparse.Namespace) -> None:
    from inferbench.report.documents import write_environment

    write_environment([Path(p) for p in args.results], json.loads(args.config), Path(args.out))
    if args.html:
        from inferbench.report.documents import render_file

        render_file(Path(args.out), Path(args.html), "inferbench environment")


def cmd_render_html(args: argparse.Namespace) -> None:
    from inferbench.report.documents import render_file

    render_file(Path(args.input), Path(args.out), args.title)


def add_report_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("accuracy", help="accuracy of one backend on a labelled TSV")
    for arg in ("settings", "model-dir", "card", "dataset", "out", "model", "target"):
        p.add_argument(f"--{arg}", required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--max-examples", type=int, default=0, help="0: every example")
    p.add_argument("--onnx")
    p.add_argument("--build")
    p.set_defaults(func=cmd_accuracy)

    p = sub.add_parser("plot", help="one report plot from result JSON files")
    p.add_argument("--kind", choices=("speedup", "distributions", "targets"), required=True)
    p.add_argument("--results", nargs="+", required=True)
    p.add_argument("--context", required=True, help="JSON: baseline, prices, resamples, ...")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("findings", help="observations.md from the results")
    p.add_argument("--results", nargs="+", required=True)
    p.add_argument("--accuracy", nargs="*", default=[], help="accuracy JSON files")
    p.add_argument("--context", required=True, help="JSON: baseline, prices, resamples, ...")
    p.add_argument("--out", required=True)
    p.add_argument("--html", help="also write an HTML view here")
    p.set_defaults(func=cmd_findings)

    p = sub.add_parser("environment", help="fingerprints per target and the config (Markdown)")
    p.add_argument("--results", nargs="+", required=True)
    p.add_argument("--config", required=True, help="the effective config as JSON")
    p.add_argument("--out", required=True)
    p.add_argument("--html", help="also write an HTML view here")
    p.set_defaults(func=cmd_environment)

    p = sub.add_parser("render-html", help="HTML view of a Markdown file for the report")
    p.add_argument("--input", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--title", required=True)
    p.set_defaults(func=cmd_render_html)


# -- comparing runs and machines --------------------------------------------------------

def _prices(values: list[str]) -> dict[str, float]:
    prices = {}
    for value in values:
        target, _, price = value.partition("=")
        try:
            prices[target] = float(price)
        except ValueError:
            print(f"inferbench compare-machines: --price {value!r}: expected "
                  "TARGET=USD_PER_HOUR, e.g. h100=2.5", file=sys.stderr)
            raise SystemExit(2) from None
    return prices


def cmd_compare(args: argparse.Namespace) -> None:
    """Exit 0: no regression beyond the gate; 1: a regression; 2: inputs that cannot be
    compared (one line saying which and why)."""
    from inferbench.report.compare import EXIT_BAD_INPUT, CompareError, run_compare

    out = Path(args.out) if args.out else None
    plot = Path(args.plot) if args.plot else (out.with_suffix(".png") if out else None)
    try:
        _, lines, code = run_compare(
            Path(args.baseline), [Path(p) for p in args.current], out, plot,
            noise_band_pct=args.noise_band, fail_on_regression=args.fail_on_regression,
            resamples=args.resamples, gate_pct=args.mark_regressions)
    except CompareError as exc:
        print(f"inferbench compare: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    print("\n".join(lines))
    raise SystemExit(code)


def cmd_compare_machines(args: argparse.Namespace) -> None:
    from inferbench.report.compare import EXIT_BAD_INPUT, CompareError
    from inferbench.report.machines import run_machine_comparison

    context = json.loads(args.context) if args.context else {}
    prices = {**(context.get("prices") or {}), **_prices(args.price)}
    resamples = int(context.get("resamples") or args.resamples)
    try:
        comparison = run_machine_comparison(
            [Path(p) for p in args.folders], Path(args.out),
            Path(args.plot) if args.plot else None, prices, args.reference, resamples)
    except CompareError as exc:
        print(f"inferbench compare-machines: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    others = [t for t in comparison.targets if t != comparison.reference]
    print(f"machines: reference {comparison.reference}, compared {', '.join(others) or 'none'}; "
          f"{len(comparison.rows)} backend rows, "
          f"{len(comparison.best)} fastest-per-batch rows; report: {args.out}")


def add_compare_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="compare two results folders (regressions, noise)")
    p.add_argument("baseline", help="results folder: results/bench/<target>, results/, "
                   "docs/results/h100, ...")
    p.add_argument("current", nargs="+", help="results folder compared with the baseline "
                   "(or several result files: what the workflow passes)")
    p.add_argument("--out", help="Markdown report (default: print only)")
    p.add_argument("--plot", help="forest plot PNG (default: the report's name with .png)")
    p.add_argument("--noise-band", type=float, default=2.0, metavar="PCT",
                   help="an interval wholly inside ±PCT%% of 1 is within noise (default 2)")
    p.add_argument("--fail-on-regression", type=float, metavar="PCT",
                   help="exit 1 when a row's whole 95%% interval is more than PCT%% slower")
    p.add_argument("--mark-regressions", type=float, metavar="PCT",
                   help="mark such rows in the report and plot without failing")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("compare-machines", help="targets side by side: p50, throughput, "
                       "speedup between machines, cost")
    p.add_argument("folders", nargs="+", help="result folders or files (one or more targets)")
    p.add_argument("--out", required=True, help="Markdown report")
    p.add_argument("--plot", help="PNG of the speedups between targets")
    p.add_argument("--reference", help="target the others are compared with "
                   "(default: the target of the first folder's first result)")
    p.add_argument("--price", action="append", default=[], metavar="TARGET=USD_PER_HOUR",
                   help="price of a target's machine, for cost per million inferences")
    p.add_argument("--context", help="JSON with prices (what the workflow passes)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    p.set_defaults(func=cmd_compare_machines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inferbench", description=__doc__)
    sub = parser.add_subparsers(required=True)

    p = sub.add_parser("prepare-model", help="save_pretrained directory + card")
    p.add_argument("--model", required=True, help="model config as JSON")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--card", required=True)
    p.set_defaults(func=cmd_prepare_model)

    p = sub.add_parser("inputs", help="deterministic inputs for one batch size")
    for name in ("model-dir", "card", "out"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--seq-len", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sentences")
    p.set_defaults(func=cmd_inputs)

    p = sub.add_parser("reference", help="FP32 eager reference output")
    for name in ("model-dir", "card", "inputs", "out"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_reference)

    p = sub.add_parser("export", help="ONNX export, checked against the reference")
    for name in ("model-dir", "card", "inputs", "reference", "out", "export"):
        p.add_argument(f"--{name}", required=True)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("optimize", help="ONNX Runtime transformer optimizer")
    for name in ("input", "out", "card"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--opt-level", type=int, default=1)
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--tuning", default="",
                   help="optimizer choices beyond the defaults, e.g. fastgelu-rawmask")
    p.set_defaults(func=cmd_optimize)

    p = sub.add_parser("quantize", help="ONNX Runtime dynamic INT8 quantization")
    p.add_argument("--input", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("quantize-static", help="ONNX Runtime static INT8, calibrated")
    for name in ("input", "out", "calibration", "settings"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--format", choices=("qdq", "qoperator"), default="qdq")
    p.add_argument("--activations", choices=("u8", "s8"), default="u8")
    p.set_defaults(func=cmd_quantize_static)

    for name, func in (("bench", cmd_bench), ("bench-launch", cmd_bench_launch)):
        p = sub.add_parser(name, help="one benchmark job" if name == "bench" else argparse.SUPPRESS)
        for arg in ("settings", "model-dir", "card", "inputs", "reference", "out", "model",
                    "target"):
            p.add_argument(f"--{arg}", required=True)
        p.add_argument("--batch", type=int, required=True)
        p.add_argument("--onnx")
        p.add_argument("--build")
        if name == "bench":
            p.add_argument("--launch", type=int,
                           help="run only this launch (0-based), writing its record to --out")
            p.add_argument("--previous", help="the record of the launch before it")
        p.set_defaults(func=func)

    p = sub.add_parser("bench-combine", help="one row's result from its launches' records")
    for arg in ("settings", "model", "target", "out"):
        p.add_argument(f"--{arg}", required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--launches", nargs="+", required=True)
    p.set_defaults(func=cmd_bench_combine)

    for name, func in (("build", cmd_build), ("build-worker", cmd_build_worker)):
        p = sub.add_parser(name, help="backend engine build (TensorRT, AOTInductor, ...)"
                           if name == "build" else argparse.SUPPRESS)
        for arg in ("settings", "batch-sizes", "model-dir", "card", "out"):
            p.add_argument(f"--{arg}", required=True)
        p.add_argument("--onnx")
        p.add_argument("--calibration", help="calibration inputs (static INT8 builds)")
        p.set_defaults(func=func)

    p = sub.add_parser("aggregate", help="summary table, CSV and plots")
    p.add_argument("--results", nargs="+", required=True)
    p.add_argument("--context", required=True, help="JSON: config facts")
    p.add_argument("--card", required=True, help="model card JSON")
    p.add_argument("--csv", required=True)
    p.add_argument("--table", required=True)
    p.add_argument("--plots-dir", required=True)
    p.add_argument("--accuracy", nargs="*", default=[], help="accuracy JSON files")
    p.add_argument("--serving", help="serving.csv whose rows join the summary CSV")
    p.set_defaults(func=cmd_aggregate)

    p = sub.add_parser("upgrade-results", help="rewrite older result files to this schema")
    p.add_argument("folder")
    p.set_defaults(func=cmd_upgrade_results)

    p = sub.add_parser("backends", help="list backend kinds")
    p.set_defaults(func=cmd_backends)

    p = sub.add_parser("check-config", help="validate a config file")
    p.add_argument("config")
    p.set_defaults(func=cmd_check_config)

    for name, func, what in (("bench-targets", cmd_bench_targets, "benchmark"),
                             ("serve-targets", cmd_serve_targets, "serving")):
        p = sub.add_parser(name, help=f"result paths of some backends' {what} jobs")
        p.add_argument("--config", required=True, action="append",
                       help="a config file; a later --config updates the earlier ones")
        p.add_argument("--results-dir", default="")
        p.add_argument("backends", nargs="+")
        p.set_defaults(func=func)
    add_report_commands(sub)
    add_compare_commands(sub)
    from inferbench.serve.cli import add_serve_commands

    add_serve_commands(sub)
    return parser


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors whose message says what is wrong and how to fix it: no traceback."""
    from inferbench.config import ConfigError
    from inferbench.io import CorruptArtifactError
    from inferbench.prepare.failures import StageFailed
    from inferbench.prepare.model import ModelSourceError
    from inferbench.prepare.onnx import ExportError
    from inferbench.results import ResultFormatError

    return (ConfigError, CorruptArtifactError, ExportError, ModelSourceError, ResultFormatError,
            StageFailed)


# Commands whose process loads a runtime and the model, writes its output and has
# nothing left to do. Tearing the interpreter down after them (freeing thousands of
# modules: torch, transformers, sympy) took 0.9-1.4 s of every torch benchmark launch,
# more than its whole latency pass at batch 1; they leave at once instead. Not the
# engine builds: a compiler's worker pools (Inductor's) are shut down at exit.
EXIT_AT_ONCE = frozenset({"bench-launch", "serve-worker", "reference", "serve-reference",
                          "accuracy", "prepare-model", "export"})


def _exit_at_once() -> NoReturn:
    """Exit 0 without the interpreter's teardown, once every output is written and
    closed: what Python, its logging and C libraries (stdio) still buffer is flushed."""
    import ctypes
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)
    os._exit(0)


def main(argv: list[str] | None = None, exit_when_done: bool = False) -> None:
    """Run one command. ``exit_when_done`` (``python -m inferbench``, how the workflow
    runs every command) lets the commands of EXIT_AT_ONCE end the process when they
    succeed; in-process callers (tests) leave it off."""
    args = build_parser().parse_args(argv)
    command = args.func.__name__.removeprefix("cmd_").replace("_", "-")
    try:
        args.func(args)
    except _user_errors() as exc:
        print(f"inferbench {command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        # Ctrl-C reaches every process of the job: one line each, not a traceback of
        # wherever the runtime happened to be. Outputs are written atomically, so an
        # interrupted job left none, and the next run redoes it.
        print(f"inferbench {command}: interrupted; nothing written, the job reruns",
              file=sys.stderr)
        raise SystemExit(130) from None
    if exit_when_done and command in EXIT_AT_ONCE:
        _exit_at_once()


if __name__ == "__main__":
    main()
