"""Turn user-given names (model ids, targets) into safe path components."""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(raw: str, max_len: int = 64) -> str:
    """Return a file-name-safe form of ``raw`` that cannot escape a folder.

    Slashes, spaces, shell metacharacters and ``..`` collapse to ``-``; a short
    hash of the original is appended whenever anything had to change, so two
    different ids never map to the same folder.
    """
    cleaned = _UNSAFE.sub("-", raw).strip("-.")
    cleaned = re.sub(r"\.{2,}", ".", cleaned)
    if not cleaned:
        cleaned = "model"
    if cleaned != raw or len(cleaned) > max_len:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
        cleaned = f"{cleaned[: max_len - 9]}-{digest}"
    return cleaned
