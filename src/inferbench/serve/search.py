"""Search for the highest Server QPS whose latency percentile stays under the target.

Each trial is one LoadGen Server run at a target QPS (:data:`Trial` is whatever runs
it; tests pass a crafted one). The search runs the lowest QPS first: a target missed
there is the answer ("cannot meet the target at the lowest QPS"), never 0. Then it
doubles the QPS until a trial misses or the upper bound holds, then bisects between
the highest met and the lowest missed QPS (geometrically: QPS spans decades). It
stops after ``max_trials`` trials, when ``max_seconds`` have passed (no trial
starts after that) or when the bracket is narrower than ``rel_tolerance``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrialResult:
    target_qps: float
    met: bool
    # latency at the target percentile (ms), as LoadGen reports it
    latency_ms: float | None
    details: dict[str, Any] = field(default_factory=dict)


Trial = Callable[[float], TrialResult]


@dataclass
class SearchResult:
    # highest target QPS whose trial met the latency target (None: not even the lowest)
    max_qps: float | None
    # lowest target QPS whose trial missed it (None: the upper bound held)
    missed_qps: float | None
    trials: list[TrialResult]
    stop_reason: str
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def search_max_qps(trial: Trial, qps_min: float, qps_max: float, max_trials: int,
                   max_seconds: float, rel_tolerance: float = 0.1,
                   start_qps: float | None = None,
                   clock: Callable[[], float] = time.monotonic) -> SearchResult:
    """``start_qps``: a guess of the answer (e.g. from a timed batch) tried right after
    the lowest QPS, which saves the doubling steps below it."""
    if not 0 < qps_min < qps_max:
        raise ValueError(f"need 0 < qps_min < qps_max, got {qps_min} and {qps_max}")
    start = clock()
    trials: list[TrialResult] = []

    def run(qps: float) -> bool:
        result = trial(qps)
        trials.append(result)
        return result.met

    def budget_left() -> str:
        if len(trials) >= max_trials:
            return "trial budget spent"
        if clock() - start >= max_seconds:
            return "time budget spent"
        return ""

    if not run(qps_min):
        return SearchResult(None, qps_min, trials, "lowest QPS missed",
                            f"cannot meet the latency target at the lowest QPS ({qps_min:g})")
    low, high = qps_min, None
    stop = ""
    if start_qps is not None:
        start_qps = min(start_qps, qps_max)
    if start_qps is not None and qps_min < start_qps and not budget_left():
        if run(start_qps):
            low = start_qps
        else:
            high = start_qps
    # exponential phase: double until a miss or the upper bound
    while high is None and not (stop := budget_left()):
        if low >= qps_max:
            stop = "upper bound met"
            break
        qps = min(low * 2, qps_max)
        if run(qps):
            low = qps
        else:
            high = qps
    # bisection between the highest met and the lowest missed
    while high is not None and not stop:
        if high / low - 1 <= rel_tolerance:
            stop = "bracket within tolerance"
            break
        if (stop := budget_left()):
            break
        qps = math.sqrt(low * high)
        if run(qps):
            low = qps
        else:
            high = qps
    if high is None:
        verdict = (f"meets the target up to the upper bound {qps_max:g} QPS"
                   if low >= qps_max else f"meets the target at {low:.3g} QPS; "
                   f"higher not tried ({stop})")
    else:
        verdict = f"max {low:.3g} QPS under the target (missed at {high:.3g})"
    return SearchResult(low, high, trials, stop or "upper bound met", verdict)
