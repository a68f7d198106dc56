"""Compare two runs: did a change make inference slower, and how do two machines compare?

:func:`compare_runs` pairs the rows of a baseline and a current results folder by
(model, backend, precision, batch, scenario, view) and, for each pair, gives the
**time ratio** current / baseline of p50 (and of p99 where both sides have enough
samples) with a 95% interval. Above 1 the current run is slower. For the
``throughput`` view (inferences/s) the ratio is taken the other way round,
baseline rate / current rate, so that it is a time ratio too and every ratio in the
report reads the same way.

The interval is a hierarchical bootstrap of each side's raw samples (draw launches
with replacement, then samples with replacement inside each drawn launch, as
:func:`inferbench.measure.stats.hierarchical_replicates` does), vectorised over the
resamples. The two runs were measured in separate processes, so each side is
resampled on its own and the ratio of the resampled statistics is the bootstrap
distribution of the ratio. With the few launches a row has, the bootstrap of launches is too
narrow, so the interval is widened to a Welch t interval on the launches' own
statistics where that is wider (:func:`launch_ratio_interval`).

Verdict of a pair, with ``band`` the noise band (``--noise-band``, default 2%):

- ``within noise``: the interval contains 1.0, or lies wholly inside
  [1 - band, 1 + band] (a difference too small to matter, however precisely measured);
- ``slower``: otherwise, when the interval lies above 1;
- ``faster``: otherwise, when the interval lies below 1;
- ``not comparable``: the two rows did not time the same work (model or inputs
  differ), one side was not measured (unavailable, error, parity failed) or measured
  beside other load (contended), or one side lacks the view; the reason says which.

A **regression** beyond PCT percent (``--fail-on-regression PCT``) is a comparable
pair whose whole interval lies above 1 + PCT/100: a point estimate beyond PCT with
an interval reaching below it is not one.

Before a ratio is reported the two rows' fingerprints and settings are compared
(:func:`differences`): every field that differs is listed. Model or inputs hash
differ: ``not comparable``. Hardware differs (CPU, cores, ISA, GPU, power limit,
clocks, memory): a *machine* comparison. Only software (packages, driver, CUDA,
Python, OS, inferbench's revision, the ONNX graph) or settings (threads, backend
options, measurement policy) differ: a *software* / *settings* comparison that names
what changed. A field recorded on one side only is listed and changes nothing.

Machines side by side (the multi-target merge) are in :mod:`inferbench.report.machines`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inferbench.io import atomic_path, atomic_write_text
from inferbench.results import MEASURED, VIEWS, Result, ResultFormatError, load_result

CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 2000
DEFAULT_NOISE_BAND_PCT = 2.0
# p99 of fewer samples is little more than the maximum: no ratio below this many.
MIN_SAMPLES_P99 = 100
# Elements per vectorised bootstrap chunk (resamples x pooled samples), ~32 MB.
_CHUNK_ELEMENTS = 4_000_000

VERDICTS = ("slower", "faster", "within noise", "not comparable")
EXIT_OK, EXIT_REGRESSION, EXIT_BAD_INPUT = 0, 1, 2


class CompareError(ValueError):
    """Inputs that cannot be compared; the message says which side and why."""


# -- bootstrap -----------------------------------------------------------------------

def hierarchical_bootstrap(launches: Sequence[Sequence[float]], statistic: float | str,
                           resamples: int, seed: int) -> np.ndarray:
    """Bootstrap replicates of a percentile (0-100) or of ``"mean"`` of the pooled
    samples: each replicate draws launches with replacement, then samples with
    replacement inside each drawn launch (see :func:`bootstrap_statistics`)."""
    return bootstrap_statistics(launches, (statistic,), resamples, seed)[statistic]


def bootstrap_statistics(launches: Sequence[Sequence[float]],
                         statistics: Sequence[float | str], resamples: int, seed: int
                         ) -> dict[float | str, np.ndarray]:
    """Replicates of several statistics from the same hierarchical resamples.
    Vectorised: a chunk of replicates is one padded array (+inf beyond a launch's
    samples); percentiles interpolate linearly as np.percentile does."""
    groups = [np.asarray(g, dtype=np.float64) for g in launches if len(g)]
    if not groups:
        raise ValueError("no samples")
    sizes = np.array([g.size for g in groups])
    width = int(sizes.max())
    table = np.full((len(groups), width), np.inf)
    for index, values in enumerate(groups):
        table[index, :values.size] = values
    rng = np.random.default_rng(seed)
    launches_n = len(groups)
    out = {statistic: np.empty(int(resamples)) for statistic in statistics}
    percentiles = [s for s in statistics if s != "mean"]
    step = max(1, _CHUNK_ELEMENTS // (launches_n * width))
    columns = np.arange(width)
    for start in range(0, int(resamples), step):
        n = min(step, int(resamples) - start)
        picked = rng.integers(0, launches_n, size=(n, launches_n))
        picked_sizes = sizes[picked][..., None]
        inside = (rng.random((n, launches_n, width)) * picked_sizes).astype(np.intp)
        valid = columns < picked_sizes
        drawn = np.where(valid, table[picked[..., None], inside], np.inf).reshape(n, -1)
        count = valid.reshape(n, -1).sum(axis=1)
        if "mean" in out:
            out["mean"][start:start + n] = np.where(valid.reshape(n, -1), drawn,
                                                    0.0).sum(axis=1) / count
        if not percentiles:
            continue
        positions = {q: float(q) / 100.0 * (count - 1) for q in percentiles}
        bounds = {q: (np.floor(p).astype(np.intp),
                      np.minimum(np.floor(p).astype(np.intp) + 1, count - 1))
                  for q, p in positions.items()}
        if np.all(count == count[0]):
            # equal pooled sizes (equal launches, or one): select the order statistics
            # needed instead of sorting (the +inf padding stays at the end)
            kth = sorted({int(b[0]) for pair in bounds.values() for b in pair})
            drawn = np.partition(drawn, kth, axis=1)
        else:
            drawn.sort(axis=1)
        rows = np.arange(n)
        for q, (low, high) in bounds.items():
            below, above = drawn[rows, low], drawn[rows, high]
            out[q][start:start + n] = below + (above - below) * (positions[q] - low)
    return out


def _seed(*parts: Any) -> int:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def pooled_samples(launches: Sequence[Sequence[float]]) -> np.ndarray:
    arrays = [np.asarray(g, dtype=np.float64) for g in launches if len(g)]
    return np.concatenate(arrays) if arrays else np.empty(0)


def statistic_of(values: np.ndarray, statistic: float | str) -> float:
    return float(values.mean() if statistic == "mean" else np.percentile(values, float(statistic)))


@dataclass(frozen=True)
class Ratio:
    """A ratio with its 95% bootstrap interval."""

    value: float
    low: float
    high: float

    def fmt(self, digits: int = 3) -> str:
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}–{self.high:.{digits}f}]"


class Replicates:
    """Bootstrap replicates per (side, row, view, statistic), computed once.

    The seed of each comes from that key, so a rerun gives the same intervals, and
    the two sides of a comparison never share resampling indices (even when they
    hold the same samples)."""

    def __init__(self, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> None:
        self.resamples = int(resamples)
        self.seed = int(seed)
        self._cache: dict[tuple[Any, ...], np.ndarray] = {}

    def get(self, result: Result, side: str, view: str, statistic: float | str
            ) -> np.ndarray:
        row = (side, result.target, result.model, result.backend, result.precision,
               int(result.batch_size), result.scenario, view)
        if (*row, str(statistic)) not in self._cache:
            # p50 and p99 come from the same resamples: one draw, one partition
            together = (50, 99) if statistic in (50, 99) else (statistic,)
            found = bootstrap_statistics(result.view(view).samples, together,
                                         self.resamples, _seed(self.seed, *row))
            for name, values in found.items():
                self._cache[(*row, str(name))] = values
        return self._cache[(*row, str(statistic))]

    def interval(self, result: Result, side: str, view: str, statistic: float | str
                 ) -> Ratio:
        low, high = _percentile_interval(self.get(result, side, view, statistic))
        return Ratio(statistic_of(pooled_samples(result.view(view).samples), statistic), low, high)

    def ratio(self, numerator: tuple[Result, str], denominator: tuple[Result, str],
              view: str, statistic: float | str) -> Ratio:
        """statistic(numerator) / statistic(denominator) of one view, each (result,
        side) resampled on its own."""
        num, den = numerator[0].view(view).samples, denominator[0].view(view).samples
        replicates = (self.get(*numerator, view, statistic)
                      / self.get(*denominator, view, statistic))
        low, high = _percentile_interval(replicates)
        launch_level = launch_ratio_interval(num, den, statistic)
        if launch_level is not None:
            low, high = min(low, launch_level[0]), max(high, launch_level[1])
        value = (statistic_of(pooled_samples(num), statistic)
                 / statistic_of(pooled_samples(den), statistic))
        return Ratio(value, low, high)


def launch_ratio_interval(numerator: Sequence[Sequence[float]],
                          denominator: Sequence[Sequence[float]], statistic: float | str
                          ) -> tuple[float, float] | None:
    """95% Welch t interval of the ratio from each launch's own statistic (log scale);
    None with fewer than two launches on a side.

    With the few launches a row has (3 by default) the bootstrap of launches sees too
    little of the spread between processes: three launches give ten distinct
    resamples, and the bootstrap variance is (n - 1)/n of the sample's with normal
    rather than t quantiles. The interval of a ratio is therefore the union of the
    hierarchical bootstrap interval and this one; where launches agree it changes
    nothing, where a side's launches disagree it widens to what they support."""
    # the t quantile as scipy.stats.t.ppf computes it (stdtrit), without importing
    # scipy.stats (0.5 s of the job)
    from scipy.special import stdtrit

    a = np.log([statistic_of(np.asarray(g, dtype=np.float64), statistic)
                for g in numerator if len(g)])
    b = np.log([statistic_of(np.asarray(g, dtype=np.float64), statistic)
                for g in denominator if len(g)])
    if a.size < 2 or b.size < 2:
        return None
    var_a, var_b = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(var_a + var_b)
    if se == 0 or not math.isfinite(se):
        return None
    dof = (var_a + var_b) ** 2 / (var_a ** 2 / (a.size - 1) + var_b ** 2 / (b.size - 1))
    t = float(stdtrit(dof, 0.5 + CONFIDENCE / 2))
    diff = float(a.mean() - b.mean())
    return math.exp(diff - t * se), math.exp(diff + t * se)


def _percentile_interval(replicates: np.ndarray) -> tuple[float, float]:
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def verdict_of(ratio: Ratio, noise_band: float) -> str:
    """faster / slower / within noise for a time ratio (see the module docstring)."""
    if ratio.low <= 1.0 <= ratio.high:
        return "within noise"
    if 1.0 - noise_band <= ratio.low and ratio.high <= 1.0 + noise_band:
        return "within noise"
    return "slower" if ratio.low > 1.0 else "faster"


# -- loading -------------------------------------------------------------------------

def result_files(path: Path) -> list[Path]:
    """Result files under a folder (results/, results/bench/<target>/, a committed
    folder such as docs/results/h100), or the one file given."""
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("bs*.json")
                  if not p.name.startswith(".") and not any(
                      part.startswith(".") for part in p.relative_to(path).parts[:-1]))


def load_run(path: Path, side: str) -> list[Result]:
    """Every result under ``path``, through the result model; CompareError with one
    line that names the side when there is nothing to compare."""
    path = Path(path)
    if not path.exists():
        raise CompareError(f"{side} {path}: no such folder")
    files = result_files(path)
    if not files:
        raise CompareError(f"{side} {path}: no results (no bs<N>.json result file under it); "
                           "point it at a results folder such as results/bench/<target> or "
                           "docs/results/h100")
    try:
        return [load_result(p) for p in files]
    except ResultFormatError as exc:
        raise CompareError(f"{side}: {exc}") from None


# -- comparability -------------------------------------------------------------------

# Fingerprint fields by what a difference means; a prefix covers a subtree.
IDENTITY = "identity"      # the rows did not time the same work
HARDWARE = "hardware"      # another machine
SOFTWARE = "software"      # same machine, other software
SETTINGS = "settings"      # same software, other settings
HOST = "host"              # listed only (a cluster partition has identical nodes)

_FINGERPRINT_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("hostname", HOST),
    ("cpu_model", HARDWARE), ("cpu_count_logical", HARDWARE),
    ("cpu_count_physical", HARDWARE), ("cpu_isa", HARDWARE), ("cpu_flags", HARDWARE),
    ("memory_total_gib", HARDWARE), ("cuda.device", HARDWARE),
    ("gpus.driver", SOFTWARE), ("gpus", HARDWARE),
    ("packages", SOFTWARE), ("python", SOFTWARE), ("os", SOFTWARE),
    ("cuda.torch_cuda", SOFTWARE), ("git_revision", SOFTWARE),
    ("threads", SETTINGS), ("torch_num_threads", SETTINGS),
    ("torch_quantized_engine", SETTINGS), ("cuda.tf32", SETTINGS),
)
# not compared: which batch job measured it, and the GPU's index in the machine
_IGNORED = ("scheduler", "gpus.index")


def _category(name: str) -> str | None:
    generic = name.replace("[0]", "").replace("[1]", "")
    generic = ".".join(part.split("[")[0] for part in generic.split("."))
    if any(generic == p or generic.startswith(p + ".") for p in _IGNORED):
        return None
    for prefix, category in _FINGERPRINT_CATEGORIES:
        if generic == prefix or generic.startswith(prefix + ".") or generic.startswith(prefix):
            return category
    return SOFTWARE


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        out = {}
        for index, sub in enumerate(value):
            out.update(_flatten(sub, f"{prefix}[{index}]"))
        return out
    if isinstance(value, list):
        return {prefix: ",".join(sorted(map(str, value)))}
    return {prefix: value}


def backend_options(result: Result) -> dict[str, Any]:
    from inferbench.report.rows import full_options

    return full_options({"options": result.options, "kind": result.kind})


def comparable_fields(result: Result) -> dict[str, tuple[str, Any]]:
    """Field name -> (category, value) of everything compared between two rows."""
    fields: dict[str, tuple[str, Any]] = {
        "model_sha256": (IDENTITY, result.model_sha256),
        "inputs_sha256": (IDENTITY, result.inputs_sha256),
        "seq_len": (IDENTITY, result.seq_len),
        "kind": (SETTINGS, result.kind),
        "device": (SETTINGS, result.device),
        "threads": (SETTINGS, result.threads),
        "onnx.sha256": (SOFTWARE, (result.onnx or {}).get("sha256")),
        "onnx.fusions": (SOFTWARE, json.dumps((result.onnx or {}).get("fusions"),
                                              sort_keys=True) if result.onnx else None),
    }
    for key, value in sorted(backend_options(result).items()):
        fields[f"options.{key}"] = (SETTINGS, value)
    for key, value in sorted(((result.stopping or {}).get("policy") or {}).items()):
        if key != "bootstrap_resamples":
            fields[f"measurement.{key}"] = (SETTINGS, value)
    for key, value in _flatten(result.fingerprint).items():
        category = _category(key)
        if category is not None:
            fields[f"fingerprint.{key}"] = (category, value)
    return fields


@dataclass(frozen=True)
class Difference:
    field: str
    category: str
    baseline: Any
    current: Any

    @property
    def one_sided(self) -> bool:
        """Recorded on one side only (an older result, a field added since)."""
        return self.baseline is None or self.current is None

    def describe(self) -> str:
        return f"{self.field} {_show(self.baseline)} → {_show(self.current)}"


def _show(value: Any) -> str:
    if value is None:
        return "(not recorded)"
    text = str(value)
    return text[:12] + "…" if len(text) > 24 and all(c in "0123456789abcdef" for c in text) \
        else text


def differences(baseline: Result, current: Result) -> list[Difference]:
    """Every compared field whose value differs between the two rows."""
    base, cur = comparable_fields(baseline), comparable_fields(current)
    found = []
    for name in sorted(set(base) | set(cur)):
        category = (base.get(name) or cur.get(name) or (SOFTWARE, None))[0]
        old = base.get(name, (category, None))[1]
        new = cur.get(name, (category, None))[1]
        if old != new:
            found.append(Difference(name, category, old, new))
    return found


def comparison_kind(diffs: Iterable[Difference]) -> tuple[str, str]:
    """(kind, what changed): kind is "not comparable", "machine", "software",
    "settings" or "same setup"; one-sided and host fields change nothing."""
    diffs = [d for d in diffs if not d.one_sided and d.category != HOST]
    by_category: dict[str, list[Difference]] = {}
    for diff in diffs:
        by_category.setdefault(diff.category, []).append(diff)
    if IDENTITY in by_category:
        what = "; ".join(d.describe() for d in by_category[IDENTITY])
        names = sorted({"model" if d.field == "model_sha256" else "inputs"
                        for d in by_category[IDENTITY]})
        return "not comparable", f"{' and '.join(names)} differ: {what}"
    for category, kind in ((HARDWARE, "machine"), (SOFTWARE, "software"),
                           (SETTINGS, "settings")):
        if category in by_category:
            changed = "; ".join(d.describe() for c in (HARDWARE, SOFTWARE, SETTINGS)
                                for d in by_category.get(c, []))
            return kind, changed
    return "same setup", ""


# -- pairing and comparing -------------------------------------------------------------

@dataclass
class RowComparison:
    model: str
    backend: str
    precision: str
    batch: int
    scenario: str
    view: str
    target: str | None
    baseline: Result
    current: Result
    kind: str
    changed: str
    verdict: str
    reason: str = ""
    ratio: Ratio | None = None
    p99_ratio: Ratio | None = None
    baseline_p50: float | None = None
    current_p50: float | None = None
    unit: str = ""

    @property
    def comparable(self) -> bool:
        return self.ratio is not None and self.verdict != "not comparable"

    @property
    def label(self) -> str:
        target = f"{self.target}/" if self.target else ""
        extra = f" {self.scenario}" if self.scenario != "batch" else ""
        return f"{target}{self.backend} bs{self.batch}{extra} {self.view}"

    def regression(self, pct: float | None) -> bool:
        return (pct is not None and self.comparable and self.ratio is not None
                and self.ratio.low > 1.0 + pct / 100.0)


@dataclass
class Comparison:
    baseline_path: str
    current_path: str
    noise_band_pct: float
    rows: list[RowComparison]
    only_baseline: list[Result]
    only_current: list[Result]
    baseline_results: list[Result] = field(default_factory=list)
    current_results: list[Result] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {v: sum(r.verdict == v for r in self.rows) for v in VERDICTS}

    def regressions(self, pct: float | None) -> list[RowComparison]:
        found = [r for r in self.rows if r.regression(pct)]
        return sorted(found, key=lambda r: -(r.ratio.low if r.ratio else 0.0))


RowKey = tuple[Any, ...]


def _key(result: Result, with_target: bool) -> RowKey:
    key: RowKey = (result.model, result.backend, result.precision, int(result.batch_size),
                   result.scenario)
    return (*key, result.target) if with_target else key


def _index(results: Sequence[Result], with_target: bool) -> dict[RowKey, Result]:
    return {_key(r, with_target): r for r in results}


def _has_duplicates(results: Sequence[Result]) -> bool:
    return len({_key(r, False) for r in results}) < len(results)


def pair_results(baseline: Sequence[Result], current: Sequence[Result]
                 ) -> tuple[list[tuple[Result, Result]], list[Result], list[Result], bool]:
    """(pairs, baseline only, current only, keyed by target too). A side holding
    several targets is paired target by target; then both sides need the targets."""
    with_target = _has_duplicates(baseline) or _has_duplicates(current)
    if with_target:
        base_targets = sorted({r.target for r in baseline})
        cur_targets = sorted({r.target for r in current})
        if not set(base_targets) & set(cur_targets):
            several, side = (base_targets, "BASELINE") if len(base_targets) > 1 else (
                cur_targets, "CURRENT")
            raise CompareError(
                f"{side} holds results of several targets ({', '.join(several)}) and the "
                f"other side none of them: compare one target's folder "
                f"(results/bench/<target>), or use `inferbench compare-machines` for machines")
    base, cur = _index(baseline, with_target), _index(current, with_target)
    pairs = [(base[k], cur[k]) for k in sorted(set(base) & set(cur), key=str)]
    only_base = [base[k] for k in sorted(set(base) - set(cur), key=str)]
    only_cur = [cur[k] for k in sorted(set(cur) - set(base), key=str)]
    return pairs, only_base, only_cur, with_target


def _not_measured(result: Result) -> str:
    if result.status in MEASURED and any(result.view(v).samples for v in VIEWS):
        if result.status == "contended":
            return f"contended (measured beside other load: {result.reason[:120]})"
        return ""
    reason = result.reason.splitlines()[0][:160] if result.reason else ""
    return f"{result.status}" + (f": {reason}" if reason else "")


def compare_pair(baseline: Result, current: Result, noise_band: float, boot: Replicates,
                 with_target: bool = False) -> list[RowComparison]:
    """One RowComparison per view either side measured (one row for a side that did
    not measure at all)."""
    diffs = differences(baseline, current)
    kind, changed = comparison_kind(diffs)
    common: dict[str, Any] = {
        "model": current.model, "backend": current.backend, "precision": current.precision,
        "batch": int(current.batch_size), "scenario": current.scenario,
        "target": current.target if with_target else None, "baseline": baseline,
        "current": current, "kind": kind, "changed": changed}
    missing = [f"{side}: {why}" for side, result in (("baseline", baseline),
                                                    ("current", current))
               if (why := _not_measured(result))]
    if missing:
        return [RowComparison(**common, view=current.primary_view, verdict="not comparable",
                              reason="; ".join(missing))]
    rows = []
    for view in VIEWS:
        base_view, cur_view = baseline.view(view), current.view(view)
        if not base_view.samples and not cur_view.samples:
            continue
        row = RowComparison(**common, view=view, verdict="not comparable",
                            unit=cur_view.unit or base_view.unit)
        if base_view.samples:
            row.baseline_p50 = statistic_of(pooled_samples(base_view.samples), 50)
        if cur_view.samples:
            row.current_p50 = statistic_of(pooled_samples(cur_view.samples), 50)
        if not base_view.samples or not cur_view.samples:
            side, absent = (("baseline", base_view) if not base_view.samples
                            else ("current", cur_view))
            row.reason = (f"view {view} not measured on {side}"
                          + (f" ({absent.not_applicable})" if absent.not_applicable else ""))
            rows.append(row)
            continue
        # A time ratio for every view: the throughput view is a rate, so baseline/current.
        slower_is_higher = view != "throughput"
        base_side, cur_side = (baseline, "baseline"), (current, "current")
        num, den = (cur_side, base_side) if slower_is_higher else (base_side, cur_side)
        row.ratio = boot.ratio(num, den, view, 50)
        if (slower_is_higher and pooled_samples(cur_view.samples).size >= MIN_SAMPLES_P99
                and pooled_samples(base_view.samples).size >= MIN_SAMPLES_P99):
            row.p99_ratio = boot.ratio(num, den, view, 99)
        if kind == "not comparable":
            row.reason = changed
        else:
            row.verdict = verdict_of(row.ratio, noise_band)
        rows.append(row)
    return rows


def compare_runs(baseline: Sequence[Result], current: Sequence[Result], *,
                 noise_band_pct: float = DEFAULT_NOISE_BAND_PCT,
                 resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                 baseline_path: str = "baseline", current_path: str = "current") -> Comparison:
    pairs, only_base, only_cur, with_target = pair_results(baseline, current)
    if not pairs:
        raise CompareError(
            f"no shared rows: BASELINE {baseline_path} has {_row_names(baseline)}, CURRENT "
            f"{current_path} has {_row_names(current)} (rows pair by model, backend, "
            "precision, batch and scenario; for two machines with different backends use "
            "`inferbench compare-machines`)")
    boot = Replicates(resamples, seed)
    rows = [row for base, cur in pairs
            for row in compare_pair(base, cur, noise_band_pct / 100.0, boot, with_target)]
    return Comparison(baseline_path, current_path, noise_band_pct, rows, only_base, only_cur,
                      list(baseline), list(current))


def _row_names(results: Sequence[Result]) -> str:
    models = sorted({r.model for r in results})
    backends = sorted({r.backend for r in results})
    shown = ", ".join(backends[:6]) + (f" and {len(backends) - 6} more" if len(backends) > 6
                                       else "")
    return f"model {', '.join(models)} with backends {shown}"


# -- the report ----------------------------------------------------------------------

def fmt_number(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"


def _machine(results: Sequence[Result]) -> str:
    cpus = sorted({str(r.fingerprint.get("cpu_model")) for r in results
                   if r.fingerprint.get("cpu_model")})
    gpus = sorted({str(g.get("name")) for r in results for g in r.fingerprint.get("gpus") or []
                   if g.get("name")})
    return f"CPU {', '.join(cpus) or 'unknown'}" + (f"; GPU {', '.join(gpus)}" if gpus else "")


RULE_TEXT = (
    "Ratio = current / baseline of the p50 **time** (for the `throughput` view, baseline "
    "rate / current rate), so above 1 the current run is slower; 95% interval from a "
    "hierarchical bootstrap of both sides' raw samples (launches, then samples within "
    "each launch), widened to a Welch t interval on the launches' own p50 where that is "
    "wider (few launches). Verdict: `within noise` when the interval contains 1 or lies wholly "
    "inside the noise band [1 − b, 1 + b]; otherwise `slower` (interval above 1) or "
    "`faster` (below 1); `not comparable` when the rows did not time the same work "
    "(model or inputs differ), a side was not measured or was contended, or a view is "
    "missing on one side. A regression beyond PCT% is a row whose whole interval lies "
    "above 1 + PCT/100.")


def _row_table(rows: Sequence[RowComparison], gate_pct: float | None) -> str:
    import pandas as pd

    table = pd.DataFrame([{
        "model": r.model, **({"target": r.target} if r.target else {}),
        "backend": r.backend, "precision": r.precision, "batch": r.batch,
        "scenario": r.scenario, "view": r.view,
        "baseline p50": fmt_number(r.baseline_p50) + (f" {r.unit}" if r.unit else ""),
        "current p50": fmt_number(r.current_p50) + (f" {r.unit}" if r.unit else ""),
        "time ratio p50 [95% CI]": r.ratio.fmt() if r.ratio else "–",
        "p99 ratio [95% CI]": r.p99_ratio.fmt() if r.p99_ratio else "–",
        "verdict": ("**regression** " if r.regression(gate_pct) else "") + r.verdict
        + (f" ({r.reason})" if r.reason else ""),
        "comparison": r.kind,
    } for r in rows])
    return table.to_markdown(index=False)


def _differences_section(comparison: Comparison) -> list[str]:
    seen: dict[tuple[str, str, str, str], int] = {}
    for base, cur in {(id(r.baseline), id(r.current)): (r.baseline, r.current)
                      for r in comparison.rows}.values():
        for diff in differences(base, cur):
            key = (diff.category, diff.field, _show(diff.baseline), _show(diff.current))
            seen[key] = seen.get(key, 0) + 1
    if not seen:
        return ["No compared field differs: same machine, software and settings.", ""]
    import pandas as pd

    order = {IDENTITY: 0, HARDWARE: 1, SOFTWARE: 2, SETTINGS: 3, HOST: 4}
    table = pd.DataFrame([{"category": c + (" (one side only)" if "(not recorded)" in (b, n)
                                            else ""),
                           "field": f, "baseline": b, "current": n, "row pairs": count}
                          for (c, f, b, n), count in sorted(
                              seen.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0][1]))])
    return [table.to_markdown(index=False), "",
            "`identity` fields differ: the pair is not comparable; `hardware`: a machine "
            "comparison; `software`/`settings`: what changed on the same machine; fields "
            "recorded on one side only, and `host`, change nothing.", ""]


def _one_side_lines(results: Sequence[Result]) -> list[str]:
    return [f"- {r.target}/{r.model}/{r.backend} bs{r.batch_size} {r.precision} "
            f"{r.scenario} ({r.status})" for r in results]


def markdown_report(comparison: Comparison, gate_pct: float | None = None,
                    plot_name: str | None = None) -> str:
    counts = comparison.counts()
    kinds: dict[str, int] = {}
    for row in comparison.rows:
        kinds[row.kind] = kinds.get(row.kind, 0) + 1
    lines = [f"# Comparison: `{comparison.current_path}` against `{comparison.baseline_path}`",
             "",
             f"- baseline: `{comparison.baseline_path}`, {len(comparison.baseline_results)} "
             f"results, {_machine(comparison.baseline_results)}",
             f"- current: `{comparison.current_path}`, {len(comparison.current_results)} "
             f"results, {_machine(comparison.current_results)}",
             f"- noise band ±{comparison.noise_band_pct:g}%"
             + (f"; regression gate {gate_pct:g}%" if gate_pct is not None else ""),
             "", RULE_TEXT, "",
             "Rows: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n)
             + "; comparisons: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())),
             ""]
    regressions = comparison.regressions(gate_pct)
    if gate_pct is not None:
        lines += [f"## Regressions beyond {gate_pct:g}% (whole interval)", ""]
        lines += ([_row_table(regressions, gate_pct), ""] if regressions
                  else ["None: no row's interval lies wholly beyond the gate.", ""])
    if plot_name:
        lines += [f"![forest plot]({plot_name})", ""]
    lines += ["## What differs between the runs", "", *_differences_section(comparison)]
    lines += ["## Rows", "", _row_table(comparison.rows, gate_pct), ""]
    for title, results in (("baseline", comparison.only_baseline),
                           ("current", comparison.only_current)):
        lines += [f"## Rows on the {title} side only ({len(results)})", ""]
        lines += (_one_side_lines(results) or ["None."]) + [""]
    return "\n".join(lines)


# -- forest plot -----------------------------------------------------------------------

def forest_plot(comparison: Comparison, out: Path, gate_pct: float | None = None) -> None:
    """Time ratio with its interval per comparable row, the noise band shaded, 1.0 and
    the gate drawn, regressions marked in red with a cross."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in comparison.rows if r.ratio is not None]
    height = 1.4 + 0.24 * max(1, len(rows))
    fig, ax = plt.subplots(figsize=(8.0, height))
    band = comparison.noise_band_pct / 100.0
    ax.axvspan(1 - band, 1 + band, color="0.85", zorder=0,
               label=f"noise band ±{comparison.noise_band_pct:g}%")
    ax.axvline(1.0, color="0.3", linewidth=0.8)
    if gate_pct is not None:
        ax.axvline(1 + gate_pct / 100.0, color="firebrick", linestyle="--", linewidth=0.8,
                   label=f"gate +{gate_pct:g}%")
    colors = {"slower": "tab:red", "faster": "tab:green", "within noise": "0.35",
              "not comparable": "tab:orange"}
    if not rows:
        ax.text(0.5, 0.5, "no comparable rows", transform=ax.transAxes, ha="center")
    for y, row in enumerate(rows):
        assert row.ratio is not None
        color = colors[row.verdict]
        ax.errorbar([row.ratio.value], [y], xerr=[[max(0.0, row.ratio.value - row.ratio.low)],
                                                  [max(0.0, row.ratio.high - row.ratio.value)]],
                    fmt="o", color=color, capsize=2, markersize=4)
        if row.regression(gate_pct):
            ax.plot([row.ratio.high * 1.02], [y], marker="x", color="firebrick",
                    markersize=7, mew=2)
    ax.set_yticks(range(len(rows)), [r.label + ("" if r.verdict != "not comparable"
                                                else " (not comparable)") for r in rows],
                  fontsize=7)
    for tick, row in zip(ax.get_yticklabels(), rows, strict=True):
        if row.regression(gate_pct):
            tick.set_color("firebrick")
            tick.set_fontweight("bold")
    ax.invert_yaxis()
    # A log axis only when the ratios span a wide range: most comparisons sit within
    # a few percent of 1, where a log axis would show a single tick.
    lows = [r.ratio.low for r in rows if r.ratio] or [1.0]
    highs = [r.ratio.high for r in rows if r.ratio] or [1.0]
    wide = max(highs) / max(min(lows), 1e-12) > 3
    if wide:
        from matplotlib.ticker import NullLocator

        ax.set_xscale("log")
        lo, hi = min(lows) * 0.95, max(highs) * 1.05
        ticks = [t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0,
                             1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0)
                 if lo <= t <= hi]
        ax.set_xlim(lo, hi)
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("time ratio current / baseline, p50 (> 1 slower), 95% CI"
                  + (", log scale" if wide else ""))
    ax.set_title("slower: red, faster: green, within noise: grey; × regression beyond the "
                 "gate", fontsize=8, loc="left")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(Path(out)) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)


# -- the command -----------------------------------------------------------------------

def _label(paths: Sequence[Path]) -> str:
    """One path as given; several (the workflow passes files): their common folder."""
    if len(paths) == 1:
        return str(paths[0])
    import os

    return os.path.commonpath([str(p) for p in paths]) + f" ({len(paths)} files)"


def run_compare(baseline: Path, current: Path | Sequence[Path], out: Path | None = None,
                plot: Path | None = None, noise_band_pct: float = DEFAULT_NOISE_BAND_PCT,
                fail_on_regression: float | None = None, resamples: int = DEFAULT_RESAMPLES,
                gate_pct: float | None = None) -> tuple[Comparison, list[str], int]:
    """Compare two folders; (comparison, lines to print, exit code). Raises
    CompareError for input that cannot be compared."""
    base = load_run(baseline, "BASELINE")
    currents = [Path(current)] if isinstance(current, str | Path) else [Path(p) for p in current]
    cur = [r for path in currents for r in load_run(path, "CURRENT")]
    comparison = compare_runs(base, cur, noise_band_pct=noise_band_pct, resamples=resamples,
                              baseline_path=str(baseline), current_path=_label(currents))
    gate = fail_on_regression if fail_on_regression is not None else gate_pct
    if plot is not None:
        forest_plot(comparison, plot, gate)
    if out is not None:
        plot_name = None
        if plot is not None:
            try:
                plot_name = str(Path(plot).resolve().relative_to(Path(out).resolve().parent))
            except ValueError:
                plot_name = str(plot)
        atomic_write_text(Path(out), markdown_report(comparison, gate, plot_name))
    lines = []
    regressions = comparison.regressions(fail_on_regression)
    if fail_on_regression is not None and regressions:
        lines.append(f"REGRESSION: {len(regressions)} row(s) slower by more than "
                     f"{fail_on_regression:g}% with the whole 95% interval beyond it:")
        lines += [f"  {r.label}: time ratio {r.ratio.fmt() if r.ratio else '–'}"
                  for r in regressions]
    counts = comparison.counts()
    lines.append("rows: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    for row in comparison.rows:
        if row.verdict in ("slower", "faster") and not row.regression(fail_on_regression):
            lines.append(f"  {row.verdict}: {row.label} {row.ratio.fmt() if row.ratio else ''}")
    if comparison.only_baseline or comparison.only_current:
        lines.append(f"rows on one side only: {len(comparison.only_baseline)} baseline, "
                     f"{len(comparison.only_current)} current (listed in the report)"
                     if out else "rows on one side only:")
        if out is None:
            for side, results in (("baseline", comparison.only_baseline),
                                  ("current", comparison.only_current)):
                lines += [f"  {side} only: {x[2:]}" for x in _one_side_lines(results)]
    kinds = sorted({(r.kind, r.changed) for r in comparison.rows if r.kind != "same setup"})
    for kind, changed in kinds[:5]:
        lines.append(f"{kind} comparison: {changed}" if kind != "not comparable"
                     else f"not comparable: {changed}")
    if out is not None:
        lines.append(f"report: {out}" + (f", plot: {plot}" if plot else ""))
    code = EXIT_REGRESSION if fail_on_regression is not None and regressions else EXIT_OK
    return comparison, lines, code
