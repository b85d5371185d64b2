"""The thread backend: each worker is a thread of this process.

Good for I/O-bound work and for code that releases the GIL. A running call cannot be stopped
from outside a thread, so on timeout or cancel the engine delivers the outcome at once, sets the
task's cancellation flag (``current_task().cancelled``) and abandons the thread, which exits as
soon as the call returns; a fresh thread keeps the pool at full strength.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice
from typing import TYPE_CHECKING

from .._units import CALL_ARGS, CALL_ITEM, CALL_KWARGS, call_failed
from ._base import Backend, Host
from ._caps import Capabilities

if TYPE_CHECKING:
    from .._crew import Slot
    from .._units import Unit

__all__ = ["ThreadBackend"]


# Calls of a batch are timed in groups of this many when no deadline needs their start
# times; a group's run time is shared evenly by its calls.
GROUP = 32


def run_calls(slot: Slot, unit: Unit) -> None:
    """Run every claimable call of ``unit`` in this thread.

    This is the hot loop of the pool: a handful of bytecodes per call. ``slot.t0`` is stored
    *before* the next position is claimed, so a supervisor that sees a claim also sees its
    start time.
    """
    host = slot.owner
    if len(unit.entries) > 1 and unit.mode != CALL_KWARGS and host.task_timeout is None:
        run_batch(unit, host.now)
        return
    fn = unit.fn
    entries = unit.entries
    out = unit.out.append
    durs = unit.durs.append
    clock = host.now
    t0 = slot.t0 = clock()
    mode = unit.mode
    if mode == CALL_ITEM:
        for i in unit.it:
            try:
                v = fn(entries[i])
            except BaseException as e:
                v = call_failed(unit, e)
            t1 = clock()
            durs(t1 - t0)
            out(v)
            slot.t0 = t0 = t1
    elif mode == CALL_ARGS:
        for i in unit.it:
            try:
                v = fn(*entries[i])
            except BaseException as e:
                v = call_failed(unit, e)
            t1 = clock()
            durs(t1 - t0)
            out(v)
            slot.t0 = t0 = t1
    else:
        kwargs = unit.kwargs or {}
        for i in unit.it:
            try:
                v = fn(*entries[i], **kwargs)
            except BaseException as e:
                v = call_failed(unit, e)
            t1 = clock()
            durs(t1 - t0)
            out(v)
            slot.t0 = t0 = t1


def run_batch(unit: Unit, clock: Callable[[], float]) -> None:
    """Run a batch of tiny calls (``map``/``results``) with no deadline.

    Positions are still claimed one at a time from ``unit.it`` (so a takeover stops the batch
    at the next call), and ``len(unit.out)`` is the running position (which ``current_task()``
    reports). Durations are measured per group of ``GROUP`` calls and split evenly among
    them: batches only hold calls that take microseconds, and the per-call clock reads would
    cost more than the calls. (The calls are a plain loop, not ``map`` inside
    ``list.extend``: that is no faster, and it would take a ``StopIteration`` raised by a
    task for the end of the batch and lose that task's outcome.)
    """
    fn = unit.fn
    entries = unit.entries
    out = unit.out
    append = out.append
    durs = unit.durs
    it = unit.it
    args = unit.mode == CALL_ARGS
    t0 = clock()
    while True:
        before = len(out)
        if args:
            for i in islice(it, GROUP):
                try:
                    v = fn(*entries[i])
                except BaseException as e:
                    v = call_failed(unit, e)
                append(v)
        else:
            for i in islice(it, GROUP):
                try:
                    v = fn(entries[i])
                except BaseException as e:
                    v = call_failed(unit, e)
                append(v)
        t1 = clock()
        k = len(out) - before
        if not k:
            return
        durs.extend([(t1 - t0) / k] * k)
        t0 = t1


class ThreadBackend(Backend):
    name = "thread"

    def open(self, host: Host) -> Capabilities:
        # Threads wait on I/O far more than they compute: 32 workers by default, the upper
        # bound ThreadPoolExecutor picked for the same reason (started on demand only).
        # A thread cannot be stopped from outside: a call that must stop is abandoned.
        return Capabilities(default_workers=32, stop="abandon", claims=True)

    # The hot loop itself, without a method call around it.
    run = staticmethod(run_calls)
