"""One serving job: one backend x scenario x padding strategy, LoadGen driving it.

The rule's process (:func:`run_serve_parent`) imports no runtime; it runs the job in a
fresh child process (:func:`serve_worker`) and writes an ``error`` row when that child
dies. The child loads the backend, warms every shape it will use, runs the LoadGen
scenario (the Server: a search over target QPS, one LoadGen run per trial), checks the
outputs LoadGen collected against the FP32 reference of the same requests, and writes
one :class:`inferbench.results.Result` with LoadGen's summary and settings attached.
LoadGen's own logs stay in the job's log folder (one subfolder per Server trial).
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inferbench.config import config_hash
from inferbench.io import CorruptArtifactError
from inferbench.measure.launches import now, set_thread_env
from inferbench.results import Result, write_result
from inferbench.spec import BackendSpec

if TYPE_CHECKING:
    import numpy as np

# numpy and the backends are imported in the worker's functions: the parent, which
# only starts the worker, then skips them (0.13 s of each serving job).


@dataclass(frozen=True)
class ServePaths:
    model_dir: Path
    card: Path
    traffic: Path
    reference: Path
    log_dir: Path
    onnx: Path | None = None
    build_manifest: Path | None = None


def base_result(settings: Mapping[str, Any], model: str, target: str) -> Result:
    spec = settings["backend"]
    return Result(target=target, model=model, backend=spec["name"], kind=spec["kind"],
                  device=spec["device"], precision=spec["precision"],
                  options=dict(spec["options"]), batch_size=int(settings["max_batch"]),
                  seq_len=int(settings["seq_len"]), threads=int(settings["threads"]),
                  scenario=str(settings["scenario"]), padding=str(settings["padding"]),
                  settings_hash=config_hash(settings), started_at=now())


def run_serve_parent(settings: Mapping[str, Any], model: str, target: str, out: Path,
                     launch: Callable[[], str | None]) -> Result | None:
    """Run the worker; when it died, write an error row naming how."""
    how = launch()
    if how is None:
        return None
    result = base_result(settings, model, target)
    result.status = "error"
    result.reason = f"serving process died ({how}); out of memory or a crash in the runtime"
    result.finished_at = now()
    write_result(out, result)
    return result


def serve_worker(settings: Mapping[str, Any], paths: ServePaths, model: str, target: str,
                 out: Path) -> Result:
    """Everything one serving job measures; never raises for a backend problem."""
    from inferbench.backends.base import Unsupported

    result = base_result(settings, model, target)
    try:
        _serve(result, settings, paths)
    except CorruptArtifactError as exc:
        result.status, result.reason = "error", f"corrupt artifact: {exc}"
    except Unsupported as exc:
        result.status, result.reason = "unavailable", f"unsupported here: {exc}"[:2000]
    except Exception as exc:
        from inferbench.measure.harness import error_reason

        result.status, result.reason = "error", error_reason(exc)
        result.traceback = traceback.format_exc(limit=8)[-4000:]
    from inferbench.measure.fingerprint import fingerprint

    result.fingerprint = fingerprint(int(settings["threads"]))
    result.finished_at = now()
    write_result(out, result)
    return result


def _artifacts(paths: ServePaths, result: Result) -> Any:
    """The backend's files, checked as a bench job checks them."""
    from inferbench.backends.base import Artifacts
    from inferbench.io import verify_files
    from inferbench.prepare.model import read_json
    from inferbench.prepare.onnx import load_verified

    manifest: dict[str, Any] = {}
    if paths.build_manifest is not None:
        manifest = read_json(paths.build_manifest)
        result.build = {k: v for k, v in manifest.items() if k != "files"}
        if manifest.get("status") != "ok":
            raise _BuildFailed(manifest.get("status", "error"),
                               f"build: {manifest.get('reason', 'failed')}")
        verify_files(paths.build_manifest.parent, manifest.get("files") or {},
                     produced_by=paths.build_manifest)
    if paths.onnx is not None:
        onnx = load_verified(paths.onnx)
        result.onnx = {k: onnx.get(k) for k in
                       ("variant", "sha256", "fusions", "exporter", "attn_implementation")}
    return Artifacts(model_dir=paths.model_dir, card=read_json(paths.card), onnx=paths.onnx,
                     build=paths.build_manifest.parent if paths.build_manifest else None,
                     build_manifest=manifest)


class _BuildFailed(Exception):
    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def _serve(result: Result, settings: Mapping[str, Any], paths: ServePaths) -> None:
    import numpy as np

    from inferbench.backends import registry
    from inferbench.measure.contention import ContentionTracker
    from inferbench.serve.traffic import load_traffic, max_rows, unavailable_reason

    set_thread_env(int(settings["threads"]))
    spec = BackendSpec.from_entry(settings["backend"])
    cls = registry.get(spec.kind)
    support = cls.shape_support(spec)
    padding = str(settings["padding"])
    reason = unavailable_reason(padding, support, spec.kind, int(settings["seq_len"]))
    if reason:
        result.status, result.reason = "unavailable", reason
        return
    backend = cls(spec, int(settings["threads"]))
    availability = backend.availability()
    if not availability.ok:
        result.status, result.reason = "unavailable", availability.reason
        return
    try:
        artifacts = _artifacts(paths, result)
    except _BuildFailed as exc:
        result.status, result.reason = exc.status, str(exc)
        return
    import mlperf_loadgen as lg

    from inferbench.serve.sut import BackendThread, ModelRunner

    traffic = load_traffic(paths.traffic)
    with np.load(paths.reference) as data:
        reference = data["output"]
    # loaded on the thread that will serve (BackendThread says why)
    thread = BackendThread()
    try:
        start = time.perf_counter()
        thread.call(backend.load, artifacts)
        thread.call(backend.synchronize)
        load_s = time.perf_counter() - start
        result.details = backend.details()
        support = backend.loaded_shape_support()
        reason = unavailable_reason(padding, support, spec.kind, int(settings["seq_len"]))
        if reason:
            result.status, result.reason = "unavailable", reason
            return
        batch_sizes = list(settings["batch_sizes"])
        rows = max_rows(int(settings["max_batch"]), support, batch_sizes)
        result.batch_size = rows
        runner = ModelRunner(backend, traffic, padding, settings.get("buckets") or [],
                             support, batch_sizes, thread)
        start = time.perf_counter()
        expected = runner.warmup(rows, int(settings.get("warmup_iterations", 1)))
        result.cold_start = {"load_s": load_s, "warmup_s": time.perf_counter() - start,
                             **expected}
        tracker = ContentionTracker(float(settings.get("contention_threshold", 0.1)))
        scenario = str(settings["scenario"])
        with tracker:
            if scenario == "Server":
                serving = _server(lg, runner, settings, paths.log_dir, rows, expected,
                                  traffic.count)
            else:
                serving = _single_or_offline(lg, runner, settings, paths.log_dir, rows,
                                             expected, traffic.count)
    finally:
        thread.close()
    if runner.error is not None:
        raise runner.error
    serving.update(traffic={"origin": traffic.origin, "requests": traffic.count,
                            "median_tokens": float(np.median(traffic.lengths)),
                            "max_tokens": int(traffic.lengths.max())},
                   max_rows=rows, shape_support=dataclasses.asdict(support),
                   loadgen_version=_loadgen_version(), log_dir=str(paths.log_dir))
    result.serving = serving
    result.contention = [tracker.record] if tracker.record else []
    result.parity = _parity(runner.outputs, reference, settings)
    if not result.parity["ok"]:
        result.status = "parity_failed"
        result.reason = result.parity.get("reason", "outputs outside tolerance")
    elif tracker.record is not None and tracker.record.contended:
        result.status = "contended"
        result.reason = f"measured beside other load: {tracker.record.why}"
    else:
        result.status = "ok"


def _loadgen_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("mlcommons-loadgen")
    except metadata.PackageNotFoundError:
        return "?"


def _parity(outputs: Mapping[int, np.ndarray], reference: np.ndarray,
            settings: Mapping[str, Any]) -> dict[str, Any]:
    """Every request LoadGen collected against the reference of the same request (one
    row per request: its logits or pooled embedding, however its batch was padded)."""
    import numpy as np

    from inferbench.measure.parity import compare

    if not outputs:
        return {"ok": False, "reason": "LoadGen collected no output"}
    indices = sorted(outputs)
    parity = compare(np.stack([outputs[i] for i in indices]), reference[indices],
                     str(settings["task"]), settings["parity"])
    parity["requests_compared"] = len(indices)
    return parity


def _single_or_offline(lg: Any, runner: Any, settings: Mapping[str, Any], log_dir: Path,
                       rows: int, expected: Mapping[str, float], count: int) -> dict[str, Any]:
    from inferbench.serve.sut import (
        ServingSut,
        loadgen_test_settings,
        ns_to_ms,
        run_loadgen,
        summary_view,
    )

    scenario = str(settings["scenario"])
    test = loadgen_test_settings(lg, scenario, {**settings, "max_batch": rows},
                                 expected=expected)
    detail = run_loadgen(lg, ServingSut(lg, runner, scenario, rows), count, test, log_dir)
    summary = summary_view(detail)
    serving: dict[str, Any] = {"loadgen": summary, "batching": runner.statistics()}
    if scenario == "SingleStream":
        # LoadGen's early-stopping estimate of p90 (the SingleStream metric); LoadGen
        # logs 0 when the run was too short for one (under 64 queries): then the p90
        # of the run, and the row says which
        early = detail.get("early_stopping_latency_ss") or None
        p90 = detail.get("result_90.00_percentile_latency_ns")
        serving.update(metric="p90_ms", value=ns_to_ms(early if early is not None else p90),
                       p90_source="early_stopping" if early is not None else "run",
                       p90_ms=ns_to_ms(p90), p90_early_stopping_ms=ns_to_ms(early),
                       p99_ms=ns_to_ms(detail.get("result_99.00_percentile_latency_ns")))
    else:
        rate = detail.get("result_samples_per_second")
        serving.update(metric="samples_per_s", value=None if rate is None else float(rate))
    return serving


def _server(lg: Any, runner: Any, settings: Mapping[str, Any], log_dir: Path, rows: int,
            expected: Mapping[str, float], count: int) -> dict[str, Any]:
    from inferbench.serve.search import TrialResult, search_max_qps
    from inferbench.serve.sut import (
        ServingSut,
        loadgen_test_settings,
        ns_to_ms,
        percentile_key,
        run_loadgen,
        summary_view,
    )

    target_ms = float(settings["latency_target_ms"])
    percentile = float(settings["latency_percentile"])
    qps = settings["qps"]

    def trial(target_qps: float) -> TrialResult:
        index = len(trials_run)
        folder = log_dir / f"trial{index:02d}-qps{target_qps:.4g}"
        sut = ServingSut(lg, runner, "Server", rows, float(settings["max_wait_ms"]))
        test = loadgen_test_settings(lg, "Server", settings, expected=expected,
                                     target_qps=target_qps)
        detail = run_loadgen(lg, sut, count, test, folder)
        latency = ns_to_ms(detail.get(percentile_key(percentile)))
        constraint = detail.get("result_perf_constraints_met")
        met = (bool(constraint) if constraint is not None
               else latency is not None and latency <= target_ms) and runner.error is None
        waits = sut.batch_waits_ms
        trials_run.append(target_qps)
        return TrialResult(target_qps=target_qps, met=met, latency_ms=latency, details={
            "log_dir": folder.name,
            "loadgen": summary_view(detail),
            "completed_qps": detail.get("result_completed_samples_per_sec"),
            "scheduled_qps": detail.get("result_scheduled_samples_per_sec"),
            "batches": len(waits),
            "max_batch_wait_ms": max(waits) if waits else None,
        })

    trials_run: list[float] = []
    # A first guess: 80% of what back-to-back full batches sustain.
    guess = 0.8 * rows / max(expected["full_batch_s"], 1e-6)
    found = search_max_qps(trial, float(qps["min"]), float(qps["max"]), int(qps["trials"]),
                           float(qps["max_search_s"]), float(qps["rel_tolerance"]),
                           start_qps=guess)
    return {"metric": "max_qps", "value": found.max_qps, "missed_qps": found.missed_qps,
            "verdict": found.verdict, "stop_reason": found.stop_reason,
            "latency_target_ms": target_ms, "latency_percentile": percentile,
            "max_wait_ms": float(settings["max_wait_ms"]), "first_guess_qps": guess,
            "trials": [dataclasses.asdict(t) for t in found.trials],
            "batching": runner.statistics()}
