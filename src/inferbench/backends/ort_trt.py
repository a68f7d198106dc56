"""ONNX Runtime with the TensorRT execution provider, on the plain ONNX graph.

The build rule creates one session whose engine cache directory is the build folder
and runs every configured batch size once, so the engine for the optimization
profile (min/opt/max batch) is built there and its time is build time; the
benchmark's session finds it in the cache. The session lists the TensorRT provider
only (never the CUDA provider after it), disables the CPU fallback and ONNX
Runtime's own retry-with-other-providers, and is refused unless TensorRT is its
first provider: a TensorRT row can never run on another provider. Inputs and
outputs live in torch CUDA buffers bound once (IO binding, as in ``ort``), on a
dedicated non-default stream that CUDA events time.

FP16 and INT8 are the provider's flags. INT8 (implicit quantization) needs a
calibration table: the build writes one with ONNX Runtime's calibrator (MinMax,
symmetric, seeded synthetic token ids); layers without INT8 kernels run in FP16.
"""

from __future__ import annotations

import ctypes
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inferbench.backends.base import Artifacts, Availability, ShapeSupport
from inferbench.backends.ort import OPT_LEVELS, OnnxRuntime, check_session_provider, session_options
from inferbench.backends.registry import register
from inferbench.backends.trt import batch_profile, synthetic_batches
from inferbench.spec import BackendSpec, ConfigError

PROVIDER = "TensorrtExecutionProvider"
CALIBRATION_TABLE = "calibration.flatbuffers"
NVINFER_LIBRARIES = ("libnvinfer.so.10", "libnvinfer.so")


@dataclass(frozen=True)
class OrtTrtOptions:
    io_binding: bool = True
    # TensorRT EP CUDA graph capture (trt_cuda_graph_enable); needs IO binding.
    cuda_graph: bool = False
    # ONNX Runtime's own graph optimizations before partitioning ("basic" keeps the
    # graph free of contrib ops that TensorRT cannot take).
    graph_optimization_level: str = "basic"
    # Batch the engine's kernels are tuned for; 0 = the largest configured batch size.
    opt_batch: int = 0
    workspace_mib: int = 4096
    builder_optimization_level: int = 3
    timing_cache: bool = True
    # INT8 only: calibration batches of 8 synthetic sequences.
    calibration_batches: int = 8

    def __post_init__(self) -> None:
        if self.graph_optimization_level not in OPT_LEVELS:
            raise ValueError(f"graph_optimization_level must be one of {OPT_LEVELS}")
        if self.opt_batch < 0:
            raise ValueError("opt_batch must be >= 0 (0 = largest configured batch)")
        if self.workspace_mib < 1:
            raise ValueError("workspace_mib must be >= 1")
        if not 0 <= self.builder_optimization_level <= 5:
            raise ValueError("builder_optimization_level must be 0..5")
        if self.calibration_batches < 1:
            raise ValueError("calibration_batches must be >= 1")


# -- pure helpers (no onnxruntime, no TensorRT) ------------------------------------
def _shape_string(input_names: Sequence[str], batch: int, seq_len: int) -> str:
    return ",".join(f"{name}:{batch}x{seq_len}" for name in input_names)


def profile_shapes(input_names: Sequence[str], batch_sizes: Iterable[int], seq_len: int,
                   opt_batch: int = 0) -> dict[str, str]:
    """trt_profile_{min,opt,max}_shapes, e.g. ``input_ids:1x128,attention_mask:1x128``."""
    low, opt, high = batch_profile(batch_sizes, opt_batch)
    return {
        "trt_profile_min_shapes": _shape_string(input_names, low, seq_len),
        "trt_profile_opt_shapes": _shape_string(input_names, opt, seq_len),
        "trt_profile_max_shapes": _shape_string(input_names, high, seq_len),
    }


def _flag(value: bool) -> str:
    # The Python API parses TensorRT EP booleans as "True"/"False" only ("1" is an error).
    return "True" if value else "False"


def provider_options(options: OrtTrtOptions, precision: str, cache_dir: Path | str,
                     input_names: Sequence[str], batch_sizes: Iterable[int], seq_len: int,
                     device_id: int = 0, stream_handle: int | None = None,
                     int8_table: str | None = None) -> dict[str, str]:
    """TensorRT EP provider options for this backend's options and precision.

    Build and benchmark call this with the same arguments (the benchmark adds its
    stream), so the benchmark's session matches the cached engine.
    """
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"ort-trt precision must be fp32, fp16 or int8, not {precision!r}")
    if precision == "int8" and not int8_table:
        raise ValueError("INT8 on the TensorRT EP needs a calibration table")
    cache = str(cache_dir)
    opts = {
        "device_id": str(device_id),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": _flag(options.timing_cache),
        "trt_fp16_enable": _flag(precision in ("fp16", "int8")),
        "trt_int8_enable": _flag(precision == "int8"),
        "trt_max_workspace_size": str(options.workspace_mib * 2**20),
        "trt_builder_optimization_level": str(options.builder_optimization_level),
        **profile_shapes(input_names, batch_sizes, seq_len, options.opt_batch),
    }
    if options.timing_cache:
        opts["trt_timing_cache_path"] = cache
    if precision == "int8":
        # A file name, looked up in trt_engine_cache_path; ONNX Runtime's flatbuffers format.
        opts["trt_int8_calibration_table_name"] = str(int8_table)
        opts["trt_int8_use_native_calibration_table"] = "False"
    if options.cuda_graph:
        opts["trt_cuda_graph_enable"] = "True"
    if stream_handle is not None:
        if not stream_handle:
            raise ValueError("user_compute_stream must be a non-default stream (ONNX Runtime "
                             "ignores handle 0)")
        opts["user_compute_stream"] = str(stream_handle)
    return opts


def trt_providers(opts: Mapping[str, str]) -> list[tuple[str, dict[str, str]]]:
    """The session's provider list: TensorRT only, so nothing can silently take over."""
    return [(PROVIDER, dict(opts))]


def nvinfer_unavailable_reason() -> str | None:
    """None when a TensorRT 10 runtime library can be loaded into this process."""
    errors = []
    for name in NVINFER_LIBRARIES:
        try:
            ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
            return None
        except OSError as exc:
            errors.append(str(exc))
    try:
        # pip's tensorrt wheels keep the libraries in tensorrt_libs and preload them.
        import tensorrt_libs  # noqa: F401

        ctypes.CDLL(NVINFER_LIBRARIES[0], mode=ctypes.RTLD_GLOBAL)
        return None
    except (ImportError, OSError):
        pass
    return f"TensorRT library not loadable: {errors[0]}"


def ort_trt_unavailable_reason() -> str | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    from inferbench.measure.gpu import cuda_unavailable_reason

    reason = cuda_unavailable_reason()
    if reason:
        return reason
    available = ort.get_available_providers()
    if PROVIDER not in available:
        return (f"onnxruntime {ort.__version__} has no {PROVIDER} (available: "
                f"{', '.join(available)}); install onnxruntime-gpu")
    return nvinfer_unavailable_reason()


def engine_files(cache_dir: Path) -> dict[str, tuple[int, int]]:
    """Engine files in the cache with (size, mtime_ns), to tell a cache hit from a rebuild."""
    if not cache_dir.is_dir():
        return {}
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(cache_dir.iterdir()) if p.suffix == ".engine"}


def write_int8_calibration_table(onnx_path: Path, batches: list[dict[str, np.ndarray]],
                                 out_dir: Path, providers: Sequence[str]) -> dict[str, Any]:
    """ONNX Runtime calibration table for the TensorRT EP (symmetric MinMax ranges)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        create_calibrator,
        write_calibration_table,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".calibration-") as tmp:
        calibrator = create_calibrator(
            str(onnx_path), [], augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=CalibrationMethod.MinMax, extra_options={"symmetric": True})
        calibrator.set_execution_providers(list(providers))
        calibrator.collect_data(Reader())
        ranges = calibrator.compute_data()
        del calibrator
    data = getattr(ranges, "data", ranges)
    kept, dropped = {}, []
    for name, value in data.items():
        d = value.to_dict()
        bound = max(float(np.asarray(d.get("highest", 0.0)).max()),
                    float(np.asarray(d.get("lowest", 0.0)).max()))
        # Zero ranges and masking constants (float min) are no activation scale.
        if np.isfinite(bound) and 0.0 < bound < 1e30:
            kept[name] = value
        else:
            dropped.append(name)
    write_calibration_table(kept, dir=str(out_dir))
    return {"table": CALIBRATION_TABLE, "method": "MinMax symmetric",
            "data": "synthetic token ids", "batches": len(batches),
            "tensors": len(kept), "tensors_without_range": len(dropped)}


@register
class OrtTensorRT(OnnxRuntime):
    kind = "ort-trt"
    packages = ("onnxruntime-gpu", "tensorrt")
    devices = frozenset({"cuda"})
    precisions = frozenset({"fp32", "fp16", "int8"})
    Options = OrtTrtOptions
    needs = frozenset({"onnx", "build"})
    memory_owner = "nvml"

    @classmethod
    def check_spec(cls, spec: BackendSpec) -> None:
        super(OnnxRuntime, cls).check_spec(spec)  # the generic checks, not ort's CPU/CUDA rules
        options = cls.parse_options(spec)
        if options.cuda_graph and not options.io_binding:
            raise ConfigError("cuda_graph needs io_binding (ONNX Runtime replays bound buffers)")

    @classmethod
    def shape_support(cls, spec: BackendSpec) -> ShapeSupport:
        if cls.parse_options(spec).cuda_graph:
            return ShapeSupport("seq_len", "largest", "CUDA graph replays one bound shape")
        return ShapeSupport("seq_len", "built", "TensorRT profiles fix seq_len (batch range only)")

    @classmethod
    def onnx_variant(cls, spec: BackendSpec) -> str:
        return "plain"

    @property
    def provider(self) -> str:
        return PROVIDER

    def availability(self) -> Availability:
        reason = ort_trt_unavailable_reason()
        return Availability.no(reason) if reason else Availability.yes()

    @staticmethod
    def _preload() -> Any:
        import importlib

        importlib.import_module("torch")  # first: its CUDA libraries are the ones to share
        import onnxruntime as ort

        if hasattr(ort, "preload_dlls"):
            # CUDA/cuDNN of the installed nvidia-* wheels, as for the CUDA EP in ``ort``.
            ort.preload_dlls()
        return ort

    def _session(self, onnx_path: Path, opts: Mapping[str, str]) -> Any:
        ort = self._preload()
        options = session_options(self.threads, self.options.graph_optimization_level)
        options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        # enable_fallback=0: no retry on other providers when the TensorRT EP fails.
        session = ort.InferenceSession(str(onnx_path), options, providers=trt_providers(opts),
                                       enable_fallback=0)
        check_session_provider(session, PROVIDER)
        return session

    def _options(self, cache_dir: Path, card: Mapping[str, Any], batch_sizes: list[int],
                 seq_len: int, stream_handle: int | None, int8_table: str | None
                 ) -> dict[str, str]:
        return provider_options(self.options, self.spec.precision, cache_dir,
                                list(card["input_names"]), batch_sizes, seq_len,
                                stream_handle=stream_handle, int8_table=int8_table)

    def build(self, artifacts: Artifacts, out_dir: Path, batch_sizes: list[int], seq_len: int
              ) -> dict[str, Any]:
        import time

        ort = self._preload()
        if artifacts.onnx is None:
            raise RuntimeError("ort-trt needs the plain ONNX graph")
        calibration = None
        if self.spec.precision == "int8":
            cal_providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                             if p in ort.get_available_providers()]
            batches = synthetic_batches(artifacts.card, seq_len, 8,
                                        self.options.calibration_batches)
            calibration = write_int8_calibration_table(artifacts.onnx, batches, out_dir,
                                                       cal_providers)
        table = calibration["table"] if calibration else None
        opts = self._options(out_dir, artifacts.card, batch_sizes, seq_len, None, table)
        start = time.perf_counter()
        session = self._session(artifacts.onnx, opts)
        session_s = time.perf_counter() - start
        runs = {}
        for batch in sorted(set(batch_sizes)):
            feed = synthetic_batches(artifacts.card, seq_len, batch, 1)[0]
            start = time.perf_counter()
            session.run(["output"], feed)
            runs[str(batch)] = time.perf_counter() - start
        providers = session.get_providers()
        del session
        engines = engine_files(out_dir)
        if not engines:
            raise RuntimeError(f"the TensorRT EP wrote no engine into {out_dir}")
        low, opt, high = batch_profile(batch_sizes, self.options.opt_batch)
        return {
            "onnxruntime": ort.__version__,
            "providers": providers,
            "seq_len": seq_len,
            "profile": {"min_batch": low, "opt_batch": opt, "max_batch": high},
            "provider_options": {k: v for k, v in opts.items()
                                 if k not in ("trt_engine_cache_path", "trt_timing_cache_path")},
            "engine_cache": sorted(engines),
            "session_create_s": session_s,
            "first_run_s": runs,
            "int8_calibration": calibration,
        }

    def load(self, artifacts: Artifacts) -> None:
        import torch

        if artifacts.onnx is None or artifacts.build is None:
            raise RuntimeError("ort-trt needs the plain ONNX graph and its engine build")
        manifest = artifacts.build_manifest
        self.torch = torch
        # A dedicated stream: ONNX Runtime ignores the default stream's handle (0).
        self.stream = torch.cuda.Stream()
        self.cache_dir = Path(artifacts.build)
        calibration = manifest.get("int8_calibration") or {}
        opts = self._options(self.cache_dir, artifacts.card, list(manifest["batch_sizes"]),
                             int(manifest["seq_len"]), self.stream.cuda_stream,
                             calibration.get("table"))
        before = engine_files(self.cache_dir)
        self.session = self._session(artifacts.onnx, opts)
        self.engines_at_load = engine_files(self.cache_dir)
        if self.engines_at_load != before:
            # Build time must never count as load time: the cache missed.
            raise RuntimeError(
                f"the TensorRT EP rebuilt its engine at load instead of using the cache in "
                f"{self.cache_dir} (engines before: {sorted(before)}, after: "
                f"{sorted(self.engines_at_load)}); delete that folder and rerun to rebuild")
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.binding: Any = None

    def details(self) -> dict[str, Any]:
        import onnxruntime as ort

        options = self.session.get_provider_options().get(PROVIDER, {})
        return {"providers": self.session.get_providers(), "onnxruntime": ort.__version__,
                "graph": "plain", "io_binding": self.options.io_binding,
                "cuda_graph": self.options.cuda_graph,
                "graph_optimization_level": self.options.graph_optimization_level,
                "trt_fp16_enable": options.get("trt_fp16_enable"),
                "trt_int8_enable": options.get("trt_int8_enable"),
                "tf32": "TensorRT default (the TensorRT EP has no TF32 switch)",
                "engine_cache": {"engines": sorted(self.engines_at_load),
                                 # An engine written after the session loaded the cache
                                 # (e.g. built at the first run instead): not a cache hit.
                                 "changed_since_load":
                                     engine_files(self.cache_dir) != self.engines_at_load},
                "stream": "dedicated non-default torch stream"}
