"""The crew: a pool's worker slots, who is idle, and how an idle worker is woken.

A *slot* is one worker's seat: what it runs now, what it runs next, and the backend's handle
on its worker (a process, a remote client). A driver (``_backends/_drivers.py``) decides how a
slot waits for work: a thread blocks on a lock, an asyncio task awaits an event. Either way the
engine wakes it through the slot's :class:`Waker`, from any thread, without blocking.

Everything here changes under the engine's lock; the crew has no lock of its own.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any, Protocol

from ._context import TaskContext
from ._units import Unit

__all__ = ["Crew", "Slot", "ThreadWaker", "Waker"]


class Waker(Protocol):
    """Wakes one parked slot. ``wake`` is called under the engine lock, from any thread,
    and never blocks; a wake-up the slot gets while it is not parked makes its next park
    return at once (harmless: a woken slot always looks at the pool's state again)."""

    def wake(self) -> None: ...


class ThreadWaker:
    """A parked thread sleeps on a lock that ``wake`` releases (the cheapest wake-up there
    is: no condition, no event). At most one release is outstanding, so wake-ups that come
    while one is pending cost nothing and a release is never doubled."""

    __slots__ = ("_lock", "_pending")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._pending = False

    def wake(self) -> None:
        if not self._pending:
            self._pending = True
            self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until woken (True) or until ``timeout`` seconds passed (False)."""
        if self._lock.acquire(True, -1 if timeout is None else timeout):
            # A wake() between the acquire and this store is lost, which is fine: the
            # woken slot steps next and sees what that wake-up was for.
            self._pending = False
            return True
        return False


class Slot:
    """One worker's seat. The engine owns every field but ``handle`` (the backend's) and
    ``t0`` (written by the backend as each call starts)."""

    __slots__ = (
        "abandoned",
        "gone",
        "handle",
        "handoff",
        "id",
        "next",
        "owner",
        "parked",
        "parks",
        "retire",
        "runs",
        "stop",
        "stop_pos",
        "t0",
        "task",
        "thread",
        "unit",
        "waker",
    )

    def __init__(self, owner: Any, id: int, waker: Waker) -> None:
        self.owner = owner  # the engine: its task_timeout, and who a nested submit targets
        self.id = id
        self.unit: Unit | None = None  # the unit running now
        self.t0 = 0.0  # start time of the call running now (the engine's clock)
        self.runs = 0  # units started: a deadline timer names the run it is for
        self.parks = 0  # times parked idle: an idle timer names the park it is for
        self.parked = 0  # the engine's: 1 while in the crew's idle list, 2 once popped
        self.abandoned = False  # the engine took the running unit over and let the slot go
        # The context of the call running when the slot was abandoned (its id, attempt and
        # deadline): the call runs on, and current_task() there must still find its task.
        self.gone: tuple[int, int, float | None] | None = None
        self.retire = False  # the slot exits at its next step
        # Set by the engine when a backend that kills workers must stop the running call:
        # (the unit, exception class, reason). The slot settles the unit when the kill lands.
        # Set *before* the backend looks for the worker to kill, so a worker started
        # concurrently either is killed or sees the request before its first call.
        self.stop: tuple[Unit, type[BaseException], str] | None = None
        # Written by a backend that kills, in ``stop``: the position of the call running then.
        self.stop_pos = -1
        self.handle: Any = None  # the backend's per-worker state (a process, a client, ...)
        self.waker = waker
        self.handoff: Unit | None = None  # a unit handed to this slot while it was parked
        self.next: Unit | None = None  # a unit sent ahead to this slot's busy worker
        self.thread: threading.Thread | None = None  # thread driver: the slot's thread
        self.task: Any = None  # asyncio driver: the slot's asyncio.Task

    # ContextSource / CancelProbe for current_task() in this slot.
    def task_context(self) -> TaskContext | None:
        unit = self.unit
        if unit is None:
            gone = self.gone
            if gone is not None and self.abandoned:
                return TaskContext(*gone, self)  # (its cancelled is True)
            return None
        pos = len(unit.out)
        timeout = self.owner.task_timeout
        deadline = self.t0 + timeout if timeout is not None else None
        return TaskContext(unit.start + pos, unit.attempt, deadline, self)

    def cancel_requested(self) -> bool:
        return self.abandoned

    def is_current(self) -> bool:
        """Whether the caller runs one of this slot's calls, not only in its context: a
        thread driver's slot is its thread (a thread that inherited the context, as
        Python 3.14's may, is not). On an event loop, everything in the slot's context
        counts as the slot's: an asyncio task one of its coroutines started may be one it
        awaits (``gather``, 3.11's ``wait_for``), which a wait for the pool would deadlock;
        and a plain function's thread on the async backend runs the slot's call."""
        thread = self.thread
        return thread is None or thread is threading.current_thread()


class Crew:
    """The slots of one pool: live ones, idle ones, and every one started until it is seen
    to have exited (shutdown waits for them)."""

    __slots__ = ("_ids", "idle", "live", "pacing", "started", "strength", "waking")

    def __init__(self) -> None:
        self.live: set[Slot] = set()  # not retired, not abandoned
        self.strength = 0  # len(live): what counts toward the pool's workers
        self.idle: list[Slot] = []  # parked waiting for work, most recent last
        self.pacing: set[Slot] = set()  # waiting for a rate limit to let their unit start
        self.waking = 0  # popped from idle and woken, not stepped yet
        self.started: list[Slot] = []
        self._ids = itertools.count(1)

    def add(self, owner: Any, waker: Waker, max_workers: int) -> Slot:
        slot = Slot(owner, next(self._ids), waker)
        if len(self.started) > 2 * max_workers:  # forget slots that exited
            self.started = [s for s in self.started if not _exited(s)]
        self.started.append(slot)
        self.live.add(slot)
        self.strength += 1
        return slot

    def leave(self, slot: Slot) -> None:
        """``slot`` no longer counts toward the pool's strength (retired or abandoned)."""
        if slot in self.live:
            self.live.discard(slot)
            self.strength -= 1

    def wake_all(self) -> None:
        """Make every parked slot look at the pool's state again."""
        idle, self.idle = self.idle, []
        self.waking += len(idle)
        for slot in idle:
            slot.handoff = None
            slot.waker.wake()
        for slot in self.pacing:
            slot.waker.wake()


def _exited(slot: Slot) -> bool:
    thread = slot.thread
    if thread is not None:
        return not thread.is_alive()
    task = slot.task
    return task is not None and task.done()
