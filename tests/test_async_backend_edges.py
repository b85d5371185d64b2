"""The async backend at its edges: a coroutine that ignores its cancellation outliving the
pool's own loop (A5), an AsyncPool dropped as its loop ends (A6), the threads that run plain
functions retiring when idle (A7), and joins that time out leaving nothing registered (A8).

Synchronised on events and observable state (threads, log records, the futures of the
loop); where the state can only change with time (an idle thread retiring), the test waits
for it with a bound, never for a fixed time.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from test_async_pool import Gate, double, run
from workpool import AsyncPool, Pool, TaskCancelled, TaskTimeout, _lifecycle
from workpool._backends import aio

pytestmark = [pytest.mark.timeout(30), pytest.mark.filterwarnings("error")]


def wait_until(condition: Callable[[], bool], bound: float = 10.0) -> bool:
    """True as soon as ``condition()`` holds; False if it still does not after ``bound`` s."""
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def threads_named(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


# ---------------------------------------------------------------------- A5


@pytest.mark.timeout(30)
def test_a_coroutine_that_ignores_its_cancellation_runs_on_after_the_shutdown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The README: such a coroutine "runs on to its end, with its outcome discarded and a
    # warning logged". Shutdown must not wait for it (it may never end), and its task must
    # not be destroyed while pending when the pool's own loop goes away.
    caplog.set_level(logging.WARNING)  # the workpool logger, and asyncio's
    entered = threading.Event()
    box: dict[str, Any] = {"release": asyncio.Event()}
    loops: list[asyncio.AbstractEventLoop] = []

    async def stubborn(x: int) -> int:
        loops.append(asyncio.get_running_loop())
        release = box["release"]
        entered.set()
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                pass  # ignores every cancellation
        return x

    def let_it_end() -> None:
        try:
            loops[0].call_soon_threadsafe(box["release"].set)
        except RuntimeError:
            pass  # its loop is closed already

    try:
        with Pool(workers=1, backend="async", task_timeout=0.2, name="a5-pool") as pool:
            [loop_thread] = threads_named("a5-pool-loop")
            [result] = pool.results(stubborn, [1])
            assert isinstance(result.error, TaskTimeout)
            assert entered.is_set()
        # The shutdown returned while the coroutine still runs (it has not been released).
        let_it_end()
        loop_thread.join(10)
        assert not loop_thread.is_alive()
    finally:
        let_it_end()
    loop = loops[0]
    assert loop.is_closed()  # once the coroutine ended
    # Nothing was left pending on the closed loop (asyncio would say, when it is collected,
    # "Task was destroyed but it is pending!").
    assert [t for t in asyncio.all_tasks(loop) if not t.done()] == []
    box.clear()
    loops.clear()
    gc.collect()
    messages = [r.getMessage() for r in caplog.records]
    assert not any("destroyed but it is pending" in m for m in messages), messages
    # Said when the shutdown left it running (naming it), and when it ended.
    assert any("ignored" in m and "stubborn" in m for m in messages), messages
    assert any("swallowed the CancelledError" in m for m in messages), messages


def test_a_shutdown_deadline_holds_when_a_coroutine_blocks_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A coroutine that blocks its loop (it does not await): shutdown(timeout=...) waited for
    # it to return (for ever, for one that never does), though the deadline had passed and
    # its task was settled (an outside tester's finding). The shutdown goes on without it
    # and says so; the loop's thread ends when the coroutine returns.
    caplog.set_level(logging.WARNING)
    entered, release = threading.Event(), threading.Event()

    async def blocker(x: int) -> int:
        entered.set()
        release.wait(60)  # blocks the loop's thread
        return x

    pool = Pool(workers=1, backend="async", name="blocked-pool")
    try:
        task = pool.submit(blocker, 1)
        assert entered.wait(10)
        [loop_thread] = threads_named("blocked-pool-loop")
        report = pool.shutdown(timeout=0.1)  # (before: returned once release was set)
        assert (report.cancelled, report.finished) == (1, False)
        assert isinstance(task.exception(timeout=0), TaskCancelled)
        assert loop_thread.is_alive()  # still blocked
        messages = [r.getMessage() for r in caplog.records]
        assert any("a coroutine blocks it" in m for m in messages), messages
    finally:
        release.set()
    loop_thread.join(10)
    assert not loop_thread.is_alive()


# ---------------------------------------------------------------------- A6


def _capture_thread_errors(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    errors: list[Any] = []
    monkeypatch.setattr(threading, "excepthook", errors.append)
    return errors


def _forget_if_unfinished(engine: Any) -> None:
    # A shutdown thread that failed never finishes the pool: the session's end would wait
    # for it for ever (conftest drains every pool still live). Let this test fail alone.
    if not engine.lifecycle.shutdown_done():
        _lifecycle._live.discard(engine)


def test_a_pool_dropped_as_its_loop_ends_shuts_down_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    errors = _capture_thread_errors(monkeypatch)
    scheduled = threading.Event()
    original = asyncio.run_coroutine_threadsafe

    def spy(coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop) -> Any:
        future = original(coro, loop)
        scheduled.set()
        return future

    monkeypatch.setattr(asyncio, "run_coroutine_threadsafe", spy)
    shutdown_threads: list[threading.Thread] = []
    engines: list[Any] = []

    async def main() -> None:
        pool = AsyncPool(2, name="a6-dropped")
        assert await (await pool.submit(double, 21)) == 42
        engines.append(pool._engine)
        del pool
        gc.collect()  # its finalizer starts the shutdown, in a thread
        shutdown_threads.extend(threads_named("a6-dropped-shutdown"))
        # Hold the loop (no await) until that thread asked it to wait for the workers: that
        # wait is then still pending when asyncio.run cancels every task on its way out.
        assert scheduled.wait(10)

    try:
        run(main)
        assert shutdown_threads
        for thread in shutdown_threads:
            thread.join(10)
            assert not thread.is_alive()
        assert errors == []
        assert engines[0].lifecycle.shutdown_done()
    finally:
        _forget_if_unfinished(engines[0])


def test_a_dropped_pool_whose_loop_closes_before_it_runs_the_join_ends_its_shutdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The shutdown thread asks the loop to wait for the workers, but the loop is closed
    # before it runs that request: the thread must end, not wait for ever.
    errors = _capture_thread_errors(monkeypatch)
    reached, proceed, scheduled = threading.Event(), threading.Event(), threading.Event()
    original = asyncio.run_coroutine_threadsafe

    def spy(coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop) -> Any:
        reached.set()
        proceed.wait(10)
        future = original(coro, loop)
        scheduled.set()
        return future

    monkeypatch.setattr(asyncio, "run_coroutine_threadsafe", spy)
    loop = asyncio.new_event_loop()

    async def use() -> AsyncPool:
        pool = AsyncPool(2, name="a6-closed")
        assert await (await pool.submit(double, 21)) == 42
        return pool

    try:
        pool = loop.run_until_complete(use())
        engine: Any = pool._engine_
        del pool
        gc.collect()  # the finalizer starts the shutdown, in a thread
        [shutdown_thread] = threads_named("a6-closed-shutdown")
        assert reached.wait(10)  # the workers were told to exit: let them, on the loop
        for _ in range(100):
            if not asyncio.all_tasks(loop):
                break
            loop.run_until_complete(asyncio.sleep(0))
        assert not asyncio.all_tasks(loop)
        proceed.set()
        assert scheduled.wait(10)  # the request is queued on the loop, never to run
    finally:
        proceed.set()
        loop.close()
    try:
        shutdown_thread.join(10)
        assert not shutdown_thread.is_alive()
        assert errors == []
        assert engine.lifecycle.shutdown_done()
    finally:
        _forget_if_unfinished(engine)


# ---------------------------------------------------------------------- A7


def test_idle_threads_for_plain_functions_retire_after_the_idle_timeout() -> None:
    barrier = threading.Barrier(30, timeout=10)

    def blocking(i: int) -> int:
        barrier.wait()  # all 30 at once: 30 threads
        return i

    with Pool(
        workers=30, backend="async", min_workers=1, idle_timeout=0.2, name="a7-burst"
    ) as pool:
        tasks = [pool.submit(blocking, i) for i in range(30)]
        assert [t.result(10) for t in tasks] == list(range(30))
        assert len(threads_named("a7-burst-thread-")) == 30
        # Idle, they retire down to min_workers, as the workers themselves do.
        assert wait_until(lambda: len(threads_named("a7-burst-thread-")) == 1), len(
            threads_named("a7-burst-thread-")
        )
        assert wait_until(lambda: pool.stats().workers == 1)
        # Still serving: a call after the retirement gets a thread.
        assert pool.submit(lambda: 7).result(10) == 7
    assert wait_until(lambda: not threads_named("a7-burst-thread-"))


def test_idle_threads_retire_after_a_bounded_time_without_an_idle_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without idle_timeout the pool keeps its workers, but a burst's threads still go after
    # the backend's bounded idle time (shortened here).
    monkeypatch.setattr(aio, "IDLE_THREAD_SECONDS", 0.2)
    barrier = threading.Barrier(4, timeout=10)

    def blocking(i: int) -> int:
        barrier.wait()
        return i

    with Pool(workers=4, backend="async", name="a7-default") as pool:
        tasks = [pool.submit(blocking, i) for i in range(4)]
        assert [t.result(10) for t in tasks] == list(range(4))
        assert len(threads_named("a7-default-thread-")) == 4
        assert wait_until(lambda: not threads_named("a7-default-thread-"))
        assert pool.submit(lambda: 7).result(10) == 7


def test_a_thread_reused_at_once_is_not_recreated() -> None:
    # The hot path: back-to-back plain calls run on the one thread, however short the
    # idle timeout.
    with Pool(workers=4, backend="async", idle_timeout=0.05, name="a7-hot") as pool:
        names = {
            pool.submit(lambda: threading.current_thread().name).result(10) for _ in range(200)
        }
    assert names == {"a7-hot-thread-1"}


# ---------------------------------------------------------------------- A8


def test_a_join_that_times_out_or_is_cancelled_leaves_no_drain_callback() -> None:
    # Read through the private list: a leaked callback (and the loop future it holds) is
    # otherwise visible only as memory that grows while the pool never goes idle.
    async def main() -> None:
        gate = Gate()
        async with AsyncPool(1) as pool:
            await pool.submit(gate.task)
            await gate.started(1)
            for _ in range(1000):
                assert await pool.join(0) is False
            assert await pool.join(0.01) is False
            assert len(pool._engine._drain_callbacks) == 0
            waiting = asyncio.ensure_future(pool.join())
            for _ in range(100):
                if pool._engine._drain_callbacks:
                    break
                await asyncio.sleep(0)
            assert len(pool._engine._drain_callbacks) == 1
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert len(pool._engine._drain_callbacks) == 0
            gate.open()
            assert await pool.join(10) is True
            assert len(pool._engine._drain_callbacks) == 0

    run(main)
