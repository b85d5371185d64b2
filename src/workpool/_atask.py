"""``AsyncTask``: the future that ``AsyncPool.submit`` returns."""

from __future__ import annotations

import asyncio
from typing import Any, Generic, Protocol, TypeVar

from ._result import Result, make_result
from ._units import Failure, Unit
from .errors import TaskCancelled

__all__ = ["AsyncTask"]

R = TypeVar("R")


class _Host(Protocol):
    def cancel_unit(self, unit: Unit) -> bool: ...


class AsyncTask(asyncio.Future[R], Generic[R]):
    """A task submitted to an :class:`AsyncPool`: an :class:`asyncio.Future` with an ``id``.

    ``await task`` gives the value or raises the task's error (``TaskTimeout`` at a
    deadline). ``cancel()`` also stops a running task (its coroutine is cancelled); awaiting
    it then raises :class:`asyncio.CancelledError`, as for any future, while
    ``await task.outcome()`` gives its :class:`Result`, which holds ``TaskCancelled``. A
    coroutine awaiting the task that is itself cancelled cancels the task, as asyncio does.
    """

    stoppable = True  # Sink: cancel() stops the running task alone
    splittable = False  # (one call)

    def __init__(self, host: _Host, id: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self.id = id
        """Unique per pool, increasing in submission order."""
        self._host = host
        self._unit: Unit | None = None
        self._done_as: tuple[Any, Any, int, float] | None = None

    def __repr__(self) -> str:
        state = "cancelled" if self.cancelled() else "finished" if self.done() else "pending"
        return f"<AsyncTask {self.id} {state}>"

    def cancel(self, msg: Any = None) -> bool:
        """Cancel the task, queued or running. False when it had already finished (or its
        call returned before the cancel could stop it)."""
        if self.done():
            return False
        unit = self._unit
        if unit is not None and not self._host.cancel_unit(unit):
            return False  # it returned first: its outcome is on its way
        if self.cancelled():
            return True  # the pool's delivery (in this thread) cancelled it already
        return super().cancel(msg)

    async def outcome(self) -> Result[R]:
        """Wait for the task and return its :class:`Result` (never raises the task's error)."""
        await asyncio.wait([self])
        if not self.cancelled():
            self.exception()  # retrieved: asyncio must not log it as "never retrieved"
        done_as = self._done_as
        if done_as is None:  # cancelled before the pool knew of it
            error = TaskCancelled(f"task {self.id} was cancelled")
            return make_result(self.id, (), None, error, None, 0, 0.0)
        o, item, attempt, duration = done_as
        if type(o) is Failure:
            return make_result(self.id, item, None, o.error, o.traceback, attempt, duration)
        return make_result(self.id, item, o, None, None, attempt, duration)

    # -- Sink protocol, called by the engine (from any thread)

    def started(self) -> None:
        pass

    def active(self) -> bool:
        return True

    def moved(self, unit: Unit) -> None:
        self._unit = unit  # so cancel() finds the task where it went

    def deliver(self, chunk: Unit) -> None:
        loop = self.get_loop()
        if asyncio.events._get_running_loop() is loop:
            self._settle(chunk)
        else:
            try:
                loop.call_soon_threadsafe(self._settle, chunk)
            except RuntimeError:
                pass  # the loop is closed: nobody can await this task any more

    def _settle(self, chunk: Unit) -> None:
        o = chunk.out[0]
        self._done_as = (o, chunk.entries[0], chunk.attempt, chunk.durs[0])
        self._unit = None
        if self.done():
            return
        if type(o) is not Failure:
            self.set_result(o)
        elif chunk.cancelled:
            asyncio.Future.cancel(self)
        else:
            error = o.error
            if isinstance(error, StopIteration):  # a future cannot hold one (it means "done")
                wrapped = RuntimeError(f"task {self.id} raised StopIteration")
                wrapped.__cause__ = error
                error = wrapped
            self.set_exception(error)
