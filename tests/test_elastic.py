"""Elastic sizing: workers start on demand, retire when idle, and resize() at run time."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from handshakes import live_workers, wait_until
from workpool import ConfigError, Pool

pytestmark = pytest.mark.timeout(15)

MakePool = Callable[..., Pool]


def unique_name() -> str:
    return f"wp-elastic-{uuid.uuid4().hex[:10]}"


def worker_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"{name}-worker")]


# ---------------------------------------------------------------------- on demand


def test_workers_start_on_demand(make_pool: MakePool, gate: Any) -> None:
    pool = make_pool(workers=4, queue_size=10)
    with pool:
        assert pool.stats().workers == 0  # nothing started before there is work
        first = pool.submit(gate.task, 0)
        gate.wait_started(1)
        assert pool.stats().workers == 1
        more = [pool.submit(gate.task, i) for i in range(1, 3)]
        gate.wait_started(3)
        assert pool.stats().workers == 3
        rest = [pool.submit(gate.task, i) for i in range(3, 8)]
        gate.wait_started(4)
        s = pool.stats()
        assert (s.workers, s.running, s.queued) == (4, 4, 4)  # never above the maximum
        gate.open()
        assert [t.result(timeout=5) for t in [first, *more, *rest]] == list(range(8))


@pytest.mark.parametrize("queue_size", [0, 1, None])
def test_results_reaches_full_strength(
    make_pool: MakePool, shared: Any, queue_size: int | None
) -> None:
    # Four items that can only finish together: results() must run four at once.
    pool = make_pool(workers=4, queue_size=queue_size)
    barrier = shared.barrier(4, timeout=5)
    got = list(pool.results(lambda i: (barrier.wait(), i)[1], range(8)))
    assert [r.error for r in got if not r.ok] == []
    assert sorted(r.unwrap() for r in got) == list(range(8))


@pytest.mark.parametrize("queue_size", [0, 1, None])
def test_submit_reaches_full_strength(
    make_pool: MakePool, shared: Any, queue_size: int | None
) -> None:
    pool = make_pool(workers=4, queue_size=queue_size)
    barrier = shared.barrier(4, timeout=5)
    tasks = [pool.submit(barrier.wait) for _ in range(4)]
    assert sorted(t.result(timeout=5) for t in tasks) == [0, 1, 2, 3]


def test_a_warm_pool_below_full_strength_still_reaches_it_for_a_burst(
    make_pool: MakePool, shared: Any
) -> None:
    # Three workers started and idle, a fourth allowed: a burst of four tasks that must all
    # run at once (a rendezvous). Woken one idle worker at a time, the pool never started
    # the fourth, and the barrier broke.
    pool = make_pool(workers=4, min_workers=3)
    with pool:
        wait_until(lambda: pool.stats().idle_workers == 3, 10)
        assert pool.stats().workers == 3
        barrier = shared.barrier(4, timeout=5)
        tasks = [pool.submit(barrier.wait) for _ in range(4)]
        assert sorted(t.result(timeout=10) for t in tasks) == [0, 1, 2, 3]
        assert pool.stats().workers == 4


def test_min_workers_start_on_enter(make_pool: MakePool) -> None:
    name = unique_name()
    pool = make_pool(workers=4, min_workers=2, name=name)
    with pool:
        assert pool.stats().workers == 2
        assert live_workers(pool) == 2
        assert pool.submit(abs, -1).result(timeout=5) == 1
    assert live_workers(pool) == 0
    assert worker_threads(name) == []


# ---------------------------------------------------------------------- idle retirement


@pytest.mark.parametrize("low", [0, 1])
def test_idle_workers_retire_down_to_min_workers(make_pool: MakePool, gate: Any, low: int) -> None:
    name = unique_name()
    pool = make_pool(workers=4, min_workers=low or None, idle_timeout=0.05, name=name)
    with pool:
        tasks = [pool.submit(gate.task, i) for i in range(4)]
        gate.wait_started(4)
        assert pool.stats().workers == 4
        gate.open()
        assert [t.result(timeout=5) for t in tasks] == [0, 1, 2, 3]
        wait_until(lambda: pool.stats().workers == low)
        wait_until(lambda: live_workers(pool) == low)
        threading.Event().wait(0.3)  # six idle timeouts: a worker at min_workers must not retire
        assert live_workers(pool) == low
        assert pool.stats().workers == low
        # Retired workers come back on demand.
        again = [pool.submit(abs, -i) for i in range(6)]
        assert [t.result(timeout=5) for t in again] == list(range(6))


def test_no_idle_retirement_without_idle_timeout(make_pool: MakePool, gate: Any) -> None:
    name = unique_name()
    pool = make_pool(workers=3, name=name)
    tasks = [pool.submit(gate.task, i) for i in range(3)]
    gate.wait_started(3)
    gate.open()
    for t in tasks:
        t.result(timeout=5)
    assert live_workers(pool) == 3
    threading.Event().wait(0.2)  # no idle_timeout: nobody retires, however long it waits
    assert live_workers(pool) == 3
    assert pool.stats().workers == 3


# ---------------------------------------------------------------------- resize


def test_resize_up_lets_more_tasks_run_at_once(make_pool: MakePool, gate: Any, shared: Any) -> None:
    pool = make_pool(workers=1, queue_size=10)
    barrier = shared.barrier(2, timeout=5)

    def meet(i: int) -> int:
        gate.enter()
        barrier.wait()
        return i

    tasks = [pool.submit(meet, i) for i in range(2)]
    gate.wait_started(1)
    s = pool.stats()
    assert (s.running, s.queued, s.workers, s.max_workers) == (1, 1, 1, 1)
    assert gate.entered == 1
    pool.resize(2)
    assert pool.stats().max_workers == 2
    assert [t.result(timeout=5) for t in tasks] == [0, 1]  # they met: both ran at once


def test_resize_up_starts_only_the_workers_the_queue_needs(make_pool: MakePool, gate: Any) -> None:
    # Workers start on demand (API.md §1): two queued tasks need two more workers, not the
    # new maximum. Before, resize(n) started n workers at once (resize(200_000) on an
    # AsyncPool blocked its loop for seconds and held 200,000 tasks).
    pool = make_pool(workers=2, queue_size=10)
    tasks = [pool.submit(gate.task, i) for i in range(4)]
    gate.wait_started(2)
    pool.resize(500)
    gate.wait_started(4)  # the two queued ones started on the new workers
    s = pool.stats()
    assert (s.workers, s.max_workers, s.running) == (4, 500, 4)
    gate.open()
    assert [t.result(timeout=10) for t in tasks] == [0, 1, 2, 3]
    assert pool.stats().workers == 4


def test_resize_down_never_interrupts_running_tasks(
    make_pool: MakePool, gate: Any, shared: Any
) -> None:
    name = unique_name()
    pool = make_pool(workers=4, queue_size=10, name=name)
    tasks = [pool.submit(gate.task, i) for i in range(4)]
    gate.wait_started(4)
    pool.resize(1)
    s = pool.stats()
    assert s.max_workers == 1
    assert s.running == 4  # shrinking interrupted nothing
    assert not any(t.done() for t in tasks)
    gate.open()
    assert [t.result(timeout=5) for t in tasks] == [0, 1, 2, 3]
    # The pool converges to the new size ...
    wait_until(lambda: pool.stats().workers == 1)
    wait_until(lambda: live_workers(pool) == 1)
    # ... and runs one task at a time from now on.
    second = shared.gate()
    later = [pool.submit(second.task, i) for i in range(3)]
    second.wait_started(1)
    s = pool.stats()
    assert (s.running, s.queued, s.workers) == (1, 2, 1)
    assert second.entered == 1
    second.open()
    assert [t.result(timeout=5) for t in later] == [0, 1, 2]


def test_resize_down_with_queued_work_keeps_every_task(make_pool: MakePool, gate: Any) -> None:
    pool = make_pool(workers=3, queue_size=20)
    tasks = [pool.submit(gate.task, i) for i in range(10)]
    gate.wait_started(3)
    pool.resize(2)
    gate.open()
    assert [t.result(timeout=5) for t in tasks] == list(range(10))
    s = pool.stats()
    assert (s.succeeded, s.failed, s.cancelled) == (10, 0, 0)
    assert s.workers <= 2


def test_resize_below_min_workers_is_a_config_error(make_pool: MakePool) -> None:
    pool = make_pool(workers=4, min_workers=2)
    with pytest.raises(ConfigError, match="min_workers"):
        pool.resize(1)
    with pytest.raises(ConfigError):
        pool.resize(0)
    with pytest.raises(ConfigError):
        pool.resize("3")  # type: ignore[arg-type]
    assert pool.stats().max_workers == 4
    pool.resize(2)  # down to min_workers is fine
    assert pool.stats().max_workers == 2
