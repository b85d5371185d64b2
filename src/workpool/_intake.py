"""The intake of ``map``/``results`` as plain logic: no threads, no waits, no I/O.

One :class:`Intake` per call keeps what reading input lazily into a bounded pool needs:

- **batching**: tiny tasks are grouped into units of several items; the batch size adapts so
  that one unit runs for about ``TARGET_UNIT_SECONDS``, which makes per-unit overhead
  negligible while a slow task still travels alone (``chunksize=`` fixes it instead);
- **the window**: how many items may be read and not yet handed back (one unit per worker
  and queue place, plus one being consumed), which bounds memory and the reorder window;
- **the buffer**: finished chunks in arrival order, or by input position for ``ordered``;
- **the stop bookkeeping**: input exhausted or failed, the call closed early, the pool closed,
  and the unit read but not accepted yet (``pending``).

Its faces do the waiting: ``_stream.Stream`` for ``Pool.map``/``results`` (a condition
variable, the caller's thread reading the input), the async face for ``AsyncPool``, and the
pipeline's stages. A face calls the intake under a lock of its own; chunks are delivered to
it by workers, and :func:`values_of`/:func:`results_of` turn them into what the caller sees.
"""

from __future__ import annotations

import itertools
import sys
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ._units import Failure, Sink, Unit
from .errors import TaskCancelled, TaskError

if TYPE_CHECKING:
    from ._engine import Engine
    from ._result import Result

__all__ = [
    "INPUT_POLL",
    "TARGET_UNIT_SECONDS",
    "Intake",
    "at_hand",
    "at_hand_count",
    "results_into",
    "results_of",
    "top_up",
    "unread_results",
    "values_into",
    "values_of",
]

# One unit should run ~2 ms: per-unit overhead (~20 us of locking and hand-off on threads)
# stays ~1%, and the tail of a finite input waits at most that long for a straggling batch.
# The upper bound on items per unit is the backend's ``max_batch``; a backend may ask for
# another target (``Capabilities.unit_seconds``).
TARGET_UNIT_SECONDS = 0.002

# Bytes a unit should move at most (its arguments out and outcomes back, where the backend
# counts them: worker processes), so that the window of units in flight holds a few MB
# whatever the size of the items (20 KB items in units of thousands held GBs).
TARGET_UNIT_BYTES = 1 << 20

# How often a face that put a read off (the input had nothing at hand, see ``at_hand``) looks
# at the input again while it waits for results: the input's next items wake nobody.
INPUT_POLL = 0.05

# Chunks of up to this many successful calls are converted to their outputs at once (see
# Intake.take_ready); larger ones are iterated.
_EAGER_MAX = 64


class Intake:
    """Batch sizing, the in-flight window, the reorder buffer and the stop state of one call."""

    __slots__ = (
        "_batch",
        "_by_start",
        "_bytes_per_item",
        "_emit_at",
        "_fixed_batch",
        "_length",
        "_max_batch",
        "_measured",
        "_per_item",
        "_ready",
        "_target",
        "buffered",
        "closed",
        "exhausted",
        "fn",
        "inbox",
        "inflight",
        "input_idle",
        "may_block",
        "mode",
        "next_index",
        "ordered",
        "pending",
        "stop",
        "workers",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        mode: int,
        *,
        ordered: bool,
        length: int,
        chunksize: int | None,
        fixed: bool,
        max_batch: int,
        target: float = 0.002,
    ) -> None:
        self.fn = fn
        self.mode = mode  # CALL_ITEM (one iterable) or CALL_ARGS (several, zipped)
        self.ordered = ordered
        self._length = length  # of the input when known, else -1
        # An input of unknown length may wait when read (a generator, a pipe); one of known
        # length is a collection in memory, which cannot.
        self.may_block = length < 0
        self._fixed_batch = chunksize is not None or fixed
        self._batch = chunksize or 1
        self._max_batch = max_batch
        self._target = target  # seconds a unit should run (see TARGET_UNIT_SECONDS)
        self._per_item: float | None = None  # running estimate of one call's run time
        self._bytes_per_item = 0.0  # running estimate of the bytes one call moves (nbytes)
        self._measured = 0  # calls that estimate is based on
        self._ready: deque[Unit] = deque()  # unordered: finished chunks in arrival order
        self._by_start: dict[int, Unit] = {}  # ordered: finished chunks by first index
        self._emit_at = 0  # ordered: index of the next item to hand back
        self.next_index = 0  # index of the next input item to read
        self.inflight = 0  # items handed to the pool and not delivered yet
        self.buffered = 0  # items delivered and not handed back yet
        self.pending: Unit | None = None  # read from the input, not accepted by the pool yet
        self.exhausted = False
        self.closed = False  # the caller stopped (break, close): results are dropped
        self.stop: BaseException | None = None  # why intake stopped early
        self.workers = 1  # the pool's workers now (the face keeps it current)
        self.inbox: deque[Unit] = deque()  # delivered by workers, not drained yet
        # The source had nothing at hand and the read was put off: look again soon.
        self.input_idle = False

    # -- reading

    @property
    def batch(self) -> int:
        """Items to read for the next unit (read it once per unit: deliveries adapt it, and
        the end of an input of known length shrinks it, see ``_sizes``)."""
        return self._sizes(1)[0]

    def limit(self, workers: int, queue_size: int) -> int:
        """Items that may be read and not yet handed back."""
        if self._measured < 2 * workers and not self._fixed_batch:
            # Few calls timed yet (the first ones are often slow: a fresh worker, cold
            # caches): one unit per worker and one queued for it. More units read now would be
            # sized on that guess and queue up in front of the larger batches that the next
            # times allow; fewer, and every worker would wait for the next read when its
            # first unit ends.
            return 2 * workers * self._batch
        # (The batch sized on the calls' times, not what the end of the input cuts it to: the
        # window is what may be in flight, and the units near the end are only smaller.)
        return (workers + queue_size + 1) * self._batch

    def room(self, workers: int, queue_size: int, held: int = 0) -> int:
        """Units that may be read now: 0 when nothing stops the intake and the window is
        full, or when something stops it. ``held``: items the face took from the buffer
        and has not handed back yet (they still count against the window)."""
        if self.stop is not None or self.closed or self.exhausted or self.pending is not None:
            return 0
        free = self.limit(workers, queue_size) - self.inflight - self.buffered - held
        return -(-free // self._batch) if free > 0 else 0

    def read_units(
        self, source: Iterator[Any], sink: Sink, n: int, wait: bool = True
    ) -> list[Unit]:
        """Read up to ``n`` units from a synchronous ``source`` at once (see ``read``).

        Only an input of known length (a collection in memory, which cannot block) is read
        ahead like this; from any other (a generator, a pipe), one unit at a time, so that
        what was read goes to the pool before the next read waits for more. Without
        ``wait``, a source that reports nothing at hand is not read (``input_idle``).
        """
        if self._length < 0:
            n = 1
        # (A window of "no limit", a queue_size or workers near sys.maxsize, is read a
        # bounded number of units at a time, and islice() takes at most sys.maxsize.)
        sizes = self._sizes(min(n, MOST_UNITS_PER_READ))
        entries: list[Any] = []
        want = min(sum(sizes), sys.maxsize)
        try:
            want = at_hand(source, want, wait)
            self.input_idle = not want
            if not want:
                return []
            entries.extend(itertools.islice(source, want))
        except BaseException as e:
            self.exhausted = True
            self.stop = e
        got = len(entries)
        if got < want:
            self.exhausted = True
        start = self.next_index
        self.next_index = start + got
        fn = self.fn
        mode = self.mode
        if sizes[0] == 1 and sizes[-1] == 1:  # (then every one is: see _sizes)
            return [Unit(fn, [entry], mode, start + i, sink) for i, entry in enumerate(entries)]
        units = []
        i = 0
        for size in sizes:
            if i >= got:
                break
            units.append(Unit(fn, entries[i : i + size], mode, start + i, sink))
            i += size
        return units

    def _sizes(self, n: int) -> list[int]:
        """The sizes of the next ``n`` units: the batch size, but near the end of an input of
        known length each unit at most its share of what is left after it (``tail_share``),
        so that every worker gets a share of the end and the tail stays parallel. Units run
        in the order they are read: the share counts from each unit's own place, not from
        where the read began (a read of many units at once ends with small ones). More read
        than the length hint said: the hint was low, the rest is of unknown length."""
        batch = self._batch
        left = self._length - self.next_index
        workers = self.workers
        if self._fixed_batch or batch == 1 or left <= 0 or workers == 1:
            return [batch] * n  # (one worker: no other to share the end with)
        sizes = []
        for _ in range(n):
            size = min(batch, tail_share(left, workers)) if left > 0 else batch
            sizes.append(size)
            left -= size
        return sizes

    def read(self, source: Iterator[Any], sink: Sink) -> Unit | None:
        """Read the next unit from a synchronous ``source``; None when it has nothing more.

        An exception from the input stops the intake (``stop``), after what it produced
        before: those items still run, and the error is raised after their results.
        """
        entries: list[Any] = []
        want = self.batch
        try:
            want = at_hand(source, want)
            entries.extend(itertools.islice(source, want))
        except BaseException as e:
            self.exhausted = True
            self.stop = e
        if len(entries) < want:
            self.exhausted = True  # islice came up short: the iterator is done
        return self.unit(entries, sink)

    def unit(self, entries: list[Any], sink: Sink) -> Unit | None:
        """Number ``entries`` (read by the face from its input) as the next unit."""
        if not entries:
            self.exhausted = True
            return None
        unit = Unit(self.fn, entries, self.mode, self.next_index, sink)
        self.next_index += len(entries)
        return unit

    def sending(self, unit: Unit) -> None:
        """``unit`` goes to the pool (before the put: a worker may deliver before it returns)."""
        self.inflight += len(unit.entries)

    def refused(self, unit: Unit, error: BaseException | None = None) -> None:
        """The pool did not take ``unit`` (no room, or ``error``): it is pending."""
        self.inflight -= len(unit.entries)
        self.pending = unit
        if error is not None:
            self.stop = error

    def refused_units(self, units: list[Unit], error: BaseException | None = None) -> None:
        """The pool took none of ``units`` (consecutive, read together): they are pending,
        as one unit."""
        unit = units[0]
        if len(units) > 1:
            entries = [entry for u in units for entry in u.entries]
            unit = Unit(unit.fn, entries, unit.mode, unit.start, unit.sink)
        self.inflight -= sum(len(u.entries) for u in units) - len(unit.entries)
        self.refused(unit, error)

    def accepted(self) -> None:
        self.pending = None

    # -- results

    def take_ready(
        self, out: deque[Any], convert: Callable[[Unit, deque[Any]], None]
    ) -> Unit | None:
        """Hand back every ready small chunk whose calls all succeeded, in order, converted
        at once by ``convert(chunk, out)`` (which appends its outputs to ``out``); stop at the
        first other chunk (one with a failure, or a large one): return it (to be iterated one
        output at a time) when ``out`` is empty, else leave it for the next call.

        A large chunk is iterated lazily: making thousands of Results at once for it would
        hold them all in memory together (and leave the allocator's arenas behind).

        A face that uses this keeps ``out`` short-lived and passes ``held=len(out)`` to
        ``room``: its items still count against the window.
        """
        ordered = self.ordered
        by_start = self._by_start
        ready = self._ready
        while True:
            if ordered:
                chunk = by_start.get(self._emit_at)
            else:
                chunk = ready[0] if ready else None
            if chunk is None:
                return None
            n = len(chunk.entries)
            lazy = chunk.nfail or n > _EAGER_MAX
            if lazy and out:
                return None
            if ordered:
                del by_start[self._emit_at]
                self._emit_at += n
            else:
                ready.popleft()
            self.buffered -= n
            if lazy:
                return chunk
            convert(chunk, out)

    def done(self) -> bool:
        """Nothing in flight and nothing more will be read."""
        return not self.inflight and (
            self.stop is not None or self.closed or (self.exhausted and self.pending is None)
        )

    def _learn(self, n: int, mean: float) -> None:
        """``n`` more calls were timed, ``mean`` seconds each: size the next units."""
        self._measured += n
        est = self._per_item
        # A moving average weighted by how many calls the chunk measured: one slow first
        # call (a fresh worker importing things) must not hold the batch size down for long.
        self._per_item = est = mean if est is None else _blend(est, mean, n)
        batch = round(self._target / est) if est > 0 else self._max_batch
        if self._bytes_per_item:
            batch = min(batch, int(TARGET_UNIT_BYTES / self._bytes_per_item))
        self._batch = max(1, min(self._max_batch, batch))

    def deliver(self, chunk: Unit) -> bool:
        """A worker finished ``chunk`` (any thread, without the face's lock): it waits in
        the inbox for the consumer's ``drain``. False when nobody wants it any more."""
        if self.closed:
            return False
        self.inbox.append(chunk)  # (deque.append: safe from any thread)
        return True

    def drain(self) -> None:
        """Account for every delivered chunk at once, learning from their times (the
        consumer, before it looks for results): the workers that delivered them only
        queued them, and went on with their next calls at once.

        Chunks are learned from as they arrive, not as they are consumed: an ordered map
        consumes nothing until its first item is done, however many others are.
        """
        inbox = self.inbox
        closed = self.closed
        ordered = self.ordered
        by_start = self._by_start
        ready = self._ready
        items = 0
        timed = 0
        total = 0.0
        counted = 0
        nbytes = 0
        while inbox:
            chunk = inbox.popleft()
            n = len(chunk.entries)
            self.inflight -= n
            if closed:
                continue
            items += n
            if ordered:
                by_start[chunk.start] = chunk
            else:
                ready.append(chunk)
            durs = chunk.durs
            if durs:
                timed += len(durs)
                total += durs[0] if n == 1 else sum(durs)
            if chunk.nbytes:
                counted += n
                nbytes += chunk.nbytes
        self.buffered += items
        if counted:
            est = self._bytes_per_item
            mean = nbytes / counted
            self._bytes_per_item = _blend(est, mean, counted) if est else mean
        if timed and not self._fixed_batch:
            self._learn(timed, total / timed)


def _blend(estimate: float, mean: float, n: int) -> float:
    """A running estimate moved toward the ``mean`` of ``n`` new measures, weighted by how
    many they are: one odd first measure must not hold the estimate for long."""
    return estimate + n / (n + 4) * (mean - estimate)


# Most units ``read_units`` reads in one go (an input in memory; see there).
MOST_UNITS_PER_READ = 1024


def tail_share(left: int, workers: int) -> int:
    """The most items a unit takes of the ``left`` still to come, so that every worker
    gets a share of them and the end of an input stays parallel (at least 1)."""
    return max(1, left // (2 * workers))


def at_hand(source: Iterator[Any], want: int, wait: bool = True) -> int:
    """How many items to read from a synchronous ``source`` in one go, for up to ``want``.

    A read that waits for the input (a pipe, a socket) holds back the items read before it in
    the same go: they reach the pool only when the go ends, and the results that are ready
    wait with them. An input that can tell how many items it has at hand (a method
    ``_workpool_at_hand()``, returning how many it gives without waiting, or a negative
    number when it cannot tell; ``workpool run``'s reader of a pipe has one) is therefore read
    no further than that at a time. When it has nothing at hand: one item (nothing read is
    held while that one waits), or none without ``wait`` (the caller has results to hand
    back first). Any other input (a generator, a list) is read ``want`` at a time.
    """
    if want <= 0:
        return 0
    n = at_hand_count(source)
    if n < 0:
        return want
    if n == 0:
        return 1 if wait else 0
    return min(want, n)


def at_hand_count(source: Any) -> int:
    """What ``source`` has at hand (its ``_workpool_at_hand()``), or -1 when it cannot tell."""
    count = getattr(source, "_workpool_at_hand", None)
    return -1 if count is None else int(count())


def top_up(
    intake: Intake,
    engine: Engine,
    source: Iterator[Any],
    sink: Sink,
    held: int = 0,
    defer: bool = False,
) -> None:
    """Hand the pool as much of a synchronous ``source`` as the window and the pool's room
    allow, without waiting: what a face's consumer does before it looks for results.

    The consumer owns the intake (workers only queue their chunks for it to ``drain``).
    When the pool has no room, ``sink.room()`` is called once it has. With ``defer``, a
    source that reports nothing at hand (see ``at_hand``) is not read while the call has
    work out or results to hand back: ``intake.input_idle`` tells the face to look again.
    """
    intake.workers = workers = engine.max_workers
    while intake.stop is None and not intake.closed:
        pending = intake.pending
        if pending is not None:
            units = [pending]
        else:
            n = intake.room(workers, engine.queue_size, held)
            if n <= 0:
                return
            if engine.closed:
                intake.stop = engine.closed_error()
                return  # never read input the pool could not accept
            n = min(n, engine.room())
            if n <= 0:
                engine.watch_room(sink)  # wake me when there is room again
                return  # don't read input we could not hand over
            wait = not (defer and (intake.inflight or intake.buffered or held))
            units = intake.read_units(source, sink, n, wait)
            if not units:
                return
        for unit in units:
            intake.sending(unit)
        try:
            taken = engine.put_many(units)
        except BaseException as e:
            intake.refused_units(units, e)
            return
        intake.accepted()
        if taken < len(units):
            # The room shrank meanwhile (another caller put work): the rest waits.
            intake.refused_units(units[taken:])
            engine.watch_room(sink)
            return
        if (held or intake.inbox) and intake.may_block:
            # Results are ready: they go back before the next read, which may wait (a
            # generator over a slow source): else they waited for the window to fill.
            return


# The faces hand each value over without keeping it: a value (or argument) the caller dropped
# must be gone, even while the rest of its batch is still being iterated. So the outcomes are
# popped off a reversed list, and nothing of them stays bound in a local across a ``yield``.


def values_of(chunk: Unit) -> Iterator[Any]:
    """The values of a finished chunk, for ``map``; raises TaskError at its first failure."""
    out = chunk.out
    out.reverse()
    pop = out.pop
    if not chunk.nfail:
        chunk.entries = []  # no Result will need the arguments
        while out:
            yield pop()
        return
    n = len(out)
    while out:
        if type(out[-1]) is Failure:
            _raise_failure(chunk, n - len(out), pop())
        yield pop()


def _raise_failure(chunk: Unit, pos: int, failure: Failure) -> None:
    from ._result import make_result

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


_make_result: Callable[..., Result[Any]] | None = None


def _result_maker() -> Callable[..., Result[Any]]:
    global _make_result
    from ._result import make_result  # (first use: the Result dataclass is made then)

    _make_result = make_result
    return make_result


def values_into(chunk: Unit, out: deque[Any]) -> None:
    """Append the values of a chunk whose calls all succeeded to ``out``, for ``map`` (see
    ``take_ready``); the chunk keeps none of them, nor its arguments."""
    values = chunk.out
    chunk.out = []
    chunk.entries = []
    out.extend(values)


def results_into(chunk: Unit, out: deque[Any]) -> None:
    """Append the Results of a chunk whose calls all succeeded to ``out``, for ``results``
    (see ``take_ready``); the chunk keeps none of them, nor its arguments."""
    make_result = _make_result or _result_maker()
    values, entries, durs = chunk.out, chunk.entries, chunk.durs
    chunk.out = []
    chunk.entries = []
    start = chunk.start
    attempt = chunk.attempt
    append = out.append
    for pos, value in enumerate(values):
        append(make_result(start + pos, entries[pos], value, None, None, attempt, durs[pos]))


def results_of(chunk: Unit) -> Iterator[Result[Any]]:
    """One Result per position of a finished chunk, for ``results``."""
    make_result = _make_result or _result_maker()
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
            yield make_result(start + pos, pop_entry(), pop_out(), None, None, attempt, durs[pos])
        return
    for pos in range(n):
        if type(out[-1]) is Failure:
            yield _failed_result(start + pos, pop_entry(), pop_out(), attempt, durs[pos])
        else:
            yield make_result(start + pos, pop_entry(), pop_out(), None, None, attempt, durs[pos])


def _failed_result(
    index: int, item: Any, failure: Failure, attempt: int, duration: float
) -> Result[Any]:
    from ._result import make_result

    return make_result(index, item, None, failure.error, failure.traceback, attempt, duration)


def unread_results(pending: Unit) -> Iterator[Result[Any]]:
    """Items read from the input that the pool never accepted: one Result each, saying so."""
    from ._result import make_result

    for pos, entry in enumerate(pending.entries):
        index = pending.start + pos
        yield make_result(
            index,
            entry,
            None,
            TaskCancelled(f"task {index} was never started: the pool stopped accepting work"),
            None,
            0,
            0.0,
        )
