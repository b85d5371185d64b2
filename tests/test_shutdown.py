"""close, join, shutdown and the context manager: nothing accepted is ever silently dropped."""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from workpool import Pool, PoolClosed, Result, ShutdownReport, Task, TaskCancelled, WorkpoolError

pytestmark = pytest.mark.timeout(15)

MakePool = Callable[..., Pool]


class Fatal(BaseException):
    """A BaseException raised by a task: it must still end up as the task's error."""


def fail(i: int) -> int:
    raise ValueError(f"task {i} failed")


def fatal(i: int) -> int:
    raise Fatal(i)


def unique_name() -> str:
    return f"wp-test-{uuid.uuid4().hex[:10]}"


def pool_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if name in t.name and t.is_alive()]


def _holder(gate: Any, holders: Any) -> Callable[[int], int]:
    """A gated task that first records the name of the thread running it in ``holders``."""

    def hold(i: int) -> int:
        holders.append(threading.current_thread().name)
        return int(gate.block(i))

    return hold


def classify(tasks: list[Task[Any]]) -> tuple[int, int, int]:
    """(succeeded, failed, cancelled) over finished tasks, the way the pool counts them."""
    ok = failed = cancelled = 0
    for t in tasks:
        assert t.done(), f"task {t.id} was accepted but never finished: {t!r}"
        if t.cancelled() or isinstance(t.exception(0), TaskCancelled):
            cancelled += 1
        elif t.exception(0) is not None:
            failed += 1
        else:
            ok += 1
    return ok, failed, cancelled


# ---------------------------------------------------------------------- close / join


def test_close_is_idempotent_and_thread_safe(make_pool: MakePool) -> None:
    pool = make_pool(workers=2)
    accepted = pool.submit(pow, 2, 10)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def closer() -> None:
        try:
            barrier.wait(5)
            for _ in range(50):
                pool.close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=closer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []
    assert pool.closed
    pool.close()  # once more, from the main thread
    assert accepted.result(timeout=5) == 1024  # accepted before close: still runs


def test_submit_after_close_raises_pool_closed(make_pool: MakePool) -> None:
    pool = make_pool(workers=2)
    pool.close()
    with pytest.raises(PoolClosed):
        pool.submit(abs, -1)
    with pytest.raises(PoolClosed):
        pool.try_submit(abs, -1)
    with pytest.raises(PoolClosed):
        list(pool.map(abs, [1, 2]))
    with pytest.raises(PoolClosed):
        list(pool.results(abs, [1, 2]))
    assert pool.stats().submitted == 0


def test_submit_after_shutdown_raises_pool_closed(make_pool: MakePool) -> None:
    pool = make_pool(workers=2)
    pool.shutdown()
    with pytest.raises(PoolClosed):
        pool.submit(abs, -1)


def test_join_waits_for_every_accepted_task(make_pool: MakePool, gate: Any) -> None:
    pool = make_pool(workers=2, queue_size=10)
    tasks = [pool.submit(gate.task, i) for i in range(5)]
    gate.wait_started(2)
    assert pool.join(timeout=0.05) is False  # two run, three wait: nothing can finish
    assert not any(t.done() for t in tasks)
    gate.open()
    assert pool.join(timeout=10) is True
    assert all(t.done() for t in tasks)
    assert [t.result(0) for t in tasks] == list(range(5))
    # join() does not close the pool.
    assert not pool.closed
    assert pool.submit(abs, -7).result(timeout=5) == 7
    assert pool.join(timeout=0) is True


def test_join_from_another_thread_returns_when_drained(make_pool: MakePool, gate: Any) -> None:
    pool = make_pool(workers=1, queue_size=10)
    tasks = [pool.submit(gate.task, i) for i in range(3)]
    gate.wait_started(1)
    box: dict[str, Any] = {}

    def joiner() -> None:
        box["joined"] = pool.join(timeout=10)
        box["done"] = [t.done() for t in tasks]

    t = threading.Thread(target=joiner)
    t.start()
    gate.open()
    t.join(10)
    assert box == {"joined": True, "done": [True, True, True]}


# ---------------------------------------------------------------------- shutdown modes


def test_shutdown_wait_drains_everything(make_pool: MakePool, gate: Any) -> None:
    pool = make_pool(workers=2, queue_size=20)
    gated = [pool.submit(gate.task, i) for i in range(6)]
    failing = [pool.submit(fail, i) for i in range(2)]
    gate.wait_started(2)
    box: dict[str, Any] = {}

    def stop() -> None:
        box["report"] = pool.shutdown(wait=True)
        box["done"] = [t.done() for t in gated + failing]

    t = threading.Thread(target=stop)
    t.start()
    t.join(0.1)
    assert t.is_alive(), "shutdown(wait=True) returned while tasks were still blocked"
    gate.open()
    t.join(10)
    assert not t.is_alive()
    assert box["done"] == [True] * 8  # every future was done when shutdown returned
    report: ShutdownReport = box["report"]
    assert (report.completed, report.failed, report.cancelled) == (6, 2, 0)
    assert report.unstarted == []
    assert report.finished is True
    assert [t.result(0) for t in gated] == list(range(6))
    assert all(isinstance(t.exception(0), ValueError) for t in failing)
    s = pool.stats()
    assert (s.submitted, s.queued, s.running, s.succeeded, s.failed) == (8, 0, 0, 6, 2)


def test_shutdown_cancel_futures_cancels_queued_at_once(
    make_pool: MakePool, gate: Any, shared: Any
) -> None:
    pool = make_pool(workers=2, queue_size=10)
    running = [pool.submit(gate.task, i) for i in range(2)]
    gate.wait_started(2)
    calls = shared.list()

    def record(i: int, *, tag: str) -> tuple[int, str]:
        calls.append((i, tag))
        return i, tag

    queued = [pool.submit(record, i, tag=f"t{i}") for i in range(4)]
    box: dict[str, Any] = {}
    t = threading.Thread(target=lambda: box.update(report=pool.shutdown(cancel_futures=True)))
    t.start()
    # The queued tasks are cancelled while the running ones still hold the gate.
    for q in queued:
        with pytest.raises(concurrent.futures.CancelledError):
            q.result(timeout=5)
    assert all(q.cancelled() for q in queued)
    assert not any(r.done() for r in running)
    assert t.is_alive()  # running work still gets to finish
    gate.open()
    t.join(10)
    assert [r.result(0) for r in running] == [0, 1]
    assert calls[:] == []  # the queued tasks never ran

    report: ShutdownReport = box["report"]
    assert (report.completed, report.failed, report.cancelled) == (2, 0, 4)
    assert report.finished is True
    unstarted = sorted(report.unstarted, key=lambda u: u.index)
    assert [u.index for u in unstarted] == [q.id for q in queued]
    assert all(u.fn is record for u in unstarted)
    assert [(u.args, u.kwargs) for u in unstarted] == [((i,), {"tag": f"t{i}"}) for i in range(4)]
    # The report holds everything needed to run them again.
    assert [u.fn(*u.args, **u.kwargs) for u in unstarted] == [(i, f"t{i}") for i in range(4)]
    assert calls[:] == [(i, f"t{i}") for i in range(4)]


def test_shutdown_timeout_cancels_queued_and_running(make_pool: MakePool, gate: Any) -> None:
    pool = make_pool(workers=2, queue_size=10)
    running = [pool.submit(gate.task, i) for i in range(2)]
    gate.wait_started(2)
    queued = [pool.submit(gate.task, i) for i in range(2, 5)]
    report = pool.shutdown(timeout=0.2)
    assert not gate.released.is_set()  # returned at the deadline, with the gate still shut
    assert report.finished is False
    for r in running:
        assert r.done()
        with pytest.raises(TaskCancelled):
            r.result(timeout=0)
    assert all(q.cancelled() for q in queued)
    assert sorted(u.index for u in report.unstarted) == [q.id for q in queued]
    assert sorted(u.args for u in report.unstarted) == [(2,), (3,), (4,)]
    assert (report.completed, report.failed, report.cancelled) == (0, 0, 5)
    s = pool.stats()
    assert (s.submitted, s.queued, s.running, s.cancelled) == (5, 0, 0, 5)


def test_a_later_shutdown_keeps_its_own_deadline(make_pool: MakePool, gate: Any) -> None:
    # A drain without a deadline runs already (wait=False); a second shutdown with a
    # deadline of its own still stops what is left at it, and reports the drain cut short.
    pool = make_pool(workers=2, queue_size=10)
    running = [pool.submit(gate.task, i) for i in range(2)]
    gate.wait_started(2)
    queued = [pool.submit(gate.task, i) for i in range(2, 5)]
    assert pool.shutdown(wait=False).finished is False
    report = pool.shutdown(timeout=0.2)
    assert not gate.released.is_set()  # returned at its deadline, with the gate still shut
    assert report.finished is False
    for r in running:
        with pytest.raises(TaskCancelled):
            r.result(timeout=0)
    assert all(q.cancelled() for q in queued)
    assert sorted(u.index for u in report.unstarted) == [q.id for q in queued]
    assert (report.completed, report.failed, report.cancelled) == (0, 0, 5)
    assert pool.shutdown(wait=True).cancelled == 5  # the first drain ended too


def test_shutdown_timeout_lets_work_that_finishes_in_time_complete(make_pool: MakePool) -> None:
    pool = make_pool(workers=2)
    tasks = [pool.submit(abs, -i) for i in range(6)]
    report = pool.shutdown(timeout=10)
    assert report.finished is True
    assert report.completed == 6 and report.cancelled == 0 and report.unstarted == []
    assert [t.result(0) for t in tasks] == list(range(6))


def test_shutdown_no_wait_returns_at_once_and_drains_in_background(
    make_pool: MakePool, gate: Any
) -> None:
    pool = make_pool(workers=2, queue_size=10)
    tasks = [pool.submit(gate.task, i) for i in range(4)]
    gate.wait_started(2)
    report = pool.shutdown(wait=False)  # would hang here if it waited: the gate is shut
    assert isinstance(report, ShutdownReport)
    assert report.finished is False
    assert pool.closed
    with pytest.raises(PoolClosed):
        pool.submit(abs, -1)
    assert not any(t.done() for t in tasks)
    gate.open()
    assert pool.join(timeout=10) is True
    assert [t.result(0) for t in tasks] == [0, 1, 2, 3]
    final = pool.shutdown()  # waits for the background drain
    assert final.finished is True
    assert (final.completed, final.failed, final.cancelled) == (4, 0, 0)
    assert final.unstarted == []


def test_shutdown_is_idempotent_from_many_threads(make_pool: MakePool) -> None:
    pool = make_pool(workers=2)
    tasks = [pool.submit(abs, -i) for i in range(5)]
    barrier = threading.Barrier(4)
    reports: list[ShutdownReport] = []

    def stop() -> None:
        barrier.wait(5)
        reports.append(pool.shutdown())

    threads = [threading.Thread(target=stop) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(reports) == 4
    for r in reports:
        assert r.finished is True
        assert (r.completed, r.failed, r.cancelled) == (5, 0, 0)
    again = pool.shutdown()
    assert isinstance(again, ShutdownReport)
    assert (again.completed, again.failed, again.cancelled, again.finished) == (5, 0, 0, True)
    for r in (pool.shutdown(wait=False), pool.shutdown(cancel_futures=True, timeout=0)):
        assert isinstance(r, ShutdownReport)
        assert (r.completed, r.failed, r.cancelled) == (5, 0, 0)
    assert [t.result(0) for t in tasks] == list(range(5))


def test_shutdown_from_another_thread_while_iterating_results(
    make_pool: MakePool, gate: Any
) -> None:
    pool = make_pool(workers=2)
    reads: list[tuple[int, bool]] = []  # (index, pool closed when it was read)

    def inputs() -> Iterator[int]:
        for i in itertools.count():
            reads.append((i, pool.closed))
            yield i

    def stopper() -> None:
        gate.wait_started(2)
        pool.shutdown(wait=False)
        gate.open()

    threading.Thread(target=stopper, daemon=True).start()
    got: list[Result[Any]] = []
    with pytest.raises(PoolClosed):
        for r in pool.results(gate.task, inputs()):
            got.append(r)
    read_after_close = [i for i, closed in reads if closed]
    assert read_after_close == [], f"input read after the pool was closed: {read_after_close}"
    assert sorted(r.index for r in got) == [i for i, _ in reads]  # one Result per item read
    accepted = pool.stats().submitted
    assert accepted >= 2
    ok = sorted(r.index for r in got if r.ok)
    assert ok == list(range(accepted))  # every accepted task drained and was yielded
    assert all(r.value == r.index for r in got if r.ok)
    for r in got:
        if not r.ok:  # read just before the close, never accepted
            assert isinstance(r.error, TaskCancelled) and r.attempts == 0


def test_a_no_wait_shutdown_after_the_drain_ended_says_finished(make_pool: MakePool) -> None:
    pool = make_pool(workers=1)
    assert pool.submit(abs, -1).result(10) == 1
    assert pool.shutdown().finished is True
    again = pool.shutdown(wait=False)  # nothing left to wait for: the drain's own report
    assert again.finished is True and again.completed == 1


def test_every_report_of_a_drain_cut_short_says_it_did_not_finish(
    make_pool: MakePool, gate: Any
) -> None:
    # One caller waits for the drain with no deadline; another's deadline cuts it. The
    # first caller's report said finished=True, with its work cancelled.
    pool = make_pool(workers=1, queue_size=4)
    pool.submit(gate.task, 0)
    pool.submit(gate.task, 1)
    gate.wait_started(1)
    reports: list[ShutdownReport] = []
    waiter = threading.Thread(target=lambda: reports.append(pool.shutdown()), daemon=True)
    waiter.start()
    deadline = time.monotonic() + 10
    while not pool._life.shutdown_started:  # the waiter's shutdown is the first
        assert time.monotonic() < deadline, "the first shutdown never started"
        time.sleep(0.001)
    cut = pool.shutdown(timeout=0.1)
    waiter.join(10)
    assert cut.finished is False
    assert len(reports) == 1 and reports[0].finished is False
    assert reports[0].cancelled == 2 and len(reports[0].unstarted) == 1
    assert pool.shutdown().finished is False  # every later look at it says the same


def test_work_a_consumer_leaves_behind_during_a_shutdown_is_listed_as_unstarted(
    make_pool: MakePool, gate: Any
) -> None:
    # The pool shuts down (a first signal's drain, say); then its consumer leaves (a second
    # signal's Interrupted, or a break), which cancels the call's queued work before the
    # shutdown's own cancel gets to it. Those tasks never ran: the report must list them.
    # (It listed none: found as a second SIGINT that lost them about 1 run in 10.)
    pool = make_pool(workers=2, queue_size=10)

    def first_free(i: int) -> int:
        return i if i == 0 else int(gate.block(i))

    it = pool.results(first_free, range(6), chunksize=1)
    assert next(it).index == 0
    gate.wait_started(2)  # two of items 1-5 run; three are queued
    assert pool.shutdown(wait=False).finished is False
    it.close()  # the consumer leaves: its queued work is cancelled
    gate.open()
    report = pool.shutdown()
    # (Left while the pool shuts down, a call's running units run on, on Dask too: only
    # what certainly never started is cancelled and listed.)
    assert (report.completed, report.cancelled) == (3, 3)
    never_ran = sorted(u.args[0] for u in report.unstarted)
    assert len(never_ran) == 3 and set(never_ran) < {1, 2, 3, 4, 5}, never_ran


MODES = ["wait", "cancel_futures", "timeout", "timeout_zero", "no_wait"]


@pytest.mark.parametrize("mode", MODES)
def test_nothing_accepted_is_silently_dropped(make_pool: MakePool, gate: Any, mode: str) -> None:
    pool = make_pool(workers=3, queue_size=50)
    kinds: list[Callable[[int], Any]] = [gate.task, fail, abs, fatal]
    tasks = [pool.submit(kinds[i % 4], i) for i in range(16)]
    # Tasks 0, 4 and 8 hold all three workers at the gate; the fast ones before them finish.
    gate.wait_started(3)
    if mode == "wait":
        gate.open()
        report = pool.shutdown(wait=True)
    elif mode == "cancel_futures":
        report = pool.shutdown(cancel_futures=True, timeout=0.1)
    elif mode == "timeout":
        report = pool.shutdown(timeout=0.1)
    elif mode == "timeout_zero":
        report = pool.shutdown(timeout=0)
    else:
        pool.shutdown(wait=False)
        gate.open()
        report = pool.shutdown()

    ok, failed, cancelled = classify(tasks)
    assert ok + failed + cancelled == len(tasks)
    assert (report.completed, report.failed, report.cancelled) == (ok, failed, cancelled)
    never_ran = sorted(t.id for t in tasks if t.cancelled())
    assert sorted(u.index for u in report.unstarted) == never_ran
    s = pool.stats()
    assert (s.submitted, s.queued, s.running) == (16, 0, 0)
    assert (s.succeeded, s.failed, s.cancelled) == (ok, failed, cancelled)
    for t in tasks:
        if t.done() and not t.cancelled() and t.exception(0) is not None:
            assert isinstance(t.exception(0), (ValueError, Fatal, TaskCancelled))
    if mode in ("wait", "no_wait"):
        assert cancelled == 0 and ok == 8 and failed == 8


def test_cancelled_tasks_count_as_done_for_concurrent_futures(
    make_pool: MakePool, gate: Any
) -> None:
    # Pool is an Executor: wait() and as_completed() must see the tasks it cancels as done.
    pool = make_pool(workers=1, queue_size=10)
    running = pool.submit(gate.task, 0)
    gate.wait_started(1)
    queued = [pool.submit(gate.task, i) for i in range(1, 4)]
    by_user = pool.submit(gate.task, 4)
    assert by_user.cancel() is True
    pool.shutdown(cancel_futures=True, timeout=0)
    everything = [running, *queued, by_user]
    assert all(t.done() for t in everything)
    _, not_done = concurrent.futures.wait(everything, timeout=1)
    assert not_done == set()
    assert set(concurrent.futures.as_completed(everything, timeout=1)) == set(everything)


# ---------------------------------------------------------------------- context manager


def test_with_block_normal_exit_drains(make_pool: MakePool, gate: Any) -> None:
    pool = make_pool(workers=2, queue_size=10)
    exiting = threading.Event()
    real_shutdown = pool.shutdown

    def spy(*args: Any, **kwargs: Any) -> ShutdownReport:
        exiting.set()
        return real_shutdown(*args, **kwargs)

    pool.shutdown = spy  # type: ignore[method-assign]

    def release_once_exiting() -> None:
        exiting.wait(5)  # open the gate only once __exit__ is draining
        gate.open()

    with pool:
        tasks = [pool.submit(gate.task, i) for i in range(6)]
        threading.Thread(target=release_once_exiting, daemon=True).start()
    assert all(t.done() for t in tasks)
    assert [t.result(0) for t in tasks] == list(range(6))
    assert pool.closed
    s = pool.stats()
    assert (s.succeeded, s.queued, s.running) == (6, 0, 0)


@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt])
def test_exception_in_with_body_cancels_and_exits_promptly(
    make_pool: MakePool, gate: Any, shared: Any, exc_type: type[BaseException]
) -> None:
    name = unique_name()
    pool = make_pool(workers=2, queue_size=10, name=name)
    holders = shared.list()
    hold = _holder(gate, holders)

    with pytest.raises(exc_type), pool:
        running = [pool.submit(hold, i) for i in range(2)]
        gate.wait_started(2)
        queued = [pool.submit(hold, i) for i in range(2, 5)]
        raise exc_type("boom")
    # Left without waiting for the gate: running work was cancelled, not drained.
    assert not gate.released.is_set()
    for r in running:
        assert r.done()
        with pytest.raises(TaskCancelled):
            r.result(timeout=0)
    assert all(q.cancelled() for q in queued)
    report = pool.shutdown()
    assert report.cancelled == 5
    assert sorted(u.index for u in report.unstarted) == [q.id for q in queued]
    # Only threads stuck in the gate outlive the pool (thread: abandoned in the call), and
    # only until their call returns. (process: the calls ran in worker processes, which were
    # killed; none of the pool's threads is left.)
    assert {t.name for t in pool_threads(name)} <= set(holders[:])
    gate.open()
    for t in pool_threads(name):
        t.join(5)
    assert pool_threads(name) == []


# ---------------------------------------------------------------------- no thread left behind


def test_no_worker_threads_left_after_shutdown(make_pool: MakePool) -> None:
    name = unique_name()
    with make_pool(workers=4, name=name) as pool:
        assert list(pool.map(abs, range(-50, 0))) == list(range(50, 0, -1))
        assert pool.submit(abs, -1).result(timeout=5) == 1
        assert pool_threads(name), "the pool's threads should carry its name"
    assert pool_threads(name) == []


def test_only_abandoned_threads_outlive_a_timed_out_shutdown(
    make_pool: MakePool, gate: Any, shared: Any
) -> None:
    # thread: the two held calls are abandoned, their threads live on until the calls return.
    # process: the two workers are killed, so no thread of the pool outlives the shutdown.
    name = unique_name()
    pool = make_pool(workers=3, queue_size=10, name=name)
    holders = shared.list()
    hold = _holder(gate, holders)

    held = [pool.submit(hold, i) for i in range(2)]
    gate.wait_started(2)
    assert pool.submit(abs, -3).result(timeout=5) == 3
    report = pool.shutdown(timeout=0.1)
    assert report.cancelled == 2
    assert all(isinstance(t.exception(0), TaskCancelled) for t in held)
    # A thread that has just returned a call may still be on its way out: it gets a moment.
    for t in pool_threads(name):
        if t.name not in holders[:]:
            t.join(5)
    assert {t.name for t in pool_threads(name)} <= set(holders[:])
    gate.open()
    for t in pool_threads(name):
        t.join(5)
    assert pool_threads(name) == []


# ---------------------------------------------------------------------- shutdown from odd places


def _shutdown_in_handler(pool: Pool, reports: list[ShutdownReport]) -> Any:
    import signal

    def handler(signum: int, frame: Any) -> None:
        reports.append(pool.shutdown())

    return signal.signal(signal.SIGUSR1, handler)


@pytest.mark.timeout(10)
def test_shutdown_from_a_signal_handler_that_interrupted_the_pools_own_code(
    make_pool: MakePool,
) -> None:
    # A Python signal handler runs in the main thread between two bytecodes: here, while the
    # main thread holds the pool's lock (as inside submit() or stats()). The lock is taken
    # directly so that the landing spot is certain instead of a matter of luck.
    import signal

    pool = make_pool(workers=2)
    task = pool.submit(abs, -1)
    reports: list[ShutdownReport] = []
    previous = _shutdown_in_handler(pool, reports)
    try:
        with pool._engine._lock:
            signal.raise_signal(signal.SIGUSR1)  # the handler runs before this returns
            assert len(reports) == 1, "the handler did not run"
    finally:
        signal.signal(signal.SIGUSR1, previous)
    # It could not wait where it was: it started the drain and said it had not finished.
    assert reports[0].finished is False
    assert pool.closed
    final = pool.shutdown(timeout=5)
    assert final.finished is True and final.completed == 1
    assert task.result(0) == 1


@pytest.mark.timeout(20)
def test_shutdown_from_a_signal_handler_during_a_submit_loop(make_pool: MakePool) -> None:
    # The realistic form of the test above: signals land wherever the submit loop happens to
    # be; the loop ends with PoolClosed, and nothing hangs.
    import os
    import signal

    for _ in range(20):
        pool = make_pool(workers=2, queue_size=4)
        reports: list[ShutdownReport] = []
        previous = _shutdown_in_handler(pool, reports)
        sent = threading.Event()

        def send(sent: threading.Event = sent, pid: int = os.getpid()) -> None:
            os.kill(pid, signal.SIGUSR1)
            sent.set()

        tasks: list[Task[int]] = []
        try:
            timer = threading.Timer(0.005, send)
            timer.start()
            with pytest.raises(PoolClosed):
                for i in itertools.count():
                    tasks.append(pool.submit(abs, -i))
            timer.join()
            assert sent.is_set() and len(reports) == 1
        finally:
            signal.signal(signal.SIGUSR1, previous)
        assert pool.shutdown(timeout=5).finished is True
        assert all(t.done() for t in tasks)


# A task that calls into its own pool needs this process's Pool object.
in_the_parent = pytest.mark.skip_backend(
    "process",
    "dask",
    reason="a task in a worker process (process, dask) has no handle on the parent's pool "
    "(it cannot pickle)",
)


@pytest.mark.timeout(10)
@in_the_parent
def test_shutdown_from_inside_a_task_returns(make_pool: MakePool) -> None:
    # It cannot wait for its own task: it closes the pool, starts the drain, and returns a
    # report saying the drain has not finished; the calling task then finishes normally.
    pool = make_pool(workers=2)
    others = [pool.submit(abs, -i) for i in range(3)]

    def stop_my_pool() -> tuple[bool, bool]:
        report = pool.shutdown()
        return report.finished, pool.closed

    task = pool.submit(stop_my_pool)
    assert task.result(timeout=5) == (False, True)
    final = pool.shutdown(timeout=5)
    assert final.finished is True and final.completed == 4
    assert [t.result(0) for t in others] == [0, 1, 2]
    with pytest.raises(PoolClosed):
        pool.submit(abs, 1)


@pytest.mark.timeout(10)
@in_the_parent
def test_join_from_inside_a_task_raises_instead_of_waiting_for_itself(make_pool: MakePool) -> None:
    pool = make_pool(workers=2)

    def join_my_pool() -> str:
        try:
            pool.join(timeout=None)
        except WorkpoolError as e:
            return str(e)
        return "joined"

    message = pool.submit(join_my_pool).result(timeout=5)
    assert "join() was called from one of its own tasks" in message
    assert pool.submit(abs, -1).result(timeout=5) == 1  # the pool carries on
    assert pool.join(timeout=5) is True  # from outside, as ever


@pytest.mark.timeout(20)
def test_shutdown_from_inside_a_task_lets_the_program_exit() -> None:
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        from workpool import Pool
        pool = Pool(2)
        task = pool.submit(lambda: pool.shutdown().finished)
        print(task.result(timeout=5))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=15)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.timeout(30)
# The consumer ends cleanly: its input (a range) was read to its end, not cut by the shutdown.
@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_cancelling_a_batch_between_its_timed_groups_keeps_every_result() -> None:
    # A thread batch (map with no task_timeout) times its calls per group of 32, after their
    # outcomes. Cancelling it while a group is half done must still give every position a
    # Result with a duration (it raised IndexError in the consumer, and a Pipeline's flow).
    blocked = threading.Event()
    release = threading.Event()

    def fn(x: int) -> int:
        if x == 40:
            blocked.set()
            release.wait(20)
        return x

    pool = Pool(workers=1)
    got: list[Result[int]] = []
    consumer = threading.Thread(target=lambda: got.extend(pool.results(fn, range(64))))
    consumer.start()
    try:
        assert blocked.wait(10)
        report = pool.shutdown(timeout=0)
    finally:
        release.set()
        consumer.join(20)
    assert not consumer.is_alive()
    assert sorted(r.index for r in got) == list(range(64))
    assert [r.value for r in got if r.index < 40] == list(range(40))
    stopped = next(r for r in got if r.index == 40)
    assert isinstance(stopped.error, TaskCancelled)
    assert all(r.duration is not None and r.duration >= 0 for r in got)
    assert report.cancelled >= 1
