"""``Capabilities``: what a backend instance can do, declared when it opens (see ``_base``).

A module of its own, imported by a backend when it opens, not when workpool is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Capabilities"]


@dataclass(frozen=True)
class Capabilities:
    """What a backend instance can do, declared when it opens."""

    default_workers: int
    """``workers`` when the user gives none (a cluster's backend learns it by connecting)."""
    stop: Literal["kill", "cancel", "abandon"]
    """How ``stop`` ends a running call. ``kill``: it kills the worker; the slot settles the
    unit once the kill landed (``finish_broken``) and lives on. ``cancel``: it cancels the
    call (a coroutine, a remote task); ``abandon``: it cannot end it (a thread). With either
    of those the engine settles the unit at once and replaces the slot."""
    max_batch: int = 256
    """Most calls ``map``/``results`` put in one unit when batching tiny tasks: bounds the
    memory of a unit and the read-ahead. A backend whose units cost more to hand over (a
    round trip to a process) needs larger ones to keep its workers busy."""
    unit_seconds: float = 0.002
    """How long ``map``/``results`` aim for a batch of tiny calls to run: the per-unit cost
    (a lock trip, a hand-off, a round trip) against the latency of the results it holds
    back and the tail of a finite input."""
    claims: bool = False
    """Whether its workers claim a unit's calls one at a time from ``unit.it``, in this
    process (a thread, a coroutine of this loop): then an idle worker can take the unclaimed
    rest of a unit whose calls turned slow (``_split.LateSplit``)."""
    stops_left_units: bool = False
    """Whether a call's running units are stopped when the call is left (a map's failure,
    ``results()`` closed early). For a backend whose workers get whole units that may not
    have started yet (a remote task waiting for a thread) and whose ``stop`` costs no worker
    (it cancels the remote task, which then starts no more of its calls): the call's work
    not started yet is cancelled, as the contract says, not run after the call was left."""
    send_ahead: bool = False
    """Whether it sends a busy worker its next unit (and can take it back, ``revoke``)."""
    driver: str = "thread"
    """Who waits for its slots: ``"thread"`` (a thread per slot, calling ``run``) or
    ``"asyncio"`` (an asyncio task per slot, awaiting ``arun``)."""
    coroutines: bool = False
    """Whether it runs coroutine functions (awaiting them), besides plain functions."""
