"""Helper for test_process.py: the main script's own functions and classes in worker processes.

Usage: main_functions.py START_METHOD   (also run as ``python -m main_functions``)

Runs tasks that are functions of this script, with an initializer of this script, and prints
one JSON line: for each case, the values (or ``"ErrorName: message"``) the tasks gave back.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
from typing import Any

from workpool import Pool, Result

STATE: Any = None  # set by the initializer in each worker
LOCAL = threading.local()  # a module-level object that cannot be pickled


def init(value: str) -> None:
    global STATE
    STATE = value


def read_state(_: object) -> Any:
    return STATE


def use_local(x: int) -> int:
    LOCAL.value = x
    return int(LOCAL.value) * 2


@dataclasses.dataclass
class Point:
    x: int
    y: int


def make_point(x: int) -> Point:
    return Point(x, -x)


def norm(p: Point) -> int:
    return abs(p.x) + abs(p.y)


def outcome(r: Result[Any]) -> Any:
    if not r.ok:
        return f"{type(r.error).__name__}: {r.error}"
    if isinstance(r.value, Point):
        return ["Point", r.value.x, r.value.y]
    return r.value


def run(method: str) -> dict[str, Any]:
    offset = 100

    def nested(x: int) -> int:
        return x + offset

    def each(fn: Any, items: Any) -> list[Any]:
        return [outcome(r) for r in pool.results(fn, items, ordered=True)]

    with Pool(
        2, backend="process", start_method=method, initializer=init, initargs=("set by init",)
    ) as pool:
        return {
            "state": each(read_state, range(4)),
            "local": each(use_local, range(4)),
            "points": each(make_point, range(3)),
            "norms": each(norm, [Point(i, i) for i in range(3)]),
            "submitted": outcome(pool.submit(make_point, 7).outcome(timeout=30)),
            "lambda": each(lambda x: x + 1, range(3)),
            "nested": each(nested, range(3)),
            "guarded": each(GUARDED, range(3)),
            # An instance of a class defined under the guard, sent and sent back: it is one
            # of the script's own class, not a copy's.
            "guarded_class": [
                r.value.x if r.ok and type(r.value) is GuardedClass else outcome(r)
                for r in pool.results(lambda o: o, map(GuardedClass, range(3)), ordered=True)
            ],
            "pids": sorted(set(each(lambda _: os.getpid(), range(4)))),
        }


if __name__ == "__main__":

    def guarded(x: int) -> int:
        """Defined under the guard: a worker's copy of this script has no such function."""
        return x * 3

    GUARDED = guarded

    @dataclasses.dataclass
    class GuardedClass:
        """Defined under the guard: a worker's copy of this script has no such class."""

        x: int

    print(json.dumps({"pid": os.getpid(), **run(sys.argv[1])}))
