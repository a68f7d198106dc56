#!/usr/bin/env python
"""Harness fidelity: does the workflow's device p50 match an independent timing loop?

Loads one backend through the registry exactly as the benchmark job does (same
config, same artifacts from the workflow's results folder), puts the inputs on the
device once, then times N calls of ``backend.run`` with its own CUDA events, without
inferbench.measure.stats or inferbench.measure.harness, synchronising after every call as the
harness's loop does. Its p50 is compared with ``latency.device.p50`` of the
workflow's result JSON for the same backend and batch size.

Run it on the GPU machine after the sweep, for example:

    python scripts/harness_fidelity.py --config config/gpu.yaml \\
        --backend torch-cuda-graph-fp16 --batch 16

Exit status: 0 when the two p50s differ by at most --tolerance (default 3%),
1 when they differ by more, 2 when the check cannot run (no CUDA device, a CPU
backend, the backend unavailable, or the workflow's result missing).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def fail(message: str) -> None:
    print(f"harness_fidelity: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/gpu.yaml")
    parser.add_argument("--backend", required=True, help="backend name from the config")
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--results-dir", help="defaults to the config's results_dir")
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--tolerance", type=float, default=0.03,
                        help="largest allowed relative difference of the p50s")
    args = parser.parse_args(argv)

    from inferbench.config import backend_spec, job_settings, load_config

    config = load_config(args.config)
    try:
        spec = backend_spec(config, args.backend)
    except KeyError:
        fail(f"backend {args.backend!r} is not in {args.config} "
             f"(backends: {', '.join(b['name'] for b in config['backends'])})")
    if spec.device != "cuda":
        fail(f"{args.backend} runs on {spec.device!r}: this check times CUDA events, "
             "pick a CUDA backend")
    settings = job_settings(config, args.backend)
    threads = int(settings["threads"])
    # Before torch / onnxruntime are imported, as the benchmark job does.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)

    from inferbench.measure.gpu import cuda_unavailable_reason

    reason = cuda_unavailable_reason()
    if reason:
        fail(f"cannot run: {reason}. Run this on the GPU machine after the GPU sweep.")

    results = Path(args.results_dir or config["results_dir"])
    model, target, seq = config["model"]["name"], config["target"], config["seq_len"]
    result_path = results / "bench" / target / model / args.backend / f"bs{args.batch}.json"
    if not result_path.is_file():
        fail(f"no workflow result at {result_path}: run the sweep first "
             f"(snakemake --cores 1 all --configfile {args.config})")
    result = json.loads(result_path.read_text())
    if result.get("status") != "ok" or "device" not in result.get("latency", {}):
        fail(f"{result_path} has status {result.get('status')!r} "
             f"({result.get('reason', 'no device latency')}): nothing to compare")
    workflow_p50 = float(result["latency"]["device"]["p50"])

    import numpy as np
    import torch

    from inferbench.backends import registry
    from inferbench.backends.base import Artifacts
    from inferbench.prepare.model import load_inputs, read_json

    backend = registry.get(spec.kind)(spec, threads)
    availability = backend.availability()
    if not availability.ok:
        fail(f"{args.backend} is unavailable: {availability.reason}")

    # The same artifacts the bench rule passes (see workflow/rules/common.smk).
    model_dir = results / "models" / model / "hf"
    card = read_json(results / "models" / model / "card.json")
    variant = backend.onnx_variant(spec)
    onnx = results / "onnx" / model / f"{variant}.onnx" if variant else None
    build_manifest: dict = {}
    build_dir = None
    if "build" in backend.needs:
        manifest_path = results / "engines" / target / model / args.backend / "build.json"
        build_manifest = read_json(manifest_path)
        build_dir = manifest_path.parent
    artifacts = Artifacts(model_dir=model_dir, card=card, onnx=onnx, build=build_dir,
                          build_manifest=build_manifest)
    host_inputs = load_inputs(results / "inputs" / model / f"seq{seq}_bs{args.batch}.npz")

    backend.load(artifacts)
    prepared = backend.prepare_inputs(host_inputs)  # inputs now live on the device
    backend.synchronize()
    # The stream the backend launches on: its own where it has one (ONNX Runtime and
    # TensorRT run on a dedicated stream), else torch's current stream.
    stream = getattr(backend, "stream", None) or torch.cuda.current_stream()
    for _ in range(args.warmup):
        backend.run(prepared)
    torch.cuda.synchronize()

    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    times_ms = []
    for _ in range(args.iterations):
        start.record(stream)
        backend.run(prepared)
        end.record(stream)
        end.synchronize()
        times_ms.append(start.elapsed_time(end))
    independent_p50 = statistics.median(times_ms)
    relative = abs(independent_p50 - workflow_p50) / workflow_p50

    print(f"backend            {args.backend} ({spec.kind}, {spec.precision}), batch {args.batch}")
    print(f"device             {torch.cuda.get_device_name()}")
    print(f"workflow p50       {workflow_p50:.4f} ms  ({result_path}, "
          f"{result['latency']['device']['count']} samples)")
    print(f"independent p50    {independent_p50:.4f} ms  ({args.iterations} CUDA-event "
          f"samples, p10 {np.percentile(times_ms, 10):.4f}, p90 {np.percentile(times_ms, 90):.4f})")
    print(f"relative diff      {relative * 100:.2f}% (tolerance {args.tolerance * 100:.1f}%)")
    ok = relative <= args.tolerance
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
