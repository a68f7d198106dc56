"""Several hardware targets in one sweep: config, per-target resources and device slots,
results merged from elsewhere without rerunning, and the fingerprint check."""

from __future__ import annotations

import copy
import itertools
import json
import re
import shutil
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from helpers import REPO, run_snakemake, tiny_config_dict, write_config

from inferbench.config import (
    ConfigError,
    slot_resource,
    target_expectations,
    target_names,
    target_resources,
    validate_config,
)
from inferbench.report.table import add_fingerprint_check, header, markdown_table, to_frame
from inferbench.results import Result

H100 = "NVIDIA H100 80GB HBM3"
EPYC = "AMD EPYC 7763 64-Core Processor"
XEON = "Intel(R) Xeon(R) Platinum 8480+"


def two_targets(config: dict) -> dict:
    config = copy.deepcopy(config)
    config["target"] = ["cpu-a", "h100"]
    config["targets"] = {
        "h100": {"resources": {"slurm_partition": "gpu", "gres": "gpu:h100:1",
                               "mem_mb": 3000, "runtime": 20},
                 "expect": {"gpu": "H100"}},
        "cpu-a": {"resources": {"slurm_partition": "cpu", "cpus_per_task": 2}},
    }
    return config


# --- config ------------------------------------------------------------------------

def test_single_target_default_is_unchanged() -> None:
    config = validate_config(tiny_config_dict())
    assert config["target"] == "local"
    assert target_names(config) == ["local"]
    assert target_resources(config, "local") == {}
    assert config["include_results"] == []


def test_target_list_with_resources_and_expectations() -> None:
    config = validate_config(two_targets(tiny_config_dict()))
    assert target_names(config) == ["cpu-a", "h100"]
    assert target_resources(config, "h100")["gres"] == "gpu:h100:1"
    assert target_resources(config, "local") == {}
    assert target_expectations(config) == {"h100": {"gpu": "H100"}}
    assert slot_resource("cpu-a") == "bench_slot_cpu_a"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c.update(target=["a", "a"]), "non-unique"),
        (lambda c: c.update(target=[]), "target"),
        (lambda c: c.update(target=["ok", "bad name"]), "target[1]"),
        (lambda c: c.update(target=["a.b", "a_b"]), "same device-slot resource"),
        (lambda c: c.update(targets={"x": {"resources": {"bench_slot_x": 1}}}), "bench_slot"),
        (lambda c: c.update(targets={"x": {"partition": "gpu"}}), "allowed keys"),
        (lambda c: c.update(targets={"x": {"resources": {"mem_mb": "lots"}}}), "mem_mb"),
        (lambda c: c.update(include_results="docs/results/h100"), "include_results"),
    ],
)
def test_bad_target_configs_name_the_key(mutate, expected: str) -> None:
    config = tiny_config_dict()
    mutate(config)
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    assert expected in str(info.value)


# --- fingerprint check -------------------------------------------------------------

def result(target: str, backend: str, cpu: str, gpu: str | None, batch: int = 1) -> dict:
    """A crafted result JSON, as the bench job writes it (only what the summary reads)."""
    return {
        "schema_version": 1,
        "target": target, "model": "tiny-distilbert", "backend": backend,
        "kind": backend, "device": "cuda" if gpu else "cpu", "precision": "fp32",
        "batch_size": batch, "seq_len": 16, "threads": 1, "status": "ok",
        "latency": {"end_to_end": {"p50": 1.0, "p50_ci95": [0.9, 1.1], "p95": 1.2,
                                   "mean": 1.0, "count": 20, "cv": 0.01,
                                   "serial_throughput_per_s": 1000.0}},
        "fingerprint": {"cpu_model": cpu, "hostname": "node1",
                        "gpus": [{"name": gpu, "index": 0}] if gpu else []},
    }


def as_results(raw: list[dict]) -> list[Result]:
    """Through the reader, as the summary loads files (a version-1 record is upgraded)."""
    return [Result.from_dict(r) for r in raw]


def checked(results: list[dict], expect: dict | None = None) -> pd.DataFrame:
    frame = add_fingerprint_check(to_frame(as_results(results)), expect or {})
    return frame.set_index(["target", "backend", "batch_size"])


def test_target_named_after_a_gpu_must_have_it() -> None:
    frame = checked([result("h100", "trt", XEON, H100),
                     result("gpu-h100", "trt", XEON, None),
                     result("a10", "trt", XEON, "NVIDIA A100-SXM4-80GB"),
                     result("local", "torch-eager", EPYC, None)])
    assert frame.loc[("h100", "trt", 1), "fingerprint_check"] == ""
    assert "'none'" in frame.loc[("gpu-h100", "trt", 1), "fingerprint_check"]
    assert "a10" in frame.loc[("a10", "trt", 1), "fingerprint_check"]  # A100 is not A10
    assert frame.loc[("local", "torch-eager", 1), "fingerprint_check"] == ""


def test_configured_expectation_wins_over_the_name() -> None:
    expect = {"h100": {"gpu": "H100", "cpu_model": "Xeon"}, "cpu": {"gpu": "none"}}
    frame = checked([result("h100", "trt", EPYC, H100),
                     result("cpu", "torch-eager", EPYC, H100),
                     result("cpu", "ort", EPYC, H100)], expect)
    assert "CPU" in frame.loc[("h100", "trt", 1), "fingerprint_check"]
    assert "where none is expected" in frame.loc[("cpu", "ort", 1), "fingerprint_check"]


def test_rows_from_another_machine_within_a_target_are_flagged() -> None:
    frame = checked([result("local", "torch-eager", EPYC, None, 1),
                     result("local", "torch-eager", EPYC, None, 2),
                     result("local", "ort", XEON, None, 1)])
    assert frame.loc[("local", "torch-eager", 2), "fingerprint_check"] == ""
    assert "machine differs" in frame.loc[("local", "ort", 1), "fingerprint_check"]


def test_flag_is_shown_in_the_table_and_the_header() -> None:
    frame = add_fingerprint_check(to_frame(as_results([
        result("h100", "trt", XEON, None), result("local", "torch-eager", EPYC, None)])), {})
    frame["speedup_vs_baseline"] = float("nan")
    table = markdown_table(frame)
    assert "ok (fingerprint≠target)" in table
    assert table.count("fingerprint≠target") == 1
    text = header({"card": {}}, frame)
    assert "fingerprint contradicts the target" in text and "h100" in text


def test_the_header_names_the_baseline_or_says_there_are_no_speedups() -> None:
    frame = to_frame(as_results([result("local", "eager", EPYC, None)]))
    assert "relative to `eager`" in header({"card": {}, "baseline": "eager"}, frame)
    text = header({"card": {}, "baseline": None}, frame)
    assert "No speedups" in text and "relative to" not in text


# --- the workflow ------------------------------------------------------------------

def dry_run_jobs(stdout: str) -> list[dict[str, str]]:
    """Rule, output, wildcards and resources of each job in a dry run's listing."""
    jobs = []
    for block in re.split(r"\n(?=\[[^\]]+\]\nrule |(?:local)?rule \w+:\n)", stdout):
        match = re.search(r"(?:local)?rule (\w+):", block)
        if not match:
            continue
        job = {"rule": match.group(1)}
        for key in ("input", "output", "wildcards", "resources"):
            found = re.search(rf"^\s+{key}: (.*)$", block, re.MULTILINE)
            job[key] = found.group(1) if found else ""
        jobs.append(job)
    return jobs


def resources_of(job: dict[str, str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in job["resources"].split(", ") if "=" in item)


def prepared_foreign_results(workdir: Path, template: dict) -> Path:
    """A copy in results/bench/l4/ and an included folder for target a100."""
    copied = workdir / "results" / "bench" / "l4" / "tiny-distilbert" / "torch-eager"
    copied.mkdir(parents=True)
    l4 = copy.deepcopy(template) | {"target": "l4"}
    l4["fingerprint"] = {**l4.get("fingerprint", {}), "gpus": [{"name": "NVIDIA L4"}]}
    (copied / "bs1.json").write_text(json.dumps(l4))
    included = workdir / "committed" / "a100"
    (included / "tiny-distilbert" / "torch-eager").mkdir(parents=True)
    a100 = copy.deepcopy(template) | {"target": "a100"}   # no GPU: contradicts its name
    a100["fingerprint"] = {**a100.get("fingerprint", {}), "gpus": []}
    (included / "tiny-distilbert" / "torch-eager" / "bs1.json").write_text(json.dumps(a100))
    return included


@pytest.mark.workflow
def test_dry_run_gives_each_target_its_resources_and_slot(tmp_path: Path) -> None:
    config = two_targets(tiny_config_dict())
    config["include_results"] = [str(prepared_foreign_results(
        tmp_path, result("x", "torch-eager", EPYC, None)))]
    configfile = write_config(tmp_path / "config.yaml", config)
    out = run_snakemake(tmp_path, configfile, "-n", "--default-resources", "mem_mb=1234",
                        "runtime=7", "--cores", "1", "all")
    jobs = dry_run_jobs(out.stdout + out.stderr)
    bench = [j for j in jobs if j["rule"] == "bench"]
    # one job per launch of every row of both targets
    assert len(bench) == (2 * len(config["backends"]) * len(config["batch_sizes"])
                          * config["measurement"]["repeats"])
    for job in bench:
        target = re.search(r"target=([^,]+)", job["wildcards"]).group(1)
        res = resources_of(job)
        assert res[slot_resource(target)] == "1"
        other = {"cpu-a": "h100", "h100": "cpu-a"}[target]
        assert res[slot_resource(other)] == "0"
        if target == "h100":
            assert (res["slurm_partition"], res["gres"], res["mem_mb"], res["runtime"]) == (
                "gpu", "gpu:h100:1", "3000", "20")
        else:   # unset keys keep the default resources
            assert (res["slurm_partition"], res["cpus_per_task"], res["mem_mb"],
                    res["runtime"]) == ("cpu", "2", "1234", "7")
            assert "gres" not in res
    prep = [j for j in jobs if j["rule"] in ("prepare_model", "make_inputs", "onnx_export")]
    assert prep and all("slurm_partition" not in resources_of(j) for j in prep)
    # copied and included results are summary inputs, never jobs
    (aggregate,) = [j for j in jobs if j["rule"] == "aggregate"]
    assert "bench/l4/tiny-distilbert/torch-eager/bs1.json" in aggregate["input"]
    assert "committed/a100/tiny-distilbert/torch-eager/bs1.json" in aggregate["input"]
    assert not [j for j in bench if "/l4/" in j["output"] or "/a100/" in j["output"]]


@pytest.mark.workflow
def test_two_local_targets_and_merged_results(tmp_path: Path) -> None:
    """Two targets on this machine (one device slot each), then results from elsewhere
    merged into the summary without rerunning, the contradicting one flagged."""
    config = tiny_config_dict()
    config["target"] = ["local", "local-b"]
    config["batch_sizes"] = [1]
    config["backends"] = [b for b in config["backends"]
                          if b["name"] in ("torch-eager", "torch-dynamic-int8")]
    configfile = write_config(tmp_path / "config.yaml", config)
    results = tmp_path / "results"
    summary_csv = str(results / "summary.csv")   # the merge, not the whole report
    run_snakemake(tmp_path, configfile, "--cores", "2", summary_csv)
    spans: dict[str, list[tuple[datetime, datetime]]] = {}
    for path in sorted((results / "bench").glob("*/tiny-distilbert/*/bs1.json")):
        row = json.loads(path.read_text())
        assert row["status"] == "ok", row.get("reason")
        spans.setdefault(row["target"], []).extend(   # every launch, a job of its own
            (datetime.fromisoformat(start), datetime.fromisoformat(end))
            for start, end in row["launch_windows"])
    assert sorted(spans) == ["local", "local-b"]
    for target, pairs in spans.items():   # one device slot per target: never overlapping
        pairs.sort()
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(pairs)), (target, pairs)

    template = json.loads((results / "bench" / "local" / "tiny-distilbert" / "torch-eager"
                           / "bs1.json").read_text())
    config["include_results"] = [str(prepared_foreign_results(tmp_path, template)),
                                 str(tmp_path / "missing")]
    write_config(configfile, config)
    out = run_snakemake(tmp_path, configfile, "--cores", "2", summary_csv)
    log = out.stdout + out.stderr
    assert "include_results folder" in log and "missing" in log
    assert not re.search(r"rule bench:", log), "results from elsewhere were rerun"
    summary = pd.read_csv(results / "summary.csv").fillna("")
    assert sorted(summary.target.unique()) == ["a100", "l4", "local", "local-b"]
    flagged = summary[summary.fingerprint_check != ""]
    assert list(flagged.target) == ["a100"], summary[["target", "fingerprint_check"]]
    assert "fingerprint≠target" in (results / "summary_table.md").read_text()


@pytest.mark.workflow
def test_default_config_merges_the_committed_h100_results(tmp_path: Path) -> None:
    """config/config.yaml reads docs/results/h100 (committed, measured on the GPU
    machine): its rows go into the default summary as they are, never rerun here."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "sentences.txt").write_text(
        (REPO / "config" / "sentences.txt").read_text())
    # the serving traffic's tokenizer, a folder relative to the working directory
    shutil.copytree(REPO / "config" / "tokenizers", tmp_path / "config" / "tokenizers")
    committed = tmp_path / "docs" / "results" / "h100" / "distilbert-sst2"
    for backend in ("torch-eager", "trt-fp16"):
        (committed / backend).mkdir(parents=True)
        row = result("h100", backend, XEON, H100) | {"model": "distilbert-sst2"}
        (committed / backend / "bs1.json").write_text(json.dumps(row))
    out = run_snakemake(tmp_path, REPO / "config" / "config.yaml", "-n", "--cores", "1",
                        "all")
    jobs = dry_run_jobs(out.stdout + out.stderr)
    (aggregate,) = [j for j in jobs if j["rule"] == "aggregate"]
    for backend in ("torch-eager", "trt-fp16"):
        assert f"docs/results/h100/distilbert-sst2/{backend}/bs1.json" in aggregate["input"]
    assert all("/h100/" not in j["output"] for j in jobs if j["rule"] == "bench")
    # the serving traffic reads config/sentences.txt through the saved tokenizer
    (tokenizer,) = [j for j in jobs if j["rule"] == "traffic_tokenizer"]
    assert tokenizer["output"].endswith("results/tokenizers/bert-base-uncased-wordpiece")
    (traffic,) = [j for j in jobs if j["rule"] == "serve_traffic"]
    assert tokenizer["output"] in traffic["input"] and "sentences.txt" in traffic["input"]
