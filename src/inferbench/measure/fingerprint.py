"""Where a number was measured: machine, software and settings."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from typing import Any

from inferbench import isa
from inferbench.config import REPO_ROOT

# What every job uses; each backend class adds the distributions it runs on.
BASE_PACKAGES = ("transformers", "onnx", "numpy", "snakemake")
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("INFERBENCH_GIT_REVISION", "unknown")


def package_versions() -> dict[str, str]:
    from inferbench.backends import registry

    names = set(BASE_PACKAGES)
    for kind in registry.kinds():
        names.update(registry.get(kind).packages)
    versions = {}
    for name in sorted(names):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def gpu_info() -> list[dict[str, Any]]:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return []
    gpus = []
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            gpus.append({
                "index": index,
                "name": pynvml.nvmlDeviceGetName(handle),
                "memory_total_mib": pynvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20,
                "driver": driver,
                **gpu_limits(pynvml, handle),
            })
    finally:
        pynvml.nvmlShutdown()
    return gpus


def gpu_limits(nvml: Any, handle: Any) -> dict[str, float | None]:
    """Power limit and clocks that bound a GPU's speed, where NVML exposes them (a
    capped or clock-locked card is another machine for a comparison); None otherwise."""

    def read(call: str, *args: Any) -> Any:
        try:
            return getattr(nvml, call)(handle, *args)
        except Exception:  # not supported on this GPU / driver, or no permission
            return None

    power_mw = read("nvmlDeviceGetEnforcedPowerLimit")
    sm, mem = getattr(nvml, "NVML_CLOCK_SM", 1), getattr(nvml, "NVML_CLOCK_MEM", 2)
    return {
        "power_limit_w": power_mw / 1000 if power_mw is not None else None,
        "sm_clock_max_mhz": read("nvmlDeviceGetMaxClockInfo", sm),
        "mem_clock_max_mhz": read("nvmlDeviceGetMaxClockInfo", mem),
        "sm_clock_applications_mhz": read("nvmlDeviceGetApplicationsClock", sm),
    }


# Set by SLURM inside a job: which allocation measured the number.
SLURM_ENV = {"job_id": "SLURM_JOB_ID", "partition": "SLURM_JOB_PARTITION",
             "node": "SLURMD_NODENAME", "cpus_on_node": "SLURM_CPUS_ON_NODE",
             "gpus": "SLURM_JOB_GPUS"}


def scheduler_info() -> dict[str, dict[str, str]]:
    """The batch job this process runs in ({} outside a scheduler)."""
    slurm: dict[str, str] = {key: os.environ[var] for key, var in SLURM_ENV.items()
                             if os.environ.get(var)}
    return {"slurm": slurm} if slurm.get("job_id") else {}


def fingerprint(threads: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Environment facts recorded in every result."""
    import psutil

    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
        # AVX2 / AVX-512 / VNNI / BF16 / AMX: what decides CPU INT8 and BF16 results
        **isa.fingerprint_fields(),
        "cpu_count_logical": psutil.cpu_count(logical=True),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "memory_total_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "threads": {"intra_op": threads, "inter_op": 1,
                    **{k: os.environ.get(k) for k in THREAD_ENV}},
        "gpus": gpu_info(),
        "git_revision": git_revision(),
        "scheduler": scheduler_info(),
    }
    # torch's settings where this job used torch (importing it only to read them
    # would cost a torch-free job, e.g. ONNX Runtime on the CPU, 2 s)
    if "torch" in sys.modules:
        import torch

        info["torch_quantized_engine"] = torch.backends.quantized.engine
        info["torch_num_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["cuda"] = {
                "torch_cuda": torch.version.cuda,
                "device": torch.cuda.get_device_name(),
                "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            }
    info.update(extra or {})
    return info
