"""Statistics from raw samples, and the stopping rule that collects them.

A row is measured in several fresh processes ("launches"): on these CPUs batch-1
p50 is two-state from one process to the next, so an interval that only sees the
spread inside one process is too narrow. Intervals here are hierarchical
bootstraps: resample launches, then samples within each resampled launch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 95, 99)
CONFIDENCE = 0.95
_Z = 1.959963984540054  # two-sided 95% normal quantile


@dataclass(frozen=True)
class StoppingPolicy:
    """Measure until BOTH min_iterations and min_duration_s are met; then, when
    ``target_rel_ci`` is set, go on until the 95% interval of p50 is narrower than
    +-target_rel_ci of p50; stop at max_duration_s or max_iterations regardless.

    Like MLPerf LoadGen, a run that stops at a cap before the minimums is marked, so
    its tail percentiles are not taken at face value.
    """

    min_iterations: int
    min_duration_s: float
    max_duration_s: float
    warmup_iterations: int = 0
    target_rel_ci: float = 0.0
    max_iterations: int = 1_000_000

    def __post_init__(self) -> None:
        if self.min_iterations < 1:
            raise ValueError("min_iterations must be >= 1")
        if self.min_duration_s > self.max_duration_s:
            raise ValueError("min_duration_s must be <= max_duration_s")
        if self.max_iterations < self.min_iterations:
            raise ValueError("max_iterations must be >= min_iterations")

    @classmethod
    def from_config(cls, measurement: dict[str, Any]) -> StoppingPolicy:
        return cls(min_iterations=int(measurement["min_iterations"]),
                   min_duration_s=float(measurement["min_duration_s"]),
                   max_duration_s=float(measurement["max_duration_s"]),
                   warmup_iterations=int(measurement["warmup_iterations"]),
                   target_rel_ci=float(measurement.get("target_rel_ci") or 0.0),
                   max_iterations=int(measurement.get("max_iterations") or 1_000_000))


@dataclass
class Samples:
    """Raw per-iteration values of one timed loop, and why collection stopped."""

    values: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    stop_reason: str = ""
    minimums_met: bool = False

    @property
    def count(self) -> int:
        return len(self.values)


def median_rel_halfwidth(values: Sequence[float]) -> float:
    """Half-width of the distribution-free 95% interval of the median (order
    statistics at n/2 -+ 1.96 sqrt(n)/2), relative to the median. Cheap enough to
    evaluate after every iteration; inf until there are enough samples."""
    n = len(values)
    if n < 6:
        return math.inf
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    low = max(0, math.floor(n / 2 - _Z * math.sqrt(n) / 2) - 1)
    high = min(n - 1, math.ceil(n / 2 + _Z * math.sqrt(n) / 2) - 1)
    median = float(np.median(ordered))
    if median <= 0:
        return math.inf
    return (ordered[high] - ordered[low]) / 2 / median


def collect(step: Callable[[], float], policy: StoppingPolicy,
            clock: Callable[[], float] = time.perf_counter) -> Samples:
    """Call ``step`` (returns one sample) until the policy says stop; ``clock`` is
    injectable for tests."""
    samples = Samples()
    start = clock()
    while True:
        samples.values.append(step())
        elapsed = clock() - start
        minimums = samples.count >= policy.min_iterations and elapsed >= policy.min_duration_s
        samples.minimums_met = samples.minimums_met or minimums
        if minimums:
            if policy.target_rel_ci <= 0:
                samples.stop_reason = "minimums_met"
                break
            if median_rel_halfwidth(samples.values) <= policy.target_rel_ci:
                samples.stop_reason = "target_rel_ci"
                break
        if elapsed >= policy.max_duration_s:
            samples.stop_reason = "max_duration_cap"
            break
        if samples.count >= policy.max_iterations:
            samples.stop_reason = "max_iterations_cap"
            break
    samples.elapsed_s = clock() - start
    return samples


def linear_percentile(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (its default "linear" method) of a 1-D float64
    array of finite values, bit for bit: the two order statistics around the virtual
    index from one partition, then numpy's interpolation (``_lerp``). np.percentile's
    general machinery costs about 0.1 ms a call, most of a bootstrap's time, and the
    report jobs run thousands of bootstrap replicates."""
    n = values.size
    virtual = (n - 1) * (q / 100)
    if virtual >= n - 1:
        return float(values.max())
    below = math.floor(virtual)
    part = np.partition(values, (below, below + 1))
    low, high = float(part[below]), float(part[below + 1])
    t = virtual - below
    diff = high - low
    return high - diff * (1 - t) if t >= 0.5 else low + diff * t


def hierarchical_replicates(launches: Sequence[Sequence[float]], percentile: float | str,
                            resamples: int = 2000, seed: int = 0) -> np.ndarray:
    """Bootstrap replicates of a percentile of the pooled samples: each replicate
    draws launches with replacement, then samples with replacement inside each drawn
    launch. With one launch this is the ordinary percentile bootstrap. ``percentile``
    "mean" gives replicates of the mean."""
    groups = [np.asarray(g, dtype=np.float64) for g in launches if len(g)]
    if not groups:
        raise ValueError("no samples")
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    sizes = np.array([g.size for g in groups])
    # np.percentile itself for samples holding NaN or infinities (its own handling)
    fast = not isinstance(percentile, str) and all(bool(np.isfinite(g).all()) for g in groups)
    for i in range(resamples):
        picked = rng.integers(0, len(groups), len(groups))
        pooled = np.concatenate([groups[j][rng.integers(0, sizes[j], sizes[j])]
                                 for j in picked])
        if isinstance(percentile, str):
            out[i] = pooled.mean()
        elif fast:
            out[i] = linear_percentile(pooled, percentile)
        else:
            out[i] = np.percentile(pooled, percentile)
    return out


def percentile_interval(replicates: np.ndarray) -> tuple[float, float]:
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def view_stats(launches: Sequence[Sequence[float]], resamples: int = 2000, seed: int = 0
               ) -> Any:
    """``ViewStats`` of one view from its raw samples, one list per launch."""
    from inferbench.results import ViewStats

    pooled = np.concatenate([np.asarray(g, dtype=np.float64) for g in launches if len(g)])
    if pooled.size == 0:
        raise ValueError("no samples")
    mean = float(pooled.mean())
    std = float(pooled.std(ddof=1)) if pooled.size > 1 else 0.0
    p = {q: float(np.percentile(pooled, q)) for q in PERCENTILES}
    if pooled.size < 2 or np.all(pooled == pooled[0]):
        ci50, ci95 = (p[50], p[50]), (p[95], p[95])
    else:
        ci50 = percentile_interval(hierarchical_replicates(launches, 50, resamples, seed))
        ci95 = percentile_interval(hierarchical_replicates(launches, 95, resamples, seed + 1))
    rel = (ci50[1] - ci50[0]) / 2 / p[50] if p[50] > 0 else math.inf
    return ViewStats(count=int(pooled.size), launches=sum(1 for g in launches if len(g)),
                     mean=mean, std=std, min=float(pooled.min()), max=float(pooled.max()),
                     cv=std / mean if mean > 0 else math.nan, p50=p[50], p90=p[90], p95=p[95],
                     p99=p[99], p50_ci95=ci50, p95_ci95=ci95, rel_ci_halfwidth=rel)
