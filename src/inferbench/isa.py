"""The CPU instruction-set features that decide CPU results.

INT8 GEMMs run on AVX-512 VNNI (or AVX-VNNI, or AMX-INT8) where the CPU has them and
fall back to slower AVX2 / AVX-512 sequences elsewhere; BF16 GEMMs need AVX512_BF16 or
AMX-BF16 to be faster than FP32 (without them runtimes emulate BF16 or quietly run
FP32). The same sweep gave ONNX Runtime INT8 1.8x over torch FP32 at batch 16 on an
AVX2-only machine and 5.4x on one with AVX-512 VNNI and BF16, so every result records
these features (fingerprint ``cpu_isa``) and the BF16 backends check them before they
run.

Read from the ``flags`` line of /proc/cpuinfo (what the kernel exposes to this
process, hypervisor masking included), or from py-cpuinfo where there is no
/proc/cpuinfo and py-cpuinfo is installed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")

# /proc/cpuinfo flag -> the name a reader knows, in the order they are reported.
FEATURES: dict[str, str] = {
    "avx2": "AVX2",
    "avx512f": "AVX-512F",
    "avx512bw": "AVX-512BW",
    "avx512vl": "AVX-512VL",
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX512_BF16",
    "amx_tile": "AMX",
    "amx_bf16": "AMX-BF16",
    "amx_int8": "AMX-INT8",
}
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class CpuIsa:
    """The decisive features of one CPU (flags as /proc/cpuinfo spells them)."""

    flags: frozenset[str]
    source: str = "/proc/cpuinfo"

    def has(self, flag: str) -> bool:
        return flag in self.flags

    @property
    def names(self) -> list[str]:
        """Reader-facing names of the features present, e.g. ["AVX2", "AVX-512F"]."""
        return [name for flag, name in FEATURES.items() if flag in self.flags]

    @property
    def int8_dot_product(self) -> bool:
        """INT8 dot-product instructions (VNNI or AMX-INT8)."""
        return any(flag in self.flags for flag in INT8_DOT_FLAGS)

    @property
    def bf16(self) -> bool:
        """Native BF16 arithmetic (AVX512_BF16 or AMX-BF16)."""
        return any(flag in self.flags for flag in BF16_FLAGS)

    def bf16_missing_reason(self) -> str | None:
        """Why BF16 cannot run natively here (None when it can)."""
        if self.bf16:
            return None
        return (f"BF16 needs AVX512_BF16 or AMX-BF16; this CPU has neither "
                f"({self.describe()})")

    def int8_note(self) -> str:
        """What the INT8 GEMMs of this CPU run on, for statements about INT8 speed."""
        if self.has("amx_int8"):
            return "with AMX-INT8"
        if self.has("avx512_vnni"):
            return "with AVX-512 VNNI"
        if self.has("avx_vnni"):
            return "with AVX-VNNI"
        if self.has("avx512f"):
            return "with AVX-512 but no VNNI"
        if self.has("avx2"):
            return "with AVX2 only (no VNNI)"
        return "without AVX2"

    def bf16_note(self) -> str:
        if self.has("amx_bf16"):
            return "with AMX-BF16"
        if self.has("avx512_bf16"):
            return "with AVX512_BF16"
        return "without AVX512_BF16 or AMX (BF16 emulated or not run)"

    def describe(self) -> str:
        return ", ".join(self.names) or "none of " + ", ".join(FEATURES.values())


def parse_cpuinfo(text: str, source: str = "/proc/cpuinfo") -> CpuIsa:
    """Features from /proc/cpuinfo text: the flags every processor entry shares
    (x86 ``flags``, Arm ``Features``)."""
    per_cpu: list[set[str]] = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            per_cpu.append(set(value.split()))
    common = set.intersection(*per_cpu) if per_cpu else set()
    return CpuIsa(frozenset(flag for flag in common if flag in FEATURES), source)


def from_flags(flags: Iterable[str], source: str) -> CpuIsa:
    return CpuIsa(frozenset(f.lower() for f in flags if f.lower() in FEATURES), source)


_CACHED: CpuIsa | None = None


def detect(cpuinfo: Path = CPUINFO) -> CpuIsa:
    """This machine's features (cached per process for the default path)."""
    global _CACHED
    if cpuinfo == CPUINFO and _CACHED is not None:
        return _CACHED
    try:
        found = parse_cpuinfo(cpuinfo.read_text(), str(cpuinfo))
    except OSError:
        found = _from_py_cpuinfo()
    if cpuinfo == CPUINFO:
        _CACHED = found
    return found


def _from_py_cpuinfo() -> CpuIsa:
    try:
        import cpuinfo  # py-cpuinfo, optional: only where /proc/cpuinfo is missing
    except ImportError:
        return CpuIsa(frozenset(), "unknown (no /proc/cpuinfo, py-cpuinfo not installed)")
    return from_flags(cpuinfo.get_cpu_info().get("flags", []), "py-cpuinfo")


def fingerprint_fields(isa: CpuIsa | None = None) -> dict[str, Any]:
    """What the fingerprint records: reader names (``cpu_isa``, the summary shows them
    per target) and the raw flags with their source."""
    isa = isa or detect()
    return {"cpu_isa": isa.names, "cpu_isa_flags": sorted(isa.flags),
            "cpu_isa_source": isa.source}


def from_fingerprint(fingerprint: Mapping[str, Any] | None) -> CpuIsa | None:
    """The features a result's fingerprint recorded (None for results without them)."""
    flags = (fingerprint or {}).get("cpu_isa_flags")
    if not isinstance(flags, list):
        return None
    return from_flags([str(f) for f in flags], "fingerprint")


def row_note(row: Mapping[str, Any] | None, precision: str) -> str:
    """" (CPU with AVX-512 VNNI)"-style note for a statement about a CPU row's INT8 or
    BF16 speed, from the features its fingerprint recorded ("" when it has none or the
    row is not a CPU row)."""
    if not row or row.get("device") != "cpu":
        return ""
    fingerprint = row.get("fingerprint")
    found = from_fingerprint(fingerprint if isinstance(fingerprint, Mapping) else None)
    if found is None:
        return ""
    note = found.int8_note() if precision == "int8" else found.bf16_note()
    return f" (CPU {note})"
