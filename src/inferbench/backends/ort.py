"""ONNX Runtime with the CPU or CUDA execution provider.

The session is refused when ONNX Runtime would run it on another provider than the
one requested (it falls back silently otherwise). On CUDA, inputs and outputs live
in device buffers bound once (IO binding), and ONNX Runtime launches on torch's
dedicated non-default stream, where CUDA events time its kernels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from inferbench.backends.base import (
    Artifacts,
    Availability,
    Backend,
    DeviceTimer,
    ShapeSupport,
)
from inferbench.backends.registry import register
from inferbench.prepare.calibration import ACTIVATIONS, FORMATS, static_variant
from inferbench.spec import BackendSpec, ConfigError

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
OPT_LEVELS = ("disable", "basic", "extended", "all")
# The CUDA EP's `sdpa_kernel` bitmask (onnxruntime contrib_ops attention_common.h,
# AttentionBackend): which fused attention kernels its Attention ops may pick. The
# unfused (math) path always stays allowed as the fallback.
ATTENTION_KERNELS = {"flash": 1, "efficient": 2, "trt-fused": 4, "cudnn-flash": 8, "math": 16}


@dataclass(frozen=True)
class OrtOptions:
    graph: str = "plain"
    graph_optimization_level: str = "all"
    io_binding: bool = True
    cuda_graph: bool = False
    # Transformer optimizer choices (fused graphs only; each makes its own ONNX file):
    # GELU as its tanh approximation (FastGelu), and the raw 2-D attention mask for the
    # Attention ops instead of 1-D sequence lengths (the BERT default).
    fast_gelu: bool = False
    raw_attention_mask: bool = False
    # CUDA EP: TunableOp (benchmarks the candidate kernels of tunable ops on first use,
    # during warm-up) and which attention kernels the Attention ops may use ("default":
    # ONNX Runtime's choice).
    tunable_op: bool = False
    tunable_op_max_tuning_ms: int = 0
    attention_kernel: str = "default"
    # INT8 on the CPU: "dynamic" (activation scales measured per call) or "static"
    # (scales calibrated ahead on the workflow's inputs, see `calibration:`), the
    # static graph's format (QDQ or QOperator) and its activation type (u8: VNNI's
    # U8 x S8 dot product; s8 was 2-10x slower on x86).
    quantization: str = "dynamic"
    quant_format: str = "qdq"
    activations: str = "u8"

    def __post_init__(self) -> None:
        if self.graph not in ("plain", "fused"):
            raise ValueError(f"graph must be 'plain' (exported) or 'fused' (transformer "
                             f"optimizer), not {self.graph!r}")
        if self.graph_optimization_level not in OPT_LEVELS:
            raise ValueError(f"graph_optimization_level must be one of {OPT_LEVELS}")
        allowed = ("default", *ATTENTION_KERNELS)
        if self.attention_kernel not in allowed:
            raise ValueError(f"attention_kernel must be one of {allowed}, "
                             f"not {self.attention_kernel!r}")
        if self.tunable_op_max_tuning_ms < 0:
            raise ValueError("tunable_op_max_tuning_ms must be >= 0 (0: no limit)")
        if self.quantization not in ("dynamic", "static"):
            raise ValueError(f"quantization must be 'dynamic' or 'static', not "
                             f"{self.quantization!r}")
        if self.quant_format not in FORMATS:
            raise ValueError(f"quant_format must be one of {FORMATS}, not {self.quant_format!r}")
        if self.activations not in ACTIVATIONS:
            raise ValueError(f"activations must be one of {ACTIVATIONS}, "
                             f"not {self.activations!r}")

    def optimizer_tuning(self) -> tuple[str, ...]:
        """Transformer-optimizer tokens of this row's ONNX variant (see onnx_tools)."""
        return tuple(token for token, on in (("fastgelu", self.fast_gelu),
                                              ("rawmask", self.raw_attention_mask)) if on)


def runs_tf32(device: str, precision: str, provider_options: dict[str, str]) -> bool:
    """Whether FP32 GEMMs run on TF32 tensor cores: the CUDA EP's default unless its
    ``use_tf32`` option is 0 (the row's peak is then the TF32 one)."""
    return device == "cuda" and precision == "fp32" and \
        str(provider_options.get("use_tf32", "1")) != "0"


def cuda_provider_options(options: OrtOptions, stream_handle: int | None) -> dict[str, str]:
    """CUDA EP provider options of one row (strings, as the Python API wants)."""
    provider = {"device_id": "0"}
    if stream_handle is not None:
        provider["user_compute_stream"] = str(stream_handle)
    if options.cuda_graph:
        provider["enable_cuda_graph"] = "1"
    if options.tunable_op:
        provider["tunable_op_enable"] = "1"
        provider["tunable_op_tuning_enable"] = "1"
        if options.tunable_op_max_tuning_ms:
            provider["tunable_op_max_tuning_duration_ms"] = str(options.tunable_op_max_tuning_ms)
    if options.attention_kernel != "default":
        provider["sdpa_kernel"] = str(ATTENTION_KERNELS[options.attention_kernel])
    return provider


def check_session_provider(session: Any, requested: str) -> None:
    """Fail unless the created session's first provider is the requested one."""
    actual = session.get_providers()
    if not actual or actual[0] != requested:
        raise RuntimeError(f"ONNX Runtime created the session on {actual} instead of "
                           f"{requested}: refusing a silent fallback")


def bf16_matmul_probe() -> str | None:
    """Why ONNX Runtime's CPU execution provider cannot run a BF16 MatMul (None when it
    can): a one-node BF16 graph, created as a session."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    node = helper.make_node("MatMul", ["a", "b"], ["c"])
    graph = helper.make_graph(
        [node], "bf16_matmul",
        [helper.make_tensor_value_info("a", TensorProto.BFLOAT16, [2, 2]),
         helper.make_tensor_value_info("b", TensorProto.BFLOAT16, [2, 2])],
        [helper.make_tensor_value_info("c", TensorProto.BFLOAT16, [2, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, onnx.IR_VERSION)
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:
        return str(exc).strip().splitlines()[0][:300]
    return None


def cpu_bf16_unavailable_reason() -> str:
    """Why an ONNX Runtime BF16 row does not run on this CPU."""
    import onnxruntime as ort

    from inferbench import isa

    missing = isa.detect().bf16_missing_reason()
    if missing:
        return missing
    refusal = bf16_matmul_probe()
    if refusal:
        return (f"onnxruntime {ort.__version__}: the CPU execution provider has no BF16 "
                f"kernels for the GEMMs (x86 MLAS has no BF16 path; BF16 fast math is an "
                f"Arm64 option): {refusal}")
    return (f"onnxruntime {ort.__version__} runs a BF16 MatMul on the CPU, but inferbench "
            "makes no BF16 ONNX graph yet")


def session_options(threads: int, level: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    return options


@register
class OnnxRuntime(Backend):
    kind = "ort"
    packages = ("onnxruntime", "onnxruntime-gpu")
    devices = frozenset({"cpu", "cuda"})
    precisions = frozenset({"fp32", "fp16", "bf16", "int8"})
    Options: ClassVar[type] = OrtOptions
    needs = frozenset({"onnx"})
    memory_owner = "nvml"

    @classmethod
    def check_spec(cls, spec: BackendSpec) -> None:
        super().check_spec(spec)
        options = cls.parse_options(spec)
        if spec.precision == "fp16" and (spec.device != "cuda" or options.graph != "fused"):
            raise ConfigError("precision 'fp16' needs device 'cuda' and graph 'fused' "
                              "(the FP16 graph comes from the transformer optimizer)")
        if spec.precision == "int8" and spec.device != "cpu":
            raise ConfigError("precision 'int8' (dynamic quantization) runs on device 'cpu'")
        if spec.precision == "bf16" and spec.device != "cpu":
            raise ConfigError("precision 'bf16' is a CPU row of 'ort' (AVX512_BF16 / AMX)")
        static_only = [name for name, value, default in (
            ("quantization", options.quantization, "dynamic"),
            ("quant_format", options.quant_format, "qdq"),
            ("activations", options.activations, "u8")) if value != default]
        if static_only and spec.precision != "int8":
            raise ConfigError(f"{', '.join(static_only)} choose the INT8 graph: they need "
                              "precision 'int8'")
        if options.quantization == "dynamic" and static_only:
            raise ConfigError("quant_format and activations are settings of static INT8: "
                              "they need quantization 'static'")
        if options.cuda_graph and spec.device != "cuda":
            raise ConfigError("cuda_graph needs device 'cuda'")
        if options.optimizer_tuning() and (options.graph != "fused"
                                           or spec.precision == "int8"):
            raise ConfigError("fast_gelu and raw_attention_mask are transformer-optimizer "
                              "choices: they need graph 'fused' and precision fp32 or fp16")
        cuda_only = [name for name, on in (("tunable_op", options.tunable_op),
                                           ("attention_kernel",
                                            options.attention_kernel != "default")) if on]
        if cuda_only and spec.device != "cuda":
            raise ConfigError(f"{', '.join(cuda_only)} are CUDA EP options: they need "
                              "device 'cuda'")

    @classmethod
    def shape_support(cls, spec: BackendSpec) -> ShapeSupport:
        if cls.parse_options(spec).cuda_graph:
            return ShapeSupport("seq_len", "largest", "ONNX Runtime's CUDA graph replays the one "
                                "shape bound first")
        return ShapeSupport()

    @classmethod
    def onnx_variant(cls, spec: BackendSpec) -> str:
        options = cls.parse_options(spec)
        graph = options.graph
        if spec.precision == "int8" and options.quantization == "static":
            return static_variant(graph, options.quant_format, options.activations)
        # BF16 rows read the FP32 graph: availability refuses them before it is loaded
        base = {"fp32": graph, "bf16": graph, "int8": f"{graph}-int8",
                "fp16": f"{graph}-fp16"}[spec.precision]
        from inferbench.prepare.onnx import tuned_variant

        return tuned_variant(base, options.optimizer_tuning())

    def loaded_shape_support(self) -> ShapeSupport:
        support = super().loaded_shape_support()
        length = self.session.get_inputs()[0].shape[1]
        if support.lengths != "seq_len" and isinstance(length, int):
            return ShapeSupport("seq_len", support.batches,
                                f"runs an ONNX graph of fixed sequence length {length} "
                                "(export.dynamic_sequence makes the axis dynamic)")
        return support

    @property
    def provider(self) -> str:
        return PROVIDERS[self.spec.device]

    def availability(self) -> Availability:
        try:
            import onnxruntime as ort
        except ImportError:
            return Availability.no("onnxruntime is not installed")
        if self.spec.device == "cuda":
            from inferbench.measure.gpu import cuda_unavailable_reason

            reason = cuda_unavailable_reason()
            if reason:
                return Availability.no(reason)
        if self.provider not in ort.get_available_providers():
            return Availability.no(
                f"onnxruntime {ort.__version__} has no {self.provider} "
                f"(available: {', '.join(ort.get_available_providers())}); "
                "install onnxruntime-gpu for CUDA")
        if self.spec.precision == "bf16":
            return Availability.no(cpu_bf16_unavailable_reason())
        return Availability.yes()

    def _provider_options(self) -> dict[str, str]:
        if self.spec.device != "cuda":
            return {}
        import onnxruntime as ort
        import torch

        # Load the CUDA/cuDNN libraries of the installed nvidia-* wheels (the ones
        # torch uses) before the CUDA EP looks for them.
        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()
        self.torch = torch
        # A stream of our own: ONNX Runtime reads the default stream's handle (0) as
        # "no user stream" and would run on a stream of its own, which events on the
        # current stream do not bracket.
        self.stream = torch.cuda.Stream()
        return cuda_provider_options(self.options, self.stream.cuda_stream)

    def load(self, artifacts: Artifacts) -> None:
        import onnxruntime as ort

        assert artifacts.onnx is not None
        options = session_options(self.threads, self.options.graph_optimization_level)
        # The CUDA EP places shape arithmetic on the CPU by design, so CPU fallback
        # stays allowed here; a different *first* provider still fails the row, and
        # CUDA graph capture itself refuses any node outside the CUDA EP.
        self.session = ort.InferenceSession(
            str(artifacts.onnx), options,
            providers=[(self.provider, self._provider_options())])
        check_session_provider(self.session, self.provider)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.binding: Any = None
        self.bound_shape: tuple[int, ...] = ()

    def _bind(self, inputs: Mapping[str, np.ndarray]) -> None:
        """Allocate device buffers once; CUDA graph replay needs fixed addresses."""
        torch = self.torch
        with torch.cuda.stream(self.stream):
            self.device_inputs = {n: torch.from_numpy(inputs[n]).to("cuda")
                                  for n in self.input_names}
        batch = next(iter(inputs.values())).shape[0]
        out_meta = self.session.get_outputs()[0]
        width = self._output_width(inputs, batch, out_meta)
        with torch.cuda.stream(self.stream):
            self.device_output = torch.empty((batch, width), dtype=torch.float32,
                                             device="cuda")
        binding = self.session.io_binding()
        for name, tensor in self.device_inputs.items():
            binding.bind_input(name, "cuda", 0, np.int64, tuple(tensor.shape), tensor.data_ptr())
        binding.bind_output("output", "cuda", 0, np.float32, tuple(self.device_output.shape),
                            self.device_output.data_ptr())
        self.binding = binding

    def _output_width(self, inputs: Mapping[str, np.ndarray], batch: int, meta: Any) -> int:
        width = meta.shape[-1]
        if isinstance(width, int):
            return width
        # Symbolic width: one CPU-side run of the bound session tells it.
        feed = {n: inputs[n] for n in self.input_names}
        return int(self.session.run(["output"], feed)[0].shape[-1])

    def prepare_inputs(self, inputs: Mapping[str, np.ndarray]) -> Any:
        if self.spec.device == "cpu" or not self.options.io_binding:
            return {name: inputs[name] for name in self.input_names}
        shape = next(iter(inputs.values())).shape
        if self.binding is None or (not self.options.cuda_graph
                                    and shape != self.bound_shape):
            # Serving sends batches of varying shapes; a CUDA graph keeps its first one.
            self._bind(inputs)
            self.bound_shape = shape
        with self.torch.cuda.stream(self.stream):
            for name, tensor in self.device_inputs.items():
                tensor.copy_(self.torch.from_numpy(inputs[name]), non_blocking=False)
        return self.binding

    def run(self, prepared: Any) -> Any:
        if isinstance(prepared, dict):
            return self.session.run(["output"], prepared)[0]
        self.session.run_with_iobinding(prepared)
        return self.device_output

    def to_host(self, outputs: Any) -> np.ndarray:
        if isinstance(outputs, np.ndarray):
            return outputs
        # the copy runs on the current stream: order it after the session's stream
        self.torch.cuda.current_stream().wait_stream(self.stream)
        return outputs.cpu().numpy()

    def synchronize(self) -> None:
        if self.spec.device == "cuda":
            self.torch.cuda.synchronize()

    def device_timer(self) -> DeviceTimer | None:
        if self.spec.device != "cuda":
            return None
        from inferbench.measure.gpu import CudaEventTimer

        return CudaEventTimer(self.stream)

    def details(self) -> dict[str, Any]:
        import onnxruntime as ort

        provider_options = self.session.get_provider_options().get(self.provider, {}) \
            if self.spec.device == "cuda" else {}
        return {"providers": self.session.get_providers(), "onnxruntime": ort.__version__,
                "graph": self.options.graph, "io_binding": self.options.io_binding,
                "cuda_graph": self.options.cuda_graph,
                "graph_optimization_level": self.options.graph_optimization_level,
                "optimizer_tuning": list(self.options.optimizer_tuning()),
                "tunable_op": self.options.tunable_op,
                "attention_kernel": self.options.attention_kernel,
                **({"quantization": self.options.quantization,
                    **({"quant_format": self.options.quant_format,
                        "activations": self.options.activations}
                       if self.options.quantization == "static" else {})}
                   if self.spec.precision == "int8" else {}),
                "provider_options": provider_options,
                "tf32": runs_tf32(self.spec.device, self.spec.precision, provider_options)}
