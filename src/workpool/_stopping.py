"""Stopping running work: deadlines, ``Task.cancel()``, a closed stream, shutdown, a broken
pool, under the engine's lock.

A running unit is stopped by a *takeover* (``takeover``): its current call ends with the
stop's error at once, the unclaimed rest of its calls is requeued (or cancelled), and the
worker is abandoned (a thread) or cancelled (a coroutine) and replaced. A backend that kills
its workers (processes, Dask) is told to, instead, and the unit is settled when the kill
lands (``Settling.finish_broken``). Queued and retry-waiting units are simply cancelled.

:class:`Stopping` is a part of :class:`~._engine.Engine` (its base class), on top of
:class:`~._settling.Settling`; it holds no state of its own.
"""

from __future__ import annotations

import warnings
from collections import deque
from typing import TYPE_CHECKING, Any

from ._log import logger
from ._settling import Settling
from ._timers import DEADLINE, RETRY
from ._units import QUEUED, RUNNING, WAITING, Failure, Unit
from .errors import TaskCancelled, TaskTimeout, WorkpoolError

if TYPE_CHECKING:
    from ._backends import Backend
    from ._backends._caps import Capabilities
    from ._crew import Crew, Slot
    from ._lifecycle import Lifecycle
    from ._sendahead import SendAhead

__all__ = ["Stopping"]


class Stopping(Settling):
    """The engine's stopping of running, queued and waiting units."""

    # The engine's state this part reads and writes (set by Engine.__init__).
    backend: Backend
    caps: Capabilities
    crew: Crew
    ahead: SendAhead
    lifecycle: Lifecycle
    task_timeout: float | None
    min_workers: int
    max_workers: int
    closed: bool
    kills: bool
    broken: BaseException | None
    _queue: deque[Unit]
    _claims: bool

    if TYPE_CHECKING:  # the engine's methods this part calls

        def spawn(self) -> None: ...
        def close_intake(self) -> None: ...
        def broken_error(self) -> WorkpoolError: ...

    def _check_deadline(self, slot: Slot, run: int, now: float) -> list[Unit]:
        """The deadline timer of ``slot``'s run number ``run`` fired (lock held).

        Timers name the run, not the unit, so that a unit that finished early is not kept
        alive by its timer until the deadline.
        """
        assert self.task_timeout is not None
        unit = slot.unit
        if unit is None or slot.runs != run or unit.state != RUNNING:
            return []
        due = self.backend.call_started(slot) + self.task_timeout
        if due > now:
            # A later call of the batch is running; check again at its own deadline.
            self.timers.add(due, DEADLINE, (slot, run))
            return []
        return self.takeover(
            slot, unit, TaskTimeout, f"timed out after {self.task_timeout:g}s", recheck=True
        )[0]

    def takeover(
        self,
        slot: Slot,
        unit: Unit,
        error: type[BaseException],
        why: str,
        *,
        recheck: bool = False,
    ) -> tuple[list[Unit], bool]:
        """Settle a running unit now: its current call ends with ``error`` (lock held).

        The unclaimed rest of the batch is requeued (or cancelled when no longer wanted), the
        slot is abandoned and the backend told to stop it; a new slot keeps the pool's strength.
        Returns the chunks to deliver once the lock is released, and whether a call was
        stopped (False: every call it had started had already returned, and the worker
        settles them as they are).

        A backend that kills its workers (``stop="kill"``) is told to, instead; the slot
        then settles the unit with ``finish_broken`` and lives on. The call counts as
        stopped from here on, even if its outcome arrives before the kill lands.
        """
        if self.kills:
            if recheck:
                assert self.task_timeout is not None
                due = self.backend.call_started(slot) + self.task_timeout
                if due > self.now():
                    self.timers.add(due, DEADLINE, (slot, slot.runs))
                    return [], False
            if slot.stop is None or slot.stop[0] is not unit:
                slot.stop = (unit, error, why)
                self.backend.stop(slot)
            return [], True
        rest = list(unit.it)  # claim every position the worker has not started
        n = len(unit.entries)
        claimed = n - len(rest)
        done = len(unit.out)  # calls the worker finished (it may still be appending)
        if claimed == 0:
            # The worker had not started this unit: take it back whole; the slot lives on.
            slot.unit = None
            return self._take_back(unit), True
        deliveries = self._requeue(unit, claimed, n)
        unit.entries = unit.entries[:claimed]
        if done >= claimed:
            # Every claimed call finished in time: the worker settles them.
            return deliveries, False
        now = self.now()
        if recheck:
            assert self.task_timeout is not None
            due = slot.t0 + self.task_timeout  # read after the claim above: it is current
            if due > now:
                # The worker started a new call between the deadline check and the claim.
                self.timers.add(due, DEADLINE, (slot, slot.runs))
                return deliveries, False
        tid = unit.start + done
        exc = error(f"task {tid} {why}")
        out = [*unit.out[:done], Failure(exc, None)]
        durs = unit.durs[:done]
        if len(durs) < done:
            # A batch (thread.run_batch) records its durations per group of calls, after
            # their outcomes: the calls of the group not yet timed count as instant.
            durs += [0.0] * (done - len(durs))
        durs.append(now - slot.t0)
        timeout = self.task_timeout
        slot.gone = (tid, unit.attempt, None if timeout is None else slot.t0 + timeout)
        slot.abandoned = True
        slot.unit = None
        self.crew.leave(slot)
        self.ledger.abandoned += 1
        chunk = unit.settled(0, done + 1, out, durs)
        chunk.cancelled = error is TaskCancelled  # a future says "cancelled", not "failed"
        deliveries += self._settle(unit, [chunk])
        self.backend.stop(slot)
        if self.caps.stop == "abandon":
            logger.warning(
                "pool %r: task %d %s; its worker thread cannot be stopped and was abandoned "
                "(it ends when the call returns; %d abandoned now)",
                self.name,
                tid,
                why,
                self.ledger.abandoned,
            )
        crew = self.crew
        if (
            (self._queue or crew.strength < self.min_workers)
            and crew.strength < self.max_workers
            and not self.closed_hard  # (stopping everything: nothing more will run)
        ):
            self.spawn()
        if self._full_waiters:
            self._not_full.notify_all()
        return deliveries, True

    def cancel_unit(self, unit: Unit) -> bool:
        """Cancel one unit wherever it is (Task.cancel).

        True only when the unit ends cancelled: False when it had already finished, or when
        its call returned before the cancel could stop it (its outcome stands).
        """
        stopped = True
        with self._lock:
            if unit.state == QUEUED:
                self._queue.remove(unit)
                deliveries = self._cancel_units([unit], report=False)
            elif unit.state == WAITING:
                # Its retry timer finds it DONE and drops it.
                deliveries = self._cancel_units([unit], report=False)
            elif unit.state == RUNNING:
                unit.cancelled = True
                deliveries, stopped = self.takeover(unit.slot, unit, TaskCancelled, "was cancelled")
                if not stopped:
                    unit.cancelled = False  # it returned first: its outcome stands
            else:
                return False
        self.deliver(deliveries)
        return stopped

    def cancel_sink(self, sink: Any, *, running: bool = False) -> None:
        """Cancel every queued unit of ``sink`` (a stream that was closed early), and with
        ``running`` its running units too (its consumer was cancelled)."""
        life = self.lifecycle
        # Left while the pool shuts down (the consumer stopped by a second signal, say,
        # before the shutdown's own cancel got to them): the report lists them, as that
        # cancel would have. Otherwise the caller dropped them: kept nowhere (a long-lived
        # pool would pile them up).
        report = self.closed or life.interrupted_by is not None or life.interrupt_reported
        with self._lock:
            mine = [u for u in self._queue if u.sink is sink]
            if mine:
                self._queue = deque(u for u in self._queue if u.sink is not sink)
            # Sent ahead, not started: as good as queued. (Left during a shutdown, the units
            # cancelled are listed as never run: only those certainly not started, then.)
            mine += self.ahead.revoke_all(sink, cancel=not report)
            if self._claims and not running:
                mine += self._unclaimed_rests(sink)  # not started either
            deliveries = self._cancel_units(mine, report=report) if mine else []
            if running or (self.caps.stops_left_units and not report):
                for slot in list(self.crew.live):
                    unit = slot.unit
                    if unit is not None and unit.sink is sink and unit.state == RUNNING:
                        unit.cancelled = True
                        deliveries += self.takeover(slot, unit, TaskCancelled, "was cancelled")[0]
        self.deliver(deliveries)

    def _unclaimed_rests(self, sink: Any) -> list[Unit]:
        """The calls of ``sink``'s running units that their workers have not claimed yet,
        as units of their own (lock held; see ``cut_after_failure``)."""
        rests = []
        for slot in self.crew.live:
            unit = slot.unit
            if unit is not None and unit.sink is sink and unit.state == RUNNING:
                rest = unit.cut_rest()  # (its calls counted as queued: see Unit.cut_rest)
                if rest is None:
                    continue
                if not unit.entries:
                    # Its worker had started none of them (a coroutine handed the unit, not
                    # yet run): the unit is not running any more, as a takeover takes back a
                    # unit not started. Else its calls would count as running and cancelled.
                    slot.unit = None
                    self._not_running(unit)
                rests.append(rest)
        return rests

    def cut_after_failure(self, unit: Unit) -> None:
        """A call of ``unit`` failed, and its sink raises at its first failure (a ``map``):
        cancel the calls of the unit its worker has not claimed yet, as the map's queued
        work is (called from the worker's loop, on the failure path only). Not with retries:
        a failure that is retried does not end the map. Nobody reads what is cancelled here
        (the map raises at this failure), so nothing of it is delivered or listed."""
        if self.retry is not None:
            return
        with self._lock:
            if unit.state != RUNNING:
                return
            rest = unit.cut_rest()
            if rest is not None:
                self._cancel_units([rest], report=False)

    def cancel_queued(self) -> list[Unit]:
        """Cancel every queued (and retry-waiting) unit, listed as unstarted (lock held)."""
        units = self.ahead.revoke_all()  # sent ahead, not started: as good as queued
        units += self._queue
        self._queue.clear()
        units += [u for u in self.timers.payloads(RETRY) if u.state == WAITING]
        return self._cancel_units(units, report=True)

    def stop_running(self) -> list[Unit]:
        """Stop every running unit as cancelled by shutdown (lock held)."""
        deliveries: list[Unit] = []
        for slot in list(self.crew.live):
            unit = slot.unit
            if unit is not None and unit.state == RUNNING:
                unit.cancelled = True
                deliveries += self.takeover(slot, unit, TaskCancelled, "was cancelled by shutdown")[
                    0
                ]
        return deliveries

    def worker_cancelled(self, slot: Slot) -> None:
        """The asyncio task of ``slot`` was cancelled by someone other than the pool (the
        driver calls this; the lock is not held): its event loop is going away, as when
        ``asyncio.run`` returns (or fails) while an AsyncPool on its loop is still open.

        Nothing accepted may be dropped in silence: the pool stops everything, as a
        shutdown that cancels does (every task ends cancelled, its future with it), refuses
        more work, and says so when it had work left: a ``RuntimeWarning`` (shown by
        default, as asyncio's "coroutine was never awaited" is) and the log. A pool that had
        drained and closed (its own loop stopping) has nothing to stop.
        """
        message = None
        with self._lock:
            ledger = self.ledger
            left = ledger.queued + ledger.running
            deliveries: list[Unit] = []
            if not self.closed_hard and (left or not self.closed):
                why = (
                    "its event loop ended before the pool was shut down (it cancelled its workers)"
                )
                if not self.closed:
                    self.broken = RuntimeError(why)
                self.closed_hard = True
                self.close_intake()
                deliveries = self.cancel_queued()
                deliveries += self.stop_running()
                if left:
                    message = (
                        f"pool {self.name!r}: {why}; {left} task(s) were cancelled, "
                        f"{len(ledger.unstarted)} of them not started (leave `async with` or "
                        "await shutdown() before the loop ends)"
                    )
            unit = slot.unit
            if unit is not None and unit.state == RUNNING:
                # Still running: its calls had all returned (coroutines a plain function
                # returned, not awaited yet: see AsyncioBackend._in_thread), so the stop
                # above left it to this worker, which ends now: settled here.
                more, stopped = self.takeover(slot, unit, TaskCancelled, "was cancelled")
                deliveries += more
                if not stopped and unit.state == RUNNING:
                    slot.unit = None
                    deliveries += self._settle(unit, [unit])
        self.deliver(deliveries)
        if message is not None:
            logger.warning("%s", message)
            warnings.warn(message, RuntimeWarning, stacklevel=1)

    def break_pool(self, error: BaseException) -> None:
        """The backend cannot run anything (workers that never start): give up for good.

        The pool closes; queued work fails with the reason (not listed as unstarted: it
        could not have run here either) and every later submit raises it.
        """
        with self._lock:
            if self.broken is not None:
                return
            self.broken = error
            logger.error("pool %r is broken and gives up: %s", self.name, error)
            self.close_intake()
            units = self.ahead.revoke_all() + list(self._queue)
            self._queue.clear()
            units += [u for u in self.timers.payloads(RETRY) if u.state == WAITING]
            deliveries = self._cancel_units(units, report=False, error=self.broken_error())
        self.deliver(deliveries)
