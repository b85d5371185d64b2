"""``Pool.map`` and ``Pool.results``: the synchronous face of the intake.

The caller's thread does the intake: each ``next()`` tops the pool up from the input iterator,
then waits for a finished chunk. No input is read while the pool has no room, so an infinite
iterator runs in constant memory, and a ``break`` (or dropping the generator) cancels the
queued work and stops reading. What to read, how much and in what order to hand it back is
the :class:`~._intake.Intake`'s; this module only waits.
"""

from __future__ import annotations

import operator
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ._intake import (
    INPUT_POLL,
    Intake,
    results_into,
    results_of,
    top_up,
    unread_results,
    values_into,
    values_of,
)
from ._units import CALL_ARGS, CALL_ITEM, Unit
from .errors import Interrupted, PoolClosed

if TYPE_CHECKING:
    from ._engine import Engine
    from ._result import Result

__all__ = ["Stream"]


class Stream:
    """One ``map``/``results`` call: an intake, waited on by the caller's thread."""

    stoppable = False  # Sink: its running units stop only with the pool (timeouts aside)
    stops_at_failure = False  # a map's: its worker cancels a unit's rest at a failure

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
        if len(iterables) == 1:
            self._source: Iterator[Any] = iter(iterables[0])
            mode = CALL_ITEM
        else:
            self._source = zip(*iterables)
            mode = CALL_ARGS
        hints = [operator.length_hint(it, -1) for it in iterables]
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
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._cv = threading.Condition(threading.Lock())
        self._waiting = False
        self._ready: deque[Any] = deque()  # outputs taken from the intake, not yielded yet

    # -- Sink protocol (called by workers)

    def started(self) -> None:
        pass

    def active(self) -> bool:
        return not self._intake.closed

    def moved(self, unit: Unit) -> None:
        pass

    def room(self) -> None:
        """The pool has room again (called under the engine lock): top up the intake."""
        self._notify()

    def deliver(self, chunk: Unit) -> None:
        # Cheap for the worker: the consumer does the accounting (``Intake.drain``).
        if not self._intake.deliver(chunk):
            return  # nobody wants it
        if self._waiting:  # set before the consumer looks at the inbox a last time
            self._notify()

    def _notify(self) -> None:
        with self._cv:
            if self._waiting:
                # Once: the deliveries until the consumer runs need not notify it again.
                self._waiting = False
                self._cv.notify()

    # -- intake (called by the consumer only)

    def _fill(self, block: bool = False) -> None:
        if not block:
            top_up(self._intake, self._engine, self._source, self, len(self._ready), defer=True)
            return
        engine = self._engine
        intake = self._intake
        intake.workers = engine.max_workers
        while intake.stop is None and not intake.closed:
            unit = intake.pending
            if unit is None:
                if not intake.room(engine.max_workers, engine.queue_size, len(self._ready)):
                    return
                if engine.closed:
                    intake.stop = engine.closed_error()
                    return  # never read input the pool could not accept
                if not block and not engine.has_room():
                    engine.watch_room(self)  # wake me when there is room again
                    return  # don't read input we could not hand over
                unit = intake.read(self._source, self)
                if unit is None:
                    return
            with self._cv:
                intake.sending(unit)
            try:
                accepted = engine.put(unit, block=block)
            except BaseException as e:
                with self._cv:
                    intake.refused(unit, e)
                return
            if not accepted:
                with self._cv:
                    intake.refused(unit)
                engine.watch_room(self)
                return
            intake.accepted()
            block = False

    def _next_chunk(self, convert: Callable[[Unit, deque[Any]], None]) -> Unit | None:
        """Top the pool up, then wait until results are ready: the outputs of chunks whose
        calls all succeeded go to ``_ready`` (``convert``); another chunk (one with a failure,
        or a large one: see ``Intake.take_ready``) is returned to be iterated. None with
        ``_ready`` empty: the call is done."""
        intake = self._intake
        ready = self._ready
        while True:
            if self._intake.inbox:
                with self._cv:
                    self._intake.drain()
            self._fill()
            with self._cv:
                self._intake.drain()
                chunk = intake.take_ready(ready, convert)
                if chunk is not None or ready:
                    return chunk
                if intake.inflight:
                    self._wait()
                    continue
                if intake.done():
                    return None
            # Nothing in flight and no room: wait for the pool (other work holds it).
            self._fill(block=True)

    def _wait(self) -> None:
        self._waiting = True
        try:
            if self._intake.inbox:
                return  # delivered after the drain, before the worker could see _waiting
            # The input had nothing at hand and was not waited for (results come first):
            # look at it again soon, since its next items wake nobody.
            poll = INPUT_POLL if self._intake.input_idle else None
            if self._deadline is None:
                self._cv.wait(poll)
            elif self._deadline <= time.monotonic():
                raise TimeoutError(
                    "map/results did not produce the next result within the timeout given "
                    "to the call"
                )
            else:
                left = self._deadline - time.monotonic()
                self._cv.wait(left if poll is None else min(left, poll))
        finally:
            self._waiting = False

    # -- the two consumer faces

    def values(self) -> Generator[Any, None, None]:
        """Generator for ``map``: yields values, raises TaskError at the first failure."""
        self.stops_at_failure = True  # (before the first unit is read: see call_failed)
        ready = self._ready
        try:
            while True:
                chunk = self._next_chunk(values_into)
                if ready:  # (then chunk is None: see Intake.take_ready)
                    while ready:
                        yield ready.popleft()
                    continue
                if chunk is None:
                    break
                yield from values_of(chunk)
            self._raise_stop()
        finally:
            self.close()

    def results(self) -> Generator[Result[Any], None, None]:
        """Generator for ``results``: one Result per input item, never raises for a task."""
        ready = self._ready
        try:
            while True:
                chunk = self._next_chunk(results_into)
                if ready:  # (then chunk is None: see Intake.take_ready)
                    while ready:
                        yield ready.popleft()
                    continue
                if chunk is None:
                    break
                yield from results_of(chunk)
            pending = self._intake.pending
            if pending is not None:
                # Read from the input, never accepted by the pool: say so, one Result each.
                self._intake.pending = None
                yield from unread_results(pending)
            self._raise_stop()
        finally:
            self.close()

    def _raise_stop(self) -> None:
        intake = self._intake
        stop = intake.stop
        if stop is None:
            return
        intake.stop = None
        life = self._engine.lifecycle
        if isinstance(stop, PoolClosed) and life.interrupted_by is not None:
            if life.in_own_task():
                # A call in one of the pool's tasks (a nested map): the drain waits for
                # that task, so its report is not waited for; and the program's own call
                # still has its Interrupted to raise (not "reported" here).
                raise Interrupted(
                    f"stopped by signal {life.interrupted_by}: in-flight work draining",
                    life.report(finished=False),
                    life.interrupted_by,
                ) from None
            report = life.wait_shutdown()
            assert report is not None
            life.interrupt_reported = True
            raise Interrupted(
                f"stopped by signal {life.interrupted_by}: in-flight work drained",
                report,
                life.interrupted_by,
            ) from None
        raise stop

    def close(self) -> None:
        """Stop reading input and cancel this call's queued work; later results are dropped."""
        with self._cv:
            if self._intake.closed:
                return
            self._intake.closed = True
            self._intake.inbox.clear()  # results nobody will read
        self._engine.cancel_sink(self)
