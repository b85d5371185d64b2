"""Drivers: who waits for a slot. A thread per slot, or an asyncio task per slot.

A driver runs the loop of each slot of a pool::

    finished = None
    loop:
        deliveries, next = engine.step(slot, finished)      never waits
        deliver the chunks (without the engine's lock)
        next is a Unit   -> run it with the backend, finished = it
        next is PARK     -> sleep until the slot's waker wakes it
        next is a time t -> sleep until t (a rate limit), or until woken
        next is AGAIN    -> step again at once
        next is EXIT     -> release the worker and stop

How it sleeps, and how the backend runs a unit (``backend.run`` in the slot's thread, or
``await backend.arun`` in the slot's task) is all that differs between drivers; everything
else (settling, retries, deadlines, accounting) is the engine's, once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .._context import set_source
from .._crew import Slot, ThreadWaker, Waker
from .._units import Unit

if TYPE_CHECKING:
    from .._engine import Engine
    from ._base import Backend

__all__ = [
    "AGAIN",
    "EXIT",
    "PARK",
    "AsyncioDriver",
    "Driver",
    "LoopWaker",
    "ThreadDriver",
    "create_driver",
]


class _Signal:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


PARK = _Signal("PARK")  # sleep until woken, then step again
EXIT = _Signal("EXIT")  # the slot is done
AGAIN = _Signal("AGAIN")  # deliver, then step again at once


class Driver(Protocol):
    """Starts slots and waits for them to end."""

    # Parked slots the engine wakes at a time while work arrives; the rest of that work
    # queues, and each slot that starts a unit wakes the next while work waits.
    max_waking: int

    def make_waker(self) -> Waker:
        """A waker for a new slot."""

    def start(self, slot: Slot) -> None:
        """Start the loop of ``slot`` (engine lock held: never blocks)."""

    def join(self, slots: list[Slot]) -> None:
        """Wait until the loops of ``slots`` have ended (no lock held)."""

    def can_run(self) -> bool:
        """False once nothing will ever run the slots again (their event loop stopped), so
        that waiting for the pool's work could only hang."""


class ThreadDriver:
    """One thread per slot: the thread backend runs calls in it, the process backend talks
    to its worker process from it."""

    # One at a time: waking every idle thread at once for tiny tasks costs a sleep and a
    # wake-up per thread per burst, and the woken threads only fight over the GIL; slow
    # tasks still spread over all workers, one wake-up latency apart.
    max_waking = 1

    def __init__(self, engine: Engine, backend: Backend) -> None:
        self._engine = engine
        self._backend = backend

    @staticmethod
    def make_waker() -> ThreadWaker:
        return ThreadWaker()

    def start(self, slot: Slot) -> None:
        thread = threading.Thread(
            target=self._main,
            args=(slot,),
            name=f"{self._engine.name}-worker-{slot.id}",
            daemon=True,
        )
        slot.thread = thread
        thread.start()

    def join(self, slots: list[Slot]) -> None:
        me = threading.current_thread()
        for slot in slots:
            thread = slot.thread
            if thread is not None and thread is not me:
                thread.join()

    @staticmethod
    def can_run() -> bool:
        return True  # its threads run until their slots exit

    def _main(self, slot: Slot) -> None:
        engine = self._engine
        backend = self._backend
        set_source(slot)
        step = engine.step
        deliver = engine.deliver
        run = backend.run
        # A backend that keeps the default (no-op) prepare is not called for it.
        prepare = None if type(backend).prepare is _base_prepare() else backend.prepare
        waker: Any = slot.waker
        now = engine.now
        # The unit this slot finished, to settle. Nothing of a finished unit stays bound
        # while the slot sleeps: an idle worker must not keep a task's callable alive.
        finished: Unit | None = None
        try:
            while True:
                if prepare is not None:
                    prepare(slot)  # e.g. start the worker process before taking work
                deliveries, nxt = step(slot, finished)
                finished = None
                if deliveries:
                    deliver(deliveries)
                    deliveries = None  # type: ignore[assignment]
                if type(nxt) is Unit:
                    try:
                        run(slot, nxt)
                    except Exception as e:
                        engine.backend_failed(slot, nxt, e)
                    finished, nxt = nxt, None
                elif nxt is PARK:
                    waker.wait()
                elif nxt is EXIT:
                    return
                elif nxt is not AGAIN:
                    waker.wait(max(0.0, nxt - now()))  # a rate limit: not before then
        finally:
            set_source(None)
            engine.slot_exited(slot)


class LoopWaker:
    """A parked asyncio task awaits a future that ``wake`` resolves, from any thread."""

    __slots__ = ("_future", "_loop", "_pending")

    def __init__(self, loop: Any) -> None:
        self._loop = loop
        self._future: Any = None
        self._pending = False

    def wake(self) -> None:
        if self._pending:
            return
        self._pending = True
        loop = self._loop
        if _running_loop() is loop:
            self._resolve()
        else:
            try:
                loop.call_soon_threadsafe(self._resolve)
            except RuntimeError:
                pass  # the loop is closed: nothing waits on it any more

    def _resolve(self) -> None:
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)

    async def wait(self, timeout: float | None = None) -> None:
        """Sleep until woken, or until ``timeout`` seconds passed."""
        if self._pending:
            self._pending = False
            return
        loop = self._loop
        self._future = future = loop.create_future()
        handle = None if timeout is None else loop.call_later(timeout, self._resolve)
        try:
            await future
        finally:
            self._future = None
            if handle is not None:
                handle.cancel()
        self._pending = False


# How often a join whose loop may have closed without running it looks again.
_JOIN_POLL = 0.1
# How long a join waits for slots told to stop (the pool's deadline passed) on a loop that
# does not run: a coroutine blocks it (the backend's close says so).
_LATE_JOIN = 0.5


class AsyncioDriver:
    """One asyncio task per slot, on one event loop: thousands of slots cost no thread.

    The loop is the host's (``AsyncPool``: the caller's) or the backend's own (a loop thread
    that ``Pool(backend="async")`` runs). A slot's task runs ``await backend.arun(slot,
    unit)``; a call that must stop is cancelled by the backend (``stop``).
    """

    # Every parked slot that work arrives for, at once: the woken tasks all run in the
    # loop's next turn, one after another, with nothing to fight over; woken one by one, each
    # would cost a turn of the loop of its own.
    max_waking = 1 << 30

    def __init__(self, engine: Engine, backend: Backend) -> None:
        self._engine = engine
        self._backend = backend
        loop = backend.event_loop()
        self.loop = loop

    def make_waker(self) -> LoopWaker:
        return LoopWaker(self.loop)

    def start(self, slot: Slot) -> None:
        if _running_loop() is self.loop:
            self._create(slot)
        else:
            self.loop.call_soon_threadsafe(self._create, slot)

    def _create(self, slot: Slot) -> None:
        import asyncio

        if slot.task is None:
            slot.task = asyncio.ensure_future(self._main(slot), loop=self.loop)
            slot.task.set_name(f"{self._engine.name}-worker-{slot.id}")  # (in logs)

    def join(self, slots: list[Slot]) -> None:
        """Wait (in a thread other than the loop's) until the slots' tasks have ended.

        Returns early, without an error, when the loop ends first: it cancelled the wait
        (``asyncio.run`` cancels every task on its way out, the slots' with it), or closed
        before it ran it (checked every ``_JOIN_POLL`` seconds). The tasks went with it.
        """
        import asyncio
        import concurrent.futures
        import inspect

        loop = self.loop
        if _running_loop() is loop:
            raise RuntimeError("AsyncioDriver.join() would block its own event loop")
        if loop.is_closed():
            return

        async def ended() -> None:
            tasks = [s.task for s in slots if s.task is not None]
            if tasks:
                await asyncio.wait(tasks)

        coro = ended()
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:
            coro.close()  # the loop closed meanwhile
            return
        waited = 0.0
        while True:
            try:
                future.result(_JOIN_POLL)
                return
            except concurrent.futures.TimeoutError:
                if not loop.is_closed():
                    waited += _JOIN_POLL
                    if waited >= _LATE_JOIN and self._engine.closed_hard:
                        # Told to stop what runs (a deadline passed), and the loop has not
                        # run the cancellation: a coroutine blocks it. Not waited for.
                        return
                    continue
                # Closed without running it (or with it pending): nothing will end it.
                if inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
                    coro.close()  # never started: not "never awaited" either
                return
            except (concurrent.futures.CancelledError, RuntimeError):
                return  # the loop cancelled it on its way out, or stopped

    def can_run(self) -> bool:
        """The slots' tasks run only while their loop does: an AsyncPool's loop is the
        caller's, which ``asyncio.run`` closes when its main coroutine returns or fails."""
        return bool(self.loop.is_running())

    async def _main(self, slot: Slot) -> None:
        import asyncio

        engine = self._engine
        set_source(slot)  # this task's own context: its coroutines see their own task
        step = engine.step
        deliver = engine.deliver
        arun = self._backend.arun
        waker: Any = slot.waker
        now = engine.now
        finished: Unit | None = None
        try:
            while True:
                deliveries, nxt = step(slot, finished)
                finished = None
                if deliveries:
                    deliver(deliveries)
                    deliveries = None  # type: ignore[assignment]
                if type(nxt) is Unit:
                    try:
                        await arun(slot, nxt)
                    except Exception as e:
                        engine.backend_failed(slot, nxt, e)
                    finished, nxt = nxt, None
                elif nxt is PARK:
                    await waker.wait()
                elif nxt is EXIT:
                    return
                elif nxt is not AGAIN:
                    await waker.wait(max(0.0, nxt - now()))
        except asyncio.CancelledError:
            # From outside: the loop is going away. (A call the pool stops ends without an
            # error here: its slot is abandoned.)
            engine.worker_cancelled(slot)
            raise
        finally:
            engine.slot_exited(slot)


def _running_loop() -> Any:
    import sys

    asyncio = sys.modules.get("asyncio")
    return None if asyncio is None else asyncio.events._get_running_loop()


def _base_prepare() -> Callable[..., Any]:
    from ._base import Backend

    return Backend.prepare


_DRIVERS: dict[str, Callable[[Engine, Backend], Driver]] = {
    "thread": ThreadDriver,
    "asyncio": AsyncioDriver,
}


def register_driver(name: str, factory: Callable[[Engine, Backend], Driver]) -> None:
    """Make a driver available to backends under ``name`` (the asyncio driver registers
    itself when its module is imported; tests register their own)."""
    _DRIVERS[name] = factory


def create_driver(name: str, engine: Engine, backend: Backend) -> Driver:
    """The driver named by a backend's capabilities."""
    return _DRIVERS[name](engine, backend)
