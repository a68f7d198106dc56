"""Statistics from raw latency samples, and the stopping rule that collects them."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class StoppingPolicy:
    """Measure until BOTH min_iterations and min_duration_s are met, capped at max_duration_s.

    Like MLPerf LoadGen, a run that stops at the cap before the minimum count is
    marked, so its tail percentiles are not taken at face value.
    """

    min_iterations: int
    min_duration_s: float
    max_duration_s: float
    warmup_iterations: int = 0

    def __post_init__(self) -> None:
        if self.min_iterations < 1:
            raise ValueError("min_iterations must be >= 1")
        if self.min_duration_s > self.max_duration_s:
            raise ValueError("min_duration_s must be <= max_duration_s")

    @classmethod
    def from_config(cls, measurement: dict[str, Any]) -> StoppingPolicy:
        return cls(min_iterations=int(measurement["min_iterations"]),
                   min_duration_s=float(measurement["min_duration_s"]),
                   max_duration_s=float(measurement["max_duration_s"]),
                   warmup_iterations=int(measurement["warmup_iterations"]))


@dataclass
class Samples:
    """Raw per-iteration latencies in milliseconds, and how collection stopped."""

    end_to_end_ms: list[float] = field(default_factory=list)
    device_ms: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    stop_reason: str = ""

    @property
    def count(self) -> int:
        return len(self.end_to_end_ms)


Step = Callable[[], tuple[float, float | None]]
"""One timed iteration: returns (end-to-end ms, device ms or None)."""


def collect(step: Step, policy: StoppingPolicy,
            clock: Callable[[], float] = time.perf_counter) -> Samples:
    """Call ``step`` until the policy says stop; ``clock`` is injectable for tests."""
    samples = Samples()
    start = clock()
    while True:
        e2e_ms, device_ms = step()
        samples.end_to_end_ms.append(e2e_ms)
        if device_ms is not None:
            samples.device_ms.append(device_ms)
        elapsed = clock() - start
        enough = samples.count >= policy.min_iterations and elapsed >= policy.min_duration_s
        if enough:
            samples.stop_reason = "minimums_met"
            break
        if elapsed >= policy.max_duration_s:
            samples.stop_reason = "max_duration_cap"
            break
    samples.elapsed_s = clock() - start
    return samples


def bootstrap_ci(samples: np.ndarray, percentile: float, resamples: int,
                 seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap confidence interval of a percentile of ``samples``."""
    if samples.size < 2 or np.all(samples == samples[0]):
        value = float(np.percentile(samples, percentile))
        return value, value
    from scipy import stats as scipy_stats  # 1 s to import: not for callers that only time

    result = scipy_stats.bootstrap(
        (samples,), lambda x, axis: np.percentile(x, percentile, axis=axis),
        n_resamples=resamples, confidence_level=0.95, method="percentile",
        vectorized=True, random_state=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def summarize(samples_ms: list[float] | np.ndarray, batch_size: int,
              resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Latency statistics (ms) and serial throughput (sequences/s) from raw samples."""
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no samples")
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    summary: dict[str, Any] = {
        "unit": "ms",
        "count": int(values.size),
        "mean": mean,
        "std": std,
        "min": float(values.min()),
        "max": float(values.max()),
        "cv": std / mean if mean > 0 else float("nan"),
    }
    for p in PERCENTILES:
        summary[f"p{p}"] = float(np.percentile(values, p))
    for p in (50, 95):
        low, high = bootstrap_ci(values, p, resamples, seed)
        summary[f"p{p}_ci95"] = [low, high]
    # Serial throughput: one request in flight at a time, batch / mean latency.
    summary["serial_throughput_per_s"] = batch_size / (mean / 1e3) if mean > 0 else float("nan")
    return summary
