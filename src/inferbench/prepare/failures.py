"""A preparation stage that fails for the model leaves a record, not a traceback.

When the inputs or the FP32 reference cannot be made (a tokenizer without a pad
token, a config without ``decoder_start_token_id``, weights that give NaN), the
stage writes its outputs as *failure records* holding a one-line cause with what
to change in the config, and prints that line. Every stage downstream passes the
record on (the ONNX export writes an empty graph whose manifest has status
``error``), and each benchmark job turns it into an ``error`` row with that reason,
so the summary shows the model was tried and why it gave no numbers.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

from inferbench.io import atomic_path, atomic_write_json, atomic_write_npz, sha256_file

FAILURE_KEY = "inferbench_failure"


class StageFailed(RuntimeError):
    """An upstream stage recorded that it failed; the message is its reason."""


# (fragment of the exception text, lowercased) -> the cause and the fix, in words
KNOWN_CAUSES = (
    ("does not have a padding token",
     "the tokenizer has no pad token, so the sentences cannot be padded to seq_len; remove "
     "`sentences:` from the config (inputs become seeded synthetic ids) or give the "
     "tokenizer a pad_token in its tokenizer_config.json"),
    ("no padding token is defined",
     "the model config has no pad_token_id, so the model cannot run batches above 1; set "
     "pad_token_id in the model's config.json (model.architecture for source "
     "architecture) or use batch_sizes: [1]"),
    ("decoder_start_token_id",
     "the model config has no decoder_start_token_id, which an encoder-decoder model needs "
     "to start its decoder; set it in the model's config.json (model.architecture for "
     "source architecture; T5 uses its pad token id, 0)"),
)


def explain(exc: BaseException) -> str:
    """One line: the cause and, where known, what to change in the config."""
    from inferbench.measure.harness import is_out_of_memory

    text = str(exc)
    lowered = text.lower()
    for fragment, cause in KNOWN_CAUSES:
        if fragment in lowered:
            return cause
    first = text.strip().splitlines()[0] if text.strip() else ""
    if is_out_of_memory(exc):
        return (f"out of memory: {type(exc).__name__}: {first[:300]}; lower batch_sizes or "
                "seq_len")
    return f"{type(exc).__name__}: {first[:500]}"


def run_stage(stage: str, make: Callable[[], object], record: Callable[[str, str], None]
              ) -> str | None:
    """Run ``make``; on an exception, ``record(reason, traceback)`` and print one line.

    Returns the reason when the stage failed, else None.
    """
    try:
        make()
    except Exception as exc:
        reason = f"{stage} failed: {explain(exc)}"
        record(reason, traceback.format_exc(limit=8)[-4000:])
        print(f"inferbench {stage}: error (recorded; the benchmark rows of this batch size "
              f"will say it): {reason}", file=sys.stderr)
        return reason
    return None


def write_failed_npz(path: Path, reason: str) -> None:
    atomic_write_npz(path, {FAILURE_KEY: np.array(reason)})


def npz_failure(path: Path) -> str | None:
    """The reason recorded in a failure record, or None for a real output."""
    with np.load(path) as data:
        return str(data[FAILURE_KEY]) if FAILURE_KEY in data.files else None


def write_failed_onnx(path: Path, reason: str, variant: str) -> None:
    """An empty graph file whose manifest says why there is no graph."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"")
    atomic_write_json(Path(f"{path}.json"), {"status": "error", "reason": reason,
                                             "variant": variant, "sha256": sha256_file(path)})


def onnx_failure(path: Path) -> str | None:
    """The reason an ONNX file is a failure record, or None (a real graph, or unreadable:
    the hash check reports that)."""
    import json

    try:
        manifest = json.loads(Path(f"{path}.json").read_text())
    except (OSError, ValueError):
        return None
    if isinstance(manifest, dict) and manifest.get("status") == "error":
        return str(manifest.get("reason") or "failed upstream")
    return None
