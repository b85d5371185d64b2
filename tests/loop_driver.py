"""A test-only driver: the thread backend's units, run from an asyncio event loop.

It proves the engine's driver seam: everything a driver needs is ``Engine.step`` (one
non-blocking call that settles a unit and says what to do next), a waker the engine can call
from any thread, and the slot's exit. Here each slot is one asyncio task (no thread per slot)
that runs its units inline on the loop with the thread backend's own ``run_calls``: fine for
calls that never block, which is what the seam tests give it.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from workpool._backends import _REGISTRY
from workpool._backends._base import Backend, Host
from workpool._backends._caps import Capabilities
from workpool._backends._drivers import AGAIN, EXIT, PARK, register_driver
from workpool._backends.thread import run_calls
from workpool._context import set_source
from workpool._units import Unit

NAME = "loop-inline"


class _Waker:
    """Wakes a parked slot task: an asyncio.Event set from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.event = asyncio.Event()

    def wake(self) -> None:
        self.loop.call_soon_threadsafe(self.event.set)

    async def wait(self, timeout: float | None = None) -> None:
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
        except TimeoutError:
            pass
        self.event.clear()


class LoopDriver:
    """One asyncio task per slot on the backend's loop."""

    max_waking = 1  # wakes one parked slot at a time, like the thread driver

    def __init__(self, engine: Any, backend: Any) -> None:
        self.engine = engine
        self.loop = backend.loop
        self.tasks: dict[int, asyncio.Task[None]] = {}

    def make_waker(self) -> _Waker:
        return _Waker(self.loop)

    def start(self, slot: Any) -> None:
        def create() -> None:
            slot.task = self.loop.create_task(self._main(slot))

        self.loop.call_soon_threadsafe(create)

    def join(self, slots: list[Any]) -> None:
        async def ended() -> None:
            tasks = [s.task for s in slots if s.task is not None]
            if tasks:
                await asyncio.wait(tasks)

        asyncio.run_coroutine_threadsafe(ended(), self.loop).result()

    def can_run(self) -> bool:
        return bool(self.loop.is_running())

    async def _main(self, slot: Any) -> None:
        engine = self.engine
        set_source(slot)
        finished = None
        try:
            while True:
                deliveries, nxt = engine.step(slot, finished)
                finished = None
                engine.deliver(deliveries)
                if type(nxt) is Unit:
                    run_calls(slot, nxt)  # the thread backend's own loop, inline
                    finished = nxt
                elif nxt is PARK:
                    await slot.waker.wait()
                elif nxt is EXIT:
                    return
                elif nxt is not AGAIN:
                    await slot.waker.wait(max(0.0, nxt - engine.now()))
        finally:
            engine.slot_exited(slot)


class InlineLoopBackend(Backend):
    """The thread backend's units on the test driver (it runs its own loop thread)."""

    name = NAME

    def open(self, host: Host) -> Capabilities:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(ready.set)
            self.loop.run_forever()
            self.loop.close()

        self._thread = threading.Thread(target=serve, name=f"{host.name}-loop", daemon=True)
        self._thread.start()
        ready.wait()
        return Capabilities(default_workers=8, stop="abandon", driver="test-loop")

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()


def install() -> None:
    register_driver("test-loop", LoopDriver)
    _REGISTRY[NAME] = "loop_driver:InlineLoopBackend"


def uninstall() -> None:
    _REGISTRY.pop(NAME, None)
