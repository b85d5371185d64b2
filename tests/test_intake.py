"""The intake's sizing of units and of its window, as plain logic (``_intake.Intake``).

Behaviour they guard, as a user sees it: the end of an input of known length is shared by
every worker (no worker runs a large unit while the others idle at the end), and no worker
waits for the consumer's next read while the pool warms up or near the end of the input.
"""

from __future__ import annotations

from typing import Any

import pytest

from workpool._intake import TARGET_UNIT_BYTES, Intake, tail_share
from workpool._units import CALL_ITEM, Unit

pytestmark = pytest.mark.timeout(10)

WORKERS = 64
QUEUE = 2 * WORKERS


class _Sink:
    """A call's end of its units (``_units.Sink``): nothing is delivered to it here."""

    stoppable = False
    splittable = True

    def started(self) -> None:
        pass

    def deliver(self, chunk: Unit) -> None:
        pass

    def active(self) -> bool:
        return True

    def moved(self, unit: Unit) -> None:
        pass


def _intake(length: int, *, chunksize: int | None = None) -> Intake:
    intake = Intake(
        str,
        CALL_ITEM,
        ordered=False,
        length=length,
        chunksize=chunksize,
        fixed=False,
        max_batch=256,
        target=0.04,
    )
    intake.workers = WORKERS
    return intake


def _timed(intake: Intake, calls: int, seconds: float) -> None:
    """``calls`` calls of ``seconds`` each came back (as a worker's chunk would)."""
    unit = Unit(str, list(range(calls)), CALL_ITEM, 0, _Sink())
    unit.durs.extend([seconds] * calls)
    intake.inflight += calls
    intake.inbox.append(unit)
    intake.drain()


def _read_all(intake: Intake, source: Any) -> list[Unit]:
    """Read the rest of ``source`` as the window allows, a whole window at a time."""
    units: list[Unit] = []
    while not intake.exhausted:
        units += intake.read_units(source, _Sink(), 3 * WORKERS)
    return units


def test_units_read_together_shrink_toward_the_end_of_the_input() -> None:
    """A read of many units at once near the end cuts each at most to its share of what is
    left after it: units run in the order they are read, so a large one read last would
    run on one worker while the others idle (2,000 sleeps of 10 ms on 64 workers: one
    worker ran 37, the rest 28-31, and the call took 20 % longer)."""
    intake = _intake(2000)
    _timed(intake, 200, 0.01)  # 10 ms calls, a 40 ms unit: 4 a unit
    assert intake.batch == 4
    source = iter(range(2000))
    units = _read_all(intake, source)
    assert sum(len(u.entries) for u in units) == 2000
    assert [u.start for u in units] == sorted(u.start for u in units)
    for unit in units:
        left = 2000 - unit.start  # this unit and every one read after it
        assert len(unit.entries) <= tail_share(left, WORKERS), (unit.start, len(unit.entries))
    assert len(units[-1].entries) == 1
    assert max(len(u.entries) for u in units) == 4  # the calls' time still sizes the rest


def test_the_window_does_not_shrink_at_the_end_of_the_input() -> None:
    """What may be in flight is sized on the calls' time, not on the small units of the
    end: a window cut to one item a unit near the end stopped every read until most of
    what was in flight came back, and the workers waited for the next read meanwhile."""
    intake = _intake(2000)
    _timed(intake, 200, 0.01)
    full = intake.limit(WORKERS, QUEUE)
    assert full == (WORKERS + QUEUE + 1) * 4
    source = iter(range(2000))
    intake.read_units(source, _Sink(), 490)  # 1,960 items: 40 left
    assert intake.batch == 1  # the next unit is small
    _timed(intake, 64, 0.01)  # a delivery near the end: the calls' time is the same
    assert intake.limit(WORKERS, QUEUE) == full
    assert intake.batch == 1


def test_the_warming_window_keeps_a_unit_queued_for_every_worker() -> None:
    """Before many calls are timed the window is one running and one queued unit per
    worker: with one unit per worker, every worker waited for the consumer's next read as
    its first unit ended, at once."""
    intake = _intake(10_000)
    assert intake.limit(WORKERS, QUEUE) == 2 * WORKERS
    _timed(intake, WORKERS, 0.01)  # the first units came back: few calls timed yet
    assert intake.limit(WORKERS, QUEUE) == 2 * WORKERS * 4
    _timed(intake, WORKERS, 0.01)
    assert intake.limit(WORKERS, QUEUE) == (WORKERS + QUEUE + 1) * 4


def test_a_chunksize_is_kept_to_the_end() -> None:
    """The caller's chunksize is every unit's size, the last one's excepted (what is left)."""
    intake = _intake(1000, chunksize=7)
    units = _read_all(intake, iter(range(1000)))
    assert [len(u.entries) for u in units] == [7] * 142 + [6]


def test_an_input_longer_than_its_length_hint_is_read_whole() -> None:
    """A length hint that was low: past it, the units are of the batch size again."""
    intake = _intake(100)
    _timed(intake, 200, 0.01)
    units = _read_all(intake, iter(range(1000)))
    assert sum(len(u.entries) for u in units) == 1000
    assert all(len(u.entries) == 4 for u in units if u.start >= 100 and u is not units[-1])


def test_one_worker_has_no_end_to_share() -> None:
    """With one worker the end is not cut into shares: smaller units would only cost more
    hand-overs (and read less of the input ahead)."""
    intake = _intake(2000)
    intake.workers = 1
    _timed(intake, 200, 0.01)
    units = _read_all(intake, iter(range(2000)))
    assert [len(u.entries) for u in units] == [4] * 500


def test_units_of_large_items_move_about_a_megabyte() -> None:
    """Where the backend counts the bytes a unit moves (worker processes), a unit moves at
    most ~1 MB: the window of units in flight (and the input read ahead for it) holds a few
    MB whatever the items' size. Sized on time alone, tiny calls on 20 KB items made units
    of thousands: a map read ~56,000 items ahead and held 1.3 GB (an outside tester's
    finding)."""
    intake = Intake(
        str, CALL_ITEM, ordered=False, length=-1, chunksize=None, fixed=False, max_batch=8192
    )
    unit = Unit(str, list(range(100)), CALL_ITEM, 0, _Sink())
    unit.durs.extend([1e-6] * 100)  # tiny calls: time alone would take max_batch a unit
    unit.nbytes = 100 * 40_000  # 20 KB out and 20 KB back a call
    intake.inflight += 100
    intake.inbox.append(unit)
    intake.drain()
    assert intake.batch == TARGET_UNIT_BYTES // 40_000
    # What may be read and not handed back: (workers + queue + 1) units of ~1 MB.
    assert intake.limit(2, 4) * 40_000 <= 7 * TARGET_UNIT_BYTES
    # Without byte counts (threads), time alone sizes them.
    _timed(intake, 1000, 1e-6)
    assert intake.batch == TARGET_UNIT_BYTES // 40_000  # the byte estimate stays
    other = _intake(-1)
    _timed(other, 1000, 1e-6)
    assert other.batch == 256  # its max_batch
