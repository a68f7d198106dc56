"""torchao float8 on CUDA: dynamic FP8 (e4m3) activations and weights, compiled by Inductor.

The model is loaded in BF16 (or FP16 for per-tensor scaling), the Linear layers of the
Transformer blocks are quantized with torchao's
``Float8DynamicActivationFloat8WeightConfig`` (scales computed per row or per tensor at
run time for activations, once for weights), and the result is compiled like
``torch-compile`` (static shapes per batch, CUDA graphs in the modes that use them, the
Inductor cache as the build artifact). Embeddings, attention and the classification
head stay in the compute dtype. FP8 tensor cores need compute capability 8.9 (Ada) or
newer; a GEMM shape ``torch._scaled_mm`` refuses becomes an ``unavailable`` row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inferbench.backends import _torchao
from inferbench.backends.base import Availability
from inferbench.backends.registry import register
from inferbench.backends.torch_compile import CompileOptions, TorchCompile
from inferbench.config import BackendSpec, ConfigError

GRANULARITIES = ("row", "tensor")
MIN_CAPABILITY = (8, 9)


@dataclass(frozen=True)
class Float8Options(CompileOptions):
    # Scale granularity of activations and weights: one scale per row (per token /
    # per output channel) or one per tensor.
    granularity: str = "row"
    # Precision of everything not quantized (and of the GEMM outputs).
    dtype: str = "bf16"
    # Which Linear layers: "encoder" (the Transformer blocks) or "all".
    layers: str = "encoder"
    # Apply torchao's recommended Inductor settings (coordinate-descent tuning, ...).
    torchao_inductor_config: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, "
                             f"not {self.granularity!r}")


@register
class TorchaoFloat8(TorchCompile):
    kind = "torchao-float8"
    fp32_kind = "torch-eager"
    devices = frozenset({"cuda"})
    precisions = frozenset({"fp8"})
    Options = Float8Options
    needs = frozenset({"build"})

    @classmethod
    def check_spec(cls, spec: BackendSpec) -> None:
        super().check_spec(spec)
        options = cls.parse_options(spec)
        _torchao.check_common(spec, options.layers, options.dtype)
        if options.granularity == "row" and options.dtype != "bf16":
            raise ConfigError("granularity 'row' needs dtype 'bf16' (torchao scales "
                              "row-wise FP8 from BF16 weights only)")

    def availability(self) -> Availability:
        return _torchao.torchao_availability(MIN_CAPABILITY, "FP8 (torchao float8)")

    def module_dtype(self) -> str:
        return _torchao.COMPUTE_DTYPES[self.options.dtype]

    def quant_config(self) -> Any:
        from torchao.quantization import (
            Float8DynamicActivationFloat8WeightConfig,
            PerRow,
            PerTensor,
        )

        granularity = PerRow() if self.options.granularity == "row" else PerTensor()
        return Float8DynamicActivationFloat8WeightConfig(
            granularity=granularity, set_inductor_config=self.options.torchao_inductor_config)

    def transform(self, module: Any) -> Any:
        from torchao.quantization import quantize_

        quantize_(module, self.quant_config(),
                  filter_fn=_torchao.quantize_filter(self.options.layers))
        self.quantized_layers = _torchao.quantized_layer_count(module)
        if self.quantized_layers == 0:
            # torchao leaves layers whose sizes are not multiples of 16 as they are.
            raise RuntimeError("torchao quantized no Linear layer to FP8 (sizes must be "
                               "multiples of 16)")
        return module

    def unsupported_reason(self, exc: BaseException) -> str | None:
        return _torchao.unsupported_reason(exc)

    def details(self) -> dict[str, Any]:
        return {**super().details(), "torchao": _torchao.torchao_version(),
                "quantization": "float8 e4m3 dynamic activation + weight",
                "granularity": self.options.granularity, "dtype": self.options.dtype,
                "layers": self.options.layers,
                "quantized_linear_layers": getattr(self, "quantized_layers", None),
                "math_precision": "fp8"}
