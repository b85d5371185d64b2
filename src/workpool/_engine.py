"""The engine core: intake, backpressure, accounting, deadlines, retries and the lifecycle.

Data flow::

    submit / stream intake                                    supervisor thread (lazy)
        │  put(unit): blocks while the queue is full           │ timers: retry backoff,
        ▼                                                      │ task deadlines
    ┌────────────────┐ take()  ┌────────────┐ backend.run(unit) ▼
    │ queue of units │────────▶│ slot (one  │──────────────────────▶ unit.out / unit.durs
    └────────────────┘         │ per worker)│◀─ takeover(): timeout/cancel of a running unit
                               └────────────┘
                                    │ finish(unit): account, schedule retries
                                    ▼
                              sink.deliver(chunk)  (a Task, or a map/results stream)

One lock guards every counter, so ``stats()`` is a consistent snapshot. A *slot* is one worker:
a thread in this process that takes units and hands them to the backend (which may run them
in place, in a child process, or on a cluster). Slots start on demand up to ``max_workers`` and
retire after ``idle_timeout``. Accounting is per item: a unit of n items counts 1 item as
running and n - 1 as queued while a worker holds it, so ``running <= workers`` always.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from ._backends import Backend
from ._config import Retry
from ._context import TaskContext, set_source
from ._result import LatencySummary, ShutdownReport, Stats, UnstartedTask
from ._task import CONDITION_STRIPES
from ._units import DONE, QUEUED, RUNNING, WAITING, Failure, Unit
from .errors import PoolClosed, TaskCancelled, TaskTimeout, WouldDeadlock

__all__ = ["Engine", "Slot"]

_thread_local = threading.local()
_LATENCY_SAMPLES = 2048  # recent run times kept for percentiles: enough for a stable p99
# Idle workers woken at a time. Work arriving while one is still waking up queues instead of
# waking more; each worker that starts a unit wakes the next while work waits. Waking every
# idle worker at once for tiny tasks costs a sleep and a wake-up per worker per burst, and
# the woken threads only fight over the GIL; slow tasks still spread over all workers, one
# wake-up latency apart.
_MAX_WAKING = 1


class Slot:
    """One worker's seat: the thread that takes units, and what it is running now."""

    __slots__ = (
        "abandoned",
        "engine",
        "handle",
        "handoff",
        "id",
        "next",
        "retire",
        "stop",
        "t0",
        "thread",
        "unit",
        "wake",
    )

    def __init__(self, engine: Engine, id: int) -> None:
        self.engine = engine
        self.id = id
        self.unit: Unit | None = None
        self.t0 = 0.0  # start time of the call running now (monotonic)
        self.abandoned = False  # the engine took the running unit over
        self.retire = False
        # Set by the engine when a backend that kills workers must stop the running call:
        # (the unit, exception class, reason). The slot's thread settles the unit when the
        # kill lands. Set *before* the backend looks for the worker to kill, so a worker
        # started concurrently either is killed or sees the request before its first call.
        self.stop: tuple[Unit, type[BaseException], str] | None = None
        self.thread: threading.Thread | None = None
        self.handle: Any = None  # backend's per-worker state (a process, a client, ...)
        # An idle slot sleeps on its own lock; whoever pops it from the engine's idle stack
        # sets ``handoff`` (a unit, or None for "look again") and releases ``wake`` once.
        self.wake = threading.Lock()
        self.wake.acquire()
        self.handoff: Unit | None = None
        # A unit handed to this slot ahead of time (see Engine.prefetch): it runs next.
        self.next: Unit | None = None

    # ContextSource / CancelProbe for current_task() in this slot's thread.
    def task_context(self) -> TaskContext | None:
        unit = self.unit
        if unit is None:
            return None
        pos = len(unit.out)
        timeout = self.engine.task_timeout
        deadline = self.t0 + timeout if timeout is not None else None
        return TaskContext(unit.start + pos, unit.attempt, deadline, self)

    def cancel_requested(self) -> bool:
        return self.abandoned


class Engine:
    """The pool's machinery, shared by every backend. ``Pool`` is its public face."""

    def __init__(
        self,
        backend: Backend,
        *,
        max_workers: int,
        min_workers: int,
        queue_size: int,
        idle_timeout: float | None,
        task_timeout: float | None,
        retry: Retry | None,
        rate: float | None,
        name: str,
    ) -> None:
        self.backend = backend
        self.name = name
        self.max_workers = max_workers
        self.min_workers = min_workers
        self.queue_size = queue_size
        self.idle_timeout = idle_timeout
        self.task_timeout = task_timeout
        self.retry = retry
        self.rate_interval = 1.0 / rate if rate else None
        self._next_start = 0.0  # rate limiter: earliest time the next task may start

        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)  # workers wait for units
        self._not_full = threading.Condition(self._lock)  # submitters wait for room
        self._drained = threading.Condition(self._lock)  # join() waits for queued+running == 0
        self._sup_cv = threading.Condition(self._lock)  # the supervisor waits for timers
        self._queue: deque[Unit] = deque()
        self._timers: list[tuple[float, int, int, Any]] = []
        self._timer_seq = itertools.count()
        self._sup_thread: threading.Thread | None = None
        self._slots: set[Slot] = set()  # live slots (not retired, not abandoned)
        # Every slot started, until its thread is seen finished: shutdown joins them all,
        # including slots that retired but are still releasing their worker.
        self._started_slots: list[Slot] = []
        self._slot_ids = itertools.count(1)
        self.task_ids = itertools.count(1)
        # The futures of this pool's tasks share these conditions (see Task).
        self.conditions = [threading.Condition() for _ in range(CONDITION_STRIPES)]

        self._live = 0  # slots that count toward the pool's strength
        self._idle: list[Slot] = []  # slots sleeping in take(), most recent last
        self._waking = 0  # slots popped from _idle and woken, not yet back under the lock
        self._ahead = 0  # units sent ahead to a busy slot (Slot.next), counted in _running
        self._full_waiters = 0
        self._watchers: set[Any] = set()  # streams waiting for room without blocking
        self._nested_waiters = 0  # tasks of this pool blocked submitting into it
        self._drain_waiters = 0
        self.closed = False
        self._close_requested = False  # see close_when_dropped
        self._shutdown_started = False
        self._shutdown_done = threading.Event()
        self._unstarted: list[UnstartedTask] = []
        self._report: ShutdownReport | None = None
        self.closed_hard = False  # shutdown is cancelling running work: retry nothing more
        self.interrupted_by: int | None = None  # signal number, when a signal closed the pool
        self.interrupt_reported = False  # Interrupted was raised to the user already
        self.broken: BaseException | None = None  # why the pool broke (see break_pool)

        self._submitted = self._queued = self._running = 0
        self._succeeded = self._failed = self._cancelled = 0
        self._timed_out = self._retried = 0
        self._latency: deque[float] = deque(maxlen=_LATENCY_SAMPLES)
        self._started = time.monotonic()
        backend.open(self)
        _live_engines.add(self)

    # ------------------------------------------------------------------ intake

    def has_room(self) -> bool:
        """True when a unit put now would not block (a hint: another thread may take it)."""
        return len(self._queue) < self._room()

    def _room(self) -> int:
        # Units the queue may hold: queue_size waiting, plus one for every worker (running or
        # not yet started) that is not busy, because those units start at once. With
        # queue_size == 0 this is a hand-off: a put succeeds only when a worker is free.
        # (``_running`` counts busy workers: each runs one call at a time.)
        return self.queue_size + self.max_workers - self._running

    def watch_room(self, watcher: Any) -> None:
        """Call ``watcher.room()`` (lock held) the next time a unit leaves the pool's hands."""
        with self._lock:
            self._watchers.add(watcher)

    def _room_freed(self) -> None:
        watchers, self._watchers = self._watchers, set()
        for watcher in watchers:
            watcher.room()

    def put(self, unit: Unit, *, block: bool = True) -> bool:
        """Accept ``unit``, waiting while the queue is full; False when not blocking and full."""
        with self._lock:
            if self.closed:
                raise PoolClosed(self.closed_message())
            if len(self._queue) >= self.queue_size + self.max_workers - self._running:
                if not block:  # (the test is _room(), inlined: this is the submit path)
                    return False
                self._wait_for_room()
            n = len(unit.entries)
            self._submitted += n
            self._queued += n
            self._enqueue(unit)
            return True

    def _wait_for_room(self) -> None:
        nested = getattr(_thread_local, "engine", None) is self
        self._full_waiters += 1
        if nested:
            self._nested_waiters += 1
        try:
            while len(self._queue) >= self._room():
                if nested and self._nested_waiters >= self._live >= self.max_workers:
                    # Every worker is blocked putting into this full queue: none can ever
                    # take a unit, so waiting would never end.
                    raise WouldDeadlock(
                        f"a task of pool {self.name!r} submitted into the same pool while its "
                        f"queue was full (queue_size={self.queue_size}) and all "
                        f"{self._live} workers were blocked doing the same; use try_submit(), "
                        "a larger queue_size or workers, or a separate pool for nested work"
                    )
                self._not_full.wait()
                if self.closed:
                    raise PoolClosed(self.closed_message())
        finally:
            self._full_waiters -= 1
            if nested:
                self._nested_waiters -= 1

    def _enqueue(self, unit: Unit, front: bool = False) -> None:
        if self._idle and self._waking < _MAX_WAKING and self.rate_interval is None:
            # Hand the unit straight to the most recently idle worker: it wakes with its
            # work and never has to contend for the lock to fetch it.
            slot = self._idle.pop()
            self._waking += 1
            self._start(slot, unit)
            slot.handoff = unit
            slot.wake.release()
            return
        unit.state = QUEUED
        if front:
            self._queue.appendleft(unit)
        else:
            self._queue.append(unit)
        if self._idle:
            self._wake_next()
        elif self._live < self.max_workers:
            self._spawn()

    def _start(self, slot: Slot, unit: Unit) -> None:
        """``slot`` starts running ``unit`` (lock held)."""
        unit.state = RUNNING
        unit.slot = slot
        slot.unit = unit
        slot.t0 = time.monotonic()
        self._queued -= 1
        self._running += 1
        unit.sink.started()
        if self._queue and self._idle:
            self._wake_next()
        if self.task_timeout is not None:
            self._add_timer(slot.t0 + self.task_timeout, _DEADLINE, (slot, unit))

    def _wake_next(self) -> None:
        """More work waits: wake the next idle worker, one at a time (see _MAX_WAKING).

        Keeps the invariant: while units are queued and workers idle, a worker is waking up,
        and it calls this again once it runs.
        """
        if self._queue and self._idle and self._waking < _MAX_WAKING:
            self._waking += 1
            self._wake(self._idle.pop())

    @staticmethod
    def _wake(slot: Slot) -> None:
        slot.handoff = None
        slot.wake.release()

    def _wake_all(self) -> None:
        """Make every idle worker look at the pool's state again (lock held)."""
        idle, self._idle = self._idle, []
        self._waking += len(idle)
        for slot in idle:
            self._wake(slot)
        self._not_empty.notify_all()  # workers pacing a rate limit

    def _spawn(self) -> None:
        slot = Slot(self, next(self._slot_ids))
        if len(self._started_slots) > 2 * self.max_workers:  # forget finished threads
            self._started_slots = [
                s for s in self._started_slots if s.thread is None or s.thread.is_alive()
            ]
        self._started_slots.append(slot)
        self._slots.add(slot)
        self._live += 1
        self.backend.start_worker(slot)

    def closed_message(self) -> str:
        if self.broken is not None:
            return f"pool {self.name!r} is broken and accepts no more work: {self.broken}"
        if self.interrupted_by is not None:
            return f"pool {self.name!r} is draining after signal {self.interrupted_by}"
        return f"pool {self.name!r} is closed and accepts no more work"

    # ------------------------------------------------------------------ workers

    def slot_main(self, slot: Slot) -> None:
        """The loop of one worker thread: take a unit, run it, settle it.

        Settling a unit and taking the next one share one trip through the lock; the
        finished unit's results are delivered before the next one runs.
        """
        _thread_local.engine = self
        set_source(slot)
        run = self.backend.run
        # A backend that keeps the default (no-op) prepare is not called for it.
        prepare = None if type(self.backend).prepare is Backend.prepare else self.backend.prepare
        unit: Unit | None = None
        try:
            while True:
                if prepare is not None:
                    prepare(slot)  # e.g. start the worker process before taking work
                deliveries: list[Unit] = []
                with self._lock:
                    if unit is not None:
                        slot.unit = None
                        if unit.state != RUNNING:  # taken over while it ran
                            if slot.abandoned:
                                return
                        elif unit.nfail:
                            deliveries = self._settle(unit, [unit])
                        else:
                            deliveries = self._settle_ok(unit)
                    if deliveries and self.rate_interval is not None:
                        # Paced: take the next unit after delivering, so that its call
                        # starts right when the rate limit lets it go.
                        unit = None
                    else:
                        unit = self._take(slot, block=not deliveries)
                for chunk in deliveries:
                    chunk.sink.deliver(chunk)
                if unit is None:
                    if deliveries:
                        continue  # delivered first; now wait for work
                    return
                run(slot, unit)
        finally:
            set_source(None)
            if not slot.abandoned:
                self.backend.release(slot)

    def _take(self, slot: Slot, block: bool) -> Unit | None:
        """The next unit for ``slot`` (lock held); None to exit, or when not blocking and idle.

        A slot that must exit (abandoned, retired) has ``slot.retire`` or ``slot.abandoned``
        set, which tells a non-blocking None apart from an exit.
        """
        ahead = slot.next
        if ahead is not None:
            # Already sent to the worker: it runs now, whatever else has changed.
            slot.next = None
            self._ahead -= 1
            slot.unit = ahead
            slot.t0 = time.monotonic()
            return ahead
        while True:
            if slot.abandoned or slot.retire:
                return None
            if self._live > self.max_workers:
                self._retire(slot)  # resize() shrank the pool
                return None
            if self._queue:
                if self.rate_interval is not None:
                    wait = self._next_start - time.monotonic()
                    if wait > 0:
                        if not block:
                            return None
                        self._not_empty.wait(wait)
                        continue
                    self._next_start = time.monotonic() + self.rate_interval
                unit = self._queue.popleft()
                self._start(slot, unit)
                self._unit_left_queue()
                return unit
            if self._ahead:
                stolen = self._steal(slot)
                if stolen is not None:
                    return stolen
            if self._close_requested:
                self._close()
            if self.closed:
                # Retries that come due later start a worker on demand.
                self._retire(slot)
                return None
            if not block:
                return None
            timeout = -1.0
            if self.idle_timeout is not None and self._live > self.min_workers:
                timeout = self.idle_timeout
            self._idle.append(slot)
            if self._full_waiters:
                self._not_full.notify()  # an idle worker is room for a hand-off
            self._lock.release()
            try:
                woke = slot.wake.acquire(True, timeout)
            finally:
                self._lock.acquire()
            if slot in self._idle:
                self._idle.remove(slot)  # timed out, and nobody popped it meanwhile
            else:
                self._waking -= 1
                if not woke:
                    slot.wake.acquire()  # popped just as it timed out: consume that release
                    woke = True
                self._wake_next()
            handed = slot.handoff
            if handed is not None:
                slot.handoff = None
                return handed
            if (
                not woke
                and not self._queue
                and self.idle_timeout is not None
                and self._live > self.min_workers
            ):
                self._retire(slot)
                return None

    def prefetch(self, slot: Slot) -> Unit | None:
        """Give ``slot`` its next unit now, while its current one still runs; None if not.

        For a backend whose workers are a round trip away (processes): it sends the unit on
        at once, so the worker starts it the moment it is done with the current one instead
        of idling for the round trip. The unit counts as running from now on and runs next on
        this slot (``_take`` returns it), unless a worker that goes idle first takes it back
        (``_steal``): a unit never waits behind a slow one while a worker is free (the slow
        one might even be waiting for it). Only when nothing else could use the unit sooner
        (every worker of the pool is started and busy) and nothing may have to stop it alone
        (no deadlines, no rate limit; only units of ``map``/``results``: a submitted task can
        be cancelled while it runs, which kills its worker and whatever else it holds).
        """
        with self._lock:
            queue = self._queue
            if (
                not queue
                or slot.next is not None
                or slot.unit is None
                or queue[0].sink.stoppable
                or self._running - self._ahead < self._live
                or self._live != self.max_workers
                or self.task_timeout is not None
                or self.rate_interval is not None
                or self.closed_hard
                or slot.retire
            ):
                return None
            unit = queue.popleft()
            unit.state = RUNNING
            unit.slot = slot
            slot.next = unit
            self._ahead += 1
            self._queued -= 1
            self._running += 1
            unit.sink.started()
            self._unit_left_queue()
            return unit

    def _steal(self, slot: Slot) -> Unit | None:
        """Nothing is queued and ``slot`` would go idle: take over a unit sent ahead to a busy
        worker that has not started it yet (lock held)."""
        for other in self._slots:
            if other is not slot:
                unit = self._revoke(other)
                if unit is not None:
                    unit.slot = slot
                    slot.unit = unit
                    slot.t0 = time.monotonic()
                    return unit
        return None

    def _revoke(self, slot: Slot, sink: Any = None) -> Unit | None:
        """``slot.next`` (of ``sink``, if given), taken back from its worker, which has not
        started it; still counted as running. None if there is none or it started."""
        unit = slot.next
        if unit is None or (sink is not None and unit.sink is not sink):
            return None
        if not self.backend.revoke(slot):
            return None
        slot.next = None
        self._ahead -= 1
        return unit

    def _revoke_all(self, sink: Any = None) -> list[Unit]:
        """Take back every unit sent ahead and not started yet (of ``sink``, if given), as
        queued units again (lock held)."""
        units = []
        if self._ahead:
            for slot in self._slots:
                unit = self._revoke(slot, sink)
                if unit is not None:
                    self._running -= 1  # (a unit counts as one running call, see _start)
                    self._queued += 1
                    units.append(unit)
        return units

    def drop_prefetched(self, slot: Slot) -> None:
        """The worker died before starting ``slot.next``: put the unit back in the queue."""
        with self._lock:
            unit = slot.next
            if unit is None:
                return
            slot.next = None
            self._ahead -= 1
            if unit.state != RUNNING:
                return  # settled elsewhere already
            deliveries = self._take_back(unit)
        self._deliver_outside(deliveries)

    def _unit_left_queue(self) -> None:
        """A worker took a unit from the queue (lock held).

        Blocked submitters are woken once half the queue is free, not at every take: they
        then refill it in one go instead of ping-ponging the GIL per unit.
        """
        if self._full_waiters and len(self._queue) <= self.queue_size // 2:
            self._not_full.notify(self._room() - len(self._queue))

    def _take_back(self, unit: Unit) -> list[Unit]:
        """A running unit none of whose calls started goes back to the queue whole (lock
        held); returns what to deliver when it is cancelled instead (see _requeue)."""
        unit.state = DONE
        self._running -= 1
        self._queued += 1
        return self._requeue(unit, 0, len(unit.entries))

    def _retire(self, slot: Slot) -> None:
        slot.retire = True
        self._slots.discard(slot)
        self._live -= 1
        if self._full_waiters:
            self._not_full.notify_all()
        if self.closed and self._live == 0:
            self._drained.notify_all()

    def _settle(self, unit: Unit, chunks: list[Unit]) -> list[Unit]:
        """Account for the finished chunks of a unit a worker held; return what to deliver.

        ``chunks`` are finished views of the unit's positions (normally just the unit itself);
        positions of the unit not in any chunk were requeued. Lock held.
        """
        unit.state = DONE
        total = 0
        deliveries: list[Unit] = []
        for chunk in chunks:
            n = len(chunk.entries)
            total += n
            chunk.state = DONE
            self._latency.extend(chunk.durs)
            if not chunk.nfail:
                self._succeeded += n
                deliveries.append(chunk)
            else:
                deliveries += self._settle_failures(chunk)
        return self._held_unit_done(unit, total, deliveries)

    def _held_unit_done(self, unit: Unit, settled: int, deliveries: list[Unit]) -> list[Unit]:
        """The worker let go of ``unit``, ``settled`` of whose positions are done (the rest
        were requeued); ``deliveries`` go to its sink if it still wants them. Lock held."""
        self._running -= 1
        self._queued -= settled - 1
        if self._watchers:
            self._room_freed()
        if self._queued == 0 and self._running == 0 and self._drain_waiters:
            self._drained.notify_all()
        if not unit.sink.active():
            return []
        return deliveries

    def _settle_ok(self, unit: Unit) -> list[Unit]:
        """``_settle(unit, [unit])`` for a unit whose calls all succeeded: the common case."""
        unit.state = DONE
        n = len(unit.entries)
        self._latency.extend(unit.durs)
        self._succeeded += n
        return self._held_unit_done(unit, n, [unit])

    def _settle_failures(self, chunk: Unit) -> list[Unit]:
        retry = self.retry
        out = chunk.out
        durs = chunk.durs
        held: list[int] = []
        for pos, o in enumerate(out):
            if type(o) is not Failure:
                self._succeeded += 1
                continue
            error = o.error
            if (
                retry is not None
                and chunk.sink.active()
                and not self.closed_hard
                and retry.should_retry(error, chunk.attempt)
            ):
                held.append(pos)
                again = chunk.part(pos, pos + 1, attempt=chunk.attempt + 1)
                again.state = WAITING
                again.sink.moved(again)
                self._retried += 1
                self._queued += 1
                self._add_timer(time.monotonic() + retry.delay(chunk.attempt), _RETRY, again)
                continue
            if isinstance(error, TaskCancelled):
                self._cancelled += 1
            else:
                self._failed += 1
                if isinstance(error, TaskTimeout):
                    self._timed_out += 1
        if not held:
            return [chunk]
        parts = []
        lo = 0
        for pos in [*held, len(out)]:
            if pos > lo:
                parts.append(chunk.settled(lo, pos, out[lo:pos], durs[lo:pos]))
            lo = pos + 1
        return parts

    def _requeue(self, unit: Unit, lo: int, hi: int) -> list[Unit]:
        """Put positions ``lo..hi-1`` of a running unit back at the queue's front (lock held).

        When nobody wants them any more (shutdown cancelling, a closed stream) they are
        cancelled instead; returns the chunks to deliver for that.
        """
        if hi <= lo:
            return []
        rest = unit.part(lo, hi)
        if self.closed_hard or unit.cancelled or not unit.sink.active():
            return self._cancel_units([rest], report=self.closed_hard)
        rest.sink.moved(rest)
        self._enqueue(rest, front=True)
        return []

    def finish_broken(
        self,
        slot: Slot,
        unit: Unit,
        failed_pos: int | None,
        error: BaseException,
        duration: float,
    ) -> None:
        """Settle a unit whose worker died or was killed while running it.

        Called by a backend in the slot's thread. ``unit.out`` holds the outcomes that came
        back; ``failed_pos`` is the call that was running (it ends with ``error``), or None
        when the worker died between calls. Every other position is requeued.
        """
        with self._lock:
            if unit.state != RUNNING:
                return
            received = len(unit.out)
            n = len(unit.entries)
            deliveries: list[Unit] = []
            chunks: list[Unit] = []
            if received:
                chunks.append(unit.settled(0, received, unit.out, unit.durs))
            if failed_pos is None or failed_pos < received:
                deliveries += self._requeue(unit, received, n)
            else:
                deliveries += self._requeue(unit, received, failed_pos)
                deliveries += self._requeue(unit, failed_pos + 1, n)
                chunks.append(
                    unit.settled(failed_pos, failed_pos + 1, [Failure(error, None)], [duration])
                )
            slot.unit = None
            deliveries += self._settle(unit, chunks)
        self._deliver_outside(deliveries)

    # ------------------------------------------------------------------ supervisor

    def _add_timer(self, due: float, kind: int, payload: Any) -> None:
        first = not self._timers or due < self._timers[0][0]
        heapq.heappush(self._timers, (due, next(self._timer_seq), kind, payload))
        if self._sup_thread is None:
            self._sup_thread = threading.Thread(
                target=self._supervise, name=f"{self.name}-supervisor", daemon=True
            )
            self._sup_thread.start()
        elif first:
            self._sup_cv.notify()

    def _supervise(self) -> None:
        """Fire timers: move retries back to the queue, enforce task deadlines."""
        while True:
            deliveries: list[Unit] = []
            with self._lock:
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    _, _, kind, payload = heapq.heappop(self._timers)
                    if kind == _RETRY:
                        unit = payload
                        if unit.state == WAITING:
                            if self.closed_hard or not unit.sink.active():
                                deliveries += self._cancel_units([unit], report=self.closed_hard)
                            else:
                                self._enqueue(unit, front=True)
                    else:
                        slot, unit = payload
                        deliveries += self._check_deadline(slot, unit, now)
                if not deliveries:
                    if not self._timers:
                        self._sup_thread = None
                        if self.closed and not self._queue:
                            self._wake_all()  # let idle workers exit
                        return
                    self._sup_cv.wait(self._timers[0][0] - now)
                    continue
            for chunk in deliveries:
                chunk.sink.deliver(chunk)

    def _check_deadline(self, slot: Slot, unit: Unit, now: float) -> list[Unit]:
        assert self.task_timeout is not None
        if unit.state != RUNNING or slot.unit is not unit:
            return []
        due = self.backend.call_started(slot) + self.task_timeout
        if due > now:
            # A later call of the batch is running; check again at its own deadline.
            self._add_timer(due, _DEADLINE, (slot, unit))
            return []
        return self.takeover(
            slot, unit, TaskTimeout, f"timed out after {self.task_timeout:g}s", recheck=True
        )

    def takeover(
        self,
        slot: Slot,
        unit: Unit,
        error: type[BaseException],
        why: str,
        *,
        recheck: bool = False,
    ) -> list[Unit]:
        """Settle a running unit now: its current call ends with ``error`` (lock held).

        The unclaimed rest of the batch is requeued (or cancelled when no longer wanted), the
        slot is abandoned and the backend told to stop it; a new slot keeps the pool's strength.
        Returns the chunks to deliver once the lock is released.

        A backend that can kill its workers (``kills_workers``) is told to, instead; the slot's
        thread then settles the unit with ``finish_broken`` and the slot lives on.
        """
        if self.backend.kills_workers:
            now = time.monotonic()
            if recheck:
                assert self.task_timeout is not None
                due = self.backend.call_started(slot) + self.task_timeout
                if due > now:
                    self._add_timer(due, _DEADLINE, (slot, unit))
                    return []
            if slot.stop is None or slot.stop[0] is not unit:
                slot.stop = (unit, error, why)
                self.backend.stop(slot)
            return []
        rest = list(unit.it)  # claim every position the worker has not started
        n = len(unit.entries)
        claimed = n - len(rest)
        done = len(unit.out)  # calls the worker finished (it may still be appending)
        if claimed == 0:
            # The worker had not started this unit: take it back whole; the slot lives on.
            slot.unit = None
            return self._take_back(unit)
        deliveries = self._requeue(unit, claimed, n)
        unit.entries = unit.entries[:claimed]
        if done >= claimed:
            return deliveries  # every claimed call finished in time: the worker settles them
        now = time.monotonic()
        if recheck:
            assert self.task_timeout is not None
            due = slot.t0 + self.task_timeout  # read after the claim above: it is current
            if due > now:
                # The worker started a new call between the deadline check and the claim.
                self._add_timer(due, _DEADLINE, (slot, unit))
                return deliveries
        tid = unit.start + done
        exc = error(f"task {tid} {why}")
        out = [*unit.out[:done], Failure(exc, None)]
        durs = [*unit.durs[:done], now - slot.t0]
        slot.abandoned = True
        slot.unit = None
        self._slots.discard(slot)
        self._live -= 1
        deliveries += self._settle(unit, [unit.settled(0, done + 1, out, durs)])
        self.backend.stop(slot)
        if (self._queue or self._live < self.min_workers) and self._live < self.max_workers:
            self._spawn()
        if self._full_waiters:
            self._not_full.notify_all()
        return deliveries

    # ------------------------------------------------------------------ cancellation

    def _cancel_units(self, units: list[Unit], *, report: bool) -> list[Unit]:
        """Cancel queued or waiting units (lock held); return the chunks to deliver."""
        chunks = []
        for unit in units:
            n = len(unit.entries)
            unit.state = DONE
            self._queued -= n
            self._cancelled += n
            if report:
                for pos in range(n):
                    args, kwargs = unit.call_args(pos)
                    self._unstarted.append(UnstartedTask(unit.start + pos, unit.fn, args, kwargs))
            if unit.sink.active():
                out: list[Any] = [
                    Failure(TaskCancelled(f"task {unit.start + i} was cancelled"), None)
                    for i in range(n)
                ]
                chunk = unit.settled(0, n, out, [0.0] * n)
                chunk.cancelled = True
                chunk.attempt = unit.attempt - 1  # attempts that ran: none, this time
                chunks.append(chunk)
        if self._queued == 0 and self._running == 0 and self._drain_waiters:
            self._drained.notify_all()
        if self._full_waiters:
            self._not_full.notify_all()
        return chunks

    def cancel_unit(self, unit: Unit) -> bool:
        """Cancel one unit wherever it is (Task.cancel). False when it already finished."""
        with self._lock:
            if unit.state == QUEUED:
                self._queue.remove(unit)
            elif unit.state == WAITING:
                pass  # its retry timer finds it DONE and drops it
            elif unit.state == RUNNING:
                unit.cancelled = True
                deliveries = self.takeover(unit.slot, unit, TaskCancelled, "was cancelled")
                return self._deliver_outside(deliveries)
            else:
                return False
            deliveries = self._cancel_units([unit], report=False)
        return self._deliver_outside(deliveries)

    def cancel_sink(self, sink: Any) -> None:
        """Cancel every queued unit of ``sink`` (a stream that was closed early)."""
        with self._lock:
            mine = [u for u in self._queue if u.sink is sink]
            if mine:
                self._queue = deque(u for u in self._queue if u.sink is not sink)
            mine += self._revoke_all(sink)  # sent ahead, not started: as good as queued
            if mine:
                self._cancel_units(mine, report=False)

    @staticmethod
    def _deliver_outside(deliveries: list[Unit]) -> bool:
        for chunk in deliveries:
            chunk.sink.deliver(chunk)
        return True

    # ------------------------------------------------------------------ broken pool

    def has_queued(self) -> bool:
        """True while units wait in the queue (a hint for a backend: read without the lock)."""
        return bool(self._queue)

    def break_pool(self, error: BaseException) -> None:
        """The backend can run nothing (its workers cannot start): close the pool, and fail
        every queued or waiting task with ``error``. Submits then raise ``PoolClosed`` saying
        why. Called by a backend, without the lock; its running units are its own to settle
        (units requeued later still run, and the backend fails them at once)."""
        with self._lock:
            if self.broken is not None:
                return
            self.broken = error
            self._close()
            units = list(self._queue)
            self._queue.clear()
            units += [p for (_, _, k, p) in self._timers if k == _RETRY and p.state == WAITING]
            deliveries: list[Unit] = []
            for unit in units:
                n = len(unit.entries)
                unit.state = DONE  # a retry timer that finds it DONE drops it
                self._queued -= n
                self._failed += n
                if unit.sink.active():
                    deliveries.append(unit.settled(0, n, [Failure(error, None)] * n, [0.0] * n))
            if self._queued == 0 and self._running == 0 and self._drain_waiters:
                self._drained.notify_all()
            if self._full_waiters:
                self._not_full.notify_all()
        self._deliver_outside(deliveries)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._not_full.notify_all()
        self._wake_all()

    def close_when_dropped(self) -> None:
        """Close because the Pool object was garbage-collected.

        The collector may run this in any thread, also in one that holds the engine's lock
        (a worker settling a unit): so never wait for the lock here. If it is taken, leave a
        request that the next worker to go idle carries out.
        """
        if self._lock.acquire(blocking=False):
            try:
                self._close()
            finally:
                self._lock.release()
        else:
            self._close_requested = True

    def join(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._drain_waiters += 1
            try:
                while self._queued or self._running:
                    wait = None if deadline is None else deadline - time.monotonic()
                    if wait is not None and wait <= 0:
                        return False
                    self._drained.wait(wait)
                return True
            finally:
                self._drain_waiters -= 1

    def start_workers(self) -> None:
        """Bring the pool up to ``min_workers`` live workers."""
        with self._lock:
            while self._live < self.min_workers and not self.closed:
                self._spawn()

    def shutdown(
        self,
        wait: bool = True,
        *,
        cancel_futures: bool = False,
        timeout: float | None = None,
    ) -> ShutdownReport:
        self.close()
        with self._lock:
            first = not self._shutdown_started
            self._shutdown_started = True
            deliveries: list[Unit] = []
            if cancel_futures:
                deliveries = self._cancel_queued()
        self._deliver_outside(deliveries)
        if not wait:
            if first:
                threading.Thread(
                    target=self._drain, args=(timeout,), name=f"{self.name}-shutdown", daemon=True
                ).start()
            return self._snapshot_report(finished=False)
        if first:
            self._drain(timeout)
        else:
            self._shutdown_done.wait(timeout)
        return self._snapshot_report(finished=self._shutdown_done.is_set())

    def _cancel_queued(self) -> list[Unit]:
        units = self._revoke_all()  # sent ahead, not started: as good as queued
        units += self._queue
        self._queue.clear()
        units += [p for (_, _, k, p) in self._timers if k == _RETRY and p.state == WAITING]
        return self._cancel_units(units, report=True)

    def _drain(self, timeout: float | None) -> None:
        drained = self.join(timeout)
        if not drained:
            self.abort()  # the deadline passed: cancel what waits, stop what runs
        with self._lock:
            self._wake_all()
            threads = [
                s.thread for s in self._started_slots if s.thread is not None and not s.abandoned
            ]
            # Deadline checks of finished units are all that can be left: drop them.
            self._timers = [t for t in self._timers if t[2] == _RETRY and t[3].state == WAITING]
            heapq.heapify(self._timers)
            sup = self._sup_thread
            self._sup_cv.notify_all()
        me = threading.current_thread()
        for t in threads:
            if t is not me:
                t.join()
        if sup is not None and sup is not me:
            sup.join()
        self.backend.close()
        self._report = self._build_report(finished=drained)
        self._shutdown_done.set()
        _live_engines.discard(self)

    def abort(self) -> None:
        """Close, cancel every queued task and stop every running one, now."""
        self.close()
        with self._lock:
            self.closed_hard = True
            deliveries = self._cancel_queued()
            for slot in list(self._slots):
                unit = slot.unit
                if unit is not None and unit.state == RUNNING:
                    unit.cancelled = True
                    deliveries += self.takeover(
                        slot, unit, TaskCancelled, "was cancelled by shutdown"
                    )
        self._deliver_outside(deliveries)

    def wait_shutdown(self, timeout: float | None = None) -> ShutdownReport | None:
        """Wait for a shutdown started elsewhere; its report, or None if still running."""
        if self._shutdown_done.wait(timeout):
            return self._report
        return None

    def _build_report(self, finished: bool) -> ShutdownReport:
        with self._lock:
            return ShutdownReport(
                completed=self._succeeded,
                failed=self._failed,
                cancelled=self._cancelled,
                unstarted=list(self._unstarted),
                timed_out=self._timed_out,
                finished=finished,
            )

    def _snapshot_report(self, finished: bool) -> ShutdownReport:
        if finished and self._report is not None:
            return self._report
        return self._build_report(finished=finished and self._shutdown_done.is_set())

    # ------------------------------------------------------------------ control & stats

    def resize(self, workers: int) -> None:
        with self._lock:
            self.max_workers = workers
            while len(self._queue) > len(self._idle) and self._live < self.max_workers:
                self._spawn()
            self._wake_all()  # idle workers above the new maximum retire
            if self._full_waiters:
                self._not_full.notify_all()

    def stats(self) -> Stats:
        with self._lock:
            now = time.monotonic()
            samples = sorted(self._latency)
            done = self._succeeded + self._failed
            uptime = now - self._started
            return Stats(
                submitted=self._submitted,
                queued=self._queued,
                running=self._running,
                succeeded=self._succeeded,
                failed=self._failed,
                cancelled=self._cancelled,
                timed_out=self._timed_out,
                retried=self._retried,
                workers=self._live,
                max_workers=self.max_workers,
                uptime=uptime,
                throughput=done / uptime if uptime > 0 else 0.0,
                latency=_summary(samples),
            )

    @property
    def lock(self) -> threading.Lock:
        return self._lock


def _summary(samples: list[float]) -> LatencySummary | None:
    if not samples:
        return None
    last = len(samples) - 1

    def pick(q: float) -> float:
        return samples[min(last, int(q * len(samples)))]

    return LatencySummary(p50=pick(0.5), p90=pick(0.9), p99=pick(0.99), max=samples[-1])


_RETRY = 0
_DEADLINE = 1

# Pools still open when the interpreter exits are drained first, as ThreadPoolExecutor does:
# accepted work is never silently dropped. Workers are daemon threads so that a thread that
# was abandoned in a hung call cannot block the exit.
_live_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def _drain_at_exit() -> None:
    for engine in list(_live_engines):
        engine.shutdown(wait=True)


_register: Callable[[Callable[[], None]], None] = getattr(
    threading, "_register_atexit", lambda fn: None
)
_register(_drain_at_exit)
