"""PyTorch dynamic INT8 on the CPU through torchao's ``quantize_``, in eager mode.

Linear layers get INT8 weights (per output channel) and INT8 activations quantized
per token on every call (torchao's ``Int8DynamicActivationInt8WeightConfig``, the
``Int8Tensor`` path); the GEMMs run as ``torch._int_mm`` (oneDNN on x86, VNNI where
the CPU has it). This replaces ``torch.ao.quantization.quantize_dynamic``, which torch
deprecates (it warns on every call that it will be removed). Compiled by Inductor,
the same quantization is the ``torchao-int8`` backend; with calibrated (static)
activations it is ``torchao-pt2e-int8``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inferbench.backends import _torchao
from inferbench.backends.base import Artifacts, Availability
from inferbench.backends.registry import register
from inferbench.backends.torch_eager import (
    TorchEager,
    check_attn_implementation,
    torch_availability,
)


@dataclass(frozen=True)
class DynamicInt8Options:
    attn_implementation: str = "sdpa"
    # Which Linear layers: "all" (every one, as quantize_dynamic did) or "encoder"
    # (those of the Transformer blocks; embeddings and head stay FP32).
    layers: str = "all"
    # Activation quantization: symmetric (the torchao default) or asymmetric per token.
    activation_mapping: str = "symmetric"

    def __post_init__(self) -> None:
        check_attn_implementation(self.attn_implementation)
        if self.layers not in _torchao.LAYER_SCOPES:
            raise ValueError(f"layers must be one of {_torchao.LAYER_SCOPES}, "
                             f"not {self.layers!r}")
        if self.activation_mapping not in ("symmetric", "asymmetric"):
            raise ValueError("activation_mapping must be 'symmetric' or 'asymmetric', "
                             f"not {self.activation_mapping!r}")


def cpu_torchao_availability() -> Availability:
    """torchao importable (the CPU paths need no GPU)."""
    try:
        import torchao  # noqa: F401
    except ImportError:
        return Availability.no(f"torchao is not installed (install {_torchao.TORCHAO_PIN})")
    except Exception as exc:  # a torchao that does not match this torch
        return Availability.no(f"torchao does not import: {type(exc).__name__}: {exc}"[:300])
    return Availability.yes()


@register
class TorchDynamicInt8(TorchEager):
    kind = "torch-dynamic-int8"
    fp32_kind = "torch-eager"
    packages = ("torch", "torchao")
    devices = frozenset({"cpu"})
    precisions = frozenset({"int8"})
    Options = DynamicInt8Options

    def availability(self) -> Availability:
        found = torch_availability(self.spec)
        return found if not found.ok else cpu_torchao_availability()

    def quant_config(self) -> Any:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, MappingType

        mapping = (MappingType.SYMMETRIC if self.options.activation_mapping == "symmetric"
                   else MappingType.ASYMMETRIC)
        return Int8DynamicActivationInt8WeightConfig(version=2, act_mapping_type=mapping)

    def load_module(self, artifacts: Artifacts) -> Any:
        module = super().load_module(artifacts).eval()
        self.quantized_layers = _torchao.quantize_linears(module, self.quant_config(),
                                                          self.options.layers)
        return module

    def load(self, artifacts: Artifacts) -> None:
        self.torch = self._configure_torch()
        self.input_names = list(artifacts.card["input_names"])
        self.module = self.load_module(artifacts)

    def details(self) -> dict[str, Any]:
        return {"attn_implementation": self.options.attn_implementation,
                "torchao": _torchao.torchao_version(),
                "quantization": "torchao quantize_: int8 dynamic activation (per token) + "
                                "int8 weight (per channel)",
                "activation_mapping": self.options.activation_mapping,
                "layers": self.options.layers,
                "quantized_linear_layers": getattr(self, "quantized_layers", None)}
