"""PyTorch eager on CPU or CUDA, FP32 / FP16 / BF16."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from inferbench.backends.base import Artifacts, Availability, Backend, DeviceTimer
from inferbench.backends.registry import register
from inferbench.spec import BackendSpec, ConfigError

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def check_attn_implementation(value: str) -> None:
    """The attention implementations transformers can trace for every torch backend."""
    if value not in ("sdpa", "eager"):
        raise ValueError(f"attn_implementation must be 'sdpa' or 'eager', not {value!r}")


@dataclass(frozen=True)
class TorchOptions:
    attn_implementation: str = "sdpa"
    # FP32 on CUDA means true FP32: TF32 matmuls only when asked for.
    tf32: bool = False

    def __post_init__(self) -> None:
        check_attn_implementation(self.attn_implementation)


def torch_availability(spec: BackendSpec) -> Availability:
    try:
        import torch
    except ImportError:
        return Availability.no("torch is not installed")
    if spec.device == "cuda" and not torch.cuda.is_available():
        return Availability.no("no CUDA device")
    if spec.device == "cpu" and spec.precision == "bf16":
        # Without AVX512_BF16 or AMX, torch emulates BF16 GEMMs (slower than FP32):
        # not a deployment choice, so not a row.
        from inferbench import isa

        missing = isa.detect().bf16_missing_reason()
        if missing:
            return Availability.no(missing)
    return Availability.yes()


@register
class TorchEager(Backend):
    kind = "torch-eager"
    devices = frozenset({"cpu", "cuda"})
    precisions = frozenset({"fp32", "fp16", "bf16"})
    Options: ClassVar[type] = TorchOptions
    memory_owner = "torch"

    @classmethod
    def check_spec(cls, spec: BackendSpec) -> None:
        super().check_spec(spec)
        if spec.device == "cpu" and spec.precision == "fp16":
            raise ConfigError(f"precision 'fp16' needs device 'cuda' for {cls.kind} "
                              "(CPU half-precision kernels are not a deployment target)")

    def availability(self) -> Availability:
        return torch_availability(self.spec)

    def _configure_torch(self) -> Any:
        import torch

        torch.set_num_threads(self.threads)
        if torch.get_num_interop_threads() != 1:
            # Fixed once parallel work has started in this process: keep what is set.
            with contextlib.suppress(RuntimeError):
                torch.set_num_interop_threads(1)
        if self.spec.device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = self.options.tf32
            torch.backends.cudnn.allow_tf32 = self.options.tf32
        return torch

    def load_module(self, artifacts: Artifacts) -> Any:
        """The FP32 output wrapper on the CPU; subclasses transform it."""
        from inferbench.prepare.modeling import load_wrapper

        return load_wrapper(artifacts.model_dir, artifacts.card,
                            attn_implementation=self.options.attn_implementation)

    def load(self, artifacts: Artifacts) -> None:
        torch = self._configure_torch()
        self.input_names = list(artifacts.card["input_names"])
        module = self.load_module(artifacts)
        self.module = module.to(device=self.spec.device, dtype=getattr(torch,
                                DTYPES[self.spec.precision]))
        self.torch = torch

    def prepare_inputs(self, inputs: Mapping[str, np.ndarray]) -> Any:
        tensors = [self.torch.from_numpy(inputs[name]) for name in self.input_names]
        if self.spec.device == "cuda":
            tensors = [t.to("cuda", non_blocking=False) for t in tensors]
        return tensors

    def run(self, prepared: Any) -> Any:
        with self.torch.inference_mode():
            return self.module(*prepared)

    def to_host(self, outputs: Any) -> np.ndarray:
        return outputs.float().cpu().numpy()

    def synchronize(self) -> None:
        if self.spec.device == "cuda":
            self.torch.cuda.synchronize()

    def device_timer(self) -> DeviceTimer | None:
        if self.spec.device != "cuda":
            return None
        from inferbench.measure.gpu import CudaEventTimer

        return CudaEventTimer()

    def details(self) -> dict[str, Any]:
        info: dict[str, Any] = {"attn_implementation": self.options.attn_implementation}
        if self.spec.device == "cuda":
            info["tf32"] = self.options.tf32
        return info
