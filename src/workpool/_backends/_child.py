"""The loop of a worker process (process backend).

Protocol, over one duplex pipe per worker::

    parent ── run message (cloudpickle) ──▶ child        b"" asks the child to exit
    parent ◀── results (pickle): (final, values, durations, nfail) ── child

A run message carries one unit: the function (by key; its cloudpickled bytes only the first
time this child sees it), how to call it, and the entries. The child runs the entries in order
and sends results back in groups: at the end of the unit, and whenever ~1 ms has passed since
the last send, so a slow call's result travels at once while tiny calls share a message.
``durations`` is a list with one float per value, or, for calls timed in groups (see
``_run_batch``), a tuple ``(count, seconds per call, count, seconds per call, ...)``; the
parent expands it with ``add_durations``.

Progress goes to a few slots of shared memory that the parent reads without a message
(``views`` gives both sides the same typed views of it): the position running (``POS``,
int64), its start time (``T0``, monotonic seconds; written only when a deadline applies), the
calls done (``DONE``, int64, written when the unit ends) and a cancel flag (``CANCEL``). When
the parent kills a worker for a timeout or a cancel, or the worker dies, the parent knows from
it which call was running.

A unit sent ahead (while the previous one runs; its message carries a number ``seq > 0``) can
be taken back by the parent for an idle worker until this child starts it: under a lock shared
with the parent, the child either marks it started (``STARTED = seq``) or finds it taken back
(``REVOKED == seq``), skips it and answers with an empty message.

A second pipe, the *lifeline*, is never written: when the parent dies,
reading it returns EOF and the child exits, so no worker outlives its pool.
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from itertools import repeat
from typing import Any

from .._context import TaskContext, set_source
from .._units import CALL_ITEM, Failure, failure_of
from ..errors import RemoteError, WorkpoolError

__all__ = ["BadArgument", "main"]

# The slots of the shared progress memory. POS, DONE, STARTED, REVOKED: int64 view; T0, CANCEL:
# double view. STARTED / REVOKED: the number of the last unit sent ahead that this child
# started / that the parent took back (see ProcessBackend.revoke).
POS, T0, DONE, CANCEL, STARTED, REVOKED = range(6)
SLOTS = 6
# Results of tiny calls are sent together until this much time passed since the last send:
# fewer messages for tiny tasks, and at most ~1 ms of finished work is lost if the child dies.
FLUSH_SECONDS = 0.001
# Calls of a batch without a deadline are timed in groups that take about this long; a group
# has at most MAX_GROUP calls.
GROUP_SECONDS = 0.0001
MAX_GROUP = 256


def views(shared: Any) -> tuple[Any, Any]:
    """The int64 and the double view of a worker's shared progress memory (8-byte slots).

    Both processes read and write it through memoryviews: cheaper than ctypes items, and an
    int64 store costs less than converting the position to a double."""
    raw = memoryview(shared).cast("B")
    return raw.cast("q"), raw.cast("d")


def add_durations(durs: list[float], received: list[float] | tuple[Any, ...]) -> None:
    """Append a result message's durations to ``durs``, one per value (see the module doc)."""
    if isinstance(received, list):
        durs.extend(received)
        return
    for j in range(0, len(received), 2):
        durs.extend(repeat(received[j + 1], received[j]))


class BadArgument:
    """Stands in for an entry the parent could not pickle; the call fails with its message."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


class _Progress:
    """The child's ContextSource/CancelProbe: current_task() reads the shared array."""

    owner = None  # no pool of this process: a task here cannot submit into its own

    def __init__(self, ints: Any, floats: Any) -> None:
        self.ints = ints
        self.floats = floats
        self.start = 0
        self.attempt = 1
        self.timeout: float | None = None
        self.running = False

    def task_context(self) -> TaskContext | None:
        if not self.running:
            return None
        deadline = self.floats[T0] + self.timeout if self.timeout is not None else None
        return TaskContext(self.start + self.ints[POS], self.attempt, deadline, self)

    def cancel_requested(self) -> bool:
        return bool(self.floats[CANCEL])


def _portable(failure: Failure) -> Failure:
    """The failure, with its exception replaced by a RemoteError if it would not round-trip."""
    error = failure.error
    try:
        pickle.loads(pickle.dumps(error, pickle.HIGHEST_PROTOCOL))
    except Exception:
        name = f"{type(error).__module__}.{type(error).__qualname__}"
        return Failure(RemoteError(f"{name}: {error}", name), failure.traceback)
    return failure


def _encode(
    final: bool, values: list[Any], durs: list[float] | tuple[Any, ...], nfail: int
) -> bytes:
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
    lock: Any,
    init: bytes | None,
    rate: tuple[Any, Any, float] | None = None,
) -> None:
    """Entry point of a worker process."""
    pace = _pacer(rate)
    # Ctrl-C reaches the whole process group; the pool decides what a signal means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(lifeline,), daemon=True).start()
    ints, floats = views(shared)
    progress = _Progress(ints, floats)
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
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if not data:
            return
        key, blob, mode, entries, kwargs, start, attempt, timeout, bad, seq = pickle.loads(data)
        if blob is not None:
            fns[key] = pickle.loads(blob)  # also when skipped: later units only send the key
        if seq:
            # Sent ahead, while the previous unit ran: another worker may have taken it back.
            with lock:
                skip = ints[REVOKED] == seq
                if not skip:
                    ints[STARTED] = seq
            if skip:
                conn.send_bytes(b"")
                continue
        progress.start = start
        progress.attempt = attempt
        progress.timeout = timeout
        progress.running = True
        # The parent may have sent this unit while the previous one ran: say that no call
        # of it has started yet (the parent reset these itself when the worker was idle).
        ints[POS] = -1
        ints[DONE] = 0
        if (
            timeout is None
            and pace is None
            and init_error is None
            and not bad
            and not kwargs
            and len(entries) > 1
        ):
            _run_batch(conn, ints, fns[key], mode == CALL_ITEM, entries)
        else:
            _run_unit(
                conn,
                ints,
                floats,
                fns[key],
                mode,
                entries,
                kwargs or {},
                timeout is not None,
                pace,
                init_error,
            )
        progress.running = False


def _run_unit(
    conn: Any,
    ints: Any,
    floats: Any,
    fn: Any,
    mode: int,
    entries: list[Any],
    kwargs: dict[str, Any],
    timed: bool,
    pace: Any,
    init_error: BaseException | None,
) -> None:
    """Run the calls of one unit, each timed on its own, and send their outcomes back.

    For units under a deadline (each call's start time is published for the parent), with
    per-call work (rate pacing, a failed initializer, arguments the parent could not pickle,
    keyword arguments) or of one call; other batches take ``_run_batch``.
    """
    clock = time.monotonic
    single = mode == CALL_ITEM
    values: list[Any] = []
    durs: list[float] = []
    nfail = 0
    n = len(entries)
    t0 = last = clock()
    for i, entry in enumerate(entries):
        if pace is not None:
            pace()
            t0 = clock()
        ints[POS] = i
        if timed:
            floats[T0] = t0
        try:
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
    ints[DONE] = n
    conn.send_bytes(_encode(True, values, durs, nfail))


def _run_batch(conn: Any, ints: Any, fn: Any, single: bool, entries: list[Any]) -> None:
    """Run a batch of tiny calls with no deadline: the per-call cost of tiny tasks.

    Each call costs one shared store saying which call runs (so a death is blamed on the
    right call) and an append. The clock is read once per group of calls, whose time is
    shared evenly among them; groups grow while calls are fast (up to ``MAX_GROUP`` calls of
    about ``GROUP_SECONDS`` in all) and shrink at once when they are slow, so a slow call's
    result still travels within ~1 ms.
    """
    clock = time.monotonic
    values: list[Any] = []
    append = values.append
    spans: list[Any] = []
    nfail = 0
    n = len(entries)
    pos = 0
    group = 1
    t0 = last = clock()
    while pos < n:
        end = min(n, pos + group)
        if single:
            for i in range(pos, end):
                ints[POS] = i
                try:
                    v = fn(entries[i])
                except BaseException as e:
                    v = _portable(failure_of(e))
                    nfail += 1
                append(v)
        else:
            for i in range(pos, end):
                ints[POS] = i
                try:
                    v = fn(*entries[i])
                except BaseException as e:
                    v = _portable(failure_of(e))
                    nfail += 1
                append(v)
        t1 = clock()
        k = end - pos
        pos = end
        each = (t1 - t0) / k
        spans += (k, each)
        group = min(2 * group, MAX_GROUP, int(GROUP_SECONDS / each) if each > 0 else MAX_GROUP)
        group = max(group, 1)
        t0 = t1
        if t1 - last >= FLUSH_SECONDS and pos < n:
            conn.send_bytes(_encode(False, values, tuple(spans), nfail))
            values = []
            append = values.append
            spans = []
            nfail = 0
            last = t0 = clock()
    ints[DONE] = n
    conn.send_bytes(_encode(True, values, tuple(spans), nfail))
