"""``map`` and ``results``: lazy, bounded intake with automatic batching.

The caller's thread does the intake: each ``next()`` tops the pool up from the input iterator,
then waits for a finished chunk. No input is read while the pool has no room, so an infinite
iterator runs in constant memory, and a ``break`` (or dropping the generator) cancels the
queued work and stops reading.

Tiny tasks are grouped into units of several items: the batch size adapts so that one unit runs
for about ``TARGET_UNIT_SECONDS``, which makes per-unit overhead negligible while a slow task
still travels alone. ``chunksize=`` fixes the batch size instead.
"""

from __future__ import annotations

import itertools
import operator
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ._result import Result, make_result
from ._units import CALL_ARGS, CALL_ITEM, Failure, Unit
from .errors import Interrupted, PoolClosed, TaskCancelled, TaskError

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["Stream"]

# One unit should run ~2 ms: per-unit overhead (~20 us of locking and hand-off on threads)
# stays ~1%, and the tail of a finite input waits at most that long for a straggling batch.
# The upper bound on items per unit is the backend's ``max_batch``.
TARGET_UNIT_SECONDS = 0.002


class Stream:
    """One ``map``/``results`` call: the intake, the in-flight window, and the reorder buffer."""

    stoppable = False  # Sink: its running units stop only with the pool (timeouts aside)

    def __init__(
        self,
        engine: Engine,
        fn: Callable[..., Any],
        iterables: tuple[Iterable[Any], ...],
        *,
        ordered: bool,
        timeout: float | None,
        chunksize: int | None,
        owner: Any = None,
    ) -> None:
        self._engine = engine
        self._owner = owner  # the Pool: alive as long as this call is
        self._fn = fn
        if len(iterables) == 1:
            self._source: Iterator[Any] = iter(iterables[0])
            self._mode = CALL_ITEM
        else:
            self._source = zip(*iterables)
            self._mode = CALL_ARGS
        hints = [operator.length_hint(it, -1) for it in iterables]
        self._length = -1 if min(hints) < 0 else min(hints)
        self._ordered = ordered
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._fixed_batch = chunksize is not None or engine.rate_interval is not None
        self._batch = chunksize or 1
        self._max_batch = engine.backend.max_batch
        self._per_item: float | None = None  # running estimate of one call's run time
        self._measured = 0  # calls that estimate is based on

        self._cv = threading.Condition(threading.Lock())
        self._ready: deque[Unit] = deque()  # unordered: finished chunks in arrival order
        self._by_start: dict[int, Unit] = {}  # ordered: finished chunks by first index
        self._emit_at = 0  # ordered: index of the next item to yield
        self._next_index = 0  # index of the next input item to read
        self._inflight = 0  # items handed to the pool and not delivered yet
        self._buffered = 0  # items delivered and not yielded yet
        self._waiting = False
        self._pending: Unit | None = None  # read from the input, not yet accepted
        self._exhausted = False
        self._closed = False
        self._stop: BaseException | None = None  # why intake stopped early

    # -- Sink protocol (called by workers)

    def started(self) -> None:
        pass

    def active(self) -> bool:
        return not self._closed

    def moved(self, unit: Unit) -> None:
        pass

    def room(self) -> None:
        """The pool has room again (called under the engine lock): top up the intake."""
        with self._cv:
            if self._waiting:
                self._cv.notify()

    def deliver(self, chunk: Unit) -> None:
        n = len(chunk.entries)
        with self._cv:
            self._inflight -= n
            if self._closed:
                return
            self._buffered += n
            if not self._fixed_batch:
                # Learn from every chunk as it finishes, not as it is consumed: an ordered map
                # consumes nothing until its first item is done, however many others are.
                self._adapt(chunk)
            if self._ordered:
                self._by_start[chunk.start] = chunk
            else:
                self._ready.append(chunk)
            if self._waiting:
                self._cv.notify()

    # -- intake (called by the consumer only)

    def _limit(self) -> int:
        # Items read and not yet yielded: one unit for every worker and queue place, plus
        # one being consumed. This bounds memory and the reorder window of ordered=True.
        engine = self._engine
        if self._measured < 2 * engine.max_workers and not self._fixed_batch:
            # Few calls timed yet (the first ones are often slow: a fresh worker, cold
            # caches): one unit per worker. More units read now would be sized on that guess
            # and queue up in front of the larger batches that the next times allow.
            return engine.max_workers * self._batch
        return (engine.max_workers + engine.queue_size + 1) * self._batch

    def _read_unit(self) -> Unit | None:
        entries: list[Any] = []
        batch = self._batch  # once: workers adapt it concurrently (see deliver)
        try:
            entries.extend(itertools.islice(self._source, batch))
        except BaseException as e:
            # The input failed: what it produced before still runs; the error is raised
            # after those results.
            self._exhausted = True
            self._stop = e
        if not entries:
            self._exhausted = True
            return None
        unit = Unit(self._fn, entries, self._mode, self._next_index, self)
        self._next_index += len(entries)
        if len(entries) < batch:
            self._exhausted = True  # islice came up short: the iterator is done
        return unit

    def _fill(self, block: bool = False) -> None:
        engine = self._engine
        while self._stop is None and not self._closed:
            unit = self._pending
            if unit is None:
                if self._exhausted or self._inflight + self._buffered >= self._limit():
                    return
                if engine.closed:
                    self._stop = PoolClosed(engine.closed_message())
                    return  # never read input the pool could not accept
                if not block and not engine.has_room():
                    engine.watch_room(self)  # wake me when there is room again
                    return  # don't read input we could not hand over
                unit = self._read_unit()
                if unit is None:
                    return
            n = len(unit.entries)
            with self._cv:
                self._inflight += n  # before put: a worker may deliver before put returns
            try:
                accepted = engine.put(unit, block=block)
            except BaseException as e:
                accepted = False
                self._stop = e
            if not accepted:
                with self._cv:
                    self._inflight -= n
                self._pending = unit
                if self._stop is None:
                    engine.watch_room(self)
                return
            self._pending = None
            block = False

    def _adapt(self, chunk: Unit) -> None:
        durs = chunk.durs
        if not durs:
            return
        n = len(durs)
        self._measured += n
        mean = sum(durs) / n
        est = self._per_item
        # A moving average weighted by how many calls the chunk measured: one slow first
        # call (a fresh worker importing things) must not hold the batch size down for long.
        self._per_item = est = mean if est is None else est + n / (n + 4) * (mean - est)
        batch = int(TARGET_UNIT_SECONDS / est) if est > 0 else self._max_batch
        if self._length >= 0:
            # Leave every worker a share of what is left, so the tail stays parallel.
            left = self._length - self._next_index
            batch = min(batch, left // (2 * self._engine.max_workers))
        self._batch = max(1, min(self._max_batch, batch))

    def _next_chunk(self) -> Unit | None:
        while True:
            self._fill()
            with self._cv:
                if self._ordered:
                    chunk = self._by_start.pop(self._emit_at, None)
                    if chunk is not None:
                        self._emit_at += len(chunk.entries)
                else:
                    chunk = self._ready.popleft() if self._ready else None
                if chunk is not None:
                    self._buffered -= len(chunk.entries)
                    return chunk
                if self._inflight:
                    self._waiting = True
                    try:
                        if self._deadline is None:
                            self._cv.wait()
                        elif self._deadline <= time.monotonic():
                            raise TimeoutError(
                                "map/results did not produce the next result within the "
                                "timeout given to the call"
                            )
                        else:
                            self._cv.wait(self._deadline - time.monotonic())
                    finally:
                        self._waiting = False
                    continue
                if (
                    self._stop is not None
                    or self._closed
                    or (self._exhausted and self._pending is None)
                ):
                    return None
            # Nothing in flight and no room: wait for the pool (other work holds it).
            self._fill(block=True)

    # -- the two consumer faces

    # The two faces hand each value over without keeping it: a value (or argument) the caller
    # dropped must be gone, even while the rest of its batch is still being iterated. So the
    # outcomes are popped off a reversed list, and nothing of them stays bound in a local
    # across a ``yield``.

    def values(self) -> Iterator[Any]:
        """Generator for ``map``: yields values, raises TaskError at the first failure."""
        try:
            while True:
                chunk = self._next_chunk()
                if chunk is None:
                    break
                out = chunk.out
                out.reverse()
                pop = out.pop
                if not chunk.nfail:
                    chunk.entries = []  # no Result will need the arguments
                    while out:
                        yield pop()
                    continue
                n = len(out)
                while out:
                    if type(out[-1]) is Failure:
                        self._raise_failure(chunk, n - len(out), pop())
                    yield pop()
            self._raise_stop()
        finally:
            self.close()

    @staticmethod
    def _raise_failure(chunk: Unit, pos: int, failure: Failure) -> None:
        result = make_result(
            chunk.start + pos,
            chunk.entries[pos],
            None,
            failure.error,
            failure.traceback,
            chunk.attempt,
            chunk.durs[pos],
        )
        error = failure.error
        raise TaskError(
            f"task {chunk.start + pos} failed: {type(error).__name__}: {error}", result
        ) from error

    def results(self) -> Iterator[Result[Any]]:
        """Generator for ``results``: one Result per input item, never raises for a task."""
        try:
            while True:
                chunk = self._next_chunk()
                if chunk is None:
                    break
                start = chunk.start
                durs = chunk.durs
                attempt = chunk.attempt
                out = chunk.out
                entries = chunk.entries
                out.reverse()
                entries.reverse()
                pop_out = out.pop
                pop_entry = entries.pop
                n = len(out)
                if not chunk.nfail:
                    for pos in range(n):
                        yield make_result(
                            start + pos, pop_entry(), pop_out(), None, None, attempt, durs[pos]
                        )
                    continue
                for pos in range(n):
                    if type(out[-1]) is Failure:
                        yield _failed_result(
                            start + pos, pop_entry(), pop_out(), attempt, durs[pos]
                        )
                    else:
                        yield make_result(
                            start + pos, pop_entry(), pop_out(), None, None, attempt, durs[pos]
                        )
            pending = self._pending
            if pending is not None:
                # Read from the input, never accepted by the pool: say so, one Result each.
                self._pending = None
                for pos, entry in enumerate(pending.entries):
                    yield make_result(
                        pending.start + pos,
                        entry,
                        None,
                        TaskCancelled(
                            f"task {pending.start + pos} was never started: the "
                            "pool stopped accepting work"
                        ),
                        None,
                        0,
                        0.0,
                    )
            self._raise_stop()
        finally:
            self.close()

    def _raise_stop(self) -> None:
        stop = self._stop
        if stop is None:
            return
        self._stop = None
        if isinstance(stop, PoolClosed) and self._engine.interrupted_by is not None:
            report = self._engine.wait_shutdown()
            assert report is not None
            self._engine.interrupt_reported = True
            raise Interrupted(
                f"stopped by signal {self._engine.interrupted_by}: in-flight work drained",
                report,
                self._engine.interrupted_by,
            ) from None
        raise stop

    def close(self) -> None:
        """Stop reading input and cancel this call's queued work; later results are dropped."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
        self._engine.cancel_sink(self)


def _failed_result(
    index: int, item: Any, failure: Failure, attempt: int, duration: float
) -> Result[Any]:
    return make_result(index, item, None, failure.error, failure.traceback, attempt, duration)
