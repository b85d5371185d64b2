"""``AsyncPool.map`` and ``AsyncPool.results``: the async face of the intake.

The consumer's task does the intake, as in the synchronous face: each ``__anext__`` tops the
pool up from the input (read only while the call's window has room), then awaits a finished
chunk. An async input is read by a task of its own (``_areader``), so that a slow one never
holds back results that are ready. Nothing waits in a thread: workers (coroutines on the same loop,
or a process backend's threads) deliver chunks and wake the consumer's future.

Leaving early: ``aclose()``, a ``break`` that drops the iterator, or the garbage collector
closes it at once (no event loop round trip): the call's queued work is cancelled. When the
consumer's task is cancelled while it waits, the call's running work is cancelled too.
"""

from __future__ import annotations

import asyncio
import operator
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar, cast

from ._areader import AsyncReader
from ._intake import (
    Intake,
    results_into,
    results_of,
    top_up,
    unread_results,
    values_into,
    values_of,
)
from ._result import Result
from ._units import CALL_ARGS, CALL_ITEM, Unit
from .errors import Interrupted, PoolClosed

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["AsyncStream", "AsyncStreamIterator"]

T = TypeVar("T")


class AsyncStream:
    """One ``map``/``results`` call of an AsyncPool: an intake, awaited by its consumer."""

    stoppable = False  # Sink: its running units stop only with the pool (or its consumer)
    stops_at_failure = False  # a map's: its worker cancels a unit's rest at a failure

    def __init__(
        self,
        engine: Engine,
        loop: asyncio.AbstractEventLoop,
        fn: Callable[..., Any],
        iterables: tuple[Any, ...],
        *,
        ordered: bool,
        timeout: float | None,
        chunksize: int | None,
        owner: Any,
    ) -> None:
        self._engine = engine
        self._loop = loop
        self._owner = owner  # the AsyncPool: alive as long as this call is
        self._sync: Iterator[Any] | None = None
        self._async: AsyncIterator[Any] | None = None
        if len(iterables) == 1:
            mode = CALL_ITEM
            source = iterables[0]
            if hasattr(source, "__aiter__"):
                self._async = source.__aiter__()
            else:
                self._sync = iter(source)
        else:
            mode = CALL_ARGS
            if any(hasattr(it, "__aiter__") for it in iterables):
                self._async = _azip(iterables)
            else:
                self._sync = zip(*iterables)
        hints = [
            -1 if hasattr(it, "__aiter__") else operator.length_hint(it, -1) for it in iterables
        ]
        self._intake = Intake(
            fn,
            mode,
            ordered=ordered,
            length=-1 if min(hints) < 0 else min(hints),
            chunksize=chunksize,
            fixed=engine.bucket is not None,
            max_batch=engine.caps.max_batch,
            target=engine.caps.unit_seconds,
        )
        self._intake.workers = engine.max_workers
        self.splittable = chunksize is None  # Sink: units it sized itself may be split
        self._reader: AsyncReader | None = (
            None if self._async is None else AsyncReader(self._async, loop, self._resolve)
        )
        # ``timeout`` bounds the whole call, from now (as Pool.map's and Executor.map's do).
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._lock = threading.Lock()  # the intake: the consumer's, and close() from anywhere
        self._wakeup: asyncio.Future[None] | None = None
        # Outputs taken from the intake and not handed back yet (the consumer's own).
        self.ready: deque[Any] = deque()

    # -- Sink protocol (called by workers, from any thread)

    def started(self) -> None:
        pass

    def active(self) -> bool:
        return not self._intake.closed

    def moved(self, unit: Unit) -> None:
        pass

    def room(self) -> None:
        self._wake()

    def deliver(self, chunk: Unit) -> None:
        # From any thread, and cheap: the worker that delivers goes on with its next call at
        # once, and the consumer does the accounting (``Intake.drain``) after the workers woken
        # in this turn of the loop are all on their way again.
        if not self._intake.deliver(chunk):
            return  # nobody wants it
        if self._wakeup is not None:
            self._wake()

    def _wake(self) -> None:
        if asyncio.events._get_running_loop() is self._loop:
            self._resolve()
        else:
            try:
                self._loop.call_soon_threadsafe(self._resolve)
            except RuntimeError:
                pass  # the loop is closed

    def _resolve(self) -> None:
        waiter = self._wakeup
        if waiter is not None:
            self._wakeup = None  # the deliveries until the consumer runs need not wake it
            if not waiter.done():
                waiter.set_result(None)

    # -- intake (the consumer's task only)

    def _fill(self) -> None:
        """Hand the pool what the input has for it now, as far as the pool has room."""
        intake = self._intake
        reader = self._reader
        if reader is None:
            assert self._sync is not None
            top_up(intake, self._engine, self._sync, self, len(self.ready))
            return
        engine = self._engine
        intake.workers = engine.max_workers
        buffer = reader.buffer
        while intake.stop is None and not intake.closed:
            unit = intake.pending
            if unit is None:
                if engine.closed:
                    intake.stop = engine.closed_error()
                    self._stop_reading()
                    return
                if not buffer:
                    if reader.ended:
                        intake.exhausted = True
                        if reader.error is not None:
                            intake.stop = reader.error
                        return
                    break  # the reader is waiting for the input
                if not engine.has_room():
                    engine.watch_room(self)  # wake me when there is room again
                    break
                n = intake.batch
                if n >= len(buffer):
                    entries = list(buffer)
                    buffer.clear()
                else:
                    entries = [buffer.popleft() for _ in range(n)]
                unit = intake.unit(entries, self)
                assert unit is not None
            with self._lock:
                intake.sending(unit)
            try:
                accepted = engine.try_put(unit)
            except BaseException as e:
                with self._lock:
                    intake.refused(unit, e)
                self._stop_reading()
                return
            if not accepted:
                with self._lock:
                    intake.refused(unit)
                engine.watch_room(self)
                return
            intake.accepted()
        if intake.stop is None and not intake.closed and intake.pending is None:
            # Keep the reader going up to the window (what is read and not handed back).
            limit = intake.limit(engine.max_workers, engine.queue_size)
            reader.want(limit - intake.inflight - intake.buffered - len(self.ready))

    def _stop_reading(self) -> None:
        """The pool accepts nothing more: stop the reader; what it read and the pool never
        accepted joins the pending unit, reported as such (the results' tail)."""
        reader = self._reader
        assert reader is not None
        reader.cancel()
        buffer = reader.buffer
        if not buffer:
            return
        intake = self._intake
        rest = intake.unit(list(buffer), self)
        buffer.clear()
        pending = intake.pending
        if pending is not None and rest is not None:
            rest = Unit(
                pending.fn, pending.entries + rest.entries, pending.mode, pending.start, self
            )
        intake.pending = rest

    async def next_chunk(self, convert: Callable[[Unit, deque[Any]], None]) -> Unit | None:
        """Top the pool up, then wait until results are ready: the outputs of chunks whose
        calls all succeeded go to ``ready`` (``convert``); another chunk (one with a failure,
        or a large one: see ``Intake.take_ready``) is returned to be iterated. None with
        ``ready`` empty: the call is done."""
        intake = self._intake
        ready = self.ready
        deadline = self._deadline
        while True:
            if self._intake.inbox:
                with self._lock:
                    self._intake.drain()
            self._fill()
            with self._lock:
                self._intake.drain()
                chunk = intake.take_ready(ready, convert)
                if chunk is not None or ready:
                    return chunk
                if intake.done():
                    return None
                wakeup = self._wakeup = self._loop.create_future()
                if self._intake.inbox:
                    # Delivered by another thread after the drain, which saw no _wakeup.
                    self._wakeup = None
                    continue
            # Something is in flight, or the pool has no room: wait to be woken. A room
            # watcher may have been registered already; one more costs nothing.
            if not intake.inflight:
                self._engine.watch_room(self)
            try:
                if deadline is None:
                    await wakeup
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(
                            "map/results did not produce the next result within the "
                            "timeout given to the call"
                        )
                    try:
                        await asyncio.wait_for(wakeup, left)
                    except TimeoutError:
                        continue  # one more look at what is ready, then the error above
            finally:
                self._wakeup = None

    async def interrupted_drain(self) -> None:
        """Stopped by a signal: wait for the drain it started, so that ``Interrupted``
        carries the drain's final report (as the synchronous face does)."""
        stop = self._intake.stop
        if not isinstance(stop, PoolClosed) or self._engine.lifecycle.interrupted_by is None:
            return
        drain = getattr(self._owner, "_signal_drain", None)
        if drain is not None and not drain.done():
            await asyncio.wait([drain])  # (its outcome is the pool's: not raised here)

    def raise_stop(self) -> None:
        intake = self._intake
        stop = intake.stop
        if stop is None:
            return
        intake.stop = None
        life = self._engine.lifecycle
        if isinstance(stop, PoolClosed) and life.interrupted_by is not None:
            life.interrupt_reported = True
            second = life.second_signal
            if second is None:
                sig, how = life.interrupted_by, "in-flight work drained"
            else:
                sig, how = second, "second signal: running work cancelled"
            raise Interrupted(
                f"stopped by signal {sig}: {how}",
                life.report(finished=life.shutdown_done()),
                sig,
            ) from None
        raise stop

    async def input_closed(self) -> None:
        """Wait until an async input is closed, after ``close()``."""
        if self._reader is not None:
            await self._reader.closed()

    def close(self, *, running: bool = False) -> None:
        """Stop reading input and cancel this call's queued work (and with ``running``, its
        running work too); later results are dropped."""
        with self._lock:
            if self._intake.closed:
                return
            self._intake.closed = True
            self._intake.inbox.clear()  # results nobody will read
        if self._reader is not None:
            self._reader.cancel()
        self._engine.cancel_sink(self, running=running)


class AsyncStreamIterator(Generic[T]):
    """What ``AsyncPool.map``/``results`` return: an async iterator over one AsyncStream.

    Not an async generator: an async generator left by ``break`` is closed later, by the
    loop's finalizer; this one cancels the call's queued work the moment it is dropped.
    """

    def __init__(
        self,
        stream: AsyncStream,
        chunks: Callable[[Unit], Iterator[T]],
        convert: Callable[[Unit, deque[Any]], None],
        tail: bool,
    ) -> None:
        self._stream = stream
        self._chunks = chunks  # the outputs of a finished chunk with a failure, one by one
        self._convert = convert  # the outputs of a chunk whose calls all succeeded
        self._tail = tail  # results: items read but never accepted get a Result each
        self._current: Iterator[T] = iter(())
        self._ended = False

    def __aiter__(self) -> AsyncStreamIterator[T]:
        return self

    async def __anext__(self) -> T:
        stream = self._stream
        ready = stream.ready
        if ready:
            return ready.popleft()  # type: ignore[no-any-return]
        for item in self._current:
            return item
        if self._ended:
            await self._stream.interrupted_drain()
            self._stop()
        try:
            while True:
                chunk = await stream.next_chunk(self._convert)
                if ready:
                    return ready.popleft()  # type: ignore[no-any-return]
                if chunk is None:
                    break
                self._current = self._chunks(chunk)
                for item in self._current:
                    return item
        except asyncio.CancelledError:
            self._left()
            stream.close(running=True)  # the consumer was cancelled: so is its work
            raise
        except BaseException:
            self._left()
            stream.close()
            raise
        self._ended = True
        pending = stream._intake.pending
        if self._tail and pending is not None:
            stream._intake.pending = None
            self._current = cast(Iterator[T], unread_results(pending))
            for item in self._current:
                return item
        await stream.interrupted_drain()
        self._stop()

    def _stop(self) -> NoReturn:
        stream = self._stream
        stream.close()
        stream.raise_stop()
        raise StopAsyncIteration

    def _left(self) -> None:
        """The call ended early (an error, a cancelled step, ``aclose``): like an async
        generator that raised or was closed, the iterator is done: a later ``__anext__``
        ends the iteration at once (the call's work was cancelled and its later results
        are dropped: waiting for them would wait for ever)."""
        self._ended = True
        self._current = iter(())
        self._stream.ready.clear()
        self._stream._intake.stop = None  # raised already (or not an error: aclose)

    async def aclose(self) -> None:
        """Stop: cancel the call's queued work, read no more input and close it (an async
        input's ``aclose()``: see ``_areader``)."""
        self._left()
        stream = self._stream
        stream.close()
        await stream.input_closed()

    def __del__(self) -> None:
        stream = getattr(self, "_stream", None)
        if stream is not None and not stream._intake.closed:
            stream.close()


def values_iterator(stream: AsyncStream) -> AsyncStreamIterator[Any]:
    stream.stops_at_failure = True  # a map: see call_failed
    return AsyncStreamIterator(stream, values_of, values_into, tail=False)


def results_iterator(stream: AsyncStream) -> AsyncStreamIterator[Result[Any]]:
    return AsyncStreamIterator(stream, results_of, results_into, tail=True)


async def _azip(iterables: Iterable[Any]) -> AsyncIterator[tuple[Any, ...]]:
    """zip() over a mix of iterables and async iterables."""
    its = [it.__aiter__() if hasattr(it, "__aiter__") else iter(it) for it in iterables]
    try:
        while True:
            row = []
            for it in its:
                try:
                    row.append(await it.__anext__() if hasattr(it, "__anext__") else next(it))
                except (StopIteration, StopAsyncIteration):
                    return
            yield tuple(row)
    except BaseException:
        # Closed early (the call stopped) or failed: so are the async inputs, as a single
        # one is (see _areader).
        for it in its:
            if hasattr(it, "aclose"):
                await it.aclose()
        raise
