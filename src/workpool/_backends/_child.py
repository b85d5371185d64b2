"""The loop of a worker process (process backend).

Protocol, over one duplex pipe per worker (message formats: ``_wire``)::

    parent ── run message ──▶ child        b"" asks the child to exit, FORGET to drop its functions
    parent ◀── results ── child            b"": a unit sent ahead was skipped (taken back)

A run message carries one unit: the function (by key; its pickled bytes only the first time
this child gets it, unpickled when first used), how to call it, and the entries. The parent
keeps the child's set of functions small: a message may name keys to drop (``evict``), and an
idle worker is told to forget them all, so no task's function outlives its use here. The child
runs the entries in order and sends results back in groups: at the end of the unit, and
whenever ~1 ms has passed since the last send, so a slow call's result travels at once while
tiny calls share a message. ``durations`` is a list with one float per value, or, for calls
timed in groups (see ``_run_batch``), a tuple ``(count, seconds per call, ...)``; the parent
expands it with ``add_durations``.

Progress goes to a few slots of shared memory that the parent reads without a message
(``views`` gives both sides the same typed views of it): what the child is doing (``PHASE``),
at which position of the unit (``POS``), the running call's start time (``T0``, monotonic
seconds; written only when a deadline applies), a cancel flag (``CANCEL``) and whether the
worker got ready (``READY``: its initializer ran, or failed). When the worker dies, the parent
knows from them whom to blame:

=============  =============================================  ==============================
``PHASE``      the child is                                   a death fails
=============  =============================================  ==============================
IDLE           waiting for a unit (or between two)            nothing: the unit is requeued
LOADING_FN     unpickling the unit's function                 every call of the unit
LOADING_ARGS   unpickling the arguments of call ``POS``       that call
RUNNING        running call ``POS``                           that call
SENDING        pickling the result of call ``POS``, or        that call
               sending a group of results ending there
=============  =============================================  ==============================

An error (not a death) while unpickling a function or arguments, or pickling a result, fails
just the calls concerned, with a message that says so; the worker lives on.

A unit sent ahead (while the previous one runs; its message carries a number ``seq > 0``) can
be taken back by the parent for an idle worker until this child starts it: under a lock shared
with the parent, the child either marks it started (``STARTED = seq``) or finds it taken back
(``REVOKED == seq``), skips it and answers with an empty message. Until it is started, what
the other slots say is about the unit before it.

Workers leave stopping to the pool: SIGINT and SIGTERM, which a terminal, ``kill -TERM -PGID``
or systemd send to every process of the program, are ignored by the worker (a no-op handler,
so programs a task runs get the default ones back). The pool drains or kills its workers.

A second pipe, the *lifeline*, is never written: when the parent dies,
reading it returns EOF and the child exits, so no worker outlives its pool.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import pickle
import signal
import sys
import threading
import time
import types
from itertools import repeat
from typing import Any, NoReturn

import cloudpickle

from .._context import TaskContext, set_source
from .._units import CALL_ITEM, Failure, failure_of, is_coroutine_function
from ..errors import WorkpoolError
from ._wire import (
    PROTOCOL,
    BadArgument,
    Unloadable,
    describe,
    descriptions,
    dumps_plain,
    finish,
    load_stream,
    portable,
    split,
)

__all__ = ["FORGET", "Initializer", "main"]

# The slots of the shared progress memory. POS, PHASE, STARTED, REVOKED, READY: int64 view;
# T0, CANCEL: double view. STARTED / REVOKED: the number of the last unit sent ahead that this
# child started / that the parent took back (see ProcessBackend.revoke).
POS, T0, PHASE, CANCEL, STARTED, REVOKED, READY = range(7)
SLOTS = 7
# PHASE values (see the module doc).
IDLE, LOADING_FN, LOADING_ARGS, RUNNING, SENDING = range(5)
# READY values: the initializer has not finished yet, it ran (or there is none), it failed.
STARTING, INITIALIZED, INIT_FAILED = range(3)
# The message that tells an idle worker to drop every function it holds.
FORGET = b"F"
# Results of tiny calls are sent together until this much time passed since the last send:
# fewer messages for tiny tasks, and at most ~1 ms of finished work is lost if the child dies.
FLUSH_SECONDS = 0.001
# Calls of a batch without a deadline are timed in groups that take about this long; a group
# has at most MAX_GROUP calls.
GROUP_SECONDS = 0.0001
MAX_GROUP = 256
# A unit that has run this long (ten times what units are sized for) with calls left gives
# them back unstarted, when the parent allows it (the unit's ``give_back``): its calls
# turned slow, and the rest goes to whichever worker is free, not after them in this one;
# the results so far reach the consumer (and a journal) now, not when the last call ends.
GIVE_BACK_SECONDS = 0.02


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


class Initializer:
    """The pool's ``initializer`` and ``initargs``, on their way to a new worker.

    It is an argument of the worker's ``Process``, so multiprocessing sends it while it starts
    the process: a forked worker inherits it as it is; for spawn and the fork server, it is
    pickled then (``__reduce__``), when multiprocessing lets its own objects travel (Lock,
    Queue, Event, Value, a logging QueueHandler's queue...): with cloudpickle and main-script
    functions by reference (``_wire.dumps_for_spawn``), multiprocessing's objects by
    multiprocessing. The worker unpickles it in ``load``, where a failure fails its tasks with
    the reason instead of killing it.
    """

    def __init__(self, fn: Any, args: tuple[Any, ...], main_by_reference: bool) -> None:
        self.fn = fn
        self.args = args
        self.main_by_reference = main_by_reference
        self.received: tuple[bytes, list[Any]] | None = None

    def dumps(self) -> tuple[bytes, list[Any]]:
        from ._wire import dumps_for_spawn

        return dumps_for_spawn((self.fn, self.args), self.main_by_reference)

    def __reduce__(self) -> Any:
        try:
            blob, aside = self.dumps()
        except Exception as e:
            raise pickle.PicklingError(
                f"the initializer and initargs could not be sent to a worker process: "
                f"{type(e).__name__}: {e}"
            ) from e
        return (_received_initializer, (blob, aside))

    def load(self) -> tuple[Any, tuple[Any, ...]]:
        if self.received is None:
            return self.fn, self.args  # inherited by a forked worker
        from ._wire import loads_for_spawn

        fn, args = loads_for_spawn(*self.received)
        return fn, args


def _received_initializer(blob: bytes, aside: list[Any]) -> Initializer:
    init = Initializer.__new__(Initializer)
    init.received = (blob, aside)
    return init


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


def _encode(
    ints: Any,
    final: bool,
    values: list[Any],
    durs: list[float] | tuple[Any, ...],
    nfail: int,
    base: int,
) -> memoryview:
    """A results message for ``values``, the outcomes of calls ``base, base + 1, ...``.

    Plain data goes whole; otherwise each value is pickled on its own, with ``POS`` naming it,
    so that a value that won't pickle fails alone (``PicklingError``), one whose pickling
    kills the worker is blamed for it, and one that won't unpickle in the parent fails alone
    there. PHASE is SENDING (set by the caller)."""
    buf = io.BytesIO()
    ends: list[int] | None = None
    resets: list[int] = []
    names: list[str] | None = None
    if not dumps_plain(values, buf):
        ends = []
        names = []
        pickler = pickle.Pickler(buf, PROTOCOL)
        for j, v in enumerate(values):
            ints[POS] = base + j
            if type(v) is types.CoroutineType:
                # A plain function that returned a coroutine (a lambda around a coroutine
                # function): its outcome is the coroutine's, run here as a coroutine
                # function's would be (not plain data: only this path sees one), and its
                # time is the call's.
                t0 = time.monotonic()
                try:
                    v = OnLoop.run(v)
                except BaseException as e:
                    v = portable(failure_of(e))
                    nfail += 1
                if _forked_copy:
                    _copy_returned()  # (it forked in the coroutine)
                if not isinstance(durs, list):
                    spans, durs = durs, []
                    add_durations(durs, spans)  # one per value, to add this one's time
                durs[j] += time.monotonic() - t0
            at = buf.tell()
            try:
                pickler.dump(v)
            except BaseException as e:  # also SystemExit from a __reduce__: this value fails
                buf.seek(at)
                buf.truncate()
                # A fresh pickler from here on: that one's memo has what was cut off.
                pickler = pickle.Pickler(buf, PROTOCOL)
                resets.append(j)
                if _by_value(v, buf):
                    resets.append(j + 1)  # (after a pickler of its own)
                else:
                    v = Failure(
                        pickle.PicklingError(
                            f"the task's {describe(v)} could not be pickled to send it back "
                            f"from the worker process: {type(e).__name__}: {e}"
                        ),
                        None,
                    )
                    nfail += 1
                    pickler.dump(v)
            ends.append(buf.tell())
            names.append(descriptions.get((type(v), False)) or describe(v))
        ints[POS] = base + len(values) - 1  # sending the group: blame its last call
    return finish(buf, (final, durs, nfail, ends, resets, names))


def _by_value(value: Any, buf: io.BytesIO) -> bool:
    """Pickle ``value`` with cloudpickle, which takes what the worker cannot name by value (an
    instance of a class that came to it by value: defined under the main guard, or in a
    function); False, and nothing written, if it won't pickle either."""
    at = buf.tell()
    try:
        cloudpickle.Pickler(buf, PROTOCOL).dump(value)
    except BaseException:
        buf.seek(at)
        buf.truncate()
        return False
    return True


def _send(
    conn: Any,
    ints: Any,
    final: bool,
    values: list[Any],
    durs: list[float] | tuple[Any, ...],
    nfail: int,
    base: int,
) -> None:
    ints[PHASE] = SENDING
    conn.send_bytes(_encode(ints, final, values, durs, nfail, base))
    if not final:
        ints[PHASE] = RUNNING
    # After the last message the parent may already have reset PHASE for the next unit:
    # write nothing it could mistake for that unit's progress (main sets IDLE, as it did).


def _watch_parent(lifeline: Any) -> None:
    try:
        lifeline.recv_bytes()
    except (EOFError, OSError):
        pass
    os._exit(70)  # the pool's process is gone: nobody will collect our results


class OnLoop:
    """A coroutine function made callable in this worker process: each call runs the
    coroutine to its end on the process's own event loop (made when first needed, kept
    for the worker's life). A timeout or cancel kills the process, as for any call."""

    __slots__ = ("fn",)
    _loop: Any = None

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return OnLoop.run(self.fn(*args, **kwargs))

    @staticmethod
    def run(coroutine: Any) -> Any:
        """Run ``coroutine`` to its end on this process's loop; its value."""
        loop = OnLoop._loop
        if loop is None:
            import asyncio

            loop = OnLoop._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
        return loop.run_until_complete(coroutine)


def _pacer(rate: tuple[Any, Any, float, float] | None) -> Any:
    """Wait for the pool's rate limit before a call: a token bucket shared by all workers.

    The parent paces when a unit is taken, but a fresh worker may take a while to import the
    task's module, so calls would bunch up; this paces the calls themselves. ``next_start``
    is the bucket's theoretical start time of the next call (GCRA, as in the engine) and
    ``slack`` what a burst allows ahead of it: ``(burst - 1) * interval``.
    """
    if rate is None:
        return None
    lock, next_start, interval, slack = rate

    def pace() -> None:
        # Waiting with the lock held queues the other workers behind this one, and the next
        # start is set from when this call really starts (after any oversleep), so starts are
        # never closer than the bucket allows.
        with lock:
            wait = next_start.value - slack - time.monotonic()  # CLOCK_MONOTONIC: one clock
            if wait > 0:
                time.sleep(wait)  # the rate limit itself: waiting is the point
            next_start.value = max(next_start.value, time.monotonic()) + interval

    return pace


def _ignore(signum: int, frame: Any) -> None:
    """SIGINT/SIGTERM in a worker: the pool decides what they mean (see the module doc)."""


def _leave_signals_to_the_pool() -> None:
    # A handler, not SIG_IGN: an ignored signal stays ignored in programs a task runs
    # (subprocess), a handled one is reset to the default there. siginterrupt(False): system
    # calls the signal interrupts are restarted, as they are when it is ignored.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _ignore)
        signal.siginterrupt(sig, False)
    # A forked worker inherits the pool's wakeup fd (handle_signals): a signal here must not
    # reach the pool's signal thread as if the pool had received it.
    signal.set_wakeup_fd(-1)


# Set in a process that a task forked (os.fork, a fork-context multiprocessing pool) and
# that returned from the task instead of ending with os._exit: see _keep_the_pipe.
_forked_copy = False
_worker_pid = 0


def _keep_the_pipe(conn: Any, lifeline: Any) -> None:
    """Let no process a task starts hold this worker's pipe open.

    The pool learns that its worker died (or that the kill of a timed-out task landed) when
    the pipe closes: a program the task started (``subprocess`` with ``close_fds=False``) or a
    process it forked, holding the pipe, would make it wait for that process too (for good,
    if it is a daemon). The pipe is not inherited across exec, and a forked child closes it.
    A forked child that returns from the task (it should have ended with ``os._exit``) exits
    before it sends anything: it would answer for the worker with the wrong results.
    """
    global _worker_pid
    _worker_pid = os.getpid()
    for end in (conn, lifeline):
        os.set_inheritable(end.fileno(), False)

    def in_forked_child() -> None:
        global _forked_copy
        _forked_copy = True
        for end in (conn, lifeline):
            with contextlib.suppress(OSError):
                end.close()

    os.register_at_fork(after_in_child=in_forked_child)


def _copy_returned() -> NoReturn:
    """A process a task forked returned from the task (see _keep_the_pipe): it ends here."""
    with contextlib.suppress(Exception):
        sys.stderr.write(
            f"workpool: process {os.getpid()}, forked by a task in worker process "
            f"{_worker_pid}, returned from the task; it exits now (a process forked with "
            "os.fork() must end with os._exit())\n"
        )
        sys.stderr.flush()
    os._exit(0)


def _forget_the_parent(parent_ends: tuple[Any, ...] | None) -> None:
    """A forked worker starts as a copy of the pool's process: let go of what is the parent's.

    Its ends of this worker's pipes (else the worker would hold its own lifeline open and
    outlive the pool), and the pools it had open: their drain-at-exit hook would wait, at this
    worker's exit, for work that only the parent's threads could finish."""
    if parent_ends is None:
        return
    for end in parent_ends:
        end.close()
    from .. import _lifecycle

    _lifecycle._at_fork_in_child()


def main(
    conn: Any,
    lifeline: Any,
    shared: Any,
    lock: Any,
    init: Initializer | None,
    rate: tuple[Any, Any, float, float] | None = None,
    parent_ends: tuple[Any, ...] | None = None,
) -> None:
    """Entry point of a worker process. ``parent_ends``: given to a forked worker only."""
    _forget_the_parent(parent_ends)
    _keep_the_pipe(conn, lifeline)
    _leave_signals_to_the_pool()
    pace = _pacer(rate)
    threading.Thread(target=_watch_parent, args=(lifeline,), daemon=True).start()
    ints, floats = views(shared)
    progress = _Progress(ints, floats)
    set_source(progress)
    init_error: BaseException | None = None
    if init is not None:
        try:
            initializer, initargs = init.load()
            initializer(*initargs)
        except BaseException as e:
            init_error = WorkpoolError(
                f"the worker initializer failed, so this worker cannot run tasks: "
                f"{type(e).__name__}: {e}"
            )
        del init
    ints[READY] = INIT_FAILED if init_error is not None else INITIALIZED
    fns: dict[int, Any] = {}
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if not data:
            return
        if data == FORGET:
            fns.clear()
            continue
        # In a function of its own, so that the unit's function, arguments and results are
        # let go when it returns, not kept until the next message; so is the message.
        _serve(conn, data, fns, ints, floats, lock, progress, pace, init_error)
        data = b""
        ints[PHASE] = IDLE


def _serve(
    conn: Any,
    data: bytes,
    fns: dict[int, Any],
    ints: Any,
    floats: Any,
    lock: Any,
    progress: _Progress,
    pace: Any,
    init_error: BaseException | None,
) -> None:
    """Run one unit (a run message)."""
    header, body = split(data)
    key, blob, mode, start, attempt, timeout, bad, seq, evict, n, ends, resets, give_back = header
    for old in evict:
        fns.pop(old, None)
    if blob is not None:
        fns[key] = blob  # unpickled when first used; also when skipped: later units use it
    if seq:
        # Sent ahead, while the previous unit ran: another worker may have taken it back.
        with lock:
            skip = ints[REVOKED] == seq
            if not skip:
                ints[STARTED] = seq
        if skip:
            conn.send_bytes(b"")
            return
    # The parent may have sent this unit while the previous one ran: say that no call of it
    # has started yet (the parent reset these itself when the worker was idle).
    ints[POS] = -1
    fn = fns[key]
    if type(fn) is bytes:
        ints[PHASE] = LOADING_FN
        try:
            fn = pickle.loads(fn)
        except BaseException as e:  # SystemExit too: this function fails, the worker lives
            fn = Unloadable(
                pickle.UnpicklingError(
                    f"the task's function could not be unpickled in the worker process: "
                    f"{type(e).__name__}: {e}"
                )
            )
        if is_coroutine_function(fn):
            fn = OnLoop(fn)
        fns[key] = fn
    ints[PHASE] = LOADING_ARGS
    entries, kwargs, bad = _entries(ints, body, ends, resets, n, start, mode, bad)
    del data, body
    error = init_error
    if error is None and type(fn) is Unloadable:
        error = fn.error
    progress.start = start
    progress.attempt = attempt
    progress.timeout = timeout
    progress.running = True
    ints[PHASE] = RUNNING
    if timeout is None and pace is None and error is None and not bad and not kwargs and n > 1:
        _run_batch(conn, ints, fn, mode == CALL_ITEM, entries, give_back)
    else:
        _run_unit(
            conn, ints, floats, fn, mode, entries, kwargs or {}, timeout, pace, error, give_back
        )
    progress.running = False


def _entries(
    ints: Any,
    body: memoryview,
    ends: list[int] | None,
    resets: list[int],
    n: int,
    start: int,
    mode: int,
    bad: bool,
) -> tuple[list[Any], dict[str, Any] | None, bool]:
    """Unpickle a unit's entries and keyword arguments; an entry that won't unpickle becomes
    a BadArgument (and ``bad`` turns true). A stream publishes each entry's position while it
    is loaded, so a death there is blamed on it."""
    what = "argument" if mode == CALL_ITEM else "arguments"
    if ends is None:
        try:
            entries, kwargs = pickle.loads(body)
            return entries, kwargs, bad
        except BaseException as e:
            tasks = f"task {start}" if n == 1 else f"tasks {start}..{start + n - 1}"
            error = pickle.UnpicklingError(
                f"the {what} of {tasks} could not be unpickled in the worker process: "
                f"{type(e).__name__}: {e}"
            )
            return [BadArgument(error)] * n, None, True
    entries, failed = load_stream(body, ends, resets, ints, POS)
    for i, cause in failed.items():
        entries[i] = BadArgument(
            pickle.UnpicklingError(
                f"the {what} of task {start + i} could not be unpickled in the worker "
                f"process: {type(cause).__name__}: {cause}"
            )
        )
        bad = True
    return entries, None, bad


def _run_unit(
    conn: Any,
    ints: Any,
    floats: Any,
    fn: Any,
    mode: int,
    entries: list[Any],
    kwargs: dict[str, Any],
    timeout: float | None,
    pace: Any,
    error: BaseException | None,
    give_back: bool,
) -> None:
    """Run the calls of one unit, each timed on its own, and send their outcomes back.

    For units under a deadline (each call's start time is published for the parent), with
    per-call work (rate pacing, a failed initializer or function, arguments that could not
    travel, keyword arguments) or of one call; other batches take ``_run_batch``. With
    ``give_back``, the calls left once the unit has run ``GIVE_BACK_SECONDS`` are not run:
    the last message has fewer outcomes than the unit has calls.
    """
    clock = time.monotonic
    single = mode == CALL_ITEM
    timed = timeout is not None
    values: list[Any] = []
    durs: list[float] = []
    nfail = 0
    n = len(entries)
    t0 = last = clock()
    give_back_at = t0 + GIVE_BACK_SECONDS if give_back else math.inf
    for i, entry in enumerate(entries):
        if t0 >= give_back_at:
            n = i
            break
        if pace is not None:
            pace()
            t0 = clock()
        ints[POS] = i
        if timed:
            floats[T0] = t0
        try:
            if error is not None:
                raise error
            if type(entry) is BadArgument:
                raise entry.error
            if single:
                v = fn(entry)
            else:
                v = fn(*entry, **kwargs)
        except BaseException as e:
            v = portable(failure_of(e))
            nfail += 1
        t1 = clock()
        if _forked_copy:
            _copy_returned()
        values.append(v)
        durs.append(t1 - t0)
        t0 = t1
        if t1 - last >= FLUSH_SECONDS and i + 1 < n:
            _send(conn, ints, False, values, durs, nfail, i + 1 - len(values))
            values = []
            durs = []
            nfail = 0
            last = t0 = clock()
    _send(conn, ints, True, values, durs, nfail, n - len(values))


def _run_batch(
    conn: Any, ints: Any, fn: Any, single: bool, entries: list[Any], give_back: bool
) -> None:
    """Run a batch of tiny calls with no deadline: the per-call cost of tiny tasks.

    Each call costs one shared store saying which call runs (so a death is blamed on the
    right call) and an append. The clock is read once per group of calls, whose time is
    shared evenly among them; groups grow while calls are fast (up to ``MAX_GROUP`` calls of
    about ``GROUP_SECONDS`` in all) and shrink at once when they are slow, so a slow call's
    result still travels within ~1 ms. ``give_back``: as in ``_run_unit``; a group sees the
    time through ``_late``, which the watchdog sets (a flag read per call costs less than
    the clock).
    """
    global _late
    clock = time.monotonic
    values: list[Any] = []
    append = values.append
    spans: list[Any] = []
    nfail = 0
    n = len(entries)
    pos = 0
    group = 1
    t0 = last = clock()
    _late = False
    if give_back:
        _watchdog.watch(t0 + GIVE_BACK_SECONDS)
    try:
        while pos < n:
            end = min(n, pos + group)
            before = len(values)
            if single:
                for i in range(pos, end):
                    if _late:
                        break
                    ints[POS] = i
                    try:
                        v = fn(entries[i])
                    except BaseException as e:
                        v = portable(failure_of(e))
                        nfail += 1
                    append(v)
            else:
                for i in range(pos, end):
                    if _late:
                        break
                    ints[POS] = i
                    try:
                        v = fn(*entries[i])
                    except BaseException as e:
                        v = portable(failure_of(e))
                        nfail += 1
                    append(v)
            t1 = clock()
            if _forked_copy:
                _copy_returned()  # (checked once a group: ~0.1 ms of calls at most)
            k = len(values) - before
            pos += k
            if k:
                each = (t1 - t0) / k
                spans += (k, each)
                group = min(
                    2 * group, MAX_GROUP, int(GROUP_SECONDS / each) if each > 0 else MAX_GROUP
                )
                group = max(group, 1)
            t0 = t1
            if _late and pos < n:
                if pos and give_back:
                    n = pos  # the rest goes back unstarted
                    break
                _late = False  # (set for the unit before: this one runs a call first)
            if t1 - last >= FLUSH_SECONDS and pos < n:
                _send(conn, ints, False, values, tuple(spans), nfail, pos - len(values))
                values = []
                append = values.append
                spans = []
                nfail = 0
                last = t0 = clock()
    finally:
        if give_back:
            _watchdog.watch(None)
    _send(conn, ints, True, values, tuple(spans), nfail, n - len(values))


# Set by the watchdog once a unit that may give back its rest has run GIVE_BACK_SECONDS.
_late = False


class _Watchdog:
    """A thread that sets ``_late`` once the unit it watches has run past its due time: it
    starts with the first such unit and then looks every ``GIVE_BACK_SECONDS`` / 2 (a
    sleeping thread: nothing is asked of the unit's own thread, whose calls only read the
    flag)."""

    def __init__(self) -> None:
        self.due: float | None = None
        self._thread: threading.Thread | None = None

    def watch(self, due: float | None) -> None:
        """Watch a unit until ``due`` (monotonic seconds); None: it ended."""
        self.due = due
        if due is not None and self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="workpool-give-back", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        global _late
        clock = time.monotonic
        while True:
            time.sleep(GIVE_BACK_SECONDS / 2)
            due = self.due
            if due is not None and clock() >= due:
                _late = True  # (a unit that just started may see it: it runs a call first)


_watchdog = _Watchdog()
