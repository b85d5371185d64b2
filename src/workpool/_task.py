"""``Task``: the future that ``submit`` returns."""

from __future__ import annotations

import concurrent.futures
from typing import TYPE_CHECKING, Generic, TypeVar

from ._result import Result, make_result
from ._units import Failure, Unit
from .errors import TaskCancelled

if TYPE_CHECKING:
    from ._engine import Engine

R = TypeVar("R")
_PENDING = "PENDING"  # concurrent.futures._base.PENDING

__all__ = ["Task"]


class Task(concurrent.futures.Future[R], Generic[R]):
    """A submitted task: a :class:`concurrent.futures.Future` with an ``id`` and its ``Result``.

    ``cancel()`` also works while the task runs: on the thread backend the task's
    ``current_task().cancelled`` turns true and the future fails at once with
    :class:`TaskCancelled`; a process worker is killed.
    """

    def __init__(self, engine: Engine, id: int) -> None:
        super().__init__()
        self.id = id
        """Unique per pool, increasing in submission order."""
        self._engine = engine
        self._unit: Unit | None = None
        self._chunk: Unit | None = None

    def __repr__(self) -> str:
        return f"<Task {self.id} {self._state.lower()}>"

    def cancel(self) -> bool:
        """Cancel the task, queued or running. False when it had already finished."""
        unit = self._unit
        if unit is None or self.done():
            return super().cancel()  # True if it was cancelled, as Future.cancel answers
        return self._engine.cancel_unit(unit)

    def outcome(self, timeout: float | None = None) -> Result[R]:
        """Wait for the task and return its :class:`Result` (never raises the task's error).

        Raises :class:`TimeoutError` if it does not finish within ``timeout`` seconds.
        """
        concurrent.futures.wait([self], timeout)
        if not self.done():
            raise TimeoutError(f"task {self.id} did not finish within {timeout}s")
        chunk = self._chunk
        if chunk is None:  # cancelled before the engine knew of it
            return make_result(
                self.id, (), None, TaskCancelled(f"task {self.id} was cancelled"), None, 0, 0.0
            )
        o = chunk.out[0]
        item = chunk.entries[0]
        if type(o) is Failure:
            return make_result(
                self.id, item, None, o.error, o.traceback, chunk.attempt, chunk.durs[0]
            )
        return make_result(self.id, item, o, None, None, chunk.attempt, chunk.durs[0])

    # -- Sink protocol, called by the engine

    def started(self) -> None:
        if self._state == _PENDING:  # a retry starts a task that already runs
            self.set_running_or_notify_cancel()

    def active(self) -> bool:
        return True

    def deliver(self, chunk: Unit) -> None:
        self._chunk = chunk  # the Result is built only if outcome() asks for it
        o = chunk.out[0]
        if type(o) is not Failure:
            self.set_result(o)
        elif not chunk.cancelled or not super().cancel():
            self.set_exception(o.error)  # running (or retrying) when cancelled
        else:
            self.set_running_or_notify_cancel()  # wakes wait() and as_completed()

    def moved(self, unit: Unit) -> None:
        self._unit = unit  # so cancel() finds the task where it went

    _attach = moved
