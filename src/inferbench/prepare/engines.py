"""Engine builds that a backend needs before it can be benchmarked.

The build runs in its own rule so that its time is recorded as build time, never
as latency, and a rerun reuses the engine. A backend that cannot build here
(missing library, no GPU) gets a manifest with status ``unavailable`` and the
reason, which its benchmark jobs report as their row.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from inferbench.backends.base import Unsupported
from inferbench.config import BackendSpec
from inferbench.io import atomic_write_json, sha256_file


def build_engine(settings: Mapping[str, Any], batch_sizes: list[int], model_dir: Path,
                 card_path: Path, onnx: Path | None, manifest_path: Path,
                 calibration: Path | None = None) -> dict[str, Any]:
    from inferbench.backends import registry
    from inferbench.backends.base import Artifacts
    from inferbench.prepare.model import read_json
    from inferbench.prepare.onnx import load_verified

    spec = BackendSpec.from_entry(settings["backend"])
    backend = registry.get(spec.kind)(spec, int(settings["threads"]))
    out_dir = manifest_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"backend": spec.name, "kind": spec.kind,
                                "batch_sizes": batch_sizes}
    availability = backend.build_availability()
    if not availability.ok:
        manifest.update(status="unavailable", reason=availability.reason)
    else:
        try:
            if onnx is not None:
                load_verified(onnx)
            artifacts = Artifacts(model_dir=model_dir, card=read_json(card_path), onnx=onnx,
                                  build=out_dir, calibration=calibration,
                                  calibration_settings=settings.get("calibration") or {})
            start = time.perf_counter()
            details = backend.build(artifacts, out_dir, batch_sizes, int(settings["seq_len"]))
            # A backend may name working caches that its runtime keeps updating (and
            # validates itself, like Inductor's): those are not frozen by hashes.
            unhashed = tuple(details.get("unhashed", ()))
            manifest.update(status="ok", build_s=time.perf_counter() - start, **details)
            # Paths relative to the build folder; the bench job checks each hash.
            manifest["files"] = {str(p.relative_to(out_dir)): sha256_file(p)
                                 for p in sorted(out_dir.rglob("*"))
                                 if p.is_file() and p != manifest_path
                                 and p.relative_to(out_dir).parts[0] not in unhashed}
        except Unsupported as exc:
            manifest.update(status="unavailable", reason=f"unsupported here: {exc}"[:2000])
        except Exception as exc:
            manifest.update(status="error", reason=f"{type(exc).__name__}: {exc}"[:2000],
                            traceback=traceback.format_exc(limit=8)[-4000:])
    atomic_write_json(manifest_path, manifest)
    return manifest
