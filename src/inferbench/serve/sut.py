"""LoadGen's system under test and query sample library, over one loaded backend.

LoadGen owns arrivals, timing and the percentile estimates; this module only answers
``issue_queries`` / ``flush_queries`` and reports completions (MLPerf's division of
labour). :class:`ModelRunner` turns a list of request indices into one padded batch,
runs it and keeps every request's output for the parity check.
:func:`run_loadgen` runs one LoadGen test and returns its detail log as a dict; the
log files stay in the folder given as the raw record.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from inferbench.backends.base import ShapeSupport
from inferbench.serve.batcher import Batch, BatchWorker, DynamicBatcher
from inferbench.serve.traffic import Traffic, padded_length, padded_rows

LOG_PREFIX = ":::MLLOG"


class BackendThread:
    """One thread for every call into a backend, whichever thread asks: loading,
    warm-up and serving alike.

    ONNX Runtime's CUDA provider keeps its cuBLAS handles and its captured CUDA graph
    per thread, and torch's CUDA-graph trees are per thread too, so a warm-up on another
    thread leaves the serving thread cold (on an H100 the first queries of a Server
    trial took 80-100 ms while ONNX Runtime captured again). On a CPU, each thread that
    runs torch's parallel ops gets an OpenMP team of its own: a model loaded on one
    thread and run on another kept two teams on two cores, and a small eager model ran
    2.5x slower than on one thread. A server's inference thread works the same way.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1,
                                            thread_name_prefix="inferbench-backend")
        self._thread: threading.Thread | None = None

    def call(self, call: Callable[..., Any], *args: Any) -> Any:
        """``call(*args)`` on the backend thread; its result or its exception."""
        if threading.current_thread() is self._thread:
            return call(*args)
        return self._executor.submit(self._enter, call, *args).result()

    def _enter(self, call: Callable[..., Any], *args: Any) -> Any:
        self._thread = threading.current_thread()
        return call(*args)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


class ModelRunner:
    """Runs batches of requests on a backend with one padding strategy, every backend
    call on one ``BackendThread`` (the one that loaded the backend, where given)."""

    def __init__(self, backend: Any, traffic: Traffic, padding: str, buckets: Sequence[int],
                 support: ShapeSupport, batch_sizes: Sequence[int],
                 thread: BackendThread | None = None) -> None:
        self.backend = backend
        self.traffic = traffic
        self.padding = padding
        self.buckets = list(buckets)
        self.support = support
        self.batch_sizes = list(batch_sizes)
        self.outputs: dict[int, np.ndarray] = {}
        self.shapes: Counter[tuple[int, int]] = Counter()
        self.requests = 0
        self.real_tokens = 0
        self.padded_tokens = 0
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self.thread = thread or BackendThread()

    def on_backend_thread(self, call: Callable[..., Any], *args: Any) -> Any:
        """``call(*args)`` on the runner's backend thread; its result or its exception."""
        return self.thread.call(call, *args)

    def close(self) -> None:
        self.thread.close()

    def _infer(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        backend = self.backend
        output = backend.to_host(backend.run(backend.prepare_inputs(inputs)))
        backend.synchronize()
        return np.asarray(output)

    def shape(self, indices: Sequence[int]) -> tuple[int, int]:
        """(rows, length) the batch of ``indices`` runs at."""
        length = padded_length(self.padding, [int(self.traffic.lengths[i]) for i in indices],
                               self.traffic.seq_len, self.buckets)
        return padded_rows(len(indices), self.support, self.batch_sizes), length

    def run(self, indices: Sequence[int], record: bool = True) -> np.ndarray:
        rows, length = self.shape(indices)
        inputs = self.traffic.batch(indices, length, rows)
        output = self.on_backend_thread(self._infer, inputs)[: len(indices)]
        if record:
            with self._lock:
                for row, index in enumerate(indices):
                    self.outputs[int(index)] = output[row]
                self.shapes[(rows, length)] += 1
                self.requests += len(indices)
                self.real_tokens += int(sum(int(self.traffic.lengths[i]) for i in indices))
                self.padded_tokens += rows * length
        return output

    def safe_run(self, indices: Sequence[int]) -> None:
        """Run, keeping the first error: LoadGen still gets its completions, so that
        a failing backend ends the test instead of hanging it."""
        if self.error is not None:
            return
        try:
            self.run(indices)
        except BaseException as exc:
            self.error = exc

    def warm_shapes(self, max_rows: int) -> list[tuple[list[int], int]]:
        """Batches that bring every shape this run can use through the backend once
        (static-shape backends specialise on first use: capture, compile)."""
        order = np.argsort(self.traffic.lengths, kind="stable")
        longest, shortest = int(order[-1]), int(order[0])
        rows = sorted({padded_rows(n, self.support, self.batch_sizes)
                       for n in range(1, max_rows + 1)})
        if self.padding == "buckets":
            lengths = sorted({padded_length("buckets", [int(n)], self.traffic.seq_len,
                                            self.buckets) for n in self.traffic.lengths})
        else:
            lengths = [self.traffic.seq_len]
        batches: list[tuple[list[int], int]] = []
        for n in rows if self.support.batches != "any" else sorted({1, max_rows}):
            for length in lengths:
                batches.append(([longest] * n, length))
        if self.padding == "dynamic":
            batches.append(([shortest] * max_rows, 0))
        return batches

    def warmup(self, max_rows: int, iterations: int) -> dict[str, float]:
        """Run every warm-up shape ``iterations`` times; returns the median time of
        one request alone and of a full batch (LoadGen's expected latency and QPS)."""
        timings: dict[str, list[float]] = {"single": [], "full": []}
        for indices, length in self.warm_shapes(max_rows):
            for _ in range(max(1, iterations)):
                if length:
                    rows = padded_rows(len(indices), self.support, self.batch_sizes)
                    self.on_backend_thread(self._infer,
                                           self.traffic.batch(indices, length, rows))
                else:
                    self.run(indices, record=False)
        median = [int(np.argsort(self.traffic.lengths)[len(self.traffic.lengths) // 2])]
        for key, indices in (("single", median), ("full", median * max_rows)):
            for _ in range(3):
                start = time.perf_counter()
                self.run(indices, record=False)
                timings[key].append(time.perf_counter() - start)
        return {"single_s": float(np.median(timings["single"])),
                "full_batch_s": float(np.median(timings["full"]))}

    def statistics(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "batches": sum(self.shapes.values()),
            "mean_batch": self.requests / max(1, sum(self.shapes.values())),
            "shapes": {f"{r}x{n}": c for (r, n), c in sorted(self.shapes.items())},
            # real tokens / tokens computed: what padding costs on this traffic
            "padding_efficiency": self.real_tokens / self.padded_tokens
            if self.padded_tokens else None,
        }


class ServingSut:
    """Answers LoadGen's queries for one scenario.

    SingleStream runs each query in the issuing callback (LoadGen issues the next one
    only after the completion). Offline hands the whole query to a worker that sorts
    it by length and runs batches of ``max_rows`` (the runtime batches as it likes).
    Server puts each query in the dynamic batcher, whose worker runs the batches.
    """

    def __init__(self, lg: Any, runner: ModelRunner, scenario: str, max_rows: int,
                 max_wait_ms: float = 0.0) -> None:
        self.lg = lg
        self.runner = runner
        self.scenario = scenario
        self.max_rows = max_rows
        self.batcher = DynamicBatcher(max_rows, max_wait_ms)
        self.worker = BatchWorker(self.batcher, self._process)
        self.batch_waits_ms: list[float] = []
        self._offline: threading.Thread | None = None

    def start(self) -> None:
        if self.scenario == "Server":
            self.worker.start()

    def stop(self) -> None:
        self.batcher.close()
        for thread in (self.worker, self._offline):
            if thread is not None and thread.is_alive():
                thread.join()

    def _complete(self, samples: Sequence[Any]) -> None:
        self.lg.QuerySamplesComplete([self.lg.QuerySampleResponse(s.id, 0, 0) for s in samples])

    def _process(self, batch: Batch) -> None:
        self.batch_waits_ms.append(batch.oldest_wait_s * 1e3)
        self.runner.safe_run([s.index for s in batch.items])
        self._complete(batch.items)

    def _process_offline(self, samples: Sequence[Any]) -> None:
        ordered = sorted(samples, key=lambda s: int(self.runner.traffic.lengths[s.index]))
        for start in range(0, len(ordered), self.max_rows):
            chunk = ordered[start:start + self.max_rows]
            self.runner.safe_run([s.index for s in chunk])
            self._complete(chunk)

    def issue_queries(self, samples: Sequence[Any]) -> None:
        if self.scenario == "SingleStream":
            self.runner.safe_run([s.index for s in samples])
            self._complete(samples)
        elif self.scenario == "Offline":
            # LoadGen's issuing thread returns at once; a thread of ours answers
            self._offline = threading.Thread(target=self._process_offline,
                                             args=(list(samples),), daemon=True)
            self._offline.start()
        else:
            self.batcher.put(list(samples))

    def flush_queries(self) -> None:
        """LoadGen's end of issuing; the batcher's max_wait_ms flushes what is queued."""


def parse_detail_log(path: Path) -> dict[str, Any]:
    """key -> value of LoadGen's mlperf_log_detail.txt (the last value of each key)."""
    values: dict[str, Any] = {}
    for line in Path(path).read_text(errors="replace").splitlines():
        if not line.startswith(LOG_PREFIX):
            continue
        try:
            entry = json.loads(line[len(LOG_PREFIX):])
        except json.JSONDecodeError:
            continue
        values[str(entry.get("key"))] = entry.get("value")
    return values




def loadgen_test_settings(lg: Any, scenario: str, settings: Mapping[str, Any], *,
                  expected: Mapping[str, float], target_qps: float | None = None) -> Any:
    """LoadGen TestSettings of one run (performance mode, seeded schedules)."""
    test = lg.TestSettings()
    test.scenario = getattr(lg.TestScenario, scenario)
    test.mode = lg.TestMode.PerformanceOnly
    seed = int(settings.get("seed", 0))
    test.qsl_rng_seed = seed
    test.sample_index_rng_seed = seed + 1
    test.schedule_rng_seed = seed + 2
    test.min_query_count = int(settings["min_queries"])
    if scenario == "SingleStream":
        test.single_stream_expected_latency_ns = max(1, int(expected["single_s"] * 1e9))
        test.min_duration_ms = int(float(settings["duration_s"]) * 1e3)
    elif scenario == "Offline":
        rows = int(settings["max_batch"])
        test.offline_expected_qps = max(1.0, rows / max(expected["full_batch_s"], 1e-6))
        test.min_duration_ms = int(float(settings["duration_s"]) * 1e3)
        test.min_query_count = 1
    else:
        assert target_qps is not None
        trial_ms = int(float(settings["qps"]["trial_s"]) * 1e3)
        test.server_target_qps = float(target_qps)
        test.server_target_latency_ns = int(float(settings["latency_target_ms"]) * 1e6)
        test.server_target_latency_percentile = float(settings["latency_percentile"])
        test.min_duration_ms = trial_ms
        # LoadGen stops issuing here even when min_queries are not met yet; short, so
        # that an overloaded trial's backlog drains quickly
        test.max_duration_ms = int(1.5 * trial_ms)
    return test


def run_loadgen(lg: Any, sut: ServingSut, count: int, test: Any, log_dir: Path) -> dict[str, Any]:
    """One LoadGen test; its logs land in ``log_dir``; returns the parsed detail log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    output = lg.LogOutputSettings()
    output.outdir = str(log_dir)
    output.copy_summary_to_stdout = False
    log_settings = lg.LogSettings()
    log_settings.log_output = output
    log_settings.enable_trace = False
    lg_sut = lg.ConstructSUT(sut.issue_queries, sut.flush_queries)
    # every request stays in memory: loading and unloading are no-ops
    qsl = lg.ConstructQSL(count, count, _noop, _noop)
    sut.start()
    try:
        lg.StartTestWithLogSettings(lg_sut, qsl, test, log_settings)
    finally:
        sut.stop()
        lg.DestroyQSL(qsl)
        lg.DestroySUT(lg_sut)
    return parse_detail_log(log_dir / "mlperf_log_detail.txt")


def _noop(_: Any) -> None:
    return None


def percentile_key(percentile: float) -> str:
    return f"result_{percentile * 100:.2f}_percentile_latency_ns"


def ns_to_ms(value: Any) -> float | None:
    return None if value is None else float(value) / 1e6


def summary_view(detail: Mapping[str, Any]) -> dict[str, Any]:
    """The LoadGen figures a row keeps (the full logs stay beside the result)."""
    keep = ("result_validity", "result_perf_constraints_met", "result_min_duration_met",
            "result_min_queries_met", "early_stopping_met", "early_stopping_result",
            "result_invalid_reason", "result_query_count", "result_overlatency_query_count",
            "result_scheduled_samples_per_sec", "result_completed_samples_per_sec",
            "result_samples_per_second", "early_stopping_latency_ss",
            "result_qps_with_loadgen_overhead", "result_mean_latency_ns",
            "result_min_latency_ns", "result_max_latency_ns", "loadgen_version",
            "loadgen_git_commit_hash", "num_errors")
    out = {k: detail[k] for k in keep if k in detail}
    out.update({k: v for k, v in detail.items() if k.startswith(("effective_",))
                or (k.startswith("result_") and k.endswith("_percentile_latency_ns"))})
    return out


