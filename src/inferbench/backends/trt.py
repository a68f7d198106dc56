"""Native TensorRT (TensorRT 10 Python API): an engine built from the plain ONNX graph.

The build rule parses the ONNX file with ``trt.OnnxParser``, builds one optimization
profile covering the configured batch range (opt = the largest batch unless
``opt_batch`` says otherwise) and writes ``model.engine``. The runner deserializes
it, binds torch CUDA buffers to every I/O tensor and calls ``execute_async_v3`` on a
dedicated non-default torch stream (TensorRT adds synchronisation on the legacy
default stream); CUDA events on that stream time it.

FP16 and INT8 are builder flags. INT8 is implicit quantization calibrated at build
time (MinMax calibrator on seeded synthetic token ids); layers without an INT8
kernel run in FP16. The pure helpers at the top (batch range, profile shapes,
precision flags, calibration inputs) need no TensorRT and are unit-tested.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inferbench.backends.base import (
    Artifacts,
    Availability,
    Backend,
    DeviceTimer,
    ShapeSupport,
)
from inferbench.backends.registry import register
from inferbench.spec import BackendSpec

ENGINE_FILE = "model.engine"
CALIBRATION_CACHE = "calibration.cache"
# trt.DataType member name -> torch dtype name
TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT32": "int32",
                "INT64": "int64", "INT8": "int8", "UINT8": "uint8", "BOOL": "bool"}


# -- pure helpers (no TensorRT) ------------------------------------------------
def batch_profile(batch_sizes: Iterable[int], opt_batch: int = 0) -> tuple[int, int, int]:
    """(min, opt, max) batch of the optimization profile; opt defaults to the largest."""
    sizes = sorted({int(b) for b in batch_sizes})
    if not sizes or sizes[0] < 1:
        raise ValueError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    low, high = sizes[0], sizes[-1]
    opt = int(opt_batch) or high
    if not low <= opt <= high:
        raise ValueError(f"opt_batch {opt} is outside the configured batch range {low}..{high}")
    return low, opt, high


def profile_dims(input_names: Sequence[str], batch_sizes: Iterable[int], seq_len: int,
                 opt_batch: int = 0) -> dict[str, tuple[tuple[int, int], ...]]:
    """Per input: ((min_batch, seq), (opt_batch, seq), (max_batch, seq))."""
    low, opt, high = batch_profile(batch_sizes, opt_batch)
    return {name: ((low, seq_len), (opt, seq_len), (high, seq_len)) for name in input_names}


def precision_flags(precision: str, tf32: bool = False) -> tuple[list[str], list[str]]:
    """(flags to set, flags to clear) on the builder config, as ``trt.BuilderFlag`` names.

    TensorRT enables TF32 for FP32 layers by default; like torch here, FP32 means
    true FP32 unless ``tf32`` is asked for. INT8 also sets FP16 so that layers
    without an INT8 kernel fall back to FP16 rather than FP32 (trtexec --int8 --fp16).
    """
    flags = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8", "FP16"]}
    if precision not in flags:
        raise ValueError(f"TensorRT precision must be fp32, fp16 or int8, not {precision!r}")
    if tf32:
        return [*flags[precision], "TF32"], []
    return list(flags[precision]), ["TF32"]


def synthetic_batches(card: Mapping[str, Any], seq_len: int, batch: int, count: int,
                      seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Seeded token ids with varied lengths (padded after), for calibration and engine warm-up.

    Same scheme as the synthetic benchmark inputs, from another seed stream so that
    calibration never sees the measured batch.
    """
    rng = np.random.default_rng([seed, seq_len, batch, count, 7])
    vocab = int(card["vocab_size"])
    low = min(1000, vocab // 2)
    pad = int(card.get("pad_token_id") or 0)
    batches = []
    for _ in range(count):
        ids = rng.integers(low, vocab, size=(batch, seq_len), dtype=np.int64)
        lengths = rng.integers(max(1, seq_len // 2), seq_len + 1, size=batch)
        mask = (np.arange(seq_len)[None, :] < lengths[:, None]).astype(np.int64)
        ids = np.where(mask == 1, ids, pad).astype(np.int64)
        arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        batches.append({name: arrays[name] for name in card["input_names"]})
    return batches


def tensorrt_unavailable_reason() -> str | None:
    """None when the tensorrt Python package (and its libraries) load on a CUDA machine."""
    from inferbench.measure.gpu import cuda_unavailable_reason

    reason = cuda_unavailable_reason()
    if reason:
        return reason
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"TensorRT library not loadable: {exc}"
    return None


# -- backend ---------------------------------------------------------------------
@dataclass(frozen=True)
class TrtOptions:
    workspace_mib: int = 4096
    # Batch the kernels are tuned for; 0 = the largest configured batch size.
    opt_batch: int = 0
    builder_optimization_level: int = 3
    # TF32 for FP32 layers (TensorRT's default is on; off here unless asked for).
    tf32: bool = False
    # INT8 only: calibration batches (of the opt batch size) of synthetic token ids.
    calibration_batches: int = 8

    def __post_init__(self) -> None:
        if self.workspace_mib < 1:
            raise ValueError("workspace_mib must be >= 1")
        if self.opt_batch < 0:
            raise ValueError("opt_batch must be >= 0 (0 = largest configured batch)")
        if not 0 <= self.builder_optimization_level <= 5:
            raise ValueError("builder_optimization_level must be 0..5")
        if self.calibration_batches < 1:
            raise ValueError("calibration_batches must be >= 1")


def _make_calibrator(trt: Any, torch: Any, batches: list[dict[str, Any]], cache_path: Path
                     ) -> Any:
    """MinMax calibrator (TensorRT's recommendation for NLP) over device-resident batches."""

    class Calibrator(trt.IInt8MinMaxCalibrator):
        def __init__(self) -> None:
            trt.IInt8MinMaxCalibrator.__init__(self)
            self.batches = batches
            self.index = 0

        def get_batch_size(self) -> int:
            return int(next(iter(batches[0].values())).shape[0])

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.index >= len(self.batches):
                return None
            current = self.batches[self.index]
            self.index += 1
            torch.cuda.synchronize()
            return [int(current[name].data_ptr()) for name in names]

        def read_calibration_cache(self) -> Any:
            return None  # always calibrate: the build rule reruns only when inputs change

        def write_calibration_cache(self, cache: Any) -> None:
            with open(cache_path, "wb") as fh:
                fh.write(cache)

    return Calibrator()


@register
class TensorRT(Backend):
    kind = "trt"
    packages = ("tensorrt", "torch")
    devices = frozenset({"cuda"})
    precisions = frozenset({"fp32", "fp16", "int8"})
    Options = TrtOptions
    needs = frozenset({"onnx", "build"})
    memory_owner = "nvml"

    @classmethod
    def shape_support(cls, spec: BackendSpec) -> ShapeSupport:
        return ShapeSupport("seq_len", "built", "engine profiles fix seq_len (batch range only)")

    @classmethod
    def onnx_variant(cls, spec: BackendSpec) -> str:
        return "plain"

    def availability(self) -> Availability:
        reason = tensorrt_unavailable_reason()
        return Availability.no(reason) if reason else Availability.yes()

    @staticmethod
    def _torch_dtype(torch: Any, trt_dtype: Any) -> Any:
        name = getattr(trt_dtype, "name", str(trt_dtype).split(".")[-1])
        if name not in TORCH_DTYPES:
            raise RuntimeError(f"TensorRT tensor type {name} has no torch equivalent here")
        return getattr(torch, TORCH_DTYPES[name])

    # -- build -----------------------------------------------------------------
    def build(self, artifacts: Artifacts, out_dir: Path, batch_sizes: list[int], seq_len: int
              ) -> dict[str, Any]:
        import tensorrt as trt
        import torch

        from inferbench.io import atomic_path

        if artifacts.onnx is None:
            raise RuntimeError("trt needs the plain ONNX graph")
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(artifacts.onnx)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise RuntimeError("TensorRT ONNX parser failed on "
                               f"{artifacts.onnx.name}: {'; '.join(errors) or 'no detail'}")

        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE,
                                     self.options.workspace_mib * 2**20)
        config.builder_optimization_level = self.options.builder_optimization_level
        set_flags, clear_flags = precision_flags(self.spec.precision, self.options.tf32)
        for name in set_flags:
            config.set_flag(getattr(trt.BuilderFlag, name))
        for name in clear_flags:
            config.clear_flag(getattr(trt.BuilderFlag, name))

        inputs = [network.get_input(i) for i in range(network.num_inputs)]
        dims = profile_dims([t.name for t in inputs], batch_sizes, seq_len,
                            self.options.opt_batch)
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in dims.items():
            profile.set_shape(name, low, opt, high)
        config.add_optimization_profile(profile)

        calibration: dict[str, Any] | None = None
        calibrator = None
        if self.spec.precision == "int8":
            if not hasattr(trt, "IInt8MinMaxCalibrator"):
                raise RuntimeError(f"TensorRT {trt.__version__} has no implicit-quantization "
                                   "calibrator; INT8 needs a Q/DQ (explicitly quantized) model")
            opt_batch = batch_profile(batch_sizes, self.options.opt_batch)[1]
            host = synthetic_batches(artifacts.card, seq_len, opt_batch,
                                     self.options.calibration_batches)
            dtypes = {t.name: self._torch_dtype(torch, t.dtype) for t in inputs}
            device_batches = [{n: torch.from_numpy(a[n]).to("cuda", dtypes[n]) for n in dtypes}
                              for a in host]
            calibrator = _make_calibrator(trt, torch, device_batches, out_dir / CALIBRATION_CACHE)
            config.int8_calibrator = calibrator
            if hasattr(config, "set_calibration_profile"):
                config.set_calibration_profile(profile)
            calibration = {"calibrator": "IInt8MinMaxCalibrator", "data": "synthetic token ids",
                           "batches": len(host), "batch_size": opt_batch}

        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError("TensorRT build_serialized_network returned None "
                               "(the builder log above says why)")
        with atomic_path(out_dir / ENGINE_FILE) as tmp, open(tmp, "wb") as fh:
            fh.write(serialized)
        del calibrator
        return {
            "engine": ENGINE_FILE,
            "tensorrt": trt.__version__,
            "gpu": torch.cuda.get_device_name(),
            "precision": self.spec.precision,
            "builder_flags": set_flags,
            "cleared_builder_flags": clear_flags,
            "profile": {name: {"min": list(low), "opt": list(opt), "max": list(high)}
                        for name, (low, opt, high) in dims.items()},
            "workspace_mib": self.options.workspace_mib,
            "builder_optimization_level": self.options.builder_optimization_level,
            "int8_calibration": calibration,
            "seq_len": seq_len,
        }

    # -- runner ----------------------------------------------------------------
    def load(self, artifacts: Artifacts) -> None:
        import tensorrt as trt
        import torch

        manifest = artifacts.build_manifest
        built_with = manifest.get("tensorrt")
        if built_with and built_with != trt.__version__:
            raise RuntimeError(f"engine was built with TensorRT {built_with}, this is "
                               f"{trt.__version__}: rebuild it (delete its build.json)")
        if artifacts.build is None:
            raise RuntimeError("trt needs its engine build")
        engine_path = Path(artifacts.build) / manifest.get("engine", ENGINE_FILE)
        self.trt, self.torch = trt, torch
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {engine_path}")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise RuntimeError("TensorRT could not create an execution context")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names
                       if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names
                        if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        missing = set(self.inputs) - set(artifacts.card["input_names"])
        if missing:
            raise RuntimeError(f"engine inputs {sorted(missing)} are not model inputs")
        self.stream = torch.cuda.Stream()
        self.buffers: dict[str, Any] = {}
        self.bound_shapes: tuple[tuple[int, ...], ...] | None = None
        self.output_name = "output" if "output" in self.outputs else self.outputs[0]

    def _allocate(self, inputs: Mapping[str, np.ndarray]) -> None:
        """Device buffers for one set of input shapes; addresses bound once."""
        torch, engine, context = self.torch, self.engine, self.context
        buffers = {}
        for name in self.inputs:
            shape = tuple(int(d) for d in inputs[name].shape)
            dtype = self._torch_dtype(torch, engine.get_tensor_dtype(name))
            buffers[name] = torch.empty(shape, device="cuda", dtype=dtype)
            if not context.set_input_shape(name, shape):
                raise RuntimeError(f"input {name} shape {shape} is outside the engine's "
                                   "optimization profile")
        for name in self.outputs:
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise RuntimeError(f"output {name} shape {shape} is unresolved")
            dtype = self._torch_dtype(torch, engine.get_tensor_dtype(name))
            buffers[name] = torch.empty(shape, device="cuda", dtype=dtype)
        for name, tensor in buffers.items():
            if not context.set_tensor_address(name, tensor.data_ptr()):
                raise RuntimeError(f"TensorRT refused the address of {name}")
        self.buffers = buffers
        self.bound_shapes = tuple(tuple(inputs[n].shape) for n in self.inputs)

    def prepare_inputs(self, inputs: Mapping[str, np.ndarray]) -> Any:
        if self.bound_shapes != tuple(tuple(inputs[n].shape) for n in self.inputs):
            self._allocate(inputs)
        for name in self.inputs:
            # Synchronous host-to-device copy (with a cast where the engine takes int32).
            self.buffers[name].copy_(self.torch.from_numpy(inputs[name]))
        return self.buffers

    def run(self, prepared: Any) -> Any:
        self.stream.wait_stream(self.torch.cuda.current_stream())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        return prepared[self.output_name]

    def to_host(self, outputs: Any) -> np.ndarray:
        self.torch.cuda.current_stream().wait_stream(self.stream)
        return outputs.float().cpu().numpy()

    def synchronize(self) -> None:
        self.torch.cuda.synchronize()

    def device_timer(self) -> DeviceTimer | None:
        from inferbench.measure.gpu import CudaEventTimer

        return CudaEventTimer(self.stream)

    def details(self) -> dict[str, Any]:
        return {"tensorrt": self.trt.__version__, "engine": ENGINE_FILE,
                "io_tensors": {"inputs": self.inputs, "outputs": self.outputs},
                "stream": "dedicated non-default torch stream",
                "builder_flags": precision_flags(self.spec.precision, self.options.tf32)[0],
                "opt_batch": self.options.opt_batch or "largest configured"}
