"""The values workpool hands back: Result, Stats, ShutdownReport."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

R = TypeVar("R")

__all__ = ["LatencySummary", "Result", "ShutdownReport", "Stats", "UnstartedTask"]


@dataclass(frozen=True)
class Result(Generic[R]):
    """The outcome of one task: its value or its error, never both.

    ``map``/``results`` yield one per input item; ``Task.outcome()`` gives one for a submitted task.

    >>> r = Result(index=0, item=3, value=9)
    >>> r.ok, r.unwrap()
    (True, 9)
    """

    index: int
    """Position of the item in the input (0-based); for ``submit``, the task id."""
    item: Any
    """The input item (the args tuple when several iterables were given)."""
    value: R | None = None
    """The return value when ok."""
    error: BaseException | None = None
    """The exception when not ok."""
    traceback: str | None = None
    """The formatted traceback from where the task ran."""
    attempts: int = 1
    """How many attempts ran (1 + retries used)."""
    duration: float = 0.0
    """Seconds spent running (last attempt)."""
    stage: str | None = None
    """In a Pipeline, the name of the stage that produced this result (or failed)."""

    @property
    def ok(self) -> bool:
        """True when the task returned a value."""
        return self.error is None

    def unwrap(self) -> R:
        """Return the value, or raise the task's error."""
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


_new = object.__new__


def make_result(
    index: int,
    item: Any,
    value: Any,
    error: BaseException | None,
    traceback: str | None,
    attempts: int,
    duration: float,
) -> Result[Any]:
    # A frozen dataclass's __init__ pays one object.__setattr__ per field; filling __dict__ in
    # one call is ~2x faster, which matters when results() yields a million Results a second.
    r: Result[Any] = _new(Result)
    r.__dict__.update(
        index=index,
        item=item,
        value=value,
        error=error,
        traceback=traceback,
        attempts=attempts,
        duration=duration,
        stage=None,
    )
    return r


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
