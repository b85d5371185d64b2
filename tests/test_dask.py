"""What the dask backend adds to the behavioural suite (which runs over "dask" as a backend):
its options, a pool's own local cluster, what a pool leaves on the scheduler, remote
cancellation seen from inside the task, lost workers, nested pools, and batching.

Against a real cluster (conftest's session cluster: a scheduler and two workers on
127.0.0.1), never a mock. Handshakes with tasks go through Manager proxies, as on the process
backend: a task on a Dask worker only gets copies of what it closes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from multiprocessing.managers import SyncManager
from pathlib import Path
from typing import Any

import pytest

from handshakes import ManagerKit, wait_until
from workpool import (
    AsyncPool,
    ConfigError,
    Pipeline,
    Pool,
    PoolClosed,
    RemoteError,
    Stage,
    TaskCancelled,
    TaskTimeout,
    WorkpoolError,
    current_task,
)

distributed = pytest.importorskip(
    "distributed", reason='the dask extra is not installed (pip install "workpool[dask]")'
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("dask_cluster")]


@pytest.fixture
def kit(manager: SyncManager) -> ManagerKit:
    return ManagerKit(manager)


@pytest.fixture
def client(dask_cluster: Any) -> Iterator[Any]:
    with dask_cluster.client() as c:
        yield c


def pool_keys(client: Any) -> list[str]:
    """Keys of workpool tasks the scheduler still holds."""

    def keys(dask_scheduler: Any) -> list[str]:
        return [str(k) for k in dask_scheduler.tasks if str(k).startswith("workpool-")]

    return list(client.run_on_scheduler(keys))


# ---------------------------------------------------------------------- options


def test_address_and_client_together_are_a_config_error(client: Any) -> None:
    with pytest.raises(ConfigError, match=r"either address= .* or client= .*not both"):
        Pool(backend="dask", address=client.scheduler.address, client=client)


@pytest.mark.parametrize(
    "address",
    ["", 8786, "nonsense", "udp://127.0.0.1:8786", "tcp://127.0.0.1:notaport", "tcp://h"],
)
def test_a_bad_address_is_a_config_error(address: Any) -> None:
    # At once, without trying to connect (those took Dask's connect timeout, then gave a
    # WorkpoolError: "could not connect ... missing port number").
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="address must be a Dask scheduler's address"):
        Pool(backend="dask", address=address)
    assert time.monotonic() - t0 < 5


def test_a_client_must_be_a_distributed_client() -> None:
    with pytest.raises(ConfigError, match=r"client must be a distributed\.Client"):
        Pool(backend="dask", client="tcp://127.0.0.1:8786")


def test_other_options_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"unknown option.*'dask': n_workers; allowed: "):
        Pool(backend="dask", n_workers=2)


def test_an_unreachable_scheduler_fails_at_construction() -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import dask

    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        pytest.raises(WorkpoolError, match=r"could not connect to the Dask scheduler at tcp://"),
    ):
        Pool(backend="dask", address=f"tcp://127.0.0.1:{port}")


def test_without_distributed_the_error_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['distributed'] = None\n"
        "from workpool import Pool, ConfigError\n"
        "try:\n"
        "    Pool(backend='dask')\n"
        "except ConfigError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    assert 'pip install "workpool[dask]"' in out


# ---------------------------------------------------------------------- clusters


def test_workers_default_to_the_cluster_threads(client: Any) -> None:
    threads = (
        client.scheduler_info()["total_threads"]
        if "total_threads" in (client.scheduler_info())
        else sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())
    )
    with Pool(backend="dask", client=client) as pool:
        assert pool.stats().max_workers == threads
        assert pool.submit(pow, 2, 10).result(timeout=30) == 1024


def test_a_given_client_stays_open_and_the_scheduler_keeps_none_of_the_pools_tasks(
    client: Any, kit: ManagerKit
) -> None:
    gate = kit.gate()
    with Pool(workers=2, backend="dask", client=client) as pool:
        assert sum(pool.map(abs, range(-5000, 5000))) == 25_000_000
        hung = pool.submit(gate.block, 1)
        gate.wait_started(1, timeout=30)
        assert pool_keys(client)  # the running one, at least
        assert hung.cancel() is True
    gate.open()
    assert client.status == "running"
    assert client.submit(abs, -3).result(timeout=30) == 3  # the given client still works
    deadline = time.monotonic() + 10
    while pool_keys(client) and time.monotonic() < deadline:
        time.sleep(0.05)  # the scheduler forgets a released key on its next turn
    assert pool_keys(client) == []


def _listening(pids: set[int]) -> list[tuple[int, str, int]]:
    import psutil

    found = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            found.append((conn.pid, conn.laddr.ip, conn.laddr.port))
    return found


def _family() -> set[int]:
    import psutil

    me = psutil.Process()
    return {me.pid, *(p.pid for p in me.children(recursive=True))}


@pytest.mark.timeout(120)
def test_the_pools_own_local_cluster_is_loopback_only_and_gone_after_shutdown() -> None:
    import dask

    before = _family()
    listening_before = _listening(before)
    with dask.config.set({"scheduler-address": None}):
        pool = Pool(backend="dask")
    try:
        assert list(pool.map(abs, range(-100, 0))) == list(range(100, 0, -1))
        started = _family() - before
        assert started, "the local cluster runs worker processes"
        sockets = [s for s in _listening(_family()) if s not in listening_before]
        assert sockets, "the scheduler listens"
        assert all(ip in ("127.0.0.1", "::1") for _, ip, _ in sockets), sockets
        assert pool.stats().max_workers >= 1
    finally:
        pool.shutdown(timeout=30)
    import psutil

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        alive = [
            p for p in started if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
        ]
        if not alive:
            break
        time.sleep(0.1)
    assert alive == []
    assert [s for s in _listening(_family()) if s not in listening_before] == []


# ---------------------------------------------------------------------- results and errors


class Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:  # pickle calls it with one argument
        super().__init__(f"{a}/{b}")


def fails(x: int) -> int:
    if x == 3:
        raise KeyError(x)
    if x == 5:
        raise Unpicklable(x, 0)
    if x == 7:
        return threading.Lock()  # type: ignore[return-value]  # won't pickle
    return x


def test_errors_keep_their_type_and_remote_traceback() -> None:
    with Pool(workers=2, backend="dask") as pool:
        got = {r.index: r for r in pool.results(fails, range(10))}
    assert sorted(got) == list(range(10))
    assert isinstance(got[3].error, KeyError)
    assert got[3].traceback is not None and "in fails" in got[3].traceback
    assert got[3].error.__cause__ is not None and "raise KeyError" in str(got[3].error.__cause__)
    assert isinstance(got[5].error, RemoteError) and got[5].error.type_name.endswith("Unpicklable")
    assert isinstance(got[7].error, pickle.PicklingError)
    assert "could not be pickled on the Dask worker" in str(got[7].error)
    assert [r.value for i, r in sorted(got.items()) if i not in (3, 5, 7)] == [0, 1, 2, 4, 6, 8, 9]


def test_an_argument_that_wont_pickle_fails_alone() -> None:
    items: list[Any] = [1, 2, threading.Lock(), 4]
    with Pool(workers=2, backend="dask") as pool:
        got = sorted(pool.results(repr, items, chunksize=4), key=lambda r: r.index)
    assert [r.ok for r in got] == [True, True, False, True]
    assert "could not be pickled to send them to the Dask cluster" in str(got[2].error)


def _refuse(message: str) -> Any:
    raise RuntimeError(message)


class Refuses:
    """Pickles anywhere; unpickling it raises, anywhere."""

    def __reduce__(self) -> Any:
        return (_refuse, ("no way back",))


def refuses_at_7(x: int) -> Any:
    return Refuses() if x == 7 else x


def test_a_result_that_wont_unpickle_here_fails_alone() -> None:
    # It pickled on the worker with the rest of its unit, as one pickle: unpickling that
    # here failed every call of the unit ("internal error of workpool").
    with Pool(workers=2, backend="dask") as pool:
        got = sorted(pool.results(refuses_at_7, range(20), chunksize=20), key=lambda r: r.index)
    assert [r.index for r in got if not r.ok] == [7]
    assert isinstance(got[7].error, pickle.UnpicklingError)
    assert "could not be unpickled here" in str(got[7].error)
    assert "no way back" in str(got[7].error)
    assert [r.value for r in got if r.ok] == [i for i in range(20) if i != 7]


def test_an_argument_that_wont_unpickle_on_the_worker_fails_alone() -> None:
    items: list[Any] = [1, 2, Refuses(), 4]
    with Pool(workers=2, backend="dask") as pool:
        got = sorted(pool.results(repr, items, chunksize=4), key=lambda r: r.index)
    assert [r.ok for r in got] == [True, True, False, True]
    assert isinstance(got[2].error, pickle.UnpicklingError)
    assert "argument of task 2 could not be unpickled on the Dask worker" in str(got[2].error)


def test_identical_submits_all_run(kit: ManagerKit) -> None:
    counter = kit.counter()
    with Pool(workers=2, backend="dask") as pool:
        tasks = [pool.submit(counter.add, 1) for _ in range(4)]
        assert sorted(t.result(timeout=30) for t in tasks) == [1, 2, 3, 4]


def test_tiny_tasks_travel_in_batches() -> None:
    with Pool(workers=2, backend="dask") as pool:
        assert sum(pool.map(abs, range(20_000))) == sum(range(20_000))
        backend: Any = pool._engine.backend
        units = next(backend._keys)  # Dask tasks the pool made
    assert units < 20_000 // 20, units


def test_a_map_of_large_items_reads_a_few_megabytes_ahead() -> None:
    # Units were sized on the calls' time alone (the bytes they move were not counted on
    # Dask, as they are on worker processes): tiny calls on large items went in units of
    # thousands, and a map read its whole input (GBs) ahead of its consumer (an outside
    # tester's finding). A unit moves ~1 MB now: the window holds a few MB. (The input is
    # finite, 100 MB, so that the old behaviour fails without eating the machine.)
    size, total, consumed = 50_000, 2000, 100
    pulled = 0

    def items() -> Iterator[bytes]:
        nonlocal pulled
        for i in range(total):
            pulled += 1
            yield bytes([i % 251]) * size  # distinct objects: each pickles in full

    with Pool(workers=2, backend="dask") as pool:
        for k, n in enumerate(pool.map(len, items()), 1):
            assert n == size
            if k == consumed:
                break
    ahead = pulled - consumed
    assert ahead * size <= 32 << 20, ahead  # (workers + queue + 1) units of ~1 MB, and some


def test_a_coroutine_function_runs_on_the_worker() -> None:
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    async def main() -> list[int]:
        async with AsyncPool(workers=2, backend="dask") as pool:
            return [v async for v in pool.map(double, range(20))]

    assert asyncio.run(main()) == [2 * i for i in range(20)]


def test_a_pipeline_stage_runs_on_the_cluster() -> None:
    from pipeline_tasks import double, fail_on_7, pair

    pipeline = Pipeline(
        Stage(fail_on_7, workers=2),
        Stage(double, workers=2, backend="dask"),
        Stage(pair, flat=True),
    )
    with pipeline:
        got = list(pipeline.results(range(30), per_input=True))
        stats = pipeline.stats()
    assert sorted(r.index for r in got) == list(range(30))
    bad = {7, 17, 27}  # fail_on_7 fails them in the first stage
    assert {r.index: r.value for r in got if r.ok} == {
        i: [2 * i] * 2 for i in range(30) if i not in bad
    }
    assert {r.index: r.stage for r in got if not r.ok} == dict.fromkeys(bad, "fail_on_7")
    assert stats["double"].succeeded == 30 - len(bad)


# ---------------------------------------------------------------------- stopping remote work


def watch_cancel(gate: Any, seen: Any, timeout: float = 20) -> str:
    """Wait at the gate's start, then poll current_task().cancelled for up to ``timeout``."""
    ctx = current_task()
    seen.append(("before", ctx.cancelled))
    gate.enter()
    t0 = time.monotonic()
    while not ctx.cancelled and time.monotonic() - t0 < timeout:
        time.sleep(0.01)
    seen.append(("after", ctx.cancelled))
    return "ran on"


def test_cancel_of_a_running_task_arrives_at_once_and_the_task_sees_cancelled(
    kit: ManagerKit,
) -> None:
    gate, seen = kit.gate(), kit.list()
    with Pool(workers=1, backend="dask") as pool:
        task = pool.submit(watch_cancel, gate, seen)
        gate.wait_started(1, timeout=30)
        t0 = time.monotonic()
        assert task.cancel() is True
        assert task.done()  # (at once: before the remote cancel lands)
        with pytest.raises(TaskCancelled):
            task.result(timeout=2)
        assert time.monotonic() - t0 < 1.0
        deadline = time.monotonic() + 2
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen[:] == [("before", False), ("after", True)]  # within a second or so
        assert pool.submit(abs, -1).result(timeout=30) == 1
        s = pool.stats()
        assert (s.cancelled, s.succeeded, s.running, s.queued) == (1, 1, 0, 0)


def test_a_timeout_arrives_at_the_deadline_and_the_task_sees_cancelled(kit: ManagerKit) -> None:
    gate, seen = kit.gate(), kit.list()
    with Pool(workers=1, backend="dask", task_timeout=1.0) as pool:
        task = pool.submit(watch_cancel, gate, seen)
        gate.wait_started(1, timeout=30)
        t0 = time.monotonic()
        assert isinstance(task.exception(timeout=10), TaskTimeout)
        assert time.monotonic() - t0 < 1.5  # at the deadline, not when the task gives up
        deadline = time.monotonic() + 3
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen[:] == [("before", False), ("after", True)]
        s = pool.stats()
        assert (s.failed, s.timed_out) == (1, 1)


def deadline_of_this_task(_: Any) -> float | None:
    return current_task().remaining()


def test_current_task_knows_its_deadline_on_the_worker() -> None:
    with Pool(workers=1, backend="dask", task_timeout=30) as pool:
        remaining = pool.submit(deadline_of_this_task, 0).result(timeout=30)
    assert remaining is not None and 25 < remaining <= 30


def test_a_stopped_remote_task_is_logged(kit: ManagerKit, caplog: Any) -> None:
    import logging

    caplog.set_level(logging.WARNING, logger="workpool")
    gate = kit.gate()
    try:
        with Pool(workers=1, backend="dask", task_timeout=0.5) as pool:
            task = pool.submit(gate.block, 1)
            assert isinstance(task.exception(timeout=30), TaskTimeout)
    finally:
        gate.open()
    [message] = [
        r.getMessage() for r in caplog.records if "Dask task was cancelled" in r.getMessage()
    ]
    assert "task 1 timed out" in message


def test_shutdown_cancels_remote_work_and_reports_it(kit: ManagerKit) -> None:
    gate = kit.gate()
    pool = Pool(workers=2, backend="dask")
    try:
        tasks = [pool.submit(gate.block, i) for i in range(2)]
        gate.wait_started(2, timeout=30)
        t0 = time.monotonic()
        report = pool.shutdown(timeout=0.2)
        assert time.monotonic() - t0 < 15
        assert all(isinstance(t.exception(0), TaskCancelled) for t in tasks)
        assert report.cancelled == 2
    finally:
        gate.open()


def test_a_cancelling_shutdown_reports_the_units_sent_ahead_cancelled(kit: ManagerKit) -> None:
    # As many workers as the cluster has threads (the default), all busy at the gate: each
    # slot holds its next unit sent ahead. The shutdown's deadline stops the running units;
    # a slot then ran the unit sent ahead to it, and when the pool closed its client, Dask
    # dropped that future: it came back as a failure, WorkpoolError("the Dask scheduler
    # dropped task N ... cancelled for reason: unknown"), counted failed (an outside
    # tester's finding). The pool stopped it itself: it is TaskCancelled, counted cancelled.
    from workpool import PoolClosed

    gate = kit.gate()
    got: list[Any] = []
    pool = Pool(backend="dask")

    def consume() -> None:
        try:
            for r in pool.results(gate.block, range(40)):
                got.append(r)
        except PoolClosed:
            pass  # the shutdown closed the pool under the running call

    consumer = threading.Thread(target=consume)
    try:
        consumer.start()
        gate.wait_started(pool.stats().max_workers, timeout=30)
        wait_until(lambda: pool.stats().sent_ahead > 0, timeout=30)
        report = pool.shutdown(timeout=0.1)
        consumer.join(30)
        started = gate.entered  # (the gate is still shut: no more start)
    finally:
        gate.open()
        pool.shutdown(cancel_futures=True)
    failures = [(r.index, r.error) for r in got if not isinstance(r.error, TaskCancelled)]
    assert not failures
    s = pool.stats()
    assert (report.completed, report.failed) == (0, 0), report
    assert (s.failed, s.cancelled) == (0, s.submitted), s
    assert report.cancelled == s.submitted
    # What never started is listed as such, the units sent ahead included (the first call
    # of one was taken for a call that ran: attempts 1, not listed).
    assert len(report.unstarted) == s.submitted - started, (report, started)


def started_then_wait(x: int, gate: Any, marks: Any, first: Any, fail: bool) -> int:
    """Note the start of ``x`` (on the worker), then wait at the gate; item 0 waits for
    ``first`` instead, then fails (``fail``) or returns."""
    marks.append(x)
    if x == 0:
        gate.enter()
        if not first.wait(30):
            raise AssertionError("first never set")
        if fail:
            raise ValueError("item 0 fails")
        return x
    return int(gate.block(x))


# Worker-side states of a task whose function runs (a cancelled one runs on in its thread).
_RUNS = ("executing", "long-running", "cancelled")


def pool_tasks_on_workers(client: Any) -> dict[str, str]:
    """The workpool tasks the workers hold: their states, by key."""

    def tasks(dask_worker: Any) -> dict[str, str]:
        return {
            str(key): str(ts.state)
            for key, ts in dask_worker.state.tasks.items()
            if str(key).startswith("workpool-")
        }

    found: dict[str, str] = {}
    for held in client.run(tasks).values():
        found.update(held)
    return found


def settled_on_cluster(client: Any) -> int | None:
    """How many workpool tasks run on the workers once no other may start (the workers hold
    none waiting and the scheduler none but those): else None."""
    on_workers = pool_tasks_on_workers(client)
    running = {key for key, state in on_workers.items() if state in _RUNS}
    if len(running) < len(on_workers) or not set(pool_keys(client)) <= running:
        return None
    return len(running)


@pytest.mark.parametrize("how", ["map fails", "results closed"])
def test_leaving_a_call_starts_none_of_its_work_on_the_cluster_after(
    kit: ManagerKit, client: Any, how: str
) -> None:
    # As many workers as the cluster has threads (the default), all busy: each slot holds
    # its next unit sent ahead, a Dask task waiting for a thread. A map that raised at its
    # first failure, or results() closed early, cancelled the call's queued units but left
    # those on the cluster (and units counted running that had not started there): they
    # started as the running ones ended, ran whole, and counted as succeeded (an outside
    # tester's finding). The call's Dask tasks are cancelled now: none of its calls starts
    # after it was left (a call running then runs on in its thread, its outcome dropped).
    from functools import partial

    from workpool import TaskError

    gate, marks, first = kit.gate(), kit.list(), kit.event()
    fn = partial(started_then_wait, gate=gate, marks=marks, first=first, fail=how == "map fails")
    left = threading.Event()
    errors: list[BaseException] = []
    with Pool(backend="dask") as pool:
        workers = pool.stats().max_workers

        def consume() -> None:
            try:
                if how == "map fails":
                    with pytest.raises(TaskError):
                        list(pool.map(fn, range(200)))
                else:
                    results = pool.results(fn, range(200))
                    assert next(results).index == 0
                    results.close()
                left.set()
            except BaseException as e:
                errors.append(e)

        consumer = threading.Thread(target=consume)
        try:
            consumer.start()
            gate.wait_started(workers, timeout=30)
            wait_until(lambda: pool.stats().sent_ahead > 0, timeout=30)
            assert sorted(marks[:]) == list(range(workers))
            first.set()  # item 0 ends (its slot may start its next unit: the call is on)
            consumer.join(30)
            assert not errors and left.is_set(), errors
            # The call was left. Its cancels reach the cluster a moment later, and a unit
            # item 0's slot took may be starting: wait until nothing else may start and all
            # that runs is at the gate, then note what started. (Bounded: without the
            # cancels, the units sent ahead wait on the cluster, and start below.)
            wait_until(
                lambda: (n := settled_on_cluster(client)) is not None and gate.entered == 1 + n,
                timeout=10,
            )
            started = sorted(marks[:])
        finally:
            gate.open()
        assert pool.join(30)
        assert sorted(marks[:]) == started  # nothing of the call started after it was left
        assert len(started) <= workers + 1  # (item 0's slot may have started one more)
        s = pool.stats()
        assert s.submitted == s.succeeded + s.failed + s.cancelled, s
        assert s.failed == int(how == "map fails"), s
        assert s.cancelled >= s.submitted - len(started) > 0, s


def note_then_wait(x: int, gate: Any, marks: Any) -> int:
    marks.append(x)
    return int(gate.block(x)) if x == 0 else x


def test_a_batch_whose_dask_task_was_cancelled_starts_no_more_of_its_calls(
    kit: ManagerKit, client: Any
) -> None:
    # One Dask task holds a batch of 20 calls. The pool stops it (a cancelling shutdown)
    # while its first call waits at the gate: the worker's thread cannot be stopped, but the
    # other 19 calls never start (they all ran, their outcomes dropped).
    from functools import partial

    gate, marks = kit.gate(), kit.list()
    fn = partial(note_then_wait, gate=gate, marks=marks)
    pool = Pool(backend="dask", workers=1)
    got: list[Any] = []

    def consume() -> None:
        with contextlib.suppress(PoolClosed):
            got.extend(pool.results(fn, range(20), chunksize=20))

    consumer = threading.Thread(target=consume)
    try:
        consumer.start()
        gate.wait_started(1, timeout=30)
        report = pool.shutdown(cancel_futures=True, timeout=0)
        # The cancel has reached the worker: its task is no longer wanted there.
        wait_until(lambda: set(pool_tasks_on_workers(client).values()) <= {"cancelled"}, 10)
    finally:
        gate.open()
    consumer.join(30)
    wait_until(lambda: not pool_tasks_on_workers(client), 10)  # the thread returned
    assert marks[:] == [0]
    assert report.cancelled == 20 and report.completed == 0, report
    assert all(isinstance(r.error, TaskCancelled) for r in got), got


# ---------------------------------------------------------------------- lost workers


def report_pid_then_wait(x: int, pids: Any, gate: Any) -> int:
    if x == 0:
        pids.append(os.getpid())
        gate.block()
    return x


@pytest.mark.timeout(120)
def test_a_worker_killed_mid_task_loses_nothing_else(
    dask_cluster: Any, client: Any, kit: ManagerKit
) -> None:
    # The item on the killed worker is rerun by Dask on another worker (at least once), or
    # reported as WorkerCrashed; every other item completes exactly once.
    pids, gate, counter = kit.list(), kit.gate(), kit.counter()

    def item(x: int) -> int:
        if x == 0:
            return report_pid_then_wait(x, pids, gate)
        counter.add(1)
        return x

    try:
        with Pool(workers=4, backend="dask") as pool:
            first = pool.submit(item, 0)
            gate.wait_started(1, timeout=30)
            others = [pool.submit(item, i) for i in range(1, 41)]
            assert sorted(t.result(timeout=60) for t in others) == list(range(1, 41))
            # The pool releases each remote result once it has it; until the scheduler has
            # heard, Dask would recompute a result that lived on the killed worker (its
            # at-least-once rule): the kill comes once only the held item is left there.
            wait_until(lambda: len(pool_keys(client)) == 1, 30)
            os.kill(pids[0], signal.SIGKILL)
            gate.wait_started(2, timeout=60)  # Dask reruns it on a live worker
            gate.open()
            outcome = first.exception(timeout=60)
            assert outcome is None or type(outcome).__name__ == "WorkerCrashed", outcome
            if outcome is None:
                assert first.result(0) == 0
            s = pool.stats()
        assert counter.value == 40  # the others ran once each
        assert s.succeeded + s.failed == 41
        assert s.retried == 0  # Dask's rerun is not one of ours
    finally:
        gate.open()
        dask_cluster.wait_for_workers()  # the nanny restarts the killed worker


# ---------------------------------------------------------------------- nested pools


def nested(x: int, barrier: Any) -> int:
    barrier.wait()  # every thread of the cluster holds one of these tasks
    with Pool(workers=2, backend="dask") as inner:
        return sum(inner.map(abs, range(-x, 0)))


@pytest.mark.timeout(120)
def test_tasks_that_open_pools_on_the_same_cluster_do_not_deadlock(
    client: Any, kit: ManagerKit
) -> None:
    threads = client.scheduler_info()["total_threads"]
    barrier = kit.barrier(threads, timeout=60)
    with Pool(workers=threads, backend="dask") as pool:
        got = list(pool.map(nested, range(1, threads + 1), [barrier] * threads, chunksize=1))
    assert got == [sum(range(1, x + 1)) for x in range(1, threads + 1)]


def test_dask_is_loopback_only_in_the_test_cluster(dask_cluster: Any) -> None:
    import psutil

    pids = set()
    for proc in dask_cluster.procs:
        try:
            parent = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            continue
        pids |= {parent.pid, *(p.pid for p in parent.children(recursive=True))}
    sockets = _listening(pids)
    assert sockets
    assert all(ip in ("127.0.0.1", "::1") for _, ip, _ in sockets), sockets


def test_threads_stay_few_with_many_remote_futures(kit: ManagerKit) -> None:
    gate = kit.gate()
    before = threading.active_count()
    try:
        with Pool(workers=12, backend="dask") as pool:
            tasks = [pool.submit(gate.block, i) for i in range(12)]
            gate.wait_started(12, timeout=30)
            assert threading.active_count() - before <= 8
            gate.open()
            assert sorted(t.result(timeout=30) for t in tasks) == list(range(12))
    finally:
        gate.open()


# ---------------------------------------------------------------------- command line


def _cli(cwd: Any, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    from test_cli import ENV

    return subprocess.run(
        [sys.executable, "-m", "workpool", "run", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )


def test_cli_address_without_the_dask_backend_is_a_usage_error(tmp_path: Any) -> None:
    proc = _cli(tmp_path, "--address", "tcp://127.0.0.1:8786", "--", "echo", "{}")
    assert proc.returncode == 2
    assert "--address names a Dask scheduler: it needs --backend dask" in proc.stderr


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@pytest.mark.timeout(120)
def test_a_pool_that_lost_its_scheduler_fails_its_work_and_refuses_more() -> None:
    # The scheduler dies with one unit running and two queued. Dask's client tries to
    # reconnect (3 s here), then closes: every accepted task ends with an error and a new
    # submit is refused. A unit submitted while the client reconnected got a future that
    # never ended: the pool waited for ever (and shutdown for its whole deadline).
    import dask

    from dask_cluster import TestCluster, _signal_group
    from workpool import PoolClosed

    cluster = TestCluster(workers=1).start()
    try:
        with dask.config.set({"distributed.comm.timeouts.connect": "3s"}):
            pool = Pool(workers=1, backend="dask", address=cluster.address)
        try:
            assert pool.submit(abs, -1).result(timeout=60) == 1
            tasks = [pool.submit(sleep_for, 30) for _ in range(3)]
            wait_until(lambda: pool.stats().running == 1, timeout=30)
            _signal_group(cluster.procs[0], signal.SIGKILL)  # the scheduler
            for task in tasks:
                assert isinstance(task.exception(timeout=60), WorkpoolError)
            assert any("lost its Dask scheduler" in str(t.exception()) for t in tasks)
            with pytest.raises(PoolClosed, match="lost its Dask scheduler"):
                pool.submit(abs, -2)
        finally:
            t0 = time.monotonic()
            pool.shutdown(timeout=30)
            assert time.monotonic() - t0 < 15
    finally:
        cluster.stop()


@pytest.mark.parametrize("address", ["nonsense", "udp://127.0.0.1:8786"])
def test_cli_a_malformed_address_is_a_usage_error(tmp_path: Any, address: str) -> None:
    proc = _cli(tmp_path, "--backend", "dask", "--address", address, "--call", "json:dumps")
    assert proc.returncode == 2, proc.stderr
    assert "invalid --address: address must be a Dask scheduler's address" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_runs_a_call_on_the_cluster(tmp_path: Any, dask_cluster: Any) -> None:
    import json

    proc = _cli(
        tmp_path,
        "--backend", "dask", "--address", dask_cluster.address, "-k",
        "--call", "cli_fixtures.targets:square",
        stdin="".join(f"{i}\n" for i in range(50)),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["value"] for r in out] == [i * i for i in range(50)]


def test_cli_a_dask_backend_is_for_calls_only(tmp_path: Any) -> None:
    proc = _cli(tmp_path, "--backend", "dask", "--", "echo", "{}")
    assert proc.returncode == 2
    assert "--backend dask is for --call functions" in proc.stderr


# ---------------------------------------------------------------------- rate limits


def test_a_rate_limit_paces_what_is_sent(kit: ManagerKit) -> None:
    # 20/s: ten tasks are let go over at least 9/20 s, and the workers see them started over
    # about as long (each start is a varying round trip later than its sending).
    starts = kit.list()

    def stamp(i: int) -> int:
        starts.append(time.monotonic())
        return i

    with Pool(workers=2, backend="dask", rate_limit="20/s") as pool:
        t0 = time.monotonic()
        assert sorted(pool.map(stamp, range(10))) == list(range(10))
        took = time.monotonic() - t0
    assert took >= 0.45 - 0.01
    stamps = sorted(starts[:])
    assert stamps[-1] - stamps[0] >= 0.3, stamps


def die(x: int) -> int:
    os._exit(3)  # kills whichever worker runs it, every time


def die_once(marker: str) -> str:
    """Kills the worker that runs it the first time (``marker`` does not exist yet)."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(3)
    return "ran again"


@pytest.mark.timeout(120)
def test_a_task_whose_only_worker_died_runs_on_the_restarted_worker(tmp_path: Path) -> None:
    # One worker (under a nanny): it dies under the task and comes back at a new address.
    # Dask reruns the task there. A unit the pool had pinned to its slot's worker (as a
    # preference) stayed "no-worker" for good: Dask does not look at loose restrictions
    # when a worker joins, and the pool hung.
    from dask_cluster import TestCluster

    cluster = TestCluster(workers=1).start()
    try:
        with Pool(workers=2, backend="dask", address=cluster.address) as pool:
            task = pool.submit(die_once, str(tmp_path / "died"))
            assert task.result(timeout=90) == "ran again"
            assert pool.submit(abs, -7).result(timeout=60) == 7
    finally:
        cluster.stop()


@pytest.mark.timeout(180)
def test_a_task_that_keeps_killing_workers_ends_with_worker_crashed(dask_cluster: Any) -> None:
    # Dask reruns it after a lost worker and gives up after more than allowed-failures of
    # them (KilledWorker; the test cluster allows 1): the pool reports WorkerCrashed, with no
    # exit code or signal (Dask does not say), and the pool carries on.
    from workpool import WorkerCrashed

    try:
        with Pool(workers=2, backend="dask") as pool:
            doomed = pool.submit(die, 1)
            error = doomed.exception(timeout=120)
            assert isinstance(error, WorkerCrashed), error
            assert (error.exitcode, error.signal) == (None, None)
            assert "Dask gave up" in str(error)
            assert pool.stats().retried == 0
            dask_cluster.wait_for_workers()
            assert pool.submit(abs, -7).result(timeout=60) == 7
    finally:
        dask_cluster.wait_for_workers()
