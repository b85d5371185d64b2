"""Timers: task deadlines, retry backoff and idle retirement, on an injectable clock.

One pool keeps its timers in a heap under the engine's lock, and one thread (started when a
timer is added, gone when none is left) fires them: it calls the engine's handler, under the
lock, for every timer that is due, and delivers what the handler returns once the lock is
released.

Time comes from a :class:`Clock`. The real one is ``time.monotonic``; a test gives a fake one
whose time moves only when the test says so (``tests/fakeclock.py``), which makes timeout,
backoff and idle-retirement tests exact and instant instead of a matter of real seconds.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from ._config import NO_LIMIT

__all__ = ["REAL_CLOCK", "Clock", "RealClock", "Timers"]

# Timer kinds.
RETRY = 0  # payload: a unit waiting for its next attempt
DEADLINE = 1  # payload: (slot, run number): the deadline of the call that run started
IDLE = 2  # payload: (slot, park number): a worker idle for idle_timeout retires
SPLIT = 3  # payload: None: a running unit turns late; an idle worker may take its rest
ROOM = 4  # payload: None: the rate limit lets a task start again: waiting submitters look


class Clock(Protocol):
    """Where the engine reads the time, and how its timer thread waits for it."""

    def now(self) -> float:
        """Seconds on a monotonic scale."""

    def wait(self, cond: threading.Condition, due: float | None) -> None:
        """Wait on ``cond`` (its lock held) until notified, or until this clock reaches ``due``."""


class RealClock:
    """``time.monotonic``."""

    now = staticmethod(time.monotonic)

    def wait(self, cond: threading.Condition, due: float | None) -> None:
        if due is None:
            cond.wait()
        else:
            cond.wait(min(max(0.0, due - time.monotonic()), NO_LIMIT))


REAL_CLOCK = RealClock()

Handler = Callable[[int, Any, float], list[Any]]

# Seconds the firing thread waits for a new timer once none is left, before it ends.
LINGER = 0.5


class Timers:
    """A heap of ``(due, seq, kind, payload)`` fired by a thread of its own (lock: the
    engine's, held by every caller but the thread)."""

    def __init__(
        self,
        lock: threading.RLock,
        clock: Clock,
        handler: Handler,
        deliver: Callable[[list[Any]], object],
        name: str,
        *,
        linger: bool = False,
    ) -> None:
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition(lock)
        self._clock = clock
        self._handler = handler
        self._deliver = deliver
        self._name = name
        self._thread: threading.Thread | None = None
        # Wait LINGER seconds for a new timer before the thread ends (timers that come in
        # runs); not on a test's clock, whose advance() waits for the thread to park, nor
        # once the pool shuts down (keep).
        self._linger = linger and clock is REAL_CLOCK
        if hasattr(clock, "subscribe"):
            clock.subscribe(self._cv)  # a fake clock wakes the thread when its time moves

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, due: float, kind: int, payload: Any) -> None:
        """Fire ``(kind, payload)`` at ``due`` (lock held)."""
        first = not self._heap or due < self._heap[0][0]
        heapq.heappush(self._heap, (due, next(self._seq), kind, payload))
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"{self._name}-timers", daemon=True
            )
            self._thread.start()
        elif first:
            self._cv.notify()

    def payloads(self, kind: int) -> Iterable[Any]:
        """The payloads of the timers of ``kind`` (lock held)."""
        return [p for (_, _, k, p) in self._heap if k == kind]

    def keep(self, predicate: Callable[[int, Any], bool]) -> None:
        """Drop every timer for which ``predicate(kind, payload)`` is false (lock held): the
        pool shuts down, and the thread ends as soon as no timer is left (no lingering)."""
        self._linger = False
        self._heap = [t for t in self._heap if predicate(t[2], t[3])]
        heapq.heapify(self._heap)
        self._cv.notify()

    def thread(self) -> threading.Thread | None:
        """The firing thread, if one runs (lock held)."""
        return self._thread

    def _run(self) -> None:
        lingered = False
        while True:
            deliveries: list[Any] = []
            with self._cv:
                heap = self._heap
                now = self._clock.now()
                while heap and heap[0][0] <= now:
                    _, _, kind, payload = heapq.heappop(heap)
                    deliveries += self._handler(kind, payload, now)
                if not deliveries:
                    if not self._heap:
                        if lingered or not self._linger:
                            self._thread = None
                            return
                        # Timers come in runs (a split timer per worker that goes idle):
                        # wait a moment for the next before ending, rather than start a
                        # thread for each. A shutdown (keep) ends the wait at once.
                        lingered = True
                        self._cv.wait(LINGER)
                        continue
                    lingered = False
                    self._clock.wait(self._cv, self._heap[0][0])
                    continue
            self._deliver(deliveries)
