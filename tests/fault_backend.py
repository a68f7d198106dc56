"""Test-only backends that inject one fault each (see tests/test_faults*.py).

Registered through ``INFERBENCH_BACKEND_MODULES=fault_backend`` (with tests/ on
PYTHONPATH), so the real workflow's jobs can load them. Kind ``fault`` imports no
runtime: in mode ``echo`` its output is the FP32 reference itself, so a row can
be ``ok`` in a second; every other mode breaks one thing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from inferbench.backends.base import Artifacts, Availability, Backend
from inferbench.backends.ort import OnnxRuntime
from inferbench.backends.registry import register

MODES = ("echo", "jitter", "hang", "raise", "raise_load", "oom", "memory_error", "nan", "inf",
         "segfault", "sigkill", "unavailable", "build_segfault")


@dataclass(frozen=True)
class FaultOptions:
    mode: str = "echo"
    # FP32 reference .npz; empty: the workflow's results/reference/ file for the inputs
    reference: str = ""
    # mode hang: write <marker>.started, then block while <marker> exists
    marker: str = ""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")


@register
class FaultBackend(Backend):
    kind = "fault"
    Options = FaultOptions

    def availability(self) -> Availability:
        if self.options.mode == "unavailable":
            return Availability.no("injected: runtime not installed")
        return Availability.yes()

    def load(self, artifacts: Artifacts) -> None:
        self.model_dir = Path(artifacts.model_dir)
        self.calls = 0
        if self.options.mode == "raise_load":
            raise RuntimeError("injected fault: the runtime could not load the model")

    def _reference(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        if self.options.reference:
            path = Path(self.options.reference)
        else:  # results/models/<model>/hf -> results/reference/<model>/seq<S>_bs<B>.npz
            batch, seq = inputs["input_ids"].shape
            model = self.model_dir.parent.name
            path = self.model_dir.parents[2] / "reference" / model / f"seq{seq}_bs{batch}.npz"
        with np.load(path) as data:
            return data["output"].copy()

    def prepare_inputs(self, inputs: Mapping[str, np.ndarray]) -> Any:
        return inputs

    def run(self, prepared: Any) -> Any:
        mode = self.options.mode
        self.calls += 1
        if mode == "raise":
            raise RuntimeError("injected fault: kernel launch failed")
        if mode == "oom":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        if mode == "memory_error":
            raise MemoryError("injected: cannot allocate the activations")
        if mode == "segfault":
            ctypes.string_at(0)  # reads address 0: SIGSEGV, like a crashing runtime
        if mode == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer does
        if mode == "hang" and self.options.marker:
            marker = Path(self.options.marker)
            if marker.exists():
                Path(f"{marker}.started").write_text(str(os.getpid()))
            while marker.exists():
                time.sleep(0.05)
        output = self._reference(prepared)
        if mode == "nan":
            output[0, 0] = np.nan
        elif mode == "inf":
            output[-1, -1] = np.inf
        elif mode == "jitter" and self.calls % 3 == 0:
            time.sleep(0.005)  # every third call 5 ms slower: cv far above 0.3
        return output

    def to_host(self, outputs: Any) -> np.ndarray:
        return np.asarray(outputs)


@register
class WrongProviderOrt(OnnxRuntime):
    """ONNX Runtime asked for CUDA on a CPU-only install: it silently falls back."""

    kind = "fault-ort-provider"
    devices = frozenset({"cpu"})
    precisions = frozenset({"fp32"})

    @property
    def provider(self) -> str:
        return "CUDAExecutionProvider"

    def availability(self) -> Availability:
        return Availability.yes()


@register
class BuiltFault(FaultBackend):
    """A ``fault`` backend with an engine build: its engine file is hashed by the build
    rule and checked by the bench job."""

    kind = "fault-built"
    needs: ClassVar[frozenset[str]] = frozenset({"build"})

    def build(self, artifacts: Artifacts, out_dir: Path, batch_sizes: list[int], seq_len: int
              ) -> dict[str, Any]:
        if self.options.mode == "build_segfault":
            ctypes.string_at(0)  # a compiler or engine loader that crashes the process
        (out_dir / "engine.bin").write_bytes(os.urandom(4096))
        return {"engine": "engine.bin"}


def plugin_env(**extra: str) -> dict[str, str]:
    """Environment for a subprocess (a job, snakemake) that must see these backends."""
    tests = Path(__file__).resolve().parent
    paths = [str(tests.parent / "src"), str(tests), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "INFERBENCH_BACKEND_MODULES": "fault_backend",
            "PYTHONPATH": os.pathsep.join(p for p in paths if p), "HF_HUB_OFFLINE": "1",
            **extra}
