"""Imported only by the fork server (one of the process backend's preloads): it survives SIGTERM.

systemd stops a service by sending SIGTERM to each of its processes, and ``kill -TERM -PGID`` or
a terminal reaches every process of a group; the fork server is one of them. Dead, it would
start no new worker, and multiprocessing would report every worker it forked as exited with
code 255 (it reads their exit codes from the server), also those still running: a drain would
end in ``WorkerCrashed`` for every running task. The pool decides what SIGTERM means (drain,
then kill its workers), and the server exits with the program anyway (its lifeline is a pipe
from the program).

A process the server forks gets the previous handling back (``os.register_at_fork``): workers
of other libraries that share the server are left as they were; workpool's own set theirs
(see ``_child``). Never import this module elsewhere.
"""

from __future__ import annotations

import os
import signal

_previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _restore() -> None:
    signal.signal(signal.SIGTERM, _previous)


os.register_at_fork(after_in_child=_restore)
