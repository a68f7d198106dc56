"""ONNX export, transformer-optimizer fusion, FP16 conversion and INT8 quantization.

Each function writes one ``.onnx`` file and a manifest ``<file>.json`` with its
sha256, so the rule that reads it can refuse a truncated or edited file.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from inferbench.io import (
    CorruptArtifactError,
    atomic_path,
    atomic_write_json,
    rebuild_hint,
    sha256_file,
    verify_manifest,
)

# variant name -> (how it is made, the variant it is made from)
VARIANTS: dict[str, tuple[str, str | None]] = {
    "plain": ("export", None),
    "fused": ("optimize", "plain"),
    "fused-fp16": ("optimize-fp16", "plain"),
    "plain-int8": ("quantize", "plain"),
    "fused-int8": ("quantize", "fused"),
}

# Transformer-optimizer choices beyond its defaults. A fused variant made with some of
# them is named "<fused variant>-<token>[-<token>...]" (tokens sorted), e.g.
# "fused-fp16-fastgelu": one ONNX file per combination, made by its own rule.
OPTIMIZER_TUNINGS = {
    "fastgelu": "GELU as its tanh approximation (FastGelu / BiasGelu -> FastGelu)",
    "rawmask": "Attention ops read the raw 2-D attention mask, not 1-D sequence lengths",
}
TUNED_BASES = ("fused", "fused-fp16")


def tuned_variant(base: str, tuning: tuple[str, ...] | list[str]) -> str:
    """Variant name of ``base`` made with the optimizer choices ``tuning``."""
    if not tuning:
        return base
    unknown = sorted(set(tuning) - set(OPTIMIZER_TUNINGS))
    if unknown or base not in TUNED_BASES:
        raise ValueError(f"no tuned variant of {base!r} with {list(tuning)}; tunings: "
                         f"{sorted(OPTIMIZER_TUNINGS)} of {list(TUNED_BASES)}")
    return "-".join([base, *sorted(set(tuning))])


def parse_tuning(text: str) -> tuple[str, ...]:
    """"fastgelu-rawmask" -> ("fastgelu", "rawmask"); refuses unknown tokens."""
    tokens = tuple(t for t in text.split("-") if t)
    unknown = sorted(set(tokens) - set(OPTIMIZER_TUNINGS))
    if unknown:
        raise ValueError(f"unknown optimizer tuning {unknown}; allowed: "
                         f"{sorted(OPTIMIZER_TUNINGS)}")
    return tuple(sorted(set(tokens)))


def fusion_options(model_type: str, tuning: tuple[str, ...]) -> Any:
    """onnxruntime.transformers FusionOptions for ``tuning`` (defaults otherwise)."""
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions(model_type)
    if "fastgelu" in tuning:
        options.enable_gelu_approximation = True
    if "rawmask" in tuning:
        options.use_raw_attention_mask(True)
    return options


# Hugging Face model_type -> onnxruntime.transformers optimizer model_type
OPTIMIZER_MODEL_TYPES = {"distilbert": "bert", "bert": "bert", "roberta": "bert",
                         "xlm-roberta": "bert", "electra": "bert", "mpnet": "bert",
                         "bart": "bart", "gpt2": "gpt2", "vit": "vit"}


class ExportError(RuntimeError):
    """The model cannot be exported to ONNX, or the export disagrees with the reference."""


def manifest_path(onnx_path: Path) -> Path:
    return Path(str(onnx_path) + ".json")


def read_manifest(onnx_path: Path) -> dict[str, Any]:
    return json.loads(manifest_path(onnx_path).read_text())


def _write_manifest(onnx_path: Path, extra: Mapping[str, Any]) -> dict[str, Any]:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    ops = Counter(node.op_type for node in model.graph.node)
    manifest = {
        "sha256": sha256_file(onnx_path),
        "bytes": onnx_path.stat().st_size,
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "op_counts": dict(sorted(ops.items())),
        **extra,
    }
    atomic_write_json(manifest_path(onnx_path), manifest)
    return manifest


def load_verified(onnx_path: Path) -> dict[str, Any]:
    """Manifest of ``onnx_path`` after checking the file against it (StageFailed when
    it is the failure record of a stage upstream)."""
    from inferbench.prepare.failures import StageFailed, onnx_failure

    upstream = onnx_failure(onnx_path)
    if upstream:
        raise StageFailed(upstream)
    try:
        manifest = read_manifest(onnx_path)
    except (OSError, ValueError) as exc:
        # No manifest (or a cut-off one): nothing vouches for the file.
        raise CorruptArtifactError(
            f"{onnx_path}: its manifest {manifest_path(onnx_path).name} is missing or "
            f"unreadable ({type(exc).__name__}); {rebuild_hint(onnx_path)}") from None
    verify_manifest(onnx_path, manifest)
    if manifest.get("status", "ok") != "ok":
        # A quantization that failed left its reason instead of a model: every row
        # that reads it is an error row with that reason, never a missing row.
        raise FailedArtifactError(f"{onnx_path.name}: {manifest.get('reason', 'not made')}")
    return manifest


class FailedArtifactError(RuntimeError):
    """The rule that makes this ONNX file failed (its manifest records why)."""


def export_onnx(model_dir: Path, card: Mapping[str, Any], out_path: Path, opset: int,
                attn_implementation: str, exporter: str, check_inputs: Mapping[str, np.ndarray],
                check_reference: np.ndarray, tolerance: float = 1e-3,
                dynamic_sequence: bool = False) -> dict[str, Any]:
    """Export the output wrapper with a dynamic batch axis (and sequence axis, when
    ``dynamic_sequence``: serving pads batches to varying lengths), check it, compare it."""
    import onnx
    import torch

    from inferbench.prepare.modeling import load_wrapper, ordered_inputs

    names = list(card["input_names"])
    wrapper = load_wrapper(model_dir, card, attn_implementation=attn_implementation)
    sample = tuple(torch.from_numpy(a) for a in ordered_inputs(check_inputs, names))
    with atomic_path(out_path) as tmp:
        try:
            if exporter == "dynamo":
                batch = torch.export.Dim("batch", min=1, max=4096)
                dims: dict[int, Any] = {0: batch}
                if dynamic_sequence:
                    dims[1] = torch.export.Dim("sequence", min=2,
                                               max=int(card["max_position_embeddings"]))
                torch.onnx.export(wrapper, sample, str(tmp), input_names=names,
                                  output_names=["output"], opset_version=opset, dynamo=True,
                                  external_data=False,
                                  dynamic_shapes={n: dims for n in names})
            else:
                axes = {0: "batch", 1: "sequence"} if dynamic_sequence else {0: "batch"}
                torch.onnx.export(wrapper, sample, str(tmp), input_names=names,
                                  output_names=["output"], opset_version=opset, dynamo=False,
                                  dynamic_axes={**{n: axes for n in names},
                                                "output": {0: "batch"}})
        except Exception as exc:
            raise ExportError(
                f"{card.get('model_type')} ({card.get('architecture')}) could not be exported "
                f"to ONNX with the {exporter} exporter: {type(exc).__name__}: {exc}") from exc
        onnx.checker.check_model(str(tmp), full_check=True)
        max_abs = _max_abs_vs_reference(tmp, check_inputs, check_reference)
        if not max_abs <= tolerance:
            raise ExportError(f"ONNX export disagrees with the FP32 reference: "
                              f"max |diff| {max_abs:.3g} > {tolerance}")
    return _write_manifest(out_path, {
        "variant": "plain", "exporter": exporter, "attn_implementation": attn_implementation,
        "dynamic_sequence": dynamic_sequence,
        "requested_opset": opset, "reference_max_abs": max_abs})


def _max_abs_vs_reference(path: Path, inputs: Mapping[str, np.ndarray],
                          reference: np.ndarray) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {i.name: inputs[i.name] for i in session.get_inputs()}
    (output,) = session.run(["output"], feed)
    return float(np.max(np.abs(output.astype(np.float32) - reference)))


def optimize_onnx(in_path: Path, out_path: Path, card: Mapping[str, Any], opt_level: int,
                  float16: bool, tuning: tuple[str, ...] = ()) -> dict[str, Any]:
    """ONNX Runtime transformer optimizer (fused Attention, LayerNorm, GELU) [+ FP16],
    with the optimizer choices ``tuning`` (see OPTIMIZER_TUNINGS) beyond its defaults."""
    from onnxruntime.transformers import optimizer

    from inferbench.prepare.failures import onnx_failure, write_failed_onnx

    upstream = onnx_failure(in_path)
    variant = tuned_variant("fused-fp16" if float16 else "fused", tuning)
    if upstream:
        write_failed_onnx(out_path, upstream, variant)
        return {"status": "error", "reason": upstream}
    load_verified(in_path)
    model_type = OPTIMIZER_MODEL_TYPES.get(str(card.get("model_type")), "bert")
    optimized = optimizer.optimize_model(
        str(in_path), model_type=model_type, num_heads=int(card.get("num_heads") or 0),
        hidden_size=int(card.get("hidden_size") or 0), opt_level=opt_level, use_gpu=False,
        optimization_options=fusion_options(model_type, tuning) if tuning else None)
    fusions = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
    if float16:
        # Inputs stay int64 and the output FP32 so every backend sees the same I/O types.
        optimized.convert_float_to_float16(keep_io_types=True)
    with atomic_path(out_path) as tmp:
        optimized.save_model_to_file(str(tmp))
    return _write_manifest(out_path, {
        "variant": tuned_variant("fused-fp16" if float16 else "fused", tuning),
        "source_sha256": sha256_file(in_path), "optimizer_model_type": model_type,
        "opt_level": opt_level, "fusions": fusions, "optimizer_tuning": list(tuning)})


def quantize_onnx(in_path: Path, out_path: Path) -> dict[str, Any]:
    """Dynamic INT8 (QInt8 weights; QUInt8 was half as fast on x86 here)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from inferbench.prepare.failures import onnx_failure, write_failed_onnx

    upstream = onnx_failure(in_path)
    if upstream:
        write_failed_onnx(out_path, upstream, f"{in_path.stem}-int8")
        return {"status": "error", "reason": upstream}
    source = load_verified(in_path)
    with atomic_path(out_path) as tmp:
        quantize_dynamic(
            str(in_path), str(tmp), weight_type=QuantType.QInt8,
            # Shape inference cannot type contrib ops such as the fused Attention;
            # without a default type the quantizer skips them.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return _write_manifest(out_path, {
        "variant": f"{source.get('variant', 'plain')}-int8", "weight_type": "QInt8",
        "source_sha256": source["sha256"], "fusions": source.get("fusions", {})})
