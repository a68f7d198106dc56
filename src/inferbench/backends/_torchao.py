"""What the torchao backends (torchao_float8, torchao_int8) share.

Not a backend itself (the leading underscore keeps the registry from importing it as
one): availability checks, which Linear layers get quantized, and the runtime refusals
that mean "this shape is not supported here" rather than a failure.

torchao has to match the torch it runs with: 0.17.0 is the first release built
against torch 2.11's stable ABI (0.16 skipped its C++ extensions on torch 2.11), and
0.18.0 (pinned) also runs PT2E quantization on torch 2.13. The
Python API these backends use (``quantize_`` with the float8 / int8 configs) needs no
C++ extension.
"""

from __future__ import annotations

import re
from typing import Any

from inferbench.backends.base import Availability
from inferbench.config import BackendSpec, ConfigError

TORCHAO_PIN = "torchao==0.18.0"
# Linear layers inside the repeated Transformer blocks (DistilBERT
# `transformer.layer.N.`, BERT `encoder.layer.N.`, most others `layers.N.`).
BLOCK_LINEAR = re.compile(r"(^|\.)layers?\.\d+\.")
LAYER_SCOPES = ("encoder", "all")
COMPUTE_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}

# Refusals of the GEMMs that torchao lowers to, by message (torch's own wording,
# typo included). torch._int_mm on CUDA needs more than 16 rows and K, N multiples of
# 8; torch._scaled_mm needs dimensions divisible by 16.
UNSUPPORTED_MESSAGES = (
    "needs to be greater than 16",
    "needs to be greater than 0 and a multiple of 8",
    "divisible by 16",
    "divisble by 16",
)


def check_common(spec: BackendSpec, layers: str, dtype: str) -> None:
    """Option checks shared by the torchao backends (raise ConfigError)."""
    if layers not in LAYER_SCOPES:
        raise ConfigError(f"layers must be one of {LAYER_SCOPES}, not {layers!r}")
    if dtype not in COMPUTE_DTYPES:
        raise ConfigError(f"dtype must be one of {sorted(COMPUTE_DTYPES)} (the precision of "
                          f"everything not quantized), not {dtype!r}")


def quantize_filter(layers: str) -> Any:
    """``filter_fn`` for ``torchao.quantization.quantize_``: which Linear layers to quantize.

    "encoder": those of the Transformer blocks, where the FLOPs are; the embeddings and
    the classification head (whose GEMMs have only ``batch`` rows) stay in the compute
    dtype. "all": every Linear layer.
    """
    import torch

    def keep(module: Any, fqn: str) -> bool:
        if not isinstance(module, torch.nn.Linear):
            return False
        return layers == "all" or bool(BLOCK_LINEAR.search(fqn))

    return keep


def torchao_version() -> str | None:
    try:
        import torchao
    except Exception:
        return None
    return str(getattr(torchao, "__version__", "unknown"))


def cuda_capability() -> tuple[int, int]:
    import torch

    major, minor = torch.cuda.get_device_capability(0)
    return int(major), int(minor)


def torchao_availability(min_capability: tuple[int, int] | None = None,
                         what: str = "") -> Availability:
    """No CUDA, no torchao, or a GPU below ``min_capability``: each its own reason."""
    from inferbench.measure import gpu

    reason = gpu.cuda_unavailable_reason()
    if reason:
        return Availability.no(reason)
    try:
        import torchao  # noqa: F401
    except ImportError:
        return Availability.no(f"torchao is not installed (install {TORCHAO_PIN}, the "
                               "release built for torch 2.11)")
    except Exception as exc:  # a torchao that does not match this torch
        return Availability.no(f"torchao does not import: {type(exc).__name__}: {exc}"[:300])
    if min_capability is not None:
        capability = cuda_capability()
        if capability < min_capability:
            need = ".".join(map(str, min_capability))
            have = ".".join(map(str, capability))
            return Availability.no(f"{what} needs CUDA compute capability {need} or higher; "
                                   f"this GPU has {have}")
    return Availability.yes()


def unsupported_reason(exc: BaseException) -> str | None:
    """The refusal message when ``exc`` (or what caused it) is a known unsupported shape."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current)
        for message in UNSUPPORTED_MESSAGES:
            if message in text:
                line = next((ln for ln in text.splitlines() if message in ln), text)
                return line.strip()[:300]
        current = current.__cause__ or current.__context__
    return None


def quantized_layer_count(module: Any) -> int:
    """Linear layers whose weight torchao replaced by a quantized tensor subclass."""
    import torch

    plain = (torch.Tensor, torch.nn.Parameter)
    return sum(1 for sub in module.modules()
               if isinstance(sub, torch.nn.Linear) and type(sub.weight) not in plain)


def quantize_linears(module: Any, config: Any, layers: str) -> int:
    """Quantize the Linear layers ``layers`` selects in place with torchao's
    ``quantize_``; how many were quantized (none is an error: nothing would be INT8)."""
    from torchao.quantization import quantize_

    quantize_(module, config, filter_fn=quantize_filter(layers))
    count = quantized_layer_count(module)
    if count == 0:
        raise RuntimeError("torchao quantized no Linear layer to INT8")
    return count
