"""The ledger: the pool's counters, and the snapshots built from them.

Every item of work is in exactly one of five states, and every change of state moves one
count to another, so that at every moment::

    submitted == queued + running + succeeded + failed + cancelled

The ledger has no lock of its own: the engine changes it under the engine's lock, which is
what makes :meth:`snapshot` consistent. Accounting is per item: a unit of ``n`` items that a
worker holds counts 1 item as running and ``n - 1`` as queued (a worker runs one call at a
time), so ``running`` never exceeds the workers.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._reports import LatencySummary, ShutdownReport, Stats, UnstartedTask

__all__ = ["Ledger"]

_LATENCY_SAMPLES = 2048  # recent run times kept for percentiles: enough for a stable p99


class Ledger:
    """Counters of one pool. Fields are public to the engine, which moves them directly on
    its hot paths (an attribute store, not a method call, per transition)."""

    __slots__ = (
        "abandoned",
        "ahead",
        "ahead_items",
        "cancelled",
        "failed",
        "latency",
        "queued",
        "retried",
        "running",
        "started_at",
        "submitted",
        "succeeded",
        "timed_out",
        "unstarted",
    )

    def __init__(self, now: float) -> None:
        self.submitted = 0
        self.queued = 0
        self.running = 0
        self.succeeded = 0
        self.failed = 0
        self.cancelled = 0
        self.timed_out = 0  # of failed
        self.retried = 0  # extra attempts scheduled
        # Units sent ahead to a busy worker (see the engine's send-ahead section): the engine
        # counts each as one running call (it holds the worker's next turn), a user as queued.
        self.ahead = 0
        self.ahead_items = 0
        self.abandoned = 0  # threads left in a call that timed out or was cancelled
        self.latency: deque[float] = deque(maxlen=_LATENCY_SAMPLES)
        self.unstarted: list[UnstartedTask] = []  # accepted, cancelled before they ran
        self.started_at = now

    def idle(self) -> bool:
        """Nothing queued or running: ``join()`` may return."""
        return not self.queued and not self.running

    def check(self) -> None:
        """Assert the invariant (for tests and debugging)."""
        total = self.queued + self.running + self.succeeded + self.failed + self.cancelled
        assert self.submitted == total, self.snapshot(0, 0, 0, 0, self.started_at)
        assert min(self.queued, self.running, self.ahead, self.abandoned) >= 0

    def snapshot(
        self, workers: int, max_workers: int, idle: int, blocked: int, now: float
    ) -> Stats:
        """A frozen :class:`Stats` of the counters now (engine lock held)."""
        from ._reports import Stats

        samples = sorted(self.latency)
        done = self.succeeded + self.failed
        uptime = now - self.started_at
        ahead = self.ahead
        return Stats(
            submitted=self.submitted,
            queued=self.queued + ahead,
            running=self.running - ahead,
            succeeded=self.succeeded,
            failed=self.failed,
            cancelled=self.cancelled,
            timed_out=self.timed_out,
            retried=self.retried,
            workers=workers,
            max_workers=max_workers,
            uptime=uptime,
            throughput=done / uptime if uptime > 0 else 0.0,
            latency=_summary(samples),
            sent_ahead=self.ahead_items,
            abandoned=self.abandoned,
            idle_workers=idle,
            blocked_submitters=blocked,
        )

    def report(self, finished: bool) -> ShutdownReport:
        """A :class:`ShutdownReport` of the counters now."""
        from ._reports import ShutdownReport

        return ShutdownReport(
            completed=self.succeeded,
            failed=self.failed,
            cancelled=self.cancelled,
            unstarted=list(self.unstarted),
            timed_out=self.timed_out,
            finished=finished,
        )


def _summary(samples: list[float]) -> LatencySummary | None:
    if not samples:
        return None
    from ._reports import LatencySummary

    last = len(samples) - 1

    def pick(q: float) -> float:
        return samples[min(last, int(q * len(samples)))]

    return LatencySummary(p50=pick(0.5), p90=pick(0.9), p99=pick(0.99), max=samples[-1])
