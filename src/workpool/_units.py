"""Units of work: what the engine queues and a backend runs.

A *unit* is a batch of calls of one function, at consecutive input positions. ``submit`` makes a
unit of one call; ``map``/``results`` group tiny tasks into larger units automatically. A backend
runs a unit by claiming positions from ``unit.it`` one at a time and appending each outcome to
``unit.out`` (a value, or a :class:`Failure`) and its run time to ``unit.durs``. Claiming through
an iterator is what lets the supervisor take the unclaimed rest of a batch away from a worker
that hangs: ``list(unit.it)`` runs in C under the GIL, so a position is claimed exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

__all__ = [
    "CALL_ARGS",
    "CALL_ITEM",
    "CALL_KWARGS",
    "Failure",
    "Sink",
    "Unit",
    "failure_of",
    "is_coroutine_function",
]

# How a unit calls fn with each of its entries.
CALL_ITEM = 0  # fn(entry)
CALL_ARGS = 1  # fn(*entry)
CALL_KWARGS = 2  # fn(*entry, **unit.kwargs)   (submit)

QUEUED, RUNNING, WAITING, DONE = range(4)


class Failure:
    """A failed outcome in ``unit.out``: the exception and its formatted traceback.

    One that travels from a worker (``_wire.portable``) carries its exception pickled
    (``sent``: the pickle and what the exception is, in words): the outcome unpickles
    whole even where the exception does not, which becomes a RemoteError saying so, and
    the traceback is kept.
    """

    __slots__ = ("error", "sent", "traceback")

    def __init__(
        self, error: BaseException, tb: str | None, sent: tuple[bytes, str, str] | None = None
    ) -> None:
        self.error = error
        self.traceback = tb
        self.sent = sent

    def __reduce__(self) -> tuple[Any, ...]:
        if self.sent is None:
            return (Failure, (self.error, self.traceback))
        return (_received_failure, (*self.sent, self.traceback))


def _received_failure(blob: bytes, name: str, text: str, tb: str | None) -> Failure:
    """A Failure sent by a worker (see ``Failure.__reduce__``)."""
    import pickle

    try:
        error: BaseException = pickle.loads(blob)
    except Exception as e:
        from .errors import RemoteError

        error = RemoteError(
            f"{text} (the exception was pickled in the worker but could not be unpickled "
            f"here: {type(e).__name__}: {e})",
            name,
        )
    return Failure(error, tb)


def failure_of(error: BaseException) -> Failure:
    """Wrap an exception caught around a task call, dropping the worker's own frame."""
    tb = error.__traceback__
    if tb is not None:
        # The first frame is the backend loop that called fn; users want theirs.
        tb = tb.tb_next
        error.__traceback__ = tb
    import traceback

    text = "".join(traceback.format_exception(type(error), error, tb))
    return Failure(error, text)


def call_failed(unit: Unit, error: BaseException) -> Failure:
    """A call of ``unit`` raised ``error`` in its worker's loop (threads, coroutines): its
    outcome, counted. A ``map`` raises at its first failure, so the calls of the unit not
    started yet are not wanted: the engine cancels them (``Engine.cut_after_failure``)."""
    failure = failure_of(error)
    unit.nfail += 1
    if getattr(unit.sink, "stops_at_failure", False) and unit.slot is not None:
        unit.slot.owner.cut_after_failure(unit)
    return failure


_CO_COROUTINE = 0x80  # inspect.CO_COROUTINE: the code of an ``async def``


def is_coroutine_function(fn: Any) -> bool:
    """True when calling ``fn`` makes a coroutine (an ``async def``, a partial of one, an
    object whose ``__call__`` is one). Cheap for plain functions: one flag test."""
    code = getattr(fn, "__code__", None)
    if code is not None:
        return bool(code.co_flags & _CO_COROUTINE)
    import inspect

    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - the method, not callability
    )


class Sink(Protocol):
    """Where finished chunks of a unit go: a Task, or a map/results stream."""

    #: True when one running unit of this sink may be stopped on its own (Task.cancel);
    #: such a unit is never sent ahead to a worker that holds another unit (Engine.prefetch).
    stoppable: bool
    #: True when the pool may split a running unit of this sink, an idle worker taking the
    #: calls not started yet (units it sized itself; not a chunksize the caller gave).
    splittable: bool

    def started(self) -> None:
        """A worker took the unit (called under the engine lock)."""

    def deliver(self, chunk: Unit) -> None:
        """Finished (or cancelled) calls of a unit, in a chunk; called without the lock."""

    def active(self) -> bool:
        """False once nobody wants the results: queued work of the sink can be cancelled."""

    def moved(self, unit: Unit) -> None:
        """The sink's work continues in ``unit`` (requeued or retried; lock held)."""


class Unit:
    """A batch of calls to ``fn`` at input positions ``start .. start + len(entries) - 1``."""

    __slots__ = (
        "attempt",
        "cancelled",
        "durs",
        "entries",
        "fn",
        "it",
        "kwargs",
        "mode",
        "nbytes",
        "nfail",
        "out",
        "sink",
        "slot",
        "start",
        "state",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        entries: list[Any],
        mode: int,
        start: int,
        sink: Sink,
        kwargs: dict[str, Any] | None = None,
        attempt: int = 1,
    ) -> None:
        self.fn = fn
        self.entries = entries
        self.mode = mode
        self.start = start
        self.sink = sink
        self.kwargs = kwargs
        self.attempt = attempt
        self.it: Iterator[int] = iter(range(len(entries)))
        self.out: list[Any] = []
        self.durs: list[float] = []
        self.nfail = 0
        self.state = QUEUED
        self.slot: Any = None
        self.cancelled = False
        # Bytes its calls moved (arguments out, outcomes back), where the backend counts
        # them (worker processes): the intake sizes units on that too.
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self.entries)

    def part(self, lo: int, hi: int, attempt: int | None = None) -> Unit:
        """A fresh unit for positions ``lo..hi-1`` of this one (to requeue or retry them)."""
        return Unit(
            self.fn,
            self.entries[lo:hi],
            self.mode,
            self.start + lo,
            self.sink,
            self.kwargs,
            self.attempt if attempt is None else attempt,
        )

    def cut_rest(self) -> Unit | None:
        """Claim the calls of this running unit its worker has not started (the worker
        claims them one at a time from ``it``): a unit of them, or None if none is left.
        The worker settles what it claimed (``entries`` shrinks to that); the rest's calls
        count as queued already (a running unit's calls do, all but one). Lock held."""
        rest = list(self.it)
        if not rest:
            return None
        n = len(self.entries)
        claimed = n - len(rest)
        part = self.part(claimed, n)
        self.entries = self.entries[:claimed]
        return part

    def settled(self, lo: int, hi: int, out: list[Any], durs: list[float]) -> Unit:
        """A finished view of positions ``lo..hi-1`` with the given outcomes, for a sink."""
        chunk = self.part(lo, hi)
        chunk.out = out
        chunk.durs = durs
        chunk.nfail = sum(1 for o in out if type(o) is Failure)
        chunk.state = DONE
        return chunk

    def call_args(self, pos: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The positional and keyword arguments of the call at ``pos``."""
        entry = self.entries[pos]
        if self.mode == CALL_ITEM:
            return (entry,), {}
        return tuple(entry), dict(self.kwargs or {})

    def item(self, pos: int) -> Any:
        """The input item at ``pos`` as a Result reports it."""
        return self.entries[pos]
