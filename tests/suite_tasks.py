"""Module-level task functions of the behavioural suite that worker processes import.

cloudpickle sends a module-level function by reference, so a worker process imports the
module that defines it. A test module may import heavy things (hypothesis takes ~1 s), which
every new worker would pay for; the functions live here instead, next to nothing but the
standard library.
"""

from __future__ import annotations

import os
import threading
from typing import Any


class Boom(BaseException):
    """A BaseException from a task: still just that task's error."""


def caller() -> tuple[int, int]:
    """Who is running: (process id, thread id)."""
    return os.getpid(), threading.get_ident()


def deadline_of_me() -> float | None:
    """The deadline the running task sees (``current_task().deadline``)."""
    from workpool import current_task

    return current_task().deadline


def run_kind(kind: str, release: Any, test_thread: tuple[int, int], i: int) -> int:
    """The task for ``kind``; ``release`` is a ``shared.event()``, set at the end of the example."""
    if kind == "raise":
        raise ValueError(i)
    if kind == "base":
        raise Boom(i)
    if kind == "hang":
        release.wait(10)  # past task_timeout: abandoned or killed
    if kind == "cancel":
        if caller() == test_thread:
            raise AssertionError("tasks must not run in the caller's thread")
        release.wait(10)
    return i
