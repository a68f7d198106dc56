"""Serving table, CSV rows, plots and findings from the serving results.

One row per target x backend x padding strategy: SingleStream p90, Offline
samples/s, Server max QPS under the latency target (or "misses at <min> QPS") and
the cost per million requests at that QPS when the target has a price per hour.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from inferbench.io import atomic_path, atomic_write_text
from inferbench.results import MEASURED, Result, load_result

CSV_COLUMNS = ["target", "model", "backend", "kind", "device", "precision", "scenario",
               "padding", "status", "reason", "metric", "value", "unit", "max_qps_missed",
               "verdict", "latency_target_ms", "latency_percentile", "max_batch",
               "max_wait_ms", "cost_per_million_requests", "mean_batch", "padding_efficiency",
               "parity_max_abs", "traffic", "loadgen_validity", "loadgen_version",
               "observed_p90_ms", "query_count"]
# A SingleStream cell adds the observed p90 where LoadGen's early-stopping estimate is
# this much above it: with the default 64 queries the estimate is the slowest query.
ESTIMATE_ABOVE_OBSERVED = 1.1
UNITS = {"p90_ms": "ms", "samples_per_s": "samples/s", "max_qps": "queries/s"}


def cost_per_million(qps: float | None, price_per_hour: float | None) -> float | None:
    """Machine cost of a million requests served at ``qps`` (None without a price)."""
    if not qps or price_per_hour is None:
        return None
    return price_per_hour / (qps * 3600.0) * 1e6


def serving_rows(results: Iterable[Result], prices: Mapping[str, float]) -> pd.DataFrame:
    """One CSV row per serving result."""
    rows = []
    for r in results:
        serving = r.serving or {}
        metric = serving.get("metric") or {"SingleStream": "p90_ms", "Offline": "samples_per_s",
                                           "Server": "max_qps"}.get(r.scenario, "")
        value = serving.get("value") if r.status in MEASURED else None
        batching = serving.get("batching") or {}
        rows.append({
            "target": r.target, "model": r.model, "backend": r.backend, "kind": r.kind,
            "device": r.device, "precision": r.precision, "scenario": r.scenario,
            "padding": r.padding, "status": r.status,
            "reason": r.reason.splitlines()[0][:300] if r.reason else "",
            "metric": metric, "value": value, "unit": UNITS.get(metric, ""),
            "max_qps_missed": serving.get("missed_qps"), "verdict": serving.get("verdict"),
            "latency_target_ms": serving.get("latency_target_ms"),
            "latency_percentile": serving.get("latency_percentile"),
            "max_batch": serving.get("max_rows", r.batch_size),
            "max_wait_ms": serving.get("max_wait_ms"),
            "cost_per_million_requests": cost_per_million(value, prices.get(r.target))
            if r.scenario == "Server" else None,
            "mean_batch": batching.get("mean_batch"),
            "padding_efficiency": batching.get("padding_efficiency"),
            "parity_max_abs": (r.parity or {}).get("max_abs"),
            "traffic": (serving.get("traffic") or {}).get("origin"),
            "loadgen_validity": (serving.get("loadgen") or {}).get("result_validity"),
            "loadgen_version": serving.get("loadgen_version"),
            # SingleStream's value is LoadGen's early-stopping estimate, which with few
            # queries is the slowest one; the observed p90 shows what one stall did.
            "observed_p90_ms": serving.get("p90_ms") if r.scenario == "SingleStream" else None,
            "query_count": (serving.get("loadgen") or {}).get("result_query_count"),
        })
    frame = pd.DataFrame(rows, columns=CSV_COLUMNS)
    return frame.sort_values(["target", "backend", "padding", "scenario"], ignore_index=True)


def _missing(value: Any) -> bool:
    return value is None or bool(pd.isna(value))


def _number(value: Any, spec: str) -> str:
    return "–" if _missing(value) else format(value, spec)


def _cell(row: Mapping[str, Any] | None, digits: int = 1) -> str:
    if row is None:
        return "–"
    if row["status"] not in MEASURED:
        return f"{row['status']}"
    value = row["value"]
    if row["scenario"] == "Server" and _missing(value):
        return f"misses at {row['max_qps_missed']:g}"
    if _missing(value):
        return "n/a"
    text = f"{value:.{digits}f}"
    observed = row["observed_p90_ms"]
    if (row["scenario"] == "SingleStream" and not _missing(observed)
            and value > ESTIMATE_ABOVE_OBSERVED * observed):
        text += f" (observed {observed:.{digits}f})"
    if row["scenario"] == "Server" and not _missing(row["max_qps_missed"]):
        text += f" (<{row['max_qps_missed']:.3g})"
    return text + (" ⚠" if row["status"] == "contended" else "")


def markdown_table(frame: pd.DataFrame, target_ms: float | None, percentile: float | None
                   ) -> str:
    head = (f"| target | backend | padding | SingleStream p90 ms | Offline samples/s | "
            f"Server max QPS (p{(percentile or 0.99) * 100:g} ≤ {target_ms or '?'} ms) | "
            "$ per 1M requests | mean batch | padding efficiency |")
    lines = [head, "|" + "---|" * 9]
    notes: list[str] = []
    for (target, backend, padding), group in frame.groupby(["target", "backend", "padding"],
                                                           sort=True):
        by = {row["scenario"]: row for row in group.to_dict("records")}
        server = by.get("Server")
        cost = server.get("cost_per_million_requests") if server else None
        batching = server or by.get("Offline") or by.get("SingleStream") or {}
        efficiency = batching.get("padding_efficiency")
        mean_batch = batching.get("mean_batch")
        lines.append(
            f"| {target} | {backend} | {padding} | {_cell(by.get('SingleStream'), 2)} | "
            f"{_cell(by.get('Offline'))} | {_cell(server)} | {_number(cost, '.3f')} | "
            f"{_number(mean_batch, '.1f')} | {_number(efficiency, '.0%')} |")
        for row in group.to_dict("records"):
            if row["status"] not in MEASURED and row["reason"]:
                notes.append(f"- {target} / {backend} / {padding} / {row['scenario']}: "
                             f"{row['status']}: {row['reason']}")
    out = "\n".join(lines)
    if notes:
        out += "\n\n" + "\n".join(sorted(set(notes)))
    return out


def batch_latency_ranking(bench: Iterable[Result], target: str, batch: int = 16
                          ) -> list[tuple[str, float]]:
    """(backend, latency p50 ms) at ``batch`` on ``target``, fastest first (the batch
    view's ranking the serving ranking is compared with)."""
    rows: list[tuple[str, float]] = []
    for r in bench:
        stats = r.view("latency").stats
        if (r.target == target and r.batch_size == batch and r.status in MEASURED
                and r.scenario == "batch" and stats is not None):
            rows.append((r.backend, stats.p50))
    return sorted(rows, key=lambda item: item[1])


def findings(frame: pd.DataFrame, bench: Sequence[Result], ranking_batch: int = 16
             ) -> list[str]:
    """Statements computed from the serving rows."""
    lines: list[str] = []
    server = frame[(frame["scenario"] == "Server") & frame["status"].isin(MEASURED)]
    for target, group in server.groupby("target", sort=True):
        met = group[group["value"].notna()].sort_values("value", ascending=False)
        missed = group[group["value"].isna()]
        for row in missed.to_dict("records"):
            lines.append(f"- **{target}**: {row['backend']} ({row['padding']}) cannot meet the "
                         f"latency target even at the lowest QPS ({row['max_qps_missed']:g}).")
        if met.empty:
            continue
        best_by_backend = met.drop_duplicates("backend")
        first = best_by_backend.iloc[0]
        text = (f"- **{target}**: most QPS under the target: **{first['backend']}** "
                f"({first['padding']}) at {first['value']:.3g} QPS (bracket "
                f"{first['value']:.3g}–{_upper(first)}).")
        if len(best_by_backend) > 1:
            second = best_by_backend.iloc[1]
            ratio = first["value"] / second["value"]
            second_upper = second["max_qps_missed"]
            separated = second_upper is not None and not pd.isna(second_upper) \
                and first["value"] >= second_upper
            text += (f" Next: {second['backend']} ({second['padding']}) at "
                     f"{second['value']:.3g} QPS (bracket {second['value']:.3g}–"
                     f"{_upper(second)}): {ratio:.2f}x, "
                     + ("outside the search brackets." if separated else
                        "but the brackets overlap: within the search's resolution."))
        lines.append(text)
        ranking = batch_latency_ranking(bench, str(target), ranking_batch)
        statement = ranking_statement(str(target), best_by_backend,
                                      [b for b, _ in ranking], ranking_batch)
        if statement:
            lines.append(statement)
    lines.extend(_padding_gains(frame))
    return lines


def ranking_statement(target: str, best_by_backend: pd.DataFrame, batch_ranking: list[str],
                      ranking_batch: int) -> str | None:
    """Whether the Server ranking (each backend's best padding, most QPS first) matches
    the batch latency ranking (fastest first). A reversed pair counts as a difference
    only where the search separated it: the backend ahead held the target at a QPS at or
    above the one where the other missed; inside overlapping brackets the order is the
    search's resolution, not a finding."""
    serving_order = list(best_by_backend["backend"])
    batch_order = [b for b in batch_ranking if b in serving_order]
    serving_common = [b for b in serving_order if b in batch_order]
    if len(batch_order) < 2:
        return None
    if batch_order == serving_common:
        return (f"- **{target}**: the Server ranking ({' > '.join(serving_common)})"
                f" matches the batch-{ranking_batch} latency ranking.")
    rows = {row["backend"]: row for row in best_by_backend.to_dict("records")}
    reversed_pairs = [(a, b) for i, a in enumerate(serving_common)
                      for b in serving_common[i + 1:]
                      if batch_order.index(b) < batch_order.index(a)]
    separated = [(a, b) for a, b in reversed_pairs
                 if not pd.isna(rows[b]["max_qps_missed"])
                 and rows[a]["value"] >= rows[b]["max_qps_missed"]]
    orders = (f"serving {' > '.join(serving_common)}; batch {ranking_batch} "
              f"{' > '.join(batch_order)}")
    if separated:
        return (f"- **{target}**: the Server ranking differs from the "
                f"batch-{ranking_batch} latency ranking: {orders}.")
    a, b = reversed_pairs[0]
    return (f"- **{target}**: the Server ranking differs from the batch-{ranking_batch} "
            f"latency ranking only within the search's resolution ({orders}; the "
            f"brackets of {a} and {b} overlap), so the two rankings do not measurably "
            "disagree.")


def _upper(row: Mapping[str, Any]) -> str:
    value = row.get("max_qps_missed")
    return "no miss found" if value is None or pd.isna(value) else f"{value:.3g}"


def _padding_gains(frame: pd.DataFrame) -> list[str]:
    """How much dynamic shapes or buckets gain over padding to seq_len, per scenario."""
    lines = []
    measured = frame[frame["status"].isin(MEASURED) & frame["value"].notna()]
    for (target, backend, scenario), group in measured.groupby(
            ["target", "backend", "scenario"], sort=True):
        by = dict(zip(group["padding"], group["value"], strict=True))
        base = by.get("pad_max")
        if not base:
            continue
        gains = []
        for padding in ("dynamic", "buckets"):
            if by.get(padding):
                # latency: lower is better; rates: higher is better
                factor = base / by[padding] if scenario == "SingleStream" else by[padding] / base
                gains.append(f"{padding} {factor:.2f}x")
        if gains:
            what = {"SingleStream": "p90 latency", "Offline": "samples/s",
                    "Server": "max QPS"}[str(scenario)]
            lines.append(f"- {target} / {backend} / {scenario}: over pad_max ({what}): "
                         f"{', '.join(gains)}.")
    return lines


def plot_latency_vs_qps(results: Sequence[Result], target_ms: float | None, path: Path) -> None:
    """p99 (the target percentile) against offered QPS per backend, one panel per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    server = [r for r in results if r.scenario == "Server" and r.serving
              and r.serving.get("trials")]
    targets = sorted({r.target for r in server}) or ["(no Server rows)"]
    fig, axes = plt.subplots(1, len(targets), figsize=(6 * len(targets), 4.2), squeeze=False)
    for ax, target in zip(axes[0], targets, strict=True):
        for r in sorted((r for r in server if r.target == target),
                        key=lambda r: (r.backend, r.padding)):
            trials = sorted(((t["target_qps"], t["latency_ms"])
                             for t in (r.serving or {}).get("trials", [])
                             if t.get("latency_ms") is not None), key=lambda t: t[0])
            if trials:
                xs, ys = zip(*trials, strict=True)
                ax.plot(xs, ys, marker="o", label=f"{r.backend} ({r.padding})")
        if target_ms:
            ax.axhline(target_ms, color="black", linestyle="--", linewidth=1,
                       label=f"target {target_ms:g} ms")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("offered QPS (LoadGen Server target)")
        ax.set_ylabel("p99 latency (ms)")
        ax.set_title(str(target))
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def plot_max_qps(frame: pd.DataFrame, path: Path) -> None:
    """Max QPS under the target as bars; a row that misses at the lowest QPS is drawn
    as an empty bar marked so, never as 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    server = frame[(frame["scenario"] == "Server") & frame["status"].isin(MEASURED)]
    targets = sorted(server["target"].unique()) or ["(no Server rows)"]
    fig, axes = plt.subplots(1, len(targets), figsize=(6 * len(targets), 4.2), squeeze=False)
    for ax, target in zip(axes[0], targets, strict=True):
        group = server[server["target"] == target]
        labels = [f"{b}\n{p}" for b, p in zip(group["backend"], group["padding"], strict=True)]
        values = [0.0 if pd.isna(v) else float(v) for v in group["value"]]
        bars = ax.bar(range(len(values)), values, color="tab:blue")
        for bar, value, missed in zip(bars, group["value"], group["max_qps_missed"],
                                      strict=True):
            if pd.isna(value):
                ax.annotate(f"misses at {missed:g}", (bar.get_x() + bar.get_width() / 2, 0),
                            ha="center", va="bottom", fontsize=7, rotation=90, color="red")
        ax.set_xticks(range(len(values)), labels, fontsize=7, rotation=45, ha="right")
        ax.set_ylabel("max QPS under the latency target")
        ax.set_title(str(target))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_serving_report(result_paths: Sequence[Path], bench_paths: Sequence[Path],
                         context: Mapping[str, Any], table: Path, csv: Path, findings_md: Path,
                         plots_dir: Path) -> pd.DataFrame:
    results = [load_result(p) for p in result_paths]
    bench = [load_result(p) for p in bench_paths]
    frame = serving_rows(results, context.get("prices") or {})
    with atomic_path(csv) as tmp:
        frame.to_csv(tmp, index=False)
    target_ms = context.get("latency_target_ms")
    percentile = context.get("latency_percentile")
    traffic = sorted({t for t in frame["traffic"].dropna()})
    header = [
        "# Serving scenarios (MLPerf LoadGen)", "",
        f"Traffic: {'; '.join(traffic) or 'n/a'}. Server: Poisson arrivals through the dynamic "
        f"batcher; max QPS is the highest LoadGen target QPS whose p{(percentile or 0.99) * 100:g}"
        f" latency stayed ≤ {target_ms} ms (in brackets: the lowest QPS that missed). "
        "SingleStream p90 is LoadGen's early-stopping estimate, an upper bound that with "
        "few queries is the slowest one; where it lies more than "
        f"{ESTIMATE_ABOVE_OBSERVED - 1:.0%} above the observed p90, that follows in brackets. "
        "LoadGen's logs are beside each result (`*.loadgen/`).", "",
    ]
    atomic_write_text(table, "\n".join([*header, markdown_table(frame, target_ms, percentile)])
                      + "\n")
    statements = (findings(frame, bench, int(context.get("ranking_batch") or 16))
                  or ["- No serving row was measured."])
    atomic_write_text(findings_md, "# Serving findings\n\n" + "\n".join(statements) + "\n")
    plots_dir.mkdir(parents=True, exist_ok=True)
    plot_latency_vs_qps(results, target_ms, plots_dir / "serving_latency_vs_qps.png")
    plot_max_qps(frame, plots_dir / "serving_max_qps.png")
    return frame
