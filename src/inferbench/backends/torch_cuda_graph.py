"""PyTorch on CUDA with the model captured once per batch shape as a CUDA graph.

The model is loaded like ``torch-eager``. On the first inputs of a shape, static
device buffers are allocated, the model is warmed up on a side stream (cuBLAS
handles, autotuning and lazy allocations happen outside the capture) and one
``torch.cuda.CUDAGraph`` is captured; ``prepare_inputs`` copies host arrays into the
static buffers and ``run`` replays the graph on the current stream, where the CUDA
events of the device timer are recorded. The capture happens in the first
(cold-start) inference, never in the timed loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from inferbench.backends.base import Artifacts, ShapeSupport
from inferbench.backends.registry import register
from inferbench.backends.torch_eager import TorchEager, check_attn_implementation
from inferbench.spec import BackendSpec


@dataclass(frozen=True)
class CudaGraphOptions:
    attn_implementation: str = "sdpa"
    tf32: bool = False
    # Eager iterations on a side stream before the capture.
    capture_warmup: int = 3

    def __post_init__(self) -> None:
        check_attn_implementation(self.attn_implementation)
        if self.capture_warmup < 1:
            raise ValueError("capture_warmup must be >= 1")


@dataclass
class _Captured:
    graph: Any
    inputs: list[Any]
    output: Any


class GraphReplay:
    """Capture ``self.module`` once per input shape in a CUDA graph, then replay it.

    Shared by backends whose module is a plain callable on device tensors (eager
    torch, an AOTInductor package). Needs ``module``, ``input_names``, ``torch``.
    """

    capture_warmup: int = 3
    # provided by the backend class this is mixed into
    torch: Any
    input_names: list[str]
    module: Any

    def init_graphs(self) -> None:
        self.captured: dict[tuple[tuple[int, ...], ...], _Captured] = {}
        # One memory pool for every captured shape of this model.
        self.pool = self.torch.cuda.graph_pool_handle()

    def _capture(self, inputs: Mapping[str, np.ndarray]) -> _Captured:
        torch = self.torch
        static = [torch.from_numpy(np.ascontiguousarray(inputs[name])).to("cuda")
                  for name in self.input_names]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(self.capture_warmup):
                self.module(*static)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph, pool=self.pool):
            output = self.module(*static)
        torch.cuda.synchronize()
        return _Captured(graph, static, output)

    def graph_prepare_inputs(self, inputs: Mapping[str, np.ndarray]) -> _Captured:
        key = tuple(tuple(inputs[name].shape) for name in self.input_names)
        captured = self.captured.get(key)
        if captured is None:
            captured = self.captured[key] = self._capture(inputs)
        for buffer, name in zip(captured.inputs, self.input_names, strict=True):
            buffer.copy_(self.torch.from_numpy(inputs[name]), non_blocking=False)
        return captured

    @staticmethod
    def graph_run(prepared: _Captured) -> Any:
        prepared.graph.replay()
        # The static output is overwritten by the next replay; to_host copies it out.
        return prepared.output


@register
class TorchCudaGraph(GraphReplay, TorchEager):
    kind = "torch-cuda-graph"
    devices = frozenset({"cuda"})
    precisions = frozenset({"fp32", "fp16", "bf16"})
    Options = CudaGraphOptions

    @classmethod
    def shape_support(cls, spec: BackendSpec) -> ShapeSupport:
        return ShapeSupport("few", "built", "captures one CUDA graph per input shape")

    def load(self, artifacts: Artifacts) -> None:
        super().load(artifacts)
        self.module.eval()
        self.capture_warmup = self.options.capture_warmup
        self.init_graphs()

    def prepare_inputs(self, inputs: Mapping[str, np.ndarray]) -> Any:
        return self.graph_prepare_inputs(inputs)

    def run(self, prepared: Any) -> Any:
        return self.graph_run(prepared)

    def details(self) -> dict[str, Any]:
        return {**super().details(), "cuda_graph": True,
                "captured_shapes": [list(map(list, key)) for key in self.captured],
                "capture_warmup": self.options.capture_warmup}
