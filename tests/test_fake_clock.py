"""Timeouts, retry backoff and idle retirement on a fake clock: exact, and no real waiting.

The engine reads the time from the clock a pool was given and its timer thread waits on it,
so these tests move the time by hand and check what fired and what did not, at the exact
boundary. (Worker processes keep their own clock, so the process backend opts out.)
"""

from __future__ import annotations

from typing import Any

import pytest

from fakeclock import FakeClock
from handshakes import wait_until
from workpool import Pool, Retry, TaskTimeout

pytestmark = [
    pytest.mark.timeout(20),
    pytest.mark.skip_backend(
        "process",
        reason="a worker process times its calls on its own clock; timeouts, backoff and "
        "retirement there are covered on real time in test_timeouts/test_retries_rate/"
        "test_elastic",
    ),
]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_task_times_out_exactly_at_its_deadline(
    backend: str, gate: Any, clock: FakeClock
) -> None:
    with Pool(2, backend=backend, task_timeout=10, _clock=clock) as pool:
        task = pool.submit(gate.task, 1)
        gate.wait_started(1)
        clock.advance(9.99)
        assert not task.done()  # a hundredth of a second early: still running
        clock.advance(0.01)
        wait_until(task.done)
        assert isinstance(task.exception(0), TaskTimeout)
        assert "timed out after 10s" in str(task.exception(0))
        gate.open()


def test_retry_backoff_waits_exactly_as_long_as_the_policy_says(
    backend: str, shared: Any, clock: FakeClock
) -> None:
    calls = shared.counter()

    def flaky() -> int:
        n: int = calls.add()
        if n < 3:
            raise ConnectionError(f"attempt {n}")
        return n

    policy = Retry(2, backoff=10, jitter=0)  # waits 10 s, then 20 s
    with Pool(1, backend=backend, retries=policy, _clock=clock) as pool:
        task = pool.submit(flaky)
        wait_until(lambda: calls.value == 1 and pool.stats().retried == 1)
        clock.advance(9.5)
        assert calls.value == 1  # not yet
        clock.advance(0.5)
        wait_until(lambda: calls.value == 2 and pool.stats().retried == 2)
        clock.advance(19.5)
        assert calls.value == 2
        clock.advance(0.5)
        assert task.result(timeout=5) == 3
        assert task.outcome(timeout=0).attempts == 3


def test_idle_workers_retire_exactly_after_idle_timeout(
    backend: str, gate: Any, clock: FakeClock
) -> None:
    with Pool(4, backend=backend, min_workers=1, idle_timeout=30, _clock=clock) as pool:
        tasks = [pool.submit(gate.task, i) for i in range(4)]
        gate.wait_started(4)
        gate.open()
        assert [t.result(timeout=5) for t in tasks] == [0, 1, 2, 3]
        wait_until(lambda: pool.stats().idle_workers == 4)
        clock.advance(29.9)
        assert pool.stats().workers == 4  # not idle long enough
        clock.advance(0.1)
        wait_until(lambda: pool.stats().workers == 1)  # down to min_workers, not below
        clock.advance(3600)
        assert pool.stats().workers == 1
