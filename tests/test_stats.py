"""Statistics on known samples and the stopping rule with an injected clock."""

from __future__ import annotations

import numpy as np
import pytest

from inferbench.stats import StoppingPolicy, bootstrap_ci, collect, summarize


def test_summary_matches_numpy_on_known_samples() -> None:
    samples = np.arange(1, 101, dtype=float)  # 1..100 ms
    summary = summarize(samples, batch_size=4, resamples=500)
    assert summary["count"] == 100
    assert summary["p50"] == pytest.approx(50.5)
    assert summary["p90"] == pytest.approx(np.percentile(samples, 90))
    assert summary["p99"] == pytest.approx(99.01)
    assert summary["mean"] == pytest.approx(50.5)
    assert summary["std"] == pytest.approx(np.std(samples, ddof=1))
    assert summary["cv"] == pytest.approx(summary["std"] / 50.5)
    assert summary["min"] == 1 and summary["max"] == 100
    # serial throughput: batch / mean latency in seconds
    assert summary["serial_throughput_per_s"] == pytest.approx(4 / 0.0505)
    low, high = summary["p50_ci95"]
    assert low < summary["p50"] < high
    assert low > 30 and high < 70


def test_bootstrap_ci_narrows_with_more_samples() -> None:
    rng = np.random.default_rng(1)
    small = rng.normal(10, 1, 30)
    large = rng.normal(10, 1, 3000)
    width_small = np.diff(bootstrap_ci(small, 50, 500))[0]
    width_large = np.diff(bootstrap_ci(large, 50, 500))[0]
    assert width_large < width_small / 3


def test_constant_samples_give_a_degenerate_interval() -> None:
    assert bootstrap_ci(np.full(10, 3.0), 95, 200) == (3.0, 3.0)
    assert summarize([3.0], 1)["std"] == 0.0


class FakeClock:
    """Advances by ``step`` seconds each time an iteration runs."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        return self.now

    def iteration(self) -> tuple[float, None]:
        self.now += self.step
        return self.step * 1e3, None


def test_stops_when_count_and_duration_both_met() -> None:
    clock = FakeClock(step=0.1)
    policy = StoppingPolicy(min_iterations=5, min_duration_s=2.0, max_duration_s=60)
    samples = collect(clock.iteration, policy, clock)
    # duration is the binding constraint: 20 iterations of 0.1 s
    assert samples.count == 20
    assert samples.stop_reason == "minimums_met"


def test_min_count_binds_when_iterations_are_fast() -> None:
    clock = FakeClock(step=0.001)
    policy = StoppingPolicy(min_iterations=50, min_duration_s=0.01, max_duration_s=60)
    samples = collect(clock.iteration, policy, clock)
    assert samples.count == 50


def test_cap_stops_slow_iterations_and_is_marked() -> None:
    clock = FakeClock(step=1.0)
    policy = StoppingPolicy(min_iterations=100, min_duration_s=1.0, max_duration_s=5.0)
    samples = collect(clock.iteration, policy, clock)
    assert samples.count == 5
    assert samples.stop_reason == "max_duration_cap"


def test_policy_rejects_minimum_above_cap() -> None:
    with pytest.raises(ValueError):
        StoppingPolicy(min_iterations=1, min_duration_s=10, max_duration_s=5)
