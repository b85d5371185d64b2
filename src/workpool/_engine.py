"""The engine core: the state machine of units, under one lock.

Data flow::

    Pool.submit / stream intake                        Timers (one thread, while any is set)
        │ put(unit): waits while the queue is full           │ retry backoff, task deadlines,
        ▼                                                    │ idle retirement
    ┌──────────────┐  step()  ┌──────────────────┐ backend.run(slot, unit)
    │ queue: units │─────────▶│ slot (a driver's │──────────────────────▶ unit.out / unit.durs
    └──────────────┘          │ thread or task)  │◀── takeover(): timeout or cancel of a
                              └──────────────────┘    running unit
                                   │ step(slot, finished): settle, retry, take the next one
                                   ▼
                             sink.deliver(chunk)   (a Task, or a map/results stream)

A *driver* (``_backends/_drivers.py``) runs each slot: a thread, or an asyncio task. It calls
:meth:`Engine.step` with the unit the slot just ran; the engine settles it and says what the
slot does next (run a unit, park until woken, exit, or try again not before a time), never
waiting itself. Settling a unit and taking the next share one trip through the lock.

The engine's parts are objects of their own that it calls, all under its one lock: the
:class:`~._ledger.Ledger` (counters, snapshots, reports), the :class:`~._timers.Timers`, the
:class:`~._crew.Crew` of slots, :class:`~._sendahead.SendAhead` (a busy worker's next unit,
sent while it runs), :class:`~._split.LateSplit` (an idle worker takes the rest of a late
unit) and the :class:`~._lifecycle.Lifecycle` (close, join, shutdown). Two parts share its
state instead, as the base classes it is made of: :class:`~._settling.Settling` (accounting
for a unit its worker let go of) and :class:`~._stopping.Stopping` (deadlines, cancels and
shutdown's stop of running work). The backend sees the engine only through the
:class:`~._backends._base.Host` methods: ``prefetch``, ``drop_prefetched``,
``finish_broken``, ``break_pool``.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._backends import Backend
from ._backends._drivers import AGAIN, EXIT, PARK, create_driver
from ._bucket import Bucket
from ._context import current_source
from ._crew import Crew, Slot
from ._ledger import Ledger
from ._lifecycle import Lifecycle
from ._log import logger
from ._sendahead import SendAhead
from ._split import LateSplit
from ._stopping import Stopping
from ._task import CONDITION_STRIPES
from ._timers import DEADLINE, IDLE, REAL_CLOCK, RETRY, ROOM, SPLIT, Clock, Timers
from ._units import QUEUED, RUNNING, WAITING, Unit

if TYPE_CHECKING:
    from ._options import PoolOptions, Retry
    from ._reports import Stats
from .errors import (
    ConfigError,
    PoolClosed,
    WorkpoolError,
    WouldDeadlock,
)

__all__ = ["Engine", "open_engine"]

# Slot.parked values.
_NOT_PARKED, _IDLE, _POPPED = 0, 1, 2


class Engine(Stopping):
    """The pool's machinery, shared by every backend and every face (Pool, AsyncPool)."""

    def __init__(
        self,
        backend: Backend,
        *,
        max_workers: int | None,
        min_workers: int,
        queue_size: int | None,
        idle_timeout: float | None,
        task_timeout: float | None,
        retry: Retry | None,
        rate: tuple[float, int] | None,
        name: str,
        clock: Clock = REAL_CLOCK,
        loop: Any = None,
    ) -> None:
        self.backend = backend
        self.name = name
        self.loop = loop  # the event loop of the pool's face (AsyncPool), or None
        self.clock = clock
        self.now = clock.now
        self.min_workers = min_workers
        self.idle_timeout = idle_timeout
        self.task_timeout = task_timeout
        self.retry = retry
        self.rate = rate
        self.bucket = Bucket(*rate) if rate else None  # the rate limit (see _bucket)
        self._room_timer: float | None = None  # when a ROOM timer fires (see _wake_for_tokens)

        # Reentrant only so that code run by a signal handler (or the garbage collector) can
        # tell that it interrupted this thread inside the pool's own code (``_is_owned``) and
        # then touch nothing: the state is mid-change. Nothing takes it twice otherwise.
        self._lock = threading.RLock()
        self._not_full = threading.Condition(self._lock)  # submitters wait for room
        self._drained = threading.Condition(self._lock)  # join() waits for nothing left
        self._queue: deque[Unit] = deque()
        self.ledger = Ledger(self.now())
        self.crew = Crew()
        # (Lingering: split timers come one after another while a unit may turn late.)
        self.timers = Timers(self._lock, clock, self._on_timer, self.deliver, name, linger=True)
        self.closed = False
        self.closed_hard = False  # shutdown is cancelling running work: retry nothing more
        self.broken: BaseException | None = None  # why the pool gave up (break_pool)
        self.task_ids = itertools.count(1)
        # The futures of this pool's tasks share these conditions (see Task).
        self.conditions = [threading.Condition() for _ in range(CONDITION_STRIPES)]
        self._full_waiters = 0  # submitters blocked in put()
        # Workers whose task waits, with no timeout, for a task of this pool (Task.result):
        # the task each waits for.
        self._result_waiters: dict[Slot, Any] = {}
        # Workers whose task waits for room in this pool's full queue: how many waits each
        # (threads a task starts share its slot).
        self._blocked: dict[Slot, int] = {}
        self.nested_async = 0  # coroutines of this pool awaiting room in it (AsyncPool)
        self.awaiting_room = 0  # AsyncPool.submit calls awaiting room (on the loop)
        self._room_watchers: set[Any] = set()  # streams waiting for room without blocking
        self._drain_waiters = 0
        self._drain_callbacks: list[Callable[[], object]] = []

        caps = backend.open(self)
        self.caps = caps
        self.max_workers = caps.default_workers if max_workers is None else max_workers
        if min_workers > self.max_workers:
            backend.close()
            raise ConfigError(
                f"min_workers ({min_workers}) must not exceed workers ({self.max_workers})"
            )
        self.queue_size = 2 * self.max_workers if queue_size is None else queue_size
        self.kills = caps.stop == "kill"
        self.driver = create_driver(caps.driver, self, backend)
        self._max_waking = self.driver.max_waking
        self._claims = caps.claims
        self.split = LateSplit(self)  # an idle worker takes the rest of a late unit
        self.ahead = SendAhead(self)  # a busy worker's next unit, sent while it runs
        self.lifecycle = Lifecycle(self)

    # ------------------------------------------------------------------ intake

    def has_room(self) -> bool:
        """True when a unit put now would not wait (a hint: another thread may take it)."""
        return len(self._queue) < self._room()

    def _room(self) -> int:
        # Units the queue may hold: queue_size waiting, plus one for every worker (running or
        # not yet started) that is not busy, because those units start at once. With
        # queue_size == 0 this is a hand-off: a put succeeds only when a worker is free.
        # (``running`` counts busy workers: each runs one call at a time.) Under a rate
        # limit a free worker is room only while a token lets its unit start now: otherwise
        # the unit would wait, beyond queue_size.
        free = self.max_workers - self.ledger.running
        bucket = self.bucket
        if bucket is not None and free > 0:
            free = min(free, bucket.tokens(self.now()))
        return self.queue_size + free

    def _wake_for_tokens(self) -> None:
        """Someone waits for room (lock held): when only the rate limit keeps a free worker
        from being room, nothing else may free any (nothing runs), so a ROOM timer wakes the
        waiters when the next token comes."""
        bucket = self.bucket
        if bucket is None or self.max_workers - self.ledger.running <= 0:
            return
        due = bucket.allowed_at()
        now = self.now()
        if due <= now:
            # A token is there, for a queued unit a worker is about to take: the room
            # after that comes with the next token (waiters look again then).
            due = now + bucket.interval
        if self._room_timer is None or due < self._room_timer:
            self._room_timer = due
            self.timers.add(due, ROOM, None)

    def watch_room(self, watcher: Any) -> None:
        """Call ``watcher.room()`` (lock held) the next time a unit leaves the pool's hands."""
        with self._lock:
            self._room_watchers.add(watcher)
            if self.bucket is not None:
                self._wake_for_tokens()

    def _room_freed(self) -> None:
        watchers, self._room_watchers = self._room_watchers, set()
        for watcher in watchers:
            watcher.room()

    def put(self, unit: Unit, *, block: bool = True) -> bool:
        """Accept ``unit``, waiting while the queue is full; False when not blocking and full."""
        with self._lock:
            if self.closed:
                raise self.closed_error()
            room = (
                self.queue_size + self.max_workers - self.ledger.running
                if self.bucket is None
                else self._room()
            )
            if len(self._queue) >= room:
                if not block:  # (the test is _room(), inlined: this is the submit path)
                    return False
                if not _on_event_loop():
                    self._wait_for_room()
                # else: an event loop's thread (loop.run_in_executor) must never block, and
                # run_in_executor cannot take "no room" for an answer: the unit is accepted
                # over the bound. Async code that wants backpressure uses AsyncPool.
            n = len(unit.entries)
            ledger = self.ledger
            ledger.submitted += n
            ledger.queued += n
            self._enqueue(unit)
            return True

    def room(self) -> int:
        """Units a put would accept now without waiting (a hint, like has_room)."""
        return self._room() - len(self._queue)

    def put_many(self, units: list[Unit]) -> int:
        """Accept the first of ``units`` that the queue has room for now, without waiting;
        returns how many (a face that read several units at once hands them over in one
        lock trip)."""
        with self._lock:
            if self.closed:
                raise self.closed_error()
            taken = min(len(units), self._room() - len(self._queue))
            if taken <= 0:
                return 0
            ledger = self.ledger
            enqueue = self._enqueue
            for i in range(taken):
                unit = units[i]
                n = len(unit.entries)
                ledger.submitted += n
                ledger.queued += n
                enqueue(unit)
            return taken

    def try_put(self, unit: Unit) -> bool:
        """``put`` without waiting: False when the queue is full (no lock wait either way)."""
        return self.put(unit, block=False)

    def has_queued(self) -> bool:
        """True while units wait in the queue (a hint for a backend: read without the lock)."""
        return bool(self._queue)

    def _unit_left_queue(self) -> None:
        """A worker took a unit from the queue (lock held).

        Blocked submitters are woken once half the queue is free, not at every take: they
        then refill it in one go instead of ping-ponging the GIL per unit.
        """
        if self._full_waiters and len(self._queue) <= self.queue_size // 2:
            self._not_full.notify(self._room() - len(self._queue))

    def own_slot(self) -> Slot | None:
        """The slot of this pool whose call the caller runs, if any (a nested submit or
        wait: see ``Slot.is_current``)."""
        slot = current_source()
        if isinstance(slot, Slot) and slot.owner is self and slot.is_current():
            return slot
        return None

    def _wait_for_room(self) -> None:
        slot = self.own_slot()
        self._full_waiters += 1
        if slot is not None:
            self._blocked[slot] = self._blocked.get(slot, 0) + 1
        try:
            while len(self._queue) >= self._room():
                if (
                    slot is not None
                    and self._blocked_workers() >= self.crew.strength >= self.max_workers
                ):
                    # Every worker is blocked on this pool (putting into its full queue, or
                    # waiting for one of its tasks): none can ever take a unit.
                    raise WouldDeadlock(
                        f"a task of pool {self.name!r} submitted into the same pool while its "
                        f"queue was full (queue_size={self.queue_size}) and all "
                        f"{self.crew.strength} of its workers were blocked on the pool (doing "
                        "the same, or waiting for one of its tasks); use try_submit(), a "
                        "larger queue_size or workers, or a separate pool for nested work"
                    )
                if self.bucket is not None:
                    self._wake_for_tokens()
                self._not_full.wait()
                if self.closed:
                    raise self.closed_error()
        finally:
            self._full_waiters -= 1
            if slot is not None:
                self._unblock(slot)

    def _blocked_workers(self) -> int:
        """Workers whose task waits on this pool itself (lock held): for room in its full
        queue (a nested submit), or for one of its tasks (a nested ``Task.result``). Once
        every worker does, none is left to free the room or run the task: for ever."""
        blocked = {slot for slot in self._blocked if not slot.abandoned}
        blocked.update(
            slot
            for slot, task in self._result_waiters.items()
            if not slot.abandoned and not task.settled()  # (settled: it is about to go on)
        )
        return len(blocked)

    def _unblock(self, slot: Slot) -> None:
        left = self._blocked[slot] - 1
        if left:
            self._blocked[slot] = left
        else:
            del self._blocked[slot]

    def own_wait_begins(self, task: Any) -> Slot | None:
        """A task of this pool is about to wait, with no timeout, for ``task`` of this pool
        (``Task.result``): count its worker as blocked, and raise WouldDeadlock when no worker
        would be left to run that task (every worker of the pool, at its full size, waits
        so). The slot to hand to ``own_wait_ends``; None when the caller is not one of this
        pool's tasks."""
        slot = self.own_slot()
        if slot is None:
            return None
        with self._lock:
            self._result_waiters[slot] = task
            if (
                not task.settled()
                and self._blocked_workers() >= self.crew.strength >= self.max_workers
            ):
                del self._result_waiters[slot]
                raise WouldDeadlock(
                    f"a task of pool {self.name!r} waited for task {task.id} of the same pool "
                    f"while all {self.crew.strength} of its workers were waiting on the pool "
                    "too: none is left to run that task; use more workers, a separate pool "
                    "for the tasks it waits for, or a timeout"
                )
        return slot

    def own_wait_ends(self, slot: Slot) -> None:
        with self._lock:
            self._result_waiters.pop(slot, None)

    def closed_error(self) -> WorkpoolError:
        """What a submit to this closed pool raises (lock-free: also for signal handlers)."""
        if self.broken is not None:
            return self.broken_error()
        return PoolClosed(self.lifecycle.closed_message())

    def broken_error(self) -> WorkpoolError:
        return PoolClosed(f"pool {self.name!r} is broken and accepts no more work: {self.broken}")

    def _enqueue(self, unit: Unit, front: bool = False) -> None:
        crew = self.crew
        if crew.idle and crew.waking < self._max_waking and self.bucket is None:
            # Hand the unit straight to the most recently idle worker: it wakes with its
            # work and never has to contend for the lock to fetch it.
            slot = self._pop_idle()
            self.start_unit(slot, unit)
            slot.handoff = unit
            slot.waker.wake()
            return
        unit.state = QUEUED
        if front:
            self._queue.appendleft(unit)
        else:
            self._queue.append(unit)
        if crew.idle:
            self._wake_next()
        elif crew.strength < self.max_workers:
            self.spawn()

    def requeue_front(self, unit: Unit) -> None:
        """Put ``unit`` at the queue's front, its calls counted as queued already (lock
        held: a late unit's rest, see ``LateSplit.on_timer``)."""
        self._enqueue(unit, front=True)

    def start_unit(self, slot: Slot, unit: Unit) -> None:
        """``slot`` starts running ``unit`` (lock held)."""
        unit.state = RUNNING
        unit.slot = slot
        slot.unit = unit
        slot.runs += 1
        slot.t0 = self.now()
        ledger = self.ledger
        ledger.queued -= 1
        ledger.running += 1
        unit.sink.started()
        queue = self._queue
        if queue:
            crew = self.crew
            if crew.idle:
                self._wake_next()
            elif crew.strength < self.max_workers:
                # None idle: if more waits than the workers on their way to the queue (woken,
                # just started, between two units) can take, start one. Else a warm pool,
                # woken one worker at a time, never reached its full strength for a burst.
                holding = ledger.running - ledger.ahead  # workers with a unit (see send-ahead)
                if len(queue) > crew.strength - holding:
                    self.spawn()
        if self._claims and len(unit.entries) > 1 and unit.sink.splittable:
            self.split.started(slot, unit)
        if self.task_timeout is not None:
            self.timers.add(slot.t0 + self.task_timeout, DEADLINE, (slot, slot.runs))

    def _pop_idle(self) -> Slot:
        crew = self.crew
        slot = crew.idle.pop()
        slot.parked = _POPPED
        crew.waking += 1
        return slot

    def _wake_next(self) -> None:
        """More work waits: wake the next idle worker, unless as many as the driver allows
        (``Driver.max_waking``) are waking already.

        Keeps the invariant: while units are queued and workers idle, a worker is waking up,
        and it calls this again once it runs.
        """
        if self._queue and self.crew.idle and self.crew.waking < self._max_waking:
            self.wake_idle()

    def wake_idle(self) -> None:
        """Wake the most recently idle worker, with no unit handed to it: it steps again
        and finds its work itself (lock held; a worker is idle)."""
        slot = self._pop_idle()
        slot.handoff = None
        slot.waker.wake()

    def _wake_all(self) -> None:
        """Make every parked worker look at the pool's state again (lock held)."""
        crew = self.crew
        for slot in crew.idle:
            slot.parked = _POPPED
        crew.wake_all()

    def spawn(self) -> None:
        slot = self.crew.add(self, self.driver.make_waker(), self.max_workers)
        slot.parked = _NOT_PARKED
        self.driver.start(slot)

    # ------------------------------------------------------------------ the drivers' step

    def step(self, slot: Slot, finished: Unit | None) -> tuple[list[Unit], Any]:
        """Settle the unit ``slot`` finished (None: it has none) and say what it does next.

        Returns the chunks to deliver (the driver delivers them, without the lock, before
        anything else) and the next thing to do: a :class:`Unit` to run, ``PARK`` (sleep
        until woken, then step again), ``EXIT``, ``AGAIN`` (deliver, then step again at once)
        or a float: step again at that time on the engine's clock (a rate limit), or when
        woken. Never waits.
        """
        with self._lock:
            deliveries: list[Unit] = []
            if finished is not None:
                slot.unit = None
                if finished.state != RUNNING:  # taken over while it ran
                    if slot.abandoned:
                        return [], self._abandoned_slot_returned(slot)
                elif slot.stop is not None and slot.stop[0] is finished:
                    deliveries = self._stopped_late(slot, finished)
                elif finished.nfail:
                    deliveries = self._settle(finished, [finished])
                else:
                    deliveries = self._settle_ok(finished)
                if deliveries and self.bucket is not None:
                    # Paced: take the next unit after delivering, so that its call starts
                    # right when the rate limit lets it go.
                    return deliveries, AGAIN
            elif slot.parked:
                if slot.parked == _IDLE:
                    return [], PARK  # a stale wake-up: nobody popped it
                slot.parked = _NOT_PARKED
                self.crew.waking -= 1
                self._wake_next()
                handed = slot.handoff
                if handed is not None:
                    slot.handoff = None
                    return [], handed
            elif self.crew.pacing:
                self.crew.pacing.discard(slot)
            return deliveries, self._take(slot, park=not deliveries)

    def _take(self, slot: Slot, park: bool) -> Any:
        """The next thing ``slot`` does (lock held; see step)."""
        ahead = slot.next
        if ahead is not None:
            # Already sent to the worker: it runs now, whatever else has changed.
            self.ahead.taken(slot, ahead)
            return ahead
        if slot.abandoned or slot.retire:
            return EXIT
        crew = self.crew
        if crew.strength > self.max_workers:
            self._retire(slot)  # resize() shrank the pool
            return EXIT
        if self._queue:
            bucket = self.bucket
            if bucket is not None:
                now = self.now()
                allowed = bucket.allowed_at()
                if allowed > now:
                    if not park:
                        return AGAIN
                    crew.pacing.add(slot)
                    return allowed
                bucket.take(now)
            unit = self._queue.popleft()
            self.start_unit(slot, unit)
            self._unit_left_queue()
            return unit
        if self.ledger.ahead:
            stolen = self.ahead.steal(slot)
            if stolen is not None:
                return stolen
        if self.split.may_take():
            # Nothing queued, but running units hold unclaimed calls (``queued`` counts
            # them): one whose calls turned slow gives this worker the rest.
            rest = self.split.take(slot, park)
            if rest is not None:
                return rest
        if self.closed:
            # Retries that come due later start a worker on demand.
            self._retire(slot)
            return EXIT
        if not park:
            return AGAIN
        slot.parked = _IDLE
        slot.parks += 1
        crew.idle.append(slot)
        if self.idle_timeout is not None and crew.strength > self.min_workers:
            self.timers.add(self.now() + self.idle_timeout, IDLE, (slot, slot.parks))
        if self._full_waiters:
            self._not_full.notify()  # an idle worker is room for a hand-off
        return PARK

    def _retire(self, slot: Slot) -> None:
        slot.retire = True
        self.crew.leave(slot)
        if self._full_waiters:
            self._not_full.notify_all()
        if self.closed and self.crew.strength == 0:
            self._drained.notify_all()

    def _idle_expired(self, slot: Slot, park: int) -> None:
        """A worker parked idle for ``idle_timeout``: it retires unless the pool needs it."""
        crew = self.crew
        if (
            slot.parked == _IDLE
            and slot.parks == park
            and not self._queue
            and crew.strength > self.min_workers
        ):
            crew.idle.remove(slot)
            slot.parked = _NOT_PARKED
            self._retire(slot)
            slot.waker.wake()

    def _abandoned_slot_returned(self, slot: Slot) -> Any:
        self.ledger.abandoned -= 1
        logger.debug("pool %r: an abandoned worker's call returned; the worker exits", self.name)
        return EXIT

    def slot_exited(self, slot: Slot) -> None:
        """The driver of ``slot`` is done with it: release its worker (called by the driver,
        without the lock)."""
        if not slot.abandoned:
            self.backend.release(slot)

    @staticmethod
    def deliver(deliveries: list[Unit]) -> None:
        """Hand finished chunks to their sinks (without the lock).

        A sink that raises is a bug of workpool's own: it is logged, and the other chunks are
        still delivered, so that it never takes down the worker thread (whose slot would then
        hold its unit forever) nor another sink's results.
        """
        for chunk in deliveries:
            try:
                chunk.sink.deliver(chunk)
            except Exception:
                logger.exception("workpool could not deliver a result (please report this bug)")

    # ------------------------------------------------------------------ send-ahead (see _sendahead)

    def prefetch(self, slot: Slot) -> Unit | None:
        """Give ``slot`` its next unit now, while its current one still runs; None if not
        (see ``_sendahead``)."""
        with self._lock:
            return self.ahead.give(slot)

    def drop_prefetched(self, slot: Slot) -> None:
        """The worker died before starting ``slot.next``: put the unit back in the queue."""
        with self._lock:
            unit = self.ahead.dropped(slot)
            if unit is None:
                return
            deliveries = self._take_back(unit)
        self.deliver(deliveries)

    # ------------------------------------------------------------------ timers

    def _on_timer(self, kind: int, payload: Any, now: float) -> list[Unit]:
        """A timer is due (lock held): returns what to deliver."""
        if kind == RETRY:
            unit = payload
            if unit.state == WAITING:
                if self.broken is not None:
                    return self._cancel_units([unit], report=False, error=self.broken_error())
                if self.closed_hard or not unit.sink.active():
                    return self._cancel_units([unit], report=self.closed_hard)
                self._enqueue(unit, front=True)
            return []
        if kind == SPLIT:
            self.split.on_timer(now)
            return []
        if kind == ROOM:
            self._room_timer = None
            self._not_full.notify_all()
            if self._room_watchers:
                self._room_freed()
            return []
        slot, number = payload
        if kind == DEADLINE:
            return self._check_deadline(slot, number, now)
        self._idle_expired(slot, number)
        return []

    # ------------------------------------------------------------------ closing & draining

    def close_intake(self) -> None:
        """Accept nothing more; wake whoever waits on the intake (lock held)."""
        self.closed = True
        self._not_full.notify_all()
        if self._room_watchers:
            self._room_freed()
        self._wake_all()

    def wait_drained(self, timeout: float | None) -> bool:
        """Wait until nothing is queued or running; False if ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            ledger = self.ledger
            self._drain_waiters += 1
            try:
                while ledger.queued or ledger.running:
                    wait = None if deadline is None else deadline - time.monotonic()
                    if wait is not None and wait <= 0:
                        return False
                    self._drained.wait(wait)
                return True
            finally:
                self._drain_waiters -= 1

    def on_drained(self, callback: Callable[[], object]) -> bool:
        """Call ``callback()`` (lock held) once nothing is queued or running; True if that
        is so already (and the callback is not kept)."""
        with self._lock:
            if self.ledger.idle():
                return True
            self._drain_callbacks.append(callback)
            return False

    def forget_drained(self, callback: Callable[[], object]) -> None:
        """Drop ``callback`` if ``on_drained`` still keeps it (its waiter gave up: a timeout,
        a cancel), so that waiters that give up leave nothing behind on a pool that never
        drains. Removes one registration (compared with ``==``); a no-op once it was called."""
        with self._lock:
            try:
                self._drain_callbacks.remove(callback)
            except ValueError:
                pass  # called already (the pool drained), or never kept

    def start_workers(self) -> None:
        """Bring the pool up to ``min_workers`` live workers."""
        with self._lock:
            while self.crew.strength < self.min_workers and not self.closed:
                self.spawn()

    def resize(self, workers: int) -> None:
        deliveries: list[Unit] = []
        with self._lock:
            self.max_workers = workers
            crew = self.crew
            if crew.strength > workers:
                # Units sent ahead would start as the running ones end, beside the others:
                # back to the queue with them, to start within the new maximum.
                for unit in self.ahead.revoked():
                    deliveries += self._take_back(unit)
            # On demand: one new worker for each queued unit no idle worker will take.
            for _ in range(min(len(self._queue) - len(crew.idle), workers - crew.strength)):
                self.spawn()
            self._wake_all()  # idle workers above the new maximum retire
            if self._full_waiters:
                self._not_full.notify_all()
        self.deliver(deliveries)

    def stats(self) -> Stats:
        if self.lifecycle.interrupted_inside():
            # From a signal handler that interrupted the pool's own code: read without the
            # lock (waiting for it could never end); counts may be a moment apart.
            return self._stats()
        with self._lock:
            return self._stats()

    def _stats(self) -> Stats:
        crew = self.crew
        blocked = self._full_waiters + self.awaiting_room
        return self.ledger.snapshot(
            crew.strength, self.max_workers, len(crew.idle), blocked, self.now()
        )


def _on_event_loop() -> bool:
    """True when the calling thread runs an asyncio event loop (which must never block)."""
    import sys

    asyncio = sys.modules.get("asyncio")  # not imported: no loop runs (and no import cost)
    return asyncio is not None and asyncio.events._get_running_loop() is not None


def open_engine(
    options: PoolOptions,
    name: str,
    clock: Clock = REAL_CLOCK,
    loop: Any = None,
    backend: Backend | None = None,
) -> Engine:
    """The engine of a pool with ``options``: its backend created (unless given: made by
    ``create_backend`` earlier, which checked its options) and opened (``loop``: the
    caller's event loop, for an AsyncPool)."""
    from ._backends import create_backend

    return Engine(
        backend or create_backend(options.backend, options.backend_options),
        max_workers=options.workers,
        min_workers=options.min_workers,
        queue_size=options.queue_size,
        idle_timeout=options.idle_timeout,
        task_timeout=options.task_timeout,
        retry=options.retry,
        rate=options.rate,
        name=name,
        clock=clock,
        loop=loop,
    )
