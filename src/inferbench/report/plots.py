"""Report plots drawn from the result JSON files (raw samples included).

- ``speedup_heatmap``: backend × batch, p50 speedup over the baseline with the 95%
  bootstrap interval of the ratio in every cell, one panel per target;
- ``latency_distributions``: the raw per-iteration samples of every backend at one
  batch size, as box plots (tails) and in measurement order (warm-up, drift);
- ``target_comparison``: one panel per target with a shared latency axis (and the
  cost per million inferences when prices are configured), so machines compare
  side by side; with one target it is a single panel.

Each function writes one PNG atomically; ``draw`` is what the CLI calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inferbench.io import atomic_path
from inferbench.report.rows import (
    Bootstrapper,
    baseline_row,
    best_throughput_rows,
    cost_interval,
    is_ok,
    pooled,
)
from inferbench.results import load_records

KINDS = ("speedup", "distributions", "targets")
DPI = 120


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9})
    return plt


def backend_colors(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One stable colour per backend name (sorted), shared by every plot."""
    plt = _plt()
    names = sorted({str(r["backend"]) for r in results})
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def _plain_log(axis: Any) -> None:
    """Plain numbers (0.03, 2, 10) on a log axis instead of powers of ten; minor ticks
    (2, 3, 5 × 10^k) are labelled only when the axis spans less than 1.5 decades."""
    from matplotlib.ticker import FuncFormatter

    def minor(value: float, _: Any) -> str:
        low, high = sorted(axis.get_view_interval())
        if low <= 0 or high / low > 30 or value <= 0:
            return ""
        mantissa = value / 10 ** np.floor(np.log10(value) + 1e-9)
        return f"{value:g}" if round(mantissa) in (2, 3, 5) else ""

    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(FuncFormatter(minor))


def _save(fig: Any, out: Path) -> None:
    plt = _plt()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png", bbox_inches="tight")
    plt.close(fig)


def _targets(results: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted({str(r["target"]) for r in results})


def _empty(out: Path, message: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 1.6))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    _save(fig, out)


def _num(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


# -- speedup heatmap -------------------------------------------------------------------

def speedup_cells(results: Sequence[Mapping[str, Any]], baseline: str | None,
                  boot: Bootstrapper) -> dict[tuple[str, str, int], dict[str, Any]]:
    """(target, backend, batch) -> {ratio, baseline} or {status} for every row."""
    cells: dict[tuple[str, str, int], dict[str, Any]] = {}
    ok = [r for r in results if is_ok(r)]
    for row in results:
        key = (str(row["target"]), str(row["backend"]), int(row["batch_size"]))
        if not is_ok(row):
            cells[key] = {"status": str(row.get("status"))}
            continue
        base = baseline_row(row, ok, baseline)
        if base is None:
            cells[key] = {"status": "no baseline"}
        elif base is row or base["backend"] == row["backend"]:
            cells[key] = {"status": "baseline"}
        else:
            cells[key] = {"ratio": boot.speedup(base, row), "baseline": str(base["backend"])}
    return cells


def speedup_heatmap(results: Sequence[Mapping[str, Any]], baseline: str | None, out: Path,
                    boot: Bootstrapper) -> None:
    if not baseline:
        _empty(out, "No baseline backend configured (config report.baseline).")
        return
    plt = _plt()
    from matplotlib.colors import TwoSlopeNorm

    cells = speedup_cells(results, baseline, boot)
    targets = _targets(results)
    batches = sorted({int(r["batch_size"]) for r in results})
    logs = [np.log2(c["ratio"].value) for c in cells.values() if "ratio" in c]
    limit = max([abs(v) for v in logs] + [np.log2(1.5)])
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit)
    cmap = plt.get_cmap("RdBu")
    heights = [max(1, len({r["backend"] for r in results if r["target"] == t}))
               for t in targets]
    fig, axes = plt.subplots(len(targets), 1, squeeze=False, layout="constrained",
                             figsize=(2.8 + 1.45 * len(batches), 1.0 + 0.62 * sum(heights)
                                      + 0.7 * len(targets)),
                             gridspec_kw={"height_ratios": heights})
    image = None
    for ax, target in zip(axes[:, 0], targets, strict=True):
        backends = sorted({str(r["backend"]) for r in results if r["target"] == target})
        grid = np.full((len(backends), len(batches)), np.nan)
        for i, backend in enumerate(backends):
            for j, batch in enumerate(batches):
                cell = cells.get((target, backend, batch))
                if cell and "ratio" in cell:
                    grid[i, j] = np.log2(cell["ratio"].value)
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, aspect="auto")
        ax.set_facecolor("#e6e6e6")
        for i, backend in enumerate(backends):
            for j, batch in enumerate(batches):
                cell = cells.get((target, backend, batch))
                if cell is None:
                    text, color, style = "not run", "#555555", "italic"
                elif "ratio" in cell:
                    ratio = cell["ratio"]
                    mark = "" if ratio.excludes_one else "≈ "
                    text = (f"{mark}{_num(ratio.value)}×\n[{_num(ratio.low)}–"
                            f"{_num(ratio.high)}]")
                    strong = abs(norm(np.log2(ratio.value)) - 0.5) > 0.3
                    color = "white" if strong else "black"
                    style = "normal" if ratio.excludes_one else "italic"
                else:
                    text, color, style = cell["status"], "#555555", "italic"
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color,
                        style=style)
        ax.set_xticks(range(len(batches)), [str(b) for b in batches])
        ax.set_yticks(range(len(backends)), backends)
        ax.set_xlabel("batch size (sequences)"
                      + ("\n≈ italic: the 95% CI of the ratio includes 1× (within noise)"
                         if target == targets[-1] else ""))
        used = sorted({c["baseline"] for (t, _, _), c in cells.items()
                       if t == target and "baseline" in c} | {
            b for (t, b, _), c in cells.items() if t == target and c.get("status") == "baseline"})
        ax.set_title(f"target {target}: speedup over {', '.join(used) or baseline}", loc="left")
        ax.set_xticks(np.arange(-0.5, len(batches)), minor=True)
        ax.set_yticks(np.arange(-0.5, len(backends)), minor=True)
        ax.grid(which="minor", color="white", linewidth=1.5)
        ax.tick_params(which="minor", length=0)
    if image is not None:
        bar = fig.colorbar(image, ax=axes[:, 0].tolist(), shrink=0.9, pad=0.02)
        step = max(1, int(np.ceil(2 * np.floor(limit) / 8)))
        ticks = [t for t in range(-12, 13, step) if -limit <= t <= limit] or [0]
        bar.set_ticks(ticks, labels=[f"{2.0 ** t:g}×" if t >= 0 else f"1/{2.0 ** -t:g}×"
                                     for t in ticks])
        bar.set_label("p50 speedup over the baseline [95% CI] (log scale; >1× faster)")
    _save(fig, out)


# -- latency distributions ---------------------------------------------------------------

def distribution_batch(results: Sequence[Mapping[str, Any]], requested: int | None
                       ) -> tuple[int | None, str]:
    """The batch to draw: the requested one when measured, else the largest measured."""
    measured = sorted({int(r["batch_size"]) for r in results if is_ok(r)})
    if not measured:
        return None, ""
    if requested is None:
        return measured[-1], ""
    if requested in measured:
        return requested, ""
    return measured[-1], f" (batch {requested} has no measured rows)"


def latency_distributions(results: Sequence[Mapping[str, Any]], batch: int | None, out: Path
                          ) -> None:
    # Each target at its own batch: machines measure different batch ranges (the H100
    # sweep goes to 64, the CPU one to 16) and latencies differ by orders of magnitude.
    per_target = {t: distribution_batch([r for r in results if r["target"] == t], batch)
                  for t in _targets(results)}
    per_target = {t: chosen_note for t, chosen_note in per_target.items()
                  if chosen_note[0] is not None}
    if not per_target:
        _empty(out, "No measured rows: nothing to draw.")
        return
    plt = _plt()
    colors = backend_colors(results)
    targets = list(per_target)
    counts = [len({r["backend"] for r in results if r["target"] == t}) for t in targets]
    fig, axes = plt.subplots(len(targets), 2, squeeze=False,
                             figsize=(12, 0.8 + sum(max(3.0, 0.42 * c) for c in counts)),
                             gridspec_kw={"width_ratios": [1.05, 1]})
    for (box_ax, trace_ax), target in zip(axes, targets, strict=True):
        chosen, note = per_target[target]
        rows = sorted((r for r in results if is_ok(r) and r["target"] == target
                       and int(r["batch_size"]) == chosen), key=lambda r: str(r["backend"]))
        data = [pooled(r) for r in rows]
        names = [str(r["backend"]) for r in rows]
        parts = box_ax.boxplot(data, orientation="horizontal", whis=(5, 95), widths=0.6,
                               patch_artist=True, flierprops={"markersize": 2, "alpha": 0.5},
                               medianprops={"color": "black"})
        for patch, name in zip(parts["boxes"], names, strict=True):
            patch.set_facecolor(colors[name])
            patch.set_alpha(0.55)
        for y, values in enumerate(data, start=1):
            box_ax.plot(np.percentile(values, 99), y, marker="|", markersize=12,
                        color="firebrick")
        box_ax.set_yticks(range(1, len(names) + 1), names)
        box_ax.invert_yaxis()
        # Log scale only where the rows span a decade or more; below that a log axis
        # shows a single labelled tick.
        span = max(v.max() for v in data) / max(min(v.min() for v in data), 1e-9)
        scale = "log" if span >= 10 else "linear"
        box_ax.set_xscale(scale)
        if scale == "log":
            _plain_log(box_ax.xaxis)
        box_ax.set_xlabel(f"end-to-end latency per batch (ms{', log scale' * (scale == 'log')})")
        box_ax.set_title(f"target {target}, batch {chosen}{note}: box = IQR, whiskers "
                         "p5–p95, red | = p99")
        box_ax.grid(True, axis="x", which="both", alpha=0.3)
        for values, name in zip(data, names, strict=True):
            trace_ax.plot(np.arange(1, values.size + 1), values, linewidth=0.8,
                          color=colors[name], label=f"{name} (n={values.size})")
        trace_ax.set_xscale("log")
        _plain_log(trace_ax.xaxis)
        trace_ax.set_yscale(scale)
        if scale == "log":
            _plain_log(trace_ax.yaxis)
        trace_ax.set_xlabel("timed iteration (after warm-up, log scale)")
        trace_ax.set_ylabel(f"latency (ms{', log scale' * (scale == 'log')})")
        trace_ax.set_title(f"target {target}, batch {chosen}: samples in measurement order")
        trace_ax.grid(True, which="both", alpha=0.3)
        trace_ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                        frameon=False)
        for ax in (box_ax, trace_ax):
            ax.tick_params(which="both", labelbottom=True)
    fig.tight_layout()
    _save(fig, out)


# -- per-target comparison -------------------------------------------------------------

def target_comparison(results: Sequence[Mapping[str, Any]], prices: Mapping[str, float],
                      out: Path, boot: Bootstrapper) -> None:
    ok = [r for r in results if is_ok(r)]
    if not ok:
        _empty(out, "No measured rows: nothing to compare.")
        return
    plt = _plt()
    colors = backend_colors(results)
    targets = _targets(results)
    backends = sorted({str(r["backend"]) for r in ok})
    batches = sorted({int(r["batch_size"]) for r in ok})
    priced = any(t in prices for t in targets)
    nrows = 2 if priced else 1
    width = max(4.2, 0.22 * len(backends) * len(batches) + 1.5)
    fig, axes = plt.subplots(nrows, len(targets), squeeze=False, sharey="row",
                             figsize=(width * len(targets) + 1.8, 4.0 * nrows))
    bar_w = 0.8 / max(1, len(backends))
    for col, target in enumerate(targets):
        ax = axes[0, col]
        for i, backend in enumerate(backends):
            xs, ys, lows, highs = [], [], [], []
            for j, batch in enumerate(batches):
                row = next((r for r in ok if r["target"] == target and r["backend"] == backend
                            and int(r["batch_size"]) == batch), None)
                if row is None:
                    continue
                iv = boot.interval(row)
                xs.append(j - 0.4 + bar_w * (i + 0.5))
                ys.append(iv.value)
                lows.append(iv.value - iv.low)
                highs.append(iv.high - iv.value)
            if xs:
                ax.bar(xs, ys, width=bar_w, color=colors[backend], yerr=[lows, highs],
                       capsize=2, error_kw={"linewidth": 0.8}, label=backend)
        ax.set_yscale("log")
        _plain_log(ax.yaxis)
        ax.set_xticks(range(len(batches)), [str(b) for b in batches])
        ax.set_xlabel("batch size (sequences)")
        ax.set_title(f"target {target}" + (f" (${prices[target]:g}/h)"
                                             if target in prices else ""))
        ax.grid(True, axis="y", which="both", alpha=0.3)
        if not any(r["target"] == target for r in ok):
            ax.text(0.5, 0.5, "no measured rows", transform=ax.transAxes, ha="center")
    axes[0, 0].set_ylabel("p50 latency per batch (ms, log scale)\nerror bars: 95% CI")
    if priced:
        best = best_throughput_rows(ok)
        for col, target in enumerate(targets):
            ax = axes[1, col]
            if target not in prices:
                ax.text(0.5, 0.5, f"no price_per_hour for {target}", transform=ax.transAxes,
                        ha="center", va="center")
                ax.set_xticks([])
                continue
            names, values, lows, highs, ticks = [], [], [], [], []
            for backend in backends:
                row = best.get((target, str(ok[0]["model"]), backend))
                if row is None:
                    row = next((r for k, r in best.items()
                                if k[0] == target and k[2] == backend), None)
                if row is None:
                    continue
                cost = cost_interval(boot, row, prices[target])
                names.append(backend)
                values.append(cost.value)
                lows.append(cost.value - cost.low)
                highs.append(cost.high - cost.value)
                ticks.append(f"{backend} (bs {row['batch_size']})")
            ax.bar(range(len(names)), values, color=[colors[n] for n in names],
                   yerr=[lows, highs], capsize=2)
            ax.set_xticks(range(len(names)), ticks, rotation=30, ha="right")
            ax.set_yscale("log")
            _plain_log(ax.yaxis)
            ax.grid(True, axis="y", which="both", alpha=0.3)
        axes[1, 0].set_ylabel("$ per million inferences\nat best throughput (log scale)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    seen = dict(zip(labels, handles, strict=True))
    for ax in axes[0, 1:]:
        h, lab = ax.get_legend_handles_labels()
        seen.update(zip(lab, h, strict=True))
    fig.legend([seen[k] for k in sorted(seen)], sorted(seen), loc="upper left",
               bbox_to_anchor=(1.0, 0.98), fontsize=8, frameon=False, title="backend")
    fig.tight_layout()
    _save(fig, out)


# -- entry point -----------------------------------------------------------------------

def draw(kind: str, result_paths: Sequence[Path], context: Mapping[str, Any], out: Path
         ) -> None:
    """Draw one plot (``kind`` in KINDS) from result JSON files."""
    results = load_records(result_paths)
    boot = Bootstrapper(int(context.get("resamples") or 2000), int(context.get("seed") or 0))
    if kind == "speedup":
        speedup_heatmap(results, context.get("baseline"), out, boot)
    elif kind == "distributions":
        latency_distributions(results, context.get("distribution_batch"), out)
    elif kind == "targets":
        target_comparison(results, context.get("prices") or {}, out, boot)
    else:
        raise ValueError(f"unknown plot {kind!r}; one of {', '.join(KINDS)}")
