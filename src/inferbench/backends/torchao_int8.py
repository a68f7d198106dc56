"""torchao INT8 on CUDA, compiled by Inductor: dynamic activations + INT8 weights, or
INT8 weights only.

``scheme: dynamic`` quantizes activations per token at run time and weights per output
channel (torchao's ``Int8DynamicActivationInt8WeightConfig``): the GEMMs run on INT8
tensor cores (``torch._int_mm``). ``scheme: weight-only`` stores INT8 weights and
computes in the compute dtype (``Int8WeightOnlyConfig``): less weight traffic, no INT8
GEMM. The model is compiled like ``torch-compile``. ``torch._int_mm`` on CUDA refuses
GEMMs with at most 16 rows ("self.size(0) needs to be greater than 16"): the
classification head has only ``batch`` rows, so by default (``layers: encoder``) only
the Transformer blocks are quantized; with ``layers: all`` those batch sizes become
``unavailable`` rows with that reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inferbench.backends import _torchao
from inferbench.backends.base import Availability
from inferbench.backends.registry import register
from inferbench.backends.torch_compile import CompileOptions, TorchCompile
from inferbench.config import BackendSpec

SCHEMES = ("dynamic", "weight-only")


@dataclass(frozen=True)
class Int8Options(CompileOptions):
    # "dynamic": INT8 activations (per token) and weights (per channel);
    # "weight-only": INT8 weights, GEMMs in the compute dtype.
    scheme: str = "dynamic"
    # Precision of everything not quantized (and of the GEMM outputs).
    dtype: str = "bf16"
    # Which Linear layers: "encoder" (the Transformer blocks) or "all".
    layers: str = "encoder"
    # Apply torchao's recommended Inductor settings (coordinate-descent tuning, fused
    # int_mm + scale, ...).
    torchao_inductor_config: bool = True
    # torchao config version: 2 is the Int8Tensor path, 1 the deprecated one.
    config_version: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, not {self.scheme!r}")
        if self.config_version not in (1, 2):
            raise ValueError(f"config_version must be 1 or 2, not {self.config_version!r}")


@register
class TorchaoInt8(TorchCompile):
    kind = "torchao-int8"
    fp32_kind = "torch-eager"
    devices = frozenset({"cuda"})
    precisions = frozenset({"int8"})
    Options = Int8Options
    needs = frozenset({"build"})

    @classmethod
    def check_spec(cls, spec: BackendSpec) -> None:
        super().check_spec(spec)
        options = cls.parse_options(spec)
        _torchao.check_common(spec, options.layers, options.dtype)

    def availability(self) -> Availability:
        return _torchao.torchao_availability()

    def module_dtype(self) -> str:
        return _torchao.COMPUTE_DTYPES[self.options.dtype]

    def quant_config(self) -> Any:
        from torchao.quantization import (
            Int8DynamicActivationInt8WeightConfig,
            Int8WeightOnlyConfig,
        )

        config = (Int8DynamicActivationInt8WeightConfig if self.options.scheme == "dynamic"
                  else Int8WeightOnlyConfig)
        return config(version=self.options.config_version,
                      set_inductor_config=self.options.torchao_inductor_config)

    def transform(self, module: Any) -> Any:
        self.quantized_layers = _torchao.quantize_linears(module, self.quant_config(),
                                                          self.options.layers)
        return module

    def unsupported_reason(self, exc: BaseException) -> str | None:
        return _torchao.unsupported_reason(exc)

    def details(self) -> dict[str, Any]:
        weight_only = self.options.scheme == "weight-only"
        return {**super().details(), "torchao": _torchao.torchao_version(),
                "quantization": ("int8 weight-only" if weight_only
                                 else "int8 dynamic activation + int8 weight"),
                "scheme": self.options.scheme, "dtype": self.options.dtype,
                "layers": self.options.layers, "config_version": self.options.config_version,
                "quantized_linear_layers": getattr(self, "quantized_layers", None),
                # Weight-only INT8 computes in the compute dtype: that is its peak.
                "math_precision": self.options.dtype if weight_only else "int8"}
