"""The accuracy stage: TSV parsing, when it runs or is skipped, accuracy per backend
through the backend modules, the delta from FP32, and the workflow end to end on a tiny
BERT with a tokenizer trained offline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from crafted import build_tiny_bert, sst2_rows, write_tsv
from helpers import run_snakemake, write_config

from inferbench.config import job_settings, validate_config
from inferbench.measure.accuracy import (
    DatasetError,
    accuracy_frame,
    compare_accuracy,
    eligibility,
    evaluate,
    markdown_section,
    read_tsv,
    skip_reason,
    wilson,
)

# -- dataset ---------------------------------------------------------------------------


def test_read_tsv_glue_format(tmp_path: Path) -> None:
    path = tmp_path / "dev.tsv"
    path.write_text('sentence\tlabel\nit \'s a "charming" film \t1\n\nbad .\t0\n')
    sentences, labels = read_tsv(path)
    assert sentences == ['it \'s a "charming" film ', "bad ."]  # quotes kept verbatim
    assert labels == [1, 0]
    assert read_tsv(path, max_examples=1) == (sentences[:1], [1])


@pytest.mark.parametrize(("text", "message"), [
    ("text\tlabel\na\t1\n", "header must name"),
    ("sentence\tlabel\na\tpositive\n", "not an integer"),
    ("sentence\tlabel\n", "no examples"),
    ("sentence\tlabel\nno tab here\n", "tab-separated"),
])
def test_read_tsv_rejects_other_formats(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text(text)
    with pytest.raises(DatasetError, match=message):
        read_tsv(path)


def test_wilson_interval() -> None:
    low, high = wilson(90, 100)
    assert 0.82 < low < 0.9 < high < 0.95
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == pytest.approx(1.0)


# -- eligibility -------------------------------------------------------------------------

CARD = {"weights": "pretrained", "has_tokenizer": True, "task": "sequence-classification",
        "source": "local"}


@pytest.mark.parametrize(("change", "reason"), [
    ({}, None),
    ({"weights": "random", "source": "architecture"}, "random weights"),
    ({"has_tokenizer": False}, "no tokenizer"),
    ({"task": "feature-extraction"}, "no labels"),
])
def test_eligibility(change: dict, reason: str | None) -> None:
    result = eligibility({**CARD, **change})
    assert result is None if reason is None else reason in result


def test_random_weights_are_skipped_without_loading_anything(tmp_path: Path) -> None:
    settings = {"backend": {"name": "torch-eager", "kind": "torch-eager", "device": "cpu",
                            "precision": "fp32", "options": {}}, "threads": 1, "seq_len": 16}
    result = evaluate(settings, 2, tmp_path / "missing", {**CARD, "weights": "random"},
                      tmp_path / "missing.tsv", "m", "local")
    assert result["status"] == "skipped"
    assert "random weights" in result["reason"]
    assert skip_reason([result]) == result["reason"]
    section = markdown_section([result], "torch-eager")
    assert "Accuracy was not measured" in section and "random weights" in section


def test_no_dataset_reason() -> None:
    assert skip_reason([]) == "no `accuracy.dataset` configured"
    assert "no `accuracy.dataset` configured" in markdown_section([], "torch-eager")


# -- real evaluation on a tiny BERT --------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from inferbench.prepare.model import prepare_model

    root = tmp_path_factory.mktemp("tinybert")
    source = build_tiny_bert(root / "source")
    dataset = write_tsv(root / "dev.tsv", sst2_rows())
    config = validate_config({
        "model": {"source": "local", "path": str(source), "name": "tinybert"},
        "seq_len": 16, "batch_sizes": [4], "threads": 1,
        "backends": [{"name": "torch-eager", "kind": "torch-eager"},
                     {"name": "torch-dynamic-int8", "kind": "torch-dynamic-int8",
                      "precision": "int8"}],
        "accuracy": {"dataset": str(dataset)},
    })
    card = prepare_model(config["model"], root / "hf", root / "card.json")
    return {"root": root, "config": config, "card": card, "dataset": dataset}


def direct_predictions(model_dir: Path, sentences: list[str], seq_len: int) -> list[int]:
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(model_dir))
    encoded = tokenizer(sentences, padding="max_length", truncation=True, max_length=seq_len,
                        return_tensors="pt")
    with torch.inference_mode():
        return model.eval()(**encoded).logits.argmax(-1).tolist()


def test_tiny_bert_card_allows_accuracy(tiny_bert: dict) -> None:
    card = tiny_bert["card"]
    assert card["weights"] == "pretrained" and card["has_tokenizer"]
    assert eligibility(card) is None


def test_evaluate_matches_transformers_and_compares_with_fp32(tiny_bert: dict) -> None:
    config, card, dataset = tiny_bert["config"], tiny_bert["card"], tiny_bert["dataset"]
    model_dir = tiny_bert["root"] / "hf"
    results = [evaluate(job_settings(config, name), 4, model_dir, card, dataset, "tinybert",
                        "local") for name in ("torch-eager", "torch-dynamic-int8")]
    for result in results:
        assert result["status"] == "ok", result.get("reason")
    eager, int8 = results
    sentences, labels = read_tsv(dataset)
    expected = direct_predictions(model_dir, sentences, 16)
    # 12 examples in batches of 4 and 5 (a padded last batch) give the same answer
    assert eager["predictions"] == expected
    assert eager["correct"] == sum(p == y for p, y in zip(expected, labels, strict=True))
    assert eager["accuracy"] == pytest.approx(eager["correct"] / 12)
    assert eager["dataset"]["examples"] == 12 and len(eager["dataset"]["sha256"]) == 64
    odd = evaluate(job_settings(config, "torch-eager"), 5, model_dir, card, dataset,
                   "tinybert", "local")
    assert odd["predictions"] == expected

    compared = {e["backend"]: e for e in compare_accuracy(results, "torch-eager", 200)}
    assert compared["torch-eager"]["is_reference"]
    entry = compared["torch-dynamic-int8"]
    assert entry["reference"] == "torch-eager"
    flips = int(np.sum(np.asarray(int8["predictions"]) != np.asarray(eager["predictions"])))
    assert entry["changed"] == flips
    assert entry["delta"].value == pytest.approx(int8["accuracy"] - eager["accuracy"])

    frame = accuracy_frame(results, "torch-eager")
    row = frame.set_index("backend").loc["torch-dynamic-int8"]
    assert row.accuracy == pytest.approx(int8["accuracy"])
    assert row.accuracy_reference == "torch-eager"
    section = markdown_section(results, "torch-eager")
    assert "| torch-dynamic-int8 |" in section and "reference" in section


def test_compare_accuracy_delta_interval() -> None:
    labels = [1, 0] * 100

    def row(name: str, precision: str, wrong: int) -> dict:
        preds = list(labels)
        for i in range(wrong):
            preds[i] = 1 - preds[i]
        correct = 200 - wrong
        return {"status": "ok", "target": "t", "model": "m", "backend": name,
                "precision": precision, "examples": 200, "accuracy": correct / 200,
                "accuracy_ci95": list(wilson(correct, 200)), "predictions": preds,
                "labels": labels, "dataset": {"sha256": "x", "path": "dev.tsv"}}

    rows = [row("fp32", "fp32", 0), row("int8-close", "int8", 1), row("int8-far", "int8", 40)]
    compared = {e["backend"]: e for e in compare_accuracy(rows, "fp32", 500)}
    close, far = compared["int8-close"]["delta"], compared["int8-far"]["delta"]
    assert close.low <= 0 <= close.high  # one flip in 200: within noise
    assert far.high < 0 and far.value == pytest.approx(-0.2)
    from inferbench.report.findings import accuracy_findings

    found = {f.subject: f for f in accuracy_findings(rows, "fp32", 500)}
    assert not found["int8-close"].supported and "within noise" in found["int8-close"].text
    assert found["int8-far"].supported and "-20.00 points" in found["int8-far"].text


def test_summary_gets_accuracy_columns(tmp_path: Path) -> None:
    from crafted import make_result

    from inferbench.report.table import aggregate

    results = [make_result("fp32", 1, 1.0, model="m"), make_result("int8", 1, 0.8, model="m",
                                                                       precision="int8")]
    paths = []
    for result in results:
        path = tmp_path / f"{result['backend']}.json"
        path.write_text(json.dumps(result))
        paths.append(path)
    labels = [1, 0] * 10
    acc_paths = []
    for name, precision, wrong in (("fp32", "fp32", 0), ("int8", "int8", 2)):
        preds = [1 - y if i < wrong else y for i, y in enumerate(labels)]
        acc = {"status": "ok", "target": "local", "model": "m", "backend": name,
               "precision": precision, "examples": 20, "accuracy": (20 - wrong) / 20,
               "accuracy_ci95": list(wilson(20 - wrong, 20)), "predictions": preds,
               "labels": labels, "dataset": {"sha256": "x", "path": "dev.tsv"}}
        path = tmp_path / f"acc-{name}.json"
        path.write_text(json.dumps(acc))
        acc_paths.append(path)
    context = {"baseline": "fp32", "seq_len": 16, "threads": 1, "card": {},
               "accuracy": {"dataset": "dev.tsv"}, "prices": {"local": 1.0}}
    frame = aggregate(paths, context, tmp_path / "s.csv", tmp_path / "s.md", tmp_path / "plots",
                      accuracy_paths=acc_paths)
    row = frame.set_index("backend").loc["int8"]
    assert row.accuracy == pytest.approx(0.9)
    assert row.accuracy_delta_vs_fp32 == pytest.approx(-0.1)
    csv = pd.read_csv(tmp_path / "s.csv")
    assert {"accuracy", "accuracy_delta_vs_fp32", "cost_per_million"} <= set(csv.columns)
    table = (tmp_path / "s.md").read_text()
    assert "90.00% (-10.00)" in table
    assert "## Accuracy" in table and "## Cost per million inferences" in table


# -- the workflow, end to end ------------------------------------------------------------

BACKENDS = [{"name": "torch-eager", "kind": "torch-eager"},
            {"name": "torch-dynamic-int8", "kind": "torch-dynamic-int8", "precision": "int8"},
            {"name": "ort-cpu-int8", "kind": "ort", "precision": "int8",
             "options": {"graph": "plain"}}]


@pytest.mark.workflow
def test_accuracy_stage_end_to_end(tmp_path: Path) -> None:
    source = build_tiny_bert(tmp_path / "tinybert")
    dataset = write_tsv(tmp_path / "dev.tsv", sst2_rows())
    config = {
        "target": "local",
        "model": {"source": "local", "path": str(source), "name": "tinybert"},
        "seq_len": 16, "batch_sizes": [2], "threads": 1,
        "measurement": {"repeats": 2, "target_rel_ci": 0, "throughput_rounds": 1,
                        "throughput_round_s": 0.01, "warmup_iterations": 1,
                        "min_iterations": 5, "min_duration_s": 0.05,
                        "max_duration_s": 2, "memory_iterations": 1,
                        "bootstrap_resamples": 200},
        "backends": BACKENDS,
        "accuracy": {"dataset": str(dataset)},
    }
    configfile = write_config(tmp_path / "config.yaml", config)
    run_snakemake(tmp_path, configfile, "--cores", "2", "all")
    results = tmp_path / "results"
    rows = {}
    for backend in BACKENDS:
        path = results / "accuracy" / "local" / "tinybert" / f"{backend['name']}.json"
        rows[backend["name"]] = json.loads(path.read_text())
        assert rows[backend["name"]]["status"] == "ok", rows[backend["name"]].get("reason")
        assert rows[backend["name"]]["examples"] == 12
    expected = direct_predictions(results / "models" / "tinybert" / "hf",
                                  read_tsv(dataset)[0], 16)
    assert rows["torch-eager"]["predictions"] == expected

    csv = pd.read_csv(results / "summary.csv").set_index("backend")
    assert csv.loc["torch-eager", "accuracy"] == pytest.approx(rows["torch-eager"]["accuracy"])
    assert csv.loc["ort-cpu-int8", "accuracy_reference"] == "torch-eager"
    table = (results / "summary_table.md").read_text()
    assert "## Accuracy" in table and "| ort-cpu-int8 " in table
    observations = (results / "observations.md").read_text()
    assert "`torch-dynamic-int8` (int8) accuracy" in observations

    report = run_snakemake(tmp_path, configfile, "--report", str(results / "report.html"))
    assert report.returncode == 0
    assert (results / "report.html").stat().st_size > 10_000
