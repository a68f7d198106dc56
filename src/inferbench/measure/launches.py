"""The process that starts a benchmark launch: thread settings, the launch's record.

Each launch of a row runs in a fresh worker process (:mod:`inferbench.measure.harness`
measures inside it); the process that starts it only spawns it and writes its record,
once per launch. It therefore imports nothing beyond the standard library: numpy,
the config machinery and the backends would add about 0.2 s to every launch.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

Launcher = Callable[[int, Path], "str | None"]
"""Runs launch ``i`` in a fresh process writing its record to the path; returns None
when it did, else how the process died."""


def set_thread_env(threads: int) -> None:
    """Thread counts must be set before torch or onnxruntime are imported."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def launch_record(launch: Launcher, index: int, path: Path) -> dict[str, Any]:
    """Launch ``index`` in a fresh process; its record, or an error record when the
    process died (a crash in the runtime must still leave a row)."""
    started = now()
    how = launch(index, path)
    if how is not None:
        record: dict[str, Any] = {
            "status": "error",
            "reason": f"benchmark process died ({how}); out of memory or a crash in the "
                      "runtime"}
    else:
        record = json.loads(path.read_text())
    record.update(launch=index, started_at=started, finished_at=now())
    return record


def repeatable(record: Mapping[str, Any]) -> bool:
    """Whether another launch could say something new after this record."""
    return record["status"] in ("ok", "contended", "parity_failed")


def skipped_record(previous: Mapping[str, Any], index: int) -> dict[str, Any]:
    """The record of a launch not run because the one before it was unavailable or
    failed: the same outcome, marked so that it is not counted as a launch."""
    return {**previous, "launch": index, "skipped": True}
