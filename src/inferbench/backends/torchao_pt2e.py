"""PyTorch 2 export quantization (PT2E) to static INT8 on the CPU, compiled by Inductor.

The flow torchao documents for x86 (``torchao.quantization.pt2e``): ``torch.export``
the model with a dynamic batch, ``prepare_pt2e`` with the ``X86InductorQuantizer``
(INT8 per-channel weights, UINT8 per-tensor activations, as oneDNN's INT8 GEMMs
want), run the calibration inputs through the observers, ``convert_pt2e``, and compile
the quantized graph with Inductor with ``freezing`` on, which folds the
quantize/dequantize pairs into oneDNN INT8 kernels. On CPUs without VNNI the quantizer
uses ``reduce_range`` (7-bit activations), as torchao advises, to avoid overflow in the
AVX2 INT8 dot product.

The build rule keeps the calibration inputs (hashed, in the build folder) and fills
Inductor's cache with one compiled graph per batch size, like ``torch-compile``; each
benchmark job quantizes again from the same calibration inputs (deterministic) and
compiles from the cache, all of it cold start, none of it latency.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferbench.backends.base import Artifacts, Availability, Unsupported
from inferbench.backends.registry import register
from inferbench.backends.torch_compile import CompileOptions, TorchCompile
from inferbench.backends.torch_dynamic_int8 import cpu_torchao_availability
from inferbench.spec import BackendSpec, ConfigError

CALIBRATION_FILE = "calibration.npz"


def incompatibility(exc: BaseException) -> str | None:
    """Why the PT2E passes of this torchao cannot run on this torch (None when ``exc``
    is another failure). Seen: torchao 0.17.0's convert_pt2e names the overload
    ``aten.transpose.Dimname``, which torch 2.13 no longer has (torchao 0.18.0 does not
    name it)."""
    import torch

    from inferbench.backends import _torchao

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, AttributeError) and "has no overload name" in str(current):
            return (f"torchao {_torchao.torchao_version()}'s PT2E passes do not run on torch "
                    f"{torch.__version__}: {current}")
        current = current.__cause__ or current.__context__
    return None


@dataclass(frozen=True)
class Pt2eOptions(CompileOptions):
    # On the CPU: plain Inductor compilation (no CUDA graphs), weights folded in as
    # constants (the quantized patterns are only fused into INT8 kernels with freezing).
    mode: str = "default"
    freezing: bool | None = True
    # None: 7-bit activations exactly where the CPU lacks VNNI (torchao's advice).
    reduce_range: bool | None = None


@register
class TorchaoPt2eInt8(TorchCompile):
    kind = "torchao-pt2e-int8"
    fp32_kind = "torch-eager"
    packages = ("torch", "torchao")
    devices = frozenset({"cpu"})
    precisions = frozenset({"int8"})
    Options = Pt2eOptions
    needs = frozenset({"build"})

    @classmethod
    def check_spec(cls, spec: BackendSpec) -> None:
        super().check_spec(spec)
        if cls.parse_options(spec).freezing is False:
            raise ConfigError("freezing must stay on: Inductor fuses the PT2E quantized "
                              "patterns into INT8 kernels only when weights are frozen")

    @classmethod
    def calibrated(cls, spec: BackendSpec) -> bool:
        return True

    def availability(self) -> Availability:
        found = super().availability()
        return found if not found.ok else cpu_torchao_availability()

    def module_dtype(self) -> str:
        return "float32"

    def reduce_range(self) -> bool:
        if self.options.reduce_range is not None:
            return bool(self.options.reduce_range)
        from inferbench import isa

        return not isa.detect().int8_dot_product

    def _batches(self, path: Path, names: list[str]) -> list[list[Any]]:
        from inferbench.prepare.calibration import calibration_batches, calibration_settings

        settings = calibration_settings(self._calibration_settings)
        batches = calibration_batches(path, int(settings["batch_size"]), names)
        if not batches:
            raise ValueError(f"the calibration set {path.name} holds no sequence")
        return [[self.torch.from_numpy(b[n]) for n in names] for b in batches]

    def transform(self, module: Any) -> Any:
        import torch
        from torchao.quantization.pt2e import move_exported_model_to_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

        batches = self._batches(self._calibration_path, self.input_names)
        batch = torch.export.Dim("batch", min=1, max=4096)
        exported = torch.export.export(
            module, tuple(batches[0]),
            # forward(*args): one entry, the tuple of the inputs' shapes
            dynamic_shapes=(tuple({0: batch} for _ in self.input_names),)).module()
        quantizer = xiq.X86InductorQuantizer()
        quantizer.set_global(xiq.get_default_x86_inductor_quantization_config(
            reduce_range=self.reduce_range()))
        try:
            prepared = prepare_pt2e(exported, quantizer)
            with torch.no_grad():
                for tensors in batches:
                    prepared(*tensors)
            converted = convert_pt2e(prepared)
        except Exception as exc:
            reason = incompatibility(exc)
            if reason is None:
                raise
            raise Unsupported(reason) from exc
        move_exported_model_to_eval(converted)
        self.calibration_batches = len(batches)
        self.quantize_ops = sum(1 for node in converted.graph.nodes
                                if "quantize_per_tensor" in str(node.target))
        if self.quantize_ops == 0:
            raise RuntimeError("PT2E inserted no quantize operation: nothing is INT8")
        return converted

    def build(self, artifacts: Artifacts, out_dir: Path, batch_sizes: list[int], seq_len: int
              ) -> dict[str, Any]:
        if artifacts.calibration is None:
            raise RuntimeError("torchao-pt2e-int8 needs the calibration inputs")
        shutil.copyfile(artifacts.calibration, out_dir / CALIBRATION_FILE)
        self._calibration_path = out_dir / CALIBRATION_FILE
        self._calibration_settings = dict(artifacts.calibration_settings)
        self.input_names = list(artifacts.card["input_names"])
        manifest = super().build(artifacts, out_dir, batch_sizes, seq_len)
        return {**manifest, "calibration": {**self._calibration_settings,
                                            "batches": self.calibration_batches,
                                            "inputs": artifacts.calibration.name},
                "reduce_range": self.reduce_range(), "quantize_ops": self.quantize_ops}

    def load(self, artifacts: Artifacts) -> None:
        if artifacts.build is None:
            raise RuntimeError("torchao-pt2e-int8 needs its build")
        self._calibration_path = Path(artifacts.build) / CALIBRATION_FILE
        self._calibration_settings = dict(
            artifacts.build_manifest.get("calibration") or {})
        self._calibration_settings.pop("batches", None)
        self._calibration_settings.pop("inputs", None)
        self.input_names = list(artifacts.card["input_names"])
        super().load(artifacts)

    def details(self) -> dict[str, Any]:
        from inferbench.backends import _torchao

        return {**super().details(), "torchao": _torchao.torchao_version(),
                "quantization": "PT2E static int8 (X86InductorQuantizer): u8 activations "
                                "per tensor, s8 weights per channel",
                "reduce_range": self.reduce_range(),
                "quantize_ops": getattr(self, "quantize_ops", None),
                "calibration_batches": getattr(self, "calibration_batches", None)}
