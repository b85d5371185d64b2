"""``AsyncPool``: the pool for asyncio code, on the same engine as ``Pool``."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import signal
import weakref
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from ._astream import AsyncStream, AsyncStreamIterator, results_iterator, values_iterator
from ._atask import AsyncTask
from ._backends import Backend, create_backend
from ._config import check_count, check_flag, check_seconds
from ._context import current_source
from ._engine import Engine, open_engine
from ._lifecycle import not_picklable
from ._options import PoolOptions, RateLimit
from ._reports import ShutdownReport, Stats
from ._result import Result
from ._signals import drains_on_exit
from ._units import CALL_ARGS, CALL_KWARGS, Unit
from .errors import ConfigError, Interrupted, WouldDeadlock

__all__ = ["AsyncPool"]

P = ParamSpec("P")
R = TypeVar("R")
T1 = TypeVar("T1")
T2 = TypeVar("T2")

_pool_numbers = itertools.count(1)
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class AsyncPool:
    """A bounded pool for asyncio code: a result for every task, errors included.

    ::

        async with AsyncPool(workers=100, rate_limit="50/s", task_timeout=10) as pool:
            async for r in pool.results(fetch, urls):     # urls: an iterable or async iterable
                if r.ok:
                    save(r.value)

    Coroutine functions run on the caller's event loop, at most ``workers`` at once, without
    a thread per coroutine; plain functions run on threads (``backend="async"``, the default;
    ``"thread"`` is the same here) or in worker processes (``backend="process"``, where a
    coroutine function runs on the worker process's own loop). Nothing blocks the loop:
    ``await submit`` waits while the queue is full, ``map``/``results`` read their input
    only as capacity frees up. Leaving ``async with`` drains the pool; an exception in the
    body, or the enclosing task being cancelled, cancels queued and running work instead.

    Options are those of :class:`Pool` (``workers`` default: 100 for coroutines, the CPU
    count for ``"process"``). Raises :class:`ConfigError` for any invalid option.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        backend: str = "async",
        queue_size: int | None = None,
        task_timeout: float | None = None,
        retries: Any = 0,
        rate_limit: str | float | RateLimit | None = None,
        min_workers: int | None = None,
        idle_timeout: float | None = None,
        name: str | None = None,
        handle_signals: bool = False,
        **backend_options: Any,
    ) -> None:
        if backend == "thread":
            backend = "async"  # coroutines on the loop, plain functions on threads
        if not isinstance(handle_signals, bool):
            raise ConfigError(
                f"handle_signals must be True or False for an AsyncPool, got {handle_signals!r}"
            )
        self._clock = backend_options.pop("_clock", None)  # tests: a fake clock
        self._options = PoolOptions.check(
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
        self.name = name or f"asyncpool-{next(_pool_numbers)}"
        self.backend = backend
        # Made now, opened at first use (on the running loop): its options are checked here,
        # at construction, as Pool's are.
        self._backend_obj: Backend | None = create_backend(
            self._options.backend, self._options.backend_options
        )
        self._engine_: Engine | None = None
        self._closed_early = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._signals_installed: dict[int, Any] = {}
        self._signal_count = 0
        self._signal_drain: asyncio.Future[ShutdownReport] | None = None

    # ------------------------------------------------------------------ the engine

    @property
    def _engine(self) -> Engine:
        """The engine, opened on the running loop at first use."""
        engine = self._engine_
        if engine is None:
            loop = asyncio.get_running_loop()
            args: dict[str, Any] = {} if self._clock is None else {"clock": self._clock}
            made, self._backend_obj = self._backend_obj, None
            engine = open_engine(self._options, self.name, loop=loop, backend=made, **args)
            self._engine_ = engine
            self._loop = loop
            if self._closed_early:
                engine.lifecycle.close()  # close() came before the first use
            # A pool dropped without shutdown finishes what it accepted, then stops.
            weakref.finalize(self, engine.lifecycle.close_when_dropped)
        elif asyncio.get_running_loop() is not self._loop:
            raise RuntimeError(
                f"AsyncPool {self.name!r} belongs to the event loop it was first used on; "
                "create one pool per event loop"
            )
        return engine

    # ------------------------------------------------------------------ context manager

    async def __aenter__(self) -> AsyncPool:
        engine = self._engine
        if self._options.handle_signals:
            self._install_signals()
        engine.start_workers()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        try:
            if drains_on_exit(exc_type, self._engine.lifecycle.interrupted_by):
                try:
                    report = await self.shutdown()
                except asyncio.CancelledError:
                    # The enclosing task was cancelled while the pool drained: stop the
                    # work now, as a cancel in the body would, then let the cancel go on.
                    await asyncio.shield(self.shutdown(cancel_futures=True, timeout=0))
                    raise
            else:
                # An error in the body, or the enclosing task cancelled: cancel, don't wait.
                report = await asyncio.shield(self.shutdown(cancel_futures=True, timeout=0))
        finally:
            self._restore_signals()
        life = self._engine.lifecycle
        if (
            life.interrupted_by is not None
            and not life.interrupt_reported
            and (exc_type is None or not issubclass(exc_type, Interrupted))
        ):
            life.interrupt_reported = True
            sig, how = life.interrupted_by, "in-flight work drained"
            if life.second_signal is not None:
                sig, how = life.second_signal, "second signal: running work cancelled"
            raise Interrupted(f"pool {self.name!r} was stopped by signal {sig}: {how}", report, sig)
        return None

    # ------------------------------------------------------------------ intake

    def _task_unit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[AsyncTask[Any], Unit]:
        if not callable(fn):
            raise TypeError(f"submit() needs a callable as its first argument, got {fn!r}")
        engine = self._engine
        if engine.closed:
            raise engine.closed_error()
        assert self._loop is not None
        task: AsyncTask[Any] = AsyncTask(engine, next(engine.task_ids), self._loop)
        if kwargs:
            unit = Unit(fn, [args], CALL_KWARGS, task.id, task, kwargs)
        else:
            unit = Unit(fn, [args], CALL_ARGS, task.id, task)
        task.moved(unit)
        return task, unit

    @overload
    async def submit(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncTask[R]: ...

    @overload
    async def submit(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncTask[R]: ...

    async def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> AsyncTask[Any]:
        """Schedule ``fn(*args, **kwargs)``; wait (without blocking the loop) while the queue
        is full. Returns an :class:`AsyncTask`. Raises :class:`PoolClosed` after close or
        shutdown, and :class:`WouldDeadlock` when a task of this pool submits into it while
        every worker is doing the same."""
        task, unit = self._task_unit(fn, args, kwargs)
        engine = self._engine
        if engine.try_put(unit):
            return task
        await self._wait_for_room(engine, unit)
        return task

    async def _wait_for_room(self, engine: Engine, unit: Unit) -> None:
        assert self._loop is not None
        waiter = _RoomWaiter(self._loop)
        source = current_source()
        nested = source is not None and source.owner is engine
        if nested:
            engine.nested_async += 1
        engine.awaiting_room += 1  # (stats: blocked_submitters)
        try:
            while True:
                if nested and engine.nested_async >= engine.crew.strength >= engine.max_workers:
                    raise WouldDeadlock(
                        f"a task of pool {self.name!r} submitted into the same pool while its "
                        f"queue was full and all {engine.crew.strength} workers were waiting "
                        "to do the same; use try_submit(), a larger queue_size or workers, "
                        "or a separate pool for nested work"
                    )
                waiter.arm()
                engine.watch_room(waiter)
                if engine.try_put(unit):
                    return
                await waiter.wait()
        finally:
            engine.awaiting_room -= 1
            if nested:
                engine.nested_async -= 1

    @overload
    def try_submit(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncTask[R] | None: ...

    @overload
    def try_submit(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncTask[R] | None: ...

    def try_submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> AsyncTask[Any] | None:
        """Like ``submit``, but never waits: ``None`` when the queue is full."""
        task, unit = self._task_unit(fn, args, kwargs)
        if self._engine.try_put(unit):
            return task
        return None

    def _stream(
        self,
        fn: Callable[..., Any],
        iterables: tuple[Any, ...],
        ordered: bool,
        timeout: float | None,
        chunksize: int | None,
        what: str,
    ) -> AsyncStream:
        if not callable(fn):
            raise TypeError(f"{what}() needs a callable as its first argument, got {fn!r}")
        if not iterables:
            raise TypeError(f"{what}() needs at least one iterable of inputs")
        for it in iterables:
            if not any(hasattr(it, a) for a in ("__aiter__", "__iter__", "__getitem__")):
                raise TypeError(f"{what}() inputs must be iterables or async iterables, got {it!r}")
        if not isinstance(ordered, bool):
            raise TypeError(f"{what}() ordered must be True or False, got {ordered!r}")
        check_count("chunksize", chunksize, minimum=1, allow_none=True)
        timeout = check_seconds("timeout", timeout, allow_zero=True)
        engine = self._engine
        if engine.closed:
            raise engine.closed_error()
        if self._options.handle_signals:
            self._install_signals()
        assert self._loop is not None
        return AsyncStream(
            engine,
            self._loop,
            fn,
            iterables,
            ordered=ordered,
            timeout=timeout,
            chunksize=chunksize,
            owner=self,
        )

    @overload
    def map(
        self,
        fn: Callable[[T1], Awaitable[R]],
        iterable: Iterable[T1] | AsyncIterable[T1],
        /,
        *,
        ordered: bool = ...,
        timeout: float | None = ...,
        chunksize: int | None = ...,
    ) -> AsyncStreamIterator[R]: ...

    @overload
    def map(
        self,
        fn: Callable[[T1], R],
        iterable: Iterable[T1] | AsyncIterable[T1],
        /,
        *,
        ordered: bool = ...,
        timeout: float | None = ...,
        chunksize: int | None = ...,
    ) -> AsyncStreamIterator[R]: ...

    @overload
    def map(
        self,
        fn: Callable[[T1, T2], Awaitable[R]],
        iterable: Iterable[T1] | AsyncIterable[T1],
        iterable2: Iterable[T2] | AsyncIterable[T2],
        /,
        *,
        ordered: bool = ...,
        timeout: float | None = ...,
        chunksize: int | None = ...,
    ) -> AsyncStreamIterator[R]: ...

    @overload
    def map(
        self,
        fn: Callable[[T1, T2], R],
        iterable: Iterable[T1] | AsyncIterable[T1],
        iterable2: Iterable[T2] | AsyncIterable[T2],
        /,
        *,
        ordered: bool = ...,
        timeout: float | None = ...,
        chunksize: int | None = ...,
    ) -> AsyncStreamIterator[R]: ...

    @overload
    def map(
        self,
        fn: Callable[..., Any],
        iterable: Any,
        iterable2: Any,
        iterable3: Any,
        /,
        *iterables: Any,
        ordered: bool = ...,
        timeout: float | None = ...,
        chunksize: int | None = ...,
    ) -> AsyncStreamIterator[Any]: ...

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Any,
        ordered: bool = True,
        timeout: float | None = None,
        chunksize: int | None = None,
    ) -> AsyncStreamIterator[Any]:
        """An async iterator of ``fn(item)`` for every input item (an iterable or an async
        iterable), read lazily as capacity frees up; in input order unless
        ``ordered=False``. At the first failed task it cancels this call's queued work and
        raises :class:`TaskError`. Leaving the loop early cancels the queued rest."""
        stream = self._stream(fn, iterables, ordered, timeout, chunksize, "map")
        return values_iterator(stream)

    @overload
    def results(
        self,
        fn: Callable[[T1], Awaitable[R]],
        iterable: Iterable[T1] | AsyncIterable[T1],
        /,
        *,
        ordered: bool = ...,
        timeout: float | None = ...,
        chunksize: int | None = ...,
    ) -> AsyncStreamIterator[Result[R]]: ...

    @overload
    def results(
        self,
        fn: Callable[[T1], R],
        iterable: Iterable[T1] | AsyncIterable[T1],
        /,
        *,
        ordered: bool = ...,
        timeout: float | None = ...,
        chunksize: int | None = ...,
    ) -> AsyncStreamIterator[Result[R]]: ...

    @overload
    def results(
        self,
        fn: Callable[[T1, T2], Awaitable[R]],
        iterable: Iterable[T1] | AsyncIterable[T1],
        iterable2: Iterable[T2] | AsyncIterable[T2],
        /,
        *,
        ordered: bool = ...,
        timeout: float | None = ...,
        chunksize: int | None = ...,
    ) -> AsyncStreamIterator[Result[R]]: ...

    @overload
    def results(
        self,
        fn: Callable[[T1, T2], R],
        iterable: Iterable[T1] | AsyncIterable[T1],
        iterable2: Iterable[T2] | AsyncIterable[T2],
        /,
        *,
        ordered: bool = ...,
        timeout: float | None = ...,
        chunksize: int | None = ...,
    ) -> AsyncStreamIterator[Result[R]]: ...

    @overload
    def results(
        self,
        fn: Callable[..., Any],
        iterable: Any,
        iterable2: Any,
        iterable3: Any,
        /,
        *iterables: Any,
        ordered: bool = ...,
        timeout: float | None = ...,
        chunksize: int | None = ...,
    ) -> AsyncStreamIterator[Result[Any]]: ...

    def results(
        self,
        fn: Callable[..., Any],
        *iterables: Any,
        ordered: bool = False,
        timeout: float | None = None,
        chunksize: int | None = None,
    ) -> AsyncStreamIterator[Result[Any]]:
        """An async iterator of exactly one :class:`Result` per input item; never raises for
        a task's failure. As tasks finish by default (``ordered=True``: input order)."""
        stream = self._stream(fn, iterables, ordered, timeout, chunksize, "results")
        return results_iterator(stream)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop accepting work. Idempotent; accepted work still runs."""
        self._closed_early = True  # (before first use: the engine opens closed)
        if self._engine_ is not None:
            self._engine_.lifecycle.close()

    async def join(self, timeout: float | None = None) -> bool:
        """Wait until every accepted task finished; False if ``timeout`` passed first."""
        timeout = check_seconds("timeout", timeout, allow_zero=True)
        self._engine.lifecycle.check_not_own_task("join()")
        return await self._join(timeout)

    async def _join(self, timeout: float | None) -> bool:
        """``join``, for the pool's own drain too (started from one of its tasks by a
        shutdown there, it runs in that task's context: it waits for the others)."""
        engine = self._engine
        assert self._loop is not None
        waiter = _RoomWaiter(self._loop)
        waiter.arm()
        room = waiter.room
        if engine.on_drained(room):
            return True
        try:
            await asyncio.wait_for(waiter.wait(), timeout)
        except TimeoutError:
            return False
        finally:
            # A join that returns (drained, timed out or cancelled) takes its callback back:
            # polling join(0) on a pool that never drains must not pile them up.
            engine.forget_drained(room)
        return True

    async def shutdown(
        self, wait: bool = True, *, cancel_futures: bool = False, timeout: float | None = None
    ) -> ShutdownReport:
        """Close, then drain: wait up to ``timeout`` for queued and running work.

        At the deadline, queued work is cancelled (listed in ``report.unstarted``) and
        running coroutines are cancelled. ``cancel_futures=True`` cancels queued work at
        once. ``wait=False`` returns at once and drains in the background. Idempotent.
        With ``handle_signals=True``, the pool's signal handlers are restored (as leaving
        ``async with`` does).
        """
        timeout = check_seconds("timeout", timeout, allow_zero=True)
        check_flag("shutdown() wait", wait)
        check_flag("shutdown() cancel_futures", cancel_futures)
        try:
            return await self._shutdown(wait, cancel_futures, timeout)
        finally:
            self._restore_signals()

    async def _shutdown(
        self, wait: bool, cancel_futures: bool, timeout: float | None
    ) -> ShutdownReport:
        engine = self._engine
        life = engine.lifecycle
        if wait and life.in_own_task():
            wait = False  # from one of the pool's own tasks: it would wait for itself
        first = life.begin_shutdown(cancel_futures)
        cut = False
        if first:
            self._drain_task = asyncio.ensure_future(self._drain(timeout))
        elif timeout is not None and not life.shutdown_done():
            # A drain runs already (an earlier shutdown's): this call's own deadline still
            # holds. At it, what is left is stopped, and that drain then ends at once.
            if timeout == 0:
                life.abort()
                cut = True
            elif not wait:
                assert self._loop is not None
                self._loop.call_later(timeout, self._abort_if_draining)
            else:
                task = self._drain_task
                assert task is not None
                try:
                    await asyncio.wait_for(asyncio.shield(task), timeout)
                except TimeoutError:
                    life.abort()
                    cut = True
        if not wait:
            return life.report(finished=life.shutdown_done())  # (the drain's, once ended)
        task = self._drain_task
        if task is not None:
            await asyncio.shield(task)
        return life.report(finished=life.shutdown_done() and not cut)

    def _abort_if_draining(self) -> None:
        life = self._engine.lifecycle
        if not life.shutdown_done():
            life.abort()

    async def _drain(self, timeout: float | None) -> None:
        try:
            await self._drain_steps(timeout)
        except Exception:
            # It failed (a bug of ours, a backend that would not close): the shutdown
            # still ends, cut short, so that nothing waits for it for ever (a later
            # shutdown, the interpreter's exit). (Cancelled, the loop going away: the
            # pool's workers are cancelled too, and ``worker_cancelled`` says what was
            # lost: not here.)
            life = self._engine.lifecycle
            if not life.shutdown_done():
                life.abort()
                life.finish(False)
            raise

    async def _drain_steps(self, timeout: float | None) -> None:
        engine = self._engine
        life = engine.lifecycle
        drained = await self._join(timeout)
        if not drained:
            life.abort()  # the deadline passed: cancel what waits, stop what runs
        slots, timer_thread = life.stop_workers()
        tasks = [s.task for s in slots if s.task is not None]
        if tasks:
            await asyncio.wait(tasks)
        threads = [s for s in slots if s.thread is not None]
        loop = asyncio.get_running_loop()
        if threads:
            await loop.run_in_executor(None, engine.driver.join, threads)
        if timer_thread is not None:
            await loop.run_in_executor(None, timer_thread.join)
        await engine.backend.aclose()  # (it may wait: worker processes to exit)
        life.finish(drained)

    def resize(self, workers: int) -> None:
        """Change the maximum number of workers. Shrinking never interrupts a running task."""
        n = check_count("workers", workers, minimum=1)
        assert n is not None
        # Not used yet, and no loop here to open it on: it opens with this many.
        unopened = self._engine_ is None and asyncio.events._get_running_loop() is None
        engine = None if unopened else self._engine
        low = self._options.min_workers if engine is None else engine.min_workers
        if n < low:
            raise ConfigError(
                f"resize(workers={n}) is below min_workers={low}: the pool keeps at least "
                "min_workers; resize to that or more"
            )
        if engine is None:
            self._options = dataclasses.replace(self._options, workers=n)
        else:
            engine.resize(n)

    def stats(self) -> Stats:
        """A consistent snapshot of the counters (see :class:`Stats`); from any thread, also
        once the loop has ended."""
        engine = self._engine_
        if engine is None:
            if asyncio.events._get_running_loop() is None:
                raise RuntimeError(
                    f"AsyncPool {self.name!r} has not been used yet: it opens on the event "
                    "loop that first uses it (its workers' number may come from there), so "
                    "stats() before its first use must be called on that loop"
                )
            engine = self._engine  # opens on the running loop (a pool not used yet)
        return engine.stats()

    @property
    def closed(self) -> bool:
        """True once the pool stopped accepting work."""
        engine = self._engine_
        return self._closed_early if engine is None else engine.closed

    def __reduce__(self) -> Any:
        # Said plainly (pickle would name a lock or a weak reference inside): a task sent to
        # a worker process, or a Dask worker, gets a copy of its arguments, never this object.
        raise TypeError(not_picklable(self))

    def __repr__(self) -> str:
        if self._engine_ is None:
            return f"<AsyncPool {self.name!r} {self.backend} not started>"
        s = self._engine_.stats()
        state = "closed" if self._engine_.closed else "open"
        return (
            f"<AsyncPool {self.name!r} {self.backend} {state} "
            f"workers={s.workers}/{s.max_workers} queued={s.queued} running={s.running}>"
        )

    # ------------------------------------------------------------------ signals

    def _install_signals(self) -> None:
        """First SIGINT/SIGTERM drains, the second cancels (the loop's signal handling)."""
        if self._signals_installed:
            return
        loop = self._loop
        assert loop is not None
        for sig in _SIGNALS:
            # What to give back: the loop's own handler for it (the program's, or another
            # pool's, added with add_signal_handler), else the process-level one.
            previous = _loop_handler(loop, sig) or signal.getsignal(sig)
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError) as e:
                raise ConfigError(
                    "handle_signals=True needs an event loop that can handle signals (the "
                    f"main thread's, on Unix): {e}"
                ) from e
            self._signals_installed[sig] = previous

    def _on_signal(self, sig: int) -> None:
        self._signal_count += 1
        life = self._engine.lifecycle
        if self._signal_count == 1:
            life.interrupted_by = sig
            # Not shutdown(): that restores the handlers, and the second signal is ours too.
            self._signal_drain = asyncio.ensure_future(self._shutdown(True, False, None))
        else:
            life.second_signal = sig
            life.abort()

    def _restore_signals(self) -> None:
        loop = self._loop
        installed, self._signals_installed = self._signals_installed, {}
        for sig, previous in installed.items():
            open_loop = loop is not None and not loop.is_closed()
            if isinstance(previous, asyncio.Handle):
                if open_loop:
                    assert loop is not None
                    # The loop's handler before ours: the loop runs it again.
                    callback, args = previous._callback, previous._args  # type: ignore[attr-defined]
                    loop.add_signal_handler(sig, callback, *args)
                continue
            if open_loop:
                assert loop is not None
                loop.remove_signal_handler(sig)
            if previous is not None:
                signal.signal(sig, previous)


def _loop_handler(loop: asyncio.AbstractEventLoop, sig: int) -> asyncio.Handle | None:
    """The handler ``loop.add_signal_handler`` gave ``sig`` (asyncio's and uvloop's loops
    keep them in ``_signal_handlers``), or None."""
    handlers = getattr(loop, "_signal_handlers", None)
    handle = handlers.get(sig) if isinstance(handlers, dict) else None
    return handle if isinstance(handle, asyncio.Handle) else None


class _RoomWaiter:
    """A future of the loop that ``room()`` resolves from any thread (engine lock held)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._future: asyncio.Future[None] | None = None

    def arm(self) -> None:
        if self._future is None or self._future.done():
            self._future = self._loop.create_future()

    def room(self) -> None:
        if asyncio.events._get_running_loop() is self._loop:
            self._resolve()
        else:
            try:
                self._loop.call_soon_threadsafe(self._resolve)
            except RuntimeError:
                pass

    def _resolve(self) -> None:
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)

    async def wait(self) -> None:
        assert self._future is not None
        await self._future
