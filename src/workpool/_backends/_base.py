"""The backend interface: where a unit runs and how a running task is stopped.

The engine core owns intake, backpressure, accounting, deadlines, retries and the lifecycle.
A backend only starts a worker for a slot, runs a unit's calls in it, and stops a running call.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ConfigError

if TYPE_CHECKING:
    from .._engine import Engine, Slot
    from .._units import Unit


class Backend(ABC):
    """One execution strategy for the engine's units.

    A backend instance belongs to one pool. The engine calls ``start_worker`` to bring up the
    worker of a new slot; the slot's thread then calls ``run`` for every unit it takes. When a
    running task must stop (timeout, cancel, shutdown), the engine takes the unit's outcome over
    itself and calls ``stop`` so the backend can free the worker (kill a process, cancel a
    remote future); a thread cannot be stopped, so the thread backend's ``stop`` does nothing
    and the engine replaces the abandoned slot.
    """

    name: ClassVar[str]
    #: True when ``stop`` really ends the running call (by killing the worker). The engine
    #: then lets the slot's thread settle the unit; otherwise it settles it itself and
    #: abandons the slot.
    kills_workers: ClassVar[bool] = False
    #: Most items ``map``/``results`` put in one unit when batching tiny tasks: bounds the
    #: memory of a unit and the read-ahead. A backend whose units cost more to hand over
    #: (a round trip to a process) needs larger ones to keep its workers busy.
    max_batch: ClassVar[int] = 256
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
        self.engine: Engine | None = None

    @staticmethod
    @abstractmethod
    def default_workers() -> int:
        """The ``workers`` value used when the user gives none."""

    def open(self, engine: Engine) -> None:
        """Attach to the pool's engine before the first worker starts."""
        self.engine = engine

    def start_worker(self, slot: Slot) -> None:
        """Start the thread of ``slot``, which runs ``engine.slot_main(slot)``.

        Every backend drives its workers from one thread per slot: the thread backend runs the
        calls in it, the process backend talks to its child process from it.
        """
        assert self.engine is not None
        thread = threading.Thread(
            target=self.engine.slot_main,
            args=(slot,),
            name=f"{self.engine.name}-worker-{slot.id}",
            daemon=True,
        )
        slot.thread = thread
        thread.start()

    @abstractmethod
    def run(self, slot: Slot, unit: Unit) -> None:
        """Run the calls of ``unit`` that can be claimed from ``unit.it``, in ``slot``'s thread."""

    def prepare(self, slot: Slot) -> None:  # noqa: B027 - nothing to prepare by default
        """Get ``slot``'s worker ready before it takes a unit (called in the slot's thread).

        Starting a worker here, not when a unit arrives, keeps start-up out of the time
        between taking a unit (when a rate limit paces it) and its first call.
        """

    def call_started(self, slot: Slot) -> float:
        """``time.monotonic()`` at which the call ``slot`` runs now started."""
        return slot.t0

    def stop(self, slot: Slot) -> None:  # noqa: B027 - a no-op is the right default
        """Stop the running call of ``slot`` if the backend can (lock held: don't block)."""

    def revoke(self, slot: Slot) -> bool:
        """Take back ``slot.next`` (see ``Engine.prefetch``) if its worker has not started it
        (lock held: don't block). Only backends that call ``prefetch`` need this."""
        return False

    def release(self, slot: Slot) -> None:  # noqa: B027
        """``slot``'s thread is exiting: free its worker (called in that thread)."""

    def close(self) -> None:  # noqa: B027
        """Release per-pool resources after the last worker stopped."""
