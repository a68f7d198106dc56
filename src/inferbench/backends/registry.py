"""Name -> backend class. Every module in this package registers itself."""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inferbench.backends.base import Backend

_REGISTRY: dict[str, type[Backend]] = {}
_SKIP = {"base", "registry"}


def register(cls: type[Backend]) -> type[Backend]:
    if cls.kind in _REGISTRY and _REGISTRY[cls.kind] is not cls:
        raise ValueError(f"backend kind {cls.kind!r} registered twice")
    _REGISTRY[cls.kind] = cls
    return cls


def _discover() -> None:
    import inferbench.backends as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _SKIP and not info.name.startswith("_"):
            importlib.import_module(f"inferbench.backends.{info.name}")


def kinds() -> frozenset[str]:
    if not _REGISTRY:
        _discover()
    return frozenset(_REGISTRY)


def get(kind: str) -> type[Backend]:
    if not _REGISTRY:
        _discover()
    return _REGISTRY[kind]
