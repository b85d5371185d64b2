"""Settling: how the engine accounts for a unit its worker let go of, under its lock.

A worker's unit ends in one of a few ways, each settled here: every call returned
(``_settle_ok``, the common case), some failed (``_settle_failures``: retried after a backoff,
or counted failed, cancelled or timed out), the worker died or was killed mid-unit
(``finish_broken``), or a stop was asked after the last outcome had come back
(``_stopped_late``). Positions that did not run go back to the queue's front (``_requeue``),
or are cancelled when nobody wants them any more (``_cancel_units``).

:class:`Settling` is a part of :class:`~._engine.Engine` (its base class): it holds no state
of its own, and every method runs with the engine's lock held unless it says otherwise.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._log import logger
from ._timers import RETRY, Timers
from ._units import DONE, RUNNING, WAITING, Failure, Unit
from .errors import TaskCancelled, TaskTimeout, WorkpoolError

if TYPE_CHECKING:
    from ._crew import Slot
    from ._ledger import Ledger
    from ._options import Retry

__all__ = ["Settling"]


class Settling:
    """The engine's settling of finished, failed, broken and cancelled units."""

    # The engine's state this part reads and writes (set by Engine.__init__).
    name: str
    ledger: Ledger
    timers: Timers
    retry: Retry | None
    closed_hard: bool
    now: Callable[[], float]
    _lock: threading.RLock
    _not_full: threading.Condition
    _drained: threading.Condition
    _full_waiters: int
    _drain_waiters: int
    _drain_callbacks: list[Callable[[], object]]
    _room_watchers: set[Any]
    max_workers: int

    if TYPE_CHECKING:  # the engine's methods this part calls

        def _enqueue(self, unit: Unit, front: bool = False) -> None: ...
        def _room_freed(self) -> None: ...
        @staticmethod
        def deliver(deliveries: list[Unit]) -> None: ...

    def _take_back(self, unit: Unit) -> list[Unit]:
        """A running unit none of whose calls started goes back to the queue whole (lock
        held); returns what to deliver when it is cancelled instead (see _requeue)."""
        self._not_running(unit)
        return self._requeue(unit, 0, len(unit.entries))

    def _not_running(self, unit: Unit) -> None:
        """A running unit none of whose calls started is no longer running: its calls all
        count as queued again (a running unit's count as one running and the rest queued),
        for whoever takes them from here. Its worker finds it done. Lock held."""
        unit.state = DONE
        self.ledger.running -= 1
        self.ledger.queued += 1

    def _settle(self, unit: Unit, chunks: list[Unit]) -> list[Unit]:
        """Account for the finished chunks of a unit a worker held; return what to deliver.

        ``chunks`` are finished views of the unit's positions (normally just the unit itself);
        positions of the unit not in any chunk were requeued. Lock held.
        """
        unit.state = DONE
        total = 0
        deliveries: list[Unit] = []
        latency = self.ledger.latency
        for chunk in chunks:
            n = len(chunk.entries)
            total += n
            chunk.state = DONE
            latency.extend(chunk.durs)
            if not chunk.nfail:
                self.ledger.succeeded += n
                deliveries.append(chunk)
            else:
                deliveries += self._settle_failures(chunk)
        return self._held_unit_done(unit, total, deliveries)

    def _held_unit_done(self, unit: Unit, settled: int, deliveries: list[Unit]) -> list[Unit]:
        """The worker let go of ``unit``, ``settled`` of whose positions are done (the rest
        were requeued); ``deliveries`` go to its sink if it still wants them. Lock held."""
        ledger = self.ledger
        ledger.running -= 1
        ledger.queued -= settled - 1
        if self._room_watchers:
            self._room_freed()
        if not ledger.queued and not ledger.running:
            self._now_drained()
        if not unit.sink.active():
            return []
        return deliveries

    def _now_drained(self) -> None:
        if self._drain_waiters:
            self._drained.notify_all()
        if self._drain_callbacks:
            callbacks, self._drain_callbacks = self._drain_callbacks, []
            for callback in callbacks:
                callback()

    def _settle_ok(self, unit: Unit) -> list[Unit]:
        """``_settle(unit, [unit])`` for a unit whose calls all succeeded: the common case."""
        unit.state = DONE
        n = len(unit.entries)
        self.ledger.latency.extend(unit.durs)
        self.ledger.succeeded += n
        return self._held_unit_done(unit, n, [unit])

    def _settle_failures(self, chunk: Unit) -> list[Unit]:
        retry = self.retry
        ledger = self.ledger
        out = chunk.out
        durs = chunk.durs
        held: list[int] = []
        for pos, o in enumerate(out):
            if type(o) is not Failure:
                ledger.succeeded += 1
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
                ledger.retried += 1
                ledger.queued += 1
                delay = retry.delay(chunk.attempt)
                self.timers.add(self.now() + delay, RETRY, again)
                if logger.isEnabledFor(20):  # INFO; the message is built only when shown
                    logger.info(
                        "pool %r: task %d failed on attempt %d (%s: %s); retry in %.3gs",
                        self.name,
                        chunk.start + pos,
                        chunk.attempt,
                        type(error).__name__,
                        error,
                        delay,
                    )
                continue
            if isinstance(error, TaskCancelled):
                ledger.cancelled += 1
            else:
                ledger.failed += 1
                if isinstance(error, TaskTimeout):
                    ledger.timed_out += 1
        if not held:
            return [chunk]
        parts = []
        lo = 0
        for pos in [*held, len(out)]:
            if pos > lo:
                parts.append(chunk.settled(lo, pos, out[lo:pos], durs[lo:pos]))
            lo = pos + 1
        return parts

    def _requeue(self, unit: Unit, lo: int, hi: int, parts: int = 1) -> list[Unit]:
        """Put positions ``lo..hi-1`` of a running unit back at the queue's front (lock held),
        as up to ``parts`` units of even size, in their order.

        When nobody wants them any more (shutdown cancelling, a closed stream, a broken
        pool) they are cancelled instead; returns the chunks to deliver for that.
        """
        if hi <= lo:
            return []
        if self.closed_hard or unit.cancelled or not unit.sink.active():
            return self._cancel_units([unit.part(lo, hi)], report=self.closed_hard)
        parts = min(parts, hi - lo)
        for i in reversed(range(parts)):  # (each at the front: the first one ends up first)
            rest = unit.part(lo + (hi - lo) * i // parts, lo + (hi - lo) * (i + 1) // parts)
            rest.sink.moved(rest)
            self._enqueue(rest, front=True)
        return []

    def _cancel_units(
        self, units: list[Unit], *, report: bool, error: BaseException | None = None
    ) -> list[Unit]:
        """Cancel queued or waiting units (lock held); return the chunks to deliver.

        With ``error`` they fail with it instead (counted as failed, not cancelled).
        """
        chunks = []
        ledger = self.ledger
        for unit in units:
            n = len(unit.entries)
            unit.state = DONE
            ledger.queued -= n
            if error is None:
                ledger.cancelled += n
            else:
                ledger.failed += n
            if report:
                from ._reports import UnstartedTask

                for pos in range(n):
                    args, kwargs = unit.call_args(pos)
                    ledger.unstarted.append(UnstartedTask(unit.start + pos, unit.fn, args, kwargs))
            if unit.sink.active():
                out: list[Any] = [
                    Failure(error or TaskCancelled(f"task {unit.start + i} was cancelled"), None)
                    for i in range(n)
                ]
                chunk = unit.settled(0, n, out, [0.0] * n)
                chunk.cancelled = error is None
                chunk.attempt = unit.attempt - 1  # attempts that ran: none, this time
                chunks.append(chunk)
        if not ledger.queued and not ledger.running:
            self._now_drained()
        if self._full_waiters:
            self._not_full.notify_all()
        return chunks

    def finish_broken(
        self,
        slot: Slot,
        unit: Unit,
        failed_pos: int | None,
        error: BaseException,
        duration: float,
    ) -> None:
        """Settle a unit whose worker died or was killed while running it.

        Called by a backend in the slot's driver. ``unit.out`` holds the outcomes that came
        back; ``failed_pos`` is the call that was running (it ends with ``error``), or None
        when the worker died between calls. Every other position is requeued.
        """
        with self._lock:
            if unit.state != RUNNING:
                return
            deliveries = self._broken(slot, unit, failed_pos, error, duration)
        self.deliver(deliveries)

    def backend_failed(self, slot: Slot, unit: Unit, error: Exception) -> None:
        """A backend's ``run`` raised (a bug of workpool's own): the call it was at fails with
        the error, the rest of the unit is requeued, and the slot goes on. Without this, the
        unit would stay running forever and every drain would wait for it."""
        logger.error(
            "pool %r: internal error while running task %d (please report this bug)",
            self.name,
            unit.start + len(unit.out),
            exc_info=error,
        )
        failure = WorkpoolError(f"internal error of workpool: {type(error).__name__}: {error}")
        failure.__cause__ = error
        self.finish_broken(slot, unit, min(len(unit.out), len(unit.entries) - 1), failure, 0.0)

    def gave_back(self, slot: Slot, unit: Unit) -> None:
        """The worker ran the first ``len(unit.out)`` calls of ``unit`` and gave the rest
        back unstarted, since the unit ran far longer than it was sized for (see
        ``_child.GIVE_BACK_SECONDS``): settle those, and requeue the rest at the queue's
        front in as many parts as the pool has workers, so that the calls that turned slow
        spread over them (a part that runs long is given back and split again). Called by
        the backend in the slot's driver, without the lock. A stop asked for the unit
        meanwhile is settled by the slot's next step instead (``_stopped_late``), as for a
        unit that ran whole."""
        with self._lock:
            if unit.state != RUNNING or (slot.stop is not None and slot.stop[0] is unit):
                return
            received = len(unit.out)
            deliveries = self._requeue(unit, received, len(unit.entries), self.max_workers)
            chunks = [unit.settled(0, received, unit.out, unit.durs)] if received else []
            slot.unit = None
            deliveries += self._settle(unit, chunks)
        self.deliver(deliveries)

    def _broken(
        self,
        slot: Slot,
        unit: Unit,
        failed_pos: int | None,
        error: BaseException,
        duration: float,
    ) -> list[Unit]:
        """``finish_broken`` with the lock held: returns what to deliver."""
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
            failed = unit.settled(failed_pos, failed_pos + 1, [Failure(error, None)], [duration])
            failed.cancelled = type(error) is TaskCancelled
            chunks.append(failed)
        slot.unit = None
        deliveries += self._settle(unit, chunks)
        return deliveries

    def _stopped_late(self, slot: Slot, unit: Unit) -> list[Unit]:
        """A kill was asked for ``unit`` after its worker had sent every outcome (lock held).

        ``cancel()`` said True and a deadline said "timed out", so the call that ran when the
        stop was asked ends with the stop's error anyway: what came before it stands, what
        came after is requeued. The backend replaces the killed worker before its next unit.
        """
        stop = slot.stop
        assert stop is not None
        slot.stop = None
        pos = min(max(slot.stop_pos, 0), len(unit.out))
        duration = sum(unit.durs[pos : pos + 1])
        del unit.out[pos:]
        del unit.durs[pos:]
        error = stop[1](f"task {unit.start + pos} {stop[2]}")
        return self._broken(slot, unit, pos, error, duration)
