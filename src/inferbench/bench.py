"""One benchmark job: one backend, one batch size, one fresh process.

``run_job`` never raises for a backend problem: every outcome is a result row
with a status (ok, unavailable, error, parity_failed) and its reason.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inferbench.backends.base import Unsupported
from inferbench.config import BackendSpec, config_hash
from inferbench.io import CorruptArtifactError, atomic_write_json, verify_files
from inferbench.stats import StoppingPolicy, collect, summarize

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class JobPaths:
    model_dir: Path
    card: Path
    inputs: Path
    reference: Path
    onnx: Path | None = None
    build_manifest: Path | None = None


def set_thread_env(threads: int) -> None:
    """Thread counts must be set before torch or onnxruntime are imported."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def base_result(settings: Mapping[str, Any], batch: int, model: str, target: str
                ) -> dict[str, Any]:
    spec = settings["backend"]
    return {
        "schema_version": SCHEMA_VERSION,
        "status": "error",
        "reason": "",
        "target": target,
        "model": model,
        "backend": spec["name"],
        "kind": spec["kind"],
        "device": spec["device"],
        "precision": spec["precision"],
        "options": spec["options"],
        "batch_size": batch,
        "seq_len": settings["seq_len"],
        "threads": settings["threads"],
        "settings_hash": config_hash(settings),
        "started_at": _now(),
    }


class _RssSampler(threading.Thread):
    """Polls this process's resident set; only runs during the memory pass."""

    def __init__(self, interval_s: float = 0.001) -> None:
        super().__init__(daemon=True)
        import psutil

        self._process = psutil.Process()
        self._interval = interval_s
        self._stop_event = threading.Event()
        self.peak = self._process.memory_info().rss

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(self._interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, self._process.memory_info().rss)


def run_job(settings: Mapping[str, Any], batch: int, paths: JobPaths, model: str, target: str,
            out_path: Path) -> dict[str, Any]:
    set_thread_env(int(settings["threads"]))
    result = base_result(settings, batch, model, target)
    try:
        result.update(_measure(settings, batch, paths))
    except CorruptArtifactError as exc:
        result.update(status="error", reason=f"corrupt artifact: {exc}")
    except Unsupported as exc:
        result.update(status="unavailable", reason=f"unsupported here: {exc}"[:2000])
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, MemoryError) or "out of memory" in message.lower():
            message = f"out of memory: {message}"
        result.update(status="error", reason=message[:2000],
                      traceback=traceback.format_exc(limit=8)[-4000:])
    result["finished_at"] = _now()
    from inferbench.fingerprint import fingerprint

    result["fingerprint"] = fingerprint(int(settings["threads"]))
    atomic_write_json(out_path, result)
    return result


def _measure(settings: Mapping[str, Any], batch: int, paths: JobPaths) -> dict[str, Any]:
    from inferbench import gpu
    from inferbench.backends import registry
    from inferbench.backends.base import Artifacts
    from inferbench.onnx_tools import load_verified
    from inferbench.parity import compare
    from inferbench.prepare import load_inputs, read_json

    spec = BackendSpec.from_entry(settings["backend"])
    threads = int(settings["threads"])
    backend = registry.get(spec.kind)(spec, threads)
    out: dict[str, Any] = {}

    availability = backend.availability()
    if not availability.ok:
        return {"status": "unavailable", "reason": availability.reason}

    build_manifest: dict[str, Any] = {}
    if paths.build_manifest is not None:
        build_manifest = read_json(paths.build_manifest)
        out["build"] = {k: v for k, v in build_manifest.items() if k != "files"}
        if build_manifest.get("status") != "ok":
            return {"status": build_manifest.get("status", "error"),
                    "reason": f"build: {build_manifest.get('reason', 'failed')}", **out}
        # The engine files as the build rule hashed them, or no benchmark.
        verify_files(paths.build_manifest.parent, build_manifest.get("files") or {},
                     produced_by=paths.build_manifest)
    onnx_manifest = load_verified(paths.onnx) if paths.onnx is not None else {}
    if onnx_manifest:
        out["onnx"] = {k: onnx_manifest.get(k) for k in
                       ("variant", "sha256", "fusions", "exporter", "attn_implementation")}
    artifacts = Artifacts(model_dir=paths.model_dir, card=read_json(paths.card), onnx=paths.onnx,
                          build=paths.build_manifest.parent if paths.build_manifest else None,
                          build_manifest=build_manifest)
    host_inputs = load_inputs(paths.inputs)
    with np.load(paths.reference) as ref:
        reference = ref["output"]

    # Cold start: load, then the first inference, each synchronised.
    t0 = time.perf_counter()
    backend.load(artifacts)
    backend.synchronize()
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    first = backend.to_host(backend.run(backend.prepare_inputs(host_inputs)))
    backend.synchronize()
    first_s = time.perf_counter() - t0
    out["cold_start"] = {"load_s": load_s, "first_inference_s": first_s}
    out["details"] = backend.details()

    policy = StoppingPolicy.from_config(dict(settings["measurement"]))
    for _ in range(policy.warmup_iterations):
        backend.to_host(backend.run(backend.prepare_inputs(host_inputs)))
    backend.synchronize()

    timer = backend.device_timer()
    last_output: list[np.ndarray] = [first]

    def step() -> tuple[float, float | None]:
        # End-to-end: host arrays in, host array out, device synchronised.
        start = time.perf_counter()
        prepared = backend.prepare_inputs(host_inputs)
        if timer is not None:
            timer.start()
        outputs = backend.run(prepared)
        if timer is not None:
            timer.stop()
        host = backend.to_host(outputs)
        backend.synchronize()
        end = time.perf_counter()
        last_output[0] = host
        return (end - start) * 1e3, timer.elapsed_ms() if timer is not None else None

    energy = gpu.EnergyMeter.for_device(spec.device)
    energy.start()
    samples = collect(step, policy)
    energy_j = energy.stop()

    resamples = int(settings["measurement"]["bootstrap_resamples"])
    latency = {"end_to_end": {**summarize(samples.end_to_end_ms, batch, resamples),
                              "samples": samples.end_to_end_ms}}
    if samples.device_ms:
        latency["device"] = {**summarize(samples.device_ms, batch, resamples),
                             "samples": samples.device_ms}
    out["latency"] = latency
    out["stopping"] = {"iterations": samples.count, "elapsed_s": samples.elapsed_s,
                       "stop_reason": samples.stop_reason,
                       "criteria_met": samples.stop_reason == "minimums_met",
                       "policy": dict(settings["measurement"])}
    out["noisy"] = latency["end_to_end"]["cv"] > float(settings["measurement"]["noisy_cv"])
    out["energy"] = ({"joules": energy_j,
                      "joules_per_1000_inferences": energy_j / (samples.count * batch) * 1000}
                     if energy_j is not None else None)

    # Peak memory in its own pass, never inside the timed loop.
    gpu.reset_peak(spec.device)
    sampler = _RssSampler()
    sampler.start()
    for _ in range(int(settings["measurement"]["memory_iterations"])):
        backend.to_host(backend.run(backend.prepare_inputs(host_inputs)))
    backend.synchronize()
    out["memory"] = {"peak_rss_mib": sampler.stop() / 2**20,
                     **gpu.peak_memory(spec.device, getattr(backend, "memory_owner", "torch"))}

    # Distance to the hardware (FLOP/s, peak fraction, kernels), its own pass too.
    from inferbench.hardware import hardware_pass

    out["hardware"] = hardware_pass(backend, host_inputs, artifacts.card, spec.device,
                                    spec.precision, batch, int(settings["seq_len"]),
                                    latency.get("device", latency["end_to_end"])["p50"])

    parity = compare(last_output[0], reference, str(settings["task"]), settings["parity"])
    parity["first_inference"] = compare(first, reference, str(settings["task"]),
                                        settings["parity"])["ok"]
    out["parity"] = parity
    if parity["ok"] and parity["first_inference"]:
        out["status"] = "ok"
    else:
        out["status"] = "parity_failed"
        out["reason"] = parity.get("reason", "first inference outside tolerance")
    return out
