"""Static INT8: calibration on the workflow's own inputs, and ONNX Runtime's static
quantization of an ONNX graph.

Static INT8 fixes each activation's scale ahead of time from a calibration run,
where dynamic INT8 measures it on every call. The calibration set is the input set
the workflow already makes (``make_inputs`` at batch size ``calibration.samples``):
the ``sentences`` file through the model's tokenizer where there is one, else seeded
synthetic ids, so a calibrated model has seen the same kind of text it is measured
and checked on.

ONNX Runtime's static quantizer writes QDQ graphs (QuantizeLinear/DequantizeLinear
pairs around float ops, fused into INT8 kernels at session creation) or QOperator
graphs (QLinearMatMul, QAttention, ...). Weights are INT8 per output channel;
activations UINT8 by default: INT8 (S8) activations were 2-10x slower on x86 CPUs
with VNNI in our measurements (the U8 x S8 dot product is what VNNI computes).

A quantization that fails (an operator the quantizer cannot handle, an empty
calibration set) leaves an empty model file and a manifest with ``status: error``
and the quantizer's message: the rows that read it become ``error`` rows with that
message (see ``inferbench.prepare.onnx.load_verified``), never missing rows.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from inferbench.io import atomic_path, atomic_write_json, sha256_file

FORMATS = ("qdq", "qoperator")
ACTIVATIONS = ("u8", "s8")
METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
STATIC_GRAPHS = ("plain", "fused")
DEFAULT_CALIBRATION = {"samples": 32, "batch_size": 8, "method": "minmax"}
# Only the GEMMs: quantizing every op (ONNX Runtime's default) also quantizes the
# attention-mask additions, whose range spans the mask's float-min constant, and the
# embedding Gathers: on the real MiniLM (seq 32) that left a worst-row embedding cosine
# of 0.17 against FP32; with the GEMMs only it is 0.94, as with dynamic INT8.
STATIC_OP_TYPES = ("MatMul", "Gemm")


def static_variant(graph: str, quant_format: str, activations: str) -> str:
    """ONNX variant name of a static INT8 graph, e.g. "plain-int8-static-qdq-u8"."""
    if graph not in STATIC_GRAPHS or quant_format not in FORMATS or activations not in ACTIVATIONS:
        raise ValueError(f"no static INT8 variant of graph {graph!r} with format "
                         f"{quant_format!r} and activations {activations!r}; allowed: graphs "
                         f"{STATIC_GRAPHS}, formats {FORMATS}, activations {ACTIVATIONS}")
    return f"{graph}-int8-static-{quant_format}-{activations}"


def calibration_settings(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `calibration:` config with its defaults."""
    settings = {**DEFAULT_CALIBRATION, **dict(raw or {})}
    if settings["method"] not in METHODS:
        raise ValueError(f"calibration method must be one of {sorted(METHODS)}, "
                         f"not {settings['method']!r}")
    return settings


def calibration_batches(npz: Path, batch_size: int, names: list[str] | None = None
                        ) -> list[dict[str, np.ndarray]]:
    """The calibration input set cut into batches of ``batch_size`` sequences (the
    last one shorter); [] for an input set without rows."""
    from inferbench.prepare.model import load_inputs

    arrays = load_inputs(npz)
    if names is not None:
        missing = sorted(set(names) - set(arrays))
        if missing:
            raise ValueError(f"calibration inputs {npz} lack {missing}")
        arrays = {name: arrays[name] for name in names}
    rows = len(next(iter(arrays.values()))) if arrays else 0
    return [{name: np.ascontiguousarray(a[start:start + batch_size])
             for name, a in arrays.items()}
            for start in range(0, rows, max(1, batch_size))]


def calibration_reader(batches: list[dict[str, np.ndarray]]) -> Any:
    """An onnxruntime.quantization CalibrationDataReader over ``batches`` (rewindable:
    the Entropy and Percentile calibrators read the data twice)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._iter: Iterator[dict[str, np.ndarray]] = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._iter, None)

        def rewind(self) -> None:
            self._iter = iter(batches)

        def __len__(self) -> int:
            return len(batches)

    return Reader()


def write_failed(out_path: Path, variant: str, reason: str, extra: Mapping[str, Any]
                 ) -> dict[str, Any]:
    """An empty model file and the manifest that says why there is no model."""
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(b"")
    manifest = {"sha256": sha256_file(out_path), "bytes": 0, "variant": variant,
                "status": "error", "reason": reason[:2000], **extra}
    from inferbench.prepare.onnx import manifest_path

    atomic_write_json(manifest_path(out_path), manifest)
    return manifest


def quantize_static_onnx(in_path: Path, out_path: Path, calibration_npz: Path,
                         settings: Mapping[str, Any], quant_format: str, activations: str
                         ) -> dict[str, Any]:
    """ONNX Runtime static INT8 of ``in_path`` calibrated on ``calibration_npz``:
    per-channel INT8 weights, ``activations`` (u8/s8) activations, QDQ or QOperator
    format. A failing quantizer gives an error manifest (see the module doc)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from inferbench.prepare.onnx import _write_manifest, load_verified

    source = load_verified(in_path)
    graph = str(source.get("variant", "plain"))
    variant = static_variant(graph, quant_format, activations)
    cal = calibration_settings(settings)
    facts: dict[str, Any] = {
        "quantization": "static", "format": quant_format, "weight_type": "QInt8",
        "per_channel": True, "op_types": list(STATIC_OP_TYPES),
        "activation_type": {"u8": "QUInt8", "s8": "QInt8"}[activations],
        "calibration": {**cal, "inputs": calibration_npz.name},
        "source_sha256": source["sha256"], "fusions": source.get("fusions", {})}
    try:
        graph_proto = onnx.load(str(in_path), load_external_data=False).graph
        weights = {init.name for init in graph_proto.initializer}
        names = [i.name for i in graph_proto.input if i.name not in weights]
        batches = calibration_batches(calibration_npz, int(cal["batch_size"]), names)
        facts["calibration"]["batches"] = len(batches)
        facts["calibration"]["sequences"] = int(sum(len(b[names[0]]) for b in batches))
        with atomic_path(out_path) as tmp:
            quantize_static(
                str(in_path), str(tmp), calibration_reader(batches),
                quant_format=QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator,
                per_channel=True, weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8 if activations == "u8" else QuantType.QInt8,
                calibrate_method=getattr(CalibrationMethod, METHODS[str(cal["method"])]),
                op_types_to_quantize=list(STATIC_OP_TYPES),
                # Shape inference cannot type contrib ops such as the fused Attention;
                # without a default type the quantizer skips them.
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    except Exception as exc:
        reason = (f"static INT8 quantization ({quant_format}, {activations} activations) "
                  f"failed: {type(exc).__name__}: {exc}")
        return write_failed(out_path, variant, reason,
                            {**facts, "traceback": traceback.format_exc(limit=6)[-3000:]})
    return _write_manifest(out_path, {"variant": variant, "status": "ok", **facts})
