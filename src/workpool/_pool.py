"""``Pool``: the public face of the engine."""

from __future__ import annotations

import concurrent.futures
import itertools
import weakref
from collections.abc import Callable, Coroutine, Generator, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from ._config import check_count, check_flag, check_seconds
from ._engine import open_engine
from ._lifecycle import not_picklable
from ._progress import track
from ._signals import SignalGuard, drains_on_exit
from ._stream import Stream
from ._task import Task
from ._timers import REAL_CLOCK
from ._units import CALL_ARGS, CALL_KWARGS, Unit, is_coroutine_function
from .errors import ConfigError, Interrupted

if TYPE_CHECKING:
    from ._options import RateLimit
    from ._reports import ShutdownReport, Stats
    from ._result import Result

__all__ = ["Pool"]

P = ParamSpec("P")
R = TypeVar("R")
T1 = TypeVar("T1")
T2 = TypeVar("T2")

_pool_numbers = itertools.count(1)


class Pool(concurrent.futures.Executor):
    """A bounded pool of workers that returns a result for every task, errors included.

    ::

        with Pool(workers=8) as pool:
            for r in pool.results(fetch, urls):
                if r.ok:
                    save(r.value)
                else:
                    log.warning("item %d failed: %s", r.index, r.error)

    ``submit`` blocks while ``queue_size`` tasks wait (backpressure); ``map`` and ``results``
    read their input lazily, so an endless iterator runs in constant memory. Leaving the
    ``with`` block drains the pool: no new work, every accepted task finishes. An exception
    in the block (``KeyboardInterrupt`` too) cancels queued and running work instead.

    Options (all keyword-only but ``workers``): ``backend`` (``"thread"``), ``queue_size``
    (default ``2 * workers``; ``0`` is a hand-off), ``task_timeout`` (seconds), ``retries`` (an
    int or a :class:`Retry`), ``rate_limit`` (``"100/s"``, ``"30/min"``, starts per second, or
    a :class:`RateLimit` for bursts),
    ``min_workers`` and ``idle_timeout`` (elastic sizing), ``name``, ``handle_signals``
    (drain on the first SIGINT/SIGTERM, cancel on the second; a callable ``(signum, count)``
    instead of True is also told of each signal, from a helper thread) and backend-specific
    options (process: ``max_tasks_per_worker``, ``initializer``, ``initargs``,
    ``start_method``).

    Raises :class:`ConfigError` for any invalid option, naming it and what is allowed.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        backend: str = "thread",
        queue_size: int | None = None,
        task_timeout: float | None = None,
        retries: Any = 0,
        rate_limit: str | float | RateLimit | None = None,
        min_workers: int | None = None,
        idle_timeout: float | None = None,
        name: str | None = None,
        handle_signals: bool | Callable[[int, int], object] = False,
        **backend_options: Any,
    ) -> None:
        from ._options import PoolOptions

        clock = backend_options.pop("_clock", REAL_CLOCK)  # tests: a fake clock
        options = PoolOptions.check(
            workers,
            backend=backend,
            queue_size=queue_size,
            task_timeout=task_timeout,
            retries=retries,
            rate_limit=rate_limit,
            min_workers=min_workers,
            idle_timeout=idle_timeout,
            name=name,
            handle_signals=handle_signals,
            **backend_options,
        )
        self.name = name or f"workpool-{next(_pool_numbers)}"
        self._engine = engine = open_engine(options, self.name, clock)
        self._life = engine.lifecycle
        self.backend = backend
        notify = handle_signals if callable(handle_signals) else None
        self._signals = SignalGuard(engine, notify) if handle_signals else None
        # A pool dropped without shutdown still finishes what it accepted, then its workers go.
        weakref.finalize(self, self._life.close_when_dropped)

    # ------------------------------------------------------------------ context manager

    def __enter__(self) -> Pool:
        if self._signals is not None:
            self._signals.install()
        self._engine.start_workers()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        try:
            if drains_on_exit(exc_type, self._life.interrupted_by):
                report = self.shutdown(wait=True)
            else:
                report = self.shutdown(wait=True, cancel_futures=True, timeout=0)
        finally:
            if self._signals is not None:
                self._signals.restore()
        life = self._life
        if (
            life.interrupted_by is not None
            and not life.interrupt_reported
            and (exc_type is None or not issubclass(exc_type, Interrupted))
        ):
            life.interrupt_reported = True
            raise Interrupted(
                f"pool {self.name!r} was stopped by signal {life.interrupted_by}",
                report,
                life.interrupted_by,
            )
        return None

    # ------------------------------------------------------------------ intake

    def _task_unit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Task[Any], Unit]:
        if not callable(fn):
            raise TypeError(f"submit() needs a callable as its first argument, got {fn!r}")
        if is_coroutine_function(fn) and not self._engine.caps.coroutines:
            raise TypeError(_coroutine_message(fn, self.backend))
        engine = self._engine
        if self._signals is not None:
            self._signals.install_on_use()
        if engine.closed:
            raise engine.closed_error()
        task: Task[Any] = Task(engine, next(engine.task_ids))
        if kwargs:
            unit = Unit(fn, [args], CALL_KWARGS, task.id, task, kwargs)
        else:
            unit = Unit(fn, [args], CALL_ARGS, task.id, task)
        task.moved(unit)
        return task, unit

    # A coroutine function's task gives what the coroutine returns (the async and process
    # backends await it; the thread backend refuses it).
    @overload
    def submit(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Task[R]: ...

    @overload
    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Task[R]: ...

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Task[Any]:
        """Schedule ``fn(*args, **kwargs)``; block while the queue is full.

        Returns a :class:`Task` (a ``concurrent.futures.Future``). Raises :class:`PoolClosed`
        after ``close()``/``shutdown()``, and :class:`WouldDeadlock` when a task of this pool
        submits into it while every worker is blocked doing the same.
        """
        task, unit = self._task_unit(fn, args, kwargs)
        self._engine.put(unit, block=True)
        return task

    @overload
    def try_submit(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Task[R] | None: ...

    @overload
    def try_submit(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> Task[R] | None: ...

    def try_submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Task[Any] | None:
        """Like ``submit``, but never blocks: ``None`` when the queue is full."""
        task, unit = self._task_unit(fn, args, kwargs)
        if self._engine.put(unit, block=False):
            return task
        return None

    def _stream(
        self,
        fn: Callable[..., Any],
        iterables: tuple[Iterable[Any], ...],
        ordered: bool,
        timeout: float | None,
        chunksize: int | None,
        what: str,
    ) -> Stream:
        if not callable(fn):
            raise TypeError(f"{what}() needs a callable as its first argument, got {fn!r}")
        if is_coroutine_function(fn) and not self._engine.caps.coroutines:
            raise TypeError(_coroutine_message(fn, self.backend))
        if not iterables:
            raise TypeError(f"{what}() needs at least one iterable of inputs")
        for it in iterables:
            if not hasattr(it, "__iter__") and not hasattr(it, "__getitem__"):
                raise TypeError(f"{what}() inputs must be iterables, got {it!r}")
        if not isinstance(ordered, bool):
            raise TypeError(f"{what}() ordered must be True or False, got {ordered!r}")
        check_count("chunksize", chunksize, minimum=1, allow_none=True)
        timeout = check_seconds("timeout", timeout, allow_zero=True)
        engine = self._engine
        if engine.closed:
            raise engine.closed_error()
        if self._signals is not None:
            self._signals.install()
        # The stream holds the pool: `list(Pool(4).map(f, xs))` must not see the pool closed
        # (by its finalizer) while the map still runs.
        return Stream(
            engine, fn, iterables, ordered=ordered, timeout=timeout, chunksize=chunksize, owner=self
        )

    # Executor.map also takes no iterable at all (a TypeError here): hence the ignore.
    @overload  # type: ignore[override]
    def map(
        self,
        fn: Callable[[T1], Coroutine[Any, Any, R]],
        iterable: Iterable[T1],
        /,
        *,
        ordered: bool = ...,
        timeout: float | None = ...,
        chunksize: int | None = ...,
        progress: bool = ...,
    ) -> Generator[R, None, None]: ...

    @overload
    def map(
        self,
        fn: Callable[[T1], R],
        iterable: Iterable[T1],
        /,
        *,
        ordered: bool = ...,
        timeout: float | None = ...,
        chunksize: int | None = ...,
        progress: bool = ...,
    ) -> Generator[R, None, None]: ...

    @overload
    def map(
        self,
        fn: Callable[[T1, T2], Coroutine[Any, Any, R]],
        iterable: Iterable[T1],
        iterable2: Iterable[T2],
        /,
        *,
        ordered: bool = ...,
        timeout: float | None = ...,
        chunksize: int | None = ...,
        progress: bool = ...,
    ) -> Generator[R, None, None]: ...

    @overload
    def map(
        self,
        fn: Callable[[T1, T2], R],
        iterable: Iterable[T1],
        iterable2: Iterable[T2],
        /,
        *,
        ordered: bool = ...,
        timeout: float | None = ...,
        chunksize: int | None = ...,
        progress: bool = ...,
    ) -> Generator[R, None, None]: ...

    @overload
    def map(
        self,
        fn: Callable[..., Coroutine[Any, Any, R]],
        iterable: Iterable[Any],
        iterable2: Iterable[Any],
        iterable3: Iterable[Any],
        /,
        *iterables: Iterable[Any],
        ordered: bool = ...,
        timeout: float | None = ...,
        chunksize: int | None = ...,
        progress: bool = ...,
    ) -> Generator[R, None, None]: ...

    @overload
    def map(
        self,
        fn: Callable[..., R],
        iterable: Iterable[Any],
        iterable2: Iterable[Any],
        iterable3: Iterable[Any],
        /,
        *iterables: Iterable[Any],
        ordered: bool = ...,
        timeout: float | None = ...,
        chunksize: int | None = ...,
        progress: bool = ...,
    ) -> Generator[R, None, None]: ...

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        ordered: bool = True,
        timeout: float | None = None,
        chunksize: int | None = None,
        progress: bool = False,
    ) -> Generator[Any, None, None]:
        """Yield ``fn(item)`` for every input item, reading the input only as capacity frees.

        In input order by default (``ordered=False``: as they finish). At the first failed
        task it cancels this call's queued work and raises :class:`TaskError` (its
        ``__cause__`` is the task's exception, ``.result`` the failed Result). ``timeout``
        bounds, from this call, the wait for each next value (:class:`TimeoutError`).
        ``chunksize`` fixes the batch size that is otherwise chosen automatically.
        ``progress=True`` shows a progress bar on standard error when it is a terminal.
        """
        check_flag("map() progress", progress)
        values = self._stream(fn, iterables, ordered, timeout, chunksize, "map").values()
        return track(values, self.name, iterables, progress, ok=lambda v: True)

    @overload
    def results(
        self,
        fn: Callable[[T1], Coroutine[Any, Any, R]],
        iterable: Iterable[T1],
        /,
        *,
        ordered: bool = ...,
        timeout: float | None = ...,
        chunksize: int | None = ...,
        progress: bool = ...,
    ) -> Generator[Result[R], None, None]: ...

    @overload
    def results(
        self,
        fn: Callable[[T1], R],
        iterable: Iterable[T1],
        /,
        *,
        ordered: bool = ...,
        timeout: float | None = ...,
        chunksize: int | None = ...,
        progress: bool = ...,
    ) -> Generator[Result[R], None, None]: ...

    @overload
    def results(
        self,
        fn: Callable[[T1, T2], Coroutine[Any, Any, R]],
        iterable: Iterable[T1],
        iterable2: Iterable[T2],
        /,
        *,
        ordered: bool = ...,
        timeout: float | None = ...,
        chunksize: int | None = ...,
        progress: bool = ...,
    ) -> Generator[Result[R], None, None]: ...

    @overload
    def results(
        self,
        fn: Callable[[T1, T2], R],
        iterable: Iterable[T1],
        iterable2: Iterable[T2],
        /,
        *,
        ordered: bool = ...,
        timeout: float | None = ...,
        chunksize: int | None = ...,
        progress: bool = ...,
    ) -> Generator[Result[R], None, None]: ...

    @overload
    def results(
        self,
        fn: Callable[..., Coroutine[Any, Any, R]],
        iterable: Iterable[Any],
        iterable2: Iterable[Any],
        iterable3: Iterable[Any],
        /,
        *iterables: Iterable[Any],
        ordered: bool = ...,
        timeout: float | None = ...,
        chunksize: int | None = ...,
        progress: bool = ...,
    ) -> Generator[Result[R], None, None]: ...

    @overload
    def results(
        self,
        fn: Callable[..., R],
        iterable: Iterable[Any],
        iterable2: Iterable[Any],
        iterable3: Iterable[Any],
        /,
        *iterables: Iterable[Any],
        ordered: bool = ...,
        timeout: float | None = ...,
        chunksize: int | None = ...,
        progress: bool = ...,
    ) -> Generator[Result[R], None, None]: ...

    def results(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        ordered: bool = False,
        timeout: float | None = None,
        chunksize: int | None = None,
        progress: bool = False,
    ) -> Generator[Result[Any], None, None]:
        """Yield exactly one :class:`Result` per input item; never raises for a task's failure.

        As tasks finish by default; ``ordered=True`` keeps input order (with a bounded
        reorder window). Breaking out of the loop cancels the queued rest.
        """
        check_flag("results() progress", progress)
        results = self._stream(fn, iterables, ordered, timeout, chunksize, "results").results()
        return track(results, self.name, iterables, progress, ok=lambda r: r.ok)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop accepting work. Idempotent and thread-safe; accepted work still runs."""
        self._life.close()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every accepted task finished; False if ``timeout`` passed first."""
        timeout = check_seconds("timeout", timeout, allow_zero=True)
        if self._signals is not None:
            self._signals.install_on_use()
        return self._life.join(timeout)

    def shutdown(  # type: ignore[override]  # the contract returns a ShutdownReport
        self,
        wait: bool = True,
        *,
        cancel_futures: bool = False,
        timeout: float | None = None,
    ) -> ShutdownReport:
        """Close, then drain: wait up to ``timeout`` for queued and running work.

        At the deadline, queued work is cancelled (listed in ``report.unstarted``) and running
        work is cancelled too. ``cancel_futures=True`` cancels queued work at once.
        ``wait=False`` returns at once and drains in the background. Idempotent; safe from
        any thread and from a signal handler.
        """
        timeout = check_seconds("timeout", timeout, allow_zero=True)
        check_flag("shutdown() wait", wait)
        check_flag("shutdown() cancel_futures", cancel_futures)
        report = self._life.shutdown(wait, cancel_futures=cancel_futures, timeout=timeout)
        if self._signals is not None:
            self._signals.restore()  # only takes effect in the main thread
        return report

    def resize(self, workers: int) -> None:
        """Change the maximum number of workers. Shrinking never interrupts a running task."""
        n = check_count("workers", workers, minimum=1)
        assert n is not None
        if n < self._engine.min_workers:
            raise ConfigError(
                f"resize(workers={n}) is below min_workers={self._engine.min_workers}: "
                "the pool keeps at least min_workers; resize to that or more"
            )
        self._engine.resize(n)

    def stats(self) -> Stats:
        """A consistent snapshot of the counters (see :class:`Stats`)."""
        return self._engine.stats()

    @property
    def closed(self) -> bool:
        """True once the pool stopped accepting work."""
        return self._engine.closed

    def __reduce__(self) -> Any:
        # Said plainly (pickle would name a lock or a weak reference inside): a task sent to
        # a worker process, or a Dask worker, gets a copy of its arguments, never this object.
        raise TypeError(not_picklable(self))

    def __repr__(self) -> str:
        s = self._engine.stats()
        state = "closed" if self._engine.closed else "open"
        return (
            f"<Pool {self.name!r} {self.backend} {state} workers={s.workers}/{s.max_workers} "
            f"queued={s.queued} running={s.running}>"
        )


def _coroutine_message(fn: Callable[..., Any], backend: str) -> str:
    return (
        f"{fn!r} is a coroutine function: a {backend!r} pool would only create its coroutine, "
        "never run it. Run coroutines with backend='async' (Pool(backend='async')), or from "
        "async code with workpool.AsyncPool"
    )
