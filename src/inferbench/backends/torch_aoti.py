"""PyTorch AOTInductor: the output wrapper exported and compiled ahead of time.

The build rule exports the wrapper with ``torch.export`` (a dynamic batch dimension
covering the configured batch sizes), compiles it with
``torch._inductor.aoti_compile_and_package`` into ``model.pt2`` in the build folder
and checks the package against the eager module on one batch. The benchmark loads
that file with ``torch._inductor.aoti_load_package``: compilation time is build
time, never latency. On the CPU the compiled kernels use the thread count set at
build time (the config's ``threads``).

The package's C++ wrapper is compiled with the compiler named by ``cxx`` (default:
``g++`` found on PATH), not Inductor's default, which is ``$CXX``: on the H100 machine
``$CXX`` was a wrapper script around the same GCC 13.3 with its own assembler and
linker driver (``-B/opt/gcc/bin``), and every package it built crashed the process that
loaded it (SIGSEGV in the package loader, torch 2.11.0+cu130, an MLP as much as
DistilBERT); the same packages built with ``/usr/bin/g++`` loaded and matched eager
(scripts/aoti_repro.py shows it).
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inferbench.backends.base import Artifacts, ShapeSupport
from inferbench.backends.registry import register
from inferbench.backends.torch_cuda_graph import GraphReplay
from inferbench.backends.torch_eager import DTYPES, TorchEager, check_attn_implementation
from inferbench.spec import BackendSpec, ConfigError

PACKAGE_FILE = "model.pt2"


@dataclass(frozen=True)
class AotiOptions:
    attn_implementation: str = "sdpa"
    tf32: bool = False
    # Inductor's autotuning of GEMM/conv templates: slower build, sometimes faster kernels.
    max_autotune: bool = False
    # Replay the compiled model from a CUDA graph captured per batch shape: removes
    # the per-kernel launch cost that dominates small batches.
    cuda_graph: bool = False
    # Load the package without the runner's thread synchronisation (PyTorch's advice
    # for running a package inside CUDA graphs). None: on exactly when cuda_graph is.
    run_single_threaded: bool | None = None
    # C++ compiler of the package (a name on PATH or a path); "" keeps Inductor's
    # default ($CXX, else g++).
    cxx: str = "g++"

    def single_threaded(self) -> bool:
        return self.cuda_graph if self.run_single_threaded is None else self.run_single_threaded

    def __post_init__(self) -> None:
        check_attn_implementation(self.attn_implementation)


def batch_dim_range(batch_sizes: list[int]) -> tuple[int, int] | None:
    """(min, max) of the dynamic batch dimension; None when only one batch size is run."""
    sizes = sorted({int(b) for b in batch_sizes})
    if not sizes or sizes[0] < 1:
        raise ValueError(f"batch sizes must be positive integers, got {batch_sizes}")
    return (sizes[0], sizes[-1]) if len(sizes) > 1 else None


def example_batch(batch_sizes: list[int]) -> int:
    """Batch of the export example: not 1 (torch.export specialises size-1 dimensions)."""
    dims = batch_dim_range(batch_sizes)
    if dims is None:
        return int(batch_sizes[0])
    low, high = dims
    return min(max(low, 2), high)


def use_compiler(inductor_config: Any, cxx: str) -> dict[str, str | None]:
    """Make Inductor compile C++ with ``cxx`` ("" leaves its default); returns which
    compiler that is (path and first line of --version) for the build manifest."""
    if cxx:
        inductor_config.cpp.cxx = (None, cxx)
        os.environ["CXX"] = cxx  # for any compile Inductor hands to a subprocess
    name = inductor_config.cpp.cxx[-1] if isinstance(inductor_config.cpp.cxx, tuple) \
        else str(inductor_config.cpp.cxx)
    path = shutil.which(name) if name else None
    version = None
    if path:
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True,
                                 timeout=30, check=False)
            version = (out.stdout.splitlines() or [""])[0]
        except (OSError, subprocess.SubprocessError):
            version = None
    return {"requested": cxx or "(Inductor default)", "path": path, "version": version}


def load_package(torch: Any, package: Path, run_single_threaded: bool) -> Any:
    """torch._inductor.aoti_load_package, asking for the single-threaded runner only
    when wanted (older torch has no such argument)."""
    # torch 2.10 regressed on loading a package in a process that never compiled one
    # (AttributeError: torch._inductor has no attribute 'codecache'): import it first.
    importlib.import_module("torch._inductor.codecache")

    if run_single_threaded:
        return torch._inductor.aoti_load_package(str(package), run_single_threaded=True)
    return torch._inductor.aoti_load_package(str(package))


@register
class TorchAoti(GraphReplay, TorchEager):
    kind = "torch-aoti"
    devices = frozenset({"cpu", "cuda"})
    precisions = frozenset({"fp32", "fp16", "bf16"})
    Options = AotiOptions
    needs = frozenset({"build"})

    @classmethod
    def shape_support(cls, spec: BackendSpec) -> ShapeSupport:
        return ShapeSupport("seq_len", "built", "package exported at seq_len (only the batch "
                            "dimension is dynamic)")

    @classmethod
    def check_spec(cls, spec: BackendSpec) -> None:
        super().check_spec(spec)
        if spec.device == "cpu" and cls.parse_options(spec).cuda_graph:
            raise ConfigError(f"cuda_graph needs device 'cuda' for {cls.kind}")

    @classmethod
    def crash_hint(cls) -> str:
        from importlib import metadata

        try:
            version = metadata.version("torch")
        except metadata.PackageNotFoundError:
            version = "?"
        return (f"torch {version}; on an H100 with torch 2.11.0+cu130 packages compiled by "
                "a $CXX wrapper (-B/opt/gcc/bin) crashed their loader while g++ from PATH "
                "worked: check the build's cxx; python3 scripts/aoti_repro.py reproduces it")

    def _example_inputs(self, card: Mapping[str, Any], batch: int, seq_len: int) -> tuple:
        from inferbench.backends.trt import synthetic_batches

        arrays = synthetic_batches(card, seq_len, batch, 1)[0]
        return tuple(self.torch.from_numpy(arrays[name]).to(self.spec.device)
                     for name in card["input_names"])

    def build(self, artifacts: Artifacts, out_dir: Path, batch_sizes: list[int], seq_len: int
              ) -> dict[str, Any]:
        torch = self.torch = self._configure_torch()
        dtype = getattr(torch, DTYPES[self.spec.precision])
        module = self.load_module(artifacts).to(device=self.spec.device, dtype=dtype).eval()
        names = list(artifacts.card["input_names"])
        example = self._example_inputs(artifacts.card, example_batch(batch_sizes), seq_len)
        dims = batch_dim_range(batch_sizes)
        dynamic_shapes = None
        if dims is not None:
            batch = torch.export.Dim("batch", min=dims[0], max=dims[1])
            # forward(*args): the spec of the one variadic argument, a tuple per input.
            dynamic_shapes = (tuple({0: batch} for _ in names),)
        with torch.no_grad():
            exported = torch.export.export(module, example, dynamic_shapes=dynamic_shapes)
        package = out_dir / PACKAGE_FILE
        import torch._inductor.config as inductor_config

        compiler = use_compiler(inductor_config, self.options.cxx)
        inductor_configs = {"max_autotune": self.options.max_autotune}
        torch._inductor.aoti_compile_and_package(exported, package_path=str(package),
                                                 inductor_configs=inductor_configs)

        # No load of the package here: the bench job loads it in a fresh process and
        # checks parity against the FP32 reference on every row.
        return {
            "cxx": compiler,
            "package": PACKAGE_FILE,
            "torch": torch.__version__,
            "device": self.spec.device,
            "precision": self.spec.precision,
            "dynamic_batch": {"min": dims[0], "max": dims[1]} if dims else None,
            "example_batch": example_batch(batch_sizes),
            "seq_len": seq_len,
            "threads": self.threads,
            "build_options": {"max_autotune": self.options.max_autotune, "cxx": self.options.cxx,
                              "attn_implementation": self.options.attn_implementation,
                              "tf32": self.options.tf32},
        }

    def load(self, artifacts: Artifacts) -> None:
        torch = self._configure_torch()
        manifest = artifacts.build_manifest
        if artifacts.build is None:
            raise RuntimeError("torch-aoti needs its package build")
        built_with = manifest.get("torch")
        if built_with and built_with != torch.__version__:
            raise RuntimeError(f"package was compiled with torch {built_with}, this is "
                               f"{torch.__version__}: rebuild it (delete its build.json)")
        # Absolute path: the loader extracts the archive elsewhere.
        package = (Path(artifacts.build) / manifest.get("package", PACKAGE_FILE)).resolve()
        self.input_names = list(artifacts.card["input_names"])
        self.module = load_package(torch, package, self.options.single_threaded())
        self.package = package
        self.torch = torch
        if self.options.cuda_graph:
            self.init_graphs()

    def prepare_inputs(self, inputs: Mapping[str, np.ndarray]) -> Any:
        if self.options.cuda_graph:
            return self.graph_prepare_inputs(inputs)
        return super().prepare_inputs(inputs)

    def run(self, prepared: Any) -> Any:
        if self.options.cuda_graph:
            return self.graph_run(prepared)
        return super().run(prepared)

    def details(self) -> dict[str, Any]:
        return {**super().details(), "package": self.package.name,
                "max_autotune": self.options.max_autotune, "cuda_graph": self.options.cuda_graph,
                "run_single_threaded": self.options.single_threaded()}
