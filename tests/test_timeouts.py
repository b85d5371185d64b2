"""task_timeout, current_task() and cancelling a running task."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from workpool import (
    Pool,
    Retry,
    TaskCancelled,
    TaskContext,
    TaskError,
    TaskTimeout,
    WorkpoolError,
    current_task,
)

pytestmark = pytest.mark.timeout(15)

MakePool = Callable[..., Pool]


def test_task_timeout_delivers_while_the_task_is_still_blocked(
    make_pool: MakePool, gate: Any
) -> None:
    pool = make_pool(workers=2, task_timeout=0.1)
    task = pool.submit(gate.task, 1)
    error = task.exception(timeout=5)
    assert isinstance(error, TaskTimeout)
    assert isinstance(error, TimeoutError)  # executor code that catches TimeoutError works
    assert not gate.released.is_set()  # the call is still blocked: the result did not wait
    outcome = task.outcome(timeout=0)
    assert not outcome.ok and isinstance(outcome.error, TaskTimeout)
    assert outcome.attempts == 1
    s = pool.stats()
    assert (s.failed, s.timed_out, s.running, s.queued) == (1, 1, 0, 0)


def test_task_timeout_does_not_touch_tasks_that_finish_in_time(make_pool: MakePool) -> None:
    pool = make_pool(workers=2, task_timeout=5)
    assert [t.result(timeout=5) for t in [pool.submit(abs, -i) for i in range(10)]] == list(
        range(10)
    )
    assert pool.stats().timed_out == 0


# ---------------------------------------------------------------------- current_task()


def test_current_task_outside_a_task_raises() -> None:
    with pytest.raises(WorkpoolError):
        current_task()
    box: list[BaseException] = []

    def other() -> None:
        try:
            current_task()
        except BaseException as e:
            box.append(e)

    t = threading.Thread(target=other)
    t.start()
    t.join(5)
    assert len(box) == 1 and isinstance(box[0], WorkpoolError)


def test_current_task_in_the_caller_raises_while_the_pool_runs(make_pool: MakePool) -> None:
    pool = make_pool(workers=1)
    assert pool.submit(lambda: current_task().id).result(timeout=5) >= 1
    # The worker thread is idle now; current_task() from the caller still fails.
    with pytest.raises(WorkpoolError):
        current_task()


def test_current_task_fields_for_submit(make_pool: MakePool) -> None:
    pool = make_pool(workers=2, task_timeout=5)

    def probe() -> dict[str, Any]:
        ctx = current_task()
        ctx.raise_if_cancelled()  # not cancelled: does nothing
        # What the task saw comes back as its value (a task may run in another process).
        return dict(
            is_context=isinstance(ctx, TaskContext),
            id=ctx.id,
            attempt=ctx.attempt,
            deadline=ctx.deadline,
            remaining=ctx.remaining(),
            cancelled=ctx.cancelled,
            at=time.monotonic(),  # CLOCK_MONOTONIC is system-wide: comparable across processes
        )

    before = time.monotonic()
    task = pool.submit(probe)
    seen = task.result(timeout=5)
    assert seen["is_context"] is True
    assert seen["id"] == task.id
    assert seen["attempt"] == 1
    # Started between the submit and the probe, so the deadline lies in between + timeout.
    assert before + 5 <= seen["deadline"] <= seen["at"] + 5
    assert 0 < seen["remaining"] <= 5
    assert seen["cancelled"] is False


def test_current_task_without_timeout_has_no_deadline(make_pool: MakePool) -> None:
    pool = make_pool(workers=1)
    ctx_values = pool.submit(
        lambda: (current_task().deadline, current_task().remaining(), current_task().cancelled)
    ).result(timeout=5)
    assert ctx_values == (None, None, False)


def test_task_ids_are_unique_and_increasing(make_pool: MakePool) -> None:
    pool = make_pool(workers=3)
    tasks = [pool.submit(lambda: current_task().id) for _ in range(20)]
    assert [t.result(timeout=5) for t in tasks] == [t.id for t in tasks]
    ids = [t.id for t in tasks]
    assert ids == sorted(ids) and len(set(ids)) == 20


@pytest.mark.parametrize("ordered", [False, True])
def test_current_task_id_is_the_input_index_in_results(make_pool: MakePool, ordered: bool) -> None:
    pool = make_pool(workers=3)
    got = list(pool.results(lambda x: (current_task().id, x), range(300), ordered=ordered))
    assert sorted(r.index for r in got) == list(range(300))
    for r in got:
        assert r.ok
        assert r.value == (r.index, r.index)


def test_current_task_id_is_the_input_index_in_map(make_pool: MakePool) -> None:
    pool = make_pool(workers=3)
    assert list(pool.map(lambda _: current_task().id, "abcdefghij" * 20)) == list(range(200))


def test_current_task_attempt_counts_retries(make_pool: MakePool, shared: Any) -> None:
    pool = make_pool(workers=1, retries=Retry(3, backoff=0))
    attempts = shared.list()

    def flaky() -> int:
        attempt = current_task().attempt
        attempts.append(attempt)
        if attempt < 3:
            raise ValueError(attempt)
        return attempt

    task = pool.submit(flaky)
    assert task.result(timeout=5) == 3
    assert attempts[:] == [1, 2, 3]


@pytest.mark.skip_backend(
    "process",
    reason="the timed-out worker process is killed (API.md §4), so no code of the task runs "
    "on to observe current_task().cancelled; the kill is covered by test_process.py::"
    "test_a_timeout_of_a_submitted_task_arrives_promptly_and_kills_its_worker",
)
@pytest.mark.skip_backend(
    "dask",
    reason="the task reports what it saw through closures over this process's objects, "
    "which a Dask worker only gets copies of; covered with shared objects by test_dask.py::"
    "test_a_timeout_arrives_at_the_deadline_and_the_task_sees_cancelled",
)
def test_cancelled_turns_true_after_the_timeout(make_pool: MakePool, gate: Any) -> None:
    pool = make_pool(workers=1, task_timeout=0.1)
    seen: dict[str, Any] = {}
    observed = threading.Event()

    def slow() -> None:
        ctx = current_task()
        seen["before"] = ctx.cancelled
        gate.enter()
        gate.released.wait(10)
        # Released only after the pool reported the timeout.
        seen["after"] = ctx.cancelled
        seen["remaining"] = ctx.remaining()
        try:
            ctx.raise_if_cancelled()
        except BaseException as e:
            seen["raised"] = e
        # Asked again: the call runs on after its timeout, and is still its task.
        again = current_task()
        seen["again"] = (again.id, again.attempt, again.cancelled, again.deadline)
        seen["first"] = (ctx.id, ctx.attempt, True, ctx.deadline)
        observed.set()

    task = pool.submit(slow)
    assert isinstance(task.exception(timeout=5), TaskTimeout)
    gate.open()
    assert observed.wait(5)
    assert seen["before"] is False
    assert seen["after"] is True
    assert seen["remaining"] == 0.0
    assert isinstance(seen["raised"], TaskCancelled)
    assert seen["again"] == seen["first"]
    # The abandoned call's late return changes nothing.
    assert isinstance(task.exception(0), TaskTimeout)
    s = pool.stats()
    assert (s.succeeded, s.failed, s.timed_out) == (0, 1, 1)


def test_pool_stays_at_full_strength_after_a_timeout(
    make_pool: MakePool, gate: Any, shared: Any
) -> None:
    pool = make_pool(workers=2, task_timeout=0.5)
    hung = pool.submit(gate.task, "hung")
    gate.wait_started(1)
    assert isinstance(hung.exception(timeout=5), TaskTimeout)
    # The hung call still blocks at the gate (thread: abandoned) or is gone with its killed
    # worker (process); either way two workers must still run side by side.
    barrier = shared.barrier(2, timeout=5)
    pair = [pool.submit(barrier.wait) for _ in range(2)]
    assert sorted(t.result(timeout=5) for t in pair) == [0, 1]
    assert not gate.released.is_set()
    s = pool.stats()
    assert s.workers <= s.max_workers == 2


@pytest.mark.skip_backend(
    "process",
    reason="the killed call cannot observe current_task().cancelled (API.md §4: the worker is "
    "killed); covered by test_submit.py::"
    "test_cancel_a_running_task and test_process.py::test_cancelling_a_running_task_kills_its_worker",
)
@pytest.mark.skip_backend(
    "dask",
    reason="the task reports what it saw through closures over this process's objects, "
    "which a Dask worker only gets copies of; covered with shared objects by test_dask.py::"
    "test_cancel_of_a_running_task_arrives_at_once_and_the_task_sees_cancelled",
)
def test_cancel_running_task(make_pool: MakePool, gate: Any) -> None:
    pool = make_pool(workers=1)
    seen: dict[str, Any] = {}
    observed = threading.Event()

    def slow() -> str:
        ctx = current_task()
        gate.enter()
        gate.released.wait(10)
        seen["cancelled"] = ctx.cancelled
        # Asked again after the cancel: still its task (it runs on), cancelled.
        again = current_task()
        seen["again"] = (again.id, again.cancelled)
        seen["first"] = (ctx.id, True)
        observed.set()
        return "late"

    task = pool.submit(slow)
    gate.wait_started(1)
    assert task.running()
    assert task.cancel() is True
    assert task.done()  # at once, while the call is still blocked
    with pytest.raises(TaskCancelled):
        task.result(timeout=0)
    assert task.cancel() is False  # already finished
    gate.open()
    assert observed.wait(5)
    assert seen["cancelled"] is True
    assert seen["again"] == seen["first"]
    with pytest.raises(TaskCancelled):
        task.result(timeout=0)  # the late return did not overwrite the outcome
    # The pool carries on.
    assert pool.submit(abs, -5).result(timeout=5) == 5
    s = pool.stats()
    assert (s.cancelled, s.succeeded, s.running, s.queued) == (1, 1, 0, 0)


def test_cancel_right_after_submit_always_cancels(
    make_pool: MakePool, shared: Any, stop_latency: float
) -> None:
    # Task.cancel() may land in any state: queued, just taken by a worker, or running.
    # Each time the task must end cancelled (at once where the call is abandoned, once its
    # worker is killed where it is not) and the counters must still add up.
    pool = make_pool(workers=2)
    for n in range(300):
        release = shared.event()
        task = pool.submit(release.wait, 5)
        assert task.cancel() is True, n
        concurrent.futures.wait([task], timeout=stop_latency)
        assert task.done(), n
        assert task.cancelled() or isinstance(task.exception(0), TaskCancelled), n
        release.set()
        s = pool.stats()
        assert s.queued >= 0 and s.running >= 0, (n, s)
        assert s.submitted == s.queued + s.running + s.succeeded + s.failed + s.cancelled, (n, s)
    assert pool.join(timeout=5)
    s = pool.stats()
    assert (s.submitted, s.cancelled, s.succeeded, s.queued, s.running) == (300, 300, 0, 0, 0)


def test_cancel_queued_task(make_pool: MakePool, gate: Any, shared: Any) -> None:
    pool = make_pool(workers=1, queue_size=4)
    running = pool.submit(gate.task, 0)
    gate.wait_started(1)
    calls = shared.list()
    queued = pool.submit(calls.append, 1)
    assert queued.cancel() is True
    assert queued.cancelled()
    gate.open()
    assert running.result(timeout=5) == 0
    assert pool.join(timeout=5)
    assert calls[:] == []
    assert pool.stats().cancelled == 1


@pytest.mark.skip_backend(
    "dask",
    reason="with a task_timeout the dask backend sends one call per Dask task (each call's "
    "deadline starts on its worker): 1000 items are 1000 round trips; the hanging item among "
    "others is covered by test_one_hanging_item_in_map_raises_task_error_at_its_position",
)
@pytest.mark.parametrize("ordered", [False, True])
def test_one_hanging_item_among_many_tiny_ones(
    make_pool: MakePool, gate: Any, ordered: bool
) -> None:
    pool = make_pool(workers=2, task_timeout=0.2)
    hang_at = 137

    def work(x: int) -> int:
        if x == hang_at:
            gate.block()
        return 2 * x

    got = list(pool.results(work, range(1000), ordered=ordered))
    assert sorted(r.index for r in got) == list(range(1000))
    if ordered:
        assert [r.index for r in got] == list(range(1000))
    failed = [r for r in got if not r.ok]
    assert [r.index for r in failed] == [hang_at]
    assert isinstance(failed[0].error, TaskTimeout)
    assert all(r.value == 2 * r.index for r in got if r.ok)
    s = pool.stats()
    assert (s.submitted, s.succeeded, s.failed, s.timed_out) == (1000, 999, 1, 1)


def test_one_hanging_item_in_map_raises_task_error_at_its_position(
    make_pool: MakePool, gate: Any
) -> None:
    pool = make_pool(workers=2, task_timeout=0.2)

    def work(x: int) -> int:
        if x == 50:
            gate.block()
        return x

    values: list[int] = []
    with pytest.raises(TaskError) as info:
        for v in pool.map(work, range(200)):
            values.append(v)
    assert values == list(range(50))
    assert isinstance(info.value.__cause__, TaskTimeout)
    assert info.value.result.index == 50
