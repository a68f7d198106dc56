"""Machines side by side: several targets of one merged result set (the multi-target
summary, or folders given on the command line) compared row by row.

Per backend of the reference target and batch: each target's p50 end-to-end latency
with its interval, throughput (the throughput view's p50, or batch / mean latency for
results without one), cost per million inferences where a price is set, and the
speedup p50(reference) / p50(target) with the interval of
:class:`inferbench.report.compare.Replicates` (hierarchical bootstrap, widened by the
launch-level interval). Targets rarely share backend names (``ort-cpu`` here,
``ort-cuda-fp32`` on an H100), so a backend is matched by name, else by runtime kind
and precision with the most option values in common (:func:`counterpart`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from inferbench.io import atomic_path, atomic_write_text
from inferbench.report.compare import (
    DEFAULT_RESAMPLES,
    CompareError,
    Ratio,
    Replicates,
    backend_options,
    fmt_number,
    load_run,
    pooled_samples,
    statistic_of,
)
from inferbench.results import Result


@dataclass
class Cell:
    """One target's row in the side-by-side view."""

    result: Result
    p50: Ratio                # p50 latency (ms) and its interval
    throughput: Ratio | None  # inferences/s and its interval
    throughput_source: str    # "throughput view" or "serial (batch / mean latency)"
    cost: Ratio | None = None  # $ per million inferences


@dataclass
class MachineRow:
    model: str
    backend: str  # the reference target's backend (or "best" for the fastest rows)
    batch: int
    cells: dict[str, Cell]
    speedup: dict[str, Ratio]  # target -> p50(reference) / p50(target)


@dataclass
class MachineComparison:
    reference: str
    targets: list[str]
    rows: list[MachineRow]
    best: list[MachineRow]
    unmatched: dict[str, list[Result]]


def _ok(result: Result) -> bool:
    return result.status == "ok" and bool(result.view("latency").samples)


def _cell(result: Result, price: float | None, boot: Replicates) -> Cell:
    p50 = boot.interval(result, "machine", "latency", 50)
    if result.view("throughput").samples:
        throughput: Ratio | None = boot.interval(result, "machine", "throughput", 50)
        source = "throughput view"
    else:
        mean = boot.interval(result, "machine", "latency", "mean")
        batch = int(result.batch_size)
        throughput = Ratio(batch / mean.value * 1e3, batch / mean.high * 1e3,
                           batch / mean.low * 1e3)
        source = "serial (batch / mean latency)"
    cost = None
    if price is not None and throughput is not None and throughput.value > 0:
        from inferbench.report.rows import cost_per_million

        cost = Ratio(cost_per_million(price, throughput.value),
                     cost_per_million(price, throughput.high),
                     cost_per_million(price, throughput.low))
    return Cell(result, p50, throughput, source, cost)


def counterpart(row: Result, candidates: Iterable[Result]) -> Result | None:
    """The row of another target that ``row`` is compared with: the same backend name,
    else the same runtime kind and precision sharing the most option values (ties:
    the alphabetically first name)."""
    candidates = [c for c in candidates if c.model == row.model
                  and int(c.batch_size) == int(row.batch_size) and _ok(c)]
    same = next((c for c in candidates if c.backend == row.backend), None)
    if same is not None:
        return same
    mine = backend_options(row)
    scored = []
    for other in candidates:
        if other.kind != row.kind or other.precision != row.precision:
            continue
        theirs = backend_options(other)
        shared = sum(1 for k, v in mine.items() if theirs.get(k) == v)
        scored.append((-shared, other.backend, other))
    return min(scored, key=lambda s: (s[0], s[1]))[2] if scored else None


def machine_comparison(results: Sequence[Result], prices: Mapping[str, float] | None = None,
                       reference: str | None = None, resamples: int = DEFAULT_RESAMPLES,
                       seed: int = 0) -> MachineComparison:
    prices = prices or {}
    targets = sorted({r.target for r in results})
    if reference is None:
        reference = targets[0] if targets else ""
    if reference not in targets:
        raise CompareError(f"reference target {reference!r} has no results; targets: "
                           f"{', '.join(targets) or 'none'}")
    others = [t for t in targets if t != reference]
    ok = [r for r in results if _ok(r)]
    cells: dict[tuple[str, str, int], Cell] = {}
    boot = Replicates(resamples, seed)

    def cell(result: Result) -> Cell:
        key = (result.target, result.backend, int(result.batch_size))
        if key not in cells:
            cells[key] = _cell(result, prices.get(result.target), boot)
        return cells[key]

    def speedups(ref: Result, matched: Mapping[str, Result]) -> dict[str, Ratio]:
        return {t: boot.ratio((ref, "machine"), (r, "machine"), "latency", 50)
                for t, r in matched.items()}

    rows, used = [], set()
    for ref in sorted((r for r in ok if r.target == reference),
                      key=lambda r: (r.model, r.backend, r.batch_size)):
        matched = {}
        for target in others:
            other = counterpart(ref, (r for r in ok if r.target == target))
            if other is not None:
                matched[target] = other
                used.add(id(other))
        rows.append(MachineRow(ref.model, ref.backend, int(ref.batch_size),
                               {reference: cell(ref), **{t: cell(r) for t, r in matched.items()}},
                               speedups(ref, matched)))
    best = []
    for model, batch in sorted({(r.model, int(r.batch_size)) for r in ok}):
        fastest = {}
        for target in targets:
            here = [r for r in ok if r.target == target and r.model == model
                    and int(r.batch_size) == batch]
            if here:
                fastest[target] = min(here, key=lambda r: statistic_of(
                    pooled_samples(r.view("latency").samples), 50))
        if reference in fastest and len(fastest) > 1:
            ref = fastest[reference]
            matched = {t: r for t, r in fastest.items() if t != reference}
            best.append(MachineRow(model, "fastest", batch,
                                   {t: cell(r) for t, r in fastest.items()},
                                   speedups(ref, matched)))
    unmatched = {t: [r for r in ok if r.target == t and id(r) not in used] for t in others}
    return MachineComparison(reference, targets, rows, best, unmatched)


def _cell_text(cell: Cell | None) -> tuple[str, str, str]:
    if cell is None:
        return "–", "–", "–"
    p50 = f"{fmt_number(cell.p50.value)} [{fmt_number(cell.p50.low)}–{fmt_number(cell.p50.high)}]"
    if cell.result.backend:
        p50 = f"{cell.result.backend}: {p50}"
    rate = "–" if cell.throughput is None else (
        f"{fmt_number(cell.throughput.value)}" + ("" if cell.throughput_source == "throughput view"
                                             else " (serial)"))
    cost = "–" if cell.cost is None else (
        f"{fmt_number(cell.cost.value)} [{fmt_number(cell.cost.low)}–{fmt_number(cell.cost.high)}]")
    return p50, rate, cost


def machine_markdown(comparison: MachineComparison, plot_name: str | None = None) -> str:
    import pandas as pd

    ref, others = comparison.reference, [t for t in comparison.targets
                                         if t != comparison.reference]
    lines = ["# Machines side by side", ""]
    if not others:
        lines += [f"Only target `{ref}` has results: nothing to compare. Merge another "
                  "machine's results (`include_results`, or copies in results/bench/<target>/) "
                  "to compare machines.", ""]
        return "\n".join(lines)
    lines += [
        f"Reference target `{ref}`; compared: {', '.join(f'`{t}`' for t in others)}. Per "
        "backend and batch: each target's p50 end-to-end latency (ms, 95% CI), throughput "
        "(inferences/s: the throughput view's p50, or `(serial)` = batch / mean latency where "
        "the result has no throughput view), cost per million inferences where "
        "`targets.<name>.price_per_hour` is set, and the speedup p50(reference) / p50(target) "
        "with its 95% hierarchical bootstrap interval (> 1: the target is faster). A backend "
        "of the reference is matched on another target by name, else by runtime kind and "
        "precision with the most option values in common (the backend is named in the "
        "cell). Latency is the end-to-end view on every target, so CPU and GPU rows compare "
        "like for like.", ""]
    if plot_name:
        lines += [f"![speedup between machines]({plot_name})", ""]

    def table(rows: Sequence[MachineRow]) -> str:
        records = []
        for row in rows:
            record: dict[str, str | int] = {"backend": row.backend, "batch": row.batch}
            for target in [ref, *others]:
                p50, rate, cost = _cell_text(row.cells.get(target))
                record[f"{target} p50 ms"] = p50
                record[f"{target} inf/s"] = rate
                if any(c.cost is not None for r in rows for c in r.cells.values()):
                    record[f"{target} $/M inf"] = cost
            for target in others:
                ratio = row.speedup.get(target)
                record[f"{target} speedup"] = (f"{ratio.value:.3g}× [{ratio.low:.3g}–"
                                               f"{ratio.high:.3g}]") if ratio else "–"
            records.append(record)
        return pd.DataFrame(records).to_markdown(index=False)

    if comparison.best:
        lines += ["## Fastest row of each target per batch", "", table(comparison.best), ""]
    lines += ["## Per backend", "", table(comparison.rows), ""]
    for target, rows in comparison.unmatched.items():
        if rows:
            batches: dict[str, list[int]] = {}
            for result in rows:
                batches.setdefault(result.backend, []).append(int(result.batch_size))
            names = [f"{name} (bs {', '.join(map(str, sorted(b)))})"
                     for name, b in sorted(batches.items())]
            lines += [f"Rows of `{target}` with no counterpart on `{ref}` "
                      f"({len(rows)}): {'; '.join(names)}.", ""]
    return "\n".join(lines)


def machine_plot(comparison: MachineComparison, out: Path) -> None:
    """Speedup of each other target over the reference, per matched backend across
    batch sizes (log scale, 95% CI bars), the fastest rows in black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [t for t in comparison.targets if t != comparison.reference]
    fig, axes = plt.subplots(1, max(1, len(others)), squeeze=False,
                             figsize=(7.5 * max(1, len(others)), 4.6))
    if not others:
        axes[0, 0].axis("off")
        axes[0, 0].text(0.5, 0.5, f"only target {comparison.reference}: nothing to compare",
                        ha="center")
    for ax, target in zip(axes[0], others, strict=False):
        series: dict[str, list[tuple[int, Ratio]]] = {}
        for row in comparison.rows:
            if target in row.speedup:
                name = f"{row.backend} ↔ {row.cells[target].result.backend}"
                series.setdefault(name, []).append((row.batch, row.speedup[target]))
        for row in comparison.best:
            if target in row.speedup:
                series.setdefault("fastest ↔ fastest", []).append(
                    (row.batch, row.speedup[target]))
        for name, points in sorted(series.items()):
            points.sort(key=lambda p: p[0])
            xs = [p[0] for p in points]
            ys = [p[1].value for p in points]
            err = [[max(0.0, p[1].value - p[1].low) for p in points],
                   [max(0.0, p[1].high - p[1].value) for p in points]]
            style = {"color": "black", "linewidth": 2.0} if name.startswith("fastest") else {}
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name, **style)
        ax.axhline(1.0, color="0.4", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        batches = sorted({r.batch for r in comparison.rows})
        if batches:
            ax.set_xticks(batches, [str(b) for b in batches])
        from matplotlib.ticker import FuncFormatter

        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("batch size (sequences)")
        ax.set_ylabel(f"speedup of {target} over {comparison.reference}\n"
                      "p50(reference) / p50(target), 95% CI (log)")
        ax.set_title(f"{target} vs {comparison.reference}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    with atomic_path(Path(out)) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)


def run_machine_comparison(result_paths: Sequence[Path], out: Path, plot: Path | None,
                           prices: Mapping[str, float] | None = None,
                           reference: str | None = None,
                           resamples: int = DEFAULT_RESAMPLES) -> MachineComparison:
    results: list[Result] = []
    for path in result_paths:
        results += load_run(Path(path), "input")
    if reference is None and results:
        # the first folder named is the reference (this machine, usually)
        reference = results[0].target
    comparison = machine_comparison(results, prices, reference, resamples)
    plot_name = None
    if plot is not None:
        machine_plot(comparison, plot)
        try:
            plot_name = str(Path(plot).resolve().relative_to(Path(out).resolve().parent))
        except ValueError:
            plot_name = str(plot)
    atomic_write_text(Path(out), machine_markdown(comparison, plot_name))
    return comparison
