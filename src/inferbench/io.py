"""Atomic writes and content hashes.

Every file a rule produces is written to a temporary name in the same folder and
renamed into place, so an interrupted job never leaves a file that looks
complete; consumers check the hash its producer recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

# numpy is imported where arrays are written: the process that starts a benchmark
# launch writes only JSON and should not pay numpy's import (about 0.1 s) for it.


def _new_file_mode() -> int:
    """The mode open() gives a new file: 0o666 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


# mkstemp makes its files 0o600; a result renamed into place keeps the mode a plain
# write would have given it, so a results folder shared with a group stays readable.
NEW_FILE_MODE = _new_file_mode()


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, NEW_FILE_MODE)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True, default=_jsonable) + "\n")


def atomic_write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    import numpy as np

    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        # numpy's stub types the keyword arrays as `allow_pickle: bool`
        np.savez(fh, **arrays)  # type: ignore[arg-type]


def _jsonable(value: Any) -> Any:
    np = sys.modules.get("numpy")  # a numpy value exists only once numpy is imported
    if np is not None and isinstance(value, np.generic):
        return value.item()
    if np is not None and isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class CorruptArtifactError(RuntimeError):
    """A file does not match the hash its producer recorded."""


def rebuild_hint(output: Path) -> str:
    """How to remake a rule's output: deleting it is not enough while the results made
    from it exist (Snakemake does not remake a missing intermediate file). The command
    is the running workflow's own (cores, Snakefile, the user's --configfile), so it
    works when pasted."""
    from inferbench.recovery import rerun_prefix

    return f"rebuild it with: {rerun_prefix()} --forcerun {shlex.quote(str(output))}"


def verify_files(folder: Path, files: Mapping[str, str], produced_by: Path) -> None:
    """Check each file a build manifest lists (path relative to ``folder``: sha256)."""
    for name, expected in files.items():
        path = Path(folder) / name
        if not path.is_file():
            problem = "is missing"
        elif sha256_file(path) != expected:
            problem = "is corrupt or was changed after it was built"
        else:
            continue
        raise CorruptArtifactError(
            f"{path} {problem} (its build manifest {Path(produced_by).name} records sha256 "
            f"{expected[:12]}); {rebuild_hint(produced_by)}")


def verify_manifest(artifact: Path, manifest: Mapping[str, Any]) -> None:
    expected = manifest.get("sha256")
    if not expected:
        raise CorruptArtifactError(f"{artifact}: its manifest records no sha256")
    actual = sha256_file(artifact)
    if actual != expected:
        raise CorruptArtifactError(
            f"{artifact} is corrupt or was changed after it was built (sha256 {actual[:12]} "
            f"!= recorded {expected[:12]}); {rebuild_hint(artifact)}")
