"""A clock whose time moves only when a test says so: timers become exact and instant.

Give it to a pool (``Pool(..., _clock=clock)``): the engine reads the time from it and its
timer thread waits on it. ``advance(seconds)`` moves the time on and returns once every timer
thread of the pools on this clock has fired what came due and is waiting again, so a test can
check the outcome right after, without a real wait.
"""

from __future__ import annotations

import threading
import time
from typing import Any

__all__ = ["FakeClock"]


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._generation = 0
        self._lock = threading.Condition()
        self._conds: list[threading.Condition] = []
        self._parked: dict[threading.Thread, int] = {}  # timer thread -> generation it saw

    def now(self) -> float:
        return self._now

    def subscribe(self, cond: threading.Condition) -> None:
        with self._lock:
            self._conds.append(cond)

    def wait(self, cond: threading.Condition, due: float | None) -> None:
        """The timer thread waits until the test moves the time (``due`` is not a real time)."""
        me = threading.current_thread()
        with self._lock:
            self._parked[me] = self._generation
            self._lock.notify_all()
        cond.wait()

    def advance(self, seconds: float, timeout: float = 5.0) -> None:
        with self._lock:
            self._now += seconds
            self._generation += 1
            generation = self._generation
            conds = list(self._conds)
        for cond in conds:
            with cond:
                cond.notify_all()
        # A timer thread that fired its last timer exits instead of waiting again: look at
        # the threads every few ms too, not only when one parks.
        deadline = time.monotonic() + timeout
        with self._lock:
            while not (settled := self._settled(generation)) and time.monotonic() < deadline:
                self._lock.wait(0.005)
        if not settled:
            raise AssertionError("the pool's timer threads did not settle after advance()")

    def _settled(self, generation: int) -> bool:
        for thread, seen in list(self._parked.items()):
            if not thread.is_alive():
                del self._parked[thread]
            elif seen < generation:
                return False
        return True


def parked(clock: Any) -> int:
    """Timer threads waiting on ``clock`` now."""
    return sum(1 for t in clock._parked if t.is_alive())
