"""The backend interface: where a unit runs and how a running call is stopped.

The engine core owns intake, backpressure, accounting, deadlines, retries and the lifecycle.
A backend only runs a unit's calls in a slot's worker, stops a running call, and frees the
worker. It never imports the engine: it gets a :class:`Host` (the few engine methods it may
call back) when it opens, and answers with its :class:`Capabilities`.

Who calls what::

    engine ── open(host) ──────────────▶ backend ──▶ Capabilities
    driver ── prepare(slot) ───────────▶ backend      (thread driver, before taking a unit)
    driver ── run(slot, unit) ─────────▶ backend      (thread driver: in the slot's thread)
    driver ── await arun(slot, unit) ──▶ backend      (asyncio driver: in the slot's task)
    engine ── stop(slot), revoke(slot) ▶ backend      (engine lock held: never block)
    engine ── call_started(slot) ──────▶ backend      (engine lock held)
    driver ── release(slot) ───────────▶ backend      (the slot ends)
    engine ── close() / aclose() ──────▶ backend      (after the last slot ended)
    backend ── host.prefetch / drop_prefetched / finish_broken / gave_back / break_pool /
               has_queued ──▶ engine

A backend runs a unit by claiming positions from ``unit.it`` one at a time and appending each
outcome to ``unit.out`` (a value, or a ``Failure``) and its run time to ``unit.durs``.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ..errors import ConfigError

if TYPE_CHECKING:
    from .._crew import Slot
    from .._units import Unit
    from ._caps import Capabilities

__all__ = ["Backend", "Host"]


class Host(Protocol):
    """What a backend may use of the engine that hosts it."""

    name: str
    """The pool's name (for thread and process names)."""
    task_timeout: float | None
    rate: tuple[float, int] | None
    """The rate limit as (seconds between starts, burst), or None."""
    closed: bool
    closed_hard: bool
    """The pool is stopping what runs (a shutdown's deadline passed, a second signal)."""
    loop: Any
    """The event loop of the pool's face (``AsyncPool``: the caller's), or None."""

    def now(self) -> float:
        """The engine's clock (``time.monotonic`` unless a test gave another)."""

    def prefetch(self, slot: Slot) -> Unit | None:
        """The unit ``slot`` runs next, to send its worker now (see the engine's send-ahead
        section); None if there is none to send."""

    def drop_prefetched(self, slot: Slot) -> None:
        """The worker died before starting the unit sent ahead to it: requeue it."""

    def finish_broken(
        self,
        slot: Slot,
        unit: Unit,
        failed_pos: int | None,
        error: BaseException,
        duration: float,
    ) -> None:
        """The worker died (or was killed) running ``unit``: call ``failed_pos`` ends with
        ``error``, the outcomes in ``unit.out`` stand, the rest is requeued."""

    def gave_back(self, slot: Slot, unit: Unit) -> None:
        """The worker ran the calls of ``unit`` whose outcomes are in ``unit.out`` and gave
        the rest back unstarted (the unit ran far longer than it was sized for): those
        stand, the rest is requeued for any free worker."""

    def has_queued(self) -> bool:
        """True while units wait in the queue (a hint: read without the lock)."""

    def break_pool(self, error: BaseException) -> None:
        """Nothing can ever run here (workers that never start): fail the queued work with
        ``error`` and refuse new work."""


class Backend(ABC):
    """One way to run the engine's units. An instance belongs to one pool."""

    name: ClassVar[str]
    #: The options this backend takes through ``Pool(**backend_options)``.
    options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, options: Mapping[str, Any]) -> None:
        unknown = sorted(set(options) - self.options)
        if unknown:
            allowed = ", ".join(sorted(self.options)) or "none"
            raise ConfigError(
                f"unknown option(s) for backend {self.name!r}: {', '.join(unknown)}; "
                f"allowed: {allowed}"
            )

    def open(self, host: Host) -> Capabilities:
        """Attach to the pool before its first worker starts; say what this backend does."""
        raise NotImplementedError

    def run(self, slot: Slot, unit: Unit) -> None:
        """Run the calls of ``unit`` that can be claimed from ``unit.it`` (thread driver)."""
        raise NotImplementedError(f"backend {self.name!r} has no thread driver")

    def arun(self, slot: Slot, unit: Unit) -> Awaitable[None]:
        """What ``slot``'s asyncio task awaits to run the calls of ``unit`` (asyncio driver):
        an ``async def`` method, or a plain one that returns the coroutine doing the work
        (one frame less on every resumption of every call)."""
        raise NotImplementedError(f"backend {self.name!r} has no asyncio driver")

    def event_loop(self) -> Any:
        """The event loop the asyncio driver runs this backend's slots on."""
        raise NotImplementedError(f"backend {self.name!r} has no asyncio driver")

    def prepare(self, slot: Slot) -> None:  # noqa: B027 - nothing to prepare by default
        """Get ``slot``'s worker ready before it takes a unit (thread driver, in its thread).

        Starting a worker here, not when a unit arrives, keeps start-up out of the time
        between taking a unit (when a rate limit paces it) and its first call.
        """

    def call_started(self, slot: Slot) -> float:
        """When the call ``slot`` runs now started, on the host's clock (lock held)."""
        return slot.t0

    def stop(self, slot: Slot) -> None:  # noqa: B027 - a no-op is the right default
        """Stop the running call of ``slot`` if the backend can (see ``Capabilities.stop``).

        Called with the engine lock held: it must never block and never do I/O (a kill
        signal, a flag, a callback scheduled on a loop are fine; a network round trip is
        not: schedule it instead).
        """

    def revoke(self, slot: Slot, *, cancel: bool = False) -> bool:
        """Take back ``slot.next`` if its worker has not started it (lock held: never
        blocks). Only backends that send ahead need this.

        ``cancel``: the unit is taken back to be cancelled (its call was left, the pool
        cancels its queued work), never to run elsewhere. A backend that cannot tell for
        sure whether its worker started it may then take it back anyway and stop it there:
        if it had just started, that is a cancel of running work (the outcome is dropped).
        """
        return False

    def release(self, slot: Slot) -> None:  # noqa: B027
        """``slot`` ends: free its worker (called by its driver)."""

    def close(self) -> None:  # noqa: B027
        """Release per-pool resources after the last worker stopped."""

    async def aclose(self) -> None:
        """``close`` from an event loop (AsyncPool), without blocking it: by default in a
        thread of the loop's executor, since closing may wait (worker processes to exit)."""
        import asyncio

        await asyncio.get_running_loop().run_in_executor(None, self.close)
