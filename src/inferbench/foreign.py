"""Which result files of other targets the summary reads, and from where.

Results of a target this run does not measure come from copies in
``results/bench/<target>/`` and from the folders named in ``include_results``
(e.g. the committed docs/results/h100). Per target, backend and batch a copy wins
over an included file and a later included folder over an earlier one, with one
exception: a row that says only that its machine could not measure it
(``unavailable``, e.g. config/gpu.yaml run on a machine without a GPU) never hides
a measured row of another source. Light: the Snakefile calls this at parse time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

Key = tuple[str, str, str]  # (target, backend, file name)


def result_files(folder: Path, model: str) -> dict[Key, Path]:
    """{(target, backend, bs<N>.json): path} of one target folder (named after its target)."""
    return {(folder.name, p.parts[-2], p.name): p
            for p in sorted(folder.glob(f"{model}/*/bs*.json")) if not p.name.startswith(".")}


def row_status(path: Path) -> str | None:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # the summary's reader reports the file itself
    return raw.get("status") if isinstance(raw, dict) else None


def pick_foreign(included: Iterable[Path], copied: Iterable[Path], model: str,
                 measured_targets: Iterable[str]) -> dict[Key, Path]:
    """The file each foreign (target, backend, batch) row is read from.

    ``included`` and ``copied`` are target folders, lowest priority first.
    """
    skip = set(measured_targets)
    chosen: dict[Key, Path] = {}
    for folder in [*included, *copied]:
        for key, path in result_files(Path(folder), model).items():
            if key[0] in skip:
                continue
            held = chosen.get(key)
            if (held is not None and row_status(path) == "unavailable"
                    and row_status(held) != "unavailable"):
                continue  # an unmeasurable machine's row never hides a measured one
            chosen[key] = path
    return dict(sorted(chosen.items()))


def source_counts(chosen: dict[Key, Path]) -> dict[str, dict[str, int]]:
    """{target: {folder the rows came from: row count}} for the summary header."""
    counts: dict[str, dict[str, int]] = {}
    for (target, _, _), path in chosen.items():
        folder = str(path.parents[2])
        counts.setdefault(target, {})
        counts[target][folder] = counts[target].get(folder, 0) + 1
    return counts
