"""Statistics on known samples, the hierarchical interval, and the stopping rule with an
injected clock."""

from __future__ import annotations

import numpy as np
import pytest

from inferbench.measure.stats import (
    StoppingPolicy,
    collect,
    hierarchical_replicates,
    linear_percentile,
    median_rel_halfwidth,
    view_stats,
)


def test_view_stats_match_numpy_on_known_samples() -> None:
    samples = np.arange(1, 101, dtype=float)  # 1..100 ms
    stats = view_stats([samples.tolist()], resamples=500)
    assert stats.count == 100 and stats.launches == 1
    assert stats.p50 == pytest.approx(50.5)
    assert stats.p90 == pytest.approx(np.percentile(samples, 90))
    assert stats.p99 == pytest.approx(99.01)
    assert stats.mean == pytest.approx(50.5)
    assert stats.std == pytest.approx(np.std(samples, ddof=1))
    assert stats.cv == pytest.approx(stats.std / 50.5)
    assert stats.min == 1 and stats.max == 100
    low, high = stats.p50_ci95
    assert low < stats.p50 < high
    assert low > 30 and high < 70
    assert stats.rel_ci_halfwidth == pytest.approx((high - low) / 2 / 50.5)


def test_interval_narrows_with_more_samples() -> None:
    rng = np.random.default_rng(1)
    small = view_stats([rng.normal(10, 1, 30).tolist()], 500)
    large = view_stats([rng.normal(10, 1, 3000).tolist()], 500)
    assert large.rel_ci_halfwidth < small.rel_ci_halfwidth / 3


def test_interval_widens_when_launches_differ() -> None:
    """Two-state launches (10 ms in most processes, 12 ms in one): the interval must
    reach towards the other state, while pooling the same samples as one launch would
    not see it."""
    rng = np.random.default_rng(2)
    launches = [rng.normal(mean, 0.05, 200).tolist() for mean in (10.0, 10.0, 10.0, 12.0)]
    hierarchical = view_stats(launches, 1000)
    pooled_as_one = view_stats([[v for launch in launches for v in launch]], 1000)
    assert hierarchical.launches == 4
    assert hierarchical.rel_ci_halfwidth > 5 * pooled_as_one.rel_ci_halfwidth
    assert pooled_as_one.p50_ci95[1] < 10.2
    assert hierarchical.p50_ci95[1] > 10.5


def test_identical_launches_give_the_ordinary_bootstrap_width() -> None:
    rng = np.random.default_rng(3)
    one = rng.normal(10, 0.5, 300)
    same = view_stats([one.tolist(), one.tolist(), one.tolist()], 1000)
    single = view_stats([np.concatenate([one, one, one]).tolist()], 1000)
    assert same.rel_ci_halfwidth == pytest.approx(single.rel_ci_halfwidth, rel=0.35)


def test_hierarchical_replicates_of_the_mean() -> None:
    replicates = hierarchical_replicates([[1.0, 1.0], [3.0, 3.0]], "mean", 400, seed=0)
    assert set(np.round(replicates, 6)) <= {1.0, 2.0, 3.0}
    assert 1.5 < replicates.mean() < 2.5


def test_linear_percentile_is_numpys_bit_for_bit() -> None:
    """The bootstrap's percentile skips np.percentile's machinery, never its result."""
    rng = np.random.default_rng(4)
    for trial in range(3000):
        n = int(rng.integers(1, 150))
        values = [rng.lognormal(3, 1, n), rng.integers(0, 4, n).astype(float),
                  80 + rng.normal(0, 1e-3, n), rng.uniform(-1e6, 1e6, n)][trial % 4]
        for q in (50, 95, 90, 99, 2.5, 0, 100, 37.3):
            expected = np.percentile(values, q)
            assert np.float64(linear_percentile(values, q)).tobytes() == expected.tobytes()


def _replicates_with_np_percentile(launches: list[list[float]], q: float, resamples: int,
                                   seed: int) -> np.ndarray:
    groups = [np.asarray(g, dtype=np.float64) for g in launches]
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    for i in range(resamples):
        picked = rng.integers(0, len(groups), len(groups))
        out[i] = np.percentile(np.concatenate(
            [groups[j][rng.integers(0, groups[j].size, groups[j].size)] for j in picked]), q)
    return out


@pytest.mark.parametrize("nonfinite", [False, True])
def test_hierarchical_replicates_are_those_of_np_percentile(nonfinite: bool) -> None:
    rng = np.random.default_rng(5)
    launches = [rng.lognormal(3, 0.2, n).tolist() for n in (31, 7, 120)]
    if nonfinite:
        launches[1][3] = float("nan")
        launches[2][0] = float("inf")
    for q in (50, 95):
        expected = _replicates_with_np_percentile(launches, q, 300, seed=9)
        assert hierarchical_replicates(launches, q, 300, seed=9).tobytes() == expected.tobytes()


def test_constant_samples_give_a_degenerate_interval() -> None:
    stats = view_stats([[3.0] * 10], 200)
    assert stats.p50_ci95 == (3.0, 3.0) and stats.std == 0.0 and stats.rel_ci_halfwidth == 0


class FakeClock:
    """Advances by ``step`` seconds each time an iteration runs."""

    def __init__(self, step: float, jitter: float = 0.0) -> None:
        self.now = 0.0
        self.step = step
        self.rng = np.random.default_rng(0)
        self.jitter = jitter

    def __call__(self) -> float:
        return self.now

    def iteration(self) -> float:
        spent = self.step * (1 + self.jitter * self.rng.standard_normal())
        self.now += self.step
        return spent * 1e3


def test_stops_when_count_and_duration_both_met() -> None:
    clock = FakeClock(step=0.1)
    policy = StoppingPolicy(min_iterations=5, min_duration_s=2.0, max_duration_s=60)
    samples = collect(clock.iteration, policy, clock)
    # duration is the binding constraint: 20 iterations of 0.1 s
    assert samples.count == 20
    assert samples.stop_reason == "minimums_met" and samples.minimums_met


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
    assert samples.stop_reason == "max_duration_cap" and not samples.minimums_met


def test_adaptive_stop_goes_on_until_the_interval_is_narrow() -> None:
    noisy = FakeClock(step=0.01, jitter=0.2)
    policy = StoppingPolicy(min_iterations=10, min_duration_s=0.0, max_duration_s=1000,
                            target_rel_ci=0.02)
    samples = collect(noisy.iteration, policy, noisy)
    assert samples.stop_reason == "target_rel_ci"
    assert samples.count > 50  # 10 samples of 20% jitter are far from +-2%
    assert median_rel_halfwidth(samples.values) <= 0.02

    steady = FakeClock(step=0.01, jitter=0.001)
    quick = collect(steady.iteration, policy, steady)
    assert quick.stop_reason == "target_rel_ci" and quick.count == 10


def test_adaptive_stop_is_capped_and_says_so() -> None:
    noisy = FakeClock(step=0.01, jitter=0.5)
    policy = StoppingPolicy(min_iterations=5, min_duration_s=0.0, max_duration_s=1000,
                            target_rel_ci=0.001, max_iterations=40)
    samples = collect(noisy.iteration, policy, noisy)
    assert samples.count == 40 and samples.stop_reason == "max_iterations_cap"
    assert samples.minimums_met


def test_policy_rejects_minimum_above_cap() -> None:
    with pytest.raises(ValueError):
        StoppingPolicy(min_iterations=1, min_duration_s=10, max_duration_s=5)
