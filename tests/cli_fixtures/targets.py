"""``--call`` targets for tests/test_cli.py, imported by ``workpool run`` in a subprocess.

The tests steer them through environment variables, because each runs in another process:

- ``WORKPOOL_TEST_SIDE``: a file where ``record*`` targets append one line per call (with
  ``O_APPEND``, so concurrent calls never mix), to count calls across runs;
- ``WORKPOOL_TEST_BLOCK_FROM``: ``record_and_block`` and ``record_and_fail_odd`` block on
  inputs >= this number;
- ``WORKPOOL_TEST_RELEASE``: a file whose appearance releases ``announce_and_wait``;
- ``WORKPOOL_TEST_FAIL``: when set, ``record_and_fail_odd`` fails on odd inputs.

A blocked target polls for a file that the test creates (or never creates), and gives up as
soon as its task is cancelled or times out, so no worker is left spinning.
"""

from __future__ import annotations

import os
import time
from typing import Any

import workpool


def square(x: str) -> int:
    return int(x) ** 2


def fail_odd(x: str) -> int:
    n = int(x)
    if n % 2:
        raise ValueError(f"{n} is odd")
    return n


def double_a(value: dict[str, Any]) -> Any:
    return value["a"] * 2


def as_set(x: str) -> set[str]:
    """Returns a value that JSON cannot hold: the output gets its repr."""
    return {x}


def _record(x: str) -> None:
    fd = os.open(os.environ["WORKPOOL_TEST_SIDE"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, f"{x}\n".encode())
    finally:
        os.close(fd)


def _wait_for(path: str | None) -> bool:
    """Wait until ``path`` exists (True) or the task is cancelled or timed out (False)."""
    ctx = workpool.current_task()
    while not ctx.cancelled:
        if path is not None and os.path.exists(path):
            return True
        time.sleep(0.01)
    return False


def block(x: str) -> str:
    """Input "block" waits for a file that never appears (until its timeout); others return."""
    if x == "block":
        _wait_for(None)
        raise RuntimeError("block() was cancelled")
    return x


def record_and_block(x: str) -> int:
    """Record the call; inputs >= WORKPOOL_TEST_BLOCK_FROM then say so on stderr and block."""
    _record(x)
    n = int(x)
    if n >= int(os.environ.get("WORKPOOL_TEST_BLOCK_FROM", "1000000000")):
        os.write(2, f"blocked {n}\n".encode())
        _wait_for(None)
    return n


def record_and_fail_odd(x: str) -> int:
    """Record the call; fail odd inputs if WORKPOOL_TEST_FAIL is set; block as
    ``record_and_block`` does from WORKPOOL_TEST_BLOCK_FROM."""
    _record(x)
    n = int(x)
    if os.environ.get("WORKPOOL_TEST_FAIL") and n % 2:
        raise ValueError(f"{n} is odd")
    if n >= int(os.environ.get("WORKPOOL_TEST_BLOCK_FROM", "1000000000")):
        os.write(2, f"blocked {n}\n".encode())
        _wait_for(None)
    return n


def announce_and_wait(x: str) -> str:
    """Say "started X" on stderr, then wait for the WORKPOOL_TEST_RELEASE file."""
    os.write(2, f"started {x}\n".encode())
    if not _wait_for(os.environ["WORKPOOL_TEST_RELEASE"]):
        raise RuntimeError("announce_and_wait() was cancelled")
    return x.upper()


def flaky(x: str) -> str:
    """Fails the first time it sees an input (per WORKPOOL_TEST_SIDE), succeeds after."""
    side = os.environ["WORKPOOL_TEST_SIDE"]
    try:
        with open(side) as f:
            seen = f"{x}\n" in f.read()
    except FileNotFoundError:
        seen = False
    _record(x)
    if not seen:
        raise ConnectionError(f"{x}: first attempt fails")
    return x


class _Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class _UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


def awkward(x: str) -> Any:
    """Values and errors that JSON (or even repr/str) cannot show."""
    if x == "nan":
        return float("nan")
    if x == "huge":
        return 10**5000
    if x == "keys":
        return {(1, 2): "tuple key"}
    if x == "unprintable":
        return [_Unprintable()]
    if x == "raise":
        raise _UnprintableError()
    return {"nested": {x}}


async def async_square(x: str) -> tuple[int, bool]:
    """A coroutine function: runs on the async backend's loop (True: no worker thread)."""
    import asyncio
    import threading

    await asyncio.sleep(0)
    return int(x) ** 2, threading.current_thread().name.endswith("-loop")


def chatty(x: str) -> str:
    """Prints (Python's print and a write to descriptor 1), then returns its input."""
    print(f"chatty print {x}", flush=True)
    os.write(1, f"chatty fd {x}\n".encode())
    return x
