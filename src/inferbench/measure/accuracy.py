"""Accuracy per backend on a labelled TSV in the GLUE SST-2 dev format.

One job per backend: the sentences go through the model's tokenizer (padded to the
benchmark's sequence length, in batches of the largest benchmarked batch size, so
engines built for the benchmark shapes run them unchanged), through the backend
module's own ``load``/``prepare_inputs``/``run``/``to_host``, and the argmax of
the logits is compared with the labels. The difference from FP32 is computed when
the results are merged (``compare_accuracy``), paired example by example.

The stage is skipped, with the reason recorded, unless the model card says the
weights are pretrained and a tokenizer was saved, and the task has labels.
"""

from __future__ import annotations

import csv
import datetime as dt
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inferbench.report.rows import Interval

SCHEMA_VERSION = 1


class DatasetError(ValueError):
    """The TSV is not in the expected format."""


def read_tsv(path: Path, max_examples: int | None = None) -> tuple[list[str], list[int]]:
    """Sentences and integer labels of a GLUE SST-2 style TSV (header ``sentence\\tlabel``)."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            raise DatasetError(f"{path} is empty")
        header = [h.strip().lower() for h in header]
        if "sentence" not in header or "label" not in header:
            raise DatasetError(f"{path}: the header must name the columns 'sentence' and "
                               f"'label' (GLUE SST-2 dev format); found {header}")
        s_col, l_col = header.index("sentence"), header.index("label")
        sentences: list[str] = []
        labels: list[int] = []
        for line_no, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) <= max(s_col, l_col):
                raise DatasetError(f"{path}:{line_no}: expected {len(header)} tab-separated "
                                   f"columns, found {len(row)}")
            try:
                labels.append(int(row[l_col]))
            except ValueError:
                raise DatasetError(f"{path}:{line_no}: label {row[l_col]!r} is not an "
                                   "integer") from None
            sentences.append(row[s_col])
            if max_examples and len(sentences) >= max_examples:
                break
    if not sentences:
        raise DatasetError(f"{path} has a header but no examples")
    return sentences, labels


def eligibility(card: Mapping[str, Any]) -> str | None:
    """Why accuracy cannot be measured for this model, or None when it can."""
    if card.get("weights") != "pretrained":
        return (f"the model has {card.get('weights', 'unknown')} weights (model.source "
                f"{card.get('source')}); accuracy needs pretrained weights")
    if not card.get("has_tokenizer"):
        return "the model directory has no tokenizer"
    if card.get("task") != "sequence-classification":
        return f"task {card.get('task')} has no labels to score"
    if card.get("head_warning"):  # a freshly initialised head scores chance
        return f"random head: {card['head_warning']}"
    return None


def wilson(correct: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (scipy's binomtest)."""
    from scipy.stats import binomtest

    if n == 0:
        return float("nan"), float("nan")
    ci = binomtest(correct, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def encode(tokenizer: Any, texts: Sequence[str], input_names: Sequence[str], seq_len: int
           ) -> dict[str, np.ndarray]:
    encoded = tokenizer(list(texts), padding="max_length", truncation=True,
                        max_length=seq_len, return_tensors="np")
    arrays = {}
    for name in input_names:
        if name in encoded:
            arrays[name] = np.asarray(encoded[name], dtype=np.int64)
        else:
            arrays[name] = np.zeros((len(texts), seq_len), dtype=np.int64)
    return arrays


def predict(backend: Any, tokenizer: Any, sentences: Sequence[str], input_names: Sequence[str],
            seq_len: int, batch: int) -> list[int]:
    """Class predictions, in fixed-size batches (the last one padded by repetition)."""
    predictions: list[int] = []
    for start in range(0, len(sentences), batch):
        texts = list(sentences[start:start + batch])
        real = len(texts)
        texts += [texts[-1]] * (batch - real)
        arrays = encode(tokenizer, texts, input_names, seq_len)
        logits = backend.to_host(backend.run(backend.prepare_inputs(arrays)))
        predictions.extend(int(i) for i in np.argmax(np.asarray(logits)[:real], axis=-1))
    return predictions


def evaluate(settings: Mapping[str, Any], batch: int, model_dir: Path, card: Mapping[str, Any],
             dataset: Path, model: str, target: str, onnx: Path | None = None,
             build_manifest: Path | None = None, max_examples: int | None = None
             ) -> dict[str, Any]:
    """Accuracy of one backend; never raises for a backend problem (status + reason)."""
    spec = settings["backend"]
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "status": "error", "reason": "", "target": target,
        "model": model, "backend": spec["name"], "kind": spec["kind"],
        "device": spec["device"], "precision": spec["precision"], "batch_size": batch,
        "seq_len": settings["seq_len"], "dataset": {"path": str(dataset)},
        "started_at": _now(),
    }
    reason = eligibility(card)
    if reason:
        result.update(status="skipped", reason=reason)
        return result
    try:
        result.update(_run(settings, batch, model_dir, card, dataset, onnx, build_manifest,
                           max_examples))
    except Exception as exc:
        result.update(status="error", reason=f"{type(exc).__name__}: {exc}"[:2000],
                      traceback=traceback.format_exc(limit=8)[-4000:])
    result["finished_at"] = _now()
    return result


def _run(settings: Mapping[str, Any], batch: int, model_dir: Path, card: Mapping[str, Any],
         dataset: Path, onnx: Path | None, build_manifest: Path | None,
         max_examples: int | None) -> dict[str, Any]:
    import transformers

    from inferbench.backends import registry
    from inferbench.backends.base import Artifacts
    from inferbench.config import BackendSpec
    from inferbench.io import sha256_file
    from inferbench.prepare.model import read_json
    from inferbench.prepare.onnx import load_verified

    sentences, labels = read_tsv(dataset, max_examples)
    num_labels = int(card.get("num_labels") or 0)
    bad = sorted({label for label in labels if not 0 <= label < num_labels})
    if num_labels and bad:
        raise DatasetError(f"labels {bad[:5]} are outside the model's {num_labels} classes")
    info = {"path": str(dataset), "sha256": sha256_file(dataset), "examples": len(labels)}

    spec = BackendSpec.from_entry(settings["backend"])
    backend = registry.get(spec.kind)(spec, int(settings["threads"]))
    availability = backend.availability()
    if not availability.ok:
        return {"status": "unavailable", "reason": availability.reason, "dataset": info}
    manifest: dict[str, Any] = {}
    if build_manifest is not None:
        manifest = read_json(build_manifest)
        if manifest.get("status") != "ok":
            return {"status": manifest.get("status", "error"), "dataset": info,
                    "reason": f"build: {manifest.get('reason', 'failed')}"}
    if onnx is not None:
        load_verified(onnx)
    backend.load(Artifacts(model_dir=model_dir, card=card, onnx=onnx,
                           build=build_manifest.parent if build_manifest else None,
                           build_manifest=manifest))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    predictions = predict(backend, tokenizer, sentences, list(card["input_names"]),
                          int(settings["seq_len"]), batch)
    backend.synchronize()
    correct = int(sum(p == y for p, y in zip(predictions, labels, strict=True)))
    low, high = wilson(correct, len(labels))
    return {"status": "ok", "reason": "", "dataset": info, "examples": len(labels),
            "correct": correct, "accuracy": correct / len(labels), "accuracy_ci95": [low, high],
            "predictions": predictions, "labels": labels}


# -- merging -------------------------------------------------------------------------

def skip_reason(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """Why there is no accuracy to report, or None when some backend has one."""
    if any(r.get("status") == "ok" for r in rows):
        return None
    if not rows:
        return "no `accuracy.dataset` configured"
    reasons = sorted({str(r.get("reason") or r.get("status")) for r in rows})
    return "; ".join(reasons)


def reference_row(rows: Sequence[Mapping[str, Any]], baseline: str | None
                  ) -> Mapping[str, Any] | None:
    """FP32 accuracy reference of one target: the baseline backend when it is FP32."""
    ok = [r for r in rows if r.get("status") == "ok" and r.get("precision") == "fp32"]
    named = [r for r in ok if r["backend"] == baseline]
    if named:
        return named[0]
    return sorted(ok, key=lambda r: (r.get("device") != "cpu", str(r["backend"])))[0] if ok \
        else None


def paired_delta(correct: np.ndarray, reference: np.ndarray, resamples: int, seed: int = 0
                 ) -> Interval:
    """accuracy − reference accuracy, bootstrapped over examples (paired: one example
    resampled on both sides; scipy's percentile bootstrap)."""
    from scipy.stats import bootstrap

    ours = correct.astype(np.float64)
    theirs = reference.astype(np.float64)
    diff = ours - theirs
    point = float(diff.mean())
    if np.all(diff == diff[0]):
        return Interval(point, point, point)
    found = bootstrap((ours, theirs), lambda a, b, axis=-1: a.mean(axis=axis) - b.mean(axis=axis),
                      paired=True, vectorized=True, n_resamples=resamples,
                      confidence_level=0.95, method="percentile",
                      rng=np.random.default_rng(seed))
    ci = found.confidence_interval
    return Interval(point, float(ci.low), float(ci.high))


def compare_accuracy(rows: Sequence[Mapping[str, Any]], baseline: str | None,
                     resamples: int = 2000) -> list[dict[str, Any]]:
    """Per ok row: accuracy with its Wilson interval and the paired delta from FP32."""
    out = []
    targets = sorted({str(r["target"]) for r in rows if r.get("status") == "ok"})
    for target in targets:
        group = sorted((r for r in rows if r.get("status") == "ok" and r["target"] == target),
                       key=lambda r: str(r["backend"]))
        ref = reference_row(group, baseline)
        for row in group:
            low, high = row["accuracy_ci95"]
            entry: dict[str, Any] = {
                "target": target, "model": row["model"], "backend": row["backend"],
                "precision": row["precision"], "examples": row["examples"],
                "accuracy": Interval(float(row["accuracy"]), float(low), float(high)),
                "reference": ref["backend"] if ref else None, "delta": None, "changed": None,
                "is_reference": ref is row,
            }
            if ref is not None and ref is not row:
                same = (row["dataset"].get("sha256") == ref["dataset"].get("sha256")
                        and len(row["predictions"]) == len(ref["predictions"]))
                if same:
                    labels = np.asarray(row["labels"])
                    mine = np.asarray(row["predictions"])
                    theirs = np.asarray(ref["predictions"])
                    entry["delta"] = paired_delta(mine == labels, theirs == labels, resamples)
                    entry["changed"] = int((mine != theirs).sum())
                else:
                    entry["note"] = "evaluated on a different dataset than the FP32 reference"
            elif ref is None:
                entry["note"] = "no FP32 backend with an accuracy on this target"
            out.append(entry)
    return out


COLUMNS = ["target", "model", "backend", "accuracy", "accuracy_ci_low", "accuracy_ci_high",
           "accuracy_delta_vs_fp32", "accuracy_delta_ci_low", "accuracy_delta_ci_high",
           "accuracy_reference", "accuracy_status"]


def accuracy_frame(rows: Sequence[Mapping[str, Any]], baseline: str | None,
                   resamples: int = 2000) -> Any:
    """One row per (target, model, backend) with accuracy columns, for the summary."""
    import pandas as pd

    compared = {(e["target"], e["model"], e["backend"]): e
                for e in compare_accuracy(rows, baseline, resamples)}
    records = []
    for row in rows:
        key = (row.get("target"), row.get("model"), row.get("backend"))
        entry = compared.get(key)
        record = dict(zip(COLUMNS[:3], key, strict=True))
        record["accuracy_status"] = row.get("status") if row.get("status") == "ok" else (
            f"{row.get('status')}: {row.get('reason', '')}"[:200])
        if entry:
            acc, delta = entry["accuracy"], entry["delta"]
            record.update(accuracy=acc.value, accuracy_ci_low=acc.low,
                          accuracy_ci_high=acc.high, accuracy_reference=entry["reference"])
            if delta is not None:
                record.update(accuracy_delta_vs_fp32=delta.value,
                              accuracy_delta_ci_low=delta.low, accuracy_delta_ci_high=delta.high)
        records.append(record)
    return pd.DataFrame(records, columns=COLUMNS)


def markdown_section(rows: Sequence[Mapping[str, Any]], baseline: str | None,
                     fallback_reason: str | None = None, resamples: int = 2000) -> str:
    """The summary's accuracy section: a table, or the reason it was skipped."""
    reason = skip_reason(rows) if rows else (fallback_reason or skip_reason(rows))
    lines = ["## Accuracy", ""]
    if reason:
        return "\n".join([*lines, f"Accuracy was not measured: {reason}.", ""])
    import pandas as pd

    table = []
    for e in compare_accuracy(rows, baseline, resamples):
        acc, delta = e["accuracy"], e["delta"]
        table.append({
            "target": e["target"], "backend": e["backend"], "precision": e["precision"],
            "examples": e["examples"],
            "accuracy [95% CI]": f"{acc.value:.2%} [{acc.low:.2%}–{acc.high:.2%}]",
            "Δ vs FP32 (points) [95% CI]": "reference" if e["is_reference"] else (
                f"{delta.value * 100:+.2f} [{delta.low * 100:+.2f}–{delta.high * 100:+.2f}]"
                if delta is not None else "–"),
            "predictions changed": "–" if e["changed"] is None else str(e["changed"]),
        })
    failed = [r for r in rows if r.get("status") != "ok"]
    lines += [f"Dataset `{rows[0]['dataset'].get('path')}`; the FP32 reference is the "
              "baseline backend (or the first FP32 backend); Δ is paired over examples.", "",
              pd.DataFrame(table).to_markdown(index=False), ""]
    if failed:
        lines += [f"- `{r['backend']}`: {r.get('status')} ({r.get('reason')})" for r in failed]
        lines.append("")
    return "\n".join(lines)
