"""``current_task()``: what a running task can know about itself (Go's ``ctx``).

The running task is found through a :class:`contextvars.ContextVar`: each worker thread, each
asyncio task and each worker process sets it to its own *source* (the slot it runs in), so a
coroutine sees its own task even when thousands share one thread.
"""

from __future__ import annotations

import time
from contextvars import ContextVar, Token
from typing import Any, Protocol

from .errors import TaskCancelled, WorkpoolError

__all__ = ["TaskContext", "current_source", "current_task", "set_source"]


class CancelProbe(Protocol):
    """Where a TaskContext reads its cancellation flag; each backend supplies one."""

    def cancel_requested(self) -> bool: ...


class TaskContext:
    """The running task's identity, deadline and cancellation flag.

    Get it with :func:`current_task` inside a task. Long tasks should poll ``cancelled`` (or
    call ``raise_if_cancelled()``) between steps and size their waits with ``remaining()``::

        def fetch_all(urls):
            ctx = workpool.current_task()
            for url in urls:
                ctx.raise_if_cancelled()
                get(url, timeout=ctx.remaining())
    """

    __slots__ = ("_probe", "attempt", "deadline", "id")

    def __init__(self, id: int, attempt: int, deadline: float | None, probe: CancelProbe) -> None:
        self.id = id
        """The task id (``submit``) or the input index (``map``/``results``)."""
        self.attempt = attempt
        """1 for the first attempt, 2 for the first retry, ..."""
        self.deadline = deadline
        """``time.monotonic()`` value at which the task times out, or None."""
        self._probe = probe

    @property
    def cancelled(self) -> bool:
        """True once the task was cancelled or timed out: stop as soon as you can."""
        return self._probe.cancel_requested()

    def remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), or None without a deadline."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def raise_if_cancelled(self) -> None:
        """Raise :class:`TaskCancelled` if the task was cancelled or timed out."""
        if self._probe.cancel_requested():
            raise TaskCancelled(f"task {self.id} was cancelled")

    def __repr__(self) -> str:
        return (
            f"TaskContext(id={self.id}, attempt={self.attempt}, deadline={self.deadline}, "
            f"cancelled={self.cancelled})"
        )


class ContextSource(Protocol):
    """A worker that knows which task it is running (a slot, a worker process's loop)."""

    #: The pool (engine) this worker belongs to, or None where there is none in reach (a
    #: worker process): how a task submitting into its own pool is recognised.
    owner: Any

    def task_context(self) -> TaskContext | None: ...


_source: ContextVar[ContextSource | None] = ContextVar("workpool_source", default=None)


def set_source(source: ContextSource | None) -> Token[ContextSource | None]:
    """Make ``source`` the worker of the current context (a thread, an asyncio task)."""
    return _source.set(source)


def current_source() -> ContextSource | None:
    """The worker the calling code runs in, or None outside a workpool task."""
    return _source.get()


def current_task() -> TaskContext:
    """Return the :class:`TaskContext` of the task running in this thread, coroutine or process.

    Raises :class:`WorkpoolError` when called outside a workpool task.
    """
    source = _source.get()
    ctx = source.task_context() if source is not None else None
    if ctx is None:
        raise WorkpoolError(
            "current_task() was called outside a workpool task; call it from inside a "
            "function that a Pool is running"
        )
    return ctx
