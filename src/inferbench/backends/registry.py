"""Name -> backend class. Every module in this package registers itself."""

from __future__ import annotations

import importlib
import os
import pkgutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inferbench.backends.base import Backend

_REGISTRY: dict[str, type[Backend]] = {}
_SKIP = {"base", "registry"}
PLUGINS_ENV = "INFERBENCH_BACKEND_MODULES"
_discovered = False


def register(cls: type[Backend]) -> type[Backend]:
    if cls.kind in _REGISTRY and _REGISTRY[cls.kind] is not cls:
        raise ValueError(f"backend kind {cls.kind!r} registered twice")
    _REGISTRY[cls.kind] = cls
    return cls


def _discover() -> None:
    # A flag, not "registry empty": a module registered early (imported directly)
    # must not hide the others.
    global _discovered
    if _discovered:
        return
    _discovered = True
    import inferbench.backends as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _SKIP and not info.name.startswith("_"):
            importlib.import_module(f"inferbench.backends.{info.name}")
    # Backends outside the package (a site's own runtime, the tests' fault-injecting
    # backend): importable module names, comma-separated, each registering itself.
    for name in filter(None, os.environ.get(PLUGINS_ENV, "").split(",")):
        importlib.import_module(name.strip())


def kinds() -> frozenset[str]:
    _discover()
    return frozenset(_REGISTRY)


def get(kind: str) -> type[Backend]:
    _discover()
    return _REGISTRY[kind]
