"""The H100 frontier on a machine without a GPU: FLOPs and distance to the hardware,
torchao FP8 / INT8 backends (options, availability reasons, unsupported shapes, parity,
the INT8 path on the CPU), tuned Inductor and ONNX Runtime options, per-backend batch
sizes, the AOTInductor loader and its reproduction script."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import job_counts, run_snakemake, tiny_config_dict, write_config

from inferbench import hardware
from inferbench.backends import registry
from inferbench.backends.base import Artifacts, Availability, Backend, Unsupported
from inferbench.backends.registry import register
from inferbench.config import BackendSpec, ConfigError, job_settings, validate_config
from inferbench.measure.harness import JobPaths
from inferbench.measure.harness import run_in_process as run_job

REPO = Path(__file__).resolve().parents[1]
NAMES = ["input_ids", "attention_mask"]


def _spec(kind: str, precision: str, device: str = "cuda", **options: Any) -> BackendSpec:
    return BackendSpec(name=f"{kind}-x", kind=kind, device=device, precision=precision,
                       options=options)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


no_gpu = pytest.mark.skipif("_cuda_available()", reason="checks the machine-without-GPU path")


# -- FLOPs ------------------------------------------------------------------------------
def test_flop_count_of_a_tiny_config_matches_a_hand_count() -> None:
    # Tiny DistilBERT: h 32, f 64, 2 layers, 2 labels; seq 16, batch 2.
    h, f, layers, labels, seq, batch = 32, 64, 2, 2, 16, 2
    projections = 4 * (2 * seq * h * h)      # Q, K, V, output: 131072
    attention = 2 * (2 * seq * seq * h)      # QK^T and PV: 32768
    ffn = 2 * (2 * seq * h * f)              # up and down: 131072
    head = 2 * h * h + 2 * h * labels        # pre-classifier + classifier on [CLS]: 2176
    by_hand = batch * (layers * (projections + attention + ffn) + head)
    assert by_hand == 1_184_000

    flops = hardware.transformer_flops(h, f, layers, labels)
    assert hardware.flops_per_inference(flops, batch, seq) == by_hand
    # Feature extraction has no head.
    no_head = hardware.transformer_flops(h, f, layers, None, head="none")
    assert hardware.flops_per_inference(no_head, batch, seq) == by_hand - batch * head


def test_flop_count_of_distilbert_base_is_the_issues_figure() -> None:
    flops = hardware.transformer_flops(768, 3072, 6, 2)
    assert hardware.flops_per_inference(flops, 16, 128) == pytest.approx(178.8e9, rel=1e-3)


def test_flop_count_agrees_with_torchs_flop_counter(tiny_model: dict) -> None:
    """The card's count equals what torch's FlopCounterMode sees in the eager model."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from inferbench.prepare.model import load_inputs
    from inferbench.prepare.modeling import load_wrapper

    card = tiny_model["card"]
    assert card["flops"]["config"] == {"hidden": 32, "intermediate": 64, "layers": 2,
                                       "num_labels": 2, "head": "classification"}
    inputs = load_inputs(tiny_model["root"] / "inputs.npz")
    batch, seq = inputs["input_ids"].shape
    wrapper = load_wrapper(tiny_model["root"] / "hf", card, attn_implementation="eager")
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        wrapper(*[torch.from_numpy(inputs[n]) for n in card["input_names"]])
    assert counter.get_total_flops() == hardware.flops_per_inference(card["flops"], batch, seq)


def test_flops_from_config_needs_the_sizes() -> None:
    @dataclass
    class Bert:
        hidden_size: int = 768
        intermediate_size: int = 3072
        num_hidden_layers: int = 12
        num_labels: int = 2

    assert hardware.flops_from_config(Bert(), "sequence-classification")["per_token"] == \
        12 * (8 * 768 * 768 + 4 * 768 * 3072)
    assert hardware.flops_from_config(Bert(), "feature-extraction")["per_sequence"] == 0
    assert hardware.flops_from_config(object(), "sequence-classification") is None
    with pytest.raises(ValueError, match="layers"):
        hardware.transformer_flops(8, 8, 0, 2)


# -- peaks, achieved rate, kernels ------------------------------------------------------
def test_peaks_by_gpu_and_precision() -> None:
    sxm = "NVIDIA H100 80GB HBM3"
    assert hardware.peak_tflops(sxm, "fp16") == 989
    assert hardware.peak_tflops(sxm, "bf16") == 989
    assert hardware.peak_tflops(sxm, "fp8") == 1979
    assert hardware.peak_tflops(sxm, "int8") == 1979
    assert hardware.peak_tflops(sxm, "tf32") == 494
    assert hardware.peak_tflops(sxm, "fp32") == 67
    assert hardware.peak_tflops("NVIDIA H100 PCIe", "fp16") == 756
    assert hardware.peak_tflops("NVIDIA H200", "fp8") == 1979
    assert hardware.peak_tflops("NVIDIA A10G", "fp16") is None
    assert hardware.peak_tflops(None, "fp16") is None


def test_achieved_rate_and_peak_fraction() -> None:
    # The issue's best row: ~178.8 GFLOP in 0.598 ms is ~30% of the dense FP16 peak.
    flops = hardware.flops_per_inference(hardware.transformer_flops(768, 3072, 6, 2), 16, 128)
    rate = hardware.achieved(flops, 0.598, 989.0)
    assert rate["achieved_tflops"] == pytest.approx(299.0, rel=1e-3)
    assert rate["peak_fraction"] == pytest.approx(0.302, abs=1e-3)
    assert hardware.achieved(flops, 0.598, None) == {"achieved_tflops": pytest.approx(299.0,
                                                     rel=1e-3), "peak_fraction": None}
    assert hardware.achieved(None, 0.5, 989.0)["achieved_tflops"] is None
    assert hardware.achieved(flops, 0.0, 989.0)["achieved_tflops"] is None


def test_onnx_runtime_cuda_fp32_counts_at_the_tf32_peak_unless_tf32_is_off() -> None:
    from inferbench.backends.ort import runs_tf32

    assert runs_tf32("cuda", "fp32", {"use_tf32": "1"})
    assert runs_tf32("cuda", "fp32", {})  # the CUDA EP's default
    assert not runs_tf32("cuda", "fp32", {"use_tf32": "0"})
    assert not runs_tf32("cuda", "fp16", {"use_tf32": "1"})
    assert not runs_tf32("cpu", "fp32", {})


def test_math_precision_sets_the_peak() -> None:
    assert hardware.math_precision("int8", {"math_precision": "bf16"}) == "bf16"
    assert hardware.math_precision("fp32", {"tf32": True}) == "tf32"
    assert hardware.math_precision("fp32", {"tf32": False}) == "fp32"
    row = hardware.row_hardware({"flops": hardware.transformer_flops(768, 3072, 6, 2)}, 16, 128,
                                "cuda", "int8", {"math_precision": "bf16"},
                                "NVIDIA H100 80GB HBM3", 1.0)
    assert row["peak_tflops"] == 989 and row["math_precision"] == "bf16"
    assert row["peak_fraction"] == pytest.approx(178.8 / 989, rel=1e-3)
    cpu = hardware.row_hardware({"flops": None}, 1, 8, "cpu", "fp32", {}, None, 2.0)
    assert cpu["flops_per_inference"] is None and cpu["peak_tflops"] is None


def test_kernel_count_skips_copies_and_host_events() -> None:
    events = [("ampere_fp16_s16816gemm", True), ("Memcpy HtoD (Pageable -> Device)", True),
              ("Memset (Device)", True), ("cudaLaunchKernel", False), ("triton_poi_fused", True),
              ("aten::addmm", False)]
    assert hardware.count_kernels(events) == 2


def test_busy_fraction_counts_overlapping_kernels_once_and_the_gaps_between() -> None:
    # 0-2 and 1-3 overlap (busy 0-3), idle 3-7, busy 7-8: 4 of the 8 µs
    assert hardware.busy_fraction([(7, 8), (0, 2), (1, 3)]) == pytest.approx(0.5)
    assert hardware.busy_fraction([(0, 4), (1, 2)]) == pytest.approx(1.0)
    assert hardware.busy_fraction([(5, 5)]) is None and hardware.busy_fraction([]) is None


def test_device_events_read_kernel_times_from_kineto_or_parsed_events() -> None:
    from types import SimpleNamespace

    cuda, cpu = "cuda", "cpu"
    fake_torch = SimpleNamespace(autograd=SimpleNamespace(DeviceType=SimpleNamespace(CUDA=cuda)))

    class RawEvent:
        def __init__(self, name: str, device: str, start_ns: int, duration_ns: int) -> None:
            self._values = (name, device, start_ns, duration_ns)

        def name(self) -> str:
            return self._values[0]

        def device_type(self) -> str:
            return self._values[1]

        def start_ns(self) -> int:
            return self._values[2]

        def duration_ns(self) -> int:
            return self._values[3]

    raw = [RawEvent("gemm", cuda, 1000, 2000), RawEvent("cudaLaunchKernel", cpu, 0, 500)]
    prof = SimpleNamespace(profiler=SimpleNamespace(
        kineto_results=SimpleNamespace(events=lambda: raw)))
    assert hardware._device_events(prof, fake_torch) == [
        ("gemm", True, 1.0, 3.0), ("cudaLaunchKernel", False, 0.0, 0.5)]
    parsed = [SimpleNamespace(name="gemm", device_type=cuda,
                              time_range=SimpleNamespace(start=4.0, end=6.0))]
    prof = SimpleNamespace(profiler=None, events=lambda: parsed)
    assert hardware._device_events(prof, fake_torch) == [("gemm", True, 4.0, 6.0)]


@no_gpu
def test_kernel_count_without_a_gpu_says_why() -> None:
    result = hardware.kernels_per_inference(lambda: None, lambda: None, iterations=2)
    assert result["kernels_per_inference"] is None
    assert result["kernel_source"]


# -- fake backends for the harness's handling of unsupported shapes and parity --------
@dataclass(frozen=True)
class FakeOptions:
    offset: float = 0.0
    unsupported: bool = False


@register
class FrontierFake(Backend):
    """Returns the FP32 reference plus ``offset``; or refuses the shape like _int_mm."""

    kind = "frontier-fake"
    precisions = frozenset({"fp32", "fp8", "int8"})
    Options = FakeOptions

    def load(self, artifacts: Artifacts) -> None:
        self.reference_path = Path(artifacts.model_dir).parent / "reference.npz"

    def prepare_inputs(self, inputs: Any) -> Any:
        return inputs

    def run(self, prepared: Any) -> Any:
        if self.options.unsupported:
            raise Unsupported("self.size(0) needs to be greater than 16, but got 2")
        with np.load(self.reference_path) as data:
            return data["output"] + np.float32(self.options.offset)

    def to_host(self, outputs: Any) -> np.ndarray:
        return np.asarray(outputs)

    def availability(self) -> Availability:
        return Availability.yes()


def _fake_row(tiny_model: dict, tmp_path: Path, precision: str, parity: dict | None = None,
              **options: Any) -> dict:
    config = tiny_config_dict()
    if parity:
        config["parity"] = parity
    config["backends"] = [{"name": "b", "kind": "frontier-fake", "precision": precision,
                           "options": options}]
    config["measurement"].update(min_iterations=3, min_duration_s=0.01, max_duration_s=1,
                                 bootstrap_resamples=100)
    settings = job_settings(validate_config(config), "b")
    root = tiny_model["root"]
    paths = JobPaths(model_dir=root / "hf", card=root / "card.json", inputs=root / "inputs.npz",
                     reference=root / "reference.npz")
    return run_job(settings, 2, paths, "tiny-distilbert", "local", tmp_path / "row.json")


def test_unsupported_shape_is_an_unavailable_row(tiny_model: dict, tmp_path: Path) -> None:
    row = _fake_row(tiny_model, tmp_path, "int8", unsupported=True)
    assert row["status"] == "unavailable"
    assert "needs to be greater than 16" in row["reason"]


@pytest.mark.parametrize(("precision", "parity", "offset", "status"), [
    ("fp8", None, 0.15, "ok"),                          # default fp8 tolerance: 0.2
    ("fp8", {"fp8": {"max_abs": 0.1}}, 0.05, "ok"),     # as config/gpu.yaml sets it
    ("fp8", {"fp8": {"max_abs": 0.1}}, 0.15, "parity_failed"),
    ("int8", None, 0.15, "ok"),
    ("int8", None, 0.3, "parity_failed")])
def test_fp8_and_int8_parity_tolerances(tiny_model: dict, tmp_path: Path, precision: str,
                                        parity: dict | None, offset: float, status: str) -> None:
    row = _fake_row(tiny_model, tmp_path, precision, parity, offset=offset)
    assert row["status"] == status, row.get("reason")
    assert row["parity"]["max_abs"] == pytest.approx(offset, rel=1e-3)
    tolerance = (parity or {}).get(precision, {}).get("max_abs", 0.2)
    assert row["parity"]["tolerance"]["max_abs"] == tolerance
    if status == "parity_failed":
        assert f"> {tolerance}" in row["reason"]


@register
class FrontierFakeBuilt(FrontierFake):
    """A build that the runtime refuses outright."""

    kind = "frontier-fake-built"
    needs = frozenset({"build"})

    def build(self, artifacts: Artifacts, out_dir: Path, batch_sizes: list[int], seq_len: int
              ) -> dict[str, Any]:
        raise Unsupported("mat2.size(1) needs to be greater than 0 and a multiple of 8")


def test_unsupported_build_makes_unavailable_rows(tiny_model: dict, tmp_path: Path) -> None:
    from inferbench.prepare.engines import build_engine

    config = tiny_config_dict()
    config["backends"] = [{"name": "b", "kind": "frontier-fake-built", "precision": "int8"}]
    settings = job_settings(validate_config(config), "b")
    root = tiny_model["root"]
    manifest_path = tmp_path / "build" / "build.json"
    manifest = build_engine(settings, [2], root / "hf", root / "card.json", None, manifest_path)
    assert manifest["status"] == "unavailable"
    assert "multiple of 8" in manifest["reason"]
    paths = JobPaths(model_dir=root / "hf", card=root / "card.json", inputs=root / "inputs.npz",
                     reference=root / "reference.npz", build_manifest=manifest_path)
    row = run_job(settings, 2, paths, "tiny-distilbert", "local", tmp_path / "row.json")
    assert row["status"] == "unavailable" and "multiple of 8" in row["reason"]


def test_row_has_its_distance_to_the_hardware(tiny_model: dict, tmp_path: Path) -> None:
    row = _fake_row(tiny_model, tmp_path, "fp32")
    assert row["status"] == "ok"
    hw = row["hardware"]
    assert hw["flops_per_inference"] == hardware.flops_per_inference(
        tiny_model["card"]["flops"], 2, 16)
    p50 = row["views"]["latency"]["stats"]["p50"]
    assert hw["achieved_tflops"] == pytest.approx(hw["flops_per_inference"] / (p50 * 1e-3)
                                                  / 1e12)
    assert hw["peak_tflops"] is None and "kernels_per_inference" not in hw  # a CPU row


# -- torchao backends: options, availability, unsupported shapes ---------------------------
@pytest.mark.parametrize(("kind", "precision", "device", "options", "match"), [
    ("torchao-float8", "fp8", "cpu", {}, "device 'cpu'"),
    ("torchao-float8", "fp16", "cuda", {}, "precision 'fp16'"),
    ("torchao-float8", "fp8", "cuda", {"granularity": "block"}, "granularity"),
    ("torchao-float8", "fp8", "cuda", {"granularity": "row", "dtype": "fp16"}, "bf16"),
    ("torchao-float8", "fp8", "cuda", {"layers": "head"}, "layers"),
    ("torchao-float8", "fp8", "cuda", {"mode": "fast"}, "mode must be one of"),
    ("torchao-int8", "fp8", "cuda", {}, "precision 'fp8'"),
    ("torchao-int8", "int8", "cuda", {"scheme": "static"}, "scheme"),
    ("torchao-int8", "int8", "cuda", {"dtype": "fp32"}, "dtype"),
    ("torchao-int8", "int8", "cuda", {"config_version": 3}, "config_version"),
    ("torchao-int8", "int8", "cuda", {"group_size": 32}, "unknown option"),
])
def test_torchao_options_are_checked(kind: str, precision: str, device: str, options: dict,
                                     match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        registry.get(kind).check_spec(_spec(kind, precision, device, **options))


@pytest.mark.parametrize(("kind", "precision", "options"), [
    ("torchao-float8", "fp8", {}),
    ("torchao-float8", "fp8", {"granularity": "tensor", "dtype": "fp16"}),
    ("torchao-int8", "int8", {"scheme": "weight-only", "layers": "all",
                              "mode": "max-autotune", "coordinate_descent_tuning": False}),
])
def test_torchao_options_accepted(kind: str, precision: str, options: dict) -> None:
    registry.get(kind).check_spec(_spec(kind, precision, **options))


@no_gpu
@pytest.mark.parametrize(("kind", "precision"), [("torchao-float8", "fp8"),
                                                 ("torchao-int8", "int8")])
def test_torchao_unavailable_without_cuda(kind: str, precision: str) -> None:
    availability = registry.get(kind)(_spec(kind, precision), threads=1).availability()
    assert (availability.ok, availability.reason) == (False, "no CUDA device")


@pytest.mark.parametrize(("kind", "precision"), [("torchao-float8", "fp8"),
                                                 ("torchao-int8", "int8")])
def test_torchao_unavailable_without_torchao(monkeypatch, kind: str, precision: str) -> None:
    import inferbench.measure.gpu

    monkeypatch.setattr(inferbench.measure.gpu, "cuda_unavailable_reason", lambda: None)
    monkeypatch.setitem(sys.modules, "torchao", None)  # import raises ImportError
    availability = registry.get(kind)(_spec(kind, precision), threads=1).availability()
    assert not availability.ok
    assert availability.reason.startswith("torchao is not installed")
    assert "torchao==0.18.0" in availability.reason


def test_fp8_needs_compute_capability_8_9(monkeypatch) -> None:
    pytest.importorskip("torchao")
    import inferbench.measure.gpu
    from inferbench.backends import _torchao

    monkeypatch.setattr(inferbench.measure.gpu, "cuda_unavailable_reason", lambda: None)
    for capability, ok in (((8, 0), False), ((8, 6), False), ((8, 9), True), ((9, 0), True)):
        monkeypatch.setattr(_torchao, "cuda_capability", lambda c=capability: c)
        fp8 = registry.get("torchao-float8")(_spec("torchao-float8", "fp8"), 1).availability()
        assert fp8.ok is ok, capability
        if not ok:
            assert fp8.reason == (f"FP8 (torchao float8) needs CUDA compute capability 8.9 or "
                                  f"higher; this GPU has {capability[0]}.{capability[1]}")
        # INT8 has no such floor.
        assert registry.get("torchao-int8")(_spec("torchao-int8", "int8"), 1).availability().ok


def test_unsupported_shapes_are_recognised_through_the_cause_chain() -> None:
    from inferbench.backends import _torchao

    inner = RuntimeError("self.size(0) needs to be greater than 16, but got 1")
    try:
        try:
            raise inner
        except RuntimeError as exc:
            raise ValueError("backend compiler failed\nwhile lowering") from exc
    except ValueError as wrapped:
        assert _torchao.unsupported_reason(wrapped) == \
            "self.size(0) needs to be greater than 16, but got 1"
    scaled = RuntimeError("Expected both dimensions of mat2 to be divisble by 16 but got (2,768)")
    assert "divisble by 16" in _torchao.unsupported_reason(scaled)
    assert _torchao.unsupported_reason(RuntimeError("CUDA error: an illegal memory access")) \
        is None


def test_compiled_backend_turns_refusals_into_unsupported() -> None:
    backend = registry.get("torchao-int8")(_spec("torchao-int8", "int8"), threads=1)

    def refuse() -> None:
        raise RuntimeError("self.size(0) needs to be greater than 16, but got 16")

    with pytest.raises(Unsupported, match="greater than 16"):
        backend._guarded(refuse)
    with pytest.raises(KeyError):
        backend._guarded(lambda: {}["missing"])
    # A batch the build found unsupported is refused before any work.
    backend.unsupported = {"16": "self.size(0) needs to be greater than 16, but got 16"}
    with pytest.raises(Unsupported, match="found by the build"):
        backend.prepare_inputs({"input_ids": np.zeros((16, 8), dtype=np.int64)})


def test_quantize_filter_keeps_the_head_out(tiny_model: dict) -> None:
    from inferbench.backends import _torchao
    from inferbench.prepare.modeling import load_wrapper

    wrapper = load_wrapper(tiny_model["root"] / "hf", tiny_model["card"])
    linears = {name: m for name, m in wrapper.named_modules()
               if type(m).__name__ == "Linear"}
    encoder = {n for n, m in linears.items() if _torchao.quantize_filter("encoder")(m, n)}
    everything = {n for n, m in linears.items() if _torchao.quantize_filter("all")(m, n)}
    assert len(encoder) == 12  # 2 layers x (q, k, v, out, lin1, lin2)
    assert everything - encoder == {"model.pre_classifier", "model.classifier"}
    assert not _torchao.quantize_filter("all")(wrapper, "model")  # not a Linear


@pytest.mark.parametrize("scheme", ["dynamic", "weight-only"])
def test_torchao_int8_transform_on_the_cpu_stays_in_tolerance(tiny_model: dict,
                                                              scheme: str) -> None:
    """The INT8 quantization the GPU rows apply, run eagerly on the CPU: it quantizes the
    encoder's Linear layers and stays inside the INT8 parity tolerance."""
    pytest.importorskip("torchao")
    import torch

    from inferbench.measure.parity import compare
    from inferbench.prepare.model import load_inputs
    from inferbench.prepare.modeling import load_wrapper

    card = tiny_model["card"]
    backend = registry.get("torchao-int8")(_spec("torchao-int8", "int8", scheme=scheme), 1)
    module = load_wrapper(tiny_model["root"] / "hf", card).to(torch.bfloat16).eval()
    module = backend.transform(module)
    assert backend.quantized_layers == 12
    inputs = load_inputs(tiny_model["root"] / "inputs.npz")
    with torch.inference_mode():
        out = module(*[torch.from_numpy(inputs[n]) for n in card["input_names"]])
    with np.load(tiny_model["root"] / "reference.npz") as ref:
        parity = compare(out.float().numpy(), ref["output"], "sequence-classification",
                         {"max_abs": 0.2, "min_agreement": 0.9})
    assert parity["ok"], parity
    details_math = "int8" if scheme == "dynamic" else "bf16"
    assert backend.details()["math_precision"] == details_math


def test_torchao_float8_config_follows_the_options() -> None:
    pytest.importorskip("torchao")
    from torchao.quantization import PerRow, PerTensor

    row = registry.get("torchao-float8")(_spec("torchao-float8", "fp8"), 1).quant_config()
    assert all(isinstance(g, PerRow) for g in row.granularity)
    tensor = registry.get("torchao-float8")(
        _spec("torchao-float8", "fp8", granularity="tensor", torchao_inductor_config=False),
        1).quant_config()
    assert all(isinstance(g, PerTensor) for g in tensor.granularity)
    assert tensor.set_inductor_config is False


# -- tuned Inductor ---------------------------------------------------------------------
def test_inductor_options() -> None:
    from inferbench.backends.torch_compile import CompileOptions

    cls = registry.get("torch-compile")
    assert CompileOptions().inductor_config() == {}
    assert CompileOptions(coordinate_descent_tuning=True, freezing=False).inductor_config() == \
        {"coordinate_descent_tuning": True, "freezing": False}
    graphs = {mode: cls(_spec("torch-compile", "bf16", mode=mode), 1).uses_cuda_graphs()
              for mode in ("default", "reduce-overhead", "max-autotune",
                           "max-autotune-no-cudagraphs")}
    assert graphs == {"default": False, "reduce-overhead": True, "max-autotune": True,
                      "max-autotune-no-cudagraphs": False}
    assert not cls(_spec("torch-compile", "fp32", "cpu", mode="max-autotune"), 1
                   ).uses_cuda_graphs()
    cls.check_spec(_spec("torch-compile", "bf16", mode="max-autotune",
                         coordinate_descent_tuning=True))


# -- tuned ONNX Runtime -------------------------------------------------------------------
def test_ort_cuda_provider_options() -> None:
    from inferbench.backends.ort import OrtOptions, cuda_provider_options

    plain = cuda_provider_options(OrtOptions(graph="fused"), 77)
    assert plain == {"device_id": "0", "user_compute_stream": "77"}
    tuned = cuda_provider_options(OrtOptions(graph="fused", cuda_graph=True, tunable_op=True,
                                             tunable_op_max_tuning_ms=50,
                                             attention_kernel="efficient"), 77)
    assert tuned["enable_cuda_graph"] == "1"
    assert tuned["tunable_op_enable"] == tuned["tunable_op_tuning_enable"] == "1"
    assert tuned["tunable_op_max_tuning_duration_ms"] == "50"
    assert tuned["sdpa_kernel"] == "2"  # AttentionBackend::EFFICIENT_ATTENTION
    assert cuda_provider_options(OrtOptions(attention_kernel="trt-fused"), None)[
        "sdpa_kernel"] == "4"
    assert all(isinstance(v, str) for v in tuned.values())


@pytest.mark.parametrize(("precision", "device", "options", "match"), [
    ("fp16", "cuda", {"graph": "plain", "fast_gelu": True}, "graph 'fused'"),
    ("int8", "cpu", {"graph": "fused", "raw_attention_mask": True}, "graph 'fused'"),
    ("fp32", "cpu", {"tunable_op": True}, "device 'cuda'"),
    ("fp32", "cpu", {"attention_kernel": "flash"}, "device 'cuda'"),
    ("fp16", "cuda", {"graph": "fused", "attention_kernel": "fastest"}, "attention_kernel"),
    ("fp16", "cuda", {"graph": "fused", "tunable_op_max_tuning_ms": -1}, "tuning_ms"),
])
def test_ort_tuning_options_are_checked(precision: str, device: str, options: dict,
                                        match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        registry.get("ort").check_spec(_spec("ort", precision, device, **options))


def test_ort_tuned_variants() -> None:
    from inferbench.prepare.onnx import parse_tuning, tuned_variant

    ort = registry.get("ort")
    assert ort.onnx_variant(_spec("ort", "fp16", graph="fused")) == "fused-fp16"
    assert ort.onnx_variant(_spec("ort", "fp16", graph="fused", fast_gelu=True)) == \
        "fused-fp16-fastgelu"
    assert ort.onnx_variant(_spec("ort", "fp32", "cpu", graph="fused", fast_gelu=True,
                                  raw_attention_mask=True)) == "fused-fastgelu-rawmask"
    assert ort.onnx_variant(_spec("ort", "fp16", graph="fused", tunable_op=True)) == \
        "fused-fp16"  # a provider option: same graph
    assert parse_tuning("rawmask-fastgelu") == ("fastgelu", "rawmask")
    with pytest.raises(ValueError, match="unknown optimizer tuning"):
        parse_tuning("fastgelu-packed")
    with pytest.raises(ValueError):
        tuned_variant("plain", ("fastgelu",))


def test_fast_gelu_graph_on_the_cpu(tiny_model: dict, tmp_path: Path) -> None:
    """The fast-GELU fused graph: FastGelu replaces BiasGelu and stays near FP32."""
    import onnxruntime as ort

    from inferbench.prepare.model import load_inputs
    from inferbench.prepare.onnx import export_onnx, optimize_onnx

    root, card = tiny_model["root"], tiny_model["card"]
    inputs = load_inputs(root / "inputs.npz")
    with np.load(root / "reference.npz") as ref:
        reference = ref["output"]
    plain = tmp_path / "plain.onnx"
    export_onnx(root / "hf", card, plain, opset=17, attn_implementation="eager",
                exporter="torchscript", check_inputs=inputs, check_reference=reference)
    default = optimize_onnx(plain, tmp_path / "fused.onnx", card, 1, float16=False)
    fast = optimize_onnx(plain, tmp_path / "fused-fastgelu.onnx", card, 1, float16=False,
                         tuning=("fastgelu",))
    assert fast["variant"] == "fused-fastgelu" and fast["optimizer_tuning"] == ["fastgelu"]
    assert "FastGelu" in fast["op_counts"] and "FastGelu" not in default["op_counts"]
    session = ort.InferenceSession(str(tmp_path / "fused-fastgelu.onnx"),
                                   providers=["CPUExecutionProvider"])
    (out,) = session.run(["output"], {i.name: inputs[i.name] for i in session.get_inputs()})
    assert float(np.abs(out - reference).max()) < 1e-2


# -- config: per-backend batch sizes, the GPU config ----------------------------------------
def test_backend_batch_sizes_must_be_a_subset() -> None:
    from inferbench.config import backend_batch_sizes

    config = tiny_config_dict()
    config["backends"][0]["batch_sizes"] = [2]
    checked = validate_config(config)
    assert backend_batch_sizes(checked, config["backends"][0]["name"]) == [2]
    assert backend_batch_sizes(checked, config["backends"][1]["name"]) == [1, 2]
    # Not part of the job settings: adding it reruns no benchmark job.
    assert "batch_sizes" not in job_settings(checked, config["backends"][0]["name"])["backend"]
    config["backends"][0]["batch_sizes"] = [2, 64]
    with pytest.raises(ConfigError, match=r"backends\[0\]\.batch_sizes.*\[64\]"):
        validate_config(config)


def test_gpu_config_frontier_rows() -> None:
    from inferbench.config import backend_batch_sizes, load_config

    config = load_config(REPO / "config" / "gpu.yaml")
    kinds = {b["kind"] for b in config["backends"]}
    assert {"torchao-float8", "torchao-int8", "torch-compile", "ort", "trt", "ort-trt"} <= kinds
    assert config["parity"]["fp8"]["max_abs"] == 0.1
    frontier = config["backends"][[b["name"] for b in config["backends"]].index(
        "torch-compile-cuda-bf16"):]
    assert len(frontier) >= 9
    assert all(backend_batch_sizes(config, b["name"]) == [1, 16] for b in frontier)
    # the sweep fits one short lease: batches 1 and 16, and 64 for the CUDA-graph row's
    # memory growth
    assert backend_batch_sizes(config, "ort-cuda-fp16-graph") == [1, 16]
    assert backend_batch_sizes(config, "torch-cuda-graph-fp16") == [1, 16, 64]


def test_dry_run_makes_the_tuned_graph_and_only_the_backends_batches(tmp_path: Path) -> None:
    config = tiny_config_dict()
    config["backends"] = [
        {"name": "ort-fast", "kind": "ort", "options": {"graph": "fused", "fast_gelu": True},
         "batch_sizes": [2]},
        {"name": "ort-cpu", "kind": "ort", "options": {"graph": "plain"}},
    ]
    path = write_config(tmp_path / "c.yaml", config)
    run = run_snakemake(tmp_path, path, "-n", "--quiet", "rules", "all")
    counts = job_counts(run.stdout)
    assert counts["onnx_optimize_tuned"] == 1
    assert counts["bench_row"] == 3  # ort-fast at 2, ort-cpu at 1 and 2
    assert counts["bench"] == 3 * config["measurement"]["repeats"]  # one job per launch
    assert "onnx_optimize" not in counts


def _targets_cli(command: str, *args: str) -> subprocess.CompletedProcess:
    """``inferbench <command> --config config/gpu.yaml <args>`` in a bare environment."""
    return subprocess.run([sys.executable, "-m", "inferbench", command,
                           "--config", str(REPO / "config" / "gpu.yaml"), *args],
                          capture_output=True, text=True, check=False,
                          env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})


def test_bench_targets_cli() -> None:
    out = _targets_cli("bench-targets", "--results-dir", "/r", "torchao-fp8-row")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["/r/bench/h100/distilbert-sst2/torchao-fp8-row/bs1.json",
                                  "/r/bench/h100/distilbert-sst2/torchao-fp8-row/bs16.json"]


def test_serve_targets_cli_reads_the_overlay_and_names_each_scenario_and_padding() -> None:
    def serve_targets(*args: str) -> subprocess.CompletedProcess:
        return _targets_cli("serve-targets", *args)

    overlay = str(REPO / "config" / "serving-gpu.yaml")
    out = serve_targets("--config", overlay, "--results-dir", "/r", "ort-cuda-fp16-graph")
    assert out.returncode == 0, out.stderr
    folder = "/r/serve/h100/distilbert-sst2/ort-cuda-fp16-graph"
    assert out.stdout.split() == [f"{folder}/{scenario}-{padding}.json"
                                  for scenario in ("SingleStream", "Offline", "Server")
                                  for padding in ("pad_max", "buckets")]
    # a backend the overlay does not serve, and a config that serves nothing
    out = serve_targets("--config", overlay, "torchao-fp8-row")
    assert out.returncode == 2 and "torch-eager-cuda-fp16, torch-cuda-graph-fp16" in out.stderr
    out = serve_targets("ort-cuda-fp16-graph")
    assert out.returncode == 2 and "scenarios.run is empty" in out.stderr


# -- AOTInductor -----------------------------------------------------------------------------
def test_aoti_single_threaded_runner_follows_cuda_graph() -> None:
    from inferbench.backends.torch_aoti import AotiOptions, load_package

    assert AotiOptions(cuda_graph=True).single_threaded()
    assert not AotiOptions().single_threaded()
    assert not AotiOptions(cuda_graph=True, run_single_threaded=False).single_threaded()

    calls: list[tuple] = []

    class FakeInductor:
        @staticmethod
        def aoti_load_package(path: str, **kwargs: Any) -> str:
            calls.append((path, kwargs))
            return "model"

    class FakeTorch:
        _inductor = FakeInductor

    load_package(FakeTorch, Path("/p/model.pt2"), True)
    load_package(FakeTorch, Path("/p/model.pt2"), False)
    assert calls == [("/p/model.pt2", {"run_single_threaded": True}), ("/p/model.pt2", {})]


def test_aoti_build_compiler_choice(monkeypatch) -> None:
    from types import SimpleNamespace

    monkeypatch.setenv("CXX", "/opt/gcc/bin/g++")  # restored afterwards

    from inferbench.backends.torch_aoti import AotiOptions, use_compiler

    assert AotiOptions().cxx == "g++"
    config = SimpleNamespace(cpp=SimpleNamespace(cxx=(None, "/opt/gcc/bin/g++")))
    chosen = use_compiler(config, "g++")
    assert config.cpp.cxx == (None, "g++")
    assert chosen["requested"] == "g++" and chosen["path"] and chosen["version"]
    untouched = SimpleNamespace(cpp=SimpleNamespace(cxx=(None, "no-such-compiler")))
    assert use_compiler(untouched, "") == {"requested": "(Inductor default)", "path": None,
                                           "version": None}
    assert untouched.cpp.cxx == (None, "no-such-compiler")


def _repro_module() -> Any:
    spec = importlib.util.spec_from_file_location("aoti_repro", REPO / "scripts" / "aoti_repro.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["aoti_repro"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_aoti_repro_reads_a_crash_and_a_success() -> None:
    repro = _repro_module()
    crash_err = ("Fatal Python error: Segmentation fault\n\n"
                 "Current thread 0x00007f (most recent call first):\n"
                 '  File "aoti_repro.py", line 210 in child_load\n'
                 '  File "aoti_repro.py", line 400 in main\n')
    crash = repro._outcome("v", -11, "STAGE import\nSTAGE load {\"api\": \"x\"}\n", crash_err,
                           3.0)
    assert (crash.status, crash.stage) == ("CRASH", "load")
    assert crash.detail.startswith("SIGSEGV; File \"aoti_repro.py\", line 210")
    ok = repro._outcome("v", 0, 'STAGE run\nSTAGE ran {"max_abs_diff": 0.001}\nSTAGE done\n',
                        "", 1.0)
    assert ok.status == "ok" and "max_abs_diff" in ok.detail
    failed = repro._outcome("v", 1, "STAGE load\n", "Traceback...\nRuntimeError: bad\n", 1.0)
    assert (failed.status, failed.detail) == ("error", "RuntimeError: bad")
    assert repro._outcome("v", None, "STAGE compile\n", "", 300).status == "timeout"
    packages = {name: f"/w/{name}.pt2" for name in repro.package_names(quick=False)}
    assert set(packages) == {"mlp-static@cxx", "mlp-static@gxx",
                             "distilbert-sdpa-dynamic@cxx", "distilbert-sdpa-dynamic@gxx"}
    compiles = repro.compile_jobs(list(packages), Path("/w"), "cuda")
    assert {job.spec["cxx"] for job in compiles} == {"", "g++"}
    jobs = repro.load_jobs(packages, quick=False)
    names = [job.name for job in jobs]
    assert len(names) == len(set(names)) == 4 + 4 + 8
    by_name = {job.name: job for job in jobs}
    at_load = by_name["distilbert-sdpa-dynamic@cxx: CXX=g++ when loading"]
    assert at_load.env == {"CXX": "g++"} and at_load.spec["package"].endswith("@cxx.pt2")
    graph = by_name["distilbert-sdpa-dynamic@gxx: CUDA graph capture + run_single_threaded"]
    assert graph.spec["cuda_graph"] and graph.spec["run_single_threaded"]
    assert by_name["distilbert-sdpa-dynamic@cxx: PYTHONPATH removed"].env == {"PYTHONPATH": None}
    quick = repro.load_jobs({n: packages[n] for n in repro.package_names(quick=True)}, True)
    assert len(quick) == 4
    assert not any("CUDA" in job.name for job in repro.load_jobs(packages, False, "cpu"))


@no_gpu
def test_aoti_repro_without_cuda_says_so() -> None:
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "aoti_repro.py")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert "no CUDA device" in run.stderr


def test_a_crashed_aoti_row_names_the_torch_version_and_the_reproduction() -> None:
    import torch

    from inferbench.cli import _crash_hint

    hint = _crash_hint({"backend": {"kind": "torch-aoti"}})
    assert hint.startswith(f"; torch {torch.__version__.split('+')[0]}")
    assert "scripts/aoti_repro.py" in hint
    assert _crash_hint({"backend": {"kind": "torch-eager"}}) == ""
    assert _crash_hint({"backend": {"kind": "no-such-kind"}}) == ""


def test_torchao_rows_pair_with_torch_eager_fp32() -> None:
    from inferbench.report.rows import fp32_partner

    row = {"kind": "torchao-int8", "target": "h100", "model": "m", "device": "cuda",
           "batch_size": 16, "precision": "int8", "options": {}}
    eager = {**row, "kind": "torch-eager", "precision": "fp32", "backend": "torch-eager-fp32"}
    compiled = {**row, "kind": "torch-compile", "precision": "fp16", "backend": "c"}
    assert fp32_partner(row, [compiled, eager]) is eager
    assert fp32_partner({**row, "kind": "torchao-float8", "precision": "fp8"}, [eager]) is eager


def test_embedding_parity_at_the_fp32_default_passes_rounding_and_fails_a_turn() -> None:
    from inferbench.config import DEFAULT_PARITY
    from inferbench.measure.parity import compare

    rng = np.random.default_rng(0)
    reference = rng.standard_normal((4, 384)).astype(np.float32)
    # another runtime's FP32: the same embeddings up to float32 rounding
    noise = np.random.default_rng(1).uniform(-1e-6, 1e-6, reference.shape)
    rounded = (reference * (1 + noise)).astype(np.float32)
    parity = compare(rounded, reference, "feature-extraction", DEFAULT_PARITY["fp32"])
    assert parity["ok"], parity
    assert 1 - 1e-9 < parity["min_cosine"] < 1
    # a row turned away from its reference (cosine 0.9998) fails, and the reason says so
    turned = reference.copy()
    turned[2] += 0.02 * rng.standard_normal(384).astype(np.float32)
    parity = compare(turned, reference, "feature-extraction",
                     {"max_abs": 1.0, "min_agreement": 1.0})
    assert not parity["ok"] and parity["min_cosine"] < 0.9999
    assert parity["reason"].startswith("worst-row cosine 0.999")


def test_device_events_of_a_real_profile_carry_their_times() -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(32, 32)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        x @ x
    events = hardware._device_events(prof, torch)
    matmuls = [e for e in events if e[0] == "aten::mm"]
    assert matmuls and all(not on_device and end >= start for _, on_device, start, end in matmuls)
