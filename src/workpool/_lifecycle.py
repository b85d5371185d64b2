"""The lifecycle of a pool: close, join, shutdown (drain or abort) and its report.

What ``Pool``, ``AsyncPool``, a ``Pipeline`` and the signal guard drive. It owns the
shutdown's own state (started, finished, the report, the signal that caused it) and the
process-wide duties: pools still open at interpreter exit are drained first (as
``ThreadPoolExecutor`` does: accepted work is never silently dropped), and a forked child's
copies of its parent's pools are closed and left alone.

Three callers must never wait here, and do not:

- a signal handler that interrupted the pool's own code (Python runs handlers between two
  bytecodes of the main thread, wherever it is: maybe holding the engine's lock);
- a task of the pool itself (a drain would wait for that very task);
- a forked child (the workers of its copy live in the parent).

They close the pool, start the drain in a helper thread, and get a report that says the drain
has not finished.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._log import logger
from ._timers import RETRY
from ._units import WAITING
from .errors import WorkpoolError

if TYPE_CHECKING:
    from ._crew import Slot
    from ._engine import Engine
    from ._reports import ShutdownReport

__all__ = ["Lifecycle"]


class Lifecycle:
    """Close, join, shutdown and abort one engine."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = engine._lock
        self._pid = os.getpid()  # a forked child holds a copy it must not use
        self._close_done = False  # close() woke what waits on the intake
        self._closed_at_exit = False  # closed by the exit-time drain, or made after it
        self._shutdown_started = False
        self._shutdown_done = threading.Event()
        self._report: ShutdownReport | None = None
        self.interrupted_by: int | None = None  # signal number, when a signal closed the pool
        self.interrupt_reported = False  # Interrupted was raised to the user already
        # The second signal, which cancelled the work (an AsyncPool's loop handler).
        self.second_signal: int | None = None
        if _exiting:
            # The exit-time drain already ran: nothing would ever drain this pool.
            self._closed_at_exit = self._close_done = self._shutdown_started = True
            engine.closed = True
            self._shutdown_done.set()
        else:
            _live.add(engine)

    # ------------------------------------------------------------------ who is calling

    def forked(self) -> bool:
        return self._pid != os.getpid()

    def interrupted_inside(self) -> bool:
        """True when the calling thread holds the engine lock, or this is a forked copy.

        Nothing in the pool takes its lock twice, so the first only happens when a signal
        handler (or the garbage collector) runs in a thread that was inside the pool's own
        code, and calls back into the pool.
        """
        return self._lock._is_owned() or self.forked()  # type: ignore[attr-defined]

    def in_own_task(self) -> bool:
        """True when called from a task of this pool (see ``Slot.is_current``)."""
        return self._engine.own_slot() is not None

    def closed_message(self) -> str:
        name = self._engine.name
        if self.forked():
            return (
                f"pool {name!r} belongs to the parent process (pid {self._pid}) that forked "
                "this one, where its workers run; create a new pool in this process"
            )
        if self._closed_at_exit:
            return (
                f"pool {name!r} cannot accept work after interpreter shutdown began "
                "(nothing would run or drain it)"
            )
        if self.interrupted_by is not None:
            return f"pool {name!r} is draining after signal {self.interrupted_by}"
        return f"pool {name!r} is closed and accepts no more work"

    # ------------------------------------------------------------------ close / join

    def close(self) -> None:
        """Stop accepting work (idempotent, from any thread, a signal handler included)."""
        engine = self._engine
        if self.interrupted_inside():
            self._close_later()
            return
        with self._lock:
            engine.closed = True
            if not self._close_done:
                self._close_done = True
                engine.close_intake()

    def _close_later(self) -> None:
        """Close without taking the lock: closed from now on (one store, read by every
        intake path), and a helper thread wakes what waits once the lock is free."""
        self._engine.closed = True
        if self.forked():
            return  # nothing of a forked copy waits here
        try:
            threading.Thread(
                target=self.close, name=f"{self._engine.name}-close", daemon=True
            ).start()
        except RuntimeError:
            pass  # interpreter shutdown: the exit-time drain closes it anyway

    def close_when_dropped(self) -> None:
        """Shut down because the Pool object was garbage-collected: what it accepted still
        runs, then its workers and the backend's resources (a loop thread, a cluster) go.

        The collector may run this in any thread, also in one inside the pool's own code:
        so it only stores ``closed`` and leaves the rest to a helper thread.
        """
        if self.forked() or self._shutdown_started:
            return  # (a pool shut down already, by its with block say: nothing left to do)
        self._engine.closed = True
        try:
            threading.Thread(
                target=self.shutdown, name=f"{self._engine.name}-shutdown", daemon=True
            ).start()
        except RuntimeError:
            pass  # interpreter shutdown: the exit-time drain shuts it down anyway

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every accepted task finished; False on timeout (or in a forked copy)."""
        if self.forked():
            return False
        self.check_not_own_task("join()")
        return self._engine.wait_drained(timeout)

    def check_not_own_task(self, what: str) -> None:
        """``what`` waits for every task: from one of them it would wait for itself."""
        if self.in_own_task():
            raise WorkpoolError(own_task_message(f"pool {self._engine.name!r}", what))

    # ------------------------------------------------------------------ shutdown

    def shutdown(
        self, wait: bool = True, *, cancel_futures: bool = False, timeout: float | None = None
    ) -> ShutdownReport:
        """Close, then drain (see ``Pool.shutdown``); idempotent."""
        if self.interrupted_inside():
            self.close()
            if not self.forked():
                threading.Thread(
                    target=self.shutdown,
                    kwargs={"cancel_futures": cancel_futures, "timeout": timeout},
                    name=f"{self._engine.name}-shutdown",
                    daemon=True,
                ).start()
            return self.unlocked_report()
        if wait and self.in_own_task():
            wait = False  # it would wait for itself
        engine = self._engine
        first = self.begin_shutdown(cancel_futures)
        if not wait:
            if first:
                threading.Thread(
                    target=self.drain,
                    args=(timeout,),
                    name=f"{engine.name}-shutdown",
                    daemon=True,
                ).start()
            else:
                later_shutdown(self._shutdown_done, timeout, self.abort, engine.name, wait)
            # Finished only when the drain had ended already (its own report, then).
            return self.report(finished=self._shutdown_done.is_set())
        if first:
            self.drain(timeout)
        elif later_shutdown(self._shutdown_done, timeout, self.abort, engine.name, wait):
            return self.report(finished=False)
        return self.report(finished=self._shutdown_done.is_set())

    def drain(self, timeout: float | None) -> None:
        """Wait for the work (up to ``timeout``), stop what is left, then the workers.

        The waits are this method's; the steps between them (``stop_workers``,
        ``finish``) are shared with the async face, which awaits instead.
        """
        try:
            drained = self._engine.wait_drained(timeout)
            if not drained:
                self.abort()  # the deadline passed: cancel what waits, stop what runs
            self._stop(drained)
        except BaseException:  # interrupted: the drain still ends (see stop_interrupted)
            stop_interrupted(self.abort, lambda: self._stop(False), self._engine.name)
            raise

    def _stop(self, drained: bool) -> None:
        """The work is done or stopped: stop the workers, close the backend, finish."""
        engine = self._engine
        slots, timer_thread = self.stop_workers()
        engine.driver.join(slots)
        if timer_thread is not None and timer_thread is not threading.current_thread():
            timer_thread.join()
        engine.backend.close()
        self.finish(drained)

    def stop_workers(self) -> tuple[list[Slot], threading.Thread | None]:
        """With the work done (or stopped): tell every worker to exit. Returns the slots and
        the timer thread to wait for before closing the backend."""
        engine = self._engine
        with self._lock:
            engine.close_intake()  # wake every parked worker: with nothing left, they exit
            slots = [s for s in engine.crew.started if not s.abandoned]
            # Only retries still waiting matter; deadline and idle timers can go.
            engine.timers.keep(lambda kind, unit: kind == RETRY and unit.state == WAITING)
            return slots, engine.timers.thread()

    def finish(self, drained: bool) -> None:
        """The backend is closed: the shutdown is over."""
        # Running work was stopped (abort: a deadline, a second signal): the drain, whichever
        # call started it, did not finish the work; every report of it says so.
        self._report = self._build_report(finished=drained and not self._engine.closed_hard)
        self._shutdown_done.set()
        _live.discard(self._engine)

    def begin_shutdown(self, cancel_futures: bool) -> bool:
        """Close (and cancel the queued work if asked); True for the first shutdown."""
        self.close()
        engine = self._engine
        with self._lock:
            first = not self._shutdown_started
            self._shutdown_started = True
            deliveries = engine.cancel_queued() if cancel_futures else []
        engine.deliver(deliveries)
        return first

    def cancel_queued(self) -> None:
        """Close and cancel every queued task now (running ones go on); not a shutdown."""
        self.close()
        engine = self._engine
        with self._lock:
            deliveries = engine.cancel_queued()
        engine.deliver(deliveries)

    def abort(self) -> None:
        """Close, cancel every queued task and stop every running one, now."""
        engine = self._engine
        self.close()
        with self._lock:
            engine.closed_hard = True
            deliveries = engine.cancel_queued()
            deliveries += engine.stop_running()
        engine.deliver(deliveries)

    def settle(self, timeout: float) -> None:
        """After ``abort``: wait (up to ``timeout``) until the stopped work has settled (the
        tasks of a killed worker process settle once its slot sees it gone)."""
        self._engine.wait_drained(timeout)

    def abandon(self) -> None:
        """Nothing will run this pool's workers again (the event loop of an AsyncPool ended
        before the pool was shut down): close it, and say what never finished instead of
        waiting for it. Its tasks' futures belong to that closed loop: they are left as
        they are."""
        engine = self._engine
        self.close()
        with self._lock:
            left, running = engine.ledger.queued, engine.ledger.running
        if left or running:
            logger.warning(
                "pool %r: its event loop stopped before the pool was shut down; %d queued "
                "and %d running task(s) never finished (leave `async with` or await "
                "shutdown() before the loop ends)",
                engine.name,
                left,
                running,
            )
        self._shutdown_done.set()
        _live.discard(engine)

    @property
    def shutdown_started(self) -> bool:
        return self._shutdown_started

    def shutdown_done(self) -> bool:
        return self._shutdown_done.is_set()

    def wait_shutdown(self, timeout: float | None = None) -> ShutdownReport | None:
        """Wait for a shutdown started elsewhere; its report, or None if still running."""
        if self._shutdown_done.wait(timeout):
            return self._report
        return None

    def on_shutdown_done(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` from the drain's thread once the shutdown finished."""
        threading.Thread(
            target=lambda: (self._shutdown_done.wait(), callback()),
            name=f"{self._engine.name}-shutdown-watch",
            daemon=True,
        ).start()

    # ------------------------------------------------------------------ reports

    def report(self, finished: bool) -> ShutdownReport:
        if finished and self._report is not None:
            return self._report
        return self._build_report(finished=finished and self._shutdown_done.is_set())

    def _build_report(self, finished: bool) -> ShutdownReport:
        with self._lock:
            return self._engine.ledger.report(finished)

    def unlocked_report(self) -> ShutdownReport:
        """A report read without the lock, for callers that must not wait for it: counts
        may be a moment apart, and it says the drain has not finished."""
        return self._engine.ledger.report(False)


def stop_interrupted(abort: Callable[[], object], stop: Callable[[], object], name: str) -> None:
    """A drain was interrupted (Ctrl-C in the caller's wait, a second signal's Interrupted;
    the caller raises it on): the shutdown must still end, or every later shutdown (the with
    block's exit, the exit-time drain) would wait for it for ever. ``abort()`` stops what is
    left, as an exception in the with body does; then ``stop()`` ends the drain, quickly:
    nothing is left to wait for. Interrupted again, it goes on in a thread."""
    abort()
    try:
        stop()
    except BaseException:
        threading.Thread(target=stop, name=f"{name}-shutdown", daemon=True).start()
        raise


def later_shutdown(
    done: threading.Event,
    timeout: float | None,
    abort: Callable[[], object],
    name: str,
    wait: bool,
) -> bool:
    """A shutdown after an earlier one, whose drain runs (``done`` once it ended): this
    call's own ``timeout`` still holds. At it, ``abort()`` stops what is left, and that drain
    then ends at once (cut short, as a first shutdown's deadline would have cut it). With
    ``wait``, waits for the drain and returns True when this deadline cut it; without, the
    deadline is kept in a helper thread (at once for 0) and it returns False."""
    if wait:
        if done.wait(timeout):
            return False
        abort()
        done.wait()
        return True
    if timeout == 0:
        abort()
    elif timeout is not None:
        threading.Thread(
            target=lambda: done.wait(timeout) or abort(),
            name=f"{name}-shutdown-deadline",
            daemon=True,
        ).start()
    return False


# Pools still open when the interpreter exits are drained first. Workers are daemon threads so
# that a thread abandoned in a hung call cannot block the exit.
_live: weakref.WeakSet[Engine] = weakref.WeakSet()
_exiting = False  # the exit-time drain ran: a pool made now could never be drained


def _drain_at_exit() -> None:
    global _exiting
    _exiting = True
    for engine in list(_live):
        life = engine.lifecycle
        life._closed_at_exit = True
        if life.forked():
            continue
        if not engine.driver.can_run():
            life.abandon()
            continue
        life.shutdown(wait=True)


def _at_fork_in_child() -> None:
    # A forked child holds copies of the parent's pools, without their worker threads (or
    # with the parent's worker processes, which are not its own): using or draining one
    # could only hang. They are closed copies from now on, and the exit-time drain skips
    # them. Only plain stores here: a lock copied while another thread held it stays held.
    for engine in list(_live):
        engine.closed = True
    _live.clear()


_register: Callable[[Callable[[], None]], None] = getattr(
    threading, "_register_atexit", lambda fn: None
)
_register(_drain_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_at_fork_in_child)


def own_task_message(who: str, what: str) -> str:
    """The error of a wait for every task (``join``) called from one of those tasks."""
    return (
        f"{who}: {what} was called from one of its own tasks, and would wait for that task "
        "too, for ever; wait for the tasks you need instead (their results), or shut down "
        "(which does not wait for the task that calls it)"
    )


def not_picklable(owner: object) -> str:
    """Why a pool or a pipeline cannot be pickled (sent to another process)."""
    kind = type(owner).__name__
    article = "an" if kind[0] in "AEIOU" else "a"
    return (
        f"{article} {kind} cannot be pickled (nor copied): it lives in the process that "
        "made it, and a task in a "
        f"worker process (or on a Dask worker) cannot reach it; pass what the task needs "
        f"instead, and submit follow-up work from this process (or open a {kind} inside the "
        "task)"
    )
