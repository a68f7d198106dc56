"""What a config entry names, with no runtime and no config machinery behind it.

Backends import these; the config module imports the backend registry to validate
options. Keeping them here means neither imports the other at load time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A config value is wrong; the message names the key and what is allowed."""


@dataclass(frozen=True)
class BackendSpec:
    """One entry of `backends:` after defaults."""

    name: str
    kind: str
    device: str
    precision: str
    options: Mapping[str, Any]

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> BackendSpec:
        return cls(
            name=entry["name"],
            kind=entry["kind"],
            device=entry.get("device", "cpu"),
            precision=entry.get("precision", "fp32"),
            options=dict(entry.get("options") or {}),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "device": self.device,
            "precision": self.precision,
            "options": dict(self.options),
        }
