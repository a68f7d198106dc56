"""GPU helpers: CUDA-event timing, peak device memory, NVML energy. No-ops on the CPU."""

from __future__ import annotations

import os
from typing import Any

from inferbench.backends.base import DeviceTimer


def cuda_unavailable_reason() -> str | None:
    """None when a CUDA device can be used by torch, else why not."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device"
    return None


class CudaEventTimer(DeviceTimer):
    """CUDA events recorded on the stream the backend launches its work on.

    ``stream`` None means the current stream at each record (torch backends launch
    there); ``cuda`` is injectable so tests can check which stream each event and
    the hold kernel land on.
    """

    def __init__(self, stream: Any = None, cuda: Any = None) -> None:
        if cuda is None:
            import torch

            cuda = torch.cuda
        self._cuda = cuda
        self._stream = stream
        self._start = cuda.Event(enable_timing=True)
        self._end = cuda.Event(enable_timing=True)

    def _target_stream(self) -> Any:
        return self._stream if self._stream is not None else self._cuda.current_stream()

    def start(self) -> None:
        self._start.record(self._target_stream())

    def stop(self) -> None:
        self._end.record(self._target_stream())

    def elapsed_ms(self) -> float:
        self._end.synchronize()
        return float(self._start.elapsed_time(self._end))

    def hold(self, ms: float) -> None:
        with self._cuda.stream(self._target_stream()):
            self._cuda._sleep(max(1, int(ms * _cycles_per_ms(self._cuda))))


_CYCLES_PER_MS: dict[int, float] = {}


def _cycles_per_ms(cuda: Any) -> float:
    """Clock cycles of the spin kernel per millisecond, measured once per device."""
    device = int(cuda.current_device())
    if device not in _CYCLES_PER_MS:
        start, end = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
        cycles = 10_000_000
        start.record()
        cuda._sleep(cycles)
        end.record()
        end.synchronize()
        _CYCLES_PER_MS[device] = cycles / max(float(start.elapsed_time(end)), 1e-3)
    return _CYCLES_PER_MS[device]


def nvml_index(torch_module: Any = None) -> int:
    """NVML index of the GPU this process uses: CUDA_VISIBLE_DEVICES renumbers
    devices for CUDA but not for NVML, so match by PCI bus id."""
    try:
        import pynvml

        if torch_module is None:
            import torch as torch_module
        props = torch_module.cuda.get_device_properties(torch_module.cuda.current_device())
        bus = f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByPciBusId(bus)
        return int(pynvml.nvmlDeviceGetIndex(handle))
    except Exception:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
        return int(visible) if visible.isdigit() else 0


def gpu_memory(device: str, owner: str, torch_module: Any = None, nvml: Any = None
               ) -> dict[str, Any]:
    """Peak GPU memory fields of ``results.Memory``, each with one meaning.

    torch backends: the caching allocator's peaks since the process started (never
    reset, so the pools CUDA-graph capture reserves are inside, and they grow with
    batch). Runtimes with their own allocator (``owner`` "nvml"): the memory NVML
    reports for this process on the GPU the job runs on.
    """
    if device != "cuda":
        return {}
    if torch_module is None:
        import torch as torch_module
    out: dict[str, Any] = {}
    if owner == "torch":
        out["torch_reserved_peak_mib"] = torch_module.cuda.max_memory_reserved() / 2**20
        out["torch_allocated_peak_mib"] = torch_module.cuda.max_memory_allocated() / 2**20
        return out
    index = nvml_index(torch_module)
    out["gpu_index"] = index
    try:
        if nvml is None:
            import pynvml

            nvml = pynvml
        nvml.nvmlInit()
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
                out["process_gpu_mib"] = proc.usedGpuMemory / 2**20
    except Exception:  # NVML missing, or the container hides our pid: no figure
        pass
    return out


class EnergyMeter:
    """NVML total-energy counter read around the timed loop (millijoules)."""

    def __init__(self, handle: Any = None, nvml: Any = None) -> None:
        self._handle = handle
        self._nvml = nvml
        self._start_mj: int | None = None

    @classmethod
    def for_device(cls, device: str) -> EnergyMeter:
        if device != "cuda":
            return cls()
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(nvml_index())
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            return cls(handle, pynvml)
        except Exception:
            return cls()

    def start(self) -> None:
        if self._handle is not None:
            self._start_mj = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)

    def stop(self) -> float | None:
        """Joules used since start, or None where the GPU does not expose the counter."""
        if self._handle is None or self._start_mj is None:
            return None
        end = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        return (end - self._start_mj) / 1000.0
