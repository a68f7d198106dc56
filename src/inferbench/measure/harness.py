"""One benchmark job: one backend, one batch size, several fresh processes.

A row is measured in ``measurement.repeats`` launches, each a fresh process that
runs :func:`measure_launch`; their raw samples are combined into one
:class:`inferbench.results.Result` (:func:`combine_job`). In the workflow each launch
is a job of its own and the launches of all rows run in rounds (every row's first
launch, then every row's second, ...), so that each row's launches are spread over
the whole run and its interval covers the machine's drift over that time, not one
minute of it. The process that starts a launch never imports a runtime. A launch
never raises for a backend problem:
every outcome is a record with a status (ok, contended, unavailable, error,
parity_failed) and its reason.

Inside a launch, each view has its own timed pass (see :mod:`inferbench.results`):

1. cold start: load, then the first inference, each synchronised;
2. warm-up with the measured shapes;
3. ``latency``: prepare (host to device) + run + to_host + synchronise per sample;
4. ``gpu_compute`` (devices with a timer): inputs already prepared; idle device
   work is queued ahead on the work's stream so the host's launches run ahead of the
   device, then CUDA events on that stream bracket ``run``;
5. ``throughput``: rounds of back-to-back ``run`` calls with one synchronisation;
6. memory, in its own pass after the timed ones.

A contention tracker brackets passes 3-5.
"""

from __future__ import annotations

import dataclasses
import math
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inferbench.backends.base import Unsupported
from inferbench.config import canonical_json, config_hash
from inferbench.io import CorruptArtifactError, atomic_write_json
from inferbench.measure.launches import (
    Launcher,
    launch_record,
    now,
    repeatable,
    set_thread_env,
    skipped_record,
)
from inferbench.measure.stats import StoppingPolicy, collect, view_stats
from inferbench.prepare.failures import StageFailed
from inferbench.results import VIEW_UNITS, VIEWS, Result, View, write_result
from inferbench.spec import BackendSpec

Clock = Callable[[], float]


@dataclass(frozen=True)
class JobPaths:
    model_dir: Path
    card: Path
    inputs: Path
    reference: Path
    onnx: Path | None = None
    build_manifest: Path | None = None


def base_result(settings: Mapping[str, Any], batch: int, model: str, target: str) -> Result:
    spec = settings["backend"]
    return Result(target=target, model=model, backend=spec["name"], kind=spec["kind"],
                  device=spec["device"], precision=spec["precision"],
                  options=dict(spec["options"]), batch_size=batch,
                  seq_len=int(settings["seq_len"]), threads=int(settings["threads"]),
                  settings_hash=config_hash(settings), started_at=now())


# How allocators say they ran out of memory: CUDA, torch's CPU allocator, ONNX
# Runtime's arena (CPU and CUDA), the C++ runtime, the kernel's ENOMEM.
OUT_OF_MEMORY = ("out of memory", "defaultcpuallocator", "failed to allocate memory",
                 "std::bad_alloc", "cannot allocate memory", "not enough memory")


def is_out_of_memory(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    return isinstance(exc, MemoryError) or any(p in text for p in OUT_OF_MEMORY)


def error_reason(exc: BaseException) -> str:
    message = f"{type(exc).__name__}: {exc}"
    if is_out_of_memory(exc):
        message = f"out of memory: {message}"
    return message[:2000]


# -- the parent: launches (the per-launch record: inferbench.measure.launches) ---------

def run_job(settings: Mapping[str, Any], batch: int, model: str, target: str,
            out_path: Path, launch: Launcher) -> Result:
    """All launches of one row back to back, then their combination (tests and manual
    use; the workflow runs each launch as a job of its own, see :func:`launch_record`)."""
    repeats = int(settings["measurement"].get("repeats", 1))
    records: list[dict[str, Any]] = []
    for index in range(repeats):
        path = out_path.parent / f".{out_path.name}.launch{index}.json"
        records.append(launch_record(launch, index, path))
        path.unlink(missing_ok=True)
        if not repeatable(records[-1]):
            break  # unavailable or error: more launches would say the same
    return combine_job(settings, batch, model, target, records, out_path)


def combine_job(settings: Mapping[str, Any], batch: int, model: str, target: str,
                records: list[dict[str, Any]], out_path: Path) -> Result:
    """The row's result from its launches' records, written to ``out_path``."""
    result = base_result(settings, batch, model, target)
    ran = [r for r in records if not r.get("skipped")]
    starts = [r["started_at"] for r in ran if r.get("started_at")]
    if starts:
        result.started_at = min(starts)
    result = combine(result, ran, settings)
    result.launch_windows = [[r["started_at"], r["finished_at"]] for r in ran
                             if r.get("started_at") and r.get("finished_at")]
    ends = [r["finished_at"] for r in ran if r.get("finished_at")]
    result.finished_at = max(ends) if ends else now()
    write_result(out_path, result)
    return result


def combine(result: Result, records: list[dict[str, Any]], settings: Mapping[str, Any]
            ) -> Result:
    """One result from the launches' records (see measure_launch)."""
    from inferbench.results import Contention, Memory

    measurement = settings["measurement"]
    failed = [r for r in records if r["status"] in ("unavailable", "error")]
    last = records[-1]
    for key in ("details", "build", "onnx", "fingerprint", "model_sha256", "inputs_sha256"):
        value = next((r[key] for r in reversed(records) if r.get(key)), None)
        if value is not None:
            setattr(result, key, value)
    if failed:
        worst = failed[0]
        result.status, result.reason = worst["status"], worst.get("reason", "")
        result.traceback = worst.get("traceback")
        result.launches = len(records)
        return result
    measured = records
    result.launches = len(measured)
    resamples = int(measurement["bootstrap_resamples"])
    for name in VIEWS:
        groups = [r["samples"].get(name) for r in measured]
        if all(groups):
            view = View(name, VIEW_UNITS[name], [list(g) for g in groups])
            view.stats = view_stats(view.samples, resamples)
        else:
            reason = next((r["not_applicable"].get(name) for r in measured
                           if r["not_applicable"].get(name)), "not measured")
            view = View.na(name, reason)
        result.views[name] = view
    latency, compute = result.views["latency"], result.views["gpu_compute"]
    if latency.stats and compute.stats:
        result.host_overhead_ms = latency.stats.p50 - compute.stats.p50
    result.primary_view = "gpu_compute" if compute.stats else "latency"
    primary = result.views[result.primary_view].stats
    assert primary is not None
    result.noisy = primary.rel_ci_halfwidth > float(measurement.get("noisy_rel_ci", 0.05))
    result.contention = [Contention(**r["contention"]) for r in measured if r.get("contention")]
    memory = [r.get("memory") or {} for r in measured]
    result.memory = Memory(**{f.name: max((m[f.name] for m in memory
                                           if m.get(f.name) is not None), default=None)
                              for f in dataclasses.fields(Memory)})
    result.cold_start = {"load_s": float(np.median([r["cold_start"]["load_s"]
                                                    for r in measured])),
                         "first_inference_s": float(np.median(
                             [r["cold_start"]["first_inference_s"] for r in measured])),
                         "per_launch": [r["cold_start"] for r in measured]}
    energy = [r["energy"] for r in measured if r.get("energy")]
    if energy:
        joules = sum(e["joules"] for e in energy)
        count = sum(e["inferences"] for e in energy)
        result.energy = {"joules": joules, "inferences": count,
                         "joules_per_1000_inferences": joules / count * 1000}
    result.stopping = {
        "policy": dict(measurement),
        "launches": len(measured),
        "stop_reasons": [r["stopping"]["latency"]["stop_reason"] for r in measured],
        "criteria_met": all(r["stopping"]["latency"]["minimums_met"] for r in measured),
        "per_launch": [r["stopping"] for r in measured],
    }
    result.parity = last.get("parity")
    result.hardware = last.get("hardware")
    flops = (result.hardware or {}).get("flops_per_inference")
    if result.hardware is not None and flops:
        # from the reported p50 of the primary view, not one launch's
        tflops = flops / (primary.p50 * 1e-3) / 1e12
        peak = result.hardware.get("peak_tflops")
        result.hardware.update(achieved_tflops=tflops, timed_view=result.primary_view,
                               peak_fraction=tflops / peak if peak else None)
    parity_failed = [r for r in measured if r["status"] == "parity_failed"]
    contended = [c for c in result.contention if c.contended]
    if parity_failed:
        result.status = "parity_failed"
        result.reason = parity_failed[0].get("reason", "")
        result.parity = parity_failed[0].get("parity")
    elif contended:
        result.status = "contended"
        result.reason = (f"{len(contended)} of {len(measured)} launches measured beside "
                         f"other load: {contended[0].why}")
    else:
        result.status = "ok"
    repeats = int(measurement.get("repeats", 1))
    if len(measured) < repeats and result.status in ("ok", "contended"):
        # A row combined from fewer launches than asked for (a sweep cut short): its
        # interval sees less of the spread between processes, and it says so.
        short = (f"{len(measured)} of {repeats} launches: the interval misses the spread "
                 "between launches")
        result.reason = f"{result.reason}; {short}" if result.reason else short
    return result


# -- one launch (a fresh process) ------------------------------------------------------

def measure_launch(settings: Mapping[str, Any], batch: int, paths: JobPaths) -> dict[str, Any]:
    """Everything one process measures; never raises for a backend problem."""
    set_thread_env(int(settings["threads"]))
    record: dict[str, Any] = {"status": "error", "reason": "", "samples": {},
                              "not_applicable": {}}
    try:
        record.update(_measure(settings, batch, paths))
    except CorruptArtifactError as exc:
        record.update(status="error", reason=f"corrupt artifact: {exc}")
    except StageFailed as exc:
        record.update(status="error", reason=str(exc))
    except Unsupported as exc:
        record.update(status="unavailable", reason=f"unsupported here: {exc}"[:2000])
    except Exception as exc:
        record.update(status="error", reason=error_reason(exc),
                      traceback=traceback.format_exc(limit=8)[-4000:])
    from inferbench.measure.fingerprint import fingerprint

    record["fingerprint"] = fingerprint(int(settings["threads"]))
    record.update(artifact_hashes(paths))
    return record


def artifact_hashes(paths: JobPaths) -> dict[str, str | None]:
    """What a row times, for comparing runs: the prepared model (the sha256 of its
    card's file hashes: weights, config, tokenizer) and the input set. None when a
    file cannot be read (the row's own status says why)."""
    import hashlib

    from inferbench.io import sha256_file
    from inferbench.prepare.model import read_json

    hashes: dict[str, str | None] = {"model_sha256": None, "inputs_sha256": None}
    try:
        files = read_json(paths.card).get("files") or {}
        hashes["model_sha256"] = hashlib.sha256(
            canonical_json(files).encode()).hexdigest()
        hashes["inputs_sha256"] = sha256_file(paths.inputs)
    except (OSError, ValueError):
        pass
    return hashes


def write_launch(path: Path, record: Mapping[str, Any]) -> None:
    atomic_write_json(path, record)


def _measure(settings: Mapping[str, Any], batch: int, paths: JobPaths) -> dict[str, Any]:
    from inferbench.backends import registry
    from inferbench.backends.base import Artifacts
    from inferbench.io import verify_files
    from inferbench.prepare.model import load_inputs, read_json
    from inferbench.prepare.onnx import load_verified

    spec = BackendSpec.from_entry(settings["backend"])
    backend = registry.get(spec.kind)(spec, int(settings["threads"]))
    out: dict[str, Any] = {}

    availability = backend.availability()
    if not availability.ok:
        return {"status": "unavailable", "reason": availability.reason}
    from inferbench.prepare.failures import npz_failure

    upstream = npz_failure(paths.inputs) or npz_failure(paths.reference)
    if upstream:  # the model could not be prepared at this batch size: say why
        return {"status": "error", "reason": upstream}

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
    out.update(measure_backend(backend, artifacts, host_inputs, batch, settings))
    # Distance to the hardware (FLOP/s, peak fraction, kernels per inference), in a
    # pass of its own after the timed ones.
    from inferbench.hardware import hardware_pass

    samples = out["samples"]
    primary = samples.get("gpu_compute") or samples["latency"]
    out["hardware"] = hardware_pass(backend, host_inputs, artifacts.card, spec.device,
                                    spec.precision, batch, int(settings["seq_len"]),
                                    float(np.median(primary)))
    out.update(check_parity(out.pop("outputs"), reference, settings))
    return out


def check_parity(outputs: Mapping[str, np.ndarray], reference: np.ndarray,
                 settings: Mapping[str, Any]) -> dict[str, Any]:
    from inferbench.measure.parity import compare

    parity = compare(outputs["last"], reference, str(settings["task"]), settings["parity"])
    parity["first_inference"] = compare(outputs["first"], reference, str(settings["task"]),
                                        settings["parity"])["ok"]
    if parity["ok"] and parity["first_inference"]:
        return {"parity": parity}
    return {"parity": parity, "status": "parity_failed",
            "reason": parity.get("reason", "first inference outside tolerance")}


def measure_backend(backend: Any, artifacts: Any, host_inputs: Mapping[str, np.ndarray],
                    batch: int, settings: Mapping[str, Any], clock: Clock = time.perf_counter,
                    tracker: Any = None, energy: Any = None) -> dict[str, Any]:
    """Cold start, the three timed views, memory. ``clock``, ``tracker`` (a context
    manager with a ``record``) and ``energy`` are injectable for tests."""
    from inferbench.measure import gpu
    from inferbench.measure.contention import ContentionTracker

    measurement = settings["measurement"]
    out: dict[str, Any] = {"status": "ok", "samples": {}, "not_applicable": {}}

    t0 = clock()
    backend.load(artifacts)
    backend.synchronize()
    load_s = clock() - t0
    t0 = clock()
    first = backend.to_host(backend.run(backend.prepare_inputs(host_inputs)))
    backend.synchronize()
    out["cold_start"] = {"load_s": load_s, "first_inference_s": clock() - t0}
    out["details"] = backend.details()

    policy = StoppingPolicy.from_config(dict(measurement))
    for _ in range(policy.warmup_iterations):
        backend.to_host(backend.run(backend.prepare_inputs(host_inputs)))
    backend.synchronize()

    if tracker is None:
        tracker = ContentionTracker(float(measurement.get("contention_threshold", 0.1)))
    if energy is None:
        energy = gpu.EnergyMeter.for_device(backend.spec.device)
    last: list[np.ndarray] = [first]
    stopping: dict[str, Any] = {}
    with tracker:
        energy.start()
        latency = latency_pass(backend, host_inputs, policy, clock, last)
        out["samples"]["latency"] = latency.values
        stopping["latency"] = _stop_record(latency)
        timer = backend.device_timer()
        if timer is None:
            out["not_applicable"]["gpu_compute"] = (
                f"{backend.spec.device.upper()} backend: no device timer; see `latency`")
        else:
            compute = gpu_compute_pass(backend, host_inputs, timer, policy,
                                       lead_ms=float(np.median(latency.values)), clock=clock)
            out["samples"]["gpu_compute"] = compute.values
            stopping["gpu_compute"] = _stop_record(compute)
        rates, calls = throughput_pass(backend, host_inputs, batch,
                                       per_call_s=float(np.median(latency.values)) / 1e3,
                                       rounds=int(measurement.get("throughput_rounds", 3)),
                                       round_s=float(measurement.get("throughput_round_s", 0.5)),
                                       clock=clock)
        out["samples"]["throughput"] = rates
        stopping["throughput"] = {"rounds": len(rates), "calls_per_round": calls}
        joules = energy.stop()
    out["stopping"] = stopping
    out["contention"] = dataclasses.asdict(tracker.record) if tracker.record else None
    if joules is not None:
        inferences = (latency.count + calls * len(rates)) * batch
        out["energy"] = {"joules": joules, "inferences": inferences}

    # Peak memory in its own pass, never inside a timed loop.
    sampler = RssSampler()
    sampler.start()
    for _ in range(int(measurement["memory_iterations"])):
        backend.to_host(backend.run(backend.prepare_inputs(host_inputs)))
    backend.synchronize()
    out["memory"] = {"peak_rss_mib": sampler.stop() / 2**20,
                     **gpu.gpu_memory(backend.spec.device,
                                      getattr(backend, "memory_owner", "torch"))}
    out["outputs"] = {"first": first, "last": last[0]}
    return out


def _stop_record(samples: Any) -> dict[str, Any]:
    return {"iterations": samples.count, "elapsed_s": samples.elapsed_s,
            "stop_reason": samples.stop_reason, "minimums_met": samples.minimums_met}


def latency_pass(backend: Any, host_inputs: Mapping[str, np.ndarray], policy: StoppingPolicy,
                 clock: Clock, last: list[np.ndarray]) -> Any:
    """One request in isolation: host arrays in, host array out, synchronised (ms)."""

    def step() -> float:
        start = clock()
        host = backend.to_host(backend.run(backend.prepare_inputs(host_inputs)))
        backend.synchronize()
        end = clock()
        last[0] = host
        return (end - start) * 1e3

    return collect(step, policy, clock)


def gpu_compute_pass(backend: Any, host_inputs: Mapping[str, np.ndarray], timer: Any,
                     policy: StoppingPolicy, lead_ms: float, clock: Clock) -> Any:
    """Device time of ``run`` alone, from events on the stream the work runs on."""
    prepared = backend.prepare_inputs(host_inputs)
    backend.synchronize()
    # Enough idle device work ahead of the events for the host to enqueue all of
    # `run` (at most one request's end-to-end latency), capped so a slow CPU row
    # cannot make the pass crawl.
    hold_ms = min(max(0.5, 1.5 * lead_ms), 50.0)

    def step() -> float:
        timer.hold(hold_ms)
        timer.start()
        backend.run(prepared)
        timer.stop()
        elapsed = float(timer.elapsed_ms())
        backend.synchronize()
        return elapsed

    return collect(step, policy, clock)


def throughput_pass(backend: Any, host_inputs: Mapping[str, np.ndarray], batch: int,
                    per_call_s: float, rounds: int, round_s: float, clock: Clock
                    ) -> tuple[list[float], int]:
    """Rounds of back-to-back ``run`` calls on prepared inputs with one synchronisation
    at the end, so launch overhead overlaps device work; inferences per second."""
    prepared = backend.prepare_inputs(host_inputs)
    backend.synchronize()
    calls = max(1, min(100_000, math.ceil(round_s / max(per_call_s, 1e-6))))
    rates = []
    for _ in range(max(1, rounds)):
        start = clock()
        for _ in range(calls):
            backend.run(prepared)
        backend.synchronize()
        rates.append(calls * batch / max(clock() - start, 1e-12))
    return rates, calls


class RssSampler:
    """Polls this process's resident set; only runs during the memory pass."""

    def __init__(self, interval_s: float = 0.001) -> None:
        import threading

        import psutil

        self._process = psutil.Process()
        self._interval = interval_s
        self._stop_event = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self.peak = self._process.memory_info().rss

    def _poll(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(self._interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> int:
        self._stop_event.set()
        self._thread.join()
        return max(self.peak, self._process.memory_info().rss)


__all__ = ["JobPaths", "Launcher", "Result", "base_result", "combine", "launch_record",
           "measure_launch", "now", "repeatable", "run_job", "set_thread_env",
           "skipped_record", "write_launch"]


def in_process_launcher(settings: Mapping[str, Any], batch: int, paths: JobPaths) -> Launcher:
    """Launches in this process (tests, the fidelity script): not fresh processes, so
    never what the workflow reports."""

    def launch(index: int, path: Path) -> str | None:
        write_launch(path, measure_launch(settings, batch, paths))
        return None

    return launch


def run_in_process(settings: Mapping[str, Any], batch: int, paths: JobPaths, model: str,
                   target: str, out_path: Path) -> dict[str, Any]:
    """:func:`run_job` with in-process launches; the result as a plain record."""
    launcher = in_process_launcher(settings, batch, paths)
    return run_job(settings, batch, model, target, out_path, launcher).to_dict()
