"""The exceptions workpool raises, in one place.

Hierarchy::

    WorkpoolError                      base of everything workpool raises
    ├── ConfigError (ValueError)       bad arguments, raised by the call that got them
    ├── PoolClosed (RuntimeError)      submit/map/results after close() or shutdown()
    ├── WouldDeadlock                  a task waited on its own pool with no worker left to go on
    ├── TaskError                      raised by Pool.map: a task failed (``__cause__`` is its exception,
    │                                  ``.result`` the failed Result)
    ├── TaskTimeout (TimeoutError)     a task ran past its deadline
    ├── TaskCancelled (CancelledError) a task was cancelled before or while it ran
    ├── WorkerCrashed                  the worker died under a task (``.exitcode``, ``.signal``)
    ├── RemoteError                    a task's exception that could not travel back as itself
    └── Interrupted                    a signal stopped the work (``.report`` is the ShutdownReport)

``PoolClosed`` is also a :class:`RuntimeError` (what ``Executor.submit`` raises after
shutdown), ``TaskTimeout`` a :class:`TimeoutError` and ``TaskCancelled`` a
:class:`concurrent.futures.CancelledError`, so code written for executors catches them.
Every exception pickles with its attributes, so it can cross a process boundary.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._reports import ShutdownReport
    from ._result import Result

__all__ = [
    "ConfigError",
    "Interrupted",
    "PoolClosed",
    "RemoteError",
    "TaskCancelled",
    "TaskError",
    "TaskTimeout",
    "WorkerCrashed",
    "WorkpoolError",
    "WouldDeadlock",
]


class WorkpoolError(Exception):
    """Base class of every exception workpool raises."""


class ConfigError(WorkpoolError, ValueError):
    """An argument is invalid. The message names it, the bad value, and what is allowed."""


class PoolClosed(WorkpoolError, RuntimeError):
    """The pool no longer accepts work: ``close()`` or ``shutdown()`` was called.

    Also raised when a signal started a drain (``handle_signals=True``), when the interpreter
    is shutting down, and in a forked child for a pool of its parent. A ``RuntimeError``, as
    ``Executor.submit`` promises after shutdown.
    """


class WouldDeadlock(WorkpoolError):
    """A task waited on its own pool, and every worker of the pool was waiting on it too.

    Raised by a submit into the pool's full queue (no worker left to free room), and by
    ``Task.result()``/``exception()`` with no timeout for a task of the same pool (no worker
    left to run it). Waiting could never end, so the call fails instead. Use ``try_submit``,
    more workers or a larger ``queue_size``, a timeout, or a second pool for the inner work.
    """


class TaskError(WorkpoolError):
    """Raised by ``Pool.map`` when a task fails.

    ``__cause__`` is the task's own exception and ``.result`` the failed :class:`Result`.
    """

    def __init__(self, message: str, result: Result[Any]) -> None:
        super().__init__(message)
        self.result = result

    def __reduce__(self) -> Any:
        return (type(self), (self.args[0], self.result))


class TaskTimeout(WorkpoolError, TimeoutError):
    """A task ran longer than its ``task_timeout``."""


class TaskCancelled(WorkpoolError, concurrent.futures.CancelledError):
    """A task was cancelled: by ``Task.cancel()``, a shutdown, or a broken-off iteration."""


class WorkerCrashed(WorkpoolError):
    """The worker died while running the task (segfault, ``os._exit``, OOM kill).

    ``exitcode`` is the process exit status when it exited, ``signal`` the signal number
    when a signal killed it; either may be ``None``.
    """

    def __init__(
        self, message: str, *, exitcode: int | None = None, signal: int | None = None
    ) -> None:
        super().__init__(message)
        self.exitcode = exitcode
        self.signal = signal

    def __reduce__(self) -> Any:
        return (_rebuild_crashed, (self.args[0], self.exitcode, self.signal))


def _rebuild_crashed(message: str, exitcode: int | None, signal: int | None) -> WorkerCrashed:
    return WorkerCrashed(message, exitcode=exitcode, signal=signal)


class RemoteError(WorkpoolError):
    """A task's exception that could not travel back as itself (it would not pickle).

    ``type_name`` is the qualified name of the original type; the message is its ``str``.
    """

    def __init__(self, message: str, type_name: str) -> None:
        super().__init__(message)
        self.type_name = type_name

    def __reduce__(self) -> Any:
        return (type(self), (self.args[0], self.type_name))


class Interrupted(WorkpoolError):
    """A signal (SIGINT or SIGTERM) stopped the work; ``.report`` says what became of it."""

    def __init__(self, message: str, report: ShutdownReport, signal: int | None = None) -> None:
        super().__init__(message)
        self._report = report
        self._signal = signal
        # The second signal's error is raised by the handler before the cancellation it
        # asks for has landed (a handler must not wait), and before the pool has read which
        # signal came second (Python runs pending handlers in signal-number order, not in the
        # order they came): its report and its signal are taken when first read.
        self._settle: Callable[[], tuple[ShutdownReport, int]] | None = None

    def _settled(self) -> None:
        settle = self._settle
        if settle is not None:
            self._settle = None
            try:
                self._report, self._signal = settle()
            except Exception:  # (never fails reading an attribute: the snapshot stands)
                pass

    @property
    def report(self) -> ShutdownReport:
        self._settled()
        return self._report

    @report.setter
    def report(self, report: ShutdownReport) -> None:
        self._report = report
        self._settle = None

    @property
    def signal(self) -> int | None:
        """The signal that stopped the work (for a second signal's cancel, that one)."""
        self._settled()
        return self._signal

    @signal.setter
    def signal(self, signal: int | None) -> None:
        self._signal = signal

    def __reduce__(self) -> Any:
        return (type(self), (self.args[0], self.report, self.signal))
