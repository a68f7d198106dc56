"""OpenVINO on the CPU: FP32, BF16, and INT8 through NNCF post-training quantization.

The build rule turns the workflow's ONNX export into an OpenVINO IR (``model.xml`` /
``model.bin``, weights kept in FP32); for INT8 it first runs NNCF's post-training
quantization with the transformer preset (``model_type=TRANSFORMER``: SmoothQuant and
the attention patterns NNCF leaves in floating point), calibrated on the workflow's
own inputs (``calibration:``). The IR is the build's cached artifact; the benchmark
job compiles it for the CPU with ``threads`` inference threads and, by default, one
stream, the latency hint and static shapes (the input shape of the job).

OpenVINO chooses its own precision: with no hint it runs BF16 on a CPU with
AVX512_BF16 or AMX, so an "FP32" row would silently measure BF16. Every row therefore
sets the inference precision hint explicitly (``f32`` for FP32 rows; for the layers an
INT8 model keeps in floating point, ``float_precision``), reads back the precision the
compiled model runs (``INFERENCE_PRECISION_HINT`` of the compiled model) and refuses
the row when it differs, as ONNX Runtime rows refuse a provider fallback. An INT8
model whose compiled graph runs no INT8 operation is refused the same way.

Every setting is an option of ``OpenVinoOptions`` (documented there and in
docs/cpu_frontier.md, with the interleaved measurement of each on an AVX-512 VNNI +
AVX512_BF16 CPU). The NNCF ones are the build's (``BUILD_OPTIONS``: changing one
requantizes); the compile ones are only the benchmark jobs'.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from inferbench.backends.base import Artifacts, Availability, Backend
from inferbench.backends.registry import register
from inferbench.spec import BackendSpec, ConfigError

OPENVINO_PIN = "openvino==2026.4.1"
NNCF_PIN = "nncf==3.4.0"
NNCF_MISSING = (f"nncf is not installed (install {NNCF_PIN}; OpenVINO INT8 is NNCF "
                "post-training quantization)")
IR_FILE = "model.xml"
# Row precision -> OpenVINO inference precision (element type names).
HINTS = {"fp32": "f32", "bf16": "bf16"}
# float_precision of INT8 rows: HINTS' keys, or "auto" (bf16 where the CPU has
# AVX512_BF16 or AMX-BF16, else fp32: OpenVINO's own choice, made explicit and checked).
FLOAT_PRECISIONS = (*HINTS, "auto")
PRESETS = ("mixed", "performance")
PERFORMANCE_HINTS = ("latency", "throughput")
INT8_TYPES = ("u8", "i8")
SDPA = "ScaledDotProductAttention"
# The options NNCF's quantization reads: the only ones the build rule's params carry.
BUILD_OPTIONS = ("preset", "smooth_quant", "smooth_quant_alpha", "fast_bias_correction",
                 "quantize_attention")


def _check_bool(name: str, value: Any, none_ok: bool = False) -> None:
    if not (isinstance(value, bool) or (none_ok and value is None)):
        allowed = "true, false or null" if none_ok else "true or false"
        raise ValueError(f"{name} must be {allowed}, not {value!r}")


@dataclass(frozen=True)
class OpenVinoOptions:
    # -- compile settings (the benchmark job; changing one reruns the row, not the build)
    # Precision of the operations left in floating point: the row's precision for
    # FP32/BF16 rows; for INT8 rows those NNCF did not quantize: "fp32" (the default),
    # "bf16", or "auto" (bf16 where the CPU has AVX512_BF16 or AMX-BF16, else fp32).
    # Whatever it resolves to is set as the hint and checked against the compiled model.
    float_precision: str = ""
    # Compile for the job's input shape (batch x seq); false keeps the dynamic batch.
    static_shapes: bool = True
    # PERFORMANCE_HINT: "latency" or "throughput" (OpenVINO's stream and thread
    # defaults for each; NUM_STREAMS and the thread count below are set explicitly).
    performance_hint: str = "latency"
    # NUM_STREAMS: more than 1 splits the threads across streams, which only pays with
    # concurrent requests (the latency and throughput views send one at a time).
    num_streams: int = 1
    # ENABLE_CPU_PINNING: true/false, or null for OpenVINO's default.
    cpu_pinning: bool | None = None
    # -- NNCF settings (INT8 builds only; changing one requantizes) ---------------------
    # "mixed" (symmetric weights, asymmetric activations: the transformer default) or
    # "performance" (symmetric both).
    preset: str = "mixed"
    # SmoothQuant migrates activation outliers into the weights before quantizing
    # (part of the transformer preset); false turns it off.
    smooth_quant: bool = True
    # SmoothQuant's alpha for MatMuls, 0 < alpha <= 1; null keeps NNCF's default.
    smooth_quant_alpha: float | None = None
    # NNCF's fast bias correction (false: the slower full bias correction).
    fast_bias_correction: bool = True
    # Quantize the inputs of the attention matmuls (Q and K into OpenVINO's
    # ScaledDotProductAttention); false leaves them in floating point.
    quantize_attention: bool = True

    def __post_init__(self) -> None:
        if self.float_precision not in ("", *FLOAT_PRECISIONS):
            raise ValueError(f"float_precision must be one of {list(FLOAT_PRECISIONS)}, "
                             f"not {self.float_precision!r}")
        _check_bool("static_shapes", self.static_shapes)
        if self.performance_hint not in PERFORMANCE_HINTS:
            raise ValueError(f"performance_hint must be one of {list(PERFORMANCE_HINTS)}, "
                             f"not {self.performance_hint!r}")
        if (isinstance(self.num_streams, bool) or not isinstance(self.num_streams, int)
                or self.num_streams < 1):
            raise ValueError(f"num_streams must be an integer >= 1, not {self.num_streams!r}")
        _check_bool("cpu_pinning", self.cpu_pinning, none_ok=True)
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}, not {self.preset!r}")
        for name in ("smooth_quant", "fast_bias_correction", "quantize_attention"):
            _check_bool(name, getattr(self, name))
        alpha = self.smooth_quant_alpha
        if alpha is not None:
            if isinstance(alpha, bool) or not isinstance(alpha, int | float) \
                    or not 0 < alpha <= 1:
                raise ValueError(f"smooth_quant_alpha must be a number in (0, 1] or null, "
                                 f"not {alpha!r}")
            if not self.smooth_quant:
                raise ValueError("smooth_quant_alpha needs smooth_quant: true")


def type_name(value: Any) -> str:
    """"f32" for ov.Type.f32 (or its string form)."""
    getter = getattr(value, "get_type_name", None)
    return str(getter() if callable(getter) else value).lower()


def runtime_precisions(compiled: Any) -> dict[str, int]:
    """Operations of the compiled (executable) graph per runtime precision."""
    counts: Counter[str] = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        try:
            value = op.get_rt_info()["runtimePrecision"]
        except (KeyError, IndexError, RuntimeError):
            continue
        text = value.astype(str) if hasattr(value, "astype") else value
        counts[str(text).lower()] += 1
    return dict(sorted(counts.items()))


def count_fake_quantize(model: Any) -> int:
    return sum(1 for op in model.get_ops() if op.get_type_name() == "FakeQuantize")


@register
class OpenVino(Backend):
    kind = "openvino"
    packages = ("openvino", "nncf")
    devices = frozenset({"cpu"})
    precisions = frozenset({"fp32", "bf16", "int8"})
    Options: ClassVar[type] = OpenVinoOptions
    needs = frozenset({"onnx", "build"})

    @classmethod
    def check_spec(cls, spec: BackendSpec) -> None:
        super().check_spec(spec)
        options = cls.parse_options(spec)
        if spec.precision != "int8":
            if options.float_precision not in ("", spec.precision):
                raise ConfigError(f"float_precision {options.float_precision!r} contradicts "
                                  f"precision {spec.precision!r}: it only chooses the float "
                                  "layers of an INT8 row")
            defaults = OpenVinoOptions()
            nncf_set = [k for k in BUILD_OPTIONS if getattr(options, k) != getattr(defaults, k)]
            if nncf_set:
                raise ConfigError(f"{', '.join(nncf_set)}: NNCF settings "
                                  f"({', '.join(BUILD_OPTIONS)}) need precision 'int8'")

    @classmethod
    def build_spec(cls, spec: BackendSpec) -> BackendSpec:
        # The IR depends on the NNCF settings only: the compile settings are read by the
        # benchmark jobs, so changing them never requantizes.
        return replace(spec, options={k: v for k, v in spec.options.items()
                                      if k in BUILD_OPTIONS})

    @classmethod
    def onnx_variant(cls, spec: BackendSpec) -> str:
        return "plain"

    @classmethod
    def calibrated(cls, spec: BackendSpec) -> bool:
        return spec.precision == "int8"

    @property
    def float_precision(self) -> str:
        """Precision of the operations run in floating point ("fp32" or "bf16"): the
        row's own for FP32/BF16 rows; for INT8 rows ``float_precision`` resolved."""
        if self.spec.precision != "int8":
            return self.spec.precision
        choice = self.options.float_precision or "fp32"
        if choice == "auto":
            from inferbench import isa

            return "bf16" if isa.detect().bf16 else "fp32"
        return str(choice)

    @property
    def hint(self) -> str:
        """The inference precision this row requests (and must get)."""
        return HINTS[self.float_precision]

    def availability(self) -> Availability:
        try:
            import openvino as ov
        except ImportError:
            return Availability.no(f"openvino is not installed (install {OPENVINO_PIN})")
        except Exception as exc:
            return Availability.no(f"openvino does not import: {type(exc).__name__}: {exc}"
                                   [:300])
        # NNCF made the INT8 IR at build time (build_availability imports it); a run
        # only reads the IR, so here its presence is checked without importing it,
        # which takes about 2.8 s.
        if self.spec.precision == "int8" and importlib.util.find_spec("nncf") is None:
            return Availability.no(NNCF_MISSING)
        if self.hint == "bf16":
            from inferbench import isa

            missing = isa.detect().bf16_missing_reason()
            if missing:
                return Availability.no(missing)
        devices = ov.Core().available_devices
        if "CPU" not in devices:
            return Availability.no(f"openvino {ov.__version__} sees no CPU device "
                                   f"(devices: {devices})")
        return Availability.yes()

    def build_availability(self) -> Availability:
        found = self.availability()
        if not found.ok or self.spec.precision != "int8":
            return found
        try:
            import nncf  # noqa: F401
        except ImportError:
            return Availability.no(NNCF_MISSING)
        except Exception as exc:
            return Availability.no(f"nncf does not import: {type(exc).__name__}: {exc}"[:300])
        return found

    # -- build: the IR, quantized for INT8 ------------------------------------------
    def build(self, artifacts: Artifacts, out_dir: Path, batch_sizes: list[int], seq_len: int
              ) -> dict[str, Any]:
        import openvino as ov

        if artifacts.onnx is None:
            raise RuntimeError("openvino needs the workflow's ONNX export")
        model = ov.convert_model(str(artifacts.onnx))
        manifest: dict[str, Any] = {"openvino": ov.__version__, "ir": IR_FILE,
                                    "source_onnx": artifacts.onnx.name}
        if self.spec.precision == "int8":
            model, facts = self._quantize(model, artifacts)
            manifest.update(facts)
        # Weights stay FP32 in the IR: the precision is the compiled model's choice,
        # which each row sets and checks.
        ov.save_model(model, str(out_dir / IR_FILE), compress_to_fp16=False)
        return manifest

    def _quantize(self, model: Any, artifacts: Artifacts) -> tuple[Any, dict[str, Any]]:
        import nncf

        from inferbench.prepare.calibration import calibration_batches, calibration_settings

        if artifacts.calibration is None:
            raise RuntimeError("OpenVINO INT8 needs the calibration inputs")
        settings = calibration_settings(artifacts.calibration_settings)
        names = [port.get_any_name() for port in model.inputs]
        # One sequence per item: NNCF's statistics assume batch 1.
        items = calibration_batches(artifacts.calibration, 1, names)
        options = self.options
        # SmoothQuant is part of the transformer preset; alpha -1 turns it off.
        alpha = -1.0 if not options.smooth_quant else options.smooth_quant_alpha
        advanced = None if alpha is None else nncf.AdvancedQuantizationParameters(
            smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(matmul=alpha))
        preset = (nncf.QuantizationPreset.MIXED if options.preset == "mixed"
                  else nncf.QuantizationPreset.PERFORMANCE)
        ignored = None
        if not options.quantize_attention:
            if not any(op.get_type_name() == SDPA for op in model.get_ops()):
                raise RuntimeError("quantize_attention: false needs the attention as "
                                   f"OpenVINO's {SDPA}, and this graph has none")
            ignored = nncf.IgnoredScope(types=[SDPA])
        quantized = nncf.quantize(model, nncf.Dataset(items), preset=preset,
                                  model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=max(1, len(items)),
                                  fast_bias_correction=options.fast_bias_correction,
                                  ignored_scope=ignored, advanced_parameters=advanced)
        fake_quantize = count_fake_quantize(quantized)
        if fake_quantize == 0:
            raise RuntimeError("NNCF inserted no FakeQuantize operation: nothing is INT8")
        return quantized, {"nncf": nncf.__version__, "quantization": {
            "method": "NNCF post-training quantization", "model_type": "TRANSFORMER",
            **{k: getattr(options, k) for k in BUILD_OPTIONS},
            "fake_quantize_ops": fake_quantize,
            "calibration": {**settings, "sequences": len(items),
                            "inputs": artifacts.calibration.name}}}

    # -- run ----------------------------------------------------------------------------
    def load(self, artifacts: Artifacts) -> None:
        import openvino as ov

        if artifacts.build is None:
            raise RuntimeError("openvino needs its build (the IR)")
        self.ov = ov
        self.core = ov.Core()
        self.model = self.core.read_model(str(Path(artifacts.build) / IR_FILE))
        self.input_names = [port.get_any_name() for port in self.model.inputs]
        self.compiled: Any = None
        self.shape: tuple[tuple[int, ...], ...] | None = None
        if not self.options.static_shapes:
            self._compile()

    def compile_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "INFERENCE_NUM_THREADS": self.threads, "NUM_STREAMS": self.options.num_streams,
            "PERFORMANCE_HINT": self.options.performance_hint.upper(),
            "INFERENCE_PRECISION_HINT": self.hint}
        if self.options.cpu_pinning is not None:
            config["ENABLE_CPU_PINNING"] = self.options.cpu_pinning
        return config

    def _compile(self) -> None:
        self.compiled = self.core.compile_model(self.model, "CPU", self.compile_config())
        self.runs_as = type_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        if self.runs_as != self.hint:
            raise RuntimeError(
                f"OpenVINO compiled the model to run in {self.runs_as} although "
                f"{self.hint} was requested: refusing a silent precision fallback")
        self.op_precisions = runtime_precisions(self.compiled)
        if self.spec.precision == "int8" and not any(
                self.op_precisions.get(t) for t in INT8_TYPES):
            raise RuntimeError(f"the compiled INT8 model runs no INT8 operation "
                               f"(runtime precisions {self.op_precisions})")
        self.request = self.compiled.create_infer_request()

    def prepare_inputs(self, inputs: Mapping[str, np.ndarray]) -> Any:
        arrays = {name: np.ascontiguousarray(inputs[name]) for name in self.input_names}
        if self.options.static_shapes:
            shape = tuple(arrays[name].shape for name in self.input_names)
            if shape != self.shape:
                # Static shapes per job: compiled once, on the job's first call.
                self.model.reshape({name: list(arrays[name].shape)
                                    for name in self.input_names})
                self._compile()
                self.shape = shape
        return arrays

    def run(self, prepared: Any) -> Any:
        return self.request.infer(prepared, share_inputs=True)

    def to_host(self, outputs: Any) -> np.ndarray:
        return np.asarray(outputs.to_tuple()[0], dtype=np.float32)

    def details(self) -> dict[str, Any]:
        info: dict[str, Any] = {"openvino": self.ov.__version__, "device": "CPU",
                                "requested_precision": self.hint,
                                "float_precision": self.float_precision,
                                "static_shapes": self.options.static_shapes,
                                "performance_hint": self.options.performance_hint}
        if self.compiled is not None:
            info.update(
                runs_as=self.runs_as,
                inference_num_threads=int(self.compiled.get_property("INFERENCE_NUM_THREADS")),
                num_streams=str(self.compiled.get_property("NUM_STREAMS")),
                cpu_pinning=bool(self.compiled.get_property("ENABLE_CPU_PINNING")),
                execution_devices=list(self.compiled.get_property("EXECUTION_DEVICES")),
                runtime_precisions=self.op_precisions)
        return info
