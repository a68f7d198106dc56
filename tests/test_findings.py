"""Findings from crafted result sets: each appears when the intervals support it and is
withheld (reported as within noise) when they do not."""

from __future__ import annotations

from pathlib import Path

import pytest
from crafted import make_result, samples, write_results

from inferbench.report.findings import derive, render, write_observations
from inferbench.report.rows import Bootstrapper, baseline_row, fp32_partner

CONTEXT = {"baseline": "torch-eager", "resamples": 500, "seed": 0}


def by_topic(found, topic, subject=None):
    return [f for f in found if f.topic == topic and (subject is None or f.subject == subject)]


def ort(name: str, batch: int, median: float, precision: str = "fp32", graph: str = "plain",
        **kw):
    return make_result(name, batch, median, kind="ort", precision=precision,
                       options={"graph": graph}, **kw)


# -- comparison primitives -------------------------------------------------------------

def test_speedup_interval_excludes_one_only_for_a_real_difference() -> None:
    boot = Bootstrapper(500)
    base = make_result("a", 1, 10.0)
    faster = make_result("b", 1, 5.0)
    same = make_result("c", 1, 10.0)
    ratio = boot.speedup(base, faster)
    assert ratio.value == pytest.approx(2.0, rel=0.02)
    assert ratio.low > 1.9 and ratio.verdict == "faster"
    assert boot.speedup(base, same).verdict == "within noise"
    assert boot.speedup(faster, base).verdict == "slower"


def test_overlapping_noisy_samples_are_within_noise() -> None:
    boot = Bootstrapper(500)
    base = make_result("a", 1, 1.00, cv=0.5, n=20)
    other = make_result("b", 1, 1.05, cv=0.5, n=20)
    ratio = boot.speedup(base, other)
    assert not ratio.excludes_one
    assert boot.interval(base).overlaps(boot.interval(other))


def test_fp32_partner_matches_runtime_and_options() -> None:
    rows = [ort("ort-cpu", 1, 1.0), ort("ort-cpu-fused", 1, 1.0, graph="fused"),
            make_result("torch-eager", 1, 1.0)]
    fused_int8 = ort("ort-cpu-int8-fused", 1, 1.0, precision="int8", graph="fused")
    plain_int8 = ort("ort-cpu-int8", 1, 1.0, precision="int8")
    torch_int8 = make_result("torch-dynamic-int8", 1, 1.0, precision="int8")
    assert fp32_partner(fused_int8, rows)["backend"] == "ort-cpu-fused"
    assert fp32_partner(plain_int8, rows)["backend"] == "ort-cpu"
    assert fp32_partner(torch_int8, rows)["backend"] == "torch-eager"
    other_batch = ort("ort-cpu-int8", 4, 1.0, precision="int8")
    assert fp32_partner(other_batch, rows) is None


def test_gpu_rows_use_the_eager_fp32_row_on_their_device_as_baseline() -> None:
    cpu = make_result("torch-eager", 1, 10.0)
    gpu = make_result("torch-eager-cuda", 1, 2.0, kind="torch-eager", device="cuda")
    trt = make_result("trt-fp16", 1, 1.0, kind="trt", device="cuda", precision="fp16")
    ort_cpu = ort("ort-cpu", 1, 5.0)
    rows = [cpu, gpu, trt, ort_cpu]
    assert baseline_row(trt, rows, "torch-eager") is gpu
    assert baseline_row(ort_cpu, rows, "torch-eager") is cpu
    assert baseline_row(trt, [cpu, trt], "torch-eager") is cpu  # no GPU eager: the named one


# -- INT8 payoff -----------------------------------------------------------------------

def test_int8_pays_off_from_the_first_batch_where_it_is_faster_from_then_on() -> None:
    rows = []
    for batch, fp32, int8 in ((1, 1.0, 1.3), (4, 3.0, 2.0), (16, 10.0, 6.0)):
        rows += [ort("ort-cpu", batch, fp32), ort("ort-cpu-int8", batch, int8, "int8")]
    found = by_topic(derive(rows, CONTEXT), "int8")
    assert len(found) == 1
    assert found[0].supported
    assert found[0].data["payoff_batch"] == 4
    assert "INT8 pays off from batch 4" in found[0].text
    assert "batch 1: 0.77×" in found[0].text and "slower" in found[0].text


def test_int8_payoff_is_withheld_when_within_noise() -> None:
    rows = []
    for batch, median in ((1, 1.0), (8, 5.0)):
        rows += [ort("ort-cpu", batch, median, cv=0.3, n=30),
                 ort("ort-cpu-int8", batch, median * 1.01, "int8", cv=0.3, n=30)]
    (finding,) = by_topic(derive(rows, CONTEXT), "int8")
    assert not finding.supported
    assert finding.data["payoff_batch"] is None
    assert "no payoff beyond noise" in finding.text
    assert "pays off from" not in finding.text


def test_int8_slower_everywhere_says_it_does_not_pay_off() -> None:
    rows = [ort("ort-cpu", 1, 1.0), ort("ort-cpu-int8", 1, 1.5, "int8"),
            ort("ort-cpu", 8, 4.0), ort("ort-cpu-int8", 8, 5.0, "int8")]
    (finding,) = by_topic(derive(rows, CONTEXT), "int8")
    assert finding.supported and "does not pay off" in finding.text


def test_int8_faster_only_at_an_intermediate_batch_is_not_a_payoff_point() -> None:
    rows = [ort("ort-cpu", 1, 1.0), ort("ort-cpu-int8", 1, 1.5, "int8"),
            ort("ort-cpu", 4, 4.0), ort("ort-cpu-int8", 4, 3.0, "int8"),
            ort("ort-cpu", 16, 8.0), ort("ort-cpu-int8", 16, 8.0, "int8")]
    (finding,) = by_topic(derive(rows, CONTEXT), "int8")
    assert finding.data["payoff_batch"] is None
    assert "faster only at batch 4" in finding.text


# -- speedup over the baseline ---------------------------------------------------------

def test_speedup_over_baseline_stated_for_faster_and_withheld_for_equal() -> None:
    rows = []
    for batch in (1, 4):
        rows += [make_result("torch-eager", batch, 10.0 * batch),
                 ort("ort-cpu", batch, 5.0 * batch),
                 make_result("torch-twin", batch, 10.0 * batch, kind="torch-eager")]
    found = derive(rows, CONTEXT)
    (faster,) = by_topic(found, "speedup", "ort-cpu")
    assert faster.supported
    assert "faster than `torch-eager` at every batch" in faster.text
    assert faster.data["ratios"][1].value == pytest.approx(2.0, rel=0.03)
    (twin,) = by_topic(found, "speedup", "torch-twin")
    assert not twin.supported and "within noise at every batch" in twin.text
    assert not by_topic(found, "speedup", "torch-eager")


def test_no_baseline_gives_no_speedup_statements() -> None:
    rows = [make_result("a", 1, 1.0), make_result("b", 1, 2.0)]
    found = derive(rows, {**CONTEXT, "baseline": None})
    assert not by_topic(found, "speedup")
    assert "No baseline backend" in render(found, {**CONTEXT, "baseline": None}, rows)


# -- FP16 ----------------------------------------------------------------------------

def test_fp16_helped_only_where_the_interval_says_so() -> None:
    rows = []
    for batch, fp32, fp16 in ((1, 1.0, 1.0), (8, 4.0, 2.0)):
        rows += [make_result("torch-cuda", batch, fp32, kind="torch-eager", device="cuda",
                             device_ms=fp32 * 0.8),
                 make_result("torch-cuda-fp16", batch, fp16, kind="torch-eager",
                             device="cuda", precision="fp16", device_ms=fp16 * 0.8)]
    (finding,) = by_topic(derive(rows, CONTEXT), "half")
    assert finding.data["helped"] == [8] and finding.data["hurt"] == []
    assert "helped at batch 8" in finding.text
    assert "batch 1:" in finding.text and "within noise" in finding.text


def test_cpu_bf16_finding_names_the_instruction_set() -> None:
    # CPU BF16 speed depends on AVX512_BF16 / AMX: the statement says which it had
    rows = []
    for batch in (1, 8):
        rows += [make_result("a", batch, 1.0, kind="torch-eager"),
                 make_result("b", batch, 0.5, kind="torch-eager", precision="bf16")]
    for row in rows:
        row["fingerprint"]["cpu_isa_flags"] = ["avx2", "avx512f", "avx512_bf16"]
    (finding,) = by_topic(derive(rows, CONTEXT), "half")
    assert "BF16 helped at every batch" in finding.text
    assert "(CPU with AVX512_BF16)" in finding.text


def test_cpu_int8_finding_names_the_instruction_set() -> None:
    rows = []
    for batch in (1, 8):
        rows += [make_result("ort-cpu", batch, 4.0, kind="ort"),
                 make_result("ort-cpu-int8", batch, 1.0, kind="ort", precision="int8")]
    for row in rows:
        row["fingerprint"]["cpu_isa_flags"] = ["avx2"]
    (finding,) = by_topic(derive(rows, CONTEXT), "int8")
    assert "INT8 pays off" in finding.text
    assert "(CPU with AVX2 only (no VNNI))" in finding.text


# -- runtime overhead ------------------------------------------------------------------

def test_overhead_stated_when_end_to_end_exceeds_device_time() -> None:
    rows = [make_result("torch-cuda", 1, 1.5, kind="torch-eager", device="cuda",
                        device_ms=1.0),
            make_result("torch-cuda", 8, 4.0, kind="torch-eager", device="cuda", device_ms=3.5),
            make_result("trt", 1, 0.5, device="cuda", device_ms=0.5)]
    found = by_topic(derive(rows, CONTEXT), "overhead")
    assert [f.subject for f in found] == ["torch-cuda", "trt"]  # batch 1 only
    torch_row, trt_row = found
    assert torch_row.supported
    assert torch_row.data["overhead"].value == pytest.approx(0.5, abs=0.05)
    assert "33% of `torch-cuda`'s latency is runtime overhead" in torch_row.text
    assert not trt_row.supported and "within noise" in trt_row.text


def test_cpu_rows_have_no_overhead_finding() -> None:
    assert not by_topic(derive([make_result("a", 1, 1.0)], CONTEXT), "overhead")


# -- winners -------------------------------------------------------------------------

def test_winner_named_only_when_it_beats_the_runner_up() -> None:
    rows = [make_result("torch-eager", 1, 10.0), ort("ort-cpu", 1, 5.0),
            ort("ort-cpu-fused", 1, 4.0),
            make_result("torch-eager", 8, 40.0), ort("ort-cpu", 8, 20.0),
            ort("ort-cpu-fused", 8, 20.0)]
    found = by_topic(derive(rows, CONTEXT), "winner")
    one, eight = found
    assert one.supported and one.data["winner"] == "ort-cpu-fused"
    assert "**`ort-cpu-fused` wins**" in one.text
    assert not eight.supported and "no single winner" in eight.text
    assert set(eight.data["tied"]) | {eight.data["winner"]} == {"ort-cpu", "ort-cpu-fused"}


def test_winners_are_per_target() -> None:
    rows = [make_result("a", 1, 1.0, target="x"), make_result("b", 1, 2.0, target="x"),
            make_result("a", 1, 2.0, target="y"), make_result("b", 1, 1.0, target="y")]
    found = by_topic(derive(rows, CONTEXT), "winner")
    assert {(f.target, f.data["winner"]) for f in found} == {("x", "a"), ("y", "b")}


# -- cost ----------------------------------------------------------------------------

def test_slower_but_cheaper_machine_wins_on_cost() -> None:
    rows = [make_result("ort", 8, 8.0, target="cheap-cpu"),   # 1000 seq/s at $1/h
            make_result("ort", 8, 4.0, target="gpu-box")]     # 2000 seq/s at $4/h
    prices = {"cheap-cpu": 1.0, "gpu-box": 4.0}
    found = by_topic(derive(rows, {**CONTEXT, "prices": prices}), "cost")
    headline = found[0]
    assert headline.supported
    assert headline.data["cheapest"] == ("cheap-cpu", "ort")
    assert headline.data["ratio"].value == pytest.approx(2.0, rel=0.03)
    assert "although it is slower" in headline.text
    detail = {f.target: f for f in found[1:]}
    # $1/h / 3600 / ~1000 seq/s * 1e6
    assert detail["cheap-cpu"].data["cost"].value == pytest.approx(0.2778, rel=0.03)


def test_equal_costs_are_within_noise_and_unpriced_targets_have_none() -> None:
    rows = [make_result("a", 8, 8.0, target="t1", cv=0.3, n=20),
            make_result("a", 8, 8.0, target="t2", cv=0.3, n=20),
            make_result("a", 8, 8.0, target="t3")]
    found = by_topic(derive(rows, {**CONTEXT, "prices": {"t1": 1.0, "t2": 1.0}}), "cost")
    assert not found[0].supported and "within noise" in found[0].text
    assert not [f for f in found if f.target == "t3"]
    text = render(derive(rows, CONTEXT), CONTEXT, rows)
    assert "No `targets.<name>.price_per_hour` configured" in text


def test_cost_uses_each_backends_best_throughput_batch() -> None:
    rows = [make_result("a", 1, 1.0), make_result("a", 8, 4.0)]  # 1000 vs 2000 seq/s
    found = by_topic(derive(rows, {**CONTEXT, "prices": {"local": 3.6}}), "cost")
    (only,) = found
    assert only.data["batch"] == 8
    assert only.data["cost"].value == pytest.approx(0.5, rel=0.03)


# -- rendering and files ---------------------------------------------------------------

def test_unmeasured_rows_are_listed_and_left_out_of_comparisons() -> None:
    rows = [make_result("torch-eager", 1, 1.0),
            make_result("trt", 1, None, status="unavailable", reason="no CUDA device")]
    found = derive(rows, CONTEXT)
    (missing,) = by_topic(found, "unmeasured")
    assert "unavailable (no CUDA device)" in missing.text
    assert not by_topic(found, "speedup")


def test_observations_file_has_every_section(tmp_path: Path) -> None:
    rows = [make_result("torch-eager", 1, 2.0), ort("ort-cpu", 1, 1.0),
            ort("ort-cpu-int8", 1, 0.8, "int8")]
    paths = write_results(tmp_path / "bench", rows)
    out = tmp_path / "observations.md"
    write_observations(paths, CONTEXT, out, [])
    text = out.read_text()
    for heading in ("# Observations", "## Fastest backend", "## Speedup over the baseline",
                    "## INT8 against FP32", "## FP16 / BF16", "## Runtime overhead",
                    "## Cost per million", "## Accuracy per backend"):
        assert heading in text
    assert "INT8 pays off from batch 1" in text
    assert "Accuracy was not measured: no `accuracy.dataset` configured" in text
    assert "[" in text and "×" in text  # intervals and ratios are printed


def test_samples_helper_is_deterministic() -> None:
    assert samples(1.0, 5, seed="x") == samples(1.0, 5, seed="x")


def test_int8_slower_at_some_batches_and_noise_elsewhere() -> None:
    rows = [ort("ort-cpu", 1, 1.0), ort("ort-cpu-int8", 1, 1.5, "int8"),
            ort("ort-cpu", 8, 4.0, cv=0.3, n=30), ort("ort-cpu-int8", 8, 4.0, "int8", cv=0.3,
                                                      n=30)]
    (finding,) = by_topic(derive(rows, CONTEXT), "int8")
    assert finding.supported
    assert "slower at batch 1, within noise elsewhere" in finding.text
