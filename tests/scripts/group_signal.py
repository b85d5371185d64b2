"""Helper for test_process.py: process workers under a signal sent to the whole process group.

Usage: group_signal.py FIFO [START_METHOD]

Two tasks run on two worker processes; each opens FIFO (the test holds a writer open, so the
open does not block), says so, and blocks reading it until the test closes its writer. The pool
drains on the first SIGINT/SIGTERM and stops on the second (``handle_signals``). Nothing in the
program but the pool is in the way of a signal: no Manager (which the group signal would kill).

Prints one line per event (each one write(2), so lines from processes never mix):
  ``started I PID``    task I runs in worker PID and waits on the FIFO
  ``signal N COUNT``   the pool was told of signal N (the COUNT-th)
  ``result I ok V`` / ``result I ErrorName: message``
  ``interrupted completed=C failed=F cancelled=X``  then exit 3
  ``fork server alive|dead``  (forkserver only, last) whether it survived the signals
"""

from __future__ import annotations

import multiprocessing.forkserver
import os
import sys

from workpool import Interrupted, Pool

EXIT_INTERRUPTED = 3


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def wait_on(fifo: str, i: int) -> int:
    with open(fifo, "rb") as f:
        say(f"started {i} {os.getpid()}")
        f.read()  # until the test closes its writer
    return i * 10


def main() -> int:
    method = sys.argv[2] if len(sys.argv) > 2 else "forkserver"
    try:
        return run(sys.argv[1], method)
    finally:
        if method == "forkserver":
            # The fork server is this process's child: still running, or not.
            pid = multiprocessing.forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
            say(f"fork server {'alive' if os.waitpid(pid, os.WNOHANG) == (0, 0) else 'dead'}")


def run(fifo: str, method: str) -> int:
    try:
        with Pool(
            2,
            backend="process",
            start_method=method,
            handle_signals=lambda signum, count: say(f"signal {signum} {count}"),
        ) as pool:
            for r in pool.results(wait_on, [fifo, fifo], range(2), ordered=True):
                if r.ok:
                    say(f"result {r.index} ok {r.value}")
                else:
                    say(f"result {r.index} {type(r.error).__name__}: {r.error}")
    except Interrupted as e:
        rep = e.report
        say(f"interrupted completed={rep.completed} failed={rep.failed} cancelled={rep.cancelled}")
        return EXIT_INTERRUPTED
    say("finished without a signal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
