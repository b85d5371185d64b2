"""How a run stops early: a signal (drain, then stop at once), or an output that failed.

The first SIGINT or SIGTERM stops reading input, cancels the items read and queued (never
started: written as such, and a resume runs them) and lets the running items finish; a
second one stops at once and kills the running commands
(:class:`SignalWatch`). A write that fails (the reader of ``| head`` went away) stops the
run at once: nothing starts after it (:class:`Stopper`).
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

from .commands import children

if TYPE_CHECKING:
    from workpool import Pool

__all__ = ["SignalWatch", "Stopper"]


class SignalWatch:
    """Tells the user about SIGINT/SIGTERM and stops the input; the pool does the rest.

    The pool (``handle_signals=self.on_signal``) drains on the first signal and cancels on
    the second; it calls ``on_signal`` from its signal thread, which sees every signal at once
    even while the main thread blocks. The first signal also stops the input: ``stopped``, and
    the ``stop_fd`` pipe that wakes a reader blocked on a quiet pipe.
    """

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.first: int | None = None
        """The first signal received."""
        self.stopped = False
        """True once no more input should be read."""
        self.pool: Pool | None = None
        """The run's pool, once it exists: the first signal cancels its queued items."""
        self.stop_fd, self._stop_w = os.pipe()

    def stop_input(self) -> None:
        """Read no more input (from any thread); wakes a read waiting on a quiet pipe."""
        if not self.stopped:
            self.stopped = True
            os.write(self._stop_w, b"x")

    def on_signal(self, signum: int, count: int) -> None:
        name = signal.Signals(signum).name
        if count == 1:
            self.first = signum
            self.stop_input()
            if self.pool is not None:
                # The pool drains what it accepted; the run starts nothing new: the items
                # queued for the workers (read ahead) are cancelled, the running ones finish.
                self.pool.shutdown(wait=False, cancel_futures=True)
            msg = (
                f"workpool: {name} received: starting nothing new, finishing the running items "
                "(send it again to stop at once)\n"
            )
        else:
            msg = f"workpool: {name} received again: stopping now\n"
            # Kill the running commands now, from this (helper) thread: the main thread is
            # about to leave the pool, whose exit must not wait on workers still reaping them.
            children.kill_all()
        os.write(2, (("\n" if self.tty else "") + msg).encode())

    def close(self) -> None:
        for fd in (self.stop_fd, self._stop_w):
            os.close(fd)


class Stopper:
    """Stops a run whose output failed, at once: no item starts after the failed write.

    Called from the writer thread when a write (or a journal commit) fails, e.g. the reader
    of ``workpool run ... | head -n 1`` went away: the results can go nowhere, so the input
    stops, queued items are cancelled, running ones are cancelled (commands killed) and no
    command starts any more. The main thread then leaves the pool at its next result.
    """

    def __init__(self, pool: Pool, watch: SignalWatch) -> None:
        self.pool = pool
        self.watch = watch

    def __call__(self) -> None:
        children.kill_all()
        self.watch.stop_input()
        self.pool.shutdown(wait=False, cancel_futures=True, timeout=0)
