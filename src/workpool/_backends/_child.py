"""The loop of a worker process (process backend).

Protocol, over one duplex pipe per worker::

    parent ── run message (cloudpickle) ──▶ child        b"" asks the child to exit
    parent ◀── results (pickle): (final, values, durations, nfail) ── child

A run message carries one unit: the function (by key; its cloudpickled bytes only the first
time this child sees it), how to call it, and the entries. The child runs the entries in order
and sends results back in groups: at the end of the unit, and whenever ~1 ms has passed since
the last send, so a slow call's result travels at once while tiny calls share a message.

Progress goes to a small shared array that the parent reads without a message:
``[position running, its start time (monotonic; written only when a deadline applies), calls
done (written when the unit ends), cancel flag]``. When the
parent kills a worker for a timeout or a cancel, or the worker dies, the parent knows from it
which call was running. A second pipe, the *lifeline*, is never written: when the parent dies,
reading it returns EOF and the child exits, so no worker outlives its pool.
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from typing import Any

from .._context import TaskContext, set_source
from .._units import CALL_ITEM, Failure, failure_of
from ..errors import RemoteError, WorkpoolError

__all__ = ["BadArgument", "main"]

POS, T0, DONE, CANCEL = range(4)
# Results of tiny calls are sent together until this much time passed since the last send:
# fewer messages for tiny tasks, and at most ~1 ms of finished work is lost if the child dies.
FLUSH_SECONDS = 0.001


class BadArgument:
    """Stands in for an entry the parent could not pickle; the call fails with its message."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


class _Progress:
    """The child's ContextSource/CancelProbe: current_task() reads the shared array."""

    def __init__(self, shared: Any) -> None:
        self.shared = shared
        self.start = 0
        self.attempt = 1
        self.timeout: float | None = None
        self.running = False

    def task_context(self) -> TaskContext | None:
        if not self.running:
            return None
        shared = self.shared
        deadline = shared[T0] + self.timeout if self.timeout is not None else None
        return TaskContext(self.start + int(shared[POS]), self.attempt, deadline, self)

    def cancel_requested(self) -> bool:
        return bool(self.shared[CANCEL])


def _portable(failure: Failure) -> Failure:
    """The failure, with its exception replaced by a RemoteError if it would not round-trip."""
    error = failure.error
    try:
        pickle.loads(pickle.dumps(error, pickle.HIGHEST_PROTOCOL))
    except Exception:
        name = f"{type(error).__module__}.{type(error).__qualname__}"
        return Failure(RemoteError(f"{name}: {error}", name), failure.traceback)
    return failure


def _encode(final: bool, values: list[Any], durs: list[float], nfail: int) -> bytes:
    try:
        return pickle.dumps((final, values, durs, nfail), pickle.HIGHEST_PROTOCOL)
    except Exception:
        fixed = []
        for v in values:
            try:
                pickle.dumps(v, pickle.HIGHEST_PROTOCOL)
            except Exception as e:
                nfail += 1
                v = Failure(
                    pickle.PicklingError(
                        f"the task's return value ({type(v).__qualname__}) could not be "
                        f"pickled to send it back from the worker process: {e}"
                    ),
                    None,
                )
            fixed.append(v)
        return pickle.dumps((final, fixed, durs, nfail), pickle.HIGHEST_PROTOCOL)


def _watch_parent(lifeline: Any) -> None:
    try:
        lifeline.recv_bytes()
    except (EOFError, OSError):
        pass
    os._exit(70)  # the pool's process is gone: nobody will collect our results


def _pacer(rate: tuple[Any, Any, float] | None) -> Any:
    """Wait for the pool's rate limit before a call: a start time shared by all workers.

    The parent paces when a unit is taken, but a fresh worker may take a while to import the
    task's module, so calls would bunch up; this paces the calls themselves.
    """
    if rate is None:
        return None
    lock, next_start, interval = rate

    def pace() -> None:
        # Waiting with the lock held queues the other workers behind this one, and the next
        # start is set from when this call really starts (after any oversleep), so two starts
        # are never closer than the interval.
        with lock:
            wait = next_start.value - time.monotonic()  # CLOCK_MONOTONIC: one clock for all
            if wait > 0:
                time.sleep(wait)  # the rate limit itself: waiting is the point
            next_start.value = time.monotonic() + interval

    return pace


def main(
    conn: Any,
    lifeline: Any,
    shared: Any,
    init: bytes | None,
    rate: tuple[Any, Any, float] | None = None,
) -> None:
    """Entry point of a worker process."""
    pace = _pacer(rate)
    # Ctrl-C reaches the whole process group; the pool decides what a signal means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(lifeline,), daemon=True).start()
    progress = _Progress(shared)
    set_source(progress)
    init_error: BaseException | None = None
    if init is not None:
        try:
            initializer, initargs = pickle.loads(init)
            initializer(*initargs)
        except BaseException as e:
            init_error = WorkpoolError(
                f"the worker initializer failed, so this worker cannot run tasks: "
                f"{type(e).__name__}: {e}"
            )
    fns: dict[int, Any] = {}
    # Progress writes go through a memoryview of the shared array: cheaper than ctypes items.
    mv: Any = memoryview(shared).cast("B").cast("d")
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if not data:
            return
        key, blob, mode, entries, kwargs, start, attempt, timeout, bad = pickle.loads(data)
        if blob is not None:
            fns[key] = pickle.loads(blob)
        progress.start = start
        progress.attempt = attempt
        progress.timeout = timeout
        progress.running = True
        # The parent may have sent this unit while the previous one ran: say that no call
        # of it has started yet (the parent reset these itself when the worker was idle).
        mv[POS] = -1.0
        mv[DONE] = 0.0
        _run_unit(
            conn,
            mv,
            fns[key],
            mode,
            entries,
            kwargs or {},
            timeout is not None,
            pace,
            pace is not None or init_error is not None or bad,
            init_error,
        )
        progress.running = False


def _run_unit(
    conn: Any,
    mv: Any,
    fn: Any,
    mode: int,
    entries: list[Any],
    kwargs: dict[str, Any],
    timed: bool,
    pace: Any,
    checks: bool,
    init_error: BaseException | None,
) -> None:
    """Run the calls of one unit and send their outcomes back.

    The loop is the per-call cost of tiny tasks, so it does little: one shared write saying
    which call runs (the start time too when a deadline needs it), one clock read (a call's
    end is the next one's start) and two appends. ``checks`` asks for the rare per-call
    work: rate pacing, a failed initializer, arguments the parent could not pickle.
    """
    clock = time.monotonic
    single = mode == CALL_ITEM
    values: list[Any] = []
    durs: list[float] = []
    nfail = 0
    n = len(entries)
    t0 = last = clock()
    for i, entry in enumerate(entries):
        if checks:
            if pace is not None:
                pace()
            t0 = clock()
        mv[POS] = i
        if timed:
            mv[T0] = t0
        try:
            if checks:
                if init_error is not None:
                    raise init_error
                if type(entry) is BadArgument:
                    raise pickle.PicklingError(entry.message)
            if single:
                v = fn(entry)
            else:
                v = fn(*entry, **kwargs)
        except BaseException as e:
            v = _portable(failure_of(e))
            nfail += 1
        t1 = clock()
        values.append(v)
        durs.append(t1 - t0)
        t0 = t1
        if t1 - last >= FLUSH_SECONDS and i + 1 < n:
            conn.send_bytes(_encode(False, values, durs, nfail))
            values = []
            durs = []
            nfail = 0
            last = t0 = clock()
    mv[DONE] = n
    conn.send_bytes(_encode(True, values, durs, nfail))
