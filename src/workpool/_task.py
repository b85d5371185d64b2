"""``Task``: the future that ``submit`` returns."""

from __future__ import annotations

import concurrent.futures
import threading
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ._config import NO_LIMIT
from ._units import Failure, Unit

if TYPE_CHECKING:
    from ._result import Result
from .errors import TaskCancelled


class TaskHost(Protocol):
    """What a Task needs of its pool's engine."""

    conditions: list[threading.Condition]

    def cancel_unit(self, unit: Unit) -> bool: ...

    def own_wait_begins(self, task: Any) -> Any: ...

    def own_wait_ends(self, slot: Any) -> None: ...


R = TypeVar("R")
_PENDING = "PENDING"  # concurrent.futures._base.PENDING
_RUNNING = "RUNNING"  # concurrent.futures._base.RUNNING
_FINISHED = "FINISHED"
_DONE_STATES = frozenset({"CANCELLED", "CANCELLED_AND_NOTIFIED", _FINISHED})
# A pool's futures share this many conditions, by task id. A Condition of its own per future
# (what Future.__init__ makes) costs about a microsecond and seven objects for the garbage
# collector to track; with a few hundred thousand tasks in flight that is a quarter of the
# cost of submit. The price is that a task finishing wakes the waiters of its stripe, which
# is why result() and exception() wait again until their own task is done.
CONDITION_STRIPES = 32
_STRIPE = CONDITION_STRIPES - 1

__all__ = ["Task"]


class Task(concurrent.futures.Future[R], Generic[R]):
    """A submitted task: a :class:`concurrent.futures.Future` with an ``id`` and its ``Result``.

    ``cancel()`` also works while the task runs: on the thread backend the task's
    ``current_task().cancelled`` turns true and the future fails at once with
    :class:`TaskCancelled` (a ``CancelledError``); a process worker is killed. Such a task
    ran, so ``cancelled()`` stays False: it is True for a task cancelled before it started.
    """

    stoppable = True  # Sink: cancel() stops the running task alone
    splittable = False  # (one call)

    def __init__(self, engine: TaskHost, id: int) -> None:
        # Future.__init__, with a condition shared by a stripe of the pool's tasks instead of
        # a new one per task (see CONDITION_STRIPES).
        self._condition = engine.conditions[id & _STRIPE]
        self._state = _PENDING
        self._result = None
        self._exception = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Any] = []
        self.id = id
        """Unique per pool, increasing in submission order."""
        self._engine = engine
        self._unit: Unit | None = None
        # (outcome, item, attempt, duration) once delivered: the unit itself is let go, so a
        # finished task holds no more than a ThreadPoolExecutor future does.
        self._done_as: tuple[Any, Any, int, float] | None = None

    def _wait_done(self, timeout: float | None) -> None:
        """Wait until the task is done or ``timeout`` passed.

        The condition is shared with other tasks, so a wake-up may be for another task:
        unlike Future's own wait, this waits again until this task is done.
        """
        if timeout is not None and timeout >= NO_LIMIT:
            timeout = None  # inf: no limit (threading's waits reject it)
        # A task of this pool that waits for ever for another: its worker is blocked on the
        # pool (WouldDeadlock if no worker would be left to run the other).
        blocked = None if timeout is not None else self._engine.own_wait_begins(self)
        try:
            with self._condition:
                self._condition.wait_for(lambda: self._state in _DONE_STATES, timeout)
        finally:
            if blocked is not None:
                self._engine.own_wait_ends(blocked)

    def result(self, timeout: float | None = None) -> R:
        """The task's return value; raises its exception, ``CancelledError`` or ``TimeoutError``."""
        if self._state != _FINISHED:
            self._wait_done(timeout)
        return super().result(0)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The task's exception (None if it succeeded); waits like :meth:`result`."""
        if self._state != _FINISHED:
            self._wait_done(timeout)
        return super().exception(0)

    def __repr__(self) -> str:
        return f"<Task {self.id} {self._state.lower()}>"

    def settled(self) -> bool:
        """``done()`` without taking the task's lock (the engine asks, holding its own)."""
        return self._state in _DONE_STATES

    def cancel(self) -> bool:
        """Cancel the task, queued or running. False when it had already finished."""
        unit = self._unit
        if unit is None or self.done():
            return super().cancel()  # True if it was cancelled, as Future.cancel answers
        if not self._engine.cancel_unit(unit):
            return False
        # A worker process (or Dask task) running it is being killed: the pool settles the
        # task when the kill lands, a moment later, with this same TaskCancelled (a stop
        # counts from the moment it is asked). The future says so now: cancel() said True.
        with self._condition:
            if self._state not in _DONE_STATES:
                error = TaskCancelled(f"task {self.id} was cancelled")
                self._done_as = (Failure(error, None), unit.entries[0], unit.attempt, 0.0)
                self.set_exception(error)
        return True

    def outcome(self, timeout: float | None = None) -> Result[R]:
        """Wait for the task and return its :class:`Result` (never raises the task's error).

        Raises :class:`TimeoutError` if it does not finish within ``timeout`` seconds.
        """
        from ._result import make_result

        if timeout is not None and timeout >= NO_LIMIT:
            timeout = None
        concurrent.futures.wait([self], timeout)
        if not self.done():
            raise TimeoutError(f"task {self.id} did not finish within {timeout}s")
        done_as = self._done_as
        if done_as is None:  # cancelled before the engine knew of it
            return make_result(
                self.id, (), None, TaskCancelled(f"task {self.id} was cancelled"), None, 0, 0.0
            )
        o, item, attempt, duration = done_as
        if type(o) is Failure:
            return make_result(self.id, item, None, o.error, o.traceback, attempt, duration)
        return make_result(self.id, item, o, None, None, attempt, duration)

    # -- Sink protocol, called by the engine

    def started(self) -> None:
        # PENDING -> RUNNING, which is all set_running_or_notify_cancel() does for a pending
        # future, without its lock: called under the engine lock, and while the task is in
        # the engine's hands every cancel() goes through that lock too. (A retry starts a
        # task that already runs.)
        if self._state == _PENDING:
            self._state = _RUNNING

    def active(self) -> bool:
        return True

    def deliver(self, chunk: Unit) -> None:
        o = chunk.out[0]
        # The Result is built only if outcome() asks for it.
        self._done_as = (o, chunk.entries[0], chunk.attempt, chunk.durs[0])
        self._unit = None
        try:
            if type(o) is not Failure:
                self.set_result(o)
            elif not chunk.cancelled or not super().cancel():
                # Running (or waiting to retry) when cancelled: it ran, so it finishes with
                # the TaskCancelled (a CancelledError) and cancelled() stays False: a
                # CANCELLED task is one that never ran (the shutdown report's unstarted).
                self.set_exception(o.error)
            else:
                self.set_running_or_notify_cancel()  # wakes wait() and as_completed()
        except concurrent.futures.InvalidStateError:
            pass  # cancel() settled it as the kill was asked (its outcome: TaskCancelled)

    def moved(self, unit: Unit) -> None:
        self._unit = unit  # so cancel() finds the task where it went
