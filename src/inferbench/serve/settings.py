"""The `scenarios:` config: checks a schema cannot make, and each serving job's settings.

Imported by the Snakefile at parse time: no runtime, no LoadGen.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from inferbench.serve.tokenizer import ALLOWED, source_problem
from inferbench.spec import ConfigError

SCENARIOS = ("SingleStream", "Offline", "Server")
PADDINGS = ("pad_max", "dynamic", "buckets")
# One serving job's outputs under the results folder: <this>.json, and LoadGen's logs in
# <this>.loadgen/.
RESULT = "serve/{target}/{model}/{backend}/{scenario}-{padding}"


def enabled(config: Mapping[str, Any]) -> bool:
    return bool((config.get("scenarios") or {}).get("run"))


def traffic_file(config: Mapping[str, Any]) -> str | None:
    """The text file whose lines are the requests (None for synthetic traffic)."""
    traffic = config["scenarios"]["traffic"]
    if traffic["source"] != "sentences":
        return None
    return traffic.get("file") or config.get("sentences")


def traffic_tokenizer(config: Mapping[str, Any]) -> str | None:
    """``scenarios.traffic.tokenizer`` when the traffic reads a text file through it
    (rule traffic_tokenizer saves it), else None."""
    if not enabled(config) or traffic_file(config) is None:
        return None
    return config["scenarios"]["traffic"].get("tokenizer") or None


def check_scenarios(config: dict[str, Any]) -> None:
    """Refuse a `scenarios:` block that cannot run, naming the key (after the schema)."""
    scenarios = config.get("scenarios") or {}
    if not scenarios.get("run"):
        return
    qps = scenarios["qps"]
    if qps["min"] >= qps["max"]:
        raise ConfigError(
            f"config key 'scenarios.qps.min' ({qps['min']}) must be below "
            f"'scenarios.qps.max' ({qps['max']}); allowed: 0 < min < max")
    names = [entry["name"] for entry in config["backends"]]
    for key in ("backends", "per_backend"):
        unknown = sorted(set(scenarios.get(key) or []) - set(names))
        if unknown:
            raise ConfigError(
                f"config key 'scenarios.{key}': {unknown} not in `backends:`; allowed: "
                f"{', '.join(names)}")
    seq_len = int(config["seq_len"])
    too_long = [b for b in scenarios["buckets"] if b > seq_len]
    if too_long and "buckets" in scenarios["padding"]:
        raise ConfigError(
            f"config key 'scenarios.buckets': {too_long} exceed seq_len {seq_len}; "
            f"allowed: lengths 1..{seq_len}")
    traffic = scenarios["traffic"]
    source = traffic_file(config)
    if source:
        key = "scenarios.traffic.file" if traffic.get("file") else "sentences"
        if not Path(source).is_file():
            raise ConfigError(
                f"config key '{key}': traffic file {source!r} does not exist; allowed: a "
                "text file with one request a line (relative to the working directory)")
    tokenizer = traffic.get("tokenizer")
    problem = source_problem(tokenizer) if tokenizer is not None else ""
    if problem:
        raise ConfigError(
            f"config key 'scenarios.traffic.tokenizer': {problem}; allowed: {ALLOWED}")


def served_backends(config: Mapping[str, Any]) -> list[str]:
    chosen = config["scenarios"].get("backends")
    return [entry["name"] for entry in config["backends"]
            if not chosen or entry["name"] in chosen]


def batcher_settings(config: Mapping[str, Any], backend: str) -> dict[str, Any]:
    scenarios = config["scenarios"]
    own = (scenarios.get("per_backend") or {}).get(backend) or {}
    return {"max_batch": int(own.get("max_batch", scenarios["max_batch"])),
            "max_wait_ms": float(own.get("max_wait_ms", scenarios["max_wait_ms"]))}


def bucket_lengths(config: Mapping[str, Any]) -> list[int]:
    seq_len = int(config["seq_len"])
    return sorted({b for b in config["scenarios"]["buckets"] if b <= seq_len} | {seq_len})


def serve_settings(config: Mapping[str, Any], backend: str, scenario: str, padding: str
                   ) -> dict[str, Any]:
    """Everything one serving job uses, and nothing else (the rule's param)."""
    from inferbench.config import backend_batch_sizes, job_settings

    scenarios = config["scenarios"]
    bench = job_settings(config, backend)
    settings: dict[str, Any] = {
        "backend": bench["backend"],
        "threads": bench["threads"],
        "seq_len": bench["seq_len"],
        "task": bench["task"],
        "parity": bench["parity"],
        "contention_threshold": config["measurement"]["contention_threshold"],
        "warmup_iterations": config["measurement"]["warmup_iterations"],
        # shapes a static-shape backend was built for (its bench batch sizes)
        "batch_sizes": backend_batch_sizes(config, backend),
        "scenario": scenario,
        "padding": padding,
        "buckets": bucket_lengths(config) if padding == "buckets" else [],
        "seed": int(scenarios["traffic"]["seed"]),
        **batcher_settings(config, backend),
    }
    if scenario == "Server":
        settings.update(latency_target_ms=float(scenarios["latency_target_ms"]),
                        latency_percentile=float(scenarios["latency_percentile"]),
                        min_queries=int(scenarios["min_queries"]), qps=dict(scenarios["qps"]))
    else:
        settings.update(duration_s=float(scenarios["duration_s"]),
                        min_queries=int(scenarios["min_queries"]))
    if scenario != "Server":
        settings.pop("max_wait_ms")  # only the Server's batcher waits
    if scenario == "SingleStream":
        settings["max_batch"] = 1
    return settings


def traffic_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """What the traffic rule reads: the source and its sizes, the cap, the tokenizer."""
    traffic = dict(config["scenarios"]["traffic"])
    traffic.pop("file", None)
    return {**traffic, "seq_len": int(config["seq_len"])}
