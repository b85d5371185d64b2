"""A task that submits into its own full pool: it waits while progress is possible, and gets
WouldDeadlock instead of hanging when every worker is stuck doing the same."""

from __future__ import annotations

import concurrent.futures
import pickle
import threading
from collections.abc import Callable
from typing import Any

import pytest

from handshakes import wait_until
from workpool import Pool, WorkpoolError, WouldDeadlock

MakePool = Callable[..., Pool]

pytestmark = pytest.mark.timeout(15)

# A nested submit needs the task to hold this process's Pool object. A task in a worker
# process only gets a pickled copy of what it closes over, and a Pool does not pickle: there
# the situation cannot arise (test_a_task_that_holds_its_pool_fails_to_pickle shows what
# happens instead).
nested = pytest.mark.skip_backend(
    "process",
    "dask",
    reason="a task in a worker process (process, dask) has no handle on the parent's pool, so it cannot "
    "submit into it; covered by test_a_task_that_holds_its_pool_fails_to_pickle",
)


NOT_YET = 0.2  # how long a "must not happen yet" check waits


def _assert_healthy(pool: Pool) -> None:
    assert pool.submit(pow, 2, 5).result(timeout=5) == 32
    assert list(pool.map(abs, range(-20, 0))) == list(range(20, 0, -1))
    assert pool.join(timeout=5)
    s = pool.stats()
    assert s.queued == 0 and s.running == 0
    assert s.submitted == s.succeeded + s.failed + s.cancelled


@nested
def test_nested_submit_waits_while_another_worker_can_free_a_slot(
    make_pool: MakePool, gate: Any
) -> None:
    pool = make_pool(workers=2, queue_size=1)
    go = threading.Event()
    outer_started = threading.Event()
    nested_returned = threading.Event()
    gate_open_when_nested_returned: list[bool] = []

    def outer() -> int:
        outer_started.set()
        assert go.wait(10)
        inner = pool.submit(pow, 3, 2)  # the queue is full: waits for the other worker
        gate_open_when_nested_returned.append(gate.released.is_set())
        nested_returned.set()
        value: int = inner.result(timeout=10)
        return value + 1

    blocker = pool.submit(gate.task, "blocker")
    gate.wait_started(1)
    task = pool.submit(outer)
    assert outer_started.wait(5)
    queued = pool.submit(abs, -1)  # fills the queue
    go.set()
    assert not nested_returned.wait(NOT_YET), "nested submit passed a full queue"
    gate.open()  # the blocker ends, its worker takes the queued task: a slot frees
    assert task.result(timeout=10) == 10
    assert gate_open_when_nested_returned == [True]
    assert blocker.result(timeout=5) == "blocker"
    assert queued.result(timeout=5) == 1
    _assert_healthy(pool)


@nested
@pytest.mark.parametrize("queue_size", [0, 1])
def test_every_worker_blocked_in_a_nested_submit_raises_would_deadlock(
    make_pool: MakePool, queue_size: int
) -> None:
    workers = 2
    pool = make_pool(workers=workers, queue_size=queue_size)
    all_running = threading.Barrier(workers)

    def inner(x: int) -> int:
        return x * 10

    def outer(k: int) -> list[int]:
        all_running.wait(10)  # every worker holds an outer task: nobody can take inner work
        tasks = [pool.submit(inner, k * 100 + j) for j in range(queue_size + 1)]
        return [t.result(timeout=10) for t in tasks]

    outers = [pool.submit(outer, k) for k in range(workers)]
    _, not_done = concurrent.futures.wait(outers, timeout=10)
    assert not not_done, "a nested submit hung instead of raising WouldDeadlock"
    errors = [t.exception() for t in outers]
    deadlocks = [e for e in errors if isinstance(e, WouldDeadlock)]
    assert deadlocks, f"expected WouldDeadlock, got {errors!r}"
    assert isinstance(deadlocks[0], WorkpoolError)
    assert "try_submit" in str(deadlocks[0])
    assert pool.name in str(deadlocks[0])
    # Whoever did not get WouldDeadlock completed normally once a worker freed up.
    for k, t in enumerate(outers):
        if t.exception() is None:
            assert t.result() == [(k * 100 + j) * 10 for j in range(queue_size + 1)]
    _assert_healthy(pool)


@nested
@pytest.mark.parametrize("workers", [1, 2])
def test_every_worker_waiting_for_a_task_of_its_own_pool_raises_would_deadlock(
    make_pool: MakePool, workers: int
) -> None:
    # The queue has room, so the nested submits pass; then every worker waits, with no
    # timeout, for a task that only a worker of this pool could run: it hung for ever
    # (an outside tester's finding). The last worker to wait so gets WouldDeadlock.
    pool = make_pool(workers=workers)
    all_running = threading.Barrier(workers)

    def outer(k: int) -> int:
        all_running.wait(10)  # every worker holds an outer task
        inner = pool.submit(pow, k, 2)
        value: int = inner.result()
        return value

    outers = [pool.submit(outer, k) for k in range(workers)]
    _, not_done = concurrent.futures.wait(outers, timeout=10)
    assert not not_done, "every worker waited for ever"
    errors = [t.exception() for t in outers]
    deadlocks = [e for e in errors if isinstance(e, WouldDeadlock)]
    assert len(deadlocks) == 1, errors  # the one that completed the circle
    assert pool.name in str(deadlocks[0]) and "more workers" in str(deadlocks[0])
    # The others went on once that worker was free: their inner tasks ran.
    for k, t in enumerate(outers):
        if t.exception() is None:
            assert t.result() == k * k
    _assert_healthy(pool)


@nested
def test_a_task_waiting_for_one_of_its_pool_while_a_worker_is_free_just_waits(
    make_pool: MakePool,
) -> None:
    pool = make_pool(workers=2)

    def outer() -> list[int]:
        # One worker waits, the other runs what it waits for (one after another).
        return [pool.submit(pow, k, 2).result() for k in range(5)]

    assert pool.submit(outer).result(timeout=10) == [0, 1, 4, 9, 16]
    _assert_healthy(pool)


@pytest.mark.skip_backend(
    "process",
    "dask",
    reason="a task in a worker process has no handle on the parent's pool (and a killed "
    "worker's task is never abandoned to run on)",
)
def test_an_abandoned_task_blocked_on_the_pool_leaves_the_deadlock_count(
    make_pool: MakePool,
) -> None:
    # A cancelled call runs on in its thread (abandoned) and blocks in a nested submit: it
    # is no worker of the pool any more. A live task that then waits for a running task of
    # the pool got WouldDeadlock ("all 2 of its workers were waiting"), wrongly (a
    # reviewer's finding): the running task would have finished.
    pool = make_pool(workers=2, queue_size=0)
    a_started, go_submit, c_go, d_release = (threading.Event() for _ in range(4))

    def a() -> Any:
        a_started.set()
        go_submit.wait(10)
        return pool.submit(abs, -1)  # hand-off, every live worker busy: it waits

    def d() -> str:
        d_release.wait(10)
        return "d done"

    def c(task: Any) -> str:
        c_go.wait(10)
        try:
            return str(task.result())  # d runs on the other live worker
        except WouldDeadlock as e:
            return f"WouldDeadlock: {e}"

    ta = pool.submit(a)
    assert a_started.wait(10)
    td = pool.submit(d)
    assert ta.cancel() is True  # a is abandoned, running on; a new worker replaces it
    tc = pool.submit(c, td)
    go_submit.set()
    wait_until(lambda: pool.stats().blocked_submitters == 1, 10)  # a waits in its submit
    c_go.set()
    wait_until(lambda: bool(pool._engine._result_waiters), 10)  # c waits for d
    d_release.set()
    assert tc.result(timeout=10) == "d done"
    assert td.result(timeout=10) == "d done"


@nested
def test_map_task_that_submits_into_its_own_full_pool(make_pool: MakePool) -> None:
    # The same situation reached through map: the nested submits fail fast instead of hanging.
    workers, n = 2, 3
    pool = make_pool(workers=workers, queue_size=1)
    all_running = threading.Barrier(workers)

    def outer(k: int) -> int:
        if k < workers:
            all_running.wait(10)  # items 0 and 1 hold both workers
        # Two nested submits each: more than the queue can take while both workers do this.
        inner = [pool.submit(abs, -k) for _ in range(2)]
        return len(inner)

    results = list(pool.results(outer, range(n), chunksize=1))
    assert sorted(r.index for r in results) == list(range(n))
    assert any(isinstance(r.error, WouldDeadlock) for r in results)
    for r in results:
        assert r.ok or isinstance(r.error, WouldDeadlock)
        if r.ok:
            assert r.value == 2
    _assert_healthy(pool)


@nested
def test_try_submit_from_a_task_into_its_full_pool_returns_none(
    make_pool: MakePool, gate: Any
) -> None:
    pool = make_pool(workers=1, queue_size=0)

    def outer() -> Any:
        return pool.try_submit(abs, -1)

    assert pool.submit(outer).result(timeout=5) is None
    _assert_healthy(pool)


@nested
def test_nested_submit_with_room_just_works(make_pool: MakePool) -> None:
    # Two outer tasks on three workers: a worker is always free for the inner work.
    pool = make_pool(workers=3, queue_size=2)

    def outer(k: int) -> int:
        inner = [pool.submit(abs, -(k + j)) for j in range(3)]
        return sum(t.result(timeout=10) for t in inner)

    outers = [pool.submit(outer, k) for k in range(2)]
    assert [t.result(timeout=10) for t in outers] == [3, 6]
    _assert_healthy(pool)


def test_a_submit_from_outside_the_pool_never_gets_would_deadlock(
    make_pool: MakePool, gate: Any
) -> None:
    # Every worker busy and the queue full, but the submitter is not one of the pool's
    # tasks: plain backpressure, it waits.
    pool = make_pool(workers=1, queue_size=0)
    first = pool.submit(gate.task, 1)
    gate.wait_started(1)
    got: list[Any] = []
    submitter = threading.Thread(target=lambda: got.append(pool.submit(abs, -2)), daemon=True)
    submitter.start()
    submitter.join(NOT_YET)
    assert submitter.is_alive() and not got
    gate.open()
    submitter.join(5)
    assert got and got[0].result(timeout=5) == 2
    assert first.result(timeout=5) == 1


@pytest.mark.skip_backend(
    "thread",
    "async",
    reason="tasks share the pool object with the caller: nested submits work, as the tests "
    "above show",
)
def test_a_task_that_holds_its_pool_fails_to_pickle(make_pool: MakePool) -> None:
    # Where tasks run in another process, a task that would submit into its own pool cannot
    # even get there: the pool does not pickle. The task fails at once with a message that
    # says so (no hang, no WouldDeadlock), and the pool carries on.
    pool = make_pool(workers=2, queue_size=0)

    def outer(k: int) -> int:
        return pool.submit(abs, -k).result(timeout=5)

    error = pool.submit(outer, 1).exception(timeout=10)
    assert isinstance(error, pickle.PicklingError), error
    assert "could not be pickled" in str(error) and "outer" in str(error)
    results = list(pool.results(outer, range(3)))
    assert sorted(r.index for r in results) == [0, 1, 2]
    assert all(isinstance(r.error, pickle.PicklingError) for r in results)
    _assert_healthy(pool)
