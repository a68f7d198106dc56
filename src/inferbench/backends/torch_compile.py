"""PyTorch ``torch.compile`` (Inductor) with its cache directory as the build artifact.

The build rule compiles the output wrapper once per configured batch size with
``TORCHINDUCTOR_CACHE_DIR`` pointing into the build folder, so Inductor's FX-graph
and autotuning caches land there. The benchmark job points Inductor at the same
folder and compiles again: Dynamo re-traces, Inductor hits its cache, and that
time is cold start (load), never latency. ``mode="reduce-overhead"`` adds CUDA
graphs on CUDA; ``max-autotune`` adds GEMM autotuning to them, and
``coordinate_descent_tuning`` / ``freezing`` are Inductor's own knobs for inference
(tuned Triton launch configs; weights folded in as constants). Shapes are static per
batch. This is the compiled-engine path that worked where an AOTInductor package
crashed its loader (torch 2.11 on the H100).

Subclasses change the module before it is compiled (``transform``) and the dtype it is
loaded in (``module_dtype``): the torchao backends quantize it there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inferbench.backends.base import Artifacts, ShapeSupport, Unsupported
from inferbench.backends.registry import register
from inferbench.backends.torch_eager import DTYPES, TorchEager, check_attn_implementation
from inferbench.spec import BackendSpec, ConfigError

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Modes whose compiled model replays CUDA graphs (on CUDA).
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
CACHE_SUBDIR = "inductor_cache"


@dataclass(frozen=True)
class CompileOptions:
    attn_implementation: str = "sdpa"
    tf32: bool = False
    mode: str = "reduce-overhead"
    # Inductor: tune each Triton kernel's launch config by coordinate descent
    # (None: Inductor's default, or what torchao's recommended settings chose).
    coordinate_descent_tuning: bool | None = None
    # Inductor: fold weights into the graph as constants (inference only).
    freezing: bool | None = None

    def __post_init__(self) -> None:
        check_attn_implementation(self.attn_implementation)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")

    def inductor_config(self) -> dict[str, bool]:
        """torch._inductor.config settings these options set (None: left as they are)."""
        values = {"coordinate_descent_tuning": self.coordinate_descent_tuning,
                  "freezing": self.freezing}
        return {key: value for key, value in values.items() if value is not None}


def effective_inductor_config() -> dict[str, Any]:
    """The Inductor settings that shape the compiled kernels, as they are now."""
    import torch._inductor.config as inductor_config

    return {"coordinate_descent_tuning": bool(inductor_config.coordinate_descent_tuning),
            "freezing": bool(inductor_config.freezing),
            "max_autotune": bool(inductor_config.max_autotune)}


def use_cache_dir(build_dir: Path) -> Path:
    """Point Inductor's on-disk caches at the build folder (read at compile time)."""
    cache = Path(build_dir) / CACHE_SUBDIR
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
    os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] = "1"
    return cache


@register
class TorchCompile(TorchEager):
    kind = "torch-compile"
    devices = frozenset({"cpu", "cuda"})
    precisions = frozenset({"fp32", "fp16", "bf16"})
    Options = CompileOptions
    needs = frozenset({"build"})

    @classmethod
    def shape_support(cls, spec: BackendSpec) -> ShapeSupport:
        return ShapeSupport("seq_len", "built", "compiled with static shapes at seq_len for "
                            "its batch sizes (another shape recompiles)")

    @classmethod
    def check_spec(cls, spec: BackendSpec) -> None:
        super().check_spec(spec)
        options = cls.parse_options(spec)
        if spec.device == "cpu" and options.mode == "reduce-overhead":
            raise ConfigError("mode 'reduce-overhead' (CUDA graphs) needs device 'cuda'; "
                              "use mode 'default' on the CPU")

    def module_dtype(self) -> str:
        """torch dtype name the model is loaded in before ``transform``."""
        return DTYPES[self.spec.precision]

    def transform(self, module: Any) -> Any:
        """Change the module on its device before it is compiled (none here)."""
        return module

    def unsupported_reason(self, exc: BaseException) -> str | None:
        """Why ``exc`` means "not supported here" rather than a failure (None: it does
        not); subclasses recognise their runtime's refusals."""
        return None

    def _guarded(self, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except Unsupported:
            raise
        except Exception as exc:
            reason = self.unsupported_reason(exc)
            if reason is None:
                raise
            raise Unsupported(reason) from exc

    def uses_cuda_graphs(self) -> bool:
        return self.spec.device == "cuda" and self.options.mode in CUDA_GRAPH_MODES

    def _compiled(self, artifacts: Artifacts) -> Any:
        torch = self.torch = self._configure_torch()
        dtype = getattr(torch, self.module_dtype())
        module = self.load_module(artifacts).to(device=self.spec.device, dtype=dtype).eval()
        module = self.transform(module)
        import torch._inductor.config as inductor_config

        for key, value in self.options.inductor_config().items():
            setattr(inductor_config, key, value)
        # One graph per batch size (dynamic=False): the shapes a job runs are static.
        return torch.compile(module, mode=self.options.mode, dynamic=False, fullgraph=True)

    def _run_once(self, compiled: Any, card: Mapping[str, Any], batch: int, seq_len: int
                  ) -> None:
        from inferbench.backends.trt import synthetic_batches

        arrays = synthetic_batches(card, seq_len, batch, 1)[0]
        tensors = [self.torch.from_numpy(arrays[n]).to(self.spec.device)
                   for n in card["input_names"]]
        with self.torch.inference_mode():
            for _ in range(3):  # reduce-overhead records its CUDA graph on a later call
                if self.uses_cuda_graphs():
                    self.torch.compiler.cudagraph_mark_step_begin()
                compiled(*tensors)
        self.synchronize()

    def build(self, artifacts: Artifacts, out_dir: Path, batch_sizes: list[int], seq_len: int
              ) -> dict[str, Any]:
        cache = use_cache_dir(out_dir)
        compiled = self._compiled(artifacts)
        unsupported: dict[str, str] = {}
        for batch in sorted(batch_sizes):
            try:
                self._guarded(self._run_once, compiled, artifacts.card, batch, seq_len)
            except Unsupported as exc:
                # That batch's benchmark job reports it as unavailable; the others run.
                unsupported[str(batch)] = str(exc)
        return {"cache_dir": CACHE_SUBDIR, "unhashed": [CACHE_SUBDIR],
                "torch": self.torch.__version__,
                "mode": self.options.mode, "batch_sizes": sorted(batch_sizes),
                "inductor_config": effective_inductor_config(),
                "unsupported_batches": unsupported,
                "cache_files": sum(1 for p in cache.rglob("*") if p.is_file())}

    def load(self, artifacts: Artifacts) -> None:
        if artifacts.build is None:
            raise RuntimeError("torch-compile needs its build (the Inductor cache)")
        built_with = artifacts.build_manifest.get("torch")
        use_cache_dir(Path(artifacts.build))
        self.input_names = list(artifacts.card["input_names"])
        self.unsupported = dict(artifacts.build_manifest.get("unsupported_batches") or {})
        self.module = self._compiled(artifacts)
        if built_with and built_with != self.torch.__version__:
            raise RuntimeError(f"cache was built with torch {built_with}, this is "
                               f"{self.torch.__version__}: rebuild it")

    def prepare_inputs(self, inputs: Mapping[str, np.ndarray]) -> Any:
        batch = str(next(iter(inputs.values())).shape[0])
        if batch in getattr(self, "unsupported", {}):
            raise Unsupported(f"{self.unsupported[batch]} (batch {batch}, found by the build)")
        if self.uses_cuda_graphs():
            # CUDA-graph trees own their output buffers until the next step.
            self.torch.compiler.cudagraph_mark_step_begin()
        return super().prepare_inputs(inputs)

    def run(self, prepared: Any) -> Any:
        return self._guarded(super().run, prepared)

    def details(self) -> dict[str, Any]:
        return {**super().details(), "mode": self.options.mode, "compiler": "inductor",
                "cuda_graphs": self.uses_cuda_graphs(), **effective_inductor_config()}
