"""``handle_signals=True``: drain on the first SIGINT/SIGTERM, cancel on the second.

A Python signal handler runs in the main thread between two bytecodes, possibly while that
thread holds one of the engine's locks. So the handler takes no lock: it writes the signal
number to a pipe, and a helper thread started at install time does the work.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

from ._result import ShutdownReport
from .errors import ConfigError, Interrupted

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["SignalGuard"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalGuard:
    """Installs the pool's SIGINT/SIGTERM handlers and restores the previous ones."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._previous: dict[int, Any] = {}
        self._installed = False
        self._done = False
        self._count = 0
        self._wakeup: tuple[int, int] | None = None

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
        threading.Thread(
            target=self._helper, name=f"{self._engine.name}-signals", daemon=True
        ).start()
        for sig in _SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        self._installed = True

    def restore(self) -> None:
        if not self._installed or threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._installed = False
        self._done = True
        if self._wakeup is not None:
            os.write(self._wakeup[1], b"\0")  # let the helper exit

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._count += 1
        assert self._wakeup is not None
        os.write(self._wakeup[1], bytes([signum]))
        if self._count >= 2:
            engine = self._engine
            # A best-effort report: the handler must not wait for the engine's lock.
            report = ShutdownReport(
                completed=engine._succeeded,
                failed=engine._failed,
                cancelled=engine._cancelled,
                unstarted=list(engine._unstarted),
                timed_out=engine._timed_out,
                finished=False,
            )
            raise Interrupted(f"second signal {signum}: running work cancelled", report, signum)

    def _helper(self) -> None:
        assert self._wakeup is not None
        r, w = self._wakeup
        try:
            seen = 0
            while True:
                data = os.read(r, 64)
                for signum in data:
                    if signum == 0:
                        return
                    seen += 1
                    if seen == 1:
                        self._engine.interrupted_by = signum
                        threading.Thread(
                            target=self._engine.shutdown,
                            name=f"{self._engine.name}-drain",
                            daemon=True,
                        ).start()
                    else:
                        self._engine.abort()
        finally:
            os.close(r)
            os.close(w)
