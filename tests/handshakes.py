"""Handshakes between a test and its tasks that work on every backend.

The behavioural suite synchronises with its tasks through state: a task announces it started
and waits to be released (``Gate``), counts its calls (``Counter``), records what it saw in a
list, meets others at a barrier. On the thread backend these are plain ``threading`` objects.
Tasks of the process backend run in child processes, where a ``threading`` object cannot go
(cloudpickle fails on its lock) and a mutation would not come back; there the same objects are
``multiprocessing`` Manager proxies: they pickle, and every call reaches the one object in the
Manager's process. ``ThreadKit`` and ``ManagerKit`` make either kind behind one interface.

This module is small and free of pytest on purpose: a worker process imports it (by reference,
through cloudpickle) to rebuild a ``Gate`` or a ``Counter`` sent to it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "AsyncGate",
    "AsyncKit",
    "Box",
    "Counter",
    "Gate",
    "LoopEvent",
    "ManagerKit",
    "ThreadKit",
]


class Box:
    """A mutable value with the interface of a Manager ``Value`` proxy: ``.value``."""

    def __init__(self, value: Any = 0) -> None:
        self.value = value


class Counter:
    """A counter that tasks on any backend can bump: ``add()`` returns the new count."""

    def __init__(self, lock: Any, box: Any) -> None:
        self._lock = lock
        self._box = box

    def add(self, n: int = 1) -> int:
        with self._lock:
            value = int(self._box.value) + n
            self._box.value = value
            return value

    @property
    def value(self) -> int:
        return int(self._box.value)


class Gate:
    """A handshake for tests: tasks announce they started, then wait to be released.

    ``gate.wait_started(n)`` blocks until n tasks entered; ``gate.open()`` releases them all;
    ``gate.task`` is a task that does both (enter, wait, return its argument).
    """

    def __init__(self, condition: Any, count: Any, released: Any) -> None:
        self._cv = condition
        self._count = count
        self.released = released

    def enter(self) -> None:
        with self._cv:
            self._count.value += 1
            self._cv.notify_all()

    def wait_started(self, n: int, timeout: float = 10.0) -> None:
        with self._cv:
            if not self._cv.wait_for(lambda: self._count.value >= n, timeout):
                raise AssertionError(f"only {self._count.value} of {n} tasks started")

    @property
    def entered(self) -> int:
        with self._cv:
            return int(self._count.value)

    def open(self) -> None:
        self.released.set()

    def task(self, x: Any = None) -> Any:
        """A task that waits at the gate, then returns its argument."""
        return self.block(x)

    def block(self, x: Any = None) -> Any:
        """Wait at the gate, then return ``x``: for plain functions to call (on every
        flavour, where ``task`` may be a coroutine function)."""
        self.enter()
        if not self.released.wait(30):
            raise AssertionError("gate never opened")
        return x


class LoopEvent:
    """A ``threading.Event`` that coroutines can also await without blocking their loop."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._waiters: list[tuple[Any, Any]] = []  # (loop, future)

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        with self._lock:
            self._event.set()
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:
                pass  # that loop is closed

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    async def wait_async(self, timeout: float) -> bool:
        import asyncio

        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            if self._event.is_set():
                return True
            self._waiters.append((loop, future))
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return False
        return True


def _resolve(future: Any) -> None:
    if not future.done():
        future.set_result(None)


class AsyncGate(Gate):
    """A Gate whose ``task`` is a coroutine function: it waits without blocking its loop."""

    async def task(self, x: Any = None) -> Any:
        self.enter()
        if not await self.released.wait_async(30):
            raise AssertionError("gate never opened")
        return x


class ThreadKit:
    """Handshake objects for tasks that run in this process: plain ``threading`` objects."""

    def event(self) -> Any:
        return threading.Event()

    def lock(self) -> Any:
        return threading.Lock()

    def condition(self) -> Any:
        return threading.Condition()

    def barrier(self, parties: int, timeout: float | None = None) -> Any:
        return threading.Barrier(parties, timeout=timeout)

    def value(self, initial: Any = 0) -> Any:
        return Box(initial)

    def list(self) -> Any:
        """A list tasks append to; read it back with ``[:]`` (a proxy compares to nothing)."""
        return []

    def counter(self) -> Counter:
        return Counter(self.lock(), self.value(0))

    def gate(self) -> Gate:
        return Gate(self.condition(), self.value(0), self.event())


class AsyncKit(ThreadKit):
    """For the async backend: the gate's task is a coroutine (so the suite's gated tasks run
    as coroutines on the loop); plain functions of a test run on the backend's threads and
    share plain ``threading`` objects."""

    def gate(self) -> Gate:
        return AsyncGate(self.condition(), self.value(0), LoopEvent())


class ManagerKit(ThreadKit):
    """The same objects as Manager proxies, for tasks that run in worker processes."""

    def __init__(self, manager: Any) -> None:
        self._m = manager

    def event(self) -> Any:
        return self._m.Event()

    def lock(self) -> Any:
        return self._m.Lock()

    def condition(self) -> Any:
        return self._m.Condition()

    def barrier(self, parties: int, timeout: float | None = None) -> Any:
        return self._m.Barrier(parties, timeout=timeout)

    def value(self, initial: Any = 0) -> Any:
        return self._m.Value("q", initial)

    def list(self) -> Any:
        return self._m.list()


def live_workers(pool: Any) -> int:
    """The pool's workers that have not exited yet: threads, or asyncio tasks (on the async
    backend; one being created counts too), whichever its driver runs. Abandoned ones are
    not counted."""
    count = 0
    for slot in pool._engine.crew.started:
        thread, task = slot.thread, slot.task
        exited = (thread is not None and not thread.is_alive()) or (
            task is not None and task.done()
        )
        if not slot.abandoned and not exited:
            count += 1
    return count


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for a state the pool has no event for, checking it between short waits."""
    tick = threading.Event()
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout}s")
        tick.wait(0.005)
