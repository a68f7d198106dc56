"""What else used the machine while a benchmark's timed loops ran.

On a 2-core machine one other busy process halves what a CPU benchmark gets, and
nothing inside the benchmark can tell. The tracker reads the machine's CPU time
(psutil), this process's own CPU time, steal time and the load average around the
timed loops; other processes' share of the machine's capacity above a threshold
marks the launch as contended.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

DEFAULT_THRESHOLD = 0.10  # other processes' CPU time, as a fraction of all cores


def _busy(times: Any) -> float:
    """CPU seconds spent on work: not idle, not waiting for I/O, not stolen (on Linux
    guest time is already inside user time)."""
    return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq",
                                                       "softirq"))


class ContentionTracker:
    """Context manager around the timed loops of one launch.

    ``threshold``: the fraction of the machine's capacity other processes may use
    before the launch counts as contended. ``exclude_pids``: processes whose CPU time
    counts as our own (none by default; the harness's parent sleeps in waitpid).
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD,
                 clock: Callable[[], float] = time.monotonic, psutil_module: Any = None
                 ) -> None:
        if psutil_module is None:
            import psutil as psutil_module
        self._psutil = psutil_module
        self._clock = clock
        self.threshold = threshold
        self.record: Any = None

    def _own_cpu(self) -> float:
        own = self._psutil.Process().cpu_times()
        return float(own.user + own.system)

    def __enter__(self) -> ContentionTracker:
        self._wall0 = self._clock()
        self._machine0 = self._psutil.cpu_times()
        self._own0 = self._own_cpu()
        self._load0 = os.getloadavg()[0]
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        from inferbench.results import Contention

        wall = max(self._clock() - self._wall0, 1e-9)
        machine = self._psutil.cpu_times()
        own = self._own_cpu() - self._own0
        busy = _busy(machine) - _busy(self._machine0)
        steal = getattr(machine, "steal", 0.0) - getattr(self._machine0, "steal", 0.0)
        cpus = self._psutil.cpu_count() or 1
        other = max(0.0, busy - own)
        fraction = other / (wall * cpus)
        steal_fraction = steal / (wall * cpus)
        why = []
        if self.threshold >= 1.0:  # the check is off; the figures are still recorded
            pass
        elif fraction > self.threshold:
            why.append(f"other processes used {fraction:.0%} of the machine's {cpus} cores")
        if self.threshold < 1.0 and steal_fraction > self.threshold:
            why.append(f"the hypervisor stole {steal_fraction:.0%} of the CPU time")
        self.record = Contention(
            wall_s=wall, cpu_count=cpus, own_cpu_s=own, other_cpu_s=other,
            other_cpu_fraction=fraction, steal_s=steal, loadavg_before=self._load0,
            loadavg_after=os.getloadavg()[0], contended=bool(why), why="; ".join(why))
