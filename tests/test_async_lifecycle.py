"""AsyncPool's shutdown at its edges (API.md §1 shutdown, §6): a later shutdown's own
deadline, shutdown from one of the pool's own coroutines, a cancel that arrives while
``async with`` drains, close() before first use, stats() once the loop is gone, and a program
whose loop ends before its pool was shut down (it must exit, not wait for work nothing will
ever run).

Also: map's ``timeout`` bounds the whole call, as ``Pool.map``'s does.

Synchronised on loop-native state (the Gate's events and counters), never on sleeps; the
deadlines here (``timeout=0.1``, and the map's) are what the tests are about.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from test_async_pool import Gate, run
from workpool import (
    AsyncPool,
    PoolClosed,
    Result,
    ShutdownReport,
    Stats,
    TaskCancelled,
    WorkpoolError,
)

pytestmark = [pytest.mark.timeout(30), pytest.mark.filterwarnings("error")]


def test_a_later_shutdown_keeps_its_own_deadline() -> None:
    async def main() -> None:
        gate = Gate()
        async with AsyncPool(2, queue_size=10) as pool:
            for i in range(6):
                await pool.submit(gate.task, i)
            await gate.started(2)
            first = asyncio.ensure_future(pool.shutdown())  # no deadline: would wait for ever
            report = await asyncio.wait_for(pool.shutdown(timeout=0.1), 10)
            assert not gate.opened.is_set()
            assert report.finished is False  # cut short at this call's deadline
            assert (report.completed, report.cancelled) == (0, 6)
            assert len(report.unstarted) == 4
            assert gate.cancelled == 2  # the running coroutines were cancelled
            assert (await asyncio.wait_for(first, 10)).cancelled == 6

    run(main)


def test_an_error_in_the_body_cancels_even_after_shutdown_wait_false() -> None:
    async def main() -> None:
        gate = Gate()
        pool = AsyncPool(2, queue_size=10)
        with pytest.raises(ValueError, match="in the body"):
            async with pool:
                for i in range(5):
                    await pool.submit(gate.task, i)
                await gate.started(2)
                assert (await pool.shutdown(wait=False)).finished is False
                raise ValueError("in the body")
        assert gate.cancelled == 2 and not gate.opened.is_set()
        s = pool.stats()
        assert (s.queued, s.running, s.cancelled) == (0, 0, 5)

    run(main)


def test_shutdown_from_one_of_the_pools_own_coroutines_returns() -> None:
    # It cannot wait for the coroutine that called it: it closes the pool, starts the drain
    # and returns a report saying the drain has not finished.
    async def main() -> None:
        async with AsyncPool(2) as pool:

            async def stop_my_pool() -> ShutdownReport:
                return await pool.shutdown()

            task = await pool.submit(stop_my_pool)
            report = await asyncio.wait_for(task, 10)
            assert report.finished is False and pool.closed
            with pytest.raises(PoolClosed):
                await pool.submit(stop_my_pool)
        final = await pool.shutdown()
        assert final.finished is True and final.completed == 1

    run(main)


def test_join_from_one_of_the_pools_own_coroutines_raises() -> None:
    # It would wait for the coroutine that called it, for ever: an error says so.
    async def main() -> None:
        async with AsyncPool(2) as pool:

            async def join_my_pool() -> str:
                try:
                    await pool.join()
                except WorkpoolError as e:
                    return str(e)
                return "joined"

            task = await pool.submit(join_my_pool)
            assert "join() was called from one of its own tasks" in await asyncio.wait_for(task, 10)
            assert await pool.join(timeout=10) is True

    run(main)


def test_join_from_a_task_a_pool_coroutine_awaits_raises_instead_of_hanging() -> None:
    # The task inherits the coroutine's context: it counts as the pool's own. A join there
    # waits for the coroutine that awaits it: it hung when such tasks were taken for
    # strangers (a reviewer's finding), as gather() and 3.11's wait_for() make them.
    async def main() -> str:
        async with AsyncPool(2) as pool:

            async def job() -> str:
                try:
                    await asyncio.gather(pool.join())
                except WorkpoolError as e:
                    return str(e)
                return "joined"

            return await asyncio.wait_for(await pool.submit(job), 10)

    assert "join() was called from one of its own tasks" in run(main)


def test_a_drain_that_fails_still_ends_the_shutdown() -> None:
    # A drain that raised (it did, started from a pool's own coroutine, when join() began
    # to refuse those) left the shutdown unfinished for good: a later shutdown from another
    # thread (the interpreter's exit, a test session's end) waited for it for ever.
    class BackendFailure(RuntimeError):
        pass

    async def main() -> Any:
        pool = AsyncPool(2)
        assert await (await pool.submit(asyncio.sleep, 0, "x")) == "x"
        engine = pool._engine
        backend = engine.backend

        async def failing_aclose() -> None:
            raise BackendFailure("the backend would not close")

        backend.aclose = failing_aclose  # type: ignore[method-assign]
        with pytest.raises(BackendFailure):
            await pool.shutdown()
        return engine

    engine = asyncio.run(asyncio.wait_for(main(), 10))
    assert engine.lifecycle.shutdown_done()
    reports: list[ShutdownReport] = []
    later = threading.Thread(target=lambda: reports.append(engine.lifecycle.shutdown()))
    later.start()
    later.join(10)
    assert not later.is_alive(), "a later shutdown waited for the failed drain for ever"
    assert reports[0].finished is False and reports[0].completed == 1


def test_cancelling_the_enclosing_task_while_async_with_drains_cancels_the_work() -> None:
    async def main() -> None:
        gate = Gate()
        pool = AsyncPool(2, queue_size=10)

        async def body() -> None:
            async with pool:
                for i in range(6):
                    await pool.submit(gate.task, i)
            # (leaving the block drains: it waits for the gate, which stays shut)

        task = asyncio.ensure_future(body())
        await gate.started(2)
        while not pool.closed:  # the drain began: the block is being left
            await asyncio.sleep(0)  # one turn of the loop (not a timed wait)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        assert gate.cancelled == 2 and not gate.opened.is_set()
        s = pool.stats()
        assert (s.queued, s.running, s.cancelled) == (0, 0, 6)
        assert asyncio.all_tasks() == {asyncio.current_task()}  # nothing left running

    run(main)


def test_close_before_first_use_closes_the_pool() -> None:
    async def double(x: int) -> int:
        return 2 * x

    async def main() -> None:
        pool = AsyncPool(2)
        pool.close()
        assert pool.closed
        with pytest.raises(PoolClosed):
            await pool.submit(double, 1)
        with pytest.raises(PoolClosed):
            pool.try_submit(double, 1)
        with pytest.raises(PoolClosed):
            [x async for x in pool.map(double, [1, 2])]
        report = await pool.shutdown()
        assert report.finished is True and report.completed == 0

    run(main)


def test_stats_work_once_the_loop_has_ended_and_from_another_thread() -> None:
    async def double(x: int) -> int:
        return 2 * x

    pool = AsyncPool(4)

    async def main() -> None:
        async with pool:
            assert [x async for x in pool.map(double, range(3))] == [0, 2, 4]

    asyncio.run(main())
    s = pool.stats()  # no loop runs here any more
    assert (s.submitted, s.succeeded, s.running) == (3, 3, 0)
    seen: list[Stats] = []
    t = threading.Thread(target=lambda: seen.append(pool.stats()))
    t.start()
    t.join(10)
    assert seen and seen[0].succeeded == 3


def test_the_timeout_of_map_bounds_the_whole_call_as_pool_maps_does() -> None:
    # Each result comes 0.1 s after the one before, well within the timeout, but the call as
    # a whole outlives it: the deadline counts from the call, not afresh for every result.
    # (The sleeps are the work's duration, which is what the timeout is about.)
    async def tenth_of_a_second(x: int) -> int:
        await asyncio.sleep(0.1)
        return x

    async def main() -> None:
        async with AsyncPool(1) as pool:
            got = []
            with pytest.raises(TimeoutError, match="within the timeout given to the call"):
                async for v in pool.map(tenth_of_a_second, range(10), timeout=0.35):
                    got.append(v)
            assert got == list(range(len(got))) and len(got) < 10

    run(main)


@pytest.mark.parametrize("method", ["results", "map"])
def test_a_slow_async_input_does_not_hold_back_results_that_are_ready(method: str) -> None:
    # The input (a queue, a socket) yields its next item only once the result of the one
    # before came back: a consumer that awaited the input itself would wait for ever.
    async def main() -> None:
        seen: list[int] = []
        progress = asyncio.Event()

        async def messages() -> AsyncIterator[int]:
            for i in range(4):
                yield i
                while len(seen) <= i:
                    progress.clear()
                    await progress.wait()

        async def handle(x: int) -> int:
            return 10 * x

        async with AsyncPool(4) as pool:
            if method == "results":
                async for r in pool.results(handle, messages()):
                    seen.append(r.unwrap())
                    progress.set()
            else:
                async for v in pool.map(handle, messages()):
                    seen.append(v)
                    progress.set()
        assert seen == [0, 10, 20, 30]

    run(lambda: asyncio.wait_for(main(), 10))


def test_every_item_read_from_an_async_input_gets_a_result_when_the_pool_closes() -> None:
    # The input is read ahead of the pool (up to the call's window): items read and never
    # accepted when the pool closes still get their Result, saying they never started.
    async def main() -> None:
        gate = Gate()
        yielded = 0

        async def items() -> AsyncIterator[int]:
            nonlocal yielded
            for i in range(50):
                yielded += 1
                yield i

        got: list[Result[Any]] = []
        async with AsyncPool(2, queue_size=2) as pool:

            async def consume() -> None:
                async for r in pool.results(gate.task, items(), chunksize=1):
                    got.append(r)

            consumer = asyncio.ensure_future(consume())
            await gate.started(2)
            pool.close()
            gate.open()
            with pytest.raises(PoolClosed):
                await asyncio.wait_for(consumer, 10)
        got.sort(key=lambda r: r.index)
        assert [r.index for r in got] == list(range(len(got)))  # each once
        assert len(got) == yielded  # nothing read was dropped
        started = [r for r in got if r.attempts]
        assert [r.value for r in started] == list(range(len(started))) and len(started) >= 4
        for r in got[len(started) :]:  # read, never accepted: the last ones read
            assert isinstance(r.error, TaskCancelled) and r.attempts == 0, r

    run(main)


def test_leaving_early_while_the_input_waits_stops_reading_it() -> None:
    async def main() -> None:
        closed = asyncio.Event()

        async def messages() -> AsyncIterator[int]:
            try:
                yield 1
                await asyncio.Event().wait()  # nothing more comes
            finally:
                closed.set()

        async def handle(x: int) -> int:
            return x

        async with AsyncPool(2) as pool:
            it = pool.results(handle, messages())
            assert (await it.__anext__()).value == 1  # the input now waits for ever
            await it.aclose()
            await asyncio.wait_for(closed.wait(), 10)  # the read was cancelled: input closed
            assert pool.stats().running == 0
        assert asyncio.all_tasks() == {asyncio.current_task()}  # no reader left behind

    run(main)


@pytest.mark.parametrize("fn", ["coroutine", "plain function", "lambda around a coroutine"])
def test_work_left_when_the_loop_ends_is_cancelled_and_said(
    fn: str, caplog: pytest.LogCaptureFixture
) -> None:
    # asyncio.run ends (its main returned) while the pool still had work: nothing will ever
    # run it. It used to be dropped in silence: futures pending for ever, stats frozen.
    release = threading.Event()  # the plain calls' threads end when the test is done
    entered = threading.Semaphore(0)

    def blocking(x: int) -> int:
        entered.release()
        release.wait(10)
        return x

    gate = Gate()
    tasks: list[Any] = []

    async def main() -> AsyncPool:
        pool = AsyncPool(2, queue_size=10)
        # (A plain function that returns a coroutine: a thread calls it, the loop awaits it.)
        works: dict[str, Callable[[int], Any]] = {
            "coroutine": gate.task,
            "plain function": blocking,
            "lambda around a coroutine": lambda i: gate.task(i),
        }
        work = works[fn]
        for i in range(6):
            tasks.append(await pool.submit(work, i))
        if fn != "plain function":
            await gate.started(2)
        else:
            for _ in range(2):
                assert await asyncio.to_thread(entered.acquire, timeout=10)
        return pool  # no async with, no shutdown

    try:
        with pytest.warns(RuntimeWarning, match="6 task.s. were cancelled, 4 of them not started"):
            pool = asyncio.run(main())
    finally:
        release.set()
    assert all(t.done() and t.cancelled() for t in tasks)
    s = pool.stats()
    assert (s.queued, s.running, s.cancelled, s.submitted) == (0, 0, 6, 6)
    assert "its event loop ended before the pool was shut down" in caplog.text
    assert "destroyed but it is pending" not in caplog.text
    if fn != "plain function":
        assert gate.cancelled == 2


def test_a_pool_with_nothing_left_when_the_loop_ends_says_nothing() -> None:
    async def main() -> None:
        pool = AsyncPool(2)
        assert [x async for x in pool.map(_double, range(4))] == [0, 2, 4, 6]

    asyncio.run(main())  # (warnings are errors here)


async def _double(x: int) -> int:
    return 2 * x


# A coroutine that never finishes on its own: it waits for an event nobody sets.
_PENDING = """
import asyncio, logging, sys
from workpool import AsyncPool
logging.basicConfig(level=logging.WARNING, format="%(message)s")
forever = None
async def hang(x):
    await forever.wait()
"""

_ENDINGS = {
    # an error in main while the pool (not in async with) has work running
    "error": """
async def main():
    global forever
    forever = asyncio.Event()
    pool = AsyncPool(2)
    await pool.submit(hang, 1)
    raise ValueError("bug in main")
try:
    asyncio.run(main())
except ValueError:
    print("main failed")
""",
    # shutdown(wait=False) as main's last step: the drain would outlive the loop
    "no_wait": """
async def main():
    global forever
    forever = asyncio.Event()
    pool = AsyncPool(2)
    await pool.submit(hang, 1)
    await pool.shutdown(wait=False)
asyncio.run(main())
print("main returned")
""",
    # a module-level pool, never shut down
    "module_pool": """
pool = AsyncPool(2)
async def main():
    global forever
    forever = asyncio.Event()
    await pool.submit(hang, 1)
asyncio.run(main())
print("main returned")
""",
}


@pytest.mark.parametrize("ending", sorted(_ENDINGS))
def test_a_program_whose_loop_ends_before_its_pool_is_shut_down_exits(ending: str) -> None:
    script = textwrap.dedent(_PENDING) + textwrap.dedent(_ENDINGS[ending])
    try:
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the program hung at exit, waiting for work its closed loop can never run")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("main failed", "main returned"), out.stdout
    # What never finished is said, not silently dropped: cancelled as the loop ended (its
    # future too), in the log and a RuntimeWarning.
    assert "its event loop ended before the pool was shut down" in out.stderr, out.stderr
    assert "1 task(s) were cancelled, 0 of them not started" in out.stderr, out.stderr
    assert "RuntimeWarning" in out.stderr, out.stderr
