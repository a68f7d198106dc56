"""Report plots, the environment page, HTML views, and `snakemake --report` on a run
with two targets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from crafted import make_result, write_results
from helpers import run_snakemake, tiny_config_dict, write_config

from inferbench.report.documents import environment_markdown, markdown_to_html
from inferbench.report.plots import KINDS, distribution_batch, draw, speedup_cells
from inferbench.report.rows import Bootstrapper

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CONTEXT = {"baseline": "torch-eager", "resamples": 200, "seed": 0}


def crafted_rows(targets=("local",)) -> list[dict]:
    rows = []
    for t_index, target in enumerate(targets):
        scale = 1.0 + t_index
        for batch in (1, 4, 16):
            rows += [
                make_result("torch-eager", batch, 2.0 * batch * scale, target=target),
                make_result("ort-cpu", batch, 1.0 * batch * scale, kind="ort", target=target,
                            options={"graph": "plain"}),
                make_result("ort-cpu-int8", batch, (1.2 if batch == 1 else 0.6) * batch * scale,
                            kind="ort", precision="int8", target=target,
                            options={"graph": "plain"}),
            ]
        rows.append(make_result("ort-cuda", 1, None, kind="ort", device="cuda", target=target,
                                status="unavailable", reason="no CUDA device"))
    return rows


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.parametrize("targets", [("local",), ("local", "other-box")])
@pytest.mark.parametrize("kind", KINDS)
def test_every_plot_is_drawn(tmp_path: Path, kind: str, targets: tuple[str, ...]) -> None:
    paths = write_results(tmp_path / "bench", crafted_rows(targets))
    out = tmp_path / f"{kind}.png"
    draw(kind, paths, {**CONTEXT, "prices": {"local": 0.5, "other-box": 2.0}}, out)
    width, height = png_size(out)
    assert width > 400 and height > 200
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically


def test_plots_without_data_or_baseline_still_produce_a_file(tmp_path: Path) -> None:
    failed = [make_result("a", 1, None, status="error", reason="boom")]
    paths = write_results(tmp_path / "bench", failed)
    for kind in KINDS:
        draw(kind, paths, {**CONTEXT, "baseline": None}, tmp_path / f"{kind}.png")
        png_size(tmp_path / f"{kind}.png")


def test_speedup_cells_hold_the_ratio_and_the_status() -> None:
    rows = crafted_rows()
    cells = speedup_cells(rows, "torch-eager", Bootstrapper(200))
    assert cells[("local", "torch-eager", 4)] == {"status": "baseline"}
    assert cells[("local", "ort-cuda", 1)] == {"status": "unavailable"}
    ratio = cells[("local", "ort-cpu", 4)]["ratio"]
    assert ratio.value == pytest.approx(2.0, rel=0.03) and ratio.excludes_one


def test_distribution_batch_defaults_to_the_largest_measured() -> None:
    rows = crafted_rows()
    assert distribution_batch(rows, None) == (16, "")
    assert distribution_batch(rows, 4) == (4, "")
    chosen, note = distribution_batch(rows, 64)
    assert chosen == 16 and "64" in note


def test_markdown_to_html_renders_tables() -> None:
    page = markdown_to_html("# T\n\n| a | b |\n|--|--|\n| 1 | 2 |\n", "title")
    assert "<table>" in page and "<h1>T</h1>" in page and "<title>title</title>" in page


def test_environment_lists_fingerprints_per_target_and_the_config() -> None:
    rows = crafted_rows(("local", "other-box"))
    rows[0]["fingerprint"] = {**rows[0]["fingerprint"], "cpu_model": "Odd CPU"}
    text = environment_markdown(rows, {"threads": 2, "report": {"baseline": "torch-eager"}})
    assert "## Target `local`" in text and "## Target `other-box`" in text
    assert "Fingerprint 1 of 2" in text and "Odd CPU" in text and "Test CPU" in text
    assert "```yaml" in text and "baseline: torch-eager" in text


def test_cli_plot_and_findings(tmp_path: Path) -> None:
    from inferbench.cli import main

    paths = [str(p) for p in write_results(tmp_path / "bench", crafted_rows())]
    main(["plot", "--kind", "speedup", "--results", *paths, "--context",
          json.dumps(CONTEXT), "--out", str(tmp_path / "s.png")])
    png_size(tmp_path / "s.png")
    main(["findings", "--results", *paths, "--accuracy", "--context", json.dumps(CONTEXT),
          "--out", str(tmp_path / "o.md"), "--html", str(tmp_path / "o.html")])
    assert "INT8 pays off from batch 4" in (tmp_path / "o.md").read_text()
    assert "<h2>" in (tmp_path / "o.html").read_text()


# -- the workflow: two targets, prices, --report -----------------------------------------

REPORT_FILES = ["plots/latency_vs_batch.png", "plots/throughput_vs_batch.png",
                "plots/speedup_heatmap.png", "plots/latency_distributions.png",
                "plots/target_comparison.png", "observations.md", "environment.md",
                "report/summary.html", "report/observations.html", "report/environment.html"]


@pytest.mark.workflow
def test_report_with_two_targets(tmp_path: Path) -> None:
    config = tiny_config_dict()
    config["backends"] = [b for b in config["backends"]
                          if b["name"] in ("torch-eager", "torch-dynamic-int8")]
    config["targets"] = {"local": {"price_per_hour": 0.1}, "other-box": {"price_per_hour": 0.4}}
    configfile = write_config(tmp_path / "config.yaml", config)
    run_snakemake(tmp_path, configfile, "--cores", "2", "all")
    results = tmp_path / "results"
    for name in REPORT_FILES:
        assert (results / name).is_file(), name
    assert "`other-box`" not in (results / "observations.md").read_text()

    # Results of a second machine copied in: the report stage reruns, benchmarks do not.
    local = results / "bench" / "local"
    other = results / "bench" / "other-box"
    shutil.copytree(local, other)
    for path in other.rglob("bs*.json"):
        result = json.loads(path.read_text())
        result["target"] = "other-box"
        path.write_text(json.dumps(result))
    dry = run_snakemake(tmp_path, configfile, "-n", "--cores", "1", "all")
    assert "bench " not in dry.stdout.split("Job stats:")[-1]
    run_snakemake(tmp_path, configfile, "--cores", "2", "all")
    observations = (results / "observations.md").read_text()
    assert "`other-box`, batch 1" in observations and "`local`, batch 1" in observations
    assert "Across targets" in observations  # both targets are priced
    assert "## Target `other-box`" in (results / "environment.md").read_text()
    assert "$ / M inf" in (results / "summary_table.md").read_text()

    report = results / "report.html"
    run_snakemake(tmp_path, configfile, "--report", str(report))
    html = report.read_text()
    assert len(html) > 50_000
    for name in ("speedup_heatmap.png", "latency_distributions.png", "target_comparison.png",
                 "observations.html", "environment.html", "summary.html"):
        assert name in html, name


@pytest.mark.workflow
def test_lint_is_clean_for_the_report_rules(tmp_path: Path) -> None:
    configfile = write_config(tmp_path / "config.yaml", tiny_config_dict())
    lint = run_snakemake(tmp_path, configfile, "--lint", check=False)
    rules = ("accuracy", "plot_speedup", "plot_distributions", "plot_targets", "findings",
             "environment", "summary_html")
    text = lint.stdout + lint.stderr
    for rule in rules:
        assert f"Lints for rule {rule} " not in text, text
