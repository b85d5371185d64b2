"""Helper for test_signals.py: signals that land while a pool drains (in ``shutdown()``, in
the ``with`` block's exit, or in a ``submit`` blocked on a full queue).

Usage: signal_in_shutdown.py BACKEND MODE

MODE: ``shutdown`` (the body calls ``pool.shutdown()``), ``exit`` (the body ends and the
block's exit drains) or ``submit`` (the body submits until a submit blocks); ``handled-``
before it: the pool has ``handle_signals=True`` (else a SIGINT is a KeyboardInterrupt).
The tasks never end on their own (they wait 60 s): only a cancel ends them.

Prints ``started I`` per running task, ``draining`` once the pool closed (or the submit
blocks), ``signal N`` as the pool is told of its N-th signal (``handled-``), then ``raised NAME [cancelled=C unstarted=U accepted=A]``, ``tasks S,S,...`` (each
task's outcome: the exception's type name, or ``pending``) and ``end``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
from typing import Any

from workpool import Interrupted, Pool

# A SIGINT is a KeyboardInterrupt here, as in a program started from a terminal, even when
# this script inherits it ignored (a test run started in the background by a shell without
# job control: Python then leaves SIGINT ignored, and the script waited for ever).
signal.signal(signal.SIGINT, signal.default_int_handler)


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())  # one write: lines of threads never interleave


def task(release: Any, i: int) -> int:
    say(f"started {i}")
    release.wait(60)
    return i


def main() -> int:
    backend, mode = sys.argv[1], sys.argv[2]
    handled = mode.startswith("handled-")
    mode = mode.removeprefix("handled-")
    with contextlib.ExitStack() as stack:
        if backend == "process":
            manager = stack.enter_context(multiprocessing.get_context("spawn").Manager())
            release: Any = manager.Event()
        else:
            release = threading.Event()
        tasks: list[Any] = []
        try:
            told = (lambda signum, count: say(f"signal {count}")) if handled else False
            with Pool(2, backend=backend, queue_size=2, handle_signals=told) as pool:
                tasks += [pool.submit(task, release, i) for i in range(4)]

                def watch() -> None:
                    # Closed (draining), or a submit waits for room (the pool has no event
                    # for either: look between short waits).
                    while not (pool.closed or pool.stats().blocked_submitters):
                        if release.wait(0.005):
                            return
                    say("draining")

                threading.Thread(target=watch, daemon=True).start()
                if mode == "submit":
                    tasks.append(pool.submit(task, release, 4))  # full (2 running, 2 queued)
                elif mode == "shutdown":
                    pool.shutdown()
        except Interrupted as e:
            rep = e.report
            say(
                f"raised Interrupted cancelled={rep.cancelled} unstarted={len(rep.unstarted)} "
                f"accepted={len(tasks)}"
            )
        except BaseException as e:
            say(f"raised {type(e).__name__}")
        states = []
        for t in tasks:
            if not t.done():
                states.append("pending")
            else:
                error = t.exception() if not t.cancelled() else None
                states.append("CancelledError" if t.cancelled() else type(error).__name__)
        say("tasks " + ",".join(states))
        release.set()
    say("end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
