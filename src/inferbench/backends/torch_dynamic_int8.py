"""PyTorch dynamic INT8 quantization (Linear layers) on the CPU."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inferbench.backends.base import Artifacts
from inferbench.backends.registry import register
from inferbench.backends.torch_eager import TorchEager


@dataclass(frozen=True)
class DynamicInt8Options:
    attn_implementation: str = "sdpa"
    # Quantized kernel library; x86 (fbgemm + onednn) is the default on x86 CPUs.
    engine: str = "x86"

    def __post_init__(self) -> None:
        if self.engine not in ("x86", "fbgemm", "qnnpack", "onednn"):
            raise ValueError(f"engine must be x86, fbgemm, qnnpack or onednn, not {self.engine!r}")


@register
class TorchDynamicInt8(TorchEager):
    kind = "torch-dynamic-int8"
    fp32_kind = "torch-eager"
    devices = frozenset({"cpu"})
    precisions = frozenset({"int8"})
    Options = DynamicInt8Options

    def load_module(self, artifacts: Artifacts) -> Any:
        import torch

        module = super().load_module(artifacts)
        torch.backends.quantized.engine = self.options.engine
        return torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear},
                                                      dtype=torch.qint8)

    def load(self, artifacts: Artifacts) -> None:
        self.torch = self._configure_torch()
        self.input_names = list(artifacts.card["input_names"])
        self.module = self.load_module(artifacts)

    def details(self) -> dict[str, Any]:
        return {"attn_implementation": self.options.attn_implementation,
                "quantized_engine": self.options.engine, "weights": "qint8 per-tensor Linear"}
