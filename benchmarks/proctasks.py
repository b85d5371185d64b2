"""Task functions for the process-pool workloads (W2, W4, W6p, CRASH, P1, D1-D3).

They live in their own small module, not in ``__main__`` and not in a workload module, so that
every library pickles them by reference (plain ``pickle`` included) and a worker process imports
only this file, not the benchmark harness.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from pathlib import Path
from typing import Any


def noop(x: Any) -> Any:
    return x


def spin(n: int) -> int:
    """Pure-Python CPU work: ``n`` loop iterations (holds the GIL throughout)."""
    total = 0
    for i in range(n):
        total += i ^ (i >> 3)
    return total


_calibrated: dict[float, tuple[int, float]] = {}


def calibrate_spin(target: float) -> tuple[int, float]:
    """``(n, seconds)``: ``spin(n)`` takes ~``target`` s here (median of 7 after scaling).

    Calibrated once per target and interpreter (in the suite's own process, when a workload
    is built), so that every row of a workload gets the same ``n``.
    """
    if target not in _calibrated:
        n = 20_000
        while True:  # grow until one call is long enough to time well
            t0 = time.perf_counter()
            spin(n)
            dt = time.perf_counter() - t0
            if dt >= 0.005:
                break
            n *= 2
        for _ in range(2):  # scale to the target, then refine once on a median
            n = max(1, int(n * target / dt))
            samples = []
            for _ in range(7):
                t0 = time.perf_counter()
                spin(n)
                samples.append(time.perf_counter() - t0)
            dt = statistics.median(samples)
        _calibrated[target] = (n, dt)
    return _calibrated[target]


def timed_spin(n: int) -> float:
    """``spin(n)``; returns how long it ran in the worker (``perf_counter`` seconds)."""
    t0 = time.perf_counter()
    spin(n)
    return time.perf_counter() - t0


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def nap_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def stamp(_: Any = None) -> float:
    """Return the moment this task started (``time.monotonic``: one clock for all processes)."""
    return time.monotonic()


def kill_self(mark: str) -> None:
    """Write the current monotonic time to ``mark``, then SIGKILL this worker process."""
    Path(mark).write_text(repr(time.monotonic()))
    os.kill(os.getpid(), signal.SIGKILL)


def hold(started: str, release: str, guard: float = 10.0) -> float:
    """Occupy a worker: create ``started``, then wait until ``release`` exists (at most ``guard`` s)."""
    Path(started).touch()
    give_up = time.monotonic() + guard
    while not os.path.exists(release) and time.monotonic() < give_up:
        time.sleep(0.001)
    return time.monotonic()
