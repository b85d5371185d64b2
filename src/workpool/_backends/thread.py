"""The thread backend: each worker is a thread of this process.

Good for I/O-bound work and for code that releases the GIL. A running call cannot be stopped
from outside a thread, so on timeout or cancel the engine delivers the outcome at once, sets the
task's cancellation flag (``current_task().cancelled``) and abandons the thread, which exits as
soon as the call returns; a fresh thread keeps the pool at full strength.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .._units import CALL_ARGS, CALL_ITEM, failure_of
from ._base import Backend

if TYPE_CHECKING:
    from .._engine import Slot
    from .._units import Unit

__all__ = ["ThreadBackend"]


class ThreadBackend(Backend):
    name = "thread"

    @staticmethod
    def default_workers() -> int:
        # Threads wait on I/O far more than they compute; 32 matches the upper bound that
        # ThreadPoolExecutor picked for the same reason. They are started on demand only.
        return 32

    def run(self, slot: Slot, unit: Unit) -> None:
        run_calls(slot, unit)


def run_calls(slot: Slot, unit: Unit) -> None:
    """Run every claimable call of ``unit`` in this thread.

    This is the hot loop of the pool: a handful of bytecodes per call. ``slot.t0`` is stored
    *before* the next position is claimed, so a supervisor that sees a claim also sees its
    start time.
    """
    fn = unit.fn
    entries = unit.entries
    out = unit.out.append
    durs = unit.durs.append
    clock = time.monotonic
    t0 = slot.t0 = clock()
    mode = unit.mode
    if mode == CALL_ITEM:
        for i in unit.it:
            try:
                v = fn(entries[i])
            except BaseException as e:
                v = failure_of(e)
                unit.nfail += 1
            t1 = clock()
            durs(t1 - t0)
            out(v)
            slot.t0 = t0 = t1
    elif mode == CALL_ARGS:
        for i in unit.it:
            try:
                v = fn(*entries[i])
            except BaseException as e:
                v = failure_of(e)
                unit.nfail += 1
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
                v = failure_of(e)
                unit.nfail += 1
            t1 = clock()
            durs(t1 - t0)
            out(v)
            slot.t0 = t0 = t1
