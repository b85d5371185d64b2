"""``handle_signals=True``: drain on the first SIGINT/SIGTERM, cancel on the second.

Two traps shape this module. A Python signal handler runs in the main thread between two
bytecodes, possibly while that thread holds one of the engine's locks, so it must take no
lock. And the OS may deliver a process signal to any thread: if it lands on a worker while the
main thread blocks in a system call (reading a pipe of input), the Python handler runs only
when that call returns, which may be never. So the signal's C-level handler writes the signal
number to a pipe (``signal.set_wakeup_fd``), and a helper thread started at install time reads
it and does the work at once; the Python-level handler only raises ``Interrupted`` in the main
thread on the second signal.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, Interrupted, PoolClosed

if TYPE_CHECKING:
    from ._engine import Engine
    from ._reports import ShutdownReport

__all__ = ["SignalGuard", "drains_on_exit"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# The guards installed now, in the order they were (the last one's handlers are the OS's;
# each saved the one's before it). Changed by the main thread only.
_installed: list[SignalGuard] = []
# Seconds the second signal's cancel waits for the stopped work to settle (killed worker
# processes: their slots see them gone within milliseconds).
_SETTLE_SECONDS = 5.0


def drains_on_exit(exc_type: type[BaseException] | None, interrupted_by: int | None) -> bool:
    """Whether leaving a pool's ``with`` block drains (else it cancels: an error in the body).

    No exception drains; so does one that is the pool's own answer to its first signal: a
    submit refused because the pool closed to drain (``PoolClosed``), or the ``Interrupted``
    that ends a ``map``/``results`` loop. Taking those for errors in the body would turn the
    first signal's drain into the second's cancel.
    """
    if exc_type is None:
        return True
    return interrupted_by is not None and issubclass(exc_type, (PoolClosed, Interrupted))


def _pass_on(signum: int, handler: Any, frame: FrameType | None) -> None:
    """Deliver ``signum`` as ``handler`` (what was installed before a pool's) would have."""
    if callable(handler):
        handler(signum, frame)
    elif handler == signal.SIG_DFL:
        os.kill(os.getpid(), signum)  # its default action, now that the default is back


class SignalGuard:
    """Installs the pool's SIGINT/SIGTERM handlers and restores the previous ones."""

    def __init__(self, engine: Engine, notify: Callable[[int, int], object] | None = None) -> None:
        self._engine = engine
        self._notify = notify
        self._previous: dict[int, Any] = {}
        self._installed = False
        self._done = False
        self._count = 0
        self._raised = False  # the second signal's Interrupted was raised already
        self._wakeup: tuple[int, int] | None = None
        self._previous_fd = -1
        self._seen = 0  # signals the helper thread has read
        self._cancelled = threading.Event()  # the helper acted on a second signal
        self._second: int | None = None  # that signal, as the helper read it (in order)
        self._guess = 0  # the signal whose handler raised (for when the helper saw none)
        self._thread: threading.Thread | None = None

    def install(self) -> None:
        if self._installed or self._done:
            return
        if threading.current_thread() is not threading.main_thread():
            raise ConfigError(
                "handle_signals=True needs the pool to be entered (or used) from the main "
                "thread, where Python delivers signals; create it with handle_signals=False "
                "in other threads"
            )
        self._wakeup = os.pipe()
        os.set_blocking(self._wakeup[1], False)  # set_wakeup_fd needs a non-blocking fd
        self._thread = threading.Thread(
            target=self._helper, name=f"{self._engine.name}-signals", daemon=True
        )
        self._thread.start()
        for sig in _SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        self._previous_fd = signal.set_wakeup_fd(self._wakeup[1], warn_on_full_buffer=False)
        self._installed = True
        _installed.append(self)

    def install_on_use(self) -> None:
        """``install`` when the pool is used (a submit, a join) from the main thread: a pool
        used without a with block handles signals too. Elsewhere (a task's nested submit)
        nothing: only the main thread can take signals."""
        if (
            not self._installed
            and not self._engine.closed
            and threading.current_thread() is threading.main_thread()
        ):
            self.install()

    def restore(self) -> None:
        if not self._installed or threading.current_thread() is not threading.main_thread():
            return
        at = _installed.index(self)
        if at == len(_installed) - 1:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(self._previous_fd)
        else:
            # A pool installed after this one is still open (pools closed out of order): its
            # handlers stay; what it restores at its end is what this one would have.
            after = _installed[at + 1]
            after._previous = self._previous
            after._previous_fd = self._previous_fd
        del _installed[at]
        self._installed = False
        self._done = True
        if self._wakeup is not None:
            os.write(self._wakeup[1], b"\0")  # let the helper exit
        if self._thread is not None and self._thread is not threading.current_thread():
            # After the signals already in the pipe: every signal the pool saw has been acted
            # on and told to ``notify`` before the pool's block exits. (A second signal ends
            # the block at once, in this thread, while the helper may not have told it yet.)
            self._thread.join(5)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        life = self._engine.lifecycle
        if life.shutdown_done() and life.interrupted_by is None:
            # The pool ended where its handlers could not be put back (it was dropped, or
            # shut down from another thread: only the main thread may): do it now, in the
            # main thread, and the signal goes where it would have gone without the pool.
            previous = self._previous.get(signum)
            self.restore()
            _pass_on(signum, previous, frame)
            return
        # The wakeup fd already told the helper thread; this only covers "exit at once".
        # (Two quick signals may reach Python as one call: the helper's count covers that.)
        self._count += 1
        if max(self._count, self._seen) >= 2 and not self._raised:
            # Raised once only: a handler's exception lands wherever the main thread is, and
            # a second one landing in the cleanup of the first (a Condition re-taking its
            # lock, say) would leave that lock in a broken state.
            self._raised = True
            life = self._engine.lifecycle
            life.interrupt_reported = True
            # The handler must not wait for the engine's lock, nor for the helper thread's
            # cancel: the report is taken when the caller first reads it (see _final_report).
            self._guess = signum
            error = Interrupted(
                "second signal: running work cancelled", life.unlocked_report(), signum
            )
            error._settle = self._final_report
            raise error

    def _final_report(self) -> tuple[ShutdownReport, int]:
        """The report of a second signal, once the helper thread's cancel has landed, and
        that signal's number as the helper read it (handlers may run out of order)."""
        self._cancelled.wait(5)
        life = self._engine.lifecycle
        second = self._second if self._second is not None else self._guess
        return life.report(finished=life.shutdown_done()), second

    def _act(self, signum: int) -> None:
        """The pool's answer to a signal (in a helper thread): drain, then cancel."""
        life = self._engine.lifecycle
        self._seen += 1
        if self._seen == 1:
            if life.shutdown_done() and not self._count:
                # The pool had ended already, where its handlers could not be put back, and
                # no signal was its (the handler counts those): not its to answer (_handle
                # passes it on).
                return
            life.interrupted_by = signum
            threading.Thread(
                target=life.shutdown,
                name=f"{self._engine.name}-drain",
                daemon=True,
            ).start()
        else:
            if self._second is None:
                self._second = signum
            life.abort()
            # A killed worker's tasks settle once its slot sees it gone: the second signal's
            # report (and its tasks) wait for that, not for more.
            life.settle(_SETTLE_SECONDS)
            self._cancelled.set()
        if self._notify is not None:
            try:
                self._notify(signum, self._seen)
            except Exception:
                pass

    def _helper(self) -> None:
        assert self._wakeup is not None
        r, w = self._wakeup
        try:
            while True:
                data = os.read(r, 64)
                for signum in data:
                    if signum == 0:
                        return
                    if signum not in _SIGNALS:
                        continue  # another handler's signal, reported through the same fd
                    # The pools open around this one (nested) get the signal too: only the
                    # last installed handlers are the OS's.
                    guards = list(_installed)
                    outer = guards[: guards.index(self)] if self in guards else []
                    for guard in [self, *reversed(outer)]:
                        guard._act(signum)
        finally:
            self._cancelled.set()  # nothing more will be cancelled: a report need not wait
            os.close(r)
            os.close(w)
