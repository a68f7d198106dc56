"""Comparisons between result rows: bootstrap ratios, pairing of backends, cost.

Shared by the plots (``report_plots``) and the findings (``findings``), so a number
in a heatmap cell and the same number in observations.md come from one place.

Every comparison bootstraps the raw per-iteration samples the benchmark stored
(``latency.end_to_end.samples``). Two rows are measured in separate processes, so
their samples are independent: each row is resampled on its own and the ratio of
the two resampled statistics is the bootstrap distribution of the ratio (the same
thing ``scipy.stats.bootstrap`` does for an unpaired two-sample statistic, with the
resamples of a row computed once and reused for all its comparisons).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

CONFIDENCE = 0.95
_CHUNK_VALUES = 4_000_000  # resample in chunks of about this many values (memory bound)


def row_key(result: Mapping[str, Any]) -> tuple[str, str, str, int]:
    return (str(result["target"]), str(result["model"]), str(result["backend"]),
            int(result["batch_size"]))


def is_ok(result: Mapping[str, Any]) -> bool:
    return result.get("status") == "ok" and bool(samples_of(result))


def samples_of(result: Mapping[str, Any], kind: str = "end_to_end") -> list[float]:
    return list((((result.get("latency") or {}).get(kind)) or {}).get("samples") or [])


def _seed(*parts: Any) -> int:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def bootstrap_statistic(samples: Iterable[float], statistic: str, resamples: int,
                        seed: int) -> np.ndarray:
    """``resamples`` bootstrap replicates of the median ("p50") or the mean of ``samples``."""
    values = np.asarray(list(samples), dtype=np.float64)
    if values.size == 0:
        raise ValueError("no samples")
    if statistic not in ("p50", "mean"):
        raise ValueError(f"unknown statistic {statistic!r}")
    if values.size == 1 or np.all(values == values[0]):
        return np.full(resamples, values[0])
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    chunk = max(1, _CHUNK_VALUES // values.size)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        draws = values[rng.integers(0, values.size, size=(stop - start, values.size))]
        out[start:stop] = (np.median(draws, axis=1) if statistic == "p50"
                           else draws.mean(axis=1))
    return out


def percentile_interval(replicates: np.ndarray) -> tuple[float, float]:
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% bootstrap interval."""

    value: float
    low: float
    high: float

    def overlaps(self, other: Interval) -> bool:
        return self.low <= other.high and other.low <= self.high

    def fmt(self, digits: int = 2, unit: str = "") -> str:
        return (f"{self.value:.{digits}f}{unit} [{self.low:.{digits}f}–"
                f"{self.high:.{digits}f}]")


@dataclass(frozen=True)
class Ratio(Interval):
    """numerator statistic / denominator statistic, with its bootstrap interval.

    For latencies, ratio = p50(reference) / p50(candidate): above 1 the candidate
    is faster. ``verdict`` is only "faster"/"slower" when the interval excludes 1.
    """

    @property
    def excludes_one(self) -> bool:
        return self.low > 1.0 or self.high < 1.0

    @property
    def verdict(self) -> str:
        if self.low > 1.0:
            return "faster"
        if self.high < 1.0:
            return "slower"
        return "within noise"

    def fmt(self, digits: int = 2, unit: str = "×") -> str:
        return super().fmt(digits, unit)


class Bootstrapper:
    """Bootstrap replicates per (row, statistic), computed once and cached.

    The seed of a row is derived from its key, so every run over the same results
    gives the same intervals, and two rows never share resampling indices.
    """

    def __init__(self, resamples: int = 2000, seed: int = 0) -> None:
        self.resamples = int(resamples)
        self.seed = int(seed)
        self._cache: dict[tuple[Any, ...], np.ndarray] = {}

    def replicates(self, result: Mapping[str, Any], statistic: str = "p50",
                   kind: str = "end_to_end") -> np.ndarray:
        key = (*row_key(result), statistic, kind)
        if key not in self._cache:
            self._cache[key] = bootstrap_statistic(
                samples_of(result, kind), statistic, self.resamples, _seed(self.seed, *key))
        return self._cache[key]

    def interval(self, result: Mapping[str, Any], statistic: str = "p50",
                 kind: str = "end_to_end") -> Interval:
        values = np.asarray(samples_of(result, kind), dtype=np.float64)
        point = float(np.median(values) if statistic == "p50" else values.mean())
        low, high = percentile_interval(self.replicates(result, statistic, kind))
        return Interval(point, low, high)

    def ratio(self, numerator: Mapping[str, Any], denominator: Mapping[str, Any],
              statistic: str = "p50") -> Ratio:
        """statistic(numerator) / statistic(denominator) with its 95% interval."""
        num = np.asarray(samples_of(numerator), dtype=np.float64)
        den = np.asarray(samples_of(denominator), dtype=np.float64)
        pick = np.median if statistic == "p50" else np.mean
        point = float(pick(num) / pick(den))
        replicates = (self.replicates(numerator, statistic)
                      / self.replicates(denominator, statistic))
        low, high = percentile_interval(replicates)
        return Ratio(point, low, high)

    def speedup(self, reference: Mapping[str, Any], candidate: Mapping[str, Any]) -> Ratio:
        """p50(reference) / p50(candidate): how many times faster the candidate is."""
        return self.ratio(reference, candidate, "p50")

    def overhead(self, result: Mapping[str, Any]) -> Interval | None:
        """p50(end-to-end) − p50(device time) in ms; None without device samples.

        Both series come from the same iterations, so they are resampled together
        (a paired bootstrap) when their lengths match.
        """
        e2e = np.asarray(samples_of(result), dtype=np.float64)
        dev = np.asarray(samples_of(result, "device"), dtype=np.float64)
        if dev.size == 0 or e2e.size == 0:
            return None
        point = float(np.median(e2e) - np.median(dev))
        if e2e.size != dev.size:
            replicates = self.replicates(result, "p50") - self.replicates(result, "p50", "device")
        else:
            rng = np.random.default_rng(_seed(self.seed, *row_key(result), "overhead"))
            replicates = np.empty(self.resamples)
            chunk = max(1, _CHUNK_VALUES // e2e.size)
            for start in range(0, self.resamples, chunk):
                stop = min(self.resamples, start + chunk)
                idx = rng.integers(0, e2e.size, size=(stop - start, e2e.size))
                replicates[start:stop] = (np.median(e2e[idx], axis=1)
                                          - np.median(dev[idx], axis=1))
        low, high = percentile_interval(replicates)
        return Interval(point, low, high)


# -- pairing backends ----------------------------------------------------------

# A backend kind whose lower-precision variant is a different kind.
FP32_KIND = {"torch-dynamic-int8": "torch-eager", "torchao-int8": "torch-eager",
             "torchao-float8": "torch-eager"}


def full_options(result: Mapping[str, Any]) -> dict[str, Any]:
    """The backend's options with its module's defaults filled in, when the kind is known."""
    options = dict(result.get("options") or {})
    try:
        from inferbench.backends import registry

        cls = registry.get(str(result["kind"]))
        return {**dataclasses.asdict(cls.Options()), **options}
    except Exception:  # unknown kind (a result from another version): its own options
        return options


def fp32_partner(result: Mapping[str, Any], candidates: Iterable[Mapping[str, Any]]
                 ) -> Mapping[str, Any] | None:
    """The FP32 row of the same runtime, target, device and batch as ``result``.

    Same runtime: the same kind (or the FP32 kind of a quantising kind, e.g.
    torch-dynamic-int8 -> torch-eager). Among several, the one sharing the most
    option values (ort-cpu-int8-fused pairs with ort-cpu-fused, not ort-cpu).
    """
    kind = FP32_KIND.get(str(result["kind"]), str(result["kind"]))
    mine = full_options(result)
    best: tuple[int, str] | None = None
    chosen = None
    for other in candidates:
        if (other.get("precision") != "fp32" or other["kind"] != kind
                or other["target"] != result["target"] or other["model"] != result["model"]
                or other["device"] != result["device"]
                or other["batch_size"] != result["batch_size"]):
            continue
        theirs = full_options(other)
        shared = sum(1 for k, v in mine.items() if theirs.get(k) == v)
        score = (shared, str(other["backend"]))
        # Most shared options first; then the alphabetically first name (stable).
        if best is None or score[0] > best[0] or (score[0] == best[0] and score[1] < best[1]):
            best, chosen = score, other
    return chosen


# -- cost --------------------------------------------------------------------------

def cost_per_million(price_per_hour: float, throughput_per_s: float) -> float:
    """Price of a million inferences at ``throughput_per_s`` sequences per second."""
    if not throughput_per_s or throughput_per_s <= 0:
        return float("nan")
    return price_per_hour / 3600.0 / throughput_per_s * 1e6


def throughput_interval(boot: Bootstrapper, result: Mapping[str, Any]) -> Interval:
    """Serial throughput (batch / mean latency, sequences/s) with its interval."""
    mean = boot.interval(result, "mean")
    batch = int(result["batch_size"])
    return Interval(batch / mean.value * 1e3, batch / mean.high * 1e3, batch / mean.low * 1e3)


def cost_interval(boot: Bootstrapper, result: Mapping[str, Any], price_per_hour: float
                  ) -> Interval:
    rate = throughput_interval(boot, result)
    return Interval(cost_per_million(price_per_hour, rate.value),
                    cost_per_million(price_per_hour, rate.high),
                    cost_per_million(price_per_hour, rate.low))


def best_throughput_rows(results: Iterable[Mapping[str, Any]]
                         ) -> dict[tuple[str, str, str], Mapping[str, Any]]:
    """Per (target, model, backend): the ok row with the highest serial throughput."""
    best: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    for result in results:
        if not is_ok(result):
            continue
        key = (str(result["target"]), str(result["model"]), str(result["backend"]))
        rate = float(np.mean(samples_of(result)))
        rate = int(result["batch_size"]) / rate if rate > 0 else 0.0
        current = best.get(key)
        if current is None or rate > (int(current["batch_size"])
                                      / float(np.mean(samples_of(current)))):
            best[key] = result
    return best


def prices_from_config(config: Mapping[str, Any]) -> dict[str, float]:
    """Target name -> price per hour, for the targets whose price is configured."""
    return {name: float(entry["price_per_hour"])
            for name, entry in (config.get("targets") or {}).items()
            if isinstance(entry, Mapping) and entry.get("price_per_hour") is not None}


# -- baselines -----------------------------------------------------------------------

def baseline_row(result: Mapping[str, Any], rows: Iterable[Mapping[str, Any]],
                 baseline: str | None) -> Mapping[str, Any] | None:
    """The ok row ``result`` is compared with: the baseline backend at the same target,
    model and batch, on the same device.

    When the configured baseline runs on another device than ``result`` (torch-eager
    on the CPU, result on CUDA), the FP32 row of the baseline's kind on the result's
    device is used instead when there is one, so GPU rows are compared with GPU
    eager and not with the CPU.
    """
    if not baseline:
        return None
    rows = list(rows)
    same = [r for r in rows if is_ok(r) and r["target"] == result["target"]
            and r["model"] == result["model"] and r["batch_size"] == result["batch_size"]]
    named = next((r for r in same if r["backend"] == baseline), None)
    if named is not None and named["device"] == result["device"]:
        return named
    # A target without the named baseline (a GPU machine's results merged into a CPU
    # run) still compares with the FP32 row of the baseline's kind on its device.
    kind = named["kind"] if named is not None else next(
        (r["kind"] for r in rows if r["backend"] == baseline), None)
    local = sorted((r for r in same if r["kind"] == kind and r["precision"] == "fp32"
                    and r["device"] == result["device"]), key=lambda r: str(r["backend"]))
    return local[0] if local else named
