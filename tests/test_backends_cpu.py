"""Each CPU backend, run through the real harness on a tiny DistilBERT, matches FP32."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from inferbench.config import job_settings
from inferbench.measure.harness import JobPaths
from inferbench.measure.harness import run_in_process as run_job
from inferbench.prepare.model import load_inputs
from inferbench.prepare.onnx import export_onnx, optimize_onnx, quantize_onnx


@pytest.fixture(scope="module")
def onnx_files(tiny_model: dict) -> dict[str, Path]:
    import numpy as np

    root, card = tiny_model["root"], tiny_model["card"]
    with np.load(root / "reference.npz") as ref:
        reference = ref["output"]
    plain = root / "plain.onnx"
    export_onnx(root / "hf", card, plain, opset=17, attn_implementation="eager",
                exporter="torchscript", check_inputs=load_inputs(root / "inputs.npz"),
                check_reference=reference)
    fused = root / "fused.onnx"
    manifest = optimize_onnx(plain, fused, card, opt_level=1, float16=False)
    assert manifest["fusions"].get("Attention") == 2, manifest["fusions"]
    files = {"plain": plain, "fused": fused}
    for graph in ("plain", "fused"):
        files[f"{graph}-int8"] = root / f"{graph}-int8.onnx"
        quantize_onnx(files[graph], files[f"{graph}-int8"])
    return files


@pytest.mark.parametrize("backend", ["torch-eager", "torch-dynamic-int8", "ort-cpu",
                                     "ort-cpu-fused", "ort-cpu-int8", "ort-cpu-int8-fused"])
def test_backend_is_ok_and_within_parity(backend: str, tiny_model: dict,
                                         onnx_files: dict[str, Path], tmp_path: Path) -> None:
    from inferbench.backends import registry
    from inferbench.config import backend_spec

    config, root = tiny_model["config"], tiny_model["root"]
    settings = job_settings(config, backend)
    spec = backend_spec(config, backend)
    variant = registry.get(spec.kind).onnx_variant(spec)
    paths = JobPaths(model_dir=root / "hf", card=root / "card.json",
                     inputs=root / "inputs.npz", reference=root / "reference.npz",
                     onnx=onnx_files[variant] if variant else None)
    out = tmp_path / "result.json"
    result = run_job(settings, 2, paths, "tiny", "local", out)
    assert result["status"] == "ok", result.get("reason")
    assert json.loads(out.read_text())["status"] == "ok"
    tolerance = config["parity"][spec.precision]["max_abs"]
    assert result["parity"]["max_abs"] <= tolerance
    assert result["parity"]["label_agreement"] >= config["parity"][spec.precision][
        "min_agreement"]
    latency = result["views"]["latency"]
    repeats = config["measurement"]["repeats"]
    assert result["launches"] == len(latency["samples"]) == repeats
    assert all(len(s) >= config["measurement"]["min_iterations"] for s in latency["samples"])
    assert latency["stats"]["count"] == sum(len(s) for s in latency["samples"])
    # a CPU row has no device view, and says so rather than copying another view
    assert result["views"]["gpu_compute"]["samples"] == []
    assert "no device timer" in result["views"]["gpu_compute"]["not_applicable"]
    assert result["views"]["throughput"]["stats"]["p50"] > 0
    assert result["host_overhead_ms"] is None
    assert result["cold_start"]["load_s"] > 0 and result["memory"]["peak_rss_mib"] > 50
    assert result["fingerprint"]["threads"]["intra_op"] == config["threads"]
    if spec.kind == "ort":
        assert result["details"]["providers"][0] == "CPUExecutionProvider"


def test_ort_refuses_a_session_on_another_provider() -> None:
    from inferbench.backends.ort import check_session_provider

    fallback = SimpleNamespace(get_providers=lambda: ["CUDAExecutionProvider",
                                                      "CPUExecutionProvider"])
    with pytest.raises(RuntimeError, match="silent fallback"):
        check_session_provider(fallback, "TensorrtExecutionProvider")
    check_session_provider(fallback, "CUDAExecutionProvider")


def test_gpu_rows_are_unavailable_without_cuda(tiny_model: dict, tmp_path: Path) -> None:
    from helpers import tiny_config_dict

    from inferbench.config import validate_config

    raw = tiny_config_dict()
    raw["backends"] = [{"name": "torch-cuda", "kind": "torch-eager", "device": "cuda",
                        "precision": "fp16"},
                       {"name": "ort-cuda", "kind": "ort", "device": "cuda"}]
    config = validate_config(raw)
    root = tiny_model["root"]
    paths = JobPaths(model_dir=root / "hf", card=root / "card.json",
                     inputs=root / "inputs.npz", reference=root / "reference.npz")
    for backend in ("torch-cuda", "ort-cuda"):
        result = run_job(job_settings(config, backend), 2, paths, "tiny", "local",
                         tmp_path / f"{backend}.json")
        assert result["status"] == "unavailable"
        assert "CUDA" in result["reason"]


# -- fixed cost of a launch: what loading the model imports -----------------------------
def test_the_model_class_comes_from_the_card_else_the_auto_class(tiny_model: dict) -> None:
    import torch
    import transformers

    from inferbench.prepare.modeling import load_model, model_class

    card, model_dir = tiny_model["card"], tiny_model["root"] / "hf"
    task = card["task"]
    assert model_class(task, card["architecture"]) is getattr(transformers, card["architecture"])
    for unknown in (None, "NoSuchModelForSequenceClassification", "AutoConfig"):
        assert model_class(task, unknown) is transformers.AutoModelForSequenceClassification
    # the Auto class resolves the same class from config.json: same module, same outputs
    direct = load_model(model_dir, task, architecture=card["architecture"])
    auto = load_model(model_dir, task)
    assert type(direct) is type(auto)
    inputs = {k: torch.from_numpy(v) for k, v in load_inputs(tiny_model["root"] /
                                                             "inputs.npz").items()}
    with torch.inference_mode():
        assert torch.equal(direct(**inputs).logits, auto(**inputs).logits)


def test_loading_a_model_imports_neither_torchao_nor_scipy(tiny_model: dict) -> None:
    """transformers imports them whenever they are installed (0.5 s of each torch
    launch); loading and running an unquantized model uses neither."""
    import os
    import subprocess
    import sys

    from helpers import REPO

    code = ("import json, sys; from pathlib import Path; "
            "from inferbench.prepare.modeling import load_wrapper; "
            "card = json.loads(Path(sys.argv[1]).read_text()); "
            "wrapper = load_wrapper(Path(sys.argv[2]), card); "
            "print(type(wrapper.model).__name__, 'torchao' in sys.modules, "
            "'scipy' in sys.modules)")
    root = tiny_model["root"]
    out = subprocess.run([sys.executable, "-c", code, str(root / "card.json"), str(root / "hf")],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert out.stdout.split() == [tiny_model["card"]["architecture"], "False", "False"]
    assert "Failed to load" not in out.stderr


def test_a_process_that_exits_at_once_leaves_its_output_whole(tiny_model: dict,
                                                              tmp_path: Path) -> None:
    """`python -m inferbench reference` ends without the interpreter's teardown (0.9 s
    of each torch process); what it wrote and printed is all there."""
    import os
    import subprocess
    import sys

    import numpy as np
    from helpers import REPO

    root = tiny_model["root"]
    out = tmp_path / "reference.npz"
    code = ("import atexit, sys; atexit.register(lambda: print('teardown ran')); "
            "print('before'); sys.argv[0] = 'inferbench'; import runpy; "
            "runpy.run_module('inferbench', run_name='__main__')")
    run = subprocess.run([sys.executable, "-c", code, "reference", "--model-dir",
                          str(root / "hf"), "--card", str(root / "card.json"), "--inputs",
                          str(root / "inputs.npz"), "--out", str(out), "--threads", "1"],
                         capture_output=True, text=True, env={**os.environ,
                                                              "PYTHONPATH": str(REPO / "src")})
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["before"]  # flushed, and no teardown after it
    with np.load(out) as new, np.load(root / "reference.npz") as fixture:
        assert np.array_equal(new["output"], fixture["output"])
