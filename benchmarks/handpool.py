"""The hand-written thread pool a user would write with ``queue.Queue``.

A feeder thread reads the input into a bounded in-queue (``maxsize``, so an infinite input
stays bounded), ``workers`` threads take items and put results on an out-queue, and sentinels
shut everything down.  Leaving the consuming loop early (``break``) stops the feeder, lets the
workers drain the in-queue and joins every thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable
from typing import Any

_DONE = object()


def imap_unordered(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    workers: int,
    maxsize: int | None = None,
) -> Generator[Any, None, None]:
    in_q: queue.Queue[Any] = queue.Queue(maxsize=2 * workers if maxsize is None else maxsize)
    out_q: queue.Queue[Any] = queue.Queue()
    stop = threading.Event()

    def feed() -> None:
        try:
            for item in items:
                if stop.is_set():
                    break
                in_q.put(item)
        finally:
            for _ in range(workers):
                in_q.put(_DONE)

    def work() -> None:
        while True:
            item = in_q.get()
            if item is _DONE:
                out_q.put(_DONE)
                return
            out_q.put(fn(item))

    threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
    threads.append(threading.Thread(target=feed, daemon=True))
    for t in threads:
        t.start()
    try:
        running = workers
        while running:
            result = out_q.get()
            if result is _DONE:
                running -= 1
            else:
                yield result
    finally:
        stop.set()
        for t in threads:
            t.join()
