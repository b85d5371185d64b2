"""What only the process backend does: real crashes, real kills, pickling, no orphans.

Tasks run in child processes forked by a fork server, so these tests synchronise through a
``multiprocessing`` Manager (its Queue proxies pickle and work in any process), never through
``threading.Event`` or sleeps. The only polling loops wait, with a deadline, for an OS-level
condition that cannot be waited on otherwise: a process that is not our child being gone.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import functools
import gc
import io
import itertools
import json
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import pickle
import queue as queue_module
import signal
import subprocess
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.managers import SyncManager
from pathlib import Path
from typing import Any

import psutil
import pytest

import proc_helpers as h
from handshakes import ManagerKit, wait_until
from workpool import (
    ConfigError,
    Pool,
    PoolClosed,
    RemoteError,
    Result,
    Retry,
    Task,
    TaskCancelled,
    TaskError,
    TaskTimeout,
    WorkerCrashed,
    WorkpoolError,
)

pytestmark = pytest.mark.timeout(30)

SRC = Path(__file__).resolve().parents[1] / "src"
SCRIPTS = Path(__file__).resolve().parent / "scripts"
needs_fork_server = pytest.mark.skipif(
    "forkserver" not in multiprocessing.get_all_start_methods(),
    reason="the forkserver start method is not available here",
)


def process_pool(**options: Any) -> Pool:
    options.setdefault("workers", 2)
    return Pool(backend="process", **options)


# ---------------------------------------------------------------------- processes


def helper_pids() -> set[int]:
    """Long-lived helpers that multiprocessing starts once per process and keeps on purpose.

    The fork server forks every worker (the default start method) and lives until the test
    process exits; it starts the resource tracker, which lives as long. Neither belongs to a
    pool, so the leftover-children check must not count them.
    """
    pids = {
        multiprocessing.forkserver._forkserver._forkserver_pid,  # type: ignore[attr-defined]
        multiprocessing.resource_tracker._resource_tracker._pid,  # type: ignore[attr-defined]
    }
    from dask_cluster import cluster_pids  # the session's Dask test cluster, if it runs

    return {p for p in pids if p is not None} | cluster_pids()


def is_dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # Orphans are reaped by init; a container's init may be slow to reap or never do, and a
    # zombie has already exited, so it counts as dead.
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def wait_dead(pids: Iterable[int], timeout: float = 5.0) -> None:
    """Wait (bounded) until every pid is gone; these are not our children, so poll."""
    pids = set(pids)
    deadline = time.monotonic() + timeout
    while True:
        alive = {p for p in pids if not is_dead(p)}
        if not alive:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"processes still alive {timeout}s later: {sorted(alive)}")
        time.sleep(0.01)  # polling an OS condition, not synchronising with the pool


def descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)} - helper_pids()


@pytest.fixture(scope="module", autouse=True)
def manager() -> Iterator[SyncManager]:
    """A Manager for handshakes with tasks; on teardown, the check that no child is left.

    A spawn context: forking the pytest process, whose pools run threads, could copy a held
    lock into the manager.
    """
    mgr = multiprocessing.get_context("spawn").Manager()
    yield mgr
    mgr.shutdown()
    # Every pool of this module has been shut down: no worker, reaped or not, may remain.
    deadline = time.monotonic() + 5
    while (left := descendants()) and time.monotonic() < deadline:
        time.sleep(0.01)  # polling an OS condition: processes that are not all our children
    assert not left, f"child processes left after the process tests: {describe(left)}"


def describe(pids: Iterable[int]) -> list[str]:
    out = []
    for pid in sorted(pids):
        try:
            p = psutil.Process(pid)
            out.append(f"{pid} ({p.status()}): {' '.join(p.cmdline())}")
        except psutil.NoSuchProcess:
            out.append(f"{pid} (gone)")
    return out


@pytest.fixture
def queue(manager: SyncManager) -> Any:
    return manager.Queue()


def reported_pid(queue: Any, *tasks: Task[Any], timeout: float = 10.0) -> int:
    """The pid that one of ``tasks`` put on ``queue`` once it started; fail fast if one ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return int(queue.get(timeout=0.05))
        except queue_module.Empty:
            ended = [t for t in tasks if t.done()]
            if ended:
                try:
                    return int(queue.get_nowait())  # it reported, then ended
                except queue_module.Empty:
                    t = ended[0]
                    error = None if t.cancelled() else t.exception(0)
                    raise AssertionError(
                        f"task {t.id} ended before it started: {error!r}"
                    ) from None
    raise AssertionError(f"no task reported its pid within {timeout}s")


def by_index(results: Iterable[Result[Any]], n: int) -> list[Result[Any]]:
    """The results indexed by input position, checking each index came exactly once."""
    got = list(results)
    counts = collections.Counter(r.index for r in got)
    assert sorted(counts) == list(range(n)), "some indexes are missing or unknown"
    assert max(counts.values()) == 1, f"duplicates: {[i for i, c in counts.items() if c > 1]}"
    return sorted(got, key=lambda r: r.index)


def assert_stats_add_up(pool: Pool) -> None:
    s = pool.stats()
    assert s.submitted == s.queued + s.running + s.succeeded + s.failed + s.cancelled


# ---------------------------------------------------------------------- 1. crash recovery

N, AT = 2000, 1000


@pytest.mark.parametrize(
    ("task", "exitcode", "signum"),
    [
        (h.exit3_at, 3, None),
        (h.sigkill_at, -signal.SIGKILL, signal.SIGKILL),
        (h.segfault_at, -signal.SIGSEGV, signal.SIGSEGV),
    ],
    ids=["os._exit(3)", "SIGKILL", "segfault"],
)
def test_a_worker_dying_mid_batch_fails_only_its_item(
    task: Callable[[int, int], int], exitcode: int, signum: int | None
) -> None:
    # 2,000 tiny items are batched, so the death happens with the rest of its batch pending.
    with process_pool() as pool:
        results = by_index(pool.results(functools.partial(task, AT), range(N)), N)
        crashed = results[AT]
        assert isinstance(crashed.error, WorkerCrashed), crashed
        assert crashed.error.exitcode == exitcode
        assert crashed.error.signal == signum
        assert f"task {AT}" in str(crashed.error)
        bad = [r for r in results if r.index != AT and (not r.ok or r.value != 2 * r.index)]
        assert bad == []
        assert pool.submit(h.double, 21).result(timeout=10) == 42  # the pool still works
        s = pool.stats()
        assert (s.succeeded, s.failed, s.queued, s.running) == (N, 1, 0, 0)
        assert_stats_add_up(pool)


@pytest.mark.parametrize("ordered", [False, True])
def test_deaths_with_the_next_batch_already_sent_lose_and_repeat_nothing(ordered: bool) -> None:
    # Batches of 10 on two busy workers: each worker gets its next batch while it still runs
    # the current one. A death must fail only its own item and requeue the batch that was
    # waiting in the dead worker's pipe, which never started: every item comes back once.
    points = frozenset({55, 56, 205, 333, 399})
    n = 400
    with process_pool() as pool:
        got = list(
            pool.results(
                functools.partial(h.exit3_at_any, points), range(n), chunksize=10, ordered=ordered
            )
        )
        if ordered:
            assert [r.index for r in got] == list(range(n))
        results = by_index(got, n)
        for r in results:
            if r.index in points:
                assert isinstance(r.error, WorkerCrashed) and r.error.exitcode == 3, r
            else:
                assert r.ok and r.value == 2 * r.index, r
        s = pool.stats()
        assert (s.succeeded, s.failed, s.queued, s.running) == (n - len(points), len(points), 0, 0)
        assert_stats_add_up(pool)


def test_the_rest_of_a_crashed_batch_runs_before_the_batch_sent_ahead(
    manager: SyncManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One worker, batches of 10: it holds the second batch (sent ahead) when it dies at item 5.
    # The unstarted batch goes back to the queue behind the rest of the crashed one, so what
    # is left of items 0-9 runs before 10-19 (an ordered map waits less for the gap). (Items
    # whose results had not been sent yet when it died run again.)
    from workpool._backends import process

    sent_ahead = threading.Event()
    send_ahead = process.ProcessBackend._send_ahead

    def noting_send_ahead(self: Any, slot: Any, worker: Any) -> None:
        send_ahead(self, slot, worker)
        if worker.ahead is not None:
            sent_ahead.set()

    monkeypatch.setattr(process.ProcessBackend, "_send_ahead", noting_send_ahead)
    gate, runs = manager.Event(), tmp_path / "runs"
    fn = functools.partial(h.record_run, str(runs), gate, 5)
    with process_pool(workers=1) as pool:
        got: list[Result[Any]] = []
        consumer = threading.Thread(
            target=lambda: got.extend(pool.results(fn, range(20), chunksize=10)), daemon=True
        )
        consumer.start()
        assert sent_ahead.wait(10), "the second batch was never sent ahead"
        gate.set()
        consumer.join(20)
    assert sorted(r.index for r in got) == list(range(20))
    assert [r.index for r in got if not r.ok] == [5]
    order = [int(line) for line in runs.read_text().split()]
    first_of_next = min(k for k, i in enumerate(order) if i >= 10)
    assert all(i >= 10 for i in order[first_of_next:]), order
    assert set(order) == set(range(20)) - {5}, order


def test_shrinking_takes_back_the_batches_sent_ahead(manager: SyncManager) -> None:
    # A busy worker holds its next batch when resize(1) comes: left there, it would start
    # it as its running batch ends, beside the other worker's: two at once under a maximum
    # of one. It goes back to the queue (an outside tester saw 3 running after resize(1)
    # from 4). (``sent_ahead`` counts calls.)
    gate = manager.Event()
    fn = functools.partial(h.gated_identity, gate)
    with process_pool(workers=2) as pool:
        got: list[Result[Any]] = []
        consumer = threading.Thread(
            target=lambda: got.extend(pool.results(fn, range(40), chunksize=5)), daemon=True
        )
        consumer.start()
        wait_until(lambda: pool.stats().sent_ahead >= 5)
        pool.resize(1)
        s = pool.stats()
        assert (s.sent_ahead, s.max_workers) == (0, 1), s
        assert_stats_add_up(pool)
        gate.set()
        consumer.join(20)
    assert sorted(r.unwrap() for r in got) == list(range(40))


def test_a_map_of_large_items_reads_a_few_megabytes_ahead() -> None:
    # Units were sized on the calls' time alone: tiny calls on 20 KB items went in units of
    # thousands, and a map read ~56,000 items (GBs) ahead of its consumer (an outside
    # tester's finding). A unit moves ~1 MB now: the window holds a few MB.
    pulled = 0

    def items() -> Iterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield b"x" * 20_000

    with process_pool(workers=2) as pool:
        for k, n in enumerate(pool.map(len, items()), 1):
            assert n == 20_000
            if k == 4000:
                break
    ahead = pulled - 4000
    assert ahead * 20_000 <= 32 << 20, ahead  # (workers + queue + 1) units of ~1 MB, and some


def test_a_unit_whose_calls_turned_slow_hands_out_its_results_and_gives_back_the_rest(
    tmp_path: Path,
) -> None:
    # Thousands of instant calls size the units large; a slow call and a held one after
    # them fell in one unit, which ran whole in one worker: the slow call's result (and the
    # instant ones before it) came only once the held call returned, while the other worker
    # sat idle (an outside tester's finding: `workpool run --backend process` wrote nothing
    # and journaled nothing for seconds). A unit that has run far longer than it was sized
    # for gives the calls it has not started back: the held call moves to a free worker and
    # what finished reaches the consumer.
    held = tmp_path / "release"
    items = [("fast", None)] * 3000 + [("slow", None), ("held", str(held))] + [("fast", None)] * 5
    release_anyway = threading.Timer(20, held.touch)  # (bounds the old behaviour's wait)
    release_anyway.start()
    try:
        with process_pool(workers=2) as pool:
            for r in pool.results(h.slow_or_held, (x for x in items)):  # (length unknown)
                assert r.ok, r.error
                if r.value == "slow":
                    slow_seen_while_held = not held.exists()
                    held.touch()
    finally:
        release_anyway.cancel()
    assert slow_seen_while_held


def test_the_calls_a_slow_unit_gives_back_spread_over_the_free_workers() -> None:
    # Six 50 ms calls at the end of units sized for instant ones: the unit that holds them
    # gives back what it has not started once it has run 20 ms, in one part per worker,
    # and the other worker (idle: the instant calls are done) takes a part. They all ran
    # in one worker, one after another.
    items = [False] * 3000 + [True] * 6
    with process_pool(workers=2) as pool:
        source = (x for x in items)  # (of unknown length: its end is not shared out ahead)
        pids = {r.index: r.unwrap() for r in pool.results(h.fast_or_slow_pid, source)}
    assert len(pids) == 3006
    assert len({pids[i] for i in range(3000, 3006)}) == 2


def test_cancelling_shutdown_with_batches_sent_ahead_drops_nothing() -> None:
    # Batches of 10 calls of 2 ms on two busy workers: each worker holds its next batch in
    # its pipe when shutdown cancels. The running batches are killed, the waiting ones
    # cancelled: every accepted item still comes back exactly once, and the counts add up.
    pool = process_pool()
    got: list[Result[Any]] = []
    it = pool.results(h.nap_double, range(600), chunksize=10)
    try:
        for r in it:
            got.append(r)
            if len(got) == 40:
                report = pool.shutdown(cancel_futures=True, timeout=0.1)
    except PoolClosed:
        pass  # intake stopped by the shutdown: raised after every accepted item came back
    finally:
        pool.shutdown()
    # Every item read from the input came back once: done, or cancelled (those the pool had
    # accepted, and the few read for the next batch that it no longer took).
    assert sorted(r.index for r in got) == list(range(len(got)))
    for r in got:
        assert (r.ok and r.value == 2 * r.index) or isinstance(r.error, TaskCancelled), r
    s = pool.stats()
    assert s.queued == s.running == 0 and s.failed == 0
    assert s.submitted == s.succeeded + s.cancelled <= len(got)
    assert sum(r.ok for r in got) == s.succeeded
    assert s.cancelled > 0 and report.cancelled == s.cancelled


def test_a_unit_sent_ahead_never_waits_behind_a_task_that_waits_for_it(
    manager: SyncManager,
) -> None:
    # The pool sends a worker its next unit while the current one runs. Item 1 returns only
    # after every other item ran, and item 0 holds the other worker until item 1 started, so
    # item 2 goes ahead to item 1's worker: it would wait there forever unless the other
    # worker, once it runs out of work, takes it back.
    n = 6
    for _ in range(3):
        cv, started, done = manager.Condition(), manager.Value("q", 0), manager.Value("q", 0)
        fn = functools.partial(h.second_waits_for_the_rest, cv, started, done, n)
        with process_pool() as pool:
            assert sorted(pool.map(fn, range(n), chunksize=1, ordered=False)) == list(range(n))


def test_units_taken_back_under_load_run_exactly_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # A stress run of taking units back: four workers on a machine that a busy process keeps
    # loaded, many short maps whose tails leave workers idle while others hold a unit sent
    # ahead. Every item must come back exactly once with its own value. (A race that let a
    # worker run a unit taken back from it, and then hand its results to the next unit,
    # showed up only like this: about once in hundreds of maps under load.)
    from workpool._backends.process import ProcessBackend

    taken_back = 0
    revoke = ProcessBackend.revoke

    def counting_revoke(self: ProcessBackend, slot: Any, *, cancel: bool = False) -> bool:
        nonlocal taken_back
        done = revoke(self, slot, cancel=cancel)
        taken_back += done
        return done

    monkeypatch.setattr(ProcessBackend, "revoke", counting_revoke)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with process_pool(workers=4) as pool:
            for _ in range(60):
                got = list(pool.map(h.identity, range(200), chunksize=1, ordered=False))
                assert sorted(got) == list(range(200))
    finally:
        hog.kill()
        hog.wait()
    assert taken_back > 0  # the stress did take units back


def test_a_cancelling_shutdown_takes_back_the_units_sent_ahead(manager: SyncManager) -> None:
    # Two workers block in their first items, and each may hold its next unit in its pipe,
    # not started. Cancelling the queued work cancels those too: only the two items that were
    # running ever run, every other item comes back cancelled, and the counts add up.
    gate = ManagerKit(manager).gate()
    pool = process_pool()
    got: list[Result[Any]] = []
    closed: list[PoolClosed] = []

    def consume() -> None:
        try:
            got.extend(pool.results(gate.task, range(6), chunksize=1))
        except PoolClosed as e:  # after every accepted item came back: the rest was not read
            closed.append(e)

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    gate.wait_started(2)
    report = pool.shutdown(cancel_futures=True, wait=False)
    gate.open()
    consumer.join(10)
    assert not consumer.is_alive()
    pool.shutdown()
    assert gate.entered == 2
    ran = sorted(r.index for r in got if r.ok)
    assert len(ran) == 2 and all(r.value == r.index for r in got if r.ok)
    assert all(isinstance(r.error, TaskCancelled) for r in got if not r.ok)
    s = pool.stats()
    assert (s.succeeded, s.queued, s.running, s.failed) == (2, 0, 0, 0)
    assert s.cancelled == s.submitted - 2 == report.cancelled >= 2  # at least the ones sent ahead
    assert_stats_add_up(pool)


def test_a_worker_dying_under_map_raises_task_error_with_worker_crashed() -> None:
    with process_pool() as pool:
        got: list[int] = []
        with pytest.raises(TaskError) as info:
            for v in pool.map(functools.partial(h.exit3_at, 50), range(100)):
                got.append(v)
        assert isinstance(info.value.__cause__, WorkerCrashed)
        assert info.value.result.index == 50
        assert got == [2 * i for i in range(50)]
        assert list(pool.map(h.double, range(5))) == [0, 2, 4, 6, 8]


@pytest.mark.parametrize("how", ["fork-exit", "popen-exit", "fork-hang", "popen-hang"])
def test_a_helper_the_task_left_running_holds_up_nothing(how: str, tmp_path: Path) -> None:
    # The pool learns of a worker's death (or that the kill of a timed-out task landed) when
    # its pipe closes: a process the task forked or started with close_fds=False held the
    # pipe open, and the crash, the timeout and leaving the block all waited the helper's
    # 60 s (an outside tester's finding; a daemon hung the pool for good).
    pidfile = tmp_path / "helper"
    t0 = time.monotonic()
    try:
        with process_pool(workers=1, task_timeout=1) as pool:
            task = pool.submit(h.leave_a_helper_then, how, str(pidfile))
            error = task.exception(timeout=20)
            assert isinstance(error, WorkerCrashed if how.endswith("exit") else TaskTimeout)
            assert pool.submit(h.double, 2).result(timeout=20) == 4
        assert time.monotonic() - t0 < 30  # not the helper's 60 s
    finally:
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_a_forked_copy_that_returns_from_its_task_answers_for_nobody() -> None:
    # A task forked and both processes returned: the copy went on serving the worker's pipe,
    # and the results of later items went to the wrong items (an outside tester's finding).
    # The copy exits, saying why (on the worker's stderr), before it sends anything.
    items = ["a", "fork", "b", "c", "d", "e"]
    for fn in (h.fork_and_return, h.fork_and_return_in_a_coroutine):
        with process_pool(workers=1) as pool:
            got = sorted(pool.results(fn, items, chunksize=1), key=lambda r: r.index)
        assert [r.unwrap() for r in got] == ["a", "parent", "b", "c", "d", "e"], fn


def test_an_exception_that_loads_only_in_the_worker_is_a_remote_error_with_its_traceback() -> None:
    # It pickled (and unpickled) in the worker, and failed to unpickle here: the Result's
    # error was a bare UnpicklingError, not a WorkpoolError, and its traceback was lost (an
    # outside tester's finding; API section 2).
    with process_pool(workers=1) as pool:
        (r,) = pool.results(h.raise_error_only_a_worker_loads, [0])
        again = pool.submit(h.double, 4).result(timeout=20)
    assert isinstance(r.error, RemoteError), r.error
    assert r.error.type_name == "proc_helpers.ErrorOnlyAWorkerLoads"
    assert "boom" in str(r.error) and "could not be unpickled here" in str(r.error)
    assert r.traceback is not None and 'raise ErrorOnlyAWorkerLoads("boom")' in r.traceback
    assert again == 8


def test_a_crash_in_a_submitted_task_is_its_exception() -> None:
    with process_pool() as pool:
        task = pool.submit(h.exit3)
        error = task.exception(timeout=10)
        assert isinstance(error, WorkerCrashed)
        assert error.exitcode == 3
        outcome = task.outcome(timeout=0)
        assert outcome.error is error and outcome.attempts == 1
        assert [pool.submit(h.double, i).result(timeout=10) for i in range(4)] == [0, 2, 4, 6]
        assert_stats_add_up(pool)


def test_a_worker_killed_from_outside_is_worker_crashed(queue: Any) -> None:
    # What the OOM killer does: SIGKILL from another process while the task runs.
    with process_pool() as pool:
        task = pool.submit(h.report_pid_and_hang, queue)
        pid = reported_pid(queue, task)
        os.kill(pid, signal.SIGKILL)
        error = task.exception(timeout=10)
        assert isinstance(error, WorkerCrashed)
        assert error.signal == signal.SIGKILL
        assert pool.submit(h.double, 4).result(timeout=10) == 8


def test_a_worker_that_died_while_idle_does_not_fail_the_next_task() -> None:
    # The OOM killer may pick an idle worker: no task ran under it, so none may fail. The
    # next task is sent before the pool could notice the death (that is the race to cover).
    with process_pool(workers=1) as pool:
        for _ in range(5):
            pid = pool.submit(h.getpid).result(timeout=10)
            os.kill(pid, signal.SIGKILL)
            task = pool.submit(h.double, 21)
            assert task.exception(timeout=10) is None, (
                f"a task that never ran: {task.exception()!r}"
            )
            assert task.result() == 42
            wait_dead([pid])


# ---------------------------------------------------------------------- 2. timeouts and cancel


def test_a_timeout_kills_the_worker_and_spares_the_rest_of_the_batch(queue: Any) -> None:
    with process_pool(task_timeout=0.5) as pool:
        start = time.monotonic()
        results = by_index(pool.results(functools.partial(h.hang_at, 100, queue), range(300)), 300)
        elapsed = time.monotonic() - start
        failed = {r.index: r.error for r in results if not r.ok}
        assert list(failed) == [100], f"only task 100 may fail: {failed}"
        assert [r.value for r in results if r.index != 100] == [
            2 * i for i in range(300) if i != 100
        ]
        late = results[100]
        assert isinstance(late.error, TaskTimeout), late
        assert 0.5 <= late.duration < 2.0
        assert elapsed < 5.0  # no hang, and no cascade of timeouts (three worker starts)
        wait_dead([queue.get(timeout=5)])
        s = pool.stats()
        assert (s.timed_out, s.failed, s.succeeded) == (1, 1, 299)


def test_a_timeout_of_a_submitted_task_arrives_promptly_and_kills_its_worker(
    queue: Any,
) -> None:
    with process_pool(task_timeout=0.5) as pool:
        task = pool.submit(h.report_pid_and_hang, queue)
        pid = reported_pid(queue, task)
        started = time.monotonic()  # the task runs since a moment ago: its deadline is near
        error = task.exception(timeout=10)
        assert time.monotonic() - started < 1.5
        assert isinstance(error, TaskTimeout)
        assert 0.5 <= task.outcome().duration < 1.5
        wait_dead([pid])
        assert pool.submit(h.double, 5).result(timeout=10) == 10  # replaced, still works
        assert pool.stats().timed_out == 1


def test_the_deadline_does_not_count_the_worker_start_up(manager: SyncManager, queue: Any) -> None:
    # A task's deadline is about the task. An initializer slower than task_timeout (loading
    # a model, say) must not make a 1 us task time out, nor kill every new worker forever.
    event = manager.Event()
    with process_pool(
        workers=1, task_timeout=0.5, initializer=h.announce_and_wait, initargs=(queue, event)
    ) as pool:
        task = pool.submit(h.double, 21)
        reported_pid(queue, task)  # the worker is in its initializer
        done, _ = concurrent.futures.wait([task], timeout=1.0)  # twice the task_timeout
        event.set()
        assert not done, f"the task ended before it started: {task.exception(0)!r}"
        assert task.result(timeout=10) == 42


def test_cancelling_a_running_task_kills_its_worker(queue: Any) -> None:
    with process_pool() as pool:
        task = pool.submit(h.report_pid_and_hang, queue)
        pid = reported_pid(queue, task)  # it is running now
        assert task.cancel()
        # The future says so at once (it waited for the kill to land: done() was False
        # right after cancel() said True); the pool's counts follow when it lands.
        assert task.done() and not task.running()
        assert isinstance(task.exception(timeout=0), TaskCancelled)
        assert isinstance(task.outcome(timeout=0).error, TaskCancelled)
        wait_dead([pid])
        assert pool.submit(h.double, 6).result(timeout=10) == 12
        s = pool.stats()
        assert (s.cancelled, s.succeeded, s.running) == (1, 1, 0)


def test_current_task_in_the_worker_process() -> None:
    with process_pool(task_timeout=5) as pool:
        before = time.monotonic()
        results = by_index(pool.results(h.context_probe, range(20)), 20)
        after = time.monotonic()
        for r in results:
            tid, deadline, first, second, attempt = r.unwrap()
            assert tid == r.index
            # CLOCK_MONOTONIC is system-wide, so the child's deadline compares with ours.
            assert deadline is not None and before + 5 <= deadline <= after + 5
            assert first is not None and second is not None
            assert second < first <= 5
            assert attempt == 1
        task = pool.submit(h.context_probe)
        assert task.result(timeout=10)[0] == task.id
    with process_pool(retries=Retry(retries=1, backoff=0.01, jitter=0)) as pool:
        retried = pool.submit(h.attempt_or_fail, "attempt-test")
        assert retried.result(timeout=10) == 2
        assert retried.outcome().attempts == 2
        assert pool.submit(h.context_probe).result(timeout=10)[1] is None  # no task_timeout


# ---------------------------------------------------------------------- 3. pickling


def test_lambdas_and_closures_run_in_the_worker() -> None:
    factor = 7

    def times_factor(x: int) -> int:
        return x * factor

    with process_pool() as pool:
        assert list(pool.map(lambda x: x + 1, range(50))) == list(range(1, 51))
        assert pool.submit(times_factor, 3).result(timeout=10) == 21
        assert pool.submit(lambda: os.getpid()).result(timeout=10) != os.getpid()


def test_an_unpicklable_argument_fails_only_its_task() -> None:
    with process_pool() as pool:
        items: list[Any] = [1, threading.Lock(), 3, 4]
        results = by_index(pool.results(h.double, items), 4)
        assert [r.value for r in results if r.ok] == [2, 6, 8]
        error = results[1].error
        assert isinstance(error, pickle.PicklingError), error
        assert "task 1" in str(error) and "could not be pickled" in str(error)
        task = pool.submit(h.identity, threading.Lock())
        assert "could not be pickled" in str(task.exception(timeout=10))
        task = pool.submit(h.identity, x=threading.Lock())
        assert "keyword arguments" in str(task.exception(timeout=10))
        assert pool.submit(h.identity, "fine").result(timeout=10) == "fine"


def test_an_unpicklable_function_fails_its_tasks_with_a_clear_message() -> None:
    lock = threading.Lock()
    with process_pool() as pool:
        results = by_index(pool.results(lambda x: (lock, x), range(3)), 3)
        for r in results:
            assert isinstance(r.error, pickle.PicklingError), r
            assert "function" in str(r.error) and "could not be pickled" in str(r.error)
        assert pool.submit(h.double, 1).result(timeout=10) == 2


def test_an_unpicklable_return_value_fails_only_its_task() -> None:
    with process_pool() as pool:
        results = by_index(pool.results(functools.partial(h.lock_at, 5), range(20)), 20)
        error = results[5].error
        assert isinstance(error, pickle.PicklingError), results[5]
        assert "return value" in str(error) and "could not be pickled" in str(error)
        assert [r.value for r in results if r.index != 5] == [2 * i for i in range(20) if i != 5]
        error = pool.submit(h.return_generator).exception(timeout=10)
        assert isinstance(error, pickle.PicklingError)
        assert "generator" in str(error) and "could not be pickled" in str(error)
        assert pool.submit(h.return_lock).exception(timeout=10) is not None
        assert pool.submit(h.double, 2).result(timeout=10) == 4


@pytest.mark.timeout(60)
def test_a_plain_function_that_returns_a_coroutine_gets_its_outcome() -> None:
    # As on the async backend: the coroutine runs in the worker, on its loop, and its value
    # (or error) is the call's. It failed with "cannot pickle 'coroutine' object" and a
    # "coroutine ... was never awaited" warning.
    with process_pool() as pool:
        got = by_index(pool.results(h.around_twice_later, range(6)), 6)
        assert [r.value for r in got if r.ok] == [0, 2, 4, 8, 10]
        assert isinstance(got[3].error, ValueError) and str(got[3].error) == "three"
        assert got[4].duration >= 0.04  # the coroutine's time is the call's (it was 0)
        assert pool.submit(h.around_twice_later, 5).result(timeout=30) == 10


def test_an_exception_that_cannot_be_unpickled_comes_back_as_remote_error() -> None:
    with process_pool() as pool:
        error = pool.submit(h.raise_needs_two_args).exception(timeout=10)
        assert isinstance(error, RemoteError), error
        assert "NeedsTwoArgs" in error.type_name
        assert "left and right" in str(error)
        error = pool.submit(h.raise_holds_a_lock).exception(timeout=10)
        assert isinstance(error, RemoteError), error
        assert "HoldsALock" in error.type_name and "locked out" in str(error)
        assert pool.submit(h.double, 3).result(timeout=10) == 6


def test_an_ordinary_exception_comes_back_as_itself_with_the_child_traceback() -> None:
    with process_pool() as pool:
        task = pool.submit(h.raise_value_error_from_the_child, 3)
        error = task.exception(timeout=10)
        assert type(error) is ValueError
        assert "bad value 3" in str(error) and f"pid {os.getpid()}" not in str(error)
        tb = task.outcome().traceback
        assert tb is not None and "raise_value_error_from_the_child" in tb
        assert "proc_helpers.py" in tb
        results = by_index(pool.results(h.raise_value_error_from_the_child, range(3)), 3)
        for r in results:
            assert type(r.error) is ValueError
            assert r.traceback is not None and "raise_value_error_from_the_child" in r.traceback
        with pytest.raises(TaskError) as info:
            list(pool.map(h.raise_value_error_from_the_child, range(3)))
        assert type(info.value.__cause__) is ValueError


# Issue 9 item 1: what goes wrong while a task's function, arguments or result travel. Each case
# fails only the task concerned, names what went wrong, and the rest of the batch and the pool
# go on. Batches of 200 tiny items travel as one unit, so each case is hit mid-unit.

BATCH = 200


def run_batch_with(fn: Callable[[int], Any], at: int = 100) -> list[Result[Any]]:
    with process_pool() as pool:
        results = by_index(pool.results(fn, range(BATCH), chunksize=BATCH), BATCH)
        assert pool.submit(h.double, 21).result(timeout=10) == 42  # the pool still works
        s = pool.stats()
        assert (s.succeeded, s.failed, s.queued, s.running) == (BATCH, 1, 0, 0), s
        assert_stats_add_up(pool)
    bad = [r for r in results if r.index != at and (not r.ok or r.value != 2 * r.index)]
    assert bad == []
    return results


def stream_of(values: list[Any]) -> tuple[memoryview, list[int]]:
    """``values`` pickled as the process backend's streams are: one pickler, one dump each."""
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, pickle.HIGHEST_PROTOCOL)
    ends = []
    for v in values:
        pickler.dump(v)
        ends.append(buf.tell())
    return buf.getbuffer(), ends


def test_a_stream_reads_on_after_a_value_that_fails_without_mixing_up_objects() -> None:
    # Values of a stream share the pickler's memo (a class, a string, an object used twice
    # is pickled once). After a value fails to load, the reader's memo is rebuilt as the
    # writer's; a later value that refers to an object of the failed one fails too, and no
    # value ever gets another one's object.
    from workpool._backends._wire import load_stream

    shared = h.Box("shared")
    values: list[Any] = [h.Box(i) for i in range(10)]
    values[3] = [shared, h.FailsToUnpickle("third")]  # fails after memoizing `shared`
    values[5] = shared  # refers to it
    values[7] = h.FailsToUnpickle("seventh")
    body, ends = stream_of(values)
    got, failed = load_stream(body, ends, [])
    assert sorted(failed) == [3, 5, 7]
    assert [v.content for i, v in enumerate(got) if i not in failed] == [0, 1, 2, 4, 6, 8, 9]
    assert "third" in str(failed[3]) and "seventh" in str(failed[7])
    assert "earlier value" in str(failed[5])
    # A writer that started afresh (after a value it could not pickle) is read afresh too.
    body2, ends2 = stream_of([h.Box("a"), h.Box("b")])
    tail, tail_ends = stream_of([h.Box("c")])
    joined = bytes(body2) + bytes(tail)
    ends3 = [*ends2, len(body2) + tail_ends[0]]
    got, failed = load_stream(memoryview(joined), ends3, [2])
    assert [v.content for v in got] == ["a", "b", "c"] and not failed


@pytest.mark.parametrize(
    ("factory", "words"),
    [
        (functools.partial(h.NeedsTwoArgs, "left", "right"), ["NeedsTwoArgs", "TypeError"]),
        (functools.partial(h.FailsToUnpickle, "no way back"), ["FailsToUnpickle", "no way back"]),
    ],
    ids=["exception-needing-two-args", "raises-when-unpickled"],
)
def test_a_result_that_cannot_be_unpickled_fails_only_its_task(
    factory: Callable[[], Any], words: list[str]
) -> None:
    # The value pickles in the worker; unpickling it here raised in the slot's thread, which
    # died: the task never finished, the rest of its batch was lost, `with` never exited.
    results = run_batch_with(functools.partial(h.make_at, 100, factory))
    error = results[100].error
    assert isinstance(error, pickle.UnpicklingError), results[100]
    assert "task 100" in str(error) and "could not be unpickled" in str(error), error
    for word in words:
        assert word in str(error), error
    with process_pool() as pool:
        error = pool.submit(h.make_at, 0, factory, 0).exception(timeout=10)
        assert isinstance(error, pickle.UnpicklingError) and words[0] in str(error), error


@pytest.mark.parametrize(
    ("code", "signum"),
    [(5, None), (None, signal.SIGSEGV)],
    ids=["os._exit", "segfault"],
)
def test_a_worker_dying_while_pickling_a_result_fails_only_that_task(
    tmp_path: Path, code: int | None, signum: int | None
) -> None:
    # The death came after the call finished: it was taken for a death between two calls and
    # the unit requeued, again and again (one task ran 825 times, side effects and all).
    runs = tmp_path / "runs"
    fn = functools.partial(h.make_at, 100, h.exits_when_pickled(code), runs=str(runs))
    results = run_batch_with(fn)
    error = results[100].error
    assert isinstance(error, WorkerCrashed), results[100]
    assert "task 100" in str(error) and "pickling" in str(error), error
    assert (error.exitcode, error.signal) == ((code, None) if code else (-signal.SIGSEGV, signum))
    assert runs.read_text() == "run\n"  # ran once: never repeated
    with process_pool() as pool:
        task = pool.submit(h.make_at, 0, h.exits_when_pickled(code), 0, runs=str(runs))
        assert isinstance(task.exception(timeout=10), WorkerCrashed)
    assert runs.read_text() == "run\n" * 2


def test_a_result_whose_pickling_raises_system_exit_fails_only_its_task() -> None:
    results = run_batch_with(functools.partial(h.make_at, 100, h.SysExitWhenPickled))
    error = results[100].error
    assert isinstance(error, pickle.PicklingError), results[100]
    assert "SysExitWhenPickled" in str(error) and "SystemExit" in str(error), error


@pytest.mark.parametrize(
    ("bad", "kind", "words"),
    [
        (h.FailsToUnpickle("won't unpickle"), pickle.UnpicklingError, ["won't unpickle"]),
        (h.SysExitWhenUnpickled(), pickle.UnpicklingError, ["SystemExit"]),
        (h.ExitsWhenUnpickled(6), WorkerCrashed, ["exited with code 6", "unpickling"]),
    ],
    ids=["raises", "sys.exit", "os._exit"],
)
@pytest.mark.parametrize("boxed", [False, True], ids=["alone", "among-custom-objects"])
def test_an_argument_that_fails_in_the_worker_fails_only_its_task(
    bad: Any, kind: type[BaseException], words: list[str], boxed: bool
) -> None:
    # Unpickling the unit in the worker raised (the worker died with a traceback and every
    # worker after it: requeued until three in a row, then a misleading error) or killed it
    # (requeued as if it died between calls). Plain items travel in one pickle, custom ones
    # one pickle each; a bad item among either fails alone.
    n = 50
    items: list[Any] = [h.Box(i) if boxed else i for i in range(n)]
    items[25] = bad
    with process_pool() as pool:
        results = by_index(pool.results(h.value_of, items, chunksize=n), n)
        error = results[25].error
        assert isinstance(error, kind), results[25]
        assert "task 25" in str(error) and "unpickl" in str(error), error
        for word in words:
            assert word in str(error), error
        assert [r.value for r in results if r.index != 25] == [i for i in range(n) if i != 25]
        assert isinstance(pool.submit(h.value_of, bad).exception(timeout=10), kind)
        assert pool.submit(h.double, 4).result(timeout=10) == 8
        assert_stats_add_up(pool)


@pytest.mark.parametrize(
    ("fn", "kind", "words"),
    [
        (h.CallableThatFailsToUnpickle(), pickle.UnpicklingError, ["refuses to be unpickled"]),
        (h.CallableThatExitsWhenUnpickled(), WorkerCrashed, ["exited with code 7"]),
    ],
    ids=["raises", "os._exit"],
)
def test_a_function_that_fails_in_the_worker_fails_its_tasks_and_nothing_else(
    fn: Callable[[int], int], kind: type[BaseException], words: list[str]
) -> None:
    with process_pool() as pool:
        results = by_index(pool.results(fn, range(20), chunksize=10), 20)
        for r in results:
            assert isinstance(r.error, kind), r
            assert "function" in str(r.error) and "unpickl" in str(r.error), r
            for word in words:
                assert word in str(r.error), r
        assert pool.submit(h.double, 5).result(timeout=10) == 10
        s = pool.stats()
        assert (s.failed, s.succeeded, s.queued, s.running) == (20, 1, 0, 0)


def test_a_task_exception_carries_the_worker_traceback_as_its_cause() -> None:
    # Issue 9 item 14: like ProcessPoolExecutor, raising the task's exception in the parent
    # shows where it was raised in the worker: the worker's traceback is its __cause__.
    with process_pool() as pool:
        task = pool.submit(h.raise_value_error_from_the_child, 3)
        with pytest.raises(ValueError) as info:
            task.result(timeout=10)
        cause = info.value.__cause__
        assert cause is not None and "raise_value_error_from_the_child" in str(cause)
        assert "proc_helpers.py" in str(cause) and "bad value 3" in str(cause)
        shown = "".join(traceback.format_exception(info.value))
        assert "raise_value_error_from_the_child" in shown  # what a user sees printed
        outcome = task.outcome()
        assert outcome.traceback is not None and outcome.traceback in str(cause)
        with pytest.raises(ValueError) as info:
            outcome.unwrap()
        assert info.value.__cause__ is cause
        with pytest.raises(TaskError) as mapped:
            list(pool.map(h.raise_value_error_from_the_child, range(3)))
        assert isinstance(mapped.value.__cause__, ValueError)
        assert "raise_value_error_from_the_child" in str(mapped.value.__cause__.__cause__)
        # One that could not travel as itself (RemoteError) gets it too.
        error = pool.submit(h.raise_holds_a_lock).exception(timeout=10)
        assert isinstance(error, RemoteError) and "raise_holds_a_lock" in str(error.__cause__)


# ---------------------------------------------------------------------- what stays alive


def test_nothing_of_a_finished_task_stays_alive_in_the_pool() -> None:
    # Issue 9 item 12: once a result is delivered and the caller drops it, the pool holds
    # nothing of the task: not its function (the backend's cache of pickled functions kept
    # 256 of them: bound methods and what they hold), not its arguments, not its result.
    # One worker, and a last task: the engine's worker thread refers to the unit it
    # delivered last until it takes the next (the engine's part of item 12, not this one's).
    with process_pool(workers=1) as pool:
        owner, arg = h.Held(), h.Held()
        refs = [weakref.ref(owner), weakref.ref(arg)]
        task = pool.submit(owner.method, arg)
        value = task.result(timeout=10)
        refs.append(weakref.ref(value))
        mapped = h.Held()
        refs.append(weakref.ref(mapped))
        assert len(list(pool.map(mapped.method, [h.Held() for _ in range(50)]))) == 50
        del owner, arg, task, value, mapped
        assert pool.submit(h.double, 1).result(timeout=10) == 2
        gc.collect()
        assert [r() for r in refs] == [None] * 4


def test_a_worker_lets_go_of_a_finished_tasks_arguments_and_function(
    manager: SyncManager,
) -> None:
    # Like CPython's test_ressources_gced_in_workers: the copies a worker made of a task's
    # arguments, and of its function, are collected once the task is done (the function once
    # no more of its tasks are queued). Each copy sets its own event when collected.
    argument_gone, function_gone = manager.Event(), manager.Event()
    with process_pool(workers=1) as pool:
        assert pool.submit(h.getpid, h.SignalsWhenCollected(argument_gone)).result(timeout=10)
        assert argument_gone.wait(10), "the worker kept the task's arguments"
        holder = h.SignalsWhenCollected(function_gone)
        assert pool.submit(holder.method, 5).result(timeout=10) == 5
        assert list(pool.map(holder.method, range(100))) == list(range(100))
        assert function_gone.wait(10), "the worker kept the task's function"
        assert pool.submit(holder.method, 6).result(timeout=10) == 6  # sent again: works


def test_a_worker_holds_a_bounded_number_of_functions(manager: SyncManager) -> None:
    # A busy worker (its queue never runs dry, so it never forgets all) that runs many
    # different functions keeps only the most recently used: the one of its first task is let
    # go while the worker still has work, long before the pool is idle.
    gone, release = manager.Event(), manager.Event()
    first = h.SignalsWhenCollected(gone)
    with process_pool(workers=1, queue_size=200) as pool:
        tasks = [pool.submit(first.method, 0), pool.submit(h.wait_event, release)]
        del first
        # Fresh bound methods: a new function each, all queued behind the blocked task.
        tasks += [pool.submit(h.Held().method, i) for i in range(2, 100)]
        last = pool.submit(h.wait_event, gone)  # runs last, while nothing is idle yet
        release.set()
        assert last.result(timeout=30), "the busy worker still held its first task's function"
        assert [t.result(timeout=10) for t in tasks[2:]] == list(range(2, 100))


# ---------------------------------------------------------------------- initargs

START_METHODS = [
    pytest.param("forkserver", marks=needs_fork_server),
    "spawn",
    pytest.param("fork", marks=pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")),
]


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.timeout(60)
def test_initargs_can_carry_multiprocessing_objects(method: str) -> None:
    # Issue 9 item 13b: as with ProcessPoolExecutor and multiprocessing.Pool, the initializer's
    # arguments may be multiprocessing objects, which can travel only while a process starts
    # (the pool pickled them up front and raised ConfigError).
    ctx = multiprocessing.get_context(method)
    queue, lock, event, value = ctx.Queue(), ctx.Lock(), ctx.Event(), ctx.Value("i", 0)
    with process_pool(
        start_method=method, initializer=h.keep_shared, initargs=(queue, lock, event, value)
    ) as pool:
        pids = [pool.submit(h.use_shared, i).result(timeout=30) for i in range(6)]
    assert os.getpid() not in pids
    assert sorted(queue.get(timeout=10) for _ in range(6)) == list(range(6))
    assert event.is_set() and value.value == 6


@needs_fork_server
def test_a_queue_handler_in_the_initializer_carries_worker_logs() -> None:
    queue = multiprocessing.get_context("forkserver").Queue()
    with process_pool(initializer=h.log_to_queue, initargs=(queue,)) as pool:
        pool.submit(h.log, "hello").result(timeout=10)
        record = queue.get(timeout=10)
    assert record.getMessage().startswith("hello from ")
    assert record.name == "workpool-test-worker"


def test_initargs_still_take_what_cloudpickle_takes() -> None:
    with process_pool(initializer=h.call_initarg, initargs=(lambda: "from a lambda",)) as pool:
        value, pid = pool.submit(h.read_state).result(timeout=10)
    assert value == "from a lambda" and pid != os.getpid()


@pytest.mark.parametrize(
    ("initargs", "words"),
    [
        ((threading.Lock(),), ["initargs", "lock"]),
        ((multiprocessing.get_context("fork").Lock(),), ["initargs", "get_context"]),
    ],
    ids=["threading.Lock", "a fork-context Lock"],
)
@needs_fork_server
def test_initargs_that_cannot_reach_a_worker_are_a_config_error(
    initargs: tuple[Any, ...], words: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        process_pool(start_method="forkserver", initializer=h.keep_shared, initargs=initargs)
    for word in words:
        assert word in str(info.value), info.value


# ---------------------------------------------------------------------- 4. options


def test_max_tasks_per_worker_recycles_workers() -> None:
    with process_pool(max_tasks_per_worker=3) as pool:
        tasks = [pool.submit(h.getpid) for _ in range(30)]  # one task per unit
        pids = collections.Counter(t.result(timeout=10) for t in tasks)
    assert len(pids) > 2
    assert max(pids.values()) <= 3, pids


def test_the_initializer_sets_per_worker_state() -> None:
    with process_pool(initializer=h.set_state, initargs=("hello",)) as pool:
        states = [pool.submit(h.read_state).result(timeout=10) for _ in range(6)]
        pids = {pool.submit(h.getpid).result(timeout=10) for _ in range(6)}
    for value, pid in states:
        assert value == "hello"
        assert pid != os.getpid()
    assert {pid for _, pid in states} <= pids  # every worker ran the initializer
    assert h.STATE is None  # the parent was not touched


def results_until_closed(
    pool: Pool, fn: Callable[..., Any], items: Iterable[Any]
) -> tuple[list[Result[Any]], PoolClosed | None]:
    """Every result ``pool.results`` yields, and the PoolClosed that ended it early (if any)."""
    got: list[Result[Any]] = []
    try:
        for r in pool.results(fn, items):
            got.append(r)
    except PoolClosed as e:
        return got, e
    return got, None


@pytest.mark.parametrize(
    ("initializer", "reason"),
    [
        (h.failing_initializer, "initializer exploded on purpose"),
        (h.exiting_initializer, "exited with code 4"),
    ],
    ids=["raises", "kills its worker"],
)
def test_a_pool_whose_workers_never_start_breaks_and_says_why(
    initializer: Callable[[], None], reason: str
) -> None:
    # Issue 9 item 15: workers that can never run a task must not make the pool fail every
    # task it is given, forever (a caller that resubmits failures would spin). After a few in
    # a row, the pool is broken: what it accepted fails with the reason, and submits raise.
    with process_pool(initializer=initializer) as pool:
        got, closed = results_until_closed(pool, h.double, itertools.count())
        assert closed is not None, "an endless input ran into a broken pool: it must stop"
        assert "broken" in str(closed) and reason in str(closed), closed
        assert got, "the accepted items must come back"
        for r in got:
            assert isinstance(r.error, WorkpoolError) and not r.ok, r
            assert "initializer" in str(r.error) or reason in str(r.error), r
        # A caller that resubmits what failed ends at once too.
        with pytest.raises(PoolClosed) as info:
            for _ in range(1000):
                pool.submit(h.double, 1).exception(timeout=10)
        assert "broken" in str(info.value) and reason in str(info.value)
        assert pool.closed
        assert_stats_add_up(pool)
        s = pool.stats()
        assert s.failed == s.submitted == len(got) and s.queued == s.running == 0


def test_a_failing_initializer_fails_the_tasks_and_says_why() -> None:
    with process_pool(initializer=h.failing_initializer) as pool:
        error = pool.submit(h.double, 1).exception(timeout=10)
        assert isinstance(error, WorkpoolError), error
        assert "initializer" in str(error) and "exploded on purpose" in str(error)


def test_a_worker_that_fails_to_start_once_does_not_break_the_pool(tmp_path: Path) -> None:
    # Only workers that fail *in a row* break the pool: one whose initializer fails once (a
    # flaky resource) costs its tasks, and the next worker starts fine.
    marker = tmp_path / "failed-once"
    with process_pool(
        workers=1, initializer=h.fail_the_first_time, initargs=(str(marker),)
    ) as pool:
        first = pool.submit(h.double, 1).exception(timeout=10)
        assert isinstance(first, WorkpoolError) and "the first time" in str(first)
        assert [pool.submit(h.double, i).result(timeout=10) for i in range(3)] == [0, 2, 4]


def test_the_spawn_start_method_works() -> None:
    with process_pool(workers=1, start_method="spawn") as pool:
        assert pool.submit(h.double, 21).result(timeout=20) == 42
        assert pool.submit(h.getpid).result(timeout=20) != os.getpid()


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"start_method": "nope"}, ["start_method", "nope"]),
        ({"max_tasks_per_worker": 0}, ["max_tasks_per_worker", "0"]),
        ({"max_tasks_per_worker": True}, ["max_tasks_per_worker"]),
        ({"initializer": 5}, ["initializer", "5"]),
        ({"initargs": [1]}, ["initargs", "tuple"]),
        ({"foo": 1}, ["foo"]),
    ],
)
def test_bad_process_options_raise_config_error(options: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        process_pool(**options)
    for word in words:
        assert word in str(info.value)


# ---------------------------------------------------------------------- fork


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
@pytest.mark.timeout(60)
def test_forked_workers_exit_on_their_own_when_let_go(monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 9 item 4: a forked worker is a copy of this process, with its pools' drain-at-exit
    # hook and engines whose work (in the copy) never finishes: at its exit it waited for
    # them, until the pool killed it after a 1 s grace (an idle shutdown took 1 s). Workers
    # recycled after each task are forked while the other worker runs one.
    from workpool._backends import process

    exits: list[int | None] = []
    close = process._Worker.close

    def recording_close(self: Any, grace: float = 1.0) -> None:
        # A grace that a loaded machine cannot exceed: only a worker that hangs is killed.
        close(self, max(grace, 5.0))
        exits.append(self.proc.exitcode)

    monkeypatch.setattr(process._Worker, "close", recording_close)
    with process_pool(start_method="fork", max_tasks_per_worker=1) as pool:
        assert sorted(pool.map(h.double, range(6), chunksize=1)) == [2 * i for i in range(6)]
    assert len(exits) >= 6 and exits == [0] * len(exits), exits  # none had to be killed


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
@pytest.mark.parametrize(
    ("bad", "kind"),
    [(h.SysExitWhenUnpickled(), pickle.UnpicklingError), (h.ExitsWhenUnpickled(6), WorkerCrashed)],
    ids=["sys.exit", "os._exit"],
)
def test_a_forked_worker_that_exits_before_running_its_task_fails_it(
    bad: Any, kind: type[BaseException]
) -> None:
    # A forked worker that exited before its task ran (SystemExit while unpickling it) hung
    # in the drain-at-exit hook it inherited: it never died, and its task never finished.
    with process_pool(start_method="fork") as pool:
        assert isinstance(pool.submit(h.value_of, bad).exception(timeout=10), kind)
        assert pool.submit(h.double, 2).result(timeout=10) == 4


# ---------------------------------------------------------------------- 5. no orphans


def test_leaving_the_with_block_leaves_no_worker_process() -> None:
    before = descendants()
    with process_pool() as pool:
        pids = {t.result(timeout=10) for t in [pool.submit(h.getpid) for _ in range(10)]}
        workers = descendants() - before
        assert pids <= workers  # the tasks really ran in child processes
    wait_dead(workers | pids)


SCRIPT = """
import os, sys, threading
from workpool import Pool

def hang(i):
    os.write(1, f"{os.getpid()}\\n".encode())  # one write: the two workers' lines never mix
    threading.Event().wait()

if __name__ == "__main__":
    pool = Pool(backend="process", workers=2, start_method=sys.argv[1])
    for i in range(2):
        pool.submit(hang, i)
    threading.Event().wait()
"""


@pytest.mark.parametrize("method", [pytest.param("forkserver", marks=needs_fork_server), "fork"])
def test_workers_exit_when_the_pool_process_is_sigkilled(tmp_path: Path, method: str) -> None:
    # fork: a forked worker must close its copy of the pool's end of its own lifeline, or it
    # holds it open and never sees the pool die.
    script = tmp_path / "victim.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    with (tmp_path / "stderr.txt").open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(script), method], stdout=subprocess.PIPE, stderr=stderr, env=env
        )
    try:
        assert proc.stdout is not None
        pids = []
        for _ in range(2):
            line = proc.stdout.readline()
            assert line, (tmp_path / "stderr.txt").read_text()
            pids.append(int(line))
        family = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        assert set(pids) <= family
        proc.kill()
        proc.wait(10)
        wait_dead(pids)
        wait_dead(family)  # the fork server and resource tracker go too
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


# ---------------------------------------------------------------------- signals to the group


class GroupScript:
    """tests/scripts/group_signal.py in its own process group (as a service or a job), with
    the FIFO its tasks wait on held open for writing until ``release``."""

    def __init__(self, tmp_path: Path, method: str) -> None:
        self.fifo = tmp_path / "release"
        os.mkfifo(self.fifo)
        # Read-write: opening does not block, and the tasks' reads end when this one closes.
        self.writer: int | None = os.open(self.fifo, os.O_RDWR)
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPTS / "group_signal.py"), str(self.fifo), method],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), *sys.path])},
            start_new_session=True,
        )
        self.lines: list[str] = []

    def read_until(self, prefix: str, count: int = 1) -> list[str]:
        """Lines up to the ``count``-th that starts with ``prefix`` (bounded by the test's
        timeout: readline blocks)."""
        assert self.proc.stdout is not None
        while sum(line.startswith(prefix) for line in self.lines) < count:
            line = self.proc.stdout.readline()
            assert line, f"the script ended early: {self.lines}\n{self.proc.stderr.read()}"  # type: ignore[union-attr]
            self.lines.append(line.rstrip("\n"))
        return self.lines

    def signal_group(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)  # the script is its group's leader

    def release(self) -> None:
        if self.writer is not None:
            os.close(self.writer)
            self.writer = None

    def finish(self) -> int:
        out, err = self.proc.communicate(timeout=20)
        self.lines += out.splitlines()
        self.stderr = err
        return self.proc.returncode

    def close(self) -> None:
        self.release()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.communicate(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything of the group left behind


@pytest.fixture
def group_script(tmp_path: Path) -> Iterator[Callable[[str], GroupScript]]:
    started: list[GroupScript] = []

    def start(method: str) -> GroupScript:
        script = GroupScript(tmp_path, method)
        started.append(script)
        return script

    yield start
    for script in started:
        script.close()


def group_gone(pgid: int, timeout: float = 10.0) -> bool:
    """Wait (bounded) until no process is left in group ``pgid``: not our children, so poll."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        pids = [p for p in psutil.process_iter(["pid"]) if _in_group(p, pgid)]
        if all(p.status() == psutil.STATUS_ZOMBIE for p in pids if p.is_running()):
            return True
        time.sleep(0.01)  # polling an OS condition, not synchronising with the pool
    return False


def _in_group(p: psutil.Process, pgid: int) -> bool:
    try:
        return os.getpgid(p.pid) == pgid
    except (ProcessLookupError, psutil.NoSuchProcess):
        return False


GROUP_METHODS = [pytest.param("forkserver", marks=needs_fork_server), "spawn"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("method", GROUP_METHODS)
@pytest.mark.timeout(60)
def test_a_signal_to_the_whole_group_drains_the_running_tasks(
    group_script: Callable[[str], GroupScript], method: str, sig: int
) -> None:
    # Issue 9 item 7: systemd, a terminal and `kill -TERM -PGID` signal every process of the
    # program: the workers (and the fork server) died of SIGTERM mid-drain, the running items
    # ended as WorkerCrashed ("exit code 255": the dead fork server's word for its workers).
    # Workers leave stopping to the pool: the drain finishes them.
    s = group_script(method)
    s.read_until("started ", 2)
    s.signal_group(sig)
    s.read_until("signal ")  # the pool has it: it drains
    s.release()
    code = s.finish()
    assert code == 3, (s.lines, s.stderr)
    results = sorted(line for line in s.lines if line.startswith("result "))
    assert results == ["result 0 ok 0", "result 1 ok 10"], (s.lines, s.stderr)
    assert "interrupted completed=2 failed=0 cancelled=0" in s.lines
    if method == "forkserver":  # else it could start no new worker; see _in_fork_server
        assert s.lines[-1] == "fork server alive", s.lines
    assert group_gone(s.proc.pid), "a process of the script outlived it"


@pytest.mark.parametrize("method", GROUP_METHODS)
@pytest.mark.timeout(60)
def test_a_second_signal_to_the_group_kills_the_workers(
    group_script: Callable[[str], GroupScript], method: str
) -> None:
    s = group_script(method)
    s.read_until("started ", 2)
    pids = [int(line.split()[2]) for line in s.lines if line.startswith("started ")]
    s.signal_group(signal.SIGTERM)
    s.read_until("signal ")
    s.signal_group(signal.SIGTERM)  # the tasks are never released: the pool must stop them
    code = s.finish()
    assert code == 3, (s.lines, s.stderr)
    assert not any(" ok " in line for line in s.lines if line.startswith("result ")), s.lines
    wait_dead(pids)
    assert group_gone(s.proc.pid), "a process of the script outlived it"


def test_programs_a_task_runs_get_the_default_signal_handling() -> None:
    # Workers ignore SIGINT/SIGTERM with a handler, not SIG_IGN, which a program started by a
    # task would inherit (and then ignore the signals too).
    code = (
        "import signal; print(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, "
        "signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    )
    with process_pool() as pool:
        out = pool.submit(h.run_python, code).result(timeout=30)
    assert out.split() == ["True", "True"], out


# ---------------------------------------------------------------------- 6. shutdown


def test_shutdown_with_a_timeout_cancels_and_kills_hanging_work(queue: Any) -> None:
    pool = process_pool()
    running = [pool.submit(h.report_pid_and_hang, queue, i) for i in range(2)]
    pids = {reported_pid(queue, *running) for _ in range(2)}  # both run now
    queued = [pool.submit(h.report_pid_and_hang, queue, i) for i in range(2, 5)]
    start = time.monotonic()
    report = pool.shutdown(timeout=0.5)
    assert time.monotonic() - start < 3.0
    assert not report.finished  # documented: the timeout cut the drain
    assert sorted(u.args[1] for u in report.unstarted) == [2, 3, 4]
    assert all(u.fn is h.report_pid_and_hang for u in report.unstarted)
    for task in running:
        assert isinstance(task.exception(timeout=5), TaskCancelled)
    for task in queued:
        assert task.done()
        assert task.cancelled() or isinstance(task.exception(0), TaskCancelled)
    wait_dead(pids)
    assert queue.empty()  # no queued task started
    assert descendants() & pids == set()


def test_keyboard_interrupt_in_the_with_body_cancels_and_leaves_no_worker(queue: Any) -> None:
    before = descendants()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt), process_pool() as pool:
        task = pool.submit(h.report_pid_and_hang, queue)
        queued = [pool.submit(h.double, i) for i in range(3)]  # behind the hang: 1 worker free
        pid = reported_pid(queue, task)
        workers = descendants() - before
        raise KeyboardInterrupt
    assert time.monotonic() - start < 5.0
    assert isinstance(task.exception(timeout=5), TaskCancelled)
    for t in queued:
        assert t.done()
    wait_dead(workers | {pid})


# ---------------------------------------------------------------------- 7. the main script
# A worker needs the program's main module to run functions defined there. The fork server
# imports the main script once (as ``__mp_main__``) and forks workers that have it, instead of
# every worker running the script again; a script that starts a pool without the main guard
# gets a clear error instead of a hang. Each test runs a script of its own in a subprocess:
# the pytest process's fork server (conftest) is started once, differently, and stays up.

SCRIPT_TIMEOUT = 40.0  # a bound for a script that takes ~1 s: past it, it hung


def run_script(
    script: Path, *, pythonpath: Iterable[Path] = (), env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` to its end, or fail the test when it is still running after the bound.

    The child inherits this environment (dev.py's leftover-process marker included), with
    ``src/`` first on PYTHONPATH. Its own session, so a hung script is killed together with
    everything it started.
    """
    paths = [str(SRC), *map(str, pythonpath), os.environ.get("PYTHONPATH", "")]
    full_env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
        cwd=script.parent,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=SCRIPT_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            out, err = "", "(no output: its pipes stayed open after the kill)"
        pytest.fail(
            f"{script.name} still ran after {SCRIPT_TIMEOUT}s (hung)\n"
            f"stdout:\n{out}\nstderr:\n{err}"
        )
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def last_json(proc: subprocess.CompletedProcess[str]) -> Any:
    """The JSON report a script prints as its last line; a clear failure if it did not."""
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    lines = proc.stdout.strip().splitlines()
    assert lines, f"the script printed nothing\n{proc.stderr}"
    return json.loads(lines[-1])


GUARDED_SCRIPT = """
import json, multiprocessing.forkserver, os, sys
from workpool import Pool

# Module level: runs wherever this script is run or imported, one line per run.
fd = os.open(os.environ["WORKPOOL_MAIN_MARKS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
os.write(fd, f"{__name__} {os.getpid()}\\n".encode())
os.close(fd)

OFFSET = 100  # a global of the main script that the task reads

def square(x):
    return x * x + OFFSET, os.getpid()

if __name__ == "__main__":
    with Pool(2, backend="process", max_tasks_per_worker=1) as pool:
        results = sorted(pool.results(square, range(6)), key=lambda r: r.index)
    print(json.dumps({
        "pid": os.getpid(),
        "fork_server": multiprocessing.forkserver._forkserver._forkserver_pid,
        "results": [r.value if r.ok else repr(r.error) for r in results],
    }))
"""


@needs_fork_server
@pytest.mark.timeout(60)
def test_the_main_script_runs_once_in_the_fork_server_not_once_per_worker(
    tmp_path: Path,
) -> None:
    script = tmp_path / "guarded_main.py"
    script.write_text(GUARDED_SCRIPT)
    marks = tmp_path / "marks.txt"
    report = last_json(run_script(script, env={"WORKPOOL_MAIN_MARKS": str(marks)}))
    # The task is a function of the main script: it ran in the workers, with its globals.
    values = [r if isinstance(r, str) else r[0] for r in report["results"]]
    assert values == [x * x + 100 for x in range(6)], report["results"]
    workers = {r[1] for r in report["results"]}
    assert len(workers) == 6  # max_tasks_per_worker=1: a new worker for every task
    assert report["pid"] not in workers
    # The script's module level ran twice: in the parent and in the fork server. Not in any
    # of the (at least six) workers, which were forked from the server with it imported.
    runs = [tuple(line.split()) for line in marks.read_text().splitlines()]
    assert sorted(runs) == [
        ("__main__", str(report["pid"])),
        ("__mp_main__", str(report["fork_server"])),
    ], f"workers were {sorted(workers)}"


UNGUARDED_SCRIPT = """
from workpool import Pool, PoolClosed

def double(x):
    return 2 * x

# No `if __name__ == "__main__":` guard: a worker (or the fork server) importing this
# script would create a pool of its own.
with Pool(2, backend="process", start_method={method!r}) as pool:
    try:
        for r in pool.results(double, range(3)):
            if r.ok:
                print(f"result {{r.index}} ok {{r.value}}", flush=True)
            else:
                print(f"result {{r.index}} {{type(r.error).__name__}}: {{r.error}}", flush=True)
    except PoolClosed as e:
        print(f"closed {{e}}", flush=True)
print("finished", flush=True)
"""

GUARD = 'if __name__ == "__main__":'


@pytest.mark.parametrize(
    "method",
    [pytest.param("forkserver", marks=needs_fork_server), "spawn"],
)
@pytest.mark.timeout(60)
def test_a_pool_created_without_the_main_guard_fails_its_tasks_instead_of_hanging(
    tmp_path: Path, method: str
) -> None:
    # forkserver: the server dies importing the script, so no worker can start; spawn: every
    # worker dies importing it. Either way, after three in a row the pool is broken: no hang,
    # every task it accepted gets a result, the rest of the input is refused (PoolClosed),
    # and the messages say what to do.
    script = tmp_path / "unguarded_main.py"
    script.write_text(UNGUARDED_SCRIPT.format(method=method))
    proc = run_script(script)
    output = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, output
    lines = proc.stdout.splitlines()
    assert lines[-1] == "finished", output
    results = sorted(line for line in lines if line.startswith("result "))
    closed = [line for line in lines if line.startswith("closed ")]
    assert [line.split()[1] for line in results] == ["0", "1", "2"][: len(results)], output
    assert len(results) == 3 or len(closed) == 1, output
    for line in results + closed:
        assert GUARD in line, output
    for line in results:
        # Sent to a worker: WorkpoolError or WorkerCrashed; queued when the pool broke (the
        # pool reads ahead): PoolClosed, "is broken and accepts no more work".
        assert line.split()[2] in ("WorkpoolError:", "WorkerCrashed:", "PoolClosed:"), output
        assert "PoolClosed:" not in line or "is broken" in line, output
    for line in closed:
        assert "is broken" in line, output
    # Where the pool was created in the worker, the error says so, with the same advice.
    assert "WorkpoolError: a process pool was created while a worker process" in proc.stderr
    assert GUARD in proc.stderr


@pytest.mark.parametrize(
    ("method", "as_module"),
    [
        pytest.param("forkserver", False, marks=needs_fork_server),
        ("spawn", False),
        pytest.param("fork", False, marks=pytest.mark.skipif(not hasattr(os, "fork"), reason="")),
        pytest.param("forkserver", True, marks=needs_fork_server),
    ],
    ids=["forkserver", "spawn", "fork", "forkserver-python-m"],
)
@pytest.mark.timeout(90)
def test_functions_of_the_main_script_run_as_themselves_in_the_workers(
    method: str, as_module: bool
) -> None:
    # Issue 9 item 8: functions of the main script travelled by value, with a copy of the
    # script's globals: what the initializer set was invisible to them, a module-level
    # threading.local() could not be pickled, and an instance of a class of the script could
    # not be pickled back on forkserver and spawn (not the same object as __main__.Point).
    # The worker imports the script too, so they go by reference; a function it does not
    # define (under the main guard), lambdas and closures still go by value.
    args = (
        ["-m", "main_functions", method]
        if as_module
        else [str(SCRIPTS / "main_functions.py"), method]
    )
    proc = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=SCRIPTS,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        timeout=SCRIPT_TIMEOUT,
    )
    report = last_json(proc)
    assert report["state"] == ["set by init"] * 4, report["state"]
    assert report["local"] == [0, 2, 4, 6], report["local"]
    assert report["points"] == [["Point", x, -x] for x in range(3)], report["points"]
    assert report["norms"] == [0, 2, 4], report["norms"]
    assert report["submitted"] == ["Point", 7, -7], report["submitted"]
    assert report["lambda"] == [1, 2, 3] and report["nested"] == [100, 101, 102], report
    assert report["guarded"] == [0, 3, 6], report["guarded"]
    # It came to the worker by value, and could not go back (an outside tester's finding).
    assert report["guarded_class"] == [0, 1, 2], report["guarded_class"]
    assert report["pid"] not in report["pids"]


PRELOAD_SCRIPT = """
import json, multiprocessing, multiprocessing.forkserver, os, sys
from workpool import Pool

def probe(_):
    return os.getpid(), "preload_probe" in sys.modules

if __name__ == "__main__":
    multiprocessing.set_forkserver_preload(["preload_probe"])
    with Pool(2, backend="process", max_tasks_per_worker=1) as pool:
        results = [r.value if r.ok else repr(r.error) for r in pool.results(probe, range(4))]
    print(json.dumps({
        "pid": os.getpid(),
        "fork_server": multiprocessing.forkserver._forkserver._forkserver_pid,
        "in_parent": "preload_probe" in sys.modules,
        "results": results,
    }))
"""


@needs_fork_server
@pytest.mark.timeout(60)
def test_the_users_fork_server_preloads_are_kept(tmp_path: Path) -> None:
    script = tmp_path / "preload_main.py"
    script.write_text(PRELOAD_SCRIPT)
    imports = tmp_path / "imports.txt"
    report = last_json(
        run_script(script, pythonpath=[SCRIPTS], env={"WORKPOOL_PRELOAD_PROBE": str(imports)})
    )
    assert all(isinstance(r, list) for r in report["results"]), report["results"]
    workers = {pid for pid, _ in report["results"]}
    assert len(workers) == 4  # max_tasks_per_worker=1: a new worker for every task
    # Every worker has the module (forked from the server that imported it).
    assert all(loaded for _, loaded in report["results"]), "a worker lacks the user's preload"
    assert not report["in_parent"]  # the parent never imported it: the server did
    # Imported once, in the fork server, not in the parent nor in any worker.
    assert imports.exists(), "the module asked for by set_forkserver_preload was never imported"
    pids = [int(line.split()[1]) for line in imports.read_text().splitlines()]
    assert pids == [report["fork_server"]], f"parent {report['pid']}, workers {sorted(workers)}"


def test_a_pool_or_pipeline_sent_to_a_worker_process_fails_its_task_saying_why() -> None:
    # Pickle named the lock or weak reference inside ("cannot pickle 'weakref.ReferenceType'
    # object"); the error says what cannot travel, and why.
    from workpool import AsyncPool, Pipeline, Stage

    pipeline = Pipeline(Stage(abs))
    try:
        for owner in (Pool(1), AsyncPool(1), pipeline):
            kind = type(owner).__name__
            with pytest.raises(TypeError, match=rf"^an? {kind} cannot be pickled \(nor copied\)"):
                pickle.dumps(owner)
        with process_pool() as pool:
            error = pool.submit(len, [pool]).exception(timeout=10)
            follow = pool.submit(lambda: pool.stats()).exception(timeout=10)
            assert pool.submit(abs, -2).result(timeout=10) == 2  # the pool carries on
    finally:
        pipeline.shutdown()
    assert isinstance(error, pickle.PicklingError)
    assert "TypeError: a Pool cannot be pickled (nor copied): it lives in the process" in str(error)
    assert isinstance(follow, pickle.PicklingError) and "a Pool cannot be pickled" in str(follow)
