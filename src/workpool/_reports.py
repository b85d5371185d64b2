"""What a pool reports about itself: Stats snapshots and the ShutdownReport.

A module of its own, imported when first needed (a stats() call, a shutdown): creating these
dataclasses is most of what importing workpool would otherwise cost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LatencySummary", "ShutdownReport", "Stats", "UnstartedTask"]


@dataclass(frozen=True)
class UnstartedTask:
    """A task that was accepted but never ran, as listed in a :class:`ShutdownReport`.

    Call ``fn(*args, **kwargs)`` to run it, or persist the pieces and requeue them later.
    """

    index: int
    """The input index (``map``/``results``) or the task id (``submit``)."""
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ShutdownReport:
    """What ``shutdown`` did: lifetime counts, and every queued task that never ran."""

    completed: int
    failed: int
    cancelled: int
    unstarted: list[UnstartedTask]
    timed_out: int = 0
    """Of ``failed``, how many ended by ``TaskTimeout``."""
    finished: bool = True
    """False when ``shutdown(wait=False)`` returned before the drain ended, or a timeout cut it."""


@dataclass(frozen=True)
class LatencySummary:
    """Task run-time percentiles, in seconds, over the most recent tasks."""

    p50: float
    p90: float
    p99: float
    max: float


@dataclass(frozen=True)
class Stats:
    """A consistent snapshot of a pool's counters.

    ``submitted == queued + running + succeeded + failed + cancelled`` holds in every snapshot,
    and ``running <= workers``. ``timed_out`` is the part of ``failed`` that timed out;
    ``retried`` counts extra attempts.
    """

    submitted: int
    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    timed_out: int
    retried: int
    workers: int
    """Live workers now."""
    max_workers: int
    """The current maximum (``workers`` given to the pool, or to ``resize``)."""
    uptime: float
    """Seconds since the pool started."""
    throughput: float
    """Finished tasks per second since the pool started."""
    latency: LatencySummary | None
    """Run-time percentiles of recent tasks, ``None`` before the first one finishes."""
    sent_ahead: int = 0
    """Of ``queued``, the items already handed to a busy worker to run next (process
    backend: sent while it runs its current batch, so it never waits for a round trip)."""
    abandoned: int = 0
    """Threads abandoned in a call that timed out or was cancelled and has not returned yet
    (thread backend; not counted in ``workers``). A number that keeps growing means tasks
    that ignore ``current_task().cancelled``."""
    idle_workers: int = 0
    """Live workers waiting for work."""
    blocked_submitters: int = 0
    """Callers blocked in ``submit`` (or a ``map``/``results`` intake) by a full queue."""
    backpressure_seconds: float = 0.0
    """In a Pipeline: seconds this stage had work it could start but was held back because
    the next stage was full (the next stage is slower)."""
    starvation_seconds: float = 0.0
    """In a Pipeline: seconds this stage had free workers and nothing to do while more was
    still coming (the previous stage is slower)."""
