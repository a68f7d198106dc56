"""The contract every backend module implements.

A backend is one module under ``inferbench.backends`` with one ``Backend``
subclass decorated by ``@register``. Modules import their runtime (torch,
onnxruntime, tensorrt) inside methods, never at module level, so that the
Snakefile can list backends and validate options without loading a runtime.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from inferbench.spec import BackendSpec, ConfigError


class Unsupported(RuntimeError):
    """This configuration cannot run here for a known, documented reason.

    Raised by a backend (at build, load or run time) when its runtime refuses a
    shape or a setting it does not support, e.g. INT8 GEMMs whose row count is
    at most 16. The harness records it as an ``unavailable`` row with the
    message as its reason, never as an ``error``.
    """


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""

    @classmethod
    def yes(cls) -> Availability:
        return cls(True)

    @classmethod
    def no(cls, reason: str) -> Availability:
        return cls(False, reason)


@dataclass(frozen=True)
class Artifacts:
    """Files a backend loads, made by upstream rules."""

    model_dir: Path
    card: Mapping[str, Any]
    onnx: Path | None = None
    build: Path | None = None  # folder of a backend-specific build (engine, package, cache)
    build_manifest: Mapping[str, Any] = field(default_factory=dict)
    # The workflow's inputs a static INT8 build calibrates on (see calibrated()), and
    # the `calibration:` settings; only builds of calibrated backends get them.
    calibration: Path | None = None
    calibration_settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ShapeSupport:
    """Which input shapes a backend takes; serving pads requests to them.

    ``lengths``: "any" (dynamic shapes), "few" (any, but specialised once per shape,
    e.g. one CUDA-graph capture each, so only a few fixed lengths are practical) or
    "seq_len" (only the length its build or binding fixed). ``batches``: "any",
    "built" (the batch sizes it was built for; a batch is padded to the next one) or
    "largest" (one bound batch shape). ``why`` says what fixes the shapes.
    """

    lengths: str = "any"
    batches: str = "any"
    why: str = ""


@dataclass(frozen=True)
class NoOptions:
    """For backends without options."""


class Backend(ABC):
    """Load a model artifact and run it on prepared inputs.

    The harness calls, in order: ``availability``, ``load``, ``prepare_inputs``
    (host arrays to whatever ``run`` takes; on a GPU this is the host-to-device
    copy), ``run``, ``to_host`` and ``synchronize``.
    """

    kind: ClassVar[str]
    devices: ClassVar[frozenset[str]] = frozenset({"cpu"})
    precisions: ClassVar[frozenset[str]] = frozenset({"fp32"})
    Options: ClassVar[type] = NoOptions
    # Name of the artifact this backend needs beside the model directory:
    # "onnx" (an ONNX variant, see onnx_variant) or "build" (its own build rule).
    needs: ClassVar[frozenset[str]] = frozenset()
    # The kind whose FP32 rows this kind's rows are compared with, when its
    # lower-precision variant is a kind of its own (torch-dynamic-int8 -> torch-eager).
    fp32_kind: ClassVar[str | None] = None
    # Distributions whose versions the fingerprint records for this backend's rows.
    packages: ClassVar[tuple[str, ...]] = ("torch",)

    def __init__(self, spec: BackendSpec, threads: int) -> None:
        self.spec = spec
        self.threads = threads
        self.options = self.parse_options(spec)

    # -- configuration (no runtime imported) ---------------------------------
    @classmethod
    def parse_options(cls, spec: BackendSpec) -> Any:
        allowed = [f.name for f in dataclasses.fields(cls.Options)]
        unknown = sorted(set(spec.options) - set(allowed))
        if unknown:
            raise ConfigError(
                f"unknown option(s) {unknown} for backend kind {cls.kind!r}; "
                f"allowed options: {', '.join(allowed) or 'none'}"
            )
        try:
            return cls.Options(**spec.options)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"options of backend kind {cls.kind!r}: {exc}") from None

    @classmethod
    def check_spec(cls, spec: BackendSpec) -> None:
        if spec.device not in cls.devices:
            raise ConfigError(
                f"device {spec.device!r} is not supported by {cls.kind!r}; "
                f"allowed: {', '.join(sorted(cls.devices))}"
            )
        if spec.precision not in cls.precisions:
            raise ConfigError(
                f"precision {spec.precision!r} is not supported by {cls.kind!r}; "
                f"allowed: {', '.join(sorted(cls.precisions))}"
            )
        cls.parse_options(spec)

    @classmethod
    def onnx_variant(cls, spec: BackendSpec) -> str | None:
        """Which ONNX file this backend reads (see inferbench.prepare.onnx.VARIANTS)."""
        return None

    @classmethod
    def shape_support(cls, spec: BackendSpec) -> ShapeSupport:
        """Input shapes this backend takes (default: any batch and length)."""
        return ShapeSupport()

    def loaded_shape_support(self) -> ShapeSupport:
        """Input shapes once loaded: the artifact may fix more than the kind does."""
        return self.shape_support(self.spec)

    @classmethod
    def build_spec(cls, spec: BackendSpec) -> BackendSpec:
        """The part of ``spec`` this kind's build reads (the build rule's params): an
        option only the benchmark job reads (a compile setting) is left out, so that
        changing it reruns the row's benchmarks but not its build. Default: all of it."""
        return spec

    @classmethod
    def calibrated(cls, spec: BackendSpec) -> bool:
        """Whether this row's build calibrates on the workflow's inputs (static INT8):
        its build rule then reads the calibration inputs and the `calibration:` settings."""
        return False

    # -- runtime ---------------------------------------------------------------
    def availability(self) -> Availability:
        return Availability.yes()

    def build_availability(self) -> Availability:
        """Whether :meth:`build` can run here: by default what running needs. A backend
        whose build uses a package its runs do not (NNCF for OpenVINO INT8) checks that
        package here, so that each benchmark launch does not import it."""
        return self.availability()

    @abstractmethod
    def load(self, artifacts: Artifacts) -> None: ...

    @abstractmethod
    def prepare_inputs(self, inputs: Mapping[str, np.ndarray]) -> Any: ...

    @abstractmethod
    def run(self, prepared: Any) -> Any: ...

    @abstractmethod
    def to_host(self, outputs: Any) -> np.ndarray: ...

    def synchronize(self) -> None:  # noqa: B027  (optional hook: CPU backends need none)
        """Wait for queued device work; a no-op on the CPU."""

    def device_timer(self) -> DeviceTimer | None:
        """Timer of device work on the stream ``run`` uses; None on the CPU."""
        return None

    def details(self) -> dict[str, Any]:
        """Facts about the loaded backend recorded in the result (providers, fusions)."""
        return {}

    def build(self, artifacts: Artifacts, out_dir: Path, batch_sizes: list[int], seq_len: int
              ) -> dict[str, Any]:
        """Build this backend's engine into ``out_dir``; returns a manifest."""
        raise NotImplementedError(f"{self.kind} has no build step")

    @classmethod
    def crash_hint(cls) -> str:
        """What is known about this backend's process crashing (added to the reason of
        a row whose worker died); empty when nothing is."""
        return ""


class DeviceTimer(ABC):
    """Device-side elapsed time of one ``run`` (CUDA events on its stream)."""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def elapsed_ms(self) -> float:
        """Elapsed device time between start and stop; waits for stop."""

    def hold(self, ms: float) -> None:  # noqa: B027  (optional: timers without a stream)
        """Queue about ``ms`` of idle device work on the timer's stream before ``start``,
        so that the host enqueues the whole ``run`` while the device is still busy and
        the events bracket device work only, not the host's launch gaps."""
