"""Short statements derived from the results, each with its numbers and intervals.

A statement that compares two rows is only made when the 95% bootstrap interval
of their ratio excludes 1 (for the runtime overhead: when the interval of the
difference excludes 0); otherwise it says the difference is within noise. The
intervals come from the raw per-iteration samples (see ``inferbench.report.rows``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inferbench import isa
from inferbench.report.rows import (
    Bootstrapper,
    Ratio,
    baseline_row,
    best_throughput_rows,
    cost_interval,
    fp32_partner,
    is_ok,
    throughput_interval,
)
from inferbench.results import load_records

SECTIONS = {
    "winner": "Fastest backend at each batch size",
    "speedup": "Speedup over the baseline",
    "int8": "INT8 against FP32 of the same runtime",
    "half": "FP16 / BF16 against FP32 of the same runtime",
    "overhead": "Runtime overhead at batch 1 (GPU: end-to-end minus device time)",
    "cost": "Cost per million inferences at each backend's best throughput",
    "accuracy": "Accuracy per backend",
    "unmeasured": "Rows without a measurement",
}


@dataclass
class Finding:
    """One statement. ``supported`` is False when it reports a difference within noise."""

    topic: str
    target: str
    text: str
    supported: bool
    subject: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _p50(boot: Bootstrapper, row: Mapping[str, Any]) -> str:
    iv = boot.interval(row)
    return f"p50 {_ms(iv.value)} ms [{_ms(iv.low)}–{_ms(iv.high)}]"


def _clause(ratio: Ratio, batch: int, better: str = "faster", worse: str = "slower") -> str:
    word = {"faster": better, "slower": worse}.get(ratio.verdict, "within noise")
    return f"batch {batch}: {ratio.fmt()} → {word}"


def _by_target(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    grouped: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[str(row["target"])].append(row)
    return dict(sorted(grouped.items()))


# -- the findings -------------------------------------------------------------------

def winners(rows: Sequence[Mapping[str, Any]], boot: Bootstrapper) -> list[Finding]:
    out = []
    for target, group in _by_target(r for r in rows if is_ok(r)).items():
        for batch in sorted({int(r["batch_size"]) for r in group}):
            at = sorted((r for r in group if int(r["batch_size"]) == batch),
                        key=lambda r: boot.interval(r).value)
            best = at[0]
            if len(at) == 1:
                out.append(Finding("winner", target, f"`{target}`, batch {batch}: only "
                                   f"`{best['backend']}` was measured ({_p50(boot, best)}).",
                                   False, best["backend"], {"batch": batch}))
                continue
            ratios = {str(r["backend"]): boot.speedup(r, best) for r in at[1:]}
            tied = [name for name, ratio in ratios.items() if not ratio.excludes_one]
            runner = at[1]
            data = {"batch": batch, "winner": best["backend"], "tied": tied,
                    "ratios": ratios}
            if not tied:
                text = (f"`{target}`, batch {batch}: **`{best['backend']}` wins** with "
                        f"{_p50(boot, best)}, {ratios[runner['backend']].fmt()} faster than "
                        f"the runner-up `{runner['backend']}` ({_p50(boot, runner)}).")
                out.append(Finding("winner", target, text, True, best["backend"], data))
            else:
                names = ", ".join(f"`{n}` ({ratios[n].fmt()})" for n in tied)
                text = (f"`{target}`, batch {batch}: no single winner: `{best['backend']}` "
                        f"({_p50(boot, best)}) and {names} are within noise of each other "
                        "(ratio intervals include 1×).")
                out.append(Finding("winner", target, text, False, best["backend"], data))
    return out


def speedups(rows: Sequence[Mapping[str, Any]], boot: Bootstrapper,
             baseline: str | None) -> list[Finding]:
    if not baseline:
        return []
    out = []
    ok = [r for r in rows if is_ok(r)]
    for target, group in _by_target(ok).items():
        by_backend: dict[str, list[tuple[int, Ratio, str]]] = defaultdict(list)
        for row in group:
            base = baseline_row(row, ok, baseline)
            if base is None or base is row or base["backend"] == row["backend"]:
                continue
            by_backend[str(row["backend"])].append(
                (int(row["batch_size"]), boot.speedup(base, row), str(base["backend"])))
        for backend, items in sorted(by_backend.items()):
            items.sort()
            verdicts = {ratio.verdict for _, ratio, _ in items}
            bases = sorted({b for _, _, b in items})
            against = " / ".join(f"`{b}`" for b in bases)
            clauses = "; ".join(_clause(ratio, batch) for batch, ratio, _ in items)
            if verdicts == {"faster"}:
                head = f"**`{backend}` is faster than {against} at every batch**"
            elif verdicts == {"slower"}:
                head = f"**`{backend}` is slower than {against} at every batch**"
            elif verdicts == {"within noise"}:
                head = f"`{backend}` vs {against}: within noise at every batch"
            else:
                head = f"`{backend}` vs {against}"
            out.append(Finding(
                "speedup", target, f"`{target}`: {head} (p50 ratio {against} / `{backend}`): "
                f"{clauses}.", verdicts != {"within noise"}, backend,
                {"ratios": {batch: ratio for batch, ratio, _ in items}, "baseline": bases}))
    return out


def _paired(rows: Sequence[Mapping[str, Any]], precisions: tuple[str, ...],
            device: str | None = None
            ) -> dict[tuple[str, str, str], list[tuple[Mapping[str, Any], Mapping[str, Any]]]]:
    """(target, low-precision backend, fp32 backend) -> [(fp32 row, low row)] by batch."""
    ok = [r for r in rows if is_ok(r)]
    pairs: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
    for row in ok:
        if row["precision"] not in precisions or (device and row["device"] != device):
            continue
        partner = fp32_partner(row, ok)
        if partner is not None:
            pairs[(str(row["target"]), str(row["backend"]), str(partner["backend"]))].append(
                (partner, row))
    for items in pairs.values():
        items.sort(key=lambda pair: int(pair[1]["batch_size"]))
    return dict(sorted(pairs.items()))


def int8_payoff(rows: Sequence[Mapping[str, Any]], boot: Bootstrapper) -> list[Finding]:
    out = []
    for (target, low, fp32), items in _paired(rows, ("int8",)).items():
        ratios = [(int(q["batch_size"]), boot.speedup(f, q)) for f, q in items]
        clauses = "; ".join(_clause(r, b) for b, r in ratios)
        faster = [b for b, r in ratios if r.verdict == "faster"]
        payoff = None
        for index, (batch, _) in enumerate(ratios):
            if all(r.verdict == "faster" for _, r in ratios[index:]):
                payoff = batch
                break
        data = {"payoff_batch": payoff, "ratios": dict(ratios), "fp32": fp32}
        subject = f"`{low}` against `{fp32}` on `{target}`" + isa.row_note(items[0][1], "int8")
        if payoff is not None:
            smaller = [(b, r) for b, r in ratios if b < payoff]
            text = (f"**INT8 pays off from batch {payoff}** for {subject}"
                    + (" (at every measured batch)" if not smaller else "")
                    + f" (p50 ratio FP32 / INT8): {clauses}.")
            supported = True
        elif faster:
            text = (f"INT8 is faster only at batch {', '.join(map(str, faster))} for {subject},"
                    f" not at the larger batches (p50 ratio FP32 / INT8): {clauses}.")
            supported = True
        elif all(r.verdict == "slower" for _, r in ratios):
            text = (f"**INT8 does not pay off** at any measured batch for {subject}: slower at "
                    f"every batch (p50 ratio FP32 / INT8): {clauses}.")
            supported = True
        elif any(r.verdict == "slower" for _, r in ratios):
            slower = [str(b) for b, r in ratios if r.verdict == "slower"]
            text = (f"**INT8 does not pay off** for {subject}: slower at batch "
                    f"{', '.join(slower)}, within noise elsewhere (p50 ratio FP32 / INT8): "
                    f"{clauses}.")
            supported = True
        else:
            text = (f"INT8 shows no payoff beyond noise for {subject} (p50 ratio FP32 / INT8): "
                    f"{clauses}.")
            supported = any(r.excludes_one for _, r in ratios)
        out.append(Finding("int8", target, text, supported, low, data))
    return out


def half_precision(rows: Sequence[Mapping[str, Any]], boot: Bootstrapper) -> list[Finding]:
    out = []
    for (target, low, fp32), items in _paired(rows, ("fp16", "bf16")).items():
        precision = str(items[0][1]["precision"]).upper()
        # CPU BF16 speed depends on AVX512_BF16 / AMX: the statement names them
        note = isa.row_note(items[0][1], "bf16")
        ratios = [(int(q["batch_size"]), boot.speedup(f, q)) for f, q in items]
        clauses = "; ".join(_clause(r, b, "helped", "hurt") for b, r in ratios)
        helped = [b for b, r in ratios if r.verdict == "faster"]
        hurt = [b for b, r in ratios if r.verdict == "slower"]
        if helped and len(helped) == len(ratios):
            head = f"**{precision} helped at every batch**"
        elif not helped and not hurt:
            head = f"{precision} made no difference beyond noise"
        else:
            parts = []
            if helped:
                parts.append(f"**helped at batch {', '.join(map(str, helped))}**")
            if hurt:
                parts.append(f"**hurt at batch {', '.join(map(str, hurt))}**")
            head = f"{precision} " + " and ".join(parts)
        out.append(Finding(
            "half", target, f"`{target}`: {head} for `{low}` against `{fp32}`{note} "
            f"(p50 ratio FP32 / {precision}): {clauses}.", bool(helped or hurt), low,
            {"helped": helped, "hurt": hurt, "ratios": dict(ratios), "fp32": fp32}))
    return out


def overheads(rows: Sequence[Mapping[str, Any]], boot: Bootstrapper) -> list[Finding]:
    out = []
    timed = [r for r in rows if is_ok(r) and boot.overhead(r) is not None]
    for target, group in _by_target(timed).items():
        batch = 1 if any(int(r["batch_size"]) == 1 for r in group) else min(
            int(r["batch_size"]) for r in group)
        for row in sorted((r for r in group if int(r["batch_size"]) == batch),
                          key=lambda r: str(r["backend"])):
            over = boot.overhead(row)
            assert over is not None
            e2e = boot.interval(row)
            share = over.value / e2e.value if e2e.value > 0 else float("nan")
            data = {"batch": batch, "overhead": over, "share": share}
            if over.low > 0:
                text = (f"`{target}`, batch {batch}: **{share:.0%} of `{row['backend']}`'s "
                        f"latency is runtime overhead**: end-to-end {_p50(boot, row)} minus "
                        f"device time = {_ms(over.value)} ms [{_ms(over.low)}–"
                        f"{_ms(over.high)}] outside the device (input copies, launches, "
                        "output copy, Python).")
                out.append(Finding("overhead", target, text, True, row["backend"], data))
            else:
                text = (f"`{target}`, batch {batch}: `{row['backend']}`'s end-to-end minus "
                        f"device time is within noise of zero ({_ms(over.value)} ms "
                        f"[{_ms(over.low)}–{_ms(over.high)}]).")
                out.append(Finding("overhead", target, text, False, row["backend"], data))
    return out


def _money(value: float) -> str:
    return f"${value:.3g}"


def _cost_ratio(boot: Bootstrapper, cheap: Mapping[str, Any], dear: Mapping[str, Any],
                prices: Mapping[str, float]) -> Ratio:
    """cost(dear) / cost(cheap): cost ∝ price × mean latency / batch, so the bootstrap
    ratio of the mean latencies carries the interval."""
    scale = ((prices[str(dear["target"])] / int(dear["batch_size"]))
             / (prices[str(cheap["target"])] / int(cheap["batch_size"])))
    means = boot.ratio(dear, cheap, "mean")
    return Ratio(means.value * scale, means.low * scale, means.high * scale)


def _cheaper(boot: Bootstrapper, ranked: list[tuple[Any, Mapping[str, Any]]],
             prices: Mapping[str, float], scope: str) -> Finding:
    (c1, r1), (c2, r2) = ranked[0], ranked[1]
    ratio = _cost_ratio(boot, r1, r2, prices)
    first = f"`{r1['backend']}` on `{r1['target']}`"
    second = f"`{r2['backend']}` on `{r2['target']}`"
    data = {"cheapest": (r1["target"], r1["backend"]), "runner_up": (r2["target"],
            r2["backend"]), "ratio": ratio, "scope": scope}
    if ratio.excludes_one:
        rate1, rate2 = throughput_interval(boot, r1), throughput_interval(boot, r2)
        slower = (" although it is slower" if rate1.high < rate2.low else "")
        text = (f"{scope}: **{first} is cheapest** at {_money(c1.value)} per million "
                f"inferences, {ratio.fmt()} cheaper than {second} ({_money(c2.value)})"
                f"{slower} ({rate1.value:.0f} vs {rate2.value:.0f} seq/s).")
        return Finding("cost", str(r1["target"]), text, True, str(r1["backend"]), data)
    text = (f"{scope}: {first} ({_money(c1.value)} per million) and {second} "
            f"({_money(c2.value)}) cost the same within noise (ratio {ratio.fmt()}).")
    return Finding("cost", str(r1["target"]), text, False, str(r1["backend"]), data)


def costs(rows: Sequence[Mapping[str, Any]], boot: Bootstrapper,
          prices: Mapping[str, float]) -> list[Finding]:
    best = {key: row for key, row in best_throughput_rows(rows).items() if key[0] in prices}
    if not best:
        return []
    ranked: dict[str, list[tuple[Any, Mapping[str, Any]]]] = defaultdict(list)
    for (target, _, _), row in best.items():
        ranked[target].append((cost_interval(boot, row, float(prices[target])), row))
    headline, detail = [], []
    for target, items in sorted(ranked.items()):
        items.sort(key=lambda item: item[0].value)
        if len(items) > 1:
            headline.append(_cheaper(boot, items, prices, f"On `{target}`"))
        for cost, row in items:
            rate = throughput_interval(boot, row)
            detail.append(Finding(
                "cost", target, f"`{row['backend']}` on `{target}`: {_money(cost.value)} "
                f"[{_money(cost.low)}–{_money(cost.high)}] per million inferences at batch "
                f"{row['batch_size']} ({rate.value:.0f} seq/s [{rate.low:.0f}–{rate.high:.0f}]"
                f" at ${prices[target]:g}/h).", True, str(row["backend"]),
                {"cost": cost, "batch": row["batch_size"]}))
    if len(ranked) > 1:
        # The cheapest option of each machine, machines compared with each other.
        tops = sorted((items[0] for items in ranked.values()), key=lambda item: item[0].value)
        headline.insert(0, _cheaper(boot, tops, prices, "Across targets"))
    return headline + detail


def accuracy_findings(accuracy: Sequence[Mapping[str, Any]], baseline: str | None,
                      resamples: int) -> list[Finding]:
    from inferbench.measure.accuracy import compare_accuracy, skip_reason

    reason = skip_reason(accuracy)
    if reason:
        return [Finding("accuracy", "", f"Accuracy was not measured: {reason}.", False)]
    out = []
    for entry in compare_accuracy(accuracy, baseline, resamples):
        acc = entry["accuracy"]
        head = (f"`{entry['target']}`: `{entry['backend']}` ({entry['precision']}) accuracy "
                f"{acc.value:.2%} [{acc.low:.2%}–{acc.high:.2%}] on {entry['examples']} "
                "examples")
        delta = entry.get("delta")
        if delta is None:
            text = head + (" (FP32 reference)." if entry.get("is_reference")
                           else f" ({entry.get('note', 'no FP32 reference')}).")
            out.append(Finding("accuracy", entry["target"], text, False, entry["backend"]))
            continue
        points = f"{delta.value * 100:+.2f} points [{delta.low * 100:+.2f}–{delta.high * 100:+.2f}]"
        flips = f"{entry['changed']} of {entry['examples']} predictions differ"
        if delta.low > 0 or delta.high < 0:
            text = (f"{head}: **{points} against `{entry['reference']}`** (FP32); {flips}.")
            out.append(Finding("accuracy", entry["target"], text, True, entry["backend"],
                               {"delta": delta}))
        else:
            text = (f"{head}: the difference from `{entry['reference']}` (FP32) is within "
                    f"noise ({points}; {flips}).")
            out.append(Finding("accuracy", entry["target"], text, False, entry["backend"],
                               {"delta": delta}))
    return out


def unmeasured(rows: Sequence[Mapping[str, Any]]) -> list[Finding]:
    out = []
    for row in sorted((r for r in rows if not is_ok(r)),
                      key=lambda r: (str(r["target"]), str(r["backend"]), int(r["batch_size"]))):
        reason = (row.get("reason") or "").splitlines()[0][:160] if row.get("reason") else ""
        out.append(Finding("unmeasured", str(row["target"]),
                           f"`{row['target']}` `{row['backend']}` batch {row['batch_size']}: "
                           f"{row.get('status')}" + (f" ({reason})" if reason else ""), False,
                           str(row["backend"])))
    return out


def derive(results: Sequence[Mapping[str, Any]], context: Mapping[str, Any],
           accuracy: Sequence[Mapping[str, Any]] | None = None) -> list[Finding]:
    """Every finding for ``results`` (result dicts as bench.py writes them)."""
    boot = Bootstrapper(int(context.get("resamples") or 2000), int(context.get("seed") or 0))
    baseline = context.get("baseline")
    found = [*winners(results, boot), *speedups(results, boot, baseline),
             *int8_payoff(results, boot), *half_precision(results, boot),
             *overheads(results, boot), *costs(results, boot, context.get("prices") or {})]
    if accuracy is not None:
        found += accuracy_findings(accuracy, baseline, boot.resamples)
    return found + unmeasured(results)


EMPTY = {
    "speedup": "No baseline backend configured or measured (config `report.baseline`).",
    "int8": "No INT8 row with an FP32 row of the same runtime in these results.",
    "half": "No FP16/BF16 row with an FP32 row of the same runtime.",
    "overhead": "No row with device time (GPU rows record CUDA-event time).",
    "cost": "No `targets.<name>.price_per_hour` configured for the measured targets.",
}


def render(findings: Sequence[Finding], context: Mapping[str, Any],
           results: Sequence[Mapping[str, Any]]) -> str:
    targets = sorted({str(r["target"]) for r in results})
    ok = sum(1 for r in results if is_ok(r))
    lines = [
        "# Observations",
        "",
        f"Derived by inferbench from {len(results)} result rows ({ok} measured) on "
        f"target(s) {', '.join(f'`{t}`' for t in targets) or 'none'}. Latency is the p50 "
        "of end-to-end time per batch; intervals are 95% hierarchical bootstrap intervals "
        f"({context.get('resamples') or 2000} resamples: a row's launches, then the samples "
        "within each launch). "
        "Ratios are p50(reference) / p50(candidate): above 1× the candidate is faster. A "
        "difference is only stated when its interval excludes 1× (0 for the overhead); "
        "otherwise it is reported as within noise.",
        "",
    ]
    by_topic: dict[str, list[Finding]] = defaultdict(list)
    for finding in findings:
        by_topic[finding.topic].append(finding)
    for topic, title in SECTIONS.items():
        items = by_topic.get(topic, [])
        if topic == "speedup" and context.get("baseline"):
            title += f" (`{context['baseline']}`, FP32 eager on the same device for GPU rows)"
        if not items and topic not in EMPTY:
            continue
        lines += [f"## {title}", ""]
        if not items:
            lines += [EMPTY[topic], ""]
            continue
        lines += [f"- {f.text}" for f in items] + [""]
    return "\n".join(lines)


def write_observations(result_paths: Sequence[Path], context: Mapping[str, Any], out: Path,
                       accuracy_paths: Sequence[Path] | None = None) -> list[Finding]:
    import json

    from inferbench.io import atomic_write_text

    results = load_records(result_paths)
    accuracy = ([json.loads(Path(p).read_text()) for p in accuracy_paths]
                if accuracy_paths is not None else None)
    found = derive(results, context, accuracy)
    atomic_write_text(out, render(found, context, results))
    return found


def summary_counts(findings: Iterable[Finding]) -> dict[str, int]:
    """Number of supported statements per topic (for logs and tests)."""
    counts: dict[str, int] = defaultdict(int)
    for finding in findings:
        counts[finding.topic] += int(finding.supported)
    return dict(counts)

