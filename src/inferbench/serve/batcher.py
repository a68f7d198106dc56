"""The Server scenario's dynamic batcher: a queue with ``max_batch`` and ``max_wait_ms``.

LoadGen's issue thread puts requests in (:meth:`DynamicBatcher.put`); a worker thread
(:class:`BatchWorker`) takes batches out and runs them. A batch leaves the queue as
soon as ``max_batch`` requests wait, or when the oldest has waited ``max_wait_ms``,
whichever comes first (Triton's dynamic batcher and TorchServe's ``max_batch_delay``
behave the same way). The clock and the wait are injectable, so that tests can drive
the batcher through simulated arrivals without sleeping.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Clock = Callable[[], float]
# Waits on the batcher's condition for at most the given seconds (None: until notified).
Waiter = Callable[[threading.Condition, "float | None"], None]


def _condition_wait(condition: threading.Condition, timeout: float | None) -> None:
    condition.wait(timeout)


@dataclass(frozen=True)
class Batch:
    items: list[Any]
    # clock time each item was put in, and when the batch left the queue
    arrivals: list[float]
    formed_at: float

    @property
    def oldest_wait_s(self) -> float:
        return self.formed_at - min(self.arrivals)


class DynamicBatcher:
    def __init__(self, max_batch: int, max_wait_ms: float, clock: Clock = time.monotonic,
                 waiter: Waiter = _condition_wait) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, not {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, not {max_wait_ms}")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1e3
        self._clock = clock
        self._waiter = waiter
        self._queue: deque[tuple[float, Any]] = deque()
        self._condition = threading.Condition()
        self._closed = False

    def put(self, items: list[Any]) -> None:
        with self._condition:
            now = self._clock()
            self._queue.extend((now, item) for item in items)
            self._condition.notify()

    def close(self) -> None:
        """No more requests: the worker runs what is queued, then stops."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def __len__(self) -> int:
        return len(self._queue)

    def ready(self, now: float) -> tuple[int, float | None]:
        """(requests to take now, seconds to wait otherwise; None: until one arrives)."""
        if not self._queue:
            return 0, None
        if len(self._queue) >= self.max_batch:
            return self.max_batch, 0.0
        deadline = self._queue[0][0] + self.max_wait_s
        if now >= deadline or self._closed:
            return len(self._queue), 0.0
        return 0, deadline - now

    def take(self) -> Batch | None:
        """The next batch, blocking until one is due; None once closed and empty."""
        with self._condition:
            while True:
                now = self._clock()
                count, wait = self.ready(now)
                if count:
                    taken = [self._queue.popleft() for _ in range(count)]
                    return Batch(items=[item for _, item in taken],
                                 arrivals=[t for t, _ in taken], formed_at=now)
                if self._closed:
                    return None
                self._waiter(self._condition, wait)


class BatchWorker(threading.Thread):
    """Runs ``process`` on every batch the batcher forms, until it is closed."""

    def __init__(self, batcher: DynamicBatcher, process: Callable[[Batch], None]) -> None:
        super().__init__(name="inferbench-batch-worker", daemon=True)
        self.batcher = batcher
        self.process = process
        self.error: BaseException | None = None

    def run(self) -> None:
        while (batch := self.batcher.take()) is not None:
            try:
                self.process(batch)
            except BaseException as exc:  # reported by the job, never swallowed
                self.error = exc
                self.batcher.close()
                return
