"""Helper for test_signals.py: a results() loop over an endless input, stopped by a signal.

Usage: signal_drain.py BACKEND

Prints one line per event so the test can follow along:
  ``read I closed=B``  the input generator handed out item I (B: was the pool closed then)
  ``started I``        task I is running; it blocks until the test writes ``release`` on stdin
  ``closed``           the pool stopped accepting work
  ``result I ok V`` / ``result I ErrorName``
  ``interrupted signal=S completed=C failed=F cancelled=X unstarted=U``  then exit 3
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

from workpool import Interrupted, Pool

EXIT_INTERRUPTED = 3


def say(line: str) -> None:
    # One write(2) per line: lines from threads, and from worker processes (which share this
    # stdout), never interleave, and nothing waits in a buffer.
    os.write(1, (line + "\n").encode())


def release_event(backend: str, stack: contextlib.ExitStack) -> Any:
    """The event the tasks wait on: a Manager proxy where tasks run in worker processes."""
    if backend == "process":
        manager = stack.enter_context(multiprocessing.get_context("spawn").Manager())
        return manager.Event()
    return threading.Event()


def main() -> int:
    backend = sys.argv[1]
    with contextlib.ExitStack() as stack:
        return drain(backend, release_event(backend, stack))


def drain(backend: str, release: Any) -> int:
    quit_watch = threading.Event()

    def read_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "release":
                release.set()

    threading.Thread(target=read_stdin, daemon=True).start()

    def task(i: int) -> int:
        say(f"started {i}")
        release.wait(60)  # the test releases, or never does
        return i * 10

    try:
        with Pool(workers=2, backend=backend, handle_signals=True) as pool:

            def watch() -> None:
                # The pool has no "closed" event: check between short waits.
                while not pool.closed and not quit_watch.wait(0.005):
                    pass
                if pool.closed:
                    say("closed")

            threading.Thread(target=watch, daemon=True).start()

            def inputs() -> Iterator[int]:
                for i in itertools.count():
                    say(f"read {i} closed={pool.closed}")
                    yield i

            for r in pool.results(task, inputs()):
                if r.ok:
                    say(f"result {r.index} ok {r.value}")
                else:
                    say(f"result {r.index} {type(r.error).__name__}")
    except Interrupted as e:
        rep = e.report
        say(
            f"interrupted signal={e.signal} completed={rep.completed} failed={rep.failed} "
            f"cancelled={rep.cancelled} unstarted={len(rep.unstarted)}"
        )
        return EXIT_INTERRUPTED
    finally:
        quit_watch.set()
    say("finished without a signal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
