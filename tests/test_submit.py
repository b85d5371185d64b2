"""submit / try_submit: Tasks, their Results, backpressure, closing, and executor interop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

import pytest

from handshakes import wait_until
from workpool import Pool, PoolClosed, Result, Task, TaskCancelled

MakePool = Callable[..., Pool]


# How long a "this must not happen" check waits before concluding it did not happen. The
# ordering itself is proven by state (gate.released at the moment of return), not by time.
NOT_YET = 0.2


def explode(x: int) -> int:
    raise ValueError(f"bad {x}")


def add(a: int, b: int = 0, *, c: int = 0) -> int:
    return a + b + c


class CustomBase(BaseException):
    """A BaseException that is neither SystemExit nor KeyboardInterrupt."""


class BlockedSubmit:
    """Runs ``pool.submit(fn, *args)`` in a helper thread and records what it saw on return."""

    def __init__(self, submit: Callable[[], Any], gate: Any) -> None:
        self.entered = threading.Event()
        self.returned = threading.Event()
        self.gate_open_at_return: bool | None = None
        self.task: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            self.entered.set()
            try:
                self.task = submit()
            except BaseException as e:
                self.error = e
            self.gate_open_at_return = gate.released.is_set()
            self.returned.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert self.entered.wait(5)

    def join(self) -> None:
        assert self.returned.wait(10), "submit never returned"
        self.thread.join(5)


# -- Task basics


@pytest.mark.timeout(10)
def test_submit_returns_tasks_with_unique_increasing_ids(make_pool: MakePool) -> None:
    pool = make_pool(workers=4)
    tasks = [pool.submit(abs, -i) for i in range(50)]
    for t in tasks:
        assert isinstance(t, Task)
        assert isinstance(t, concurrent.futures.Future)
        assert isinstance(t.id, int)
    ids = [t.id for t in tasks]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert [t.result(timeout=5) for t in tasks] == list(range(50))


@pytest.mark.timeout(10)
def test_ids_stay_unique_across_threads(make_pool: MakePool) -> None:
    pool = make_pool(workers=4, queue_size=100)
    tasks: list[Task[int]] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def submitter() -> None:
        start.wait(5)
        for i in range(25):
            t = pool.submit(abs, i)
            with lock:
                tasks.append(t)

    threads = [threading.Thread(target=submitter) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    assert len({t.id for t in tasks}) == 100
    concurrent.futures.wait(tasks, timeout=5)
    assert all(t.done() for t in tasks)


@pytest.mark.timeout(10)
def test_result_and_exception(make_pool: MakePool) -> None:
    pool = make_pool(workers=2)
    good = pool.submit(pow, 2, 10)
    bad = pool.submit(explode, 3)
    assert good.result(timeout=5) == 1024
    assert good.exception(timeout=5) is None
    err = bad.exception(timeout=5)
    assert isinstance(err, ValueError) and str(err) == "bad 3"
    with pytest.raises(ValueError, match="bad 3"):
        bad.result(timeout=5)


@pytest.mark.timeout(20)
def test_another_task_finishing_does_not_end_a_wait_early(make_pool: MakePool, gate: Any) -> None:
    # The futures of a pool share a few conditions (one per stripe of task ids), so a task
    # finishing wakes the waiters of its whole stripe. A woken waiter whose task is not done
    # must wait on: result(timeout=30) must neither raise TimeoutError nor return early.
    pool = make_pool(workers=2)
    waited = pool.submit(gate.task, 7)
    gate.wait_started(1)
    got: list[Any] = []

    def wait() -> None:
        try:
            got.append(waited.result(timeout=30))
        except BaseException as e:
            got.append(e)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    condition = waited._condition
    wait_until(lambda: len(condition._waiters) == 1)  # type: ignore[attr-defined]
    while True:  # a quick task of the same stripe: it shares the condition
        other = pool.submit(int, 1)
        if other._condition is condition:
            break
    assert other.result(timeout=5) == 1  # its notify_all woke the waiter
    # The waiter waits again (or, if it was wrong, it ended with a TimeoutError).
    wait_until(lambda: len(condition._waiters) == 1 or not waiter.is_alive())  # type: ignore[attr-defined]
    assert waiter.is_alive() and got == []
    gate.open()
    waiter.join(10)
    assert got == [7]


@pytest.mark.timeout(10)
def test_args_and_kwargs_are_passed(make_pool: MakePool) -> None:
    pool = make_pool(workers=2)
    assert pool.submit(add, 1, 2, c=30).result(timeout=5) == 33
    assert pool.submit(add, 1, c=5).result(timeout=5) == 6
    assert pool.submit(add, a=7).result(timeout=5) == 7
    assert pool.try_submit(add, 1, b=1, c=1).result(timeout=5) == 3  # type: ignore[union-attr]


@pytest.mark.timeout(10)
def test_outcome_of_a_success(make_pool: MakePool) -> None:
    pool = make_pool(workers=2)
    task = pool.submit(add, 4, 5)
    r = task.outcome(timeout=5)
    assert isinstance(r, Result)
    assert r.ok
    assert r.index == task.id
    assert r.item == (4, 5)
    assert r.value == 9
    assert r.error is None
    assert r.traceback is None
    assert r.attempts == 1
    assert r.duration >= 0
    assert r.unwrap() == 9


def failing_with_a_recognisable_name(x: int) -> int:
    raise KeyError(x)


@pytest.mark.timeout(10)
def test_outcome_of_a_failure(make_pool: MakePool) -> None:
    pool = make_pool(workers=2)
    task = pool.submit(failing_with_a_recognisable_name, 8)
    r = task.outcome(timeout=5)  # never raises the task's error
    assert not r.ok
    assert r.index == task.id
    assert r.item == (8,)
    assert r.value is None
    assert isinstance(r.error, KeyError) and r.error.args == (8,)
    assert isinstance(r.traceback, str)
    assert "failing_with_a_recognisable_name" in r.traceback
    assert "KeyError" in r.traceback
    assert r.attempts == 1
    assert r.duration >= 0
    with pytest.raises(KeyError):
        r.unwrap()


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("wait", "timeout"), [("result", 0.05), ("exception", 0), ("outcome", 0.05)]
)
def test_waiting_for_a_running_task_times_out(
    make_pool: MakePool, gate: Any, wait: str, timeout: float
) -> None:
    pool = make_pool(workers=1)
    task = pool.submit(gate.task, 1)
    gate.wait_started(1)
    with pytest.raises(TimeoutError):
        getattr(task, wait)(timeout=timeout)
    gate.open()
    assert task.result(timeout=5) == 1 and task.exception(timeout=5) is None
    assert task.outcome(timeout=5).value == 1


# -- try_submit and backpressure


def _fill(pool: Pool, gate: Any, running: int, queued: int) -> list[Task[Any]]:
    """Occupy ``running`` workers with gated tasks, then ``queued`` places in the queue."""
    tasks = [pool.submit(gate.task, i) for i in range(running)]
    gate.wait_started(running)
    tasks += [pool.submit(gate.task, running + i) for i in range(queued)]
    return tasks


@pytest.mark.timeout(10)
def test_try_submit_returns_none_when_full_and_never_blocks(make_pool: MakePool, gate: Any) -> None:
    pool = make_pool(workers=1, queue_size=2)
    tasks = _fill(pool, gate, running=1, queued=2)
    # Full: try_submit answers at once (the test would time out if it blocked).
    for _ in range(5):
        assert pool.try_submit(abs, -1) is None
    s = pool.stats()
    assert (s.submitted, s.running, s.queued) == (3, 1, 2)
    gate.open()
    assert [t.result(timeout=5) for t in tasks] == [0, 1, 2]
    pool.join(timeout=5)
    t = pool.try_submit(abs, -7)
    assert t is not None and t.result(timeout=5) == 7


@pytest.mark.timeout(10)
def test_submit_blocks_while_the_queue_is_full(make_pool: MakePool, gate: Any) -> None:
    pool = make_pool(workers=1, queue_size=1)
    tasks = _fill(pool, gate, running=1, queued=1)
    blocked = BlockedSubmit(lambda: pool.submit(abs, -5), gate)
    assert not blocked.returned.wait(NOT_YET), "submit returned while the queue was full"
    assert pool.stats().submitted == 2  # the blocked task was not accepted
    gate.open()
    blocked.join()
    assert blocked.error is None
    assert blocked.gate_open_at_return is True  # it returned only after a worker freed a slot
    assert blocked.task.result(timeout=5) == 5
    assert [t.result(timeout=5) for t in tasks] == [0, 1]


@pytest.mark.timeout(10)
def test_queue_size_zero_is_a_hand_off(make_pool: MakePool, gate: Any) -> None:
    pool = make_pool(workers=2, queue_size=0)
    # Each submit finds a free worker...
    tasks = [pool.submit(gate.task, 0), pool.submit(gate.task, 1)]
    gate.wait_started(2)
    s = pool.stats()
    assert (s.running, s.queued) == (2, 0)
    # ...then none is free: nothing may wait in a queue.
    assert pool.try_submit(abs, 1) is None
    blocked = BlockedSubmit(lambda: pool.submit(abs, -3), gate)
    assert not blocked.returned.wait(NOT_YET), "hand-off submit returned with no free worker"
    gate.open()
    blocked.join()
    assert blocked.error is None and blocked.gate_open_at_return is True
    assert blocked.task.result(timeout=5) == 3
    assert [t.result(timeout=5) for t in tasks] == [0, 1]


# -- closing


@pytest.mark.parametrize("how", ["close", "shutdown"])
@pytest.mark.timeout(10)
def test_submit_after_close_raises_pool_closed(make_pool: MakePool, how: str) -> None:
    pool = make_pool(workers=1)
    accepted = pool.submit(abs, -1)
    getattr(pool, how)()
    with pytest.raises(PoolClosed, match="closed"):
        pool.submit(abs, 2)
    with pytest.raises(PoolClosed):
        pool.try_submit(abs, 2)
    assert accepted.result(timeout=5) == 1  # accepted work still ran
    assert pool.stats().submitted == 1


@pytest.mark.timeout(10)
def test_blocked_submit_raises_pool_closed_when_the_pool_closes(
    make_pool: MakePool, gate: Any
) -> None:
    pool = make_pool(workers=1, queue_size=0)
    first = pool.submit(gate.task, 1)
    gate.wait_started(1)
    blocked = BlockedSubmit(lambda: pool.submit(abs, 1), gate)
    assert not blocked.returned.wait(NOT_YET)
    pool.close()
    blocked.join()
    assert isinstance(blocked.error, PoolClosed)
    gate.open()
    assert first.result(timeout=5) == 1


# -- executor interop


@pytest.mark.timeout(10)
def test_works_with_concurrent_futures_wait_and_as_completed(
    make_pool: MakePool, gate: Any
) -> None:
    pool = make_pool(workers=3)
    slow = pool.submit(gate.task, "slow")
    gate.wait_started(1)
    fast = [pool.submit(abs, -i) for i in range(5)]
    done, not_done = concurrent.futures.wait(
        fast, timeout=5, return_when=concurrent.futures.ALL_COMPLETED
    )
    assert done == set(fast) and not not_done
    first_done, _ = concurrent.futures.wait([slow, *fast], return_when="FIRST_COMPLETED")
    assert slow not in first_done

    order: list[Any] = []
    for f in concurrent.futures.as_completed([slow, *fast], timeout=5):
        order.append(f)
        if len(order) == len(fast):
            gate.open()  # the slow one can only finish after every fast one came out
    assert order[-1] is slow
    assert slow.result() == "slow"


@pytest.mark.timeout(10)
def test_works_with_run_in_executor(make_pool: MakePool) -> None:
    pool = make_pool(workers=4)

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        futs = [loop.run_in_executor(pool, pow, i, 2) for i in range(10)]
        values = await asyncio.gather(*futs)
        with pytest.raises(ValueError, match="bad 1"):
            await loop.run_in_executor(pool, explode, 1)
        return list(values)

    assert asyncio.run(main()) == [i * i for i in range(10)]


@pytest.mark.timeout(10)
def test_pool_map_as_executor_map_with_several_iterables(make_pool: MakePool) -> None:
    # Code written for Executor.map(fn, *iterables) keeps working.
    pool = make_pool(workers=2)
    assert list(pool.map(pow, [2, 3], [3, 2])) == [8, 9]


# -- BaseException in a task


def raise_system_exit() -> None:
    raise SystemExit(3)


def raise_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def raise_custom_base() -> None:
    raise CustomBase("custom")


@pytest.mark.parametrize(
    ("fn", "kind"),
    [
        (raise_system_exit, SystemExit),
        (raise_keyboard_interrupt, KeyboardInterrupt),
        (raise_custom_base, CustomBase),
    ],
)
@pytest.mark.timeout(10)
def test_base_exception_is_the_tasks_error_and_the_pool_keeps_working(
    make_pool: MakePool, fn: Callable[[], None], kind: type[BaseException]
) -> None:
    pool = make_pool(workers=1)
    tasks = [pool.submit(fn) for _ in range(3)]
    for t in tasks:
        assert isinstance(t.exception(timeout=5), kind)
        r = t.outcome(timeout=5)
        assert isinstance(r.error, kind) and not r.ok
        assert r.traceback is not None and fn.__name__ in r.traceback
    # The single worker survived (or was replaced): more work still runs.
    assert pool.submit(abs, -4).result(timeout=5) == 4
    assert list(pool.map(abs, [-1, -2, -3])) == [1, 2, 3]
    s = pool.stats()
    assert s.failed == 3 and s.succeeded == 4
    assert s.workers <= 1


# -- Task.cancel


@pytest.mark.timeout(10)
def test_cancel_a_queued_task(make_pool: MakePool, gate: Any, shared: Any) -> None:
    pool = make_pool(workers=1, queue_size=4)
    ran = shared.list()
    running = pool.submit(gate.task, "first")
    gate.wait_started(1)
    victim = pool.submit(ran.append, 1)
    after = pool.submit(ran.append, 2)
    assert victim.cancel() is True
    assert victim.cancelled() and victim.done()
    with pytest.raises(concurrent.futures.CancelledError):
        victim.result(timeout=5)
    gate.open()
    assert running.result(timeout=5) == "first"
    assert after.result(timeout=5) is None
    assert pool.join(timeout=5)
    assert ran[:] == [2]  # the cancelled task never ran
    s = pool.stats()
    assert (s.submitted, s.succeeded, s.cancelled, s.queued, s.running) == (3, 2, 1, 0, 0)
    assert after.cancel() is False  # a finished task cannot be cancelled


def _cancelled_queued_task(pool: Pool, gate: Any) -> Task[Any]:
    pool.submit(gate.task, 0)
    gate.wait_started(1)
    victim = pool.submit(abs, 1)
    assert victim.cancel() is True
    return victim


@pytest.mark.timeout(10)
def test_a_cancelled_queued_task_is_done_for_wait_and_as_completed(
    make_pool: MakePool, gate: Any
) -> None:
    # A plain Future cancelled by its executor is seen as done by wait()/as_completed(); a
    # Task must be too, or code waiting on a batch of tasks hangs on a cancelled one.
    pool = make_pool(workers=1, queue_size=2)
    victim = _cancelled_queued_task(pool, gate)
    done, _ = concurrent.futures.wait([victim], timeout=1)
    assert victim in done
    assert list(concurrent.futures.as_completed([victim], timeout=1)) == [victim]


@pytest.mark.timeout(10)
def test_outcome_of_a_cancelled_queued_task(make_pool: MakePool, gate: Any) -> None:
    pool = make_pool(workers=1, queue_size=2)
    victim = _cancelled_queued_task(pool, gate)
    got: list[Result[Any]] = []
    waiter = threading.Thread(target=lambda: got.append(victim.outcome()), daemon=True)
    waiter.start()
    waiter.join(2)
    assert got, "outcome() of a cancelled task did not return"
    r = got[0]
    assert not r.ok and isinstance(r.error, concurrent.futures.CancelledError)
    assert r.attempts == 0
    assert r.index == victim.id


@pytest.mark.timeout(10)
def test_cancel_twice_answers_like_a_future(make_pool: MakePool, gate: Any) -> None:
    # concurrent.futures.Future.cancel() returns True again for a cancelled future.
    pool = make_pool(workers=1, queue_size=2)
    pool.submit(gate.task, 0)
    gate.wait_started(1)
    victim = pool.submit(abs, 1)
    plain: concurrent.futures.Future[int] = concurrent.futures.Future()
    assert plain.cancel() is True and plain.cancel() is True
    assert victim.cancel() is True
    assert victim.cancel() is True
    assert victim.cancelled()


@pytest.mark.timeout(10)
def test_cancel_a_running_task(make_pool: MakePool, gate: Any) -> None:
    pool = make_pool(workers=1)
    task = pool.submit(gate.task, 1)
    gate.wait_started(1)
    assert task.cancel() is True
    with pytest.raises(concurrent.futures.CancelledError):
        task.result(timeout=5)
    assert isinstance(task.exception(timeout=5), TaskCancelled)
    # It ran: it ends with TaskCancelled (a CancelledError), and cancelled() is False, which
    # says "never ran" (a queued task cancelled; the shutdown report's unstarted).
    assert task.done() and not task.cancelled()
    assert task.outcome(timeout=5).error is task.exception()
    gate.open()
    # A replacement keeps the pool at full strength.
    assert pool.submit(abs, -2).result(timeout=5) == 2


# -- cancel() tells the truth


def _announce_and_return(started: Any, x: int) -> int:
    started.set()
    return x


@pytest.mark.timeout(60)
def test_cancel_returns_true_only_when_the_task_ends_cancelled(
    make_pool: MakePool, shared: Any, backend: str
) -> None:
    # cancel() lands right around the moment the task returns: a True must mean the task
    # ended cancelled (a caller that requeues on True would otherwise run it twice).
    pool = make_pool(workers=2)
    said_true = ended_with_value = 0
    for i in range(200 if backend == "thread" else 40):
        started = shared.event()
        task = pool.submit(_announce_and_return, started, i)
        assert started.wait(10)
        said = task.cancel()
        try:
            value = task.result(timeout=10)
        except concurrent.futures.CancelledError:
            assert said is True, f"iteration {i}: cancel() said False, the task was cancelled"
            said_true += 1
        else:
            assert said is False, f"iteration {i}: cancel() said True, the task returned"
            assert value == i
            ended_with_value += 1
    assert said_true + ended_with_value == (200 if backend == "thread" else 40)


@pytest.mark.timeout(10)
@pytest.mark.skip_backend(
    "process",
    reason="the landing spot is made certain by holding the engine's lock while the worker "
    "thread finishes the call, which a worker process does not wait for; the process race is "
    "covered by test_cancel_returns_true_only_when_the_task_ends_cancelled",
)
@pytest.mark.skip_backend(
    "dask",
    reason="the outcome comes back from the cluster whole, and a cancel asked before the slot "
    "settled it counts (as on process); covered by "
    "test_cancel_returns_true_only_when_the_task_ends_cancelled",
)
def test_cancel_of_a_task_whose_call_just_returned_says_false(
    make_pool: MakePool, gate: Any
) -> None:
    pool = make_pool(workers=1)
    task = pool.submit(gate.task, 7)
    gate.wait_started(1)
    unit = task._unit
    assert unit is not None
    with pool._engine._lock:  # the worker cannot settle the task while this is held
        gate.open()
        wait_until(lambda: len(unit.out) == 1)  # the call returned
        assert task.cancel() is False
    assert task.result(timeout=5) == 7
    assert not task.cancelled()


@pytest.mark.timeout(20)
def test_cancel_of_a_running_task_never_waits_for_the_worker(
    make_pool: MakePool, gate: Any
) -> None:
    # The engine calls the backend's stop() with its lock held: stop must schedule the end of
    # the call (a kill signal, a flag, a cancel on a loop) and return, never wait for the
    # worker. A cancel() that waited would take as long as the stuck task (30 s here).
    import time

    pool = make_pool(workers=1)
    task = pool.submit(gate.task, 1)
    gate.wait_started(1)
    began = time.monotonic()
    assert task.cancel() is True
    assert time.monotonic() - began < 2.0  # generous for a loaded machine; the task waits 30 s
    with pytest.raises(concurrent.futures.CancelledError):
        task.result(timeout=10)
    gate.open()


def test_a_backend_that_raises_fails_that_task_and_the_pool_goes_on(
    make_pool: MakePool, backend: str
) -> None:
    # A bug in a backend's run must not leave its unit running forever (every join and the
    # exit-time drain would then wait for it): the task fails saying so, the pool goes on.
    pool = make_pool(workers=1)
    be = pool._engine.backend
    name = "arun" if pool._engine.caps.driver == "asyncio" else "run"
    real = getattr(be, name)
    calls = []

    def broken_once(slot: Any, unit: Any) -> Any:
        calls.append(unit)
        if len(calls) == 1:
            raise RuntimeError("a backend bug")
        return real(slot, unit)

    setattr(be, name, broken_once)
    first = pool.submit(abs, -1)
    error = first.exception(timeout=30)
    assert type(error).__name__ == "WorkpoolError" and "a backend bug" in str(error)
    assert error is not None and isinstance(error.__cause__, RuntimeError)
    assert pool.submit(abs, -2).result(timeout=30) == 2
    assert pool.stats().failed == 1
    assert pool.shutdown(timeout=30).finished
