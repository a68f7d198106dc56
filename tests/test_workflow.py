"""The real Snakemake workflow on a tiny config: end to end, then rerun semantics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import job_counts, run_snakemake, tiny_config_dict, write_config

pytestmark = pytest.mark.workflow

BACKENDS = ["torch-eager", "ort-cpu", "ort-cpu-int8-fused"]
# The report stage (workflow/rules/report.smk) and the side-by-side view of the targets
# (workflow/rules/compare.smk) rerun whenever the results change.
REPORT_JOBS = {rule: 1 for rule in ("plot_speedup", "plot_distributions", "plot_targets",
                                    "findings", "environment", "summary_html",
                                    "machine_comparison")}


def scheduled(workdir: Path, configfile: Path) -> dict[str, int]:
    result = run_snakemake(workdir, configfile, "-n", "--cores", "1", "all")
    return job_counts(result.stdout + result.stderr)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    workdir = tmp_path_factory.mktemp("workflow")
    config = tiny_config_dict()
    config["backends"] = [b for b in config["backends"] if b["name"] in BACKENDS]
    configfile = write_config(workdir / "config.yaml", config)
    run_snakemake(workdir, configfile, "--cores", "2", "all")
    return workdir, configfile, config


def test_end_to_end_rows_table_and_plots(finished_run: tuple[Path, Path, dict]) -> None:
    workdir, _, config = finished_run
    results = workdir / "results"
    rows = list((results / "bench" / "local" / "tiny-distilbert").glob("*/bs*.json"))
    assert len(rows) == len(BACKENDS) * len(config["batch_sizes"])
    for path in rows:
        result = json.loads(path.read_text())
        assert result["status"] == "ok", (path, result.get("reason"))
        assert result["views"]["latency"]["samples"]
    table = (results / "summary_table.md").read_text()
    assert "seeded random weights" in table
    for backend in BACKENDS:
        assert f"| {backend} " in table
    assert (results / "summary.csv").read_text().count("\n") == len(rows) + 1
    for plot in ("latency_vs_batch.png", "throughput_vs_batch.png"):
        assert (results / "plots" / plot).read_bytes()[:4] == b"\x89PNG"
    card = json.loads((results / "models" / "tiny-distilbert" / "card.json").read_text())
    assert card["weights"] == "random" and card["parameters"] > 0


def test_launches_run_in_rounds(finished_run: tuple[Path, Path, dict]) -> None:
    """Every row's first launch finishes before any row's second starts, so each row's
    launches are spread over the run; the row keeps each launch's samples and window,
    and the launches' own records were temporary."""
    workdir, _, config = finished_run
    results = workdir / "results"
    repeats = config["measurement"]["repeats"]
    rows = [json.loads(p.read_text()) for p in results.glob("bench/local/*/*/bs*.json")]
    windows = [w for row in rows for w in row["launch_windows"]]
    assert all(len(row["launch_windows"]) == repeats == row["launches"] for row in rows)
    assert all(len(row["views"]["latency"]["samples"]) == repeats for row in rows)
    first = [w for row in rows for w in row["launch_windows"][:1]]
    later = [w for row in rows for w in row["launch_windows"][1:]]
    assert len(windows) == len(rows) * repeats and later
    assert max(end for _, end in first) <= min(start for start, _ in later)
    assert not list((results / "launches").rglob("*.json"))


def test_no_change_schedules_nothing(finished_run: tuple[Path, Path, dict]) -> None:
    workdir, configfile, _ = finished_run
    assert scheduled(workdir, configfile) == {}


def test_changing_one_backend_reruns_only_its_jobs(
        finished_run: tuple[Path, Path, dict], tmp_path: Path) -> None:
    workdir, _, config = finished_run
    changed = json.loads(json.dumps(config))
    for entry in changed["backends"]:
        if entry["name"] == "ort-cpu":
            entry["options"]["graph_optimization_level"] = "basic"
    configfile = write_config(tmp_path / "changed.yaml", changed)
    counts = scheduled(workdir, configfile)
    rows = len(config["batch_sizes"])
    assert counts == {"bench": rows * config["measurement"]["repeats"], "bench_row": rows,
                      "aggregate": 1, "all": 1, **REPORT_JOBS}


def test_changing_export_options_reruns_the_onnx_chain_only(
        finished_run: tuple[Path, Path, dict], tmp_path: Path) -> None:
    workdir, _, config = finished_run
    changed = json.loads(json.dumps(config))
    changed["export"] = {"opset": 18}
    configfile = write_config(tmp_path / "export.yaml", changed)
    counts = scheduled(workdir, configfile)
    onnx_backends = [b for b in BACKENDS if b.startswith("ort")]
    assert counts.get("onnx_export") == 1
    rows = len(onnx_backends) * len(config["batch_sizes"])
    assert counts.get("bench") == rows * config["measurement"]["repeats"]
    assert counts.get("bench_row") == rows
    assert "prepare_model" not in counts and "reference" not in counts


def test_summary_target_builds_only_what_it_needs(
        finished_run: tuple[Path, Path, dict]) -> None:
    workdir, configfile, _ = finished_run
    summary = workdir / "results" / "summary_table.md"
    summary.unlink()
    result = run_snakemake(workdir, configfile, "-n", "--cores", "1", str(summary))
    assert job_counts(result.stdout + result.stderr) == {"aggregate": 1}
