"""The result contract: one typed, versioned record per benchmark row.

Every result file (bench rows, crashed-worker rows, rows of other machines merged
into a summary) is written by :func:`write_result` and read by :func:`load_result`,
which upgrades files of an older ``schema_version`` and refuses unknown ones with
the file name and the fix. :func:`long_table` turns records into one row per
result x latency view; the summary, plots and findings read that table (or the
records it was built from), never the JSON directly.

Three latency views, named for what they bracket (as trtexec splits them):

``latency``
    one request in isolation: host inputs in, host outputs out, synchronised (ms).
``gpu_compute``
    device time of the work itself, from CUDA events on the stream the work runs on,
    with the host's launch work queued ahead so that host bookkeeping between kernel
    launches is not counted (ms). Not applicable on the CPU.
``throughput``
    sustained inferences per second with requests issued back to back and one
    synchronisation at the end (inferences/s).

Adding a metric is one field here plus one entry in :data:`LONG_COLUMNS`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
VIEWS = ("latency", "gpu_compute", "throughput")
VIEW_UNITS = {"latency": "ms", "gpu_compute": "ms", "throughput": "inferences/s"}
# "contended": measured, but other processes used the machine during the timed loop.
STATUSES = ("ok", "contended", "parity_failed", "error", "unavailable")
MEASURED = ("ok", "contended")


class ResultFormatError(ValueError):
    """A result file this version of inferbench cannot read."""


@dataclass
class ViewStats:
    """Statistics of one view over every launch's samples (unit of the view)."""

    count: int
    launches: int
    mean: float
    std: float
    min: float
    max: float
    cv: float
    p50: float
    p90: float
    p95: float
    p99: float
    # 95% hierarchical bootstrap interval (launches, then samples within each)
    p50_ci95: tuple[float, float]
    p95_ci95: tuple[float, float]
    # half the width of the p50 interval relative to p50: how much to trust it
    rel_ci_halfwidth: float


@dataclass
class View:
    name: str
    unit: str
    # raw samples, one list per launch (fresh process)
    samples: list[list[float]] = field(default_factory=list)
    stats: ViewStats | None = None
    # why this backend cannot give this view ("" when it can)
    not_applicable: str = ""

    @property
    def applicable(self) -> bool:
        return not self.not_applicable

    @classmethod
    def na(cls, name: str, reason: str) -> View:
        return cls(name=name, unit=VIEW_UNITS[name], not_applicable=reason)


@dataclass
class Memory:
    """Peak memory; each field has one meaning."""

    peak_rss_mib: float | None = None
    # torch caching allocator peaks since process start (CUDA-graph pools included)
    torch_reserved_peak_mib: float | None = None
    torch_allocated_peak_mib: float | None = None
    # NVML: memory used by this process on the GPU the job ran on (runtimes that
    # own their allocator: ONNX Runtime, TensorRT)
    process_gpu_mib: float | None = None
    gpu_index: int | None = None


@dataclass
class Contention:
    """What else used the machine while the timed loops ran."""

    wall_s: float
    cpu_count: int
    own_cpu_s: float
    other_cpu_s: float
    # other processes' CPU time as a fraction of the machine's capacity
    other_cpu_fraction: float
    steal_s: float
    loadavg_before: float
    loadavg_after: float
    contended: bool
    why: str = ""


@dataclass
class Result:
    target: str
    model: str
    backend: str
    kind: str
    device: str
    precision: str
    batch_size: int
    seq_len: int
    threads: int
    options: dict[str, Any] = field(default_factory=dict)
    scenario: str = "batch"
    status: str = "error"
    reason: str = ""
    settings_hash: str = ""
    views: dict[str, View] = field(default_factory=dict)
    # latency p50 - gpu_compute p50 (ms): what the host adds to one request
    host_overhead_ms: float | None = None
    # the primary view's interval is wider than measurement.target_rel_ci allows
    noisy: bool | None = None
    primary_view: str = "latency"
    launches: int = 0
    # [started_at, finished_at] of each launch that ran, in launch order
    launch_windows: list[list[str]] = field(default_factory=list)
    memory: Memory = field(default_factory=Memory)
    contention: list[Contention] = field(default_factory=list)
    energy: dict[str, Any] | None = None
    # achieved TFLOP/s, fraction of the device's peak, kernels per inference
    hardware: dict[str, Any] | None = None
    cold_start: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None
    stopping: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    build: dict[str, Any] | None = None
    onnx: dict[str, Any] | None = None
    fingerprint: dict[str, Any] = field(default_factory=dict)
    # What the row timed: sha256 of the prepared model (its card's file hashes) and of
    # the input set; two rows whose hashes differ did not time the same work.
    model_sha256: str | None = None
    inputs_sha256: str | None = None
    started_at: str = ""
    finished_at: str = ""
    traceback: str | None = None
    # Serving scenarios (scenario SingleStream / Offline / Server; inferbench.serve):
    # the padding strategy, and the LoadGen settings, summary and metric of the row.
    padding: str = ""
    serving: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION

    def view(self, name: str) -> View:
        return self.views.get(name) or View.na(name, "not measured")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "<memory>") -> Result:
        version = raw.get("schema_version")
        if version == 1:
            raw = _upgrade_v1(raw)
        elif version != SCHEMA_VERSION:
            raise ResultFormatError(
                f"{source}: result schema_version {version!r} is not one this inferbench "
                f"reads (1 or {SCHEMA_VERSION}); it was written by a newer or foreign tool: "
                "rerun its benchmark jobs with this version, or remove the file")
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in raw.items() if k in known}
        data["views"] = {name: _view(v) for name, v in (raw.get("views") or {}).items()}
        data["memory"] = Memory(**(raw.get("memory") or {}))
        data["contention"] = [Contention(**c) for c in raw.get("contention") or []]
        try:
            return cls(**data)
        except TypeError as exc:
            raise ResultFormatError(f"{source}: not a result record: {exc}") from None


def _view(raw: Mapping[str, Any]) -> View:
    stats = raw.get("stats")
    if stats is not None:
        stats = ViewStats(**{**stats, "p50_ci95": tuple(stats["p50_ci95"]),
                             "p95_ci95": tuple(stats["p95_ci95"])})
    return View(name=raw["name"], unit=raw["unit"], samples=[list(s) for s in raw["samples"]],
                stats=stats, not_applicable=raw.get("not_applicable", ""))


def _upgrade_v1(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Schema 1 (one launch, `latency.end_to_end` / `latency.device`, one memory column
    with two meanings) to schema 2. Nothing is invented: views schema 1 did not
    measure are marked not applicable with that reason."""
    from inferbench.measure.stats import view_stats

    out = {k: v for k, v in raw.items() if k not in ("latency", "memory", "noisy",
                                                       "fingerprint", "schema_version")}
    out["schema_version"] = SCHEMA_VERSION
    out["fingerprint"] = raw.get("fingerprint") or {}
    latency = raw.get("latency") or {}
    views: dict[str, Any] = {}
    for old, new in (("end_to_end", "latency"), ("device", "gpu_compute")):
        samples = (latency.get(old) or {}).get("samples")
        if samples:
            view = View(new, VIEW_UNITS[new], [list(samples)])
            view.stats = view_stats(view.samples)
            views[new] = dataclasses.asdict(view)
        else:
            reason = ("CPU backend: no device timer" if raw.get("device") == "cpu"
                      else "not measured (schema 1)")
            views[new] = dataclasses.asdict(View.na(new, reason))
    views["throughput"] = dataclasses.asdict(View.na(
        "throughput", "not measured (schema 1 result: no back-to-back pass)"))
    out["views"] = views
    out["launches"] = 1 if views["latency"]["samples"] else 0
    memory = raw.get("memory") or {}
    source = str(memory.get("peak_gpu_source") or "")
    out["memory"] = {
        "peak_rss_mib": memory.get("peak_rss_mib"),
        # schema 1 reset the peak after CUDA-graph capture: allocated, not reserved
        "torch_allocated_peak_mib": memory.get("peak_gpu_mib") if source.startswith("torch")
        else None,
        # schema 1's NVML figure was the whole device (all processes): not kept, as it is
        # not this process's memory
    }
    gpu, e2e = views.get("gpu_compute", {}), views["latency"]
    if gpu.get("stats") and e2e.get("stats"):
        out["host_overhead_ms"] = e2e["stats"]["p50"] - gpu["stats"]["p50"]
    primary = "gpu_compute" if gpu.get("stats") else "latency"
    out["primary_view"] = primary
    return out


def write_result(path: Path, result: Result) -> None:
    from inferbench.io import atomic_write_json

    if result.status not in STATUSES:
        raise ValueError(f"unknown status {result.status!r}; allowed: {', '.join(STATUSES)}")
    atomic_write_json(Path(path), result.to_dict())


def load_result(path: Path) -> Result:
    try:
        raw = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ResultFormatError(f"{path}: not JSON ({exc}); rerun its benchmark job") from None
    if not isinstance(raw, dict):
        raise ResultFormatError(f"{path}: not a result record (a JSON {type(raw).__name__})")
    return Result.from_dict(raw, source=str(path))


def load_records(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Result files through the model (checked, upgraded), as plain records."""
    return [load_result(Path(p)).to_dict() for p in paths]


# -- the long table: one row per result x view ---------------------------------------

SPEC_COLUMNS = ["target", "model", "backend", "kind", "device", "precision", "batch_size",
                "seq_len", "threads", "scenario", "status", "reason"]
VIEW_COLUMNS = ["view", "unit", "not_applicable", "launches", "count", "mean", "std", "min",
                "max", "cv", "p50", "p50_ci_low", "p50_ci_high", "p90", "p95", "p95_ci_low",
                "p95_ci_high", "p99", "rel_ci_halfwidth"]
# per-result metrics repeated on each of its view rows
LONG_COLUMNS: dict[str, Any] = {
    "primary_view": lambda r: r.primary_view,
    "noisy": lambda r: r.noisy,
    "host_overhead_ms": lambda r: r.host_overhead_ms,
    "criteria_met": lambda r: (r.stopping or {}).get("criteria_met"),
    "stop_rules": lambda r: ",".join(sorted(set((r.stopping or {}).get("stop_reasons", [])))),
    "contended_launches": lambda r: sum(c.contended for c in r.contention),
    "other_cpu_fraction": lambda r: max((c.other_cpu_fraction for c in r.contention),
                                        default=None),
    "load_s": lambda r: (r.cold_start or {}).get("load_s"),
    "first_inference_s": lambda r: (r.cold_start or {}).get("first_inference_s"),
    "peak_rss_mib": lambda r: r.memory.peak_rss_mib,
    "torch_reserved_peak_mib": lambda r: r.memory.torch_reserved_peak_mib,
    "torch_allocated_peak_mib": lambda r: r.memory.torch_allocated_peak_mib,
    "process_gpu_mib": lambda r: r.memory.process_gpu_mib,
    "energy_j_per_1000": lambda r: (r.energy or {}).get("joules_per_1000_inferences"),
    "achieved_tflops": lambda r: (r.hardware or {}).get("achieved_tflops"),
    "peak_fraction": lambda r: (r.hardware or {}).get("peak_fraction"),
    "kernels_per_inference": lambda r: (r.hardware or {}).get("kernels_per_inference"),
    "device_busy_fraction": lambda r: (r.hardware or {}).get("device_busy_fraction"),
    "parity_max_abs": lambda r: (r.parity or {}).get("max_abs"),
    "parity_agreement": lambda r: (r.parity or {}).get(
        "label_agreement", (r.parity or {}).get("min_cosine")),
    "fusions": lambda r: ",".join(f"{k}={v}" for k, v in sorted(
        ((r.onnx or {}).get("fusions") or {}).items())) or None,
    "providers": lambda r: ",".join(r.details.get("providers", [])) or None,
    "runs_as": lambda r: r.details.get("runs_as"),
    "build_s": lambda r: (r.build or {}).get("build_s"),
    "cpu_model": lambda r: r.fingerprint.get("cpu_model"),
    "cpu_isa": lambda r: ",".join(r.fingerprint.get("cpu_isa") or []) or None,
    "gpu": lambda r: ((r.fingerprint.get("gpus") or [{}])[0]).get("name"),
    "git_revision": lambda r: r.fingerprint.get("git_revision"),
}


def long_rows(result: Result) -> list[dict[str, Any]]:
    spec = {c: getattr(result, c) for c in SPEC_COLUMNS}
    spec["reason"] = result.reason.splitlines()[0][:300] if result.reason else ""
    extra = {name: get(result) for name, get in LONG_COLUMNS.items()}
    rows = []
    for name in VIEWS:
        view = result.view(name)
        row: dict[str, Any] = {**spec, "view": name, "unit": view.unit,
                               "not_applicable": view.not_applicable or None,
                               "launches": len(view.samples)}
        stats = view.stats
        if stats is not None:
            row.update({k: getattr(stats, k) for k in ("count", "mean", "std", "min", "max",
                                                       "cv", "p50", "p90", "p95", "p99",
                                                       "rel_ci_halfwidth")})
            row.update(p50_ci_low=stats.p50_ci95[0], p50_ci_high=stats.p50_ci95[1],
                       p95_ci_low=stats.p95_ci95[0], p95_ci_high=stats.p95_ci95[1])
        rows.append({**row, **extra})
    return rows


def long_table(results: Iterable[Result]) -> Any:
    """pandas DataFrame, one row per result x view, columns in a fixed order."""
    import pandas as pd

    columns = SPEC_COLUMNS + VIEW_COLUMNS + list(LONG_COLUMNS)
    frame = pd.DataFrame([row for r in results for row in long_rows(r)], columns=columns)
    return frame.sort_values(["target", "model", "backend", "batch_size", "scenario", "view"],
                             ignore_index=True)
