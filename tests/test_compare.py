"""Comparing runs and machines, on crafted result sets whose truth is known."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from crafted import make_result, write_results
from helpers import REPO, run_snakemake, tiny_config_dict, write_config

from inferbench.cli import main
from inferbench.measure.stats import hierarchical_replicates, view_stats
from inferbench.report.compare import (
    CompareError,
    Ratio,
    compare_runs,
    differences,
    hierarchical_bootstrap,
    launch_ratio_interval,
    load_run,
    run_compare,
    verdict_of,
)
from inferbench.report.machines import machine_comparison, machine_markdown
from inferbench.results import VIEW_UNITS, Result, View

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RESAMPLES = 400


def row(backend: str = "ort-cpu", batch: int = 4, median_ms: float = 10.0, *,
        launch_offsets: tuple[float, ...] = (1.0, 1.0, 1.0), cv: float = 0.01, n: int = 150,
        seed: int = 0, model_sha256: str = "m" * 64, **kwargs: Any) -> dict[str, Any]:
    """A crafted result whose latency launches sit at median_ms x each offset (the
    between-launch noise a fresh process shows); each side gets its own seed."""
    record = make_result(backend, batch, median_ms, kind=kwargs.pop("kind", "ort"),
                         launches=len(launch_offsets), **kwargs)
    rng = np.random.default_rng(seed)
    groups = [(median_ms * offset * np.exp(rng.normal(0.0, cv, n))).tolist()
              for offset in launch_offsets]
    latency = View("latency", VIEW_UNITS["latency"], groups)
    latency.stats = view_stats(groups, 200)
    rates = [[batch / (float(np.median(g)) / 1e3)] * 3 for g in groups]
    throughput = View("throughput", VIEW_UNITS["throughput"], rates)
    throughput.stats = view_stats(rates, 200)
    record["views"]["latency"] = dataclasses.asdict(latency)
    record["views"]["throughput"] = dataclasses.asdict(throughput)
    record["model_sha256"] = model_sha256
    record["inputs_sha256"] = "i" * 64
    return record


def results(*records: dict[str, Any]) -> list[Result]:
    return [Result.from_dict(r) for r in records]


def one(baseline: dict[str, Any], current: dict[str, Any], view: str = "latency", **kwargs: Any):
    comparison = compare_runs(results(baseline), results(current), resamples=RESAMPLES,
                              **kwargs)
    return next(r for r in comparison.rows if r.view == view)


# -- verdicts --------------------------------------------------------------------------

def test_ten_percent_slowdown_with_tight_samples_is_slower() -> None:
    compared = one(row(median_ms=10.0, seed=1), row(median_ms=11.0, seed=2))
    assert compared.verdict == "slower"
    assert compared.ratio is not None and compared.ratio.low > 1.05
    assert compared.ratio.low < 1.10 < compared.ratio.high + 0.01
    # the throughput view is a rate: its time ratio reads the same way
    assert one(row(median_ms=10.0, seed=1), row(median_ms=11.0, seed=2),
               "throughput").verdict == "slower"
    faster = one(row(median_ms=11.0, seed=1), row(median_ms=10.0, seed=2))
    assert faster.verdict == "faster" and faster.ratio is not None and faster.ratio.high < 1


def test_three_percent_shift_inside_the_launch_noise_is_within_noise() -> None:
    # Fresh processes land 5% apart: a 3% shift of the whole row is not distinguishable.
    noisy = (0.95, 1.0, 1.05)
    compared = one(row(median_ms=10.0, launch_offsets=noisy, seed=1),
                   row(median_ms=10.3, launch_offsets=noisy[::-1], seed=2))
    assert compared.verdict == "within noise"
    assert compared.ratio is not None and compared.ratio.low <= 1.0 <= compared.ratio.high


def test_precise_difference_inside_the_noise_band_is_within_noise() -> None:
    base, cur = row(median_ms=10.0, cv=0.001, n=2000, seed=1), row(
        median_ms=10.1, cv=0.001, n=2000, seed=2)
    compared = one(base, cur)
    assert compared.ratio is not None and compared.ratio.low > 1.0  # excludes 1 ...
    assert compared.verdict == "within noise"  # ... but lies inside the ±2% band
    assert one(base, cur, noise_band_pct=0.5).verdict == "slower"


def test_verdict_rule_at_its_edges() -> None:
    assert verdict_of(Ratio(1.0, 0.99, 1.01), 0.0) == "within noise"
    assert verdict_of(Ratio(1.015, 1.01, 1.02), 0.02) == "within noise"
    assert verdict_of(Ratio(1.03, 1.01, 1.05), 0.02) == "slower"
    assert verdict_of(Ratio(0.9, 0.85, 0.95), 0.02) == "faster"


# -- comparability ---------------------------------------------------------------------

def test_different_model_hash_is_not_comparable() -> None:
    compared = one(row(seed=1), row(median_ms=12.0, seed=2, model_sha256="x" * 64))
    assert compared.verdict == "not comparable"
    assert compared.kind == "not comparable" and "model" in compared.changed
    assert not compared.comparable and not compared.regression(1.0)


def test_software_settings_and_machine_differences_are_named() -> None:
    base, cur = row(seed=1), row(seed=2)
    cur["fingerprint"] = {**cur["fingerprint"], "packages": {"torch": "y"}}
    compared = one(base, cur)
    assert compared.kind == "software" and "fingerprint.packages.torch x → y" in compared.changed

    cur["options"] = {"graph": "plain", "graph_optimization_level": "basic"}
    fields = {d.field: d for d in differences(*results(base, cur))}
    assert fields["options.graph_optimization_level"].category == "settings"
    assert fields["options.graph_optimization_level"].baseline == "all"  # module default

    cur["fingerprint"] = {**cur["fingerprint"], "cpu_model": "Other CPU", "hostname": "z"}
    compared = one(base, cur)
    assert compared.kind == "machine" and "cpu_model" in compared.changed
    assert "hostname" not in compared.changed  # listed, never a reason

    # a field recorded on one side only (an older result) changes nothing
    old = row(seed=3, model_sha256=None)  # type: ignore[arg-type]
    assert one(old, row(seed=2)).kind == "same setup"


def test_contended_or_failed_sides_are_not_comparable_with_the_reason() -> None:
    contended = row(seed=2, status="contended", reason="other processes used 40%")
    compared = one(row(seed=1), contended)
    assert compared.verdict == "not comparable" and "contended" in compared.reason
    failed = make_result("ort-cpu", 4, None, kind="ort", status="error", reason="boom")
    compared = one(row(seed=1), failed)
    assert compared.verdict == "not comparable" and "current: error: boom" in compared.reason


# -- the gate --------------------------------------------------------------------------

def test_gate_crossed_only_by_the_point_estimate_does_not_fail() -> None:
    noisy = (0.9, 1.0, 1.1)
    base = row(median_ms=10.0, launch_offsets=noisy, seed=1)
    cur = row(median_ms=10.7, launch_offsets=noisy, seed=2)
    compared = one(base, cur)
    assert compared.ratio is not None
    assert compared.ratio.value > 1.05 and compared.ratio.low < 1.05  # point beyond 5%
    assert not compared.regression(5.0)
    tight = one(row(median_ms=10.0, seed=1), row(median_ms=11.0, seed=2))
    assert tight.regression(5.0) and not tight.regression(20.0)


def test_cli_exit_codes_and_regressions_printed_first(tmp_path: Path, capsys) -> None:
    write_results(tmp_path / "base", [row("ort-cpu", 4, 10.0, seed=1),
                                      row("torch-eager", 4, 20.0, kind="torch-eager", seed=3)])
    write_results(tmp_path / "cur", [row("ort-cpu", 4, 11.0, seed=2),
                                     row("torch-eager", 4, 20.0, kind="torch-eager", seed=4)])
    base, cur = str(tmp_path / "base"), str(tmp_path / "cur")
    out = tmp_path / "cmp" / "run.md"
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", base, cur, "--fail-on-regression", "5", "--out", str(out),
              "--resamples", str(RESAMPLES)])
    assert exit_info.value.code == 1
    printed = capsys.readouterr().out.splitlines()
    # both views of ort-cpu are 10% slower; torch-eager is unchanged
    assert printed[0].startswith("REGRESSION: 2 row(s)")
    assert {line.split(":")[0].strip() for line in printed[1:3]} == {
        "ort-cpu bs4 latency", "ort-cpu bs4 throughput"}
    assert out.is_file() and out.with_suffix(".png").read_bytes()[:8] == PNG_MAGIC
    report = out.read_text()
    assert "## Regressions beyond 5%" in report and "**regression** slower" in report

    with pytest.raises(SystemExit) as exit_info:
        main(["compare", base, cur, "--fail-on-regression", "20", "--resamples",
              str(RESAMPLES)])
    assert exit_info.value.code == 0
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", base, str(tmp_path / "nothing-here")])
    assert exit_info.value.code == 2


# -- rows on one side, bad input -------------------------------------------------------

def test_rows_present_on_one_side_only_are_listed(tmp_path: Path) -> None:
    write_results(tmp_path / "base", [row("ort-cpu", 4, seed=1), row("ort-cpu", 8, seed=5),
                                      row("ort-cpu-fused", 4, seed=6)])
    write_results(tmp_path / "cur", [row("ort-cpu", 4, seed=2), row("ort-cpu", 16, seed=7)])
    out = tmp_path / "run.md"
    comparison, _, code = run_compare(tmp_path / "base", tmp_path / "cur", out,
                                          resamples=RESAMPLES)
    assert code == 0
    assert sorted((r.backend, r.batch_size) for r in comparison.only_baseline) == [
        ("ort-cpu", 8), ("ort-cpu-fused", 4)]
    assert [(r.backend, r.batch_size) for r in comparison.only_current] == [("ort-cpu", 16)]
    report = out.read_text()
    assert "## Rows on the baseline side only (2)" in report
    assert "local/m/ort-cpu-fused bs4" in report and "local/m/ort-cpu bs16" in report


def _write(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


@pytest.mark.parametrize(("case", "expected"), [
    ("empty", "BASELINE {base}: no results"),
    ("missing", "BASELINE {base}: no such folder"),
    ("schema", "schema_version 99"),
    ("disjoint", "no shared rows"),
])
def test_bad_input_is_one_line_saying_which_and_why(tmp_path: Path, capsys, case: str,
                                                    expected: str) -> None:
    base, cur = tmp_path / "base", tmp_path / "cur"
    write_results(cur, [row("ort-cpu", 4, seed=2)])
    if case == "empty":
        base.mkdir()
        (base / "notes.txt").write_text("nothing")
    elif case == "schema":
        _write(base / "local" / "m" / "ort-cpu" / "bs4.json",
               {**row("ort-cpu", 4, seed=1), "schema_version": 99})
    elif case == "disjoint":
        write_results(base, [row("torch-eager", 4, kind="torch-eager", seed=1)])
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", str(base), str(cur)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert expected.format(base=base) in err


def test_committed_results_load_and_compare_with_themselves() -> None:
    committed = REPO / "docs" / "results" / "h100" / "distilbert-sst2"
    h100 = [*load_run(committed / "ort-cuda-fp16", "BASELINE"),
            *load_run(committed / "trt-int8", "BASELINE")]
    comparison = compare_runs(h100, h100, resamples=200)
    # batches 1 and 16, three views each, and the two unavailable TensorRT rows
    assert len(comparison.rows) >= 8 and not comparison.only_baseline
    assert any(r.ratio is None for r in comparison.rows)
    verdicts = {r.verdict for r in comparison.rows if r.ratio is not None}
    assert verdicts == {"within noise"}
    # rows the committed run did not measure (unavailable, error) say so
    assert all(r.verdict == "not comparable" for r in comparison.rows if r.ratio is None)


def test_several_targets_on_one_side_need_a_target_folder() -> None:
    base = results(row(target="a", seed=1), row(target="b", seed=2))
    with pytest.raises(CompareError, match="several targets"):
        compare_runs(base, results(row(target="c", seed=3)), resamples=RESAMPLES)
    paired = compare_runs(base, results(row(target="a", seed=4), row(target="b", seed=5)),
                          resamples=RESAMPLES)
    assert {r.target for r in paired.rows} == {"a", "b"}


# -- bootstrap -------------------------------------------------------------------------

def test_launches_that_disagree_widen_the_interval_beyond_the_bootstrap() -> None:
    # Seen on the 2-core CPUs: one run's three launches agree, the next run's land at
    # 65, 79 and 71 ms. Three launches are too few for the bootstrap of launches alone.
    base = row(median_ms=60.0, launch_offsets=(1.0, 1.0, 1.0), seed=1)
    cur = row(median_ms=60.0, launch_offsets=(1.08, 1.32, 1.19), seed=2)
    compared = one(base, cur)
    samples = (Result.from_dict(cur).view("latency").samples,
               Result.from_dict(base).view("latency").samples)
    launch_level = launch_ratio_interval(*samples, 50)
    assert launch_level is not None and launch_level[0] < 1.0
    boot = hierarchical_bootstrap(samples[0], 50, 2000, 1) / hierarchical_bootstrap(
        samples[1], 50, 2000, 2)
    assert np.percentile(boot, 2.5) > 1.05  # the bootstrap alone would call a regression
    assert compared.ratio is not None and compared.ratio.low == pytest.approx(launch_level[0])
    assert compared.verdict == "within noise" and not compared.regression(5.0)
    # one launch a side: no launch-level interval, the bootstrap's stands
    assert launch_ratio_interval([[1.0, 1.1]], [[1.0, 1.2]], 50) is None


def test_vectorised_bootstrap_agrees_with_the_loop() -> None:
    rng = np.random.default_rng(0)
    launches = [rng.lognormal(0.0, 0.1, size).tolist() for size in (40, 90, 60)]
    for statistic in (50, 99, "mean"):
        fast = hierarchical_bootstrap(launches, statistic, 3000, 1)
        loop = hierarchical_replicates(launches, statistic, 3000, 2)
        assert np.percentile(fast, [2.5, 50, 97.5]) == pytest.approx(
            np.percentile(loop, [2.5, 50, 97.5]), rel=0.02)
    # one launch: the ordinary bootstrap; a constant row has no spread
    assert np.ptp(hierarchical_bootstrap([[3.0] * 10], 50, 100, 0)) == 0


# -- machines side by side ------------------------------------------------------------

def test_machine_comparison_pairs_targets_by_runtime(tmp_path: Path) -> None:
    records = []
    for batch in (1, 4):
        records += [
            row("torch-eager", batch, 20.0 * batch, kind="torch-eager", seed=batch),
            row("ort-cpu", batch, 10.0 * batch, seed=10 + batch, options={"graph": "plain"}),
            row("torch-eager-cuda-fp32", batch, 2.0, kind="torch-eager", device="cuda",
                target="h100", seed=20 + batch),
            row("ort-cuda-fp32", batch, 1.0, device="cuda", target="h100", seed=30 + batch,
                options={"graph": "plain", "io_binding": True}),
            row("ort-cuda-fp16", batch, 0.5, device="cuda", precision="fp16", target="h100",
                seed=40 + batch),
        ]
    comparison = machine_comparison(results(*records), {"h100": 3.0}, "local",
                                    resamples=RESAMPLES)
    pairs = {(r.backend, r.batch): r.cells["h100"].result.backend for r in comparison.rows}
    assert pairs[("ort-cpu", 4)] == "ort-cuda-fp32"
    assert pairs[("torch-eager", 1)] == "torch-eager-cuda-fp32"
    ort4 = next(r for r in comparison.rows if (r.backend, r.batch) == ("ort-cpu", 4))
    speedup = ort4.speedup["h100"]
    assert speedup.value == pytest.approx(40, rel=0.01) and speedup.low < 40 * 1.01
    assert speedup.low < speedup.value < speedup.high
    assert ort4.cells["h100"].cost is not None and ort4.cells["local"].cost is None
    fastest = {r.batch: r.cells["h100"].result.backend for r in comparison.best}
    assert fastest == {1: "ort-cuda-fp16", 4: "ort-cuda-fp16"}
    text = machine_markdown(comparison, "plots/m.png")
    assert "h100 speedup" in text and "h100 $/M inf" in text
    assert "ort-cuda-fp16" in text

    out = tmp_path / "machines.md"
    write_results(tmp_path / "res", records)
    assert main_exit(["compare-machines", str(tmp_path / "res" / "local"),
                      str(tmp_path / "res" / "h100"), "--out", str(out), "--plot",
                      str(tmp_path / "m.png"), "--price", "h100=3", "--resamples", "200"]) == 0
    assert (tmp_path / "m.png").read_bytes()[:8] == PNG_MAGIC
    assert "Reference target `local`" in out.read_text()


def main_exit(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


# -- what the harness and the fingerprint record --------------------------------------

def test_rows_record_what_they_timed(tmp_path: Path) -> None:
    from inferbench.measure.harness import JobPaths, artifact_hashes

    card = tmp_path / "card.json"
    card.write_text(json.dumps({"files": {"model.safetensors": "ab"}}))
    inputs = tmp_path / "inputs.npz"
    inputs.write_bytes(b"123")
    paths = JobPaths(tmp_path, card, inputs, tmp_path / "ref.npz")
    first = artifact_hashes(paths)
    assert first["model_sha256"] and first["inputs_sha256"]
    card.write_text(json.dumps({"files": {"model.safetensors": "cd"}}))
    assert artifact_hashes(paths)["model_sha256"] != first["model_sha256"]
    assert artifact_hashes(JobPaths(tmp_path, tmp_path / "no", inputs, inputs)) == {
        "model_sha256": None, "inputs_sha256": None}


def test_gpu_limits_read_what_nvml_has_and_skip_the_rest() -> None:
    from inferbench.measure.fingerprint import gpu_limits

    class FakeNvml:
        NVML_CLOCK_SM, NVML_CLOCK_MEM = 1, 2

        def nvmlDeviceGetEnforcedPowerLimit(self, handle):
            return 700_000

        def nvmlDeviceGetMaxClockInfo(self, handle, clock):
            return {1: 1980, 2: 2619}[clock]

        def nvmlDeviceGetApplicationsClock(self, handle, clock):
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")

    assert gpu_limits(FakeNvml(), None) == {
        "power_limit_w": 700.0, "sm_clock_max_mhz": 1980, "mem_clock_max_mhz": 2619,
        "sm_clock_applications_mhz": None}


# -- config and workflow ---------------------------------------------------------------

def test_compare_config_is_validated(tmp_path: Path) -> None:
    from inferbench.config import ConfigError, validate_config

    config = tiny_config_dict()
    assert validate_config(config)["compare"] == {"name": "baseline", "noise_band_pct": 2,
                                                  "regression_pct": 5}
    with pytest.raises(ConfigError, match=r"compare\.baseline"):
        validate_config({**config, "compare": {"baseline": str(tmp_path / "missing")}})
    with pytest.raises(ConfigError, match="compare"):
        validate_config({**config, "compare": {"baseline": str(tmp_path), "band": 2}})


@pytest.mark.workflow
def test_workflow_compares_with_the_configured_baseline(tmp_path: Path) -> None:
    baseline = tmp_path / "before"
    write_results(baseline, [row("torch-eager", 1, kind="torch-eager", seed=1)])
    config = {**tiny_config_dict(), "compare": {"baseline": str(baseline / "local"),
                                                "name": "before"}}
    configfile = write_config(tmp_path / "config.yaml", config)
    dry = run_snakemake(tmp_path, configfile, "--cores", "1", "-n", "all")
    assert "compare_runs" in dry.stdout and "machine_comparison" in dry.stdout
    assert "compare/before.md" in dry.stdout


def test_a_measured_row_carries_the_model_and_inputs_hashes(tiny_model: dict,
                                                            tmp_path: Path) -> None:
    from inferbench.config import job_settings
    from inferbench.io import sha256_file
    from inferbench.measure.harness import JobPaths, run_in_process

    root = tiny_model["root"]
    settings = job_settings(tiny_model["config"], "torch-eager")
    settings["measurement"] = {**settings["measurement"], "repeats": 1}
    paths = JobPaths(model_dir=root / "hf", card=root / "card.json",
                     inputs=root / "inputs.npz", reference=root / "reference.npz")
    record = run_in_process(settings, 2, paths, "tiny", "local", tmp_path / "bs2.json")
    assert record["status"] == "ok"
    assert record["inputs_sha256"] == sha256_file(root / "inputs.npz")
    assert record["model_sha256"] and len(record["model_sha256"]) == 64
