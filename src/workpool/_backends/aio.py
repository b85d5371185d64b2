"""The async backend: coroutines on an event loop, an asyncio task per worker.

Coroutine functions are awaited in the slot's own task, so ``workers`` coroutines run at
once on one loop without a thread per coroutine. The loop is the caller's (``AsyncPool``) or
the backend's own, in one background thread (``Pool(backend="async")``, for synchronous
programs). Plain functions given to it run on threads (a thread pool of the backend's), so
they never block the loop.

Stopping: a coroutine that times out or is cancelled is cancelled (``Task.cancel`` on the
slot's task, scheduled on the loop: ``stop`` never blocks); the engine delivers its
``TaskTimeout``/``TaskCancelled`` at once and a new slot keeps the pool's strength. A
coroutine that swallows the ``CancelledError`` runs on to its end, with its outcome
discarded and a warning logged; a plain function's thread cannot be stopped and is left to
finish, as on the thread backend.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import os
import queue
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from .._areader import cancel_requested
from .._log import logger
from .._units import CALL_ITEM, CALL_KWARGS, call_failed, failure_of, is_coroutine_function
from ..errors import TaskCancelled
from ._base import Backend, Host
from ._caps import Capabilities
from .thread import run_calls

if TYPE_CHECKING:
    from .._crew import Slot
    from .._units import Unit

__all__ = ["AsyncBackend"]

# Coroutines wait on I/O: 100 at once is the default, like an HTTP client's connection pool.
DEFAULT_WORKERS = 100


# How long a thread for plain functions stays idle before it exits, in a pool without an
# ``idle_timeout`` (one with it uses it): a burst's threads go, as a cached thread pool's do.
IDLE_THREAD_SECONDS = 60.0


class _Threads(concurrent.futures.Executor):
    """Daemon threads for plain functions, kept while idle and started on demand.

    Not a ``ThreadPoolExecutor``: its threads are joined at interpreter exit, and a plain
    call that timed out (abandoned: a thread cannot be stopped) would hold the exit up.
    A thread is idle again before its call's outcome is set: once the pool has every
    outcome, ``shutdown`` finds every thread that is not abandoned idle, and joins them.

    Idle threads retire: one idle for ``idle_timeout`` seconds (the pool's; without one,
    ``IDLE_THREAD_SECONDS``) exits, unless no more than ``keep`` (the pool's
    ``min_workers``) threads are idle. The idle list is a stack: the thread that became
    idle last is reused first, so a steady load keeps reusing the same threads (none is
    re-created) while those a burst left idle at the bottom time out.
    """

    def __init__(self, name: str, idle_timeout: float | None = None, keep: int = 0) -> None:
        self._name = name
        self._idle: list[tuple[queue.SimpleQueue[Any], threading.Thread]] = []
        self._lock = threading.Lock()
        self._count = 0
        self._closed = False
        self._idle_timeout = IDLE_THREAD_SECONDS if idle_timeout is None else idle_timeout
        self._keep = keep

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            if self._idle:
                jobs, _ = self._idle.pop()
            else:
                self._count += 1
                jobs = queue.SimpleQueue()
                threading.Thread(
                    target=self._serve,
                    args=(jobs,),
                    name=f"{self._name}-thread-{self._count}",
                    daemon=True,
                ).start()
        jobs.put((future, fn, args))
        return future

    def _serve(self, jobs: queue.SimpleQueue[Any]) -> None:
        me = threading.current_thread()
        entry = (jobs, me)
        idle_timeout = self._idle_timeout
        timeout: float | None = idle_timeout
        while True:
            try:
                job = jobs.get(timeout=timeout)
            except queue.Empty:
                with self._lock:
                    if entry not in self._idle:
                        timeout = None  # a submit took it and is putting its job in
                        continue
                    if len(self._idle) <= self._keep:
                        continue  # one of the last ``keep`` idle: it stays
                    self._idle.remove(entry)  # nobody took it: no job is on its way
                return
            timeout = idle_timeout
            if job is None:
                return
            future, fn, args = job
            job = None
            run = future.set_running_or_notify_cancel()  # False: cancelled before it ran
            error: BaseException | None = None
            value: Any = None
            if run:
                try:
                    value = fn(*args)
                except BaseException as e:
                    error = e
            fn = args = None  # nothing of the call stays alive while idle
            with self._lock:
                closed = self._closed
                if not closed:
                    self._idle.append(entry)
            if not run:
                pass
            elif error is None:
                future.set_result(value)
            else:
                future.set_exception(error)
            future = value = error = None
            if closed:
                return

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for jobs, _ in idle:
            jobs.put(None)
        me = threading.current_thread()
        for _, thread in idle:
            if thread is not me:
                thread.join()  # idle: it exits at once (abandoned calls are never waited for)


class _LoopThread:
    """An event loop running in a thread of its own, for pools used from synchronous code.

    Stopping it: tasks still running on it once the pool's workers ended are abandoned
    slots (a coroutine that swallowed its cancellation) or tasks such coroutines started.
    They are cancelled once more and given ``STOP_GRACE`` seconds to end; ``stop`` returns
    then at the latest. What still runs is named in a warning and runs on to its end (as
    the README says, its outcome discarded): the loop, in its daemon thread, is closed only
    after it, so that no task is destroyed while pending. One that never ends keeps the
    thread until the interpreter exits, as a plain call abandoned in its thread would.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()  # honours the event loop policy (uvloop's too)
        self._released = threading.Event()  # set once stop() need wait no longer
        self._grace = STOP_GRACE  # what stop() gives the tasks left on the loop
        ready = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(ready,), name=f"{name}-loop", daemon=True
        )
        self.thread.start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                _, pending = loop.run_until_complete(asyncio.wait(pending, timeout=self._grace))
            if pending:
                logger.warning(
                    "pool %r: shut down with %d coroutine(s) that ignored their "
                    "cancellation still running (%s); they run on to their end, on the "
                    "pool's loop thread",
                    self.name,
                    len(pending),
                    ", ".join(sorted(_describe(task) for task in pending)),
                )
                self._released.set()  # the shutdown does not wait for them
                while pending:
                    loop.run_until_complete(asyncio.wait(pending))
                    pending = asyncio.all_tasks(loop)  # (and what they started meanwhile)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
            self._released.set()

    def stop(self, late: bool = False) -> None:
        """Stop the loop; return once its thread ended, or runs on only for coroutines
        that ignored their cancellation (see the class). ``late``: the shutdown's deadline
        passed already: what is left gets ``LATE_GRACE`` seconds, not ``STOP_GRACE``, and
        a loop that a coroutine blocks (it does not await) is not waited for longer."""
        if late:
            self._grace = LATE_GRACE
        if self.thread is threading.current_thread():
            self.loop.stop()
            return
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:
            return  # closed already
        if not self._released.wait(LATE_STOP if late else None):
            logger.warning(
                "pool %r: its event loop did not stop after the shutdown's deadline (a "
                "coroutine blocks it: it does not await); the loop's thread stops when that "
                "coroutine returns",
                self.name,
            )
            return
        if self.loop.is_closed():
            self.thread.join()  # it is ending: closing the loop was its last step


# Seconds a loop thread that stops gives the tasks still on it (already cancelled once) to
# end after a second cancel, before the pool's shutdown goes on without them.
STOP_GRACE = 1.0
# The same once the shutdown's deadline passed (the pool was told to stop what runs).
LATE_GRACE = 0.1
# How long such a late stop waits for the loop to stop at all (a coroutine may block it).
LATE_STOP = 0.5


def _describe(task: asyncio.Task[Any]) -> str:
    """The task's name and where it waits: the innermost frame outside asyncio and
    workpool (the user's coroutine, e.g. ``stubborn() at app.py:12``)."""
    where = ""
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            filename = frame.f_code.co_filename
            if not filename.startswith(_SKIP_FRAMES):
                code = frame.f_code
                name = getattr(code, "co_qualname", code.co_name)
                where = f"{name}() at {filename}:{frame.f_lineno}"
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return f"task {task.get_name()!r}" + (f" in {where}" if where else "")


_SKIP_FRAMES = (
    os.path.dirname(asyncio.__file__) + os.sep,
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
)


class AsyncBackend(Backend):
    name = "async"

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        self._host: Host | None = None
        self._own: _LoopThread | None = None
        self._loop: Any = None
        self._threads: _Threads | None = None
        self._threads_lock = threading.Lock()
        self._coro_fn: Any = None  # the last unit's function, known to be a coroutine function

    def open(self, host: Host) -> Capabilities:
        self._host = host
        if host.loop is not None:
            self._loop = host.loop
        else:
            self._own = _LoopThread(host.name)
            self._loop = self._own.loop
        return Capabilities(
            default_workers=DEFAULT_WORKERS,
            stop="cancel",
            driver="asyncio",
            coroutines=True,
            claims=True,  # coroutines and thread calls claim a unit's calls from unit.it
            # A coroutine's time includes the turns of every other one on the loop, so tiny
            # coroutines look slower than they are; a longer unit still blocks nothing (the
            # loop runs the others meanwhile), and fewer units cost less on the engine: each
            # unit's end is a few microseconds of the loop's time per worker, spent while
            # every other coroutine waits (A2: 2,000 x 10 ms on 64 workers runs ~1 % closer
            # to the bare-task floor at 40 ms than at 20 ms). The price: a unit's results
            # are handed back when its last call ends (``chunksize=1`` for each at once).
            unit_seconds=0.04,
        )

    def event_loop(self) -> Any:
        return self._loop

    def arun(self, slot: Slot, unit: Unit) -> Coroutine[Any, Any, None]:
        fn = unit.fn
        if fn is not self._coro_fn:
            if not is_coroutine_function(fn):
                return self._in_thread(slot, unit)
            self._coro_fn = fn  # the function of the last unit: most units share it
        return self._await_calls(slot, unit)

    async def _await_calls(self, slot: Slot, unit: Unit) -> None:
        """Await the unit's coroutines one after another in this slot's task."""
        fn = unit.fn
        entries = unit.entries
        out = unit.out.append
        durs = unit.durs.append
        assert self._host is not None
        clock = self._host.now
        mode = unit.mode
        kwargs = unit.kwargs or {}
        t0 = slot.t0 = clock()
        for i in unit.it:
            try:
                if mode == CALL_ITEM:
                    v = await fn(entries[i])
                elif mode == CALL_KWARGS:
                    v = await fn(*entries[i], **kwargs)
                else:
                    v = await fn(*entries[i])
            except asyncio.CancelledError as e:
                if slot.abandoned:
                    return  # timed out or cancelled: the engine settled it already
                if cancel_requested():
                    raise  # this slot's task is being cancelled (the loop is going away)
                v = call_failed(unit, e)  # the coroutine's own CancelledError: its failure
            except BaseException as e:
                v = call_failed(unit, e)
            if slot.abandoned:
                logger.warning(
                    "pool %r: task %d ran on after it was cancelled (it swallowed the "
                    "CancelledError); its outcome was discarded",
                    self._host.name,
                    unit.start + i,
                )
                return
            t1 = clock()
            durs(t1 - t0)
            out(v)
            slot.t0 = t0 = t1

    async def _in_thread(self, slot: Slot, unit: Unit) -> None:
        """Run a unit of plain functions in a thread, without blocking the loop."""
        threads = self._threads
        if threads is None:
            with self._threads_lock:
                if self._threads is None:
                    owner = slot.owner  # the engine: the pool's elastic sizing
                    self._threads = _Threads(owner.name, owner.idle_timeout, owner.min_workers)
                threads = self._threads
        context = contextvars.copy_context()  # current_task() in the thread sees this slot
        try:
            await asyncio.get_running_loop().run_in_executor(
                threads, context.run, run_calls, slot, unit
            )
        except asyncio.CancelledError:
            if slot.abandoned:
                return  # the thread goes on to its end; the engine settled the unit
            raise
        out = unit.out
        for i, value in enumerate(out):
            if asyncio.iscoroutine(value):
                # A plain function that returned a coroutine (a lambda around a coroutine
                # function): await it here, on the loop, as its outcome.
                try:
                    out[i] = await value
                except asyncio.CancelledError as e:
                    if slot.abandoned:
                        return
                    if not cancel_requested():
                        out[i] = failure_of(e)  # its own CancelledError: its failure
                        unit.nfail += 1
                        continue
                    # This task is cancelled from outside (the loop is going away): the
                    # coroutines not awaited yet end cancelled, unrun (never "never
                    # awaited"), so that the unit can be settled without this task.
                    for j in range(i, len(out)):
                        pending = out[j]
                        if j == i or asyncio.iscoroutine(pending):
                            if j > i:
                                pending.close()
                            stop = TaskCancelled(f"task {unit.start + j} was cancelled")
                            out[j] = failure_of(stop)
                            unit.nfail += 1
                    raise
                except BaseException as e:
                    out[i] = failure_of(e)
                    unit.nfail += 1

    def stop(self, slot: Slot) -> None:
        task = slot.task
        if task is None:
            return
        loop = self._loop
        if asyncio.events._get_running_loop() is loop:
            task.cancel()
        else:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:
                pass  # the loop is closed: the task is gone

    async def aclose(self) -> None:
        if self._threads is None and self._own is None:
            self.close()  # nothing to wait for: no thread needed (none is started)
            return
        await super().aclose()

    def close(self) -> None:
        threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown()  # abandoned calls may still run: never waited for
        if self._own is not None:
            host = self._host
            self._own.stop(late=host is not None and host.closed_hard)
