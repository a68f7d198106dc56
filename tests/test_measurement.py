"""The measurement core: what each view's timer brackets, which stream events land on,
contention, launches, GPU memory meanings, and the result contract's versions."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from inferbench.measure.harness import combine, measure_backend, run_job
from inferbench.results import (
    SCHEMA_VERSION,
    Result,
    ResultFormatError,
    load_result,
    long_table,
)

SETTINGS: dict[str, Any] = {
    "backend": {"name": "fake", "kind": "fake", "device": "cuda", "precision": "fp32",
                "options": {}},
    "threads": 1, "seq_len": 4, "task": "sequence-classification",
    "measurement": {"repeats": 2, "warmup_iterations": 1, "min_iterations": 3,
                    "min_duration_s": 0, "max_duration_s": 10, "target_rel_ci": 0,
                    "throughput_rounds": 2, "throughput_round_s": 0.0, "memory_iterations": 1,
                    "bootstrap_resamples": 200, "noisy_rel_ci": 0.05,
                    "contention_threshold": 1.0},
    "parity": {"max_abs": 1e-3, "min_agreement": 1.0},
}


class Log(list):
    def clock(self) -> float:
        self.append("clock")
        return self.count("clock") * 1e-3  # a millisecond between reads


class FakeTimer:
    def __init__(self, log: Log) -> None:
        self.log = log

    def hold(self, ms: float) -> None:
        self.log.append("hold")

    def start(self) -> None:
        self.log.append("timer.start")

    def stop(self) -> None:
        self.log.append("timer.stop")

    def elapsed_ms(self) -> float:
        return 1.0


class FakeBackend:
    """Records every call in order; a 'GPU' backend with a device timer."""

    memory_owner = "none"

    def __init__(self, log: Log, device: str = "cuda") -> None:
        self.log = log
        self.spec = SimpleNamespace(device=device)

    def load(self, artifacts: Any) -> None:
        self.log.append("load")

    def prepare_inputs(self, inputs: Mapping[str, np.ndarray]) -> str:
        self.log.append("prepare")
        return "prepared"

    def run(self, prepared: Any) -> str:
        self.log.append("run")
        return "outputs"

    def to_host(self, outputs: Any) -> np.ndarray:
        self.log.append("to_host")
        return np.zeros((1, 2))

    def synchronize(self) -> None:
        self.log.append("sync")

    def device_timer(self) -> FakeTimer | None:
        return FakeTimer(self.log) if self.spec.device == "cuda" else None

    def details(self) -> dict[str, Any]:
        return {}


class NullTracker:
    record = None

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(self, *args: object) -> None:
        pass


class NoEnergy:
    def start(self) -> None:
        pass

    def stop(self) -> None:
        return None


def run_fake(device: str = "cuda") -> tuple[Log, dict[str, Any]]:
    log = Log()
    out = measure_backend(FakeBackend(log, device), None, {}, 2, SETTINGS, clock=log.clock,
                          tracker=NullTracker(), energy=NoEnergy())
    return log, out


def segments(log: Log) -> list[list[str]]:
    """The log cut at each clock read: what lay between two consecutive reads."""
    cuts, current = [], []
    for entry in log:
        if entry == "clock":
            cuts.append(current)
            current = []
        else:
            current.append(entry)
    return cuts[1:]


def test_latency_view_brackets_one_whole_request() -> None:
    log, out = run_fake()
    timed = [s for s in segments(log) if s[:1] == ["prepare"] and "to_host" in s]
    # every latency sample: host inputs in, run, host outputs out, synchronised, and
    # nothing else between the two clock reads
    latency_samples = [s for s in timed if s == ["prepare", "run", "to_host", "sync"]]
    assert len(latency_samples) >= len(out["samples"]["latency"]) == 3


def test_gpu_compute_events_bracket_run_alone_with_work_queued_ahead() -> None:
    log, out = run_fake()
    starts = [i for i, e in enumerate(log) if e == "timer.start"]
    assert len(starts) == len(out["samples"]["gpu_compute"]) == 3
    for i in starts:
        assert log[i - 1] == "hold"  # the host runs ahead of the device
        assert log[i + 1:i + 3] == ["run", "timer.stop"]  # exactly the work
    # inputs were prepared once, before the pass, never inside the events
    first = starts[0]
    assert "prepare" not in log[first:starts[-1] + 3]


def test_throughput_view_is_back_to_back_runs_with_one_sync() -> None:
    log, out = run_fake()
    rounds = [s for s in segments(log) if s and set(s) == {"run", "sync"}]
    assert len(rounds) == len(out["samples"]["throughput"]) == 2
    for calls in rounds:
        assert calls[-1] == "sync" and calls.count("sync") == 1
    assert out["stopping"]["throughput"]["calls_per_round"] == 1


def test_cpu_backend_gpu_compute_is_not_applicable_never_a_copy() -> None:
    log, out = run_fake(device="cpu")
    assert "gpu_compute" not in out["samples"]
    assert "no device timer" in out["not_applicable"]["gpu_compute"]
    assert "timer.start" not in log


class FakeStream:
    def __init__(self, name: str) -> None:
        self.name = name


class FakeCuda:
    """torch.cuda stand-in: records which stream every event and kernel lands on."""

    def __init__(self) -> None:
        self.current = FakeStream("default")
        self.landed: list[tuple[str, str]] = []
        cuda = self

        class Event:
            def __init__(self, enable_timing: bool = False) -> None:
                pass

            def record(self, stream: FakeStream | None = None) -> None:
                cuda.landed.append(("event", (stream or cuda.current).name))

            def synchronize(self) -> None:
                pass

            def elapsed_time(self, other: Any) -> float:
                return 2.0

        self.Event = Event

    def current_stream(self) -> FakeStream:
        return self.current

    def current_device(self) -> int:
        return 0

    def stream(self, stream: FakeStream) -> Any:
        cuda = self

        class Context:
            def __enter__(self) -> None:
                self.saved, cuda.current = cuda.current, stream

            def __exit__(self, *args: object) -> None:
                cuda.current = self.saved

        return Context()

    def _sleep(self, cycles: int) -> None:
        self.landed.append(("sleep", self.current.name))


def test_events_and_hold_land_on_the_stream_the_work_runs_on() -> None:
    from inferbench.measure import gpu

    cuda = FakeCuda()
    gpu._CYCLES_PER_MS[0] = 1000.0
    ours = FakeStream("ort-session")
    timer = gpu.CudaEventTimer(ours, cuda=cuda)
    timer.hold(1.0)
    timer.start()
    timer.stop()
    assert cuda.landed == [("sleep", "ort-session"), ("event", "ort-session"),
                           ("event", "ort-session")]
    assert timer.elapsed_ms() == 2.0

    cuda.landed.clear()  # no stream given: the current stream at each record
    with cuda.stream(FakeStream("side")):
        torch_timer = gpu.CudaEventTimer(None, cuda=cuda)
        torch_timer.hold(1.0)
        torch_timer.start()
    assert cuda.landed == [("sleep", "side"), ("event", "side")]


def test_ort_cuda_runs_on_a_dedicated_stream_not_the_default_handle() -> None:
    """ONNX Runtime reads user_compute_stream=0 as 'no stream' and runs elsewhere."""
    source = (Path(__file__).resolve().parents[1] / "src/inferbench/backends/ort.py").read_text()
    assert "torch.cuda.Stream()" in source
    assert "self.stream = torch.cuda.current_stream()" not in source


# -- GPU memory: one meaning per column ------------------------------------------------

def fake_torch(reserved_mib: float, allocated_mib: float) -> Any:
    cuda = SimpleNamespace(max_memory_reserved=lambda: reserved_mib * 2**20,
                           max_memory_allocated=lambda: allocated_mib * 2**20)
    return SimpleNamespace(cuda=cuda)


def test_graph_backend_memory_grows_with_batch() -> None:
    """A CUDA-graph backend's pool is reserved at capture, before any reset: the column
    reads the process-lifetime reserved peak, so it grows with batch."""
    from inferbench.measure.gpu import gpu_memory

    pools = {1: (200.0, 150.0), 64: (900.0, 150.0)}  # capture pool grows, allocations don't
    seen = {b: gpu_memory("cuda", "torch", torch_module=fake_torch(*pools[b])) for b in pools}
    assert seen[64]["torch_reserved_peak_mib"] > seen[1]["torch_reserved_peak_mib"]
    assert set(seen[1]) == {"torch_reserved_peak_mib", "torch_allocated_peak_mib"}


def test_runtime_owned_memory_is_this_process_on_its_gpu() -> None:
    from inferbench.measure.gpu import gpu_memory

    me, other = os.getpid(), os.getpid() + 1
    procs = [SimpleNamespace(pid=other, usedGpuMemory=5000 * 2**20),
             SimpleNamespace(pid=me, usedGpuMemory=700 * 2**20)]
    handles: list[int] = []
    nvml = SimpleNamespace(nvmlInit=lambda: None,
                           nvmlDeviceGetHandleByIndex=lambda i: handles.append(i) or i,
                           nvmlDeviceGetComputeRunningProcesses=lambda h: procs)
    torch = SimpleNamespace(cuda=SimpleNamespace(
        current_device=lambda: 0,
        get_device_properties=lambda i: (_ for _ in ()).throw(RuntimeError("no pci"))))
    os.environ["CUDA_VISIBLE_DEVICES"] = "3"
    try:
        out = gpu_memory("cuda", "nvml", torch_module=torch, nvml=nvml)
    finally:
        del os.environ["CUDA_VISIBLE_DEVICES"]
    assert out == {"gpu_index": 3, "process_gpu_mib": 700.0}
    assert handles == [3]  # the GPU the job runs on, not GPU 0


# -- launches and combining ---------------------------------------------------------

def launch_record(values: list[float], status: str = "ok", contended: bool = False
                  ) -> dict[str, Any]:
    return {"status": status, "reason": "", "samples": {"latency": values,
                                                        "throughput": [100.0, 101.0]},
            "not_applicable": {"gpu_compute": "CPU backend: no device timer"},
            "cold_start": {"load_s": 1.0, "first_inference_s": 0.1},
            "memory": {"peak_rss_mib": 100.0},
            "stopping": {"latency": {"stop_reason": "minimums_met", "minimums_met": True}},
            "contention": {"wall_s": 1, "cpu_count": 2, "own_cpu_s": 1, "other_cpu_s": 0.9,
                           "other_cpu_fraction": 0.45 if contended else 0.0, "steal_s": 0,
                           "loadavg_before": 1, "loadavg_after": 2, "contended": contended,
                           "why": "other processes used 45% of the machine's 2 cores"
                           if contended else ""},
            "parity": {"ok": True}, "fingerprint": {"cpu_model": "x"}}


def test_run_job_combines_launches_and_marks_contended(tmp_path: Path) -> None:
    settings = {**SETTINGS, "backend": {**SETTINGS["backend"], "device": "cpu"},
                "measurement": {**SETTINGS["measurement"], "repeats": 3}}
    records = [launch_record([10.0, 10.1, 9.9]), launch_record([12.0, 12.1, 11.9]),
               launch_record([10.0, 10.2, 9.8], contended=True)]
    calls = []

    def launch(index: int, path: Path) -> None:
        calls.append(index)
        path.write_text(json.dumps(records[index]))

    out = tmp_path / "bs2.json"
    result = run_job(settings, 2, "m", "local", out, launch)
    assert calls == [0, 1, 2] and result.launches == 3
    assert result.views["latency"].samples[1] == [12.0, 12.1, 11.9]
    assert result.status == "contended" and "1 of 3 launches" in result.reason
    assert not list(tmp_path.glob(".*launch*"))  # launch files are cleaned up
    assert load_result(out).status == "contended"


def test_failed_launch_stops_the_job_with_its_reason(tmp_path: Path) -> None:
    calls = []

    def launch(index: int, path: Path) -> str:
        calls.append(index)
        return "signal SIGSEGV"

    result = run_job(SETTINGS, 2, "m", "local", tmp_path / "bs2.json", launch)
    assert calls == [0] and result.status == "error"
    assert "benchmark process died (signal SIGSEGV)" in result.reason


def test_noise_flag_reads_the_primary_views_interval() -> None:
    from inferbench.measure.harness import base_result

    steady = combine(base_result(SETTINGS, 2, "m", "t"),
                     [launch_record([10.0] * 30), launch_record([10.0] * 30)], SETTINGS)
    assert steady.noisy is False and steady.primary_view == "latency"
    jumpy = combine(base_result(SETTINGS, 2, "m", "t"),
                    [launch_record([10.0] * 30), launch_record([14.0] * 30)], SETTINGS)
    assert jumpy.noisy is True


def test_a_row_from_fewer_launches_than_asked_says_so() -> None:
    from inferbench.measure.harness import base_result

    settings = {**SETTINGS, "measurement": {**SETTINGS["measurement"], "repeats": 2}}
    short = combine(base_result(settings, 2, "m", "t"), [launch_record([10.0] * 30)], settings)
    assert short.status == "ok" and short.launches == 1
    assert short.reason.startswith("1 of 2 launches")
    full = combine(base_result(settings, 2, "m", "t"),
                   [launch_record([10.0] * 30), launch_record([10.0] * 30)], settings)
    assert full.reason == ""


# -- contention, for real ----------------------------------------------------------------

def _burn(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_cpu_burner_beside_a_benchmark_marks_it_contended(tiny_model: dict) -> None:
    from inferbench.config import job_settings
    from inferbench.measure.harness import JobPaths, run_in_process

    config = tiny_model["config"]
    settings = job_settings(config, "torch-eager")
    settings["measurement"] = {**settings["measurement"], "contention_threshold": 0.1,
                               "repeats": 1, "min_duration_s": 1.5}
    root = tiny_model["root"]
    paths = JobPaths(model_dir=root / "hf", card=root / "card.json",
                     inputs=root / "inputs.npz", reference=root / "reference.npz")
    burners = [multiprocessing.Process(target=_burn, args=(30.0,)) for _ in range(2)]
    for burner in burners:
        burner.start()
    try:
        row = run_in_process(settings, 2, paths, "tiny", "local",
                             root.parent / "contended.json")
    finally:
        for burner in burners:
            burner.terminate()
            burner.join()
    assert row["status"] == "contended", row["reason"]
    (contention,) = row["contention"]
    assert contention["contended"] and contention["other_cpu_fraction"] > 0.1
    assert "other processes used" in row["reason"]


# -- the result contract ---------------------------------------------------------------

def v1_record() -> dict[str, Any]:
    return {"schema_version": 1, "status": "ok", "reason": "", "target": "h100", "model": "m",
            "backend": "b", "kind": "torch-cuda-graph", "device": "cuda", "precision": "fp16",
            "options": {}, "batch_size": 16, "seq_len": 128, "threads": 2,
            "latency": {"end_to_end": {"p50": 1.0, "samples": [1.0, 1.1, 0.9]},
                        "device": {"p50": 0.7, "samples": [0.7, 0.71, 0.69]}},
            "memory": {"peak_rss_mib": 900, "peak_gpu_mib": 197.0,
                       "peak_gpu_source": "torch.cuda.max_memory_allocated"},
            "noisy": True, "fingerprint": {"cpu_model": "x", "gpus": [{"name": "H100"}]}}


def test_schema_1_results_are_upgraded_without_invented_numbers(tmp_path: Path) -> None:
    path = tmp_path / "bs16.json"
    path.write_text(json.dumps(v1_record()))
    result = load_result(path)
    assert result.schema_version == SCHEMA_VERSION
    assert result.views["latency"].samples == [[1.0, 1.1, 0.9]]
    assert result.views["gpu_compute"].stats is not None
    assert result.views["gpu_compute"].stats.p50 == pytest.approx(0.7)
    assert "not measured" in result.views["throughput"].not_applicable
    assert result.host_overhead_ms == pytest.approx(0.3)
    assert result.memory.torch_allocated_peak_mib == 197.0
    assert result.memory.torch_reserved_peak_mib is None  # schema 1 never measured it


def test_schema_1_nvml_whole_device_memory_is_dropped(tmp_path: Path) -> None:
    record = v1_record()
    record["memory"] = {"peak_gpu_mib": 1413.0,
                        "peak_gpu_source": "nvml device used (upper bound)"}
    path = tmp_path / "bs16.json"
    path.write_text(json.dumps(record))
    memory = load_result(path).memory
    assert memory.process_gpu_mib is None and memory.torch_allocated_peak_mib is None


def test_unknown_schema_version_is_refused_with_the_file_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "bs1.json"
    path.write_text(json.dumps({**v1_record(), "schema_version": 7}))
    with pytest.raises(ResultFormatError) as error:
        load_result(path)
    assert str(path) in str(error.value) and "rerun" in str(error.value)


def test_long_table_has_one_row_per_view() -> None:
    from crafted import make_result

    results = [Result.from_dict(make_result("a", 1, 10.0, device_ms=8.0, device="cuda")),
               Result.from_dict(make_result("b", 1, 12.0))]
    long = long_table(results)
    assert len(long) == 6
    b_gpu = long[(long.backend == "b") & (long.view == "gpu_compute")].iloc[0]
    assert b_gpu.not_applicable and np.isnan(b_gpu.p50)
    a = long[long.backend == "a"].set_index("view")
    assert a.loc["gpu_compute", "p50"] < a.loc["latency", "p50"]
    assert a.loc["latency", "host_overhead_ms"] == pytest.approx(
        a.loc["latency", "p50"] - a.loc["gpu_compute", "p50"])


# -- the workflow: nothing runs beside a benchmark ----------------------------------

@pytest.mark.workflow
def test_benchmark_jobs_claim_every_core_whatever_cores_says(tmp_path: Path) -> None:
    import re

    from helpers import run_snakemake, tiny_config_dict, write_config

    configfile = write_config(tmp_path / "config.yaml", tiny_config_dict())
    out = run_snakemake(tmp_path, configfile, "-n", "--cores", "3", "all")
    listing = out.stdout + out.stderr
    blocks = re.split(r"\n(?=(?:local)?rule \w+:\n)", listing)
    threads = {}
    for block in blocks:
        rule = re.search(r"^(?:local)?rule (\w+):", block.strip())
        found = re.search(r"^\s+threads: (\d+)$", block, re.MULTILINE)
        if rule:
            threads.setdefault(rule.group(1), set()).add(int(found.group(1)) if found else 1)
    # a benchmark takes all 3 cores, so the scheduler can place nothing beside it;
    # every other job needs at least one core
    assert threads["bench"] == {3}
    assert all(max(t) < 3 for rule, t in threads.items() if rule != "bench")
