"""Merge result JSON files into one long table, a Markdown summary and plots."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inferbench.io import atomic_path, atomic_write_text
from inferbench.results import Result, load_result, long_table

# The wide summary: one row per result; latency columns are the `latency` view,
# `gpu_p50_ms` the `gpu_compute` view, `throughput_per_s` the `throughput` view.
VIEW_PREFIX = {"latency": "", "gpu_compute": "gpu_", "throughput": "throughput_"}


def load_results(paths: Iterable[Path]) -> list[Result]:
    return [load_result(Path(p)) for p in paths]


def to_frame(results: Iterable[Result]) -> pd.DataFrame:
    """The long table (one row per result x view) pivoted to one row per result."""
    long = long_table(results)
    keys = ["target", "model", "backend", "batch_size", "scenario"]
    latency = long[long.view == "latency"].rename(columns={
        "p50": "p50_ms", "p50_ci_low": "p50_ci_low_ms", "p50_ci_high": "p50_ci_high_ms",
        "p90": "p90_ms", "p95": "p95_ms", "p95_ci_low": "p95_ci_low_ms",
        "p95_ci_high": "p95_ci_high_ms", "p99": "p99_ms", "mean": "mean_ms", "std": "std_ms",
        "min": "min_ms", "max": "max_ms", "count": "iterations",
        "rel_ci_halfwidth": "latency_rel_ci"}).drop(columns=["view", "unit", "not_applicable"])
    gpu = long[long.view == "gpu_compute"].set_index(keys)
    thr = long[long.view == "throughput"].set_index(keys)
    frame = latency.set_index(keys)
    frame["gpu_p50_ms"] = gpu.p50
    frame["gpu_p50_ci_low_ms"] = gpu.p50_ci_low
    frame["gpu_p50_ci_high_ms"] = gpu.p50_ci_high
    frame["gpu_p95_ms"] = gpu.p95
    frame["gpu_rel_ci"] = gpu.rel_ci_halfwidth
    frame["gpu_not_applicable"] = gpu.not_applicable
    frame["throughput_per_s"] = thr.p50
    frame["throughput_ci_low_per_s"] = thr.p50_ci_low
    frame["throughput_ci_high_per_s"] = thr.p50_ci_high
    frame["throughput_not_applicable"] = thr.not_applicable
    # serial: one request in flight at a time, batch / mean latency
    frame["serial_throughput_per_s"] = frame.index.get_level_values("batch_size") / (
        frame.mean_ms / 1e3)
    frame["primary_rel_ci"] = np.where(frame.primary_view == "gpu_compute", frame.gpu_rel_ci,
                                       frame.latency_rel_ci)
    frame = frame.reset_index()
    return frame.sort_values(["target", "model", "backend", "batch_size"], ignore_index=True)


def add_speedup(frame: pd.DataFrame, results: list[dict[str, Any]], baseline: str | None
                ) -> pd.DataFrame:
    """Speedup of p50 over the baseline row at the same target and batch size.

    The baseline row is chosen as the plots and findings choose it
    (comparison.baseline_row): on a target without the named baseline, the FP32 row
    of the baseline's kind on the same device.
    """
    from inferbench.report.rows import baseline_row

    frame = frame.copy()
    frame["speedup_vs_baseline"] = np.nan
    frame["baseline_backend"] = None
    if not baseline:
        return frame
    p50 = {(r["target"], r["model"], r["backend"], r["batch_size"]):
           r["views"]["latency"]["stats"]["p50"] for r in results if r.get("status") == "ok"}
    for result in results:
        if result.get("status") != "ok":
            continue
        base = baseline_row(result, results, baseline)
        if base is None:
            continue
        mask = ((frame.target == result["target"]) & (frame.model == result["model"])
                & (frame.backend == result["backend"])
                & (frame.batch_size == result["batch_size"]))
        reference = p50[(base["target"], base["model"], base["backend"], base["batch_size"])]
        own = p50[(result["target"], result["model"], result["backend"], result["batch_size"])]
        frame.loc[mask, "speedup_vs_baseline"] = reference / own
        frame.loc[mask, "baseline_backend"] = base["backend"]
    return frame


# GPU models recognised in a target name (h100, gpu-a100, l4-spot, ...): a target
# named after one expects it in its fingerprint's GPU name.
NAMED_GPUS = ("gh200", "h200", "h100", "h20", "b200", "b100", "a100", "a800", "a40", "a30",
              "a10g", "a10", "a6000", "l40s", "l40", "l4", "t4", "v100", "p100", "mi300x",
              "mi250x", "mi250")


def _has_token(text: str, token: str) -> bool:
    return re.search(rf"(?<![a-z0-9]){re.escape(token)}(?![a-z0-9])", text.lower()) is not None


def expected_fingerprint(target: str, expect: Mapping[str, Mapping[str, str]]
                         ) -> dict[str, str]:
    """What a target's fingerprint must show: `targets.<name>.expect` (substrings `gpu`,
    `cpu_model`), else `gpu_token`, a GPU model named in the target name (a token between
    - _ . such as h100 in gpu-h100), matched as a whole word (a10 is not A100)."""
    if target in expect:
        return dict(expect[target])
    named = [t for t in re.split(r"[-_.]", target.lower()) if t in NAMED_GPUS]
    return {"gpu_token": named[0]} if named else {}


def fingerprint_problem(cpu: Any, gpu: Any, expected: Mapping[str, str]) -> str:
    """Why a result's machine contradicts its target's expectation ("" if it does not)."""
    cpu = cpu if isinstance(cpu, str) else ""
    gpu = gpu if isinstance(gpu, str) else ""
    problems = []
    want_gpu = expected.get("gpu")
    if want_gpu and want_gpu.lower() == "none":
        if gpu:
            problems.append(f"GPU {gpu!r} where none is expected")
    elif want_gpu and want_gpu.lower() not in gpu.lower():
        problems.append(f"GPU {gpu or 'none'!r} is not {want_gpu!r}")
    token = expected.get("gpu_token")
    if token and not _has_token(gpu, token):
        problems.append(f"GPU {gpu or 'none'!r} is not the {token} the target name says")
    want_cpu = expected.get("cpu_model")
    if want_cpu and want_cpu.lower() not in cpu.lower():
        problems.append(f"CPU {cpu or 'unknown'!r} is not {want_cpu!r}")
    return "; ".join(problems)


def add_fingerprint_check(frame: pd.DataFrame,
                          expect: Mapping[str, Mapping[str, str]] | None) -> pd.DataFrame:
    """Column `fingerprint_check`: why a row's machine contradicts its target, or "".

    Two rules. (1) The target's expectation (`targets.<name>.expect`, or a GPU model in
    its name) must hold. (2) A target is one kind of machine: rows whose CPU/GPU differ
    from the target's most common machine are flagged (results copied from elsewhere).
    Rows without a fingerprint (failed before measuring) are not judged. The hostname
    is not compared: a cluster partition has many identical nodes.
    """
    frame = frame.copy()
    checks = []
    for target, group in frame.groupby("target", sort=False):
        expected = expected_fingerprint(str(target), expect or {})
        judged = group[group.cpu_model.notna()]
        machines = list(zip(judged.cpu_model, judged.gpu.fillna(""), strict=True))
        # (a tie goes to the machine of the target's first row: deterministic)
        usual = max(machines, key=machines.count) if machines else None
        for index, row in group.iterrows():
            if pd.isna(row.cpu_model):
                checks.append((index, ""))
                continue
            problem = fingerprint_problem(row.cpu_model, row.gpu, expected)
            if usual and (row.cpu_model, row.gpu if isinstance(row.gpu, str) else "") != usual:
                other = f"{usual[0]}" + (f" / {usual[1]}" if usual[1] else "")
                problem = "; ".join(filter(None, [problem, f"machine differs from the "
                                                           f"target's other rows ({other})"]))
            checks.append((index, problem))
    frame["fingerprint_check"] = pd.Series(dict(checks), dtype=object).reindex(frame.index)
    frame["fingerprint_check"] = frame["fingerprint_check"].fillna("")
    return frame


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _ci(low: Any, high: Any, digits: int = 2) -> str:
    return f" [{_fmt(low, digits)}–{_fmt(high, digits)}]" if pd.notna(low) else ""


def markdown_table(frame: pd.DataFrame) -> str:
    rows = []
    for _, r in frame.iterrows():
        flags = []
        if r.noisy is True:
            flags.append("noisy")
        if r.criteria_met is False:
            flags.append("cap hit")
        if getattr(r, "fingerprint_check", ""):
            flags.append("fingerprint≠target")
        status = r.status + (f" ({', '.join(flags)})" if flags else "")
        if r.status not in ("ok",) and r.reason:
            status += f": {r.reason}"
        measured = pd.notna(r.p50_ms)
        gpu = (f"{_fmt(r.gpu_p50_ms, 3)}{_ci(r.gpu_p50_ci_low_ms, r.gpu_p50_ci_high_ms, 3)}"
               if pd.notna(r.gpu_p50_ms) else ("n/a" if measured else "–"))
        rows.append({
            "target": r.target, "backend": r.backend, "device": r.device,
            "precision": r.precision, "batch": int(r.batch_size), "status": status,
            "latency p50 ms [95% CI]": (f"{_fmt(r.p50_ms)}{_ci(r.p50_ci_low_ms, r.p50_ci_high_ms)}"
                                        if measured else "–"),
            "±% (primary)": _fmt(r.primary_rel_ci * 100 if pd.notna(r.primary_rel_ci)
                                 else None, 1),
            "p99 ms": _fmt(r.p99_ms),
            "gpu_compute p50 ms": gpu,
            "host overhead ms": _fmt(r.host_overhead_ms, 3),
            "throughput inf/s": _fmt(r.throughput_per_s, 1),
            "speedup": (_fmt(r.speedup_vs_baseline) + "x")
            if pd.notna(r.speedup_vs_baseline) else "–",
            "launches": int(r.launches) if pd.notna(r.launches) and r.launches else "–",
            "load s": _fmt(r.load_s), "first ms":
            _fmt(r.first_inference_s * 1e3 if pd.notna(r.first_inference_s) else None, 1),
            "peak RSS MiB": _fmt(r.peak_rss_mib, 0),
            "torch reserved MiB": _fmt(r.torch_reserved_peak_mib, 0),
            "process GPU MiB": _fmt(r.process_gpu_mib, 0),
            "J/1k inf": _fmt(r.energy_j_per_1000, 2),
            "TFLOP/s (% peak)": (f"{r.achieved_tflops:.1f}"
                                 + (f" ({r.peak_fraction:.0%})" if pd.notna(r.peak_fraction)
                                    else "")) if pd.notna(r.achieved_tflops) else "–",
            "kernels": _fmt(r.kernels_per_inference, 0),
            "parity max|Δ|": _fmt(r.parity_max_abs, 4), "agree": _fmt(r.parity_agreement, 3),
            "fusions": r.fusions or "–",
            **report_cells(r),
        })
    return pd.DataFrame(rows).to_markdown(index=False)


VIEWS_TEXT = (
    "Three latency views, each from its own timed pass in every launch: **latency** is one "
    "request in isolation (host inputs in, host outputs out, synchronised); "
    "**gpu_compute** is CUDA-event time of the work on the stream it runs on, with the "
    "host's launches queued ahead so host bookkeeping is not counted (`n/a` on the CPU); "
    "**throughput** is inferences per second with requests issued back to back and one "
    "synchronisation at the end. Host overhead = latency p50 − gpu_compute p50.")


def recommendations(frame: pd.DataFrame, records: list[dict[str, Any]]) -> list[str]:
    """Per target: the fastest backend at each batch, said only where the 95% interval
    of the ratio to the runner-up excludes 1."""
    from inferbench.report.rows import Bootstrapper, is_ok

    boot = Bootstrapper(resamples=1000)
    ok = [r for r in records if is_ok(r)]
    lines = []
    for target in sorted({str(r["target"]) for r in ok}):
        parts = []
        for batch in sorted({int(r["batch_size"]) for r in ok if r["target"] == target}):
            rows = sorted((r for r in ok if r["target"] == target
                           and int(r["batch_size"]) == batch),
                          key=lambda r: r["views"]["latency"]["stats"]["p50"])
            if len(rows) < 2:
                continue
            best, second = rows[0], rows[1]
            ratio = boot.speedup(second, best)
            if ratio.low > 1.0:
                parts.append(f"batch {batch}: **{best['backend']}**, {ratio.value:.2f}x "
                             f"[{ratio.low:.2f}–{ratio.high:.2f}] faster than "
                             f"{second['backend']}")
            else:
                parts.append(f"batch {batch}: {best['backend']} and {second['backend']} are "
                             "within noise of each other")
        if parts:
            lines.append(f"- `{target}` (latency view): " + "; ".join(parts) + ".")
    return lines


def _speedup_text(context: Mapping[str, Any]) -> str:
    baseline = context.get("baseline")
    if not baseline:
        return ("No speedups: no baseline backend (`report.baseline` is null, or the config "
                "has no FP32 backend).")
    return (f"Speedup is latency p50 relative to `{baseline}` on the same target and batch "
            "(on a target without it: the FP32 row of its kind on the same device).")


def header(context: Mapping[str, Any], frame: pd.DataFrame,
           records: list[dict[str, Any]] | None = None) -> str:
    card = context.get("card") or {}
    lines = ["# inferbench summary", ""]
    recommended = recommendations(frame, records or [])
    if recommended:
        lines += ["## Recommendation", "", *recommended,
                  "", "Only differences whose 95% interval excludes no difference are "
                  "stated; contended and noisy rows are not used.", ""]
    from inferbench.report.provenance import header_lines

    lines += header_lines(card, context)
    lines += [
        "",
        f"Sequence length {context.get('seq_len')}, intra-op threads {context.get('threads')} "
        "for every runtime. " + VIEWS_TEXT + " Each row is measured in several fresh "
        "processes (`launches`); intervals are 95% hierarchical bootstrap intervals "
        "(launches, then samples), and `±%` is the half-width of the primary view's p50 "
        "interval (gpu_compute on GPU rows, latency elsewhere): above "
        "`measurement.noisy_rel_ci` the row is flagged noisy. " + _speedup_text(context),
        "",
    ]
    targets = []
    for target, group in frame.groupby("target"):
        cpu = group.cpu_model.dropna().unique()
        gpu = group.gpu.dropna().unique()
        isa: list[str] = list(group.cpu_isa.dropna().unique()) if "cpu_isa" in group else []
        targets.append(f"- target `{target}`: CPU {', '.join(cpu) or 'n/a'}"
                       + (f" ({', '.join(isa)})" if len(isa) else "")
                       + (f"; GPU {', '.join(gpu)}" if len(gpu) else ""))
        problems = sorted(set(group.get("fingerprint_check", pd.Series(dtype=object))) - {""})
        if problems:
            flagged = int((group.fingerprint_check != "").sum())
            targets.append(f"  - **fingerprint contradicts the target** ({flagged} "
                           f"row{'s' if flagged != 1 else ''}, marked `fingerprint≠target`): "
                           f"{'; '.join(problems)}")
    counts = frame.status.value_counts().to_dict()
    lines += ["Machines:", *targets, "",
              "Rows: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())), ""]
    contended = frame[frame.status == "contended"]
    if len(contended):
        lines += [f"**{len(contended)} row{'s were' if len(contended) != 1 else ' was'} "
                  "measured while other processes used the machine** (status `contended`: "
                  f"{contended.reason.iloc[0]}); they are left out of the recommendation and "
                  "the findings. Rerun them on a quiet machine.", ""]
    return "\n".join(lines)


def plot(frame: pd.DataFrame, plots_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots_dir.mkdir(parents=True, exist_ok=True)
    ok = frame[frame.status == "ok"]
    targets = sorted(frame.target.unique()) or ["local"]
    specs = [("latency_vs_batch.png", "p50_ms", "latency per batch (ms, log scale)", True),
             ("throughput_vs_batch.png", "serial_throughput_per_s",
              "serial throughput (sequences/s, log scale)", False)]
    for filename, column, ylabel, errorbars in specs:
        fig, axes = plt.subplots(1, len(targets), figsize=(6.5 * len(targets), 4.6),
                                 squeeze=False, sharey=False)
        for ax, target in zip(axes[0], targets, strict=True):
            sub = ok[ok.target == target]
            for backend, group in sub.groupby("backend"):
                group = group.sort_values("batch_size")
                if errorbars:
                    # arrays: matplotlib calls float() on a one-row Series, which pandas
                    # deprecates
                    low = (group[column] - group.p50_ci_low_ms).to_numpy()
                    high = (group.p50_ci_high_ms - group[column]).to_numpy()
                    ax.errorbar(group.batch_size, group[column], yerr=[low, high], marker="o",
                                capsize=3, label=backend)
                    ax.plot(group.batch_size, group.p95_ms, linestyle=":", alpha=0.5,
                            color=ax.lines[-1].get_color())
                else:
                    ax.plot(group.batch_size, group[column], marker="o", label=backend)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            batches = sorted(frame.batch_size.unique())
            ax.set_xticks(batches, [str(b) for b in batches])
            ax.set_xlabel("batch size (sequences, log scale)")
            ax.set_ylabel(ylabel)
            ax.set_title(f"target {target}")
            ax.grid(True, which="both", alpha=0.3)
        # One legend outside the panels (it never covers a line), plus a key to the styles.
        from matplotlib.lines import Line2D

        seen: dict[str, Any] = {}
        for ax in axes[0]:
            handles, labels = ax.get_legend_handles_labels()
            seen.update(zip(labels, handles, strict=True))
        handles = [seen[k] for k in sorted(seen)]
        labels = sorted(seen)
        if errorbars:
            handles += [Line2D([], [], color="gray", marker="o"),
                        Line2D([], [], color="gray", linestyle=":")]
            labels += ["p50 (bars: 95% CI)", "p95"]
        fig.tight_layout()
        if handles:
            fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.97),
                       fontsize=8, frameon=False)
        with atomic_path(plots_dir / filename) as tmp:
            fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
        plt.close(fig)


def aggregate(result_paths: list[Path], context: Mapping[str, Any], csv_path: Path,
              table_path: Path, plots_dir: Path,
              accuracy_paths: list[Path] | None = None,
              serving_csv: Path | None = None) -> pd.DataFrame:
    results = load_results(result_paths)
    records = [r.to_dict() for r in results]
    frame = add_speedup(to_frame(results), records, context.get("baseline"))
    frame = add_fingerprint_check(frame, context.get("expect"))
    accuracy = [json.loads(Path(p).read_text()) for p in accuracy_paths or []]
    frame = add_report_columns(frame, context, accuracy)
    rows = frame
    if serving_csv is not None:
        # serving-scenario rows (inferbench.serve.report) join the CSV with their own
        # columns; scenario tells them from the batch rows
        rows = pd.concat([frame, pd.read_csv(serving_csv)], ignore_index=True)
    with atomic_path(csv_path) as tmp:
        rows.to_csv(tmp, index=False)
    atomic_write_text(table_path, header(context, frame, records) + "\n"
                      + markdown_table(frame) + "\n" + report_sections(frame, context, accuracy))
    plot(frame, plots_dir)
    return frame


# -- accuracy and cost columns ---------------------------------------------------------

def add_report_columns(frame: pd.DataFrame, context: Mapping[str, Any],
                       accuracy: list[dict[str, Any]]) -> pd.DataFrame:
    """Accuracy per backend (and its paired delta from FP32), and the cost per million
    inferences at each row's serial throughput where the target has a price."""
    from inferbench.measure.accuracy import accuracy_frame
    from inferbench.report.rows import cost_per_million

    frame = frame.copy()
    if accuracy:
        extra = accuracy_frame(accuracy, context.get("baseline"))
        frame = frame.merge(extra, on=["target", "model", "backend"], how="left")
    prices = context.get("prices") or {}
    frame["price_per_hour"] = [prices.get(t, np.nan) for t in frame.target]
    frame["cost_per_million"] = [
        cost_per_million(price, rate) if pd.notna(price) and pd.notna(rate) else np.nan
        for price, rate in zip(frame.price_per_hour, frame.serial_throughput_per_s,
                               strict=True)]
    return frame


def report_cells(r: Any) -> dict[str, str]:
    """The summary table's accuracy and cost cells, when the frame has them."""
    cells = {}
    if "accuracy" in r.index and r.status == "ok" and pd.notna(r.accuracy):
        delta = r.get("accuracy_delta_vs_fp32")
        cells["accuracy (Δ FP32)"] = f"{r.accuracy:.2%}" + (
            f" ({delta * 100:+.2f})" if pd.notna(delta) else "")
    elif "accuracy" in r.index:
        cells["accuracy (Δ FP32)"] = "–"
    if "cost_per_million" in r.index and pd.notna(r.cost_per_million):
        cells["$ / M inf"] = f"{r.cost_per_million:.3g}"
    elif "price_per_hour" in r.index and pd.notna(r.price_per_hour):
        cells["$ / M inf"] = "–"
    return cells


def report_sections(frame: pd.DataFrame, context: Mapping[str, Any],
                    accuracy: list[dict[str, Any]]) -> str:
    """Cost at each backend's best throughput, and the accuracy section (or why not)."""
    from inferbench.measure.accuracy import markdown_section

    lines = [""]
    priced = frame[(frame.status == "ok") & frame.cost_per_million.notna()]
    if len(priced):
        best = priced.loc[priced.groupby(["target", "model", "backend"])
                          .serial_throughput_per_s.idxmax()].sort_values(
                              ["target", "cost_per_million"])
        table = pd.DataFrame({
            "target": best.target, "backend": best.backend,
            "best batch": best.batch_size.astype(int),
            "seq/s (serial)": best.serial_throughput_per_s.map(lambda v: f"{v:.1f}"),
            "$ / hour": best.price_per_hour.map(lambda v: f"{v:g}"),
            "$ / million inferences": best.cost_per_million.map(lambda v: f"{v:.4g}")})
        lines += ["## Cost per million inferences at each backend's best throughput", "",
                  "Price per hour of the target (config `targets.<name>.price_per_hour`) "
                  "divided by the best serial throughput over the measured batch sizes.", "",
                  table.to_markdown(index=False), ""]
    reason = None if (context.get("accuracy") or {}).get("dataset") else \
        "no `accuracy.dataset` configured"
    lines.append(markdown_section(accuracy, context.get("baseline"), reason))
    return "\n".join(lines)
