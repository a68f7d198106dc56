"""GPU helpers: CUDA-event timing, peak device memory, NVML energy. No-ops on the CPU."""

from __future__ import annotations

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
    """CUDA events recorded on the stream the backend launches its work on."""

    def __init__(self, stream: Any = None) -> None:
        import torch

        self._torch = torch
        self._stream = stream
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        self._start.record(self._stream)

    def stop(self) -> None:
        self._end.record(self._stream)

    def elapsed_ms(self) -> float:
        self._end.synchronize()
        return float(self._start.elapsed_time(self._end))


def reset_peak(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_memory(device: str, owner: str) -> dict[str, Any]:
    """Peak GPU memory after the memory pass.

    ``owner`` "torch": the caching allocator's peak (exact for torch backends).
    Otherwise (ONNX Runtime, TensorRT own their memory) NVML's used memory, which
    also counts the CUDA context: an upper bound, labelled as such.
    """
    if device != "cuda":
        return {}
    if owner == "torch":
        import torch

        return {"peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20,
                "peak_gpu_source": "torch.cuda.max_memory_allocated"}
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        used = pynvml.nvmlDeviceGetMemoryInfo(handle).used
        pynvml.nvmlShutdown()
        return {"peak_gpu_mib": used / 2**20, "peak_gpu_source": "nvml device used (upper bound)"}
    except Exception as exc:
        return {"peak_gpu_mib": None, "peak_gpu_source": f"n/a: {exc}"}


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
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
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
