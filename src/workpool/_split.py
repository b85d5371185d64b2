"""Splitting a late unit: a worker that would go idle takes the calls a slow unit has not
started yet.

Units are sized from the calls' times so far (``_intake``): when instant calls turn slow, a
unit sized on them runs its slow calls one after another while other workers idle. On a
backend whose workers claim a unit's calls one at a time in this process (threads,
coroutines: ``Capabilities.claims``), a worker that finds nothing queued takes the unclaimed
rest of a running unit whose current call has run late, and starts it at once; the unit's
own worker settles what it claimed. A process or Dask worker gets its unit whole.

Everything here runs under the engine's lock, called by the engine: ``started`` when a slot
starts a unit, ``take`` when a slot finds nothing queued, ``on_timer`` when the split timer
(one at a time) is due.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._timers import SPLIT
from ._units import RUNNING, Unit

if TYPE_CHECKING:
    from ._crew import Slot
    from ._engine import Engine

__all__ = ["SPLIT_AFTER", "LateSplit"]

# The least time a call runs before an idle worker takes the rest of its unit: calls this
# slow are worth a unit of their own; a unit of tiny calls is over long before.
SPLIT_AFTER = 0.01


class LateSplit:
    """Which running units an idle worker may split, and when one turns late."""

    __slots__ = ("_engine", "_splittable", "_timer_set", "late")

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._timer_set = False  # a SPLIT timer is set (one at a time)
        # Slots that started a unit of several calls that may be split (see late_unit).
        self._splittable: set[Slot] = set()
        # A call that has run this long is late: the unit it is in was sized for calls far
        # shorter, and an idle worker takes the calls of it not started yet.
        self.late = max(engine.caps.unit_seconds, SPLIT_AFTER)

    def started(self, slot: Slot, unit: Unit) -> None:
        """``slot`` started ``unit``, of several calls the pool sized itself (lock held)."""
        self._splittable.add(slot)
        if not self._timer_set:
            # If its calls turn slow, the rest goes elsewhere once it is late (on_timer).
            self._later(slot.t0 + self.late)

    def may_take(self) -> bool:
        """Whether a running unit may hold calls to split (lock held; a quick test)."""
        return bool(self._splittable) and self._engine.ledger.queued > 0

    def take(self, slot: Slot, park: bool) -> Unit | None:
        """Take the unclaimed rest of a running unit whose current call has run late (lock
        held): its calls turned slow since the unit was sized (instant ones made it large),
        and they would run one after another while this worker idles. Its worker finishes
        the calls it claimed; ``slot`` starts the rest now. With no late unit but one that
        may turn late, a timer looks again then (``on_timer``)."""
        engine = self._engine
        now = engine.now()
        other, due = self.late_unit(now, slot)
        if other is None:
            if due is not None and park:
                self._later(due)
            return None
        unit = other.unit
        assert unit is not None
        part = unit.cut_rest()  # every position its worker has not started
        if part is None:
            return None  # its worker claimed the last one meanwhile
        part.sink.moved(part)
        # The rest's calls counted as queued already (a running unit's calls do, all but
        # one): it starts here, as a unit taken from the queue would.
        engine.start_unit(slot, part)
        if len(part.entries) > 1:
            self._later(now + self.late)  # another worker may take the rest's rest
        return part

    def late_unit(self, now: float, me: Slot | None) -> tuple[Slot | None, float | None]:
        """A slot (not ``me``) whose unit has unclaimed calls and has run late, and else when
        the first that may turn late would (lock held). Late: ``late`` seconds since
        ``slot.t0``, the start of its current call (``run_calls``, ``_await_calls``), or of
        the unit for a batch of tiny calls (``run_batch`` does not time each call). Units
        whose size the caller gave (``chunksize``) run whole."""
        late = self.late
        due: float | None = None
        splittable = self._splittable
        for other in list(splittable):
            unit = other.unit
            if unit is None or unit.state != RUNNING or not unit.sink.splittable:
                # It finished that unit (a new one adds it again), or went on to one whose
                # size the caller gave (a chunksize: it runs whole).
                splittable.discard(other)
                continue
            left = unit.it.__length_hint__()  # type: ignore[attr-defined]
            if left < 1:
                splittable.discard(other)  # every call claimed: none will be again
                continue
            if other is me or unit.cancelled or not unit.sink.active():
                continue
            if left >= len(unit.entries):
                when = now + late  # its worker has not started it yet: look again later
            elif now - other.t0 >= late:
                return other, None
            else:
                when = other.t0 + late  # when its current call would be late
            due = when if due is None else min(due, when)
        return None, due

    def _later(self, due: float) -> None:
        """Look for a late unit again at ``due`` (lock held; one timer at a time). Never
        now: a timer that sets itself again for a time past would fire for ever."""
        if not self._timer_set:
            self._timer_set = True
            engine = self._engine
            engine.timers.add(max(due, engine.now() + SPLIT_AFTER / 10), SPLIT, None)

    def on_timer(self, now: float) -> None:
        """The split timer is due (lock held). With nothing queued, wake an idle worker (or
        start one) to take the rest of a late unit (``take``). With every worker busy, or
        work queued, the rest of each late unit goes back to the queue's front instead:
        the first worker free takes it, and the late unit ends with its current call, its
        results delivered then rather than after its last call (one worker, say, whose
        calls turned slow: what finished would wait for the rest, unwritten, unjournaled).
        Then look again when a unit may turn late."""
        self._timer_set = False
        engine = self._engine
        if engine.closed_hard:
            return  # (nothing more starts)
        crew = engine.crew
        other, due = self.late_unit(now, None)
        if other is not None and not engine.has_queued():
            if crew.idle:
                engine.wake_idle()  # it takes the rest (take)
                return
            if crew.strength < engine.max_workers:
                engine.spawn()  # (started on demand: its first look is for a late unit)
                return
        while other is not None:
            unit = other.unit
            assert unit is not None
            part = unit.cut_rest()  # every position its worker has not started
            if part is not None:
                part.sink.moved(part)
                engine.requeue_front(part)  # (its calls counted as queued already)
            other, due = self.late_unit(now, None)
        if due is not None:
            self._later(due)
