"""Distance to the hardware: FLOPs per inference, achieved TFLOP/s, peak fraction, kernels.

Three small pieces, each usable on its own:

- ``transformer_flops`` counts the matmul FLOPs of an encoder-only Transformer from its
  config, once, at model preparation (stored in the model card as ``flops``);
  ``flops_per_inference`` turns that count into the FLOPs of one batch.
- ``peak_tflops`` looks up the dense peak of a GPU for a precision, and
  ``achieved`` turns a latency into achieved TFLOP/s and its fraction of that peak.
- ``count_kernels`` / ``kernels_per_inference`` count the GPU kernels one inference
  launches, with the torch profiler (CUPTI sees every kernel of the process, so ONNX
  Runtime's kernels too), in a pass of its own outside the timed loop; the same pass
  gives ``device_busy_fraction`` (``busy_fraction``): the share of the time from the
  first kernel's start to the last one's end during which a kernel ran, with
  inferences issued back to back. Well below 1, the GPU waits for the host between
  kernels: the row is bound by the host's launches, not by the GPU.

What the FLOP count includes (per layer, sequence length S, hidden size h, FFN size f;
one multiply-add = 2 FLOPs):

- Q, K, V projections ``3 * 2*S*h*h`` and the attention output projection ``2*S*h*h``;
- attention scores ``Q K^T`` ``2*S*S*h`` and the weighted sum ``P V`` ``2*S*S*h``
  (summed over heads: heads * head_dim = h);
- the FFN ``2*S*h*f + 2*S*f*h``;

so ``S*(8*h*h + 4*h*f) + 4*S*S*h`` per layer, plus the classification head (DistilBERT's
pre-classifier and classifier, BERT's pooler and classifier: ``2*h*h + 2*h*labels`` per
sequence) for sequence classification. Not counted: embeddings (lookups), LayerNorm,
softmax, GELU, bias adds, masking (element-wise, a few percent at most). The count is for
the padded length S, which is what dense kernels compute; a runtime that removes padding
does fewer FLOPs than counted. DistilBERT-base (h 768, f 3072, 6 layers) at S 128:
11.17 GFLOP per sequence, 178.8 GFLOP at batch 16.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

# Dense (no 2:4 sparsity) tensor-core peaks in TFLOP/s (TOPS for int8), by GPU name
# substring, most specific first. Source: NVIDIA H100 Tensor Core GPU datasheet
# (nvidia.com/en-us/data-center/h100, "Technical Specifications"; the datasheet's
# tensor-core figures are "with sparsity", dense is half of them) and the NVIDIA H200
# datasheet (same compute as H100 SXM). fp32 is the non-tensor-core FP32 rate; tf32
# applies to fp32 rows that enable TF32.
PEAK_TFLOPS: tuple[tuple[str, Mapping[str, float]], ...] = (
    ("H100 PCIe", {"fp16": 756.0, "bf16": 756.0, "fp8": 1513.0, "int8": 1513.0,
                   "tf32": 378.0, "fp32": 51.0}),
    ("H100 NVL", {"fp16": 835.0, "bf16": 835.0, "fp8": 1670.0, "int8": 1670.0,
                  "tf32": 417.0, "fp32": 60.0}),
    # "NVIDIA H100 80GB HBM3" is the SXM5 part.
    ("H100", {"fp16": 989.0, "bf16": 989.0, "fp8": 1979.0, "int8": 1979.0,
              "tf32": 494.0, "fp32": 67.0}),
    ("H200", {"fp16": 989.0, "bf16": 989.0, "fp8": 1979.0, "int8": 1979.0,
              "tf32": 494.0, "fp32": 67.0}),
)

# Device-side activities that are not kernels.
_NOT_KERNELS = ("memcpy", "memset")


# -- FLOPs ---------------------------------------------------------------------------
def transformer_flops(hidden: int, intermediate: int, layers: int, num_labels: int | None,
                      head: str = "classification") -> dict[str, Any]:
    """FLOP coefficients of an encoder-only Transformer (see the module docstring).

    Returns ``per_token`` (projections + FFN, all layers), ``per_token_per_position``
    (attention matmuls: times S for each token) and ``per_sequence`` (the head).
    """
    for name, value in (("hidden", hidden), ("intermediate", intermediate),
                        ("layers", layers)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    per_token = layers * (8 * hidden * hidden + 4 * hidden * intermediate)
    per_token_per_position = layers * 4 * hidden
    per_sequence = 0
    if head == "classification":
        per_sequence = 2 * hidden * hidden + 2 * hidden * int(num_labels or 0)
    elif head != "none":
        raise ValueError(f"head must be 'classification' or 'none', not {head!r}")
    return {
        "per_token": per_token,
        "per_token_per_position": per_token_per_position,
        "per_sequence": per_sequence,
        "counted": "QKV/out projections, attention QK^T and PV, FFN, classification head; "
                   "multiply-add = 2 FLOPs; embeddings and element-wise ops excluded; "
                   "padded sequence length",
        "config": {"hidden": hidden, "intermediate": intermediate, "layers": layers,
                   "num_labels": num_labels, "head": head},
    }


def flops_from_config(config: Any, task: str) -> dict[str, Any] | None:
    """``transformer_flops`` from a transformers config (BERT-style or DistilBERT-style
    field names); None when the config lacks one of the sizes."""
    hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", None)
    intermediate = (getattr(config, "intermediate_size", None)
                    or getattr(config, "hidden_dim", None))
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers", None)
    if not (isinstance(hidden, int) and isinstance(intermediate, int)
            and isinstance(layers, int) and min(hidden, intermediate, layers) > 0):
        return None
    classification = task == "sequence-classification"
    return transformer_flops(int(hidden), int(intermediate), int(layers),
                             getattr(config, "num_labels", None) if classification else None,
                             head="classification" if classification else "none")


def flops_per_inference(card_flops: Mapping[str, Any], batch: int, seq_len: int) -> float:
    """FLOPs of one inference of ``batch`` sequences of length ``seq_len``."""
    per_sequence = (seq_len * card_flops["per_token"]
                    + seq_len * seq_len * card_flops["per_token_per_position"]
                    + card_flops["per_sequence"])
    return float(batch * per_sequence)


# -- peaks and achieved rate ----------------------------------------------------------
def peak_tflops(gpu_name: str | None, precision: str) -> float | None:
    """Dense peak of ``gpu_name`` for ``precision``; None for an unknown GPU or precision."""
    if not gpu_name:
        return None
    for key, peaks in PEAK_TFLOPS:
        if key.lower() in gpu_name.lower():
            return peaks.get(precision)
    return None


def math_precision(precision: str, details: Mapping[str, Any]) -> str:
    """The precision a row's GEMMs run in, for its peak: a backend can say so in its
    details (``math_precision``: weight-only INT8 computes in BF16); FP32 with TF32 on
    runs at the TF32 peak."""
    declared = details.get("math_precision")
    if isinstance(declared, str) and declared:
        return declared
    if precision == "fp32" and details.get("tf32"):
        return "tf32"
    return precision


def achieved(flops: float | None, latency_ms: float | None, peak: float | None
             ) -> dict[str, float | None]:
    """Achieved TFLOP/s at ``latency_ms`` per inference, and its fraction of ``peak``."""
    if not flops or not latency_ms or latency_ms <= 0:
        return {"achieved_tflops": None, "peak_fraction": None}
    tflops = flops / (latency_ms * 1e-3) / 1e12
    return {"achieved_tflops": tflops,
            "peak_fraction": tflops / peak if peak else None}


# -- kernel count -----------------------------------------------------------------------
def is_kernel(name: str) -> bool:
    lowered = name.lower()
    return not any(word in lowered for word in _NOT_KERNELS)


def count_kernels(events: Iterable[tuple[str, bool]]) -> int:
    """Kernels among profiler events given as (name, is_device_event)."""
    return sum(1 for name, on_device in events if on_device and is_kernel(name))


def busy_fraction(intervals: Iterable[tuple[float, float]]) -> float | None:
    """Share of the span from the first start to the last end that at least one of the
    (start, end) intervals covers (overlapping kernels count once)."""
    spans = sorted((start, end) for start, end in intervals if end > start)
    if not spans:
        return None
    busy = 0.0
    run_start, run_end = spans[0]
    for start, end in spans[1:]:
        if start > run_end:
            busy += run_end - run_start
            run_start, run_end = start, end
        else:
            run_end = max(run_end, end)
    busy += run_end - run_start
    span = max(end for _, end in spans) - spans[0][0]
    return busy / span


def kernels_per_inference(run_once: Callable[[], None], synchronize: Callable[[], None],
                          iterations: int = 5) -> dict[str, Any]:
    """Kernel launches per call of ``run_once``, from the torch profiler (CUDA activity).

    Runs ``run_once`` ``iterations`` times under the profiler, after one untimed call,
    and divides. Never raises: a profiler that cannot start gives ``None`` and why.
    """
    try:
        import torch
        from torch.profiler import ProfilerActivity, profile

        run_once()
        synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(iterations):
                run_once()
            synchronize()
        events = _device_events(prof, torch)
        total = count_kernels((name, on_device) for name, on_device, _, _ in events)
        if total == 0:
            return {"kernels_per_inference": None,
                    "kernel_source": "torch.profiler saw no CUDA kernel (CUPTI unavailable?)"}
        busy = busy_fraction((start, end) for name, on_device, start, end in events
                             if on_device and is_kernel(name))
        return {"kernels_per_inference": total / iterations,
                "device_busy_fraction": busy,
                "kernel_source": f"torch.profiler (CUPTI), {iterations} inferences"}
    except Exception as exc:
        return {"kernels_per_inference": None,
                "kernel_source": f"n/a: {type(exc).__name__}: {str(exc)[:200]}"}


def _device_events(prof: Any, torch: Any) -> list[tuple[str, bool, float, float]]:
    """(name, on the GPU, start µs, end µs) of every profiler event: Kineto's raw events
    where this torch exposes them (kernels replayed from a CUDA graph included), else the
    parsed ones."""
    cuda = torch.autograd.DeviceType.CUDA
    raw = getattr(getattr(prof, "profiler", None), "kineto_results", None)
    if raw is not None:
        return [(e.name(), e.device_type() == cuda, e.start_ns() / 1e3,
                 (e.start_ns() + e.duration_ns()) / 1e3) for e in raw.events()]
    return [(e.name, e.device_type == cuda, e.time_range.start, e.time_range.end)
            for e in prof.events()]


# -- one row --------------------------------------------------------------------------
def row_hardware(card: Mapping[str, Any], batch: int, seq_len: int, device: str,
                 precision: str, details: Mapping[str, Any], gpu_name: str | None,
                 latency_ms: float | None) -> dict[str, Any]:
    """The distance-to-hardware fields of one result row (kernel count added apart).

    ``latency_ms`` is the device-side (GPU compute) p50 on a GPU, end-to-end on a CPU.
    """
    card_flops = card.get("flops")
    flops = flops_per_inference(card_flops, batch, seq_len) if card_flops else None
    math = math_precision(precision, details)
    peak = peak_tflops(gpu_name, math) if device == "cuda" else None
    return {"flops_per_inference": flops, "math_precision": math,
            "peak_tflops": peak, "gpu": gpu_name if device == "cuda" else None,
            "latency_ms_used": latency_ms, **achieved(flops, latency_ms, peak)}


def gpu_name(device: str) -> str | None:
    if device != "cuda":
        return None
    try:
        import torch

        return str(torch.cuda.get_device_name(0))
    except Exception:
        return None


def hardware_pass(backend: Any, host_inputs: Mapping[str, Any], card: Mapping[str, Any],
                  device: str, precision: str, batch: int, seq_len: int,
                  latency_ms: float | None, iterations: int = 5) -> dict[str, Any]:
    """Achieved TFLOP/s, peak fraction and (on a GPU) kernels per inference of a loaded
    backend, in a pass of its own after the timed loop. Never raises."""
    try:
        details = backend.details()
    except Exception:
        details = {}
    row = row_hardware(card, batch, seq_len, device, precision, details, gpu_name(device),
                       latency_ms)
    if device == "cuda":
        row.update(kernels_per_inference(
            lambda: backend.run(backend.prepare_inputs(host_inputs)), backend.synchronize,
            iterations))
    return row
