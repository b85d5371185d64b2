"""Task functions for tests/test_process.py.

They live in a module of their own, not in the test module, because child processes import
module-level functions by reference: importing this small module in a worker is cheap, while
importing the test module would drag pytest and every fixture along.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import workpool


def double(x: int) -> int:
    return 2 * x


def getpid(_: object = None) -> int:
    return os.getpid()


def identity(x: Any) -> Any:
    return x


# ---------------------------------------------------------------------- dying workers


def exit3_at(at: int, x: int) -> int:
    """``2 * x``, except that the worker exits with code 3 at item ``at``."""
    if x == at:
        os._exit(3)
    return 2 * x


def nap_double(x: int) -> int:
    """``2 * x`` after a 2 ms nap: tiny enough to be batched, slow enough to stop mid-way."""
    time.sleep(0.002)
    return 2 * x


def exit3_at_any(points: frozenset[int], x: int) -> int:
    """``2 * x``, except that the worker exits with code 3 at each item in ``points``."""
    if x in points:
        os._exit(3)
    return 2 * x


def sigkill_at(at: int, x: int) -> int:
    """``2 * x``, except that the worker SIGKILLs itself at item ``at``."""
    if x == at:
        os.kill(os.getpid(), signal.SIGKILL)
    return 2 * x


def segfault_at(at: int, x: int) -> int:
    """``2 * x``, except that the worker dereferences NULL at item ``at``."""
    if x == at:
        ctypes.string_at(0)
    return 2 * x


def exit3() -> None:
    os._exit(3)


# ---------------------------------------------------------------------- hanging workers


def report_pid_and_hang(queue: Any, *_: object) -> None:
    """Put this worker's pid on ``queue`` (a Manager proxy), then never return."""
    queue.put(os.getpid())
    threading.Event().wait()


def hang_at(at: int, queue: Any, x: int) -> int:
    """``2 * x``, except that item ``at`` reports its pid on ``queue`` and never returns."""
    if x == at:
        report_pid_and_hang(queue)
    return 2 * x


def context_probe(x: object = None) -> tuple[int, float | None, float | None, float | None, int]:
    """What ``current_task()`` says in the worker: id, deadline, two remaining(), attempt."""
    ctx = workpool.current_task()
    first = ctx.remaining()
    t = time.monotonic()
    while time.monotonic() == t:  # let the clock tick: remaining() must have moved
        pass
    second = ctx.remaining()
    return ctx.id, ctx.deadline, first, second, ctx.attempt


def attempt_or_fail(marker: str) -> int:
    """Fail on the first attempt, return the attempt number on the next ones."""
    ctx = workpool.current_task()
    if ctx.attempt == 1:
        raise ValueError(f"first attempt of {marker} fails on purpose")
    return ctx.attempt


# ---------------------------------------------------------------------- pickling


def return_lock(_: object = None) -> Any:
    return threading.Lock()


def lock_at(at: int, x: int) -> Any:
    return threading.Lock() if x == at else 2 * x


def _numbers() -> Iterator[int]:
    yield 1


def return_generator() -> Iterator[int]:
    return _numbers()


class NeedsTwoArgs(Exception):
    """Pickles, but cannot be unpickled: ``__init__`` needs two arguments, ``args`` has one."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a} and {b}")


def raise_needs_two_args() -> None:
    raise NeedsTwoArgs("left", "right")


def raise_value_error_from_the_child(x: int = 0) -> None:
    raise ValueError(f"bad value {x} in pid {os.getpid()}")


# ---------------------------------------------------------------------- initializer

STATE: Any = None


def set_state(value: Any) -> None:
    global STATE
    STATE = (value, os.getpid())


def read_state() -> Any:
    return STATE


def failing_initializer() -> None:
    raise RuntimeError("initializer exploded on purpose")


def announce_and_wait(queue: Any, event: Any) -> None:
    """An initializer that reports its pid, then blocks until ``event`` (Manager) is set."""
    queue.put(os.getpid())
    event.wait()


def exiting_initializer() -> None:
    os._exit(4)


def fail_the_first_time(marker: str) -> None:
    """An initializer that fails in the first worker only (it leaves ``marker`` behind)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    raise RuntimeError("initializer fails the first time")


class HoldsALock(Exception):
    """An exception whose attribute cannot be pickled at all."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def raise_holds_a_lock() -> None:
    raise HoldsALock("locked out")


def second_waits_for_the_rest(cv: Any, started: Any, done: Any, n: int, x: int) -> int:
    """``x`` for items ``0..n-1``: item 1 returns only once every other item has run, and
    item 0 only once item 1 has started (each waits 10 s at most)."""
    with cv:
        if x == 1:
            started.value = 1
            cv.notify_all()
            if not cv.wait_for(lambda: done.value >= n - 1, 10):
                raise TimeoutError(f"only {done.value} of the {n - 1} other items ran")
            return x
        if x == 0 and not cv.wait_for(lambda: started.value, 10):
            raise TimeoutError("item 1 never started")
        done.value += 1
        cv.notify_all()
    return x


# ---------------------------------------------------------------------- (un)pickling hazards
# Objects that go wrong in the other process: tests create them in the worker (results) or
# send them (arguments), never unpickle or pickle them where that would hit the test itself.


def _refuse_unpickling(message: str) -> None:
    raise ValueError(message)


class FailsToUnpickle:
    """Pickles; unpickling it raises ValueError (anywhere)."""

    def __init__(self, message: str = "refuses to be unpickled") -> None:
        self.message = message

    def __reduce__(self) -> Any:
        return (_refuse_unpickling, (self.message,))


def _only_in_a_worker(message: str) -> BaseException:
    import multiprocessing

    if multiprocessing.parent_process() is None:
        raise ValueError("not unpickled outside a worker process")
    return ErrorOnlyAWorkerLoads(message)


class ErrorOnlyAWorkerLoads(Exception):
    """An exception that unpickles in a worker process (as the worker checks that it can
    travel) but not in the pool's process."""

    def __reduce__(self) -> Any:
        return (_only_in_a_worker, (self.args[0],))


def raise_error_only_a_worker_loads(x: object = None) -> None:
    raise ErrorOnlyAWorkerLoads("boom")


class ExitsWhenUnpickled:
    """Pickles; the process that unpickles it exits at once (``os._exit(code)``)."""

    def __init__(self, code: int) -> None:
        self.code = code

    def __reduce__(self) -> Any:
        return (os._exit, (self.code,))


class SysExitWhenUnpickled:
    """Pickles; unpickling it raises SystemExit."""

    def __reduce__(self) -> Any:
        return (sys.exit, (9,))


class ExitsWhenPickled:
    """The process that pickles it exits at once: ``os._exit(code)``, or a segfault."""

    def __init__(self, code: int | None) -> None:
        self.code = code

    def __reduce__(self) -> Any:
        if self.code is None:
            ctypes.string_at(0)
        os._exit(self.code or 0)


class SysExitWhenPickled:
    """Pickling it raises SystemExit."""

    def __reduce__(self) -> Any:
        sys.exit(8)


def count_run(path: str) -> None:
    """Append one line to ``path`` (one write: runs in several processes never mix)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"run\n")
    finally:
        os.close(fd)


def return_at(at: int, value: Any, x: int, runs: str | None = None) -> Any:
    """``2 * x``, except ``value`` at item ``at`` (whose run is counted in ``runs``)."""
    if x == at:
        if runs is not None:
            count_run(runs)
        return value
    return 2 * x


def make_at(at: int, factory: Any, x: int, runs: str | None = None) -> Any:
    """``2 * x``, except ``factory()`` at item ``at`` (made in the worker; counted in ``runs``)."""
    if x == at:
        if runs is not None:
            count_run(runs)
        return factory()
    return 2 * x


def exits_when_pickled(code: int | None) -> Any:
    return functools.partial(ExitsWhenPickled, code)


def value_of(x: Any) -> Any:
    """``x`` itself for plain data; for a Box, its content."""
    return x.content if isinstance(x, Box) else x


class Box:
    """A custom (not plain) argument: batches of these travel one pickle per entry."""

    def __init__(self, content: Any) -> None:
        self.content = content


class CallableThatFailsToUnpickle:
    """A task function that pickles but cannot be unpickled (in the worker)."""

    def __call__(self, x: Any) -> Any:
        return x

    def __reduce__(self) -> Any:
        return (_refuse_unpickling, ("this function refuses to be unpickled",))


class CallableThatExitsWhenUnpickled:
    """A task function whose unpickling kills the worker."""

    def __call__(self, x: Any) -> Any:
        return x

    def __reduce__(self) -> Any:
        return (os._exit, (7,))


# ---------------------------------------------------------------------- what stays alive


class Held:
    """A weakly referenceable object, with a method to use as a task's function."""

    def __init__(self, payload: Any = None) -> None:
        self.payload = payload

    def method(self, x: Any = None) -> Any:
        return x


class SignalsWhenCollected:
    """Sets ``event`` (a Manager proxy) when a copy of it is collected in another process
    than the one that made it: how a test sees a worker let go of its arguments."""

    def __init__(self, event: Any) -> None:
        self.event = event
        self.pid = os.getpid()

    def __del__(self) -> None:
        if os.getpid() != self.pid:
            self.event.set()

    def method(self, x: Any = None) -> Any:
        return x


# ---------------------------------------------------------------------- initargs

SHARED: Any = None


def keep_shared(*objects: Any) -> None:
    """An initializer that keeps its arguments (multiprocessing objects) for the tasks."""
    global SHARED
    SHARED = objects


def use_shared(i: int) -> int:
    """With the shared lock held: add 1 to the shared value, put ``i`` on the queue, set the
    event. Returns the worker's pid."""
    queue, lock, event, value = SHARED
    with lock:
        value.value += 1
    queue.put(i)
    event.set()
    return os.getpid()


def log_to_queue(queue: Any) -> None:
    """An initializer that sends the worker's log records to ``queue`` (a QueueHandler)."""
    import logging.handlers

    logger = logging.getLogger("workpool-test-worker")
    logger.setLevel(logging.INFO)
    logger.addHandler(logging.handlers.QueueHandler(queue))


def log(message: str) -> None:
    import logging

    logging.getLogger("workpool-test-worker").info("%s from %d", message, os.getpid())


def call_initarg(fn: Any) -> None:
    """An initializer that stores what its argument (a callable) returns."""
    global STATE
    STATE = (fn(), os.getpid())


def run_python(code: str) -> str:
    """Run ``python -c code`` from the worker; its stdout."""
    import subprocess

    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    ).stdout


def wait_event(event: Any, timeout: float = 10.0) -> bool:
    """Whether ``event`` (a Manager proxy) was set within ``timeout`` seconds."""
    return bool(event.wait(timeout))


def gated_identity(gate: Any, x: Any) -> Any:
    """``x``, once ``gate`` (a Manager event) is set."""
    gate.wait(20)
    return x


def leave_a_helper_then(how: str, pidfile: str, x: object = None) -> None:
    """Start a long-lived helper that could hold the worker's pipe (a forked child, or a
    program started with ``close_fds=False``), write its pid to ``pidfile``, then end the
    worker (``exit``) or hang until the pool's deadline kills it (``hang``)."""
    import subprocess

    if how.startswith("fork"):
        pid = os.fork()
        if pid == 0:
            time.sleep(60)  # a daemon the task started: it outlives the worker
            os._exit(0)
    else:
        pid = subprocess.Popen(["sleep", "60"], close_fds=False).pid
    with open(pidfile, "w") as f:
        f.write(str(pid))
    if how.endswith("exit"):
        os._exit(1)
    time.sleep(60)  # until the deadline's kill


def fork_and_return(x: str) -> str:
    """Fork, and return in both processes (the child should have called os._exit)."""
    if x == "fork":
        return "child" if os.fork() == 0 else "parent"
    return x


async def _fork_and_return_later(x: str) -> str:
    return fork_and_return(x)


def fork_and_return_in_a_coroutine(x: str) -> Any:
    """A plain function that returns a coroutine that forks (as ``fork_and_return``)."""
    return _fork_and_return_later(x)


def record_run(path: str, gate: Any, exit_at: int, x: int) -> int:
    """Append ``x`` to ``path`` (one write), after waiting for ``gate`` at item 0; exit the
    worker (code 3) at item ``exit_at``, before recording it."""
    if x == 0:
        gate.wait(20)
    if x == exit_at:
        os._exit(3)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{x}\n".encode())
    finally:
        os.close(fd)
    return x


async def twice_later(x: int) -> int:
    """A coroutine function (for a plain function around it); 4 takes 50 ms."""
    await asyncio.sleep(0.05 if x == 4 else 0)
    if x == 3:
        raise ValueError("three")
    return 2 * x


def around_twice_later(x: int) -> Any:
    """A plain function that returns a coroutine (as ``lambda x: twice_later(x)`` does)."""
    return twice_later(x)


def slow_or_held(item: tuple[str, str | None]) -> str:
    """``("fast", None)`` returns at once; ``("slow", None)`` takes 50 ms; ``("held", path)``
    returns once ``path`` exists (the test creates it)."""
    kind, path = item
    if kind == "slow":
        time.sleep(0.05)
    elif kind == "held":
        assert path is not None
        while not os.path.exists(path):
            time.sleep(0.001)
    return kind


def fast_or_slow_pid(slow: bool) -> int:
    """This worker's pid, after 50 ms when ``slow``."""
    if slow:
        time.sleep(0.05)
    return os.getpid()
