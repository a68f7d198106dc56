#!/usr/bin/env python
"""Harness fidelity: does the workflow's gpu_compute p50 match an independent loop?

Loads each backend through the registry exactly as the benchmark job does (same
config, same artifacts from the workflow's results folder), puts the inputs on the
device once, then times N calls of ``backend.run`` with its own CUDA events on the
stream the backend launches on, with none of inferbench.measure: a spin kernel
(``torch.cuda._sleep``) queued ahead of each call so the host enqueues the whole call
before the device reaches it, as trtexec's GPU compute time does. Its p50 is
compared with the `gpu_compute` p50 of the workflow's result for the same backend
and batch. It also prints the p50 without the spin (host launch gaps included).

Each backend is checked in a fresh process of its own, as each benchmark job runs:
in one process, torch-eager ran 85% slower after an Inductor model with CUDA-graph
trees had been loaded before it, which says nothing about either harness.

Run it on the GPU machine after the sweep, for example:

    python scripts/harness_fidelity.py --config config/gpu.yaml --backend all --batch 1,16

Exit status: 0 when every checked p50 pair differs by at most --tolerance (default
3%), 1 when one differs by more, 2 when nothing could be checked.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def fail(message: str) -> None:
    print(f"harness_fidelity: {message}", file=sys.stderr)
    raise SystemExit(2)


def independent_p50(backend: object, prepared: object, stream: object, iterations: int,
                    warmup: int, hold_ms: float | None) -> float:
    import torch

    run = backend.run  # type: ignore[attr-defined]
    for _ in range(warmup):
        run(prepared)
    torch.cuda.synchronize()
    cycles = 0
    if hold_ms is not None:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.cuda._sleep(10_000_000)
        end.record()
        end.synchronize()
        cycles = int(hold_ms * 10_000_000 / start.elapsed_time(end))
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    times_ms = []
    for _ in range(iterations):
        if cycles:
            with torch.cuda.stream(stream):
                torch.cuda._sleep(cycles)
        start.record(stream)
        run(prepared)
        end.record(stream)
        end.synchronize()
        times_ms.append(start.elapsed_time(end))
        torch.cuda.synchronize()
    return statistics.median(times_ms)


def check(config: dict, name: str, batch: int, results: Path, args: argparse.Namespace
          ) -> tuple[str, float | None, float | None, float | None]:
    """(verdict, workflow p50, independent p50, independent p50 without the spin)."""
    import torch

    from inferbench.backends import registry
    from inferbench.backends.base import Artifacts
    from inferbench.config import backend_spec
    from inferbench.prepare.model import load_inputs, read_json
    from inferbench.results import load_result

    spec = backend_spec(config, name)
    model, target, seq = config["model"]["name"], config["target"], config["seq_len"]
    result_path = results / "bench" / target / model / name / f"bs{batch}.json"
    if not result_path.is_file():
        return f"skip: no workflow result at {result_path}", None, None, None
    result = load_result(result_path)
    stats = result.view("gpu_compute").stats
    if result.status not in ("ok", "contended") or stats is None:
        return f"skip: workflow row is {result.status} ({result.reason[:80]})", None, None, None
    backend = registry.get(spec.kind)(spec, int(config["threads"]))
    availability = backend.availability()
    if not availability.ok:
        return f"skip: unavailable ({availability.reason})", stats.p50, None, None
    model_dir = results / "models" / model / "hf"
    card = read_json(results / "models" / model / "card.json")
    variant = backend.onnx_variant(spec)
    onnx = results / "onnx" / model / f"{variant}.onnx" if variant else None
    build_manifest: dict = {}
    build_dir = None
    if "build" in backend.needs:
        manifest_path = results / "engines" / target / model / name / "build.json"
        build_manifest = read_json(manifest_path)
        build_dir = manifest_path.parent
    artifacts = Artifacts(model_dir=model_dir, card=card, onnx=onnx, build=build_dir,
                          build_manifest=build_manifest)
    host_inputs = load_inputs(results / "inputs" / model / f"seq{seq}_bs{batch}.npz")
    backend.load(artifacts)
    prepared = backend.prepare_inputs(host_inputs)  # inputs now live on the device
    backend.synchronize()
    # The stream the backend launches on: its own where it has one (ONNX Runtime and
    # TensorRT run on a dedicated stream), else torch's current stream.
    stream = getattr(backend, "stream", None) or torch.cuda.current_stream()
    hold = min(max(0.5, 1.5 * result.view("latency").stats.p50), 50.0)  # type: ignore[union-attr]
    held = independent_p50(backend, prepared, stream, args.iterations, args.warmup, hold)
    bare = independent_p50(backend, prepared, stream, args.iterations // 4, 5, None)
    launch_p50s = [statistics.median(s) for s in result.view("gpu_compute").samples if s]
    del backend
    torch.cuda.empty_cache()
    return verdict(stats.p50, held, launch_p50s, args.tolerance), stats.p50, held, bare


def verdict(workflow_p50: float, independent_p50: float, launch_p50s: list[float],
            tolerance: float) -> str:
    """PASS or FAIL by the relative difference of the two p50s; a FAIL also gives the
    spread of the workflow's own launches (fresh processes), and says so where the
    independent process falls inside it: another process, not the harness, differs."""
    relative = abs(independent_p50 - workflow_p50) / workflow_p50
    if relative <= tolerance:
        return f"PASS ({relative * 100:.1f}%)"
    text = f"FAIL ({relative * 100:.1f}%"
    if len(launch_p50s) > 1:
        low, high = min(launch_p50s), max(launch_p50s)
        text += f"; the workflow's launches {low:.4f}–{high:.4f}"
        if low <= independent_p50 <= high:
            text += ", the independent process inside their spread"
    return text + ")"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/gpu.yaml")
    parser.add_argument("--backend", required=True,
                        help="backend names from the config, comma-separated, or 'all' for "
                        "every CUDA backend")
    parser.add_argument("--batch", required=True, help="batch size(s), comma-separated")
    parser.add_argument("--results-dir", help="defaults to the config's results_dir")
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--tolerance", type=float, default=0.03,
                        help="largest allowed relative difference of the p50s")
    parser.add_argument("--in-process", action="store_true",
                        help="check every backend in this process (default: one child "
                        "process per backend)")
    parser.add_argument("--rows-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from inferbench.config import job_settings, load_config

    config = load_config(args.config)
    names = [b["name"] for b in config["backends"] if b.get("device", "cpu") == "cuda"] \
        if args.backend == "all" else [n for n in args.backend.split(",") if n]
    unknown = [n for n in names if n not in {b["name"] for b in config["backends"]}]
    if unknown:
        fail(f"backend(s) {unknown} not in {args.config}")
    threads = int(job_settings(config, names[0])["threads"]) if names else 1
    # Before torch / onnxruntime are imported, as the benchmark job does.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    from inferbench.measure.gpu import cuda_unavailable_reason

    reason = cuda_unavailable_reason()
    if reason:
        fail(f"cannot run: {reason}. Run this on the GPU machine after the GPU sweep.")
    import torch

    results = Path(args.results_dir or config["results_dir"])
    batches = [int(b) for b in str(args.batch).split(",")]
    if not args.rows_only:
        print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}")
        print("| backend | batch | workflow gpu_compute p50 ms | independent p50 ms "
              "(spin ahead) | independent p50 ms (no spin) | verdict |")
        print("| --- | --- | --- | --- | --- | --- |", flush=True)
    if len(names) > 1 and not args.in_process:
        return isolated(names, argv if argv is not None else sys.argv[1:])
    checked = failed = 0
    for name in names:
        for batch in batches:
            try:
                verdict, workflow, held, bare = check(config, name, batch, results, args)
            except Exception as exc:  # one backend's crash must not hide the others
                verdict, workflow, held, bare = f"skip: {type(exc).__name__}: {exc}", None, \
                    None, None
            cells = [f"{v:.4f}" if v is not None else "–" for v in (workflow, held, bare)]
            print(f"| {name} | {batch} | {' | '.join(cells)} | {verdict[:120]} |", flush=True)
            checked += verdict.startswith(("PASS", "FAIL"))
            failed += verdict.startswith("FAIL")
    if not checked:
        return 2
    return 1 if failed else 0


def isolated(names: list[str], argv: list[str]) -> int:
    """Check each backend in a child process of this script; the worst exit status."""
    import subprocess

    rest: list[str] = []
    skip_next = False
    for arg in argv:  # every argument but the backend list goes to the children
        if skip_next:
            skip_next = False
        elif arg == "--backend":
            skip_next = True
        elif not arg.startswith("--backend="):
            rest.append(arg)
    codes = []
    for name in names:
        child = subprocess.run([sys.executable, __file__, *rest, "--backend", name,
                                "--rows-only"], check=False)
        if child.returncode not in (0, 1, 2):  # a crash: say so in the table
            print(f"| {name} | – | – | – | – | skip: process died with status "
                  f"{child.returncode} |", flush=True)
        codes.append(child.returncode)
    if 1 in codes:
        return 1
    return 0 if 0 in codes else 2


if __name__ == "__main__":
    sys.exit(main())
