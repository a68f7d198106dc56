"""GPU backends on a machine without a GPU: registration, the unavailable path,
TensorRT profile shapes and provider options, spec checks, and what runs on the CPU
(AOTInductor, ONNX Runtime INT8 calibration for the TensorRT EP)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from inferbench.backends import registry
from inferbench.backends.base import Artifacts
from inferbench.config import BackendSpec, ConfigError, load_config, validate_config

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
GPU_KINDS = ("torch-cuda-graph", "torch-aoti", "ort-trt", "trt")
NAMES = ["input_ids", "attention_mask"]


def _spec(kind: str, device: str = "cuda", precision: str = "fp16", **options) -> BackendSpec:
    return BackendSpec(name=f"{kind}-x", kind=kind, device=device, precision=precision,
                       options=options)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


no_gpu = pytest.mark.skipif("_cuda_available()", reason="checks the machine-without-GPU path")


# -- registration ----------------------------------------------------------------
def test_new_kinds_are_registered():
    assert set(GPU_KINDS) <= registry.kinds()
    assert registry.get("torch-aoti").needs == {"build"}
    assert registry.get("ort-trt").needs == {"onnx", "build"}
    assert registry.get("trt").needs == {"onnx", "build"}
    assert registry.get("torch-cuda-graph").needs == frozenset()
    for kind in ("ort-trt", "trt"):
        for precision in ("fp16", "int8", "fp32"):
            assert registry.get(kind).onnx_variant(_spec(kind, precision=precision)) == "plain"


def test_backend_modules_import_no_runtime():
    code = ("import sys; from inferbench.backends import registry; registry.kinds(); "
            "import inferbench.config; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'tensorrt') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


# -- availability on this machine ------------------------------------------------------
@no_gpu
@pytest.mark.parametrize(("kind", "precision"), [
    ("torch-cuda-graph", "fp16"), ("torch-aoti", "fp16"), ("ort-trt", "fp16"),
    ("ort-trt", "int8"), ("trt", "fp16"), ("trt", "int8")])
def test_gpu_backends_unavailable_without_cuda(kind, precision):
    backend = registry.get(kind)(_spec(kind, precision=precision), threads=1)
    availability = backend.availability()
    assert not availability.ok
    assert availability.reason == "no CUDA device"


def test_torch_aoti_on_cpu_is_available():
    backend = registry.get("torch-aoti")(_spec("torch-aoti", "cpu", "fp32"), threads=1)
    assert backend.availability().ok


def test_trt_reason_when_tensorrt_does_not_import(monkeypatch):
    import inferbench.measure.gpu

    monkeypatch.setattr(inferbench.measure.gpu, "cuda_unavailable_reason", lambda: None)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import raises ImportError
    backend = registry.get("trt")(_spec("trt"), threads=1)
    availability = backend.availability()
    assert not availability.ok
    assert availability.reason.startswith("TensorRT library not loadable: ")


def test_ort_trt_reasons(monkeypatch):
    import onnxruntime

    import inferbench.measure.gpu
    from inferbench.backends import ort_trt

    monkeypatch.setattr(inferbench.measure.gpu, "cuda_unavailable_reason", lambda: None)
    backend = registry.get("ort-trt")(_spec("ort-trt"), threads=1)
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    reason = backend.availability().reason
    assert "has no TensorrtExecutionProvider" in reason and "onnxruntime-gpu" in reason

    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                 "CPUExecutionProvider"])
    monkeypatch.setattr(ort_trt, "NVINFER_LIBRARIES", ("libnvinfer-missing.so.10",))
    monkeypatch.setitem(sys.modules, "tensorrt_libs", None)
    availability = backend.availability()
    assert not availability.ok
    assert availability.reason.startswith("TensorRT library not loadable: ")
    assert "libnvinfer-missing.so.10" in availability.reason


# -- profile shapes, precision flags, provider options -------------------------------
def test_profile_shape_strings():
    from inferbench.backends.ort_trt import profile_shapes

    shapes = profile_shapes(NAMES, [1, 4, 8, 16], 128)
    assert shapes == {
        "trt_profile_min_shapes": "input_ids:1x128,attention_mask:1x128",
        "trt_profile_opt_shapes": "input_ids:16x128,attention_mask:16x128",
        "trt_profile_max_shapes": "input_ids:16x128,attention_mask:16x128",
    }
    # Unordered and repeated batch sizes give the same range; opt can be chosen.
    assert profile_shapes(NAMES, [16, 1, 8, 4, 4], 128) == shapes
    assert profile_shapes(NAMES, [1, 4, 8, 16], 128, opt_batch=8)[
        "trt_profile_opt_shapes"] == "input_ids:8x128,attention_mask:8x128"
    with pytest.raises(ValueError, match="outside the configured batch range"):
        profile_shapes(NAMES, [1, 4, 8, 16], 128, opt_batch=32)


def test_native_profile_dims_and_batch_range():
    from inferbench.backends.trt import batch_profile, profile_dims

    assert batch_profile([1, 4, 8, 16]) == (1, 16, 16)
    assert batch_profile([4], 0) == (4, 4, 4)
    assert profile_dims(NAMES, [1, 4, 8, 16], 128, opt_batch=4) == {
        name: ((1, 128), (4, 128), (16, 128)) for name in NAMES}
    with pytest.raises(ValueError):
        batch_profile([])


def test_precision_flags():
    from inferbench.backends.trt import precision_flags

    assert precision_flags("fp32") == ([], ["TF32"])
    assert precision_flags("fp16") == (["FP16"], ["TF32"])
    assert precision_flags("int8") == (["INT8", "FP16"], ["TF32"])
    assert precision_flags("fp32", tf32=True) == (["TF32"], [])
    with pytest.raises(ValueError):
        precision_flags("bf16")


def _trt_options(precision: str, tmp_path: Path, **kwargs):
    from inferbench.backends.ort_trt import OrtTrtOptions, provider_options

    options = OrtTrtOptions(**kwargs.pop("options", {}))
    return provider_options(options, precision, tmp_path / "engines", NAMES, [1, 4, 8, 16], 128,
                             **kwargs)


def test_provider_options_fp16(tmp_path):
    opts = _trt_options("fp16", tmp_path)
    assert opts["trt_fp16_enable"] == "True"
    assert opts["trt_int8_enable"] == "False"
    assert opts["trt_engine_cache_enable"] == "True"
    assert opts["trt_engine_cache_path"] == str(tmp_path / "engines")
    assert opts["trt_timing_cache_enable"] == "True"
    assert opts["trt_timing_cache_path"] == str(tmp_path / "engines")
    assert opts["trt_profile_min_shapes"] == "input_ids:1x128,attention_mask:1x128"
    assert opts["trt_profile_max_shapes"] == "input_ids:16x128,attention_mask:16x128"
    assert opts["device_id"] == "0"
    assert "trt_int8_calibration_table_name" not in opts
    assert "user_compute_stream" not in opts
    assert "trt_cuda_graph_enable" not in opts
    assert all(isinstance(v, str) for v in opts.values())
    # The Python API accepts "True"/"False" for TensorRT EP booleans, not "1"/"0".
    for key, value in opts.items():
        if key.endswith(("_enable", "_use_native_calibration_table")):
            assert value in ("True", "False"), key


def test_provider_options_int8_fp32_stream_and_graph(tmp_path):
    opts = _trt_options("int8", tmp_path, int8_table="calibration.flatbuffers",
                        stream_handle=1234, options={"cuda_graph": True, "opt_batch": 4})
    assert opts["trt_int8_enable"] == "True"
    assert opts["trt_fp16_enable"] == "True"  # FP16 where no INT8 kernel exists
    assert opts["trt_int8_calibration_table_name"] == "calibration.flatbuffers"
    assert opts["trt_int8_use_native_calibration_table"] == "False"
    assert opts["user_compute_stream"] == "1234"
    assert opts["trt_cuda_graph_enable"] == "True"
    assert opts["trt_profile_opt_shapes"] == "input_ids:4x128,attention_mask:4x128"

    fp32 = _trt_options("fp32", tmp_path, options={"timing_cache": False})
    assert (fp32["trt_fp16_enable"], fp32["trt_int8_enable"]) == ("False", "False")
    assert fp32["trt_timing_cache_enable"] == "False" and "trt_timing_cache_path" not in fp32
    with pytest.raises(ValueError, match="calibration table"):
        _trt_options("int8", tmp_path)
    with pytest.raises(ValueError, match="non-default stream"):
        _trt_options("fp16", tmp_path, stream_handle=0)


def test_trt_provider_list_never_contains_cuda(tmp_path):
    from inferbench.backends.ort_trt import trt_providers

    for precision, table in (("fp16", None), ("fp32", None), ("int8", "t.flatbuffers")):
        providers = trt_providers(_trt_options(precision, tmp_path, int8_table=table))
        assert [name for name, _ in providers] == ["TensorrtExecutionProvider"]
        assert "CUDAExecutionProvider" not in json.dumps(providers)


class _FakeSession:
    def __init__(self, providers):
        self._providers = providers

    def get_providers(self):
        return self._providers


def test_ort_trt_session_is_trt_only_and_refuses_fallback(monkeypatch, tmp_path):
    import onnxruntime

    calls = []

    def fake_session(path, options, providers, **kwargs):
        calls.append({"providers": providers, "kwargs": kwargs,
                      "cpu_fallback": options.get_session_config_entry(
                          "session.disable_cpu_ep_fallback")})
        return _FakeSession(fake_session.actual)

    monkeypatch.setattr(onnxruntime, "InferenceSession", fake_session)
    backend = registry.get("ort-trt")(_spec("ort-trt"), threads=1)
    opts = _trt_options("fp16", tmp_path)

    fake_session.actual = ["TensorrtExecutionProvider", "CPUExecutionProvider"]
    backend._session(tmp_path / "plain.onnx", opts)
    assert [name for name, _ in calls[0]["providers"]] == ["TensorrtExecutionProvider"]
    assert calls[0]["kwargs"] == {"enable_fallback": 0}
    assert calls[0]["cpu_fallback"] == "1"

    fake_session.actual = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(RuntimeError, match="silent fallback"):
        backend._session(tmp_path / "plain.onnx", opts)


# -- spec checks ---------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "device", "precision", "options", "match"), [
    ("torch-cuda-graph", "cpu", "fp16", {}, "device 'cpu'"),
    ("torch-cuda-graph", "cuda", "int8", {}, "precision 'int8'"),
    ("torch-cuda-graph", "cuda", "fp16", {"capture_warmup": 0}, "capture_warmup"),
    ("torch-aoti", "cpu", "fp16", {}, "needs device 'cuda' for torch-aoti"),
    ("torch-aoti", "cuda", "int8", {}, "precision 'int8'"),
    ("torch-aoti", "cuda", "fp16", {"mode": "x"}, "unknown option"),
    ("ort-trt", "cpu", "fp16", {}, "device 'cpu'"),
    ("ort-trt", "cuda", "bf16", {}, "precision 'bf16'"),
    ("ort-trt", "cuda", "fp16", {"cuda_graph": True, "io_binding": False}, "io_binding"),
    ("ort-trt", "cuda", "fp16", {"graph": "fused"}, "unknown option"),
    ("trt", "cpu", "fp16", {}, "device 'cpu'"),
    ("trt", "cuda", "bf16", {}, "precision 'bf16'"),
    ("trt", "cuda", "fp16", {"opt_batch": -1}, "opt_batch"),
    ("trt", "cuda", "int8", {"workspace_mib": 0}, "workspace_mib"),
])
def test_check_spec_rejects(kind, device, precision, options, match):
    spec = BackendSpec(name="x", kind=kind, device=device, precision=precision, options=options)
    with pytest.raises(ConfigError, match=match):
        registry.get(kind).check_spec(spec)


@pytest.mark.parametrize(("kind", "device", "precision"), [
    ("torch-cuda-graph", "cuda", "fp16"), ("torch-cuda-graph", "cuda", "bf16"),
    ("torch-aoti", "cpu", "fp32"), ("torch-aoti", "cpu", "bf16"), ("torch-aoti", "cuda", "fp16"),
    ("ort-trt", "cuda", "fp16"), ("ort-trt", "cuda", "int8"), ("ort-trt", "cuda", "fp32"),
    ("trt", "cuda", "fp16"), ("trt", "cuda", "int8"), ("trt", "cuda", "fp32")])
def test_check_spec_accepts(kind, device, precision):
    registry.get(kind).check_spec(_spec(kind, device, precision))


def test_gpu_config_is_valid():
    config = load_config(REPO / "config" / "gpu.yaml")
    assert config["target"] == "h100"
    assert config["batch_sizes"] == [1, 16, 64]
    assert config["report"]["baseline"] == "torch-eager-cuda-fp32"
    assert config["parity"]["fp16"]["max_abs"] > 0
    kinds = {b["kind"] for b in config["backends"]}
    assert set(GPU_KINDS) <= kinds
    assert all(b["device"] == "cuda" for b in config["backends"])


# -- what runs on the CPU ------------------------------------------------------------
def test_synthetic_batches_are_deterministic_and_in_vocab():
    from inferbench.backends.trt import synthetic_batches

    card = {"vocab_size": 1000, "pad_token_id": 0, "input_names": NAMES}
    first = synthetic_batches(card, 16, 4, 3)
    again = synthetic_batches(card, 16, 4, 3)
    assert len(first) == 3 and list(first[0]) == NAMES
    for a, b in zip(first, again, strict=True):
        for name in NAMES:
            np.testing.assert_array_equal(a[name], b[name])
            assert a[name].shape == (4, 16) and a[name].dtype == np.int64
    ids, mask = first[0]["input_ids"], first[0]["attention_mask"]
    assert ids.max() < 1000 and (ids[mask == 0] == 0).all() and mask[:, 0].all()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from inferbench.prepare.model import prepare_model

    root = tmp_path_factory.mktemp("tiny")
    config = validate_config(yaml.safe_load(TINY.read_text()))
    prepare_model(config["model"], root / "hf", root / "card.json")
    card = json.loads((root / "card.json").read_text())
    return root / "hf", card, config["seq_len"]


@pytest.fixture(scope="module")
def tiny_onnx(tiny_model, tmp_path_factory):
    from inferbench.backends.trt import synthetic_batches
    from inferbench.prepare.model import compute_reference, load_inputs
    from inferbench.prepare.onnx import export_onnx

    model_dir, card, seq_len = tiny_model
    root = tmp_path_factory.mktemp("tiny-onnx")
    inputs = synthetic_batches(card, seq_len, 2, 1)[0]
    np.savez(root / "inputs.npz", **inputs)
    compute_reference(model_dir, card, root / "inputs.npz", root / "ref.npz", 1)
    with np.load(root / "ref.npz") as ref:
        reference = ref["output"]
    out = root / "plain.onnx"
    export_onnx(model_dir, card, out, opset=17, attn_implementation="eager",
                exporter="torchscript", check_inputs=load_inputs(root / "inputs.npz"),
                check_reference=reference)
    return out, card, seq_len


def test_ort_int8_calibration_table_on_cpu(tiny_onnx, tmp_path):
    from inferbench.backends.ort_trt import CALIBRATION_TABLE, write_int8_calibration_table
    from inferbench.backends.trt import synthetic_batches

    onnx_path, card, seq_len = tiny_onnx
    batches = synthetic_batches(card, seq_len, 4, 2)
    info = write_int8_calibration_table(onnx_path, batches, tmp_path, ["CPUExecutionProvider"])
    assert info["table"] == CALIBRATION_TABLE
    assert (tmp_path / CALIBRATION_TABLE).stat().st_size > 0
    assert info["tensors"] > 10
    ranges = [float(line.rsplit(" ", 1)[1])
              for line in (tmp_path / "calibration.cache").read_text().splitlines()]
    assert ranges and all(0 < r < 1e30 for r in ranges)
    assert not list(tmp_path.glob(".calibration-*"))  # the augmented model is gone


def _has_cxx() -> bool:
    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


@pytest.mark.skipif(not _has_cxx(), reason="AOTInductor needs a C++ compiler on the CPU")
def test_torch_aoti_cpu_build_load_run_matches_eager(tiny_model, tmp_path):
    import torch

    from inferbench.backends.trt import synthetic_batches
    from inferbench.prepare.modeling import load_wrapper

    model_dir, card, seq_len = tiny_model
    spec = BackendSpec(name="aoti", kind="torch-aoti", device="cpu", precision="fp32",
                       options={})
    backend = registry.get("torch-aoti")(spec, threads=1)
    artifacts = Artifacts(model_dir=model_dir, card=card, build=tmp_path)
    manifest = backend.build(artifacts, tmp_path, [1, 2], seq_len)
    assert (tmp_path / manifest["package"]).is_file()
    assert manifest["dynamic_batch"] == {"min": 1, "max": 2}
    assert manifest["torch"] == torch.__version__

    runner = registry.get("torch-aoti")(spec, threads=1)
    runner.load(Artifacts(model_dir=model_dir, card=card, build=tmp_path,
                          build_manifest=manifest))
    eager = load_wrapper(model_dir, card)
    for batch in (1, 2):  # both ends of the dynamic batch range
        inputs = synthetic_batches(card, seq_len, batch, 1, seed=3)[0]
        out = runner.to_host(runner.run(runner.prepare_inputs(inputs)))
        with torch.inference_mode():
            expected = eager(*[torch.from_numpy(inputs[n]) for n in card["input_names"]])
        assert out.shape == (batch, card["num_labels"])
        np.testing.assert_allclose(out, expected.numpy(), atol=1e-4, rtol=0)
    assert runner.details()["package"] == "model.pt2"


# -- the workflow without a GPU ------------------------------------------------------
@no_gpu
@pytest.mark.workflow
def test_workflow_gpu_backends_unavailable_without_cuda(tmp_path):
    config = yaml.safe_load(TINY.read_text())
    config.update(batch_sizes=[1], backends=[
        {"name": "cuda-graph", "kind": "torch-cuda-graph", "device": "cuda",
         "precision": "fp16"},
        {"name": "trt-fp16", "kind": "trt", "device": "cuda", "precision": "fp16"},
    ])
    config_path = tmp_path / "gpu-tiny.yaml"
    config_path.write_text(yaml.safe_dump(config))
    results = tmp_path / "results"
    bench = results / "bench" / "local" / "tiny-distilbert"
    targets = [str(bench / name / "bs1.json") for name in ("cuda-graph", "trt-fp16")]
    snakemake = Path(sys.executable).parent / "snakemake"
    run = subprocess.run(
        [str(snakemake), "--cores", "1", "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(tmp_path), "--configfile", str(config_path),
         "--config", f"results_dir={results}", "--", *targets],
        capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for target in targets:
        row = json.loads(Path(target).read_text())
        assert row["status"] == "unavailable", row
        assert row["reason"] == "no CUDA device"
        assert row["device"] == "cuda" and row["batch_size"] == 1
    build = json.loads((results / "engines" / "local" / "tiny-distilbert" / "trt-fp16"
                        / "build.json").read_text())
    assert build["status"] == "unavailable" and build["reason"] == "no CUDA device"


@no_gpu
def test_harness_fidelity_says_no_cuda():
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "harness_fidelity.py"),
                          "--config", str(REPO / "config" / "gpu.yaml"),
                          "--backend", "torch-cuda-graph-fp16", "--batch", "16"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 2
    assert "no CUDA device" in run.stderr


# -- torch.compile with its Inductor cache as the build artifact ------------------------
def test_torch_compile_spec_rules() -> None:
    from inferbench.backends import registry
    from inferbench.config import BackendSpec, ConfigError

    cls = registry.get("torch-compile")
    cls.check_spec(BackendSpec("c", "torch-compile", "cuda", "fp16", {}))
    cls.check_spec(BackendSpec("c", "torch-compile", "cpu", "fp32", {"mode": "default"}))
    with pytest.raises(ConfigError, match="reduce-overhead"):
        cls.check_spec(BackendSpec("c", "torch-compile", "cpu", "fp32", {}))
    with pytest.raises(ConfigError, match="mode must be one of"):
        cls.check_spec(BackendSpec("c", "torch-compile", "cuda", "fp16", {"mode": "fast"}))


def test_torch_compile_build_then_load_from_cache_on_cpu(tiny_model, tmp_path) -> None:
    """The build fills the Inductor cache in the build folder; a loader reuses it."""
    import torch

    from inferbench.backends import registry
    from inferbench.backends.base import Artifacts
    from inferbench.backends.trt import synthetic_batches
    from inferbench.config import BackendSpec
    from inferbench.prepare.engines import build_engine
    from inferbench.prepare.modeling import load_wrapper

    model_dir, card, seq_len = tiny_model
    spec = BackendSpec(name="c", kind="torch-compile", device="cpu", precision="fp32",
                       options={"mode": "default"})
    settings = {"backend": spec.as_dict(), "threads": 1, "seq_len": seq_len}
    card_path = tmp_path / "card.json"
    card_path.write_text(json.dumps(card))
    manifest = build_engine(settings, [2], model_dir, card_path, None,
                            tmp_path / "build" / "build.json")
    assert manifest["status"] == "ok", manifest.get("reason")
    assert manifest["cache_files"] > 0
    assert not any(name.startswith("inductor_cache") for name in manifest["files"])

    runner = registry.get("torch-compile")(spec, threads=1)
    runner.load(Artifacts(model_dir=model_dir, card=card, build=tmp_path / "build",
                          build_manifest=manifest))
    inputs = synthetic_batches(card, seq_len, 2, 1, seed=5)[0]
    out = runner.to_host(runner.run(runner.prepare_inputs(inputs)))
    with torch.inference_mode():
        expected = load_wrapper(model_dir, card)(
            *[torch.from_numpy(inputs[n]) for n in card["input_names"]])
    np.testing.assert_allclose(out, expected.numpy(), atol=1e-4, rtol=0)


def test_harness_fidelity_checks_each_backend_in_its_own_process(monkeypatch, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "harness_fidelity", REPO / "scripts" / "harness_fidelity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    commands, codes = [], iter([0, -11, 1])

    def fake_run(command, check):
        commands.append(command)
        return subprocess.CompletedProcess(command, next(codes))

    monkeypatch.setattr(subprocess, "run", fake_run)
    status = module.isolated(["a", "b", "c"], ["--config", "g.yaml", "--backend", "a,b,c",
                                                "--batch", "1,16"])
    assert status == 1  # one backend failed its check
    assert [c[c.index("--backend") + 1] for c in commands] == ["a", "b", "c"]
    assert all("a,b,c" not in c and "--rows-only" in c and "1,16" in c for c in commands)
    assert "| b | – | – | – | – | skip: process died with status -11 |" in capsys.readouterr().out


def test_harness_fidelity_verdict_gives_the_spread_of_the_workflow_launches():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "harness_fidelity", REPO / "scripts" / "harness_fidelity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.verdict(0.600, 0.606, [0.59, 0.61], 0.03) == "PASS (1.0%)"
    inside = module.verdict(0.698, 0.7178, [0.733, 0.695], 0.02)
    assert inside.startswith("FAIL (2.8%; the workflow's launches 0.6950–0.7330")
    assert inside.endswith("the independent process inside their spread)")
    below = module.verdict(0.340, 0.3258, [0.329, 0.341], 0.03)
    assert below == "FAIL (4.2%; the workflow's launches 0.3290–0.3410)"
    assert module.verdict(1.0, 1.5, [1.0], 0.03) == "FAIL (50.0%)"
