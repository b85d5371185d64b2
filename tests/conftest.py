"""Shared fixtures: every behavioural test runs once per backend through ``backend``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from workpool import Pool

# Backends the behavioural suite runs on. A test that cannot apply to one backend opts out
# with an explicit, reasoned ``pytest.skip`` naming the backend and why.
BACKENDS = ["thread"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_pool(backend: str) -> Iterator[Callable[..., Pool]]:
    """``make_pool(**options)`` builds a Pool on the current backend and shuts it down after."""
    pools: list[Pool] = []

    def make(*args: Any, **kwargs: Any) -> Pool:
        kwargs.setdefault("backend", backend)
        pool = Pool(*args, **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True, timeout=5)


class Gate:
    """A handshake for tests: tasks announce they started, then wait to be released.

    ``gate.started.wait(n)`` blocks until n tasks entered; ``gate.open()`` releases all.
    """

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._entered = 0
        self.released = threading.Event()

    def enter(self) -> None:
        with self._cv:
            self._entered += 1
            self._cv.notify_all()

    def wait_started(self, n: int, timeout: float = 10.0) -> None:
        with self._cv:
            if not self._cv.wait_for(lambda: self._entered >= n, timeout):
                raise AssertionError(f"only {self._entered} of {n} tasks started")

    @property
    def entered(self) -> int:
        with self._cv:
            return self._entered

    def open(self) -> None:
        self.released.set()

    def task(self, x: Any = None) -> Any:
        """A task that waits at the gate, then returns its argument."""
        self.enter()
        if not self.released.wait(30):
            raise AssertionError("gate never opened")
        return x


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.open()  # never leave a worker blocked behind a failed test
