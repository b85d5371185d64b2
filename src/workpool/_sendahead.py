"""Send-ahead: a worker a round trip away (a process) gets its next unit while it still runs
the current one, so it never idles for the round trip between units.

Invariant: a unit sent ahead (``slot.next``) counts as one running call (it holds its
worker's next turn; ``Stats`` shows it as queued, in ``sent_ahead``) and runs next on its
slot, unless another slot takes it back first (``steal``, the backend's ``revoke``), which it
may do until the worker starts it; then it is as good as queued. A unit is sent ahead only
when nothing else could use it sooner (every worker of the pool is started and busy) and
nothing may have to stop it alone (no deadline, no rate limit; only units of map/results: a
submitted task can be cancelled while it runs, which would kill its worker and whatever that
holds). The backend's side is its ``revoke``; the engine's is this object, which it calls
under its lock (``Engine.prefetch`` and ``Engine.drop_prefetched`` are the backend's way in).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._units import RUNNING, Unit

if TYPE_CHECKING:
    from ._crew import Slot
    from ._engine import Engine

__all__ = ["SendAhead"]


class SendAhead:
    """The units sent ahead to busy workers, and taking them back."""

    __slots__ = ("_engine",)

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def give(self, slot: Slot) -> Unit | None:
        """``slot``'s next unit, taken from the queue while its current one still runs;
        None when none may be sent ahead now (lock held)."""
        engine = self._engine
        queue = engine._queue
        ledger = engine.ledger
        crew = engine.crew
        if (
            not queue
            or slot.next is not None
            or slot.unit is None
            or queue[0].sink.stoppable
            or ledger.running - ledger.ahead < crew.strength
            or crew.strength != engine.max_workers
            or engine.task_timeout is not None
            or engine.bucket is not None
            or engine.closed_hard
            or slot.retire
        ):
            return None
        unit = queue.popleft()
        unit.state = RUNNING
        unit.slot = slot
        slot.next = unit
        ledger.ahead += 1
        ledger.ahead_items += len(unit.entries)
        ledger.queued -= 1
        ledger.running += 1
        unit.sink.started()
        engine._unit_left_queue()
        return unit

    def taken(self, slot: Slot, unit: Unit) -> None:
        """``slot``'s worker starts ``unit``, sent ahead to it (lock held)."""
        slot.next = None
        ledger = self._engine.ledger
        ledger.ahead -= 1
        ledger.ahead_items -= len(unit.entries)
        slot.unit = unit
        slot.runs += 1
        slot.t0 = self._engine.now()

    def steal(self, slot: Slot) -> Unit | None:
        """Nothing is queued and ``slot`` would go idle: take over a unit sent ahead to a busy
        worker that has not started it yet (lock held)."""
        engine = self._engine
        for other in engine.crew.live:
            if other is not slot:
                unit = self._revoke(other)
                if unit is not None:
                    unit.slot = slot
                    slot.unit = unit
                    slot.runs += 1
                    slot.t0 = engine.now()
                    return unit
        return None

    def _revoke(self, slot: Slot, sink: Any = None, cancel: bool = False) -> Unit | None:
        """``slot.next`` (of ``sink``, if given), taken back from its worker, which has not
        started it; still counted as running. None if there is none or it started.
        ``cancel``: it is taken back to be cancelled, not to run elsewhere (the backend's
        ``revoke`` may then stop it where it cannot tell whether it started)."""
        unit = slot.next
        if unit is None or (sink is not None and unit.sink is not sink):
            return None
        engine = self._engine
        if not engine.backend.revoke(slot, cancel=cancel):
            return None
        slot.next = None
        engine.ledger.ahead -= 1
        engine.ledger.ahead_items -= len(unit.entries)
        return unit

    def revoke_all(self, sink: Any = None, cancel: bool = False) -> list[Unit]:
        """Take back every unit sent ahead and not started yet (of ``sink``, if given), as
        queued units again, for the caller to cancel (lock held). ``cancel``: a call was
        left, its outcomes wanted by nobody: a backend that cannot tell whether its worker
        started a unit may take it back anyway (see ``Backend.revoke``). Not for a
        shutdown's cancel: those are listed as never run, which must be certain."""
        units = []
        engine = self._engine
        ledger = engine.ledger
        if ledger.ahead:
            for slot in engine.crew.live:
                unit = self._revoke(slot, sink, cancel=cancel)
                if unit is not None:
                    ledger.running -= 1  # (a unit counts as one running call, see start_unit)
                    ledger.queued += 1
                    units.append(unit)
        return units

    def revoked(self) -> list[Unit]:
        """Take back every unit sent ahead and not started yet, still counted as running
        (lock held): ``resize`` shrank the pool, and they would start beside the running
        ones, beyond the new maximum."""
        if not self._engine.ledger.ahead:
            return []
        units = (self._revoke(slot) for slot in self._engine.crew.live)
        return [unit for unit in units if unit is not None]

    def dropped(self, slot: Slot) -> Unit | None:
        """The worker died before starting ``slot.next``: the unit, if it still has to be
        taken back (lock held)."""
        unit = slot.next
        if unit is None:
            return None
        slot.next = None
        ledger = self._engine.ledger
        ledger.ahead -= 1
        ledger.ahead_items -= len(unit.entries)
        return unit if unit.state == RUNNING else None  # (else: settled elsewhere already)
