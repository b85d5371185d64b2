"""AsyncPool: the pool for asyncio code (API.md §6).

Every test runs its own event loop (``asyncio.run``) and synchronises on loop-native state
(events, futures, counters), never on sleeps. Warnings are errors here: a coroutine never
awaited or a task destroyed while pending fails the test.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest

from workpool import (
    AsyncPool,
    AsyncTask,
    ConfigError,
    Interrupted,
    Pool,
    PoolClosed,
    RateLimit,
    Result,
    Retry,
    ShutdownReport,
    TaskCancelled,
    TaskError,
    TaskTimeout,
    WouldDeadlock,
    current_task,
)

pytestmark = [pytest.mark.timeout(30), pytest.mark.filterwarnings("error")]

T = TypeVar("T")


def run(main: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(main())  # type: ignore[arg-type]


class Gate:
    """Coroutines enter (counted) and wait until the test opens the gate."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.entered = 0
        self._changed = asyncio.Event()
        self.cancelled = 0  # coroutines that saw CancelledError

    async def task(self, x: Any = None) -> Any:
        self.entered += 1
        self._changed.set()
        try:
            await self.opened.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return x

    async def started(self, n: int) -> None:
        while self.entered < n:
            self._changed.clear()
            await asyncio.wait_for(self._changed.wait(), 10)

    def open(self) -> None:
        self.opened.set()


async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


async def add(x: int, y: int) -> int:
    await asyncio.sleep(0)
    return x + y


async def fail_on(x: int, bad: int = 3) -> int:
    await asyncio.sleep(0)
    if x == bad:
        raise ValueError(f"bad {x}")
    return x


# ---------------------------------------------------------------------- submit


def test_submit_returns_an_asyncio_future_with_an_id() -> None:
    async def main() -> None:
        async with AsyncPool(4) as pool:
            tasks = [await pool.submit(double, i) for i in range(5)]
            assert all(isinstance(t, AsyncTask) and isinstance(t, asyncio.Future) for t in tasks)
            assert [t.id for t in tasks] == sorted({t.id for t in tasks})
            assert [await t for t in tasks] == [0, 2, 4, 6, 8]
            r = await tasks[2].outcome()
            assert (r.ok, r.value, r.index, r.attempts) == (True, 4, tasks[2].id, 1)
            failing = await pool.submit(fail_on, 3)
            with pytest.raises(ValueError, match="bad 3"):
                await failing
            bad = await failing.outcome()
            assert isinstance(bad.error, ValueError) and "fail_on" in (bad.traceback or "")

    run(main)


def test_submit_waits_for_room_without_blocking_the_loop() -> None:
    async def main() -> None:
        gate = Gate()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        async with AsyncPool(1, queue_size=1) as pool:
            first = await pool.submit(gate.task, 1)
            await gate.started(1)
            second = await pool.submit(gate.task, 2)  # the one queue place
            assert pool.try_submit(gate.task, 3) is None
            blocked = asyncio.ensure_future(pool.submit(gate.task, 3))
            tick = asyncio.ensure_future(ticker())
            before = ticks
            for _ in range(20):
                await asyncio.sleep(0)
            assert not blocked.done()  # still waiting for room ...
            assert ticks > before  # ... while the loop runs on
            # It waits for room (counted, as a blocked Pool.submit is; it said 0), without
            # a thread: the loop ran on meanwhile.
            assert pool.stats().blocked_submitters == 1
            gate.open()
            third = await blocked
            assert pool.stats().blocked_submitters == 0
            assert [await first, await second, await third] == [1, 2, 3]
            tick.cancel()
            with pytest.raises(asyncio.CancelledError):
                await tick

    run(main)


def test_submit_after_close_raises_pool_closed_also_for_a_waiting_submit() -> None:
    async def main() -> None:
        gate = Gate()
        async with AsyncPool(1, queue_size=0) as pool:
            await pool.submit(gate.task, 1)
            await gate.started(1)
            waiting = asyncio.ensure_future(pool.submit(gate.task, 2))
            await asyncio.sleep(0)
            pool.close()
            with pytest.raises(PoolClosed):
                await waiting
            with pytest.raises(PoolClosed):
                await pool.submit(double, 1)
            with pytest.raises(RuntimeError):
                pool.try_submit(double, 1)
            gate.open()

    run(main)


def test_a_task_submitting_into_its_own_full_pool_gets_would_deadlock() -> None:
    async def main() -> None:
        async with AsyncPool(1, queue_size=0) as pool:

            async def nested() -> str:
                try:
                    await pool.submit(double, 1)  # no room: the only worker is this task
                except WouldDeadlock as e:
                    return str(e)
                return "submitted"

            task = await pool.submit(nested)
            assert "submitted into the same pool" in await task

    run(main)


# ---------------------------------------------------------------------- map / results


def test_results_and_map_over_iterables_and_async_iterables() -> None:
    async def agen(n: int) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    async def main() -> None:
        async with AsyncPool(8) as pool:
            assert [v async for v in pool.map(double, range(100))] == [2 * i for i in range(100)]
            assert [v async for v in pool.map(double, agen(50))] == [2 * i for i in range(50)]
            got = [r async for r in pool.results(double, agen(200))]
            assert sorted(r.index for r in got) == list(range(200))
            assert all(r.ok and r.value == 2 * r.index and r.item == r.index for r in got)
            ordered = [r.index async for r in pool.results(double, range(300), ordered=True)]
            assert ordered == list(range(300))
            pairs = [v async for v in pool.map(lambda a, b: a + b, range(5), agen(5))]
            assert pairs == [0, 2, 4, 6, 8]
            plain = [v async for v in pool.map(abs, range(-5, 0))]  # plain: on threads
            assert plain == [5, 4, 3, 2, 1]

    run(main)


def test_results_reports_failures_as_values_and_map_raises_task_error() -> None:
    async def main() -> None:
        async with AsyncPool(4) as pool:
            got = [r async for r in pool.results(fail_on, range(10), ordered=True)]
            assert [r.ok for r in got] == [i != 3 for i in range(10)]
            assert isinstance(got[3].error, ValueError)
            seen: list[int] = []
            with pytest.raises(TaskError) as info:
                async for v in pool.map(fail_on, range(10)):
                    seen.append(v)
            assert seen == [0, 1, 2]
            assert info.value.result.index == 3
            assert isinstance(info.value.__cause__, ValueError)

    run(main)


class CancelledInput:
    """An async input whose third item awaits a future that someone else cancelled: its
    ``__anext__`` raises a CancelledError of its own, while nobody cancelled the consumer."""

    def __init__(self) -> None:
        self.i = 0

    def __aiter__(self) -> CancelledInput:
        return self

    async def __anext__(self) -> int:
        self.i += 1
        if self.i == 3:
            cancelled = asyncio.get_running_loop().create_future()
            cancelled.cancel()
            await cancelled
        return self.i


def test_an_input_that_raises_its_own_cancelled_error_ends_the_call_with_it() -> None:
    # It used to be taken for the reader's own cancellation: the reader ended without a word
    # and the consumer waited for the input for ever.
    async def main() -> tuple[list[int], BaseException | None]:
        got: list[int] = []
        error: BaseException | None = None
        async with AsyncPool(2) as pool:
            try:
                async for v in pool.map(double, CancelledInput()):
                    got.append(v)
            except asyncio.CancelledError as e:
                error = e
        return got, error

    async def bounded() -> tuple[list[int], BaseException | None]:
        # Not wait_for: at its timeout it cancels main(), whose except clause would then take
        # that CancelledError for the input's.
        task = asyncio.ensure_future(main())
        done, _ = await asyncio.wait([task], timeout=10)
        if not done:
            task.cancel()
            raise AssertionError("the consumer waited for the input for ever")
        return task.result()

    got, error = run(bounded)
    assert got == [2, 4]
    assert isinstance(error, asyncio.CancelledError)


def test_intake_is_lazy_and_bounded_on_an_endless_async_input() -> None:
    async def main() -> None:
        gate = Gate()
        read = 0

        async def endless() -> AsyncIterator[int]:
            nonlocal read
            i = 0
            while True:
                read += 1
                yield i
                i += 1

        async with AsyncPool(4, queue_size=4) as pool:
            it = pool.results(gate.task, endless())
            first = asyncio.ensure_future(it.__anext__())
            await gate.started(4)
            for _ in range(50):
                await asyncio.sleep(0)
            assert read <= 4 + 4 + 1  # workers + queue + one being consumed
            assert pool.stats().running == 4
            gate.open()
            r = await first
            assert r.ok
            count = 1
            async for _ in it:
                count += 1
                if count == 1000:
                    break
            # Still bounded after a thousand results: the window is a unit per worker and
            # queue place, plus one in the buffer and one being handed out (units of up to
            # 256 tiny calls).
            assert read - count <= (4 + 4 + 2) * 256

    run(main)


def test_leaving_async_for_early_cancels_the_calls_queued_work() -> None:
    async def main() -> None:
        read = 0

        def source() -> Any:
            nonlocal read
            for i in range(10_000):
                read += 1
                yield i

        async with AsyncPool(2, queue_size=8) as pool:
            async for r in pool.results(double, source(), chunksize=1):
                if r.index >= 5:
                    break
            gc.collect()
            assert await pool.join(timeout=5)
            s = pool.stats()
            assert s.submitted == s.succeeded + s.cancelled
            assert read < 100  # the input was not read any further
            pulled = read
            assert [v async for v in pool.map(double, range(3))] == [0, 2, 4]
            assert read == pulled

    run(main)


def test_stats_add_up_right_after_leaving_a_call_over_an_async_input() -> None:
    # The input's reader hands units to idle coroutines that have not run yet when the
    # consumer leaves: those units were counted as running and, once cancelled, as
    # cancelled too (queued went to -1 until the coroutines ran).
    async def source() -> Any:
        for i in range(100):
            await asyncio.sleep(0)
            yield i

    async def main() -> None:
        async with AsyncPool(2, queue_size=2) as pool:
            for stop_at in range(1, 6):
                it = pool.results(double, source(), chunksize=1)
                async for r in it:
                    if r.index >= stop_at:
                        break
                await it.aclose()
                s = pool.stats()
                assert s.queued >= 0 and s.running >= 0, s
                assert s.running + s.succeeded + s.failed + s.cancelled + s.queued == s.submitted
            assert await pool.join(timeout=10)
            s = pool.stats()
            assert s.submitted == s.succeeded + s.cancelled and s.queued == s.running == 0

    run(main)


def test_cancelling_the_consumer_cancels_its_queued_and_running_work() -> None:
    async def main() -> None:
        gate = Gate()
        async with AsyncPool(3, queue_size=6) as pool:

            async def consume() -> None:
                async for _ in pool.results(gate.task, range(100)):
                    pass

            consumer = asyncio.ensure_future(consume())
            await gate.started(3)
            consumer.cancel()
            with pytest.raises(asyncio.CancelledError):
                await consumer
            assert await pool.join(timeout=5)
            assert gate.cancelled == 3  # the running coroutines were cancelled
            s = pool.stats()
            assert s.running == 0 and s.queued == 0
            assert s.cancelled == s.submitted

    run(main)


@pytest.mark.parametrize("method", ["results", "map"])
def test_after_a_cancelled_step_the_iterator_ends_instead_of_waiting_for_ever(method: str) -> None:
    # One step cancelled (a per-item timeout around __anext__, say) cancels the call's work;
    # like an async generator that raised, the iterator is then done: the next step ends the
    # iteration. It used to wait for ever for results the closed call dropped.
    async def main() -> None:
        gate = Gate()
        async with AsyncPool(3, queue_size=6) as pool:
            it = getattr(pool, method)(gate.task, range(100))
            step = asyncio.ensure_future(it.__anext__())
            await gate.started(3)
            step.cancel()
            with pytest.raises(asyncio.CancelledError):
                await step
            with pytest.raises(StopAsyncIteration):
                await asyncio.wait_for(it.__anext__(), 10)
            assert await pool.join(timeout=10)
            s = pool.stats()
            assert s.running == 0 and s.queued == 0 and s.cancelled == s.submitted
            assert [v async for v in pool.map(double, range(3))] == [0, 2, 4]

    run(main)


def test_after_aclose_the_iterator_yields_nothing_more() -> None:
    async def main() -> None:
        async with AsyncPool(2) as pool:
            it = pool.results(double, range(50), chunksize=5)
            first = await it.__anext__()
            assert first.ok
            await it.aclose()
            assert [r async for r in it] == []

    run(main)


class Rows:
    """An async generator input standing for a cursor: ``closed`` is set by its ``finally``."""

    def __init__(self, fail_on_close: bool = False) -> None:
        self.closed = asyncio.Event()
        self.fail_on_close = fail_on_close

    async def rows(self) -> Any:
        try:
            for i in range(10_000):
                yield i
        finally:
            self.closed.set()
            if self.fail_on_close:
                raise OSError("the cursor would not close")


@pytest.mark.parametrize("how", ["aclose", "dropped", "consumer cancelled", "zip"])
def test_a_call_left_early_closes_its_async_input(how: str) -> None:
    # The call owns its input: left early, it closes it (an async generator's finally
    # runs), with aclose() by the time it returns. Else an input nobody else holds stayed
    # open for as long as the pool lived.
    async def main() -> None:
        first, second = Rows(), Rows()
        async with AsyncPool(2) as pool:
            if how == "zip":
                it = pool.results(add, first.rows(), second.rows())
            else:
                it = pool.results(double, first.rows())
            if how == "consumer cancelled":
                gate = asyncio.Event()

                async def consume() -> None:
                    async for _ in it:
                        gate.set()

                consumer = asyncio.ensure_future(consume())
                await asyncio.wait_for(gate.wait(), 10)
                consumer.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await consumer
                await asyncio.wait_for(first.closed.wait(), 10)
                return
            async for r in it:
                if r.index >= 3:
                    break
            assert not first.closed.is_set()  # (an iterator kept in a variable lives on)
            if how == "dropped":
                del it
                gc.collect()
                await asyncio.wait_for(first.closed.wait(), 10)
                return
            await it.aclose()
            assert first.closed.is_set()
            assert second.closed.is_set() == (how == "zip")

    run(main)


def test_closing_an_input_that_swallows_the_cancellation_of_a_read_does_not_hang() -> None:
    # The read under way is cancelled first (a generator cannot be closed while it runs):
    # one that swallows it and reads on used to be waited for until it had read a window.
    log: list[str] = []
    reading = asyncio.Event()

    async def stubborn() -> Any:
        try:
            for i in range(1_000_000):
                try:
                    reading.set()
                    await asyncio.Event().wait()  # a read that never ends on its own
                except asyncio.CancelledError:
                    log.append("swallowed")
                yield i
        finally:
            log.append("closed")

    async def main() -> None:
        async with AsyncPool(2) as pool:
            it = pool.results(double, stubborn())
            step = asyncio.ensure_future(it.__anext__())
            await asyncio.wait_for(reading.wait(), 10)
            assert not step.done()
            step.cancel()
            with pytest.raises(asyncio.CancelledError):
                await step
            await asyncio.wait_for(it.aclose(), 10)
        assert log == ["swallowed", "closed"]

    run(main)


def test_a_plain_function_whose_coroutine_raises_its_own_cancelled_error_fails_alone() -> None:
    # (A lambda around a coroutine function: the loop awaits what it returns.) Its own
    # CancelledError (it awaited a future someone else cancelled) was taken for the loop
    # ending: the pool broke, said so, and the call's result never came.
    async def inner(x: int) -> int:
        if x == 3:
            future = asyncio.get_running_loop().create_future()
            future.cancel()
            await future
        return x

    async def main() -> list[Result[int]]:
        async with AsyncPool(4) as pool:
            got = [r async for r in pool.results(lambda x: inner(x), range(8))]
            assert [r.value async for r in pool.results(double, [5])] == [10]
            return got

    got = sorted(run(main), key=lambda r: r.index)
    assert [r.value for r in got if r.ok] == [0, 1, 2, 4, 5, 6, 7]
    assert isinstance(got[3].error, asyncio.CancelledError)


def test_an_input_that_fails_to_close_is_reported_to_the_loop() -> None:
    async def main() -> list[dict[str, Any]]:
        logged: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: logged.append(ctx))
        rows = Rows(fail_on_close=True)
        async with AsyncPool(2) as pool:
            it = pool.results(double, rows.rows())
            async for _ in it:
                break
            await it.aclose()  # does not raise: the call's own work is done
            assert [r.value async for r in pool.results(double, [1])] == [2]
        return logged

    [ctx] = run(main)
    assert "failed to close" in ctx["message"] and isinstance(ctx["exception"], OSError)


def test_cancelling_the_task_inside_async_with_cancels_everything_and_leaves_nothing() -> None:
    async def main() -> None:
        gate = Gate()
        pool = AsyncPool(3, queue_size=10)

        async def body() -> None:
            async with pool:
                for i in range(8):
                    await pool.submit(gate.task, i)
                await gate.started(3)
                await asyncio.Event().wait()  # until cancelled

        task = asyncio.ensure_future(body())
        await gate.started(3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        s = pool.stats()
        assert (s.running, s.queued) == (0, 0)
        assert s.cancelled == 8 and gate.cancelled == 3
        assert asyncio.all_tasks() == {asyncio.current_task()}  # nothing left behind

    run(main)


# ---------------------------------------------------------------------- lifecycle


def test_shutdown_reports_unstarted_work_and_join_waits() -> None:
    async def main() -> None:
        gate = Gate()
        pool = AsyncPool(2, queue_size=10)
        async with pool:
            running = [await pool.submit(gate.task, i) for i in range(2)]
            await gate.started(2)
            queued = [await pool.submit(gate.task, i) for i in range(2, 6)]
            assert await pool.join(timeout=0.05) is False
            report = await pool.shutdown(cancel_futures=True, wait=False)
            assert isinstance(report, ShutdownReport) and report.finished is False
            assert sorted(u.index for u in report.unstarted) == [t.id for t in queued]
            for t in queued:
                with pytest.raises(asyncio.CancelledError):
                    await t
            gate.open()
            assert [await t for t in running] == [0, 1]
            final = await pool.shutdown()
            assert final.finished is True
            assert (final.completed, final.cancelled) == (2, 4)

    run(main)


def test_shutdown_timeout_cancels_running_coroutines() -> None:
    async def main() -> None:
        gate = Gate()
        async with AsyncPool(2) as pool:
            tasks = [await pool.submit(gate.task, i) for i in range(2)]
            await gate.started(2)
            report = await pool.shutdown(timeout=0.05)
            assert report.finished is False  # the timeout cut it
            assert report.cancelled == 2
            assert gate.cancelled == 2
            for t in tasks:
                with pytest.raises(asyncio.CancelledError):
                    await t

    run(main)


def test_resize_and_elastic_sizing() -> None:
    async def main() -> None:
        gate = Gate()
        async with AsyncPool(4, min_workers=1, idle_timeout=0.05) as pool:
            assert pool.stats().workers == 1
            tasks = [await pool.submit(gate.task, i) for i in range(4)]
            await gate.started(4)
            assert pool.stats().workers == 4
            pool.resize(2)
            gate.open()
            assert [await t for t in tasks] == [0, 1, 2, 3]
            while pool.stats().workers > 1:  # retire to min_workers once idle
                await asyncio.sleep(0.01)
            assert pool.stats().max_workers == 2

    run(main)


def test_parked_workers_that_work_arrives_for_all_start_in_one_turn_of_the_loop() -> None:
    # Coroutine workers on one loop have nothing to fight over: woken one by one, each would
    # cost a turn of the loop of its own (64 turns to refill 64 workers).
    async def main() -> None:
        turn = 0

        def tick() -> None:
            nonlocal turn
            turn += 1
            loop.call_soon(tick)

        loop = asyncio.get_running_loop()
        loop.call_soon(tick)
        started_at: list[int] = []

        async def note(x: int) -> int:
            started_at.append(turn)
            await asyncio.sleep(0)  # (a worker that never waits would run them all itself)
            return x

        async with AsyncPool(8) as pool:
            # Every worker runs, then parks: the pool has nothing more for it.
            assert sorted([r async for r in pool.map(note, range(8), chunksize=1)]) == list(
                range(8)
            )
            while pool.stats().running:
                await asyncio.sleep(0)
            started_at.clear()
            assert [v async for v in pool.map(note, range(8), chunksize=1)] == list(range(8))
        assert len(started_at) == 8
        assert max(started_at) - min(started_at) <= 1, started_at

    run(main)


# ---------------------------------------------------------------------- deadlines & cancel


@pytest.mark.parametrize("face", ["map", "results"])
def test_coroutines_that_turn_slow_in_a_large_unit_spread_over_the_idle_workers(
    face: str,
) -> None:
    # 400 instant coroutines make the units large; the last four wait until all four run at
    # once. Before, they ran one after another in one worker's unit and the barrier timed
    # out: an idle worker now takes the calls of a late unit that have not started.
    async def main() -> list[int]:
        arrived = 0
        all_in = asyncio.Event()  # (a barrier of four: asyncio.Barrier is Python 3.11+)

        async def fn(x: int) -> int:
            nonlocal arrived
            if x >= 400:
                arrived += 1
                if arrived == 4:
                    all_in.set()
                await asyncio.wait_for(all_in.wait(), 20)
            return x

        def items() -> Any:
            yield from range(404)  # a generator: the pool cannot see its end coming

        async with AsyncPool(4) as pool:
            if face == "map":
                return [v async for v in pool.map(fn, items())]
            got = [r async for r in pool.results(fn, items(), ordered=True)]
            assert [r.error for r in got if not r.ok] == []
            return [r.unwrap() for r in got]

    assert run(main) == list(range(404))


def test_task_timeout_cancels_the_coroutine_and_gives_task_timeout() -> None:
    async def main() -> None:
        gate = Gate()
        async with AsyncPool(2, task_timeout=0.05) as pool:
            task = await pool.submit(gate.task, 1)
            with pytest.raises(TaskTimeout):
                await task
            assert gate.cancelled == 1
            got = [r async for r in pool.results(gate.task, range(2))]
            assert all(isinstance(r.error, TaskTimeout) for r in got)
            assert pool.stats().timed_out == 3
            assert await (await pool.submit(double, 4)) == 8  # the pool goes on

    run(main)


def test_a_failure_read_through_outcome_counts_as_retrieved() -> None:
    # Handling failures as Results (outcome) must not make asyncio log every failed task as
    # "AsyncTask exception was never retrieved" when it is collected.
    async def main() -> list[dict[str, Any]]:
        logged: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: logged.append(ctx))
        async with AsyncPool(2) as pool:
            tasks = [await pool.submit(fail_on, i) for i in range(5)]
            outcomes = [await t.outcome() for t in tasks]
        assert [o.ok for o in outcomes] == [True, True, True, False, True]
        assert isinstance(outcomes[3].error, ValueError)
        del tasks
        gc.collect()
        unread = asyncio.get_running_loop().create_future()  # the check itself works:
        unread.set_exception(ValueError("never read"))  # this one is reported
        del unread
        gc.collect()
        return logged

    logged = run(main)
    assert [str(ctx.get("exception")) for ctx in logged] == ["never read"]


def test_cancel_a_running_coroutine() -> None:
    async def main() -> None:
        gate = Gate()
        async with AsyncPool(1) as pool:
            task = await pool.submit(gate.task, 1)
            await gate.started(1)
            assert task.cancel() is True
            with pytest.raises(asyncio.CancelledError):
                await task
            r = await task.outcome()
            assert isinstance(r.error, TaskCancelled)
            assert gate.cancelled == 1
            assert task.cancel() is False  # already done
            assert await (await pool.submit(double, 2)) == 4

    run(main)


def test_a_coroutine_that_swallows_its_cancellation_is_reported_not_waited_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="workpool")

    async def main() -> None:
        release = asyncio.Event()

        async def stubborn() -> str:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                await release.wait()  # swallows it, and runs on
            return "late"

        async with AsyncPool(1, task_timeout=0.05) as pool:
            task = await pool.submit(stubborn)
            with pytest.raises(TaskTimeout):
                await task  # delivered at the deadline, not when it ends
            assert pool.stats().abandoned == 1
            assert await (await pool.submit(double, 1)) == 2  # a new worker took over
            release.set()
            while pool.stats().abandoned:
                await asyncio.sleep(0.01)
        messages = [r.getMessage() for r in caplog.records]
        assert any("swallowed the CancelledError" in m for m in messages), messages

    run(main)


def test_retries_with_backoff() -> None:
    async def main() -> None:
        calls = 0

        async def flaky() -> int:
            nonlocal calls
            calls += 1
            if calls < 3:
                raise ConnectionError("flaky")
            return calls

        async with AsyncPool(2, retries=Retry(3, backoff=0.001)) as pool:
            task = await pool.submit(flaky)
            assert await task == 3
            assert (await task.outcome()).attempts == 3
            assert pool.stats().retried == 2

    run(main)


def test_rate_limit_with_burst() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        starts: list[float] = []

        async def stamp(i: int) -> int:
            starts.append(loop.time())
            return i

        async with AsyncPool(8, rate_limit=RateLimit("10/s", burst=3)) as pool:
            t0 = loop.time()
            got = [r.unwrap() async for r in pool.results(stamp, range(6))]
        assert sorted(got) == list(range(6))
        starts.sort()
        # The burst: three at once (evenly spaced starts would put the third at 0.2 s).
        assert starts[2] - t0 < 0.15, starts
        # Then one every 0.1 s: the bucket lets a start go on time, and a start that a busy
        # loop runs late does not let the next one come sooner than its own time.
        assert all(starts[k] - t0 >= 0.1 * (k - 2) - 0.005 for k in range(3, 6)), starts

    run(main)


def test_await_submit_under_a_rate_limit_waits_for_the_token() -> None:
    # queue_size=0 and a rate limit: an await submit waits for the token (a timer wakes it:
    # nothing runs to free room).
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with AsyncPool(4, queue_size=0, rate_limit="20/s") as pool:
            t0 = loop.time()
            tasks = [await pool.submit(asyncio.sleep, 0, i) for i in range(4)]
            took = loop.time() - t0
            assert [await t for t in tasks] == [0, 1, 2, 3]
            assert took >= 3 * 0.05 - 0.02, took
            got = [v async for v in pool.map(asyncio.sleep, [0, 0, 0], range(3))]
            assert got == [0, 1, 2]

    run(main)


def test_map_and_results_take_ordered_as_a_bool_only() -> None:
    async def main() -> None:
        async with AsyncPool(2) as pool:
            for bad in ("yes", None):
                with pytest.raises(TypeError, match="ordered must be True or False"):
                    pool.results(asyncio.sleep, [0], ordered=bad)  # type: ignore[call-overload]
            assert [v async for v in pool.map(asyncio.sleep, [0], [5], ordered=False)] == [5]

    run(main)


def test_current_task_in_each_coroutine_is_its_own() -> None:
    async def main() -> None:
        async def whoami(i: int) -> tuple[int, int]:
            await asyncio.sleep(0)
            first = current_task().id
            await asyncio.sleep(0)  # others ran meanwhile
            return i, current_task().id if current_task().id == first else -1

        async with AsyncPool(100) as pool:
            got = [r.value async for r in pool.results(whoami, range(500))]
        assert sorted(got) == [(i, i) for i in range(500)]  # type: ignore[type-var]

    run(main)


# ---------------------------------------------------------------------- no thread per coroutine


def test_ten_thousand_concurrent_coroutines_on_a_flat_thread_count() -> None:
    async def main() -> None:
        gate = Gate()
        before = threading.active_count()
        async with AsyncPool(10_000, queue_size=0) as pool:
            tasks = [pool.try_submit(gate.task, i) for i in range(10_000)]
            assert all(t is not None for t in tasks)
            await gate.started(10_000)
            assert pool.stats().running == 10_000
            assert threading.active_count() <= before + 2  # at most a timer thread
            gate.open()
            assert sum([await t for t in tasks if t is not None]) == sum(range(10_000))

    run(main)


def test_plain_functions_run_on_threads_and_never_block_the_loop() -> None:
    async def main() -> None:
        release = threading.Event()
        loop_thread = threading.get_ident()

        def blocking(x: int) -> tuple[int, bool]:
            release.wait(10)
            return x, threading.get_ident() != loop_thread

        async with AsyncPool(2) as pool:
            tasks = [await pool.submit(blocking, i) for i in range(2)]
            for _ in range(10):
                await asyncio.sleep(0)  # the loop runs while both calls block
            release.set()
            assert [await t for t in tasks] == [(0, True), (1, True)]

    run(main)


async def where_am_i(x: int) -> tuple[int, int, int]:
    await asyncio.sleep(0)
    return x, os.getpid(), current_task().id


def test_coroutine_functions_on_the_process_backend_run_in_the_worker_processes() -> None:
    async def main() -> list[tuple[int, int, int]]:
        async with AsyncPool(2, backend="process") as pool:
            got = [v async for v in pool.map(where_am_i, range(6))]
            got.append(await (await pool.submit(where_am_i, 6)))
            return got

    got = run(main)
    assert [x for x, _, _ in got] == list(range(7))
    assert all(pid != os.getpid() for _, pid, _ in got)  # in worker processes
    assert [i for _, _, i in got[:6]] == list(range(6))  # current_task() works there too
    with Pool(2, backend="process") as pool:  # and from a synchronous Pool
        assert [x for x, _, _ in pool.map(where_am_i, range(3))] == [0, 1, 2]


def test_the_pool_belongs_to_one_loop() -> None:
    pool = AsyncPool(2)

    async def use() -> int:
        return await (await pool.submit(double, 1))

    assert run(use) == 2
    with pytest.raises(RuntimeError, match="event loop"):
        run(use)


def test_resize_and_stats_before_the_first_use_outside_any_loop() -> None:
    # The pool opens on the loop that first uses it. Before that, outside a loop, resize
    # sets the number it opens with, and stats says why it cannot answer yet (both raised
    # a bare "no running event loop").
    pool = AsyncPool(4, min_workers=2)
    pool.resize(7)
    with pytest.raises(ConfigError, match="below min_workers=2"):
        pool.resize(1)
    with pytest.raises(RuntimeError, match=r"has not been used yet.*on that loop"):
        pool.stats()

    async def main() -> int:
        async with pool:
            assert [v async for v in pool.map(double, range(3))] == [0, 2, 4]
            return pool.stats().max_workers

    assert run(main) == 7


def test_config_errors_are_raised_at_construction() -> None:
    with pytest.raises(ConfigError, match="workers"):
        AsyncPool(0)
    with pytest.raises(ConfigError, match="unknown backend"):
        AsyncPool(2, backend="nope")
    with pytest.raises(ConfigError, match="handle_signals"):
        AsyncPool(2, handle_signals="yes")  # type: ignore[arg-type]
    # The backend's own options too, though the backend opens only at first use (on the
    # loop): outside any loop, at the call that gave them.
    with pytest.raises(ConfigError, match=r"unknown option.*bogus"):
        AsyncPool(2, bogus=1)
    with pytest.raises(ConfigError, match="start_method must be one of"):
        AsyncPool(2, backend="process", start_method="bogus")
    with pytest.raises(ConfigError, match="max_tasks_per_worker"):
        AsyncPool(2, backend="process", max_tasks_per_worker=0)


# ---------------------------------------------------------------------- signals


SIGNAL_SCRIPT = """
import asyncio, os, signal, sys
from workpool import AsyncPool, Interrupted

async def task(i):
    print(f"started {i}", flush=True)
    await asyncio.sleep(float(sys.argv[1]))
    return i

async def watch(pool):
    while not pool.closed:  # tells the test when the first signal was acted on
        await asyncio.sleep(0.005)
    print("closed", flush=True)

async def main():
    n = 0
    try:
        async with AsyncPool(2, handle_signals=True) as pool:
            watcher = asyncio.ensure_future(watch(pool))
            async for r in pool.results(task, range(100)):
                n += 1
                print(f"result {r.index} {'ok' if r.ok else type(r.error).__name__}", flush=True)
    except Interrupted as e:
        print(f"interrupted {e.signal} completed={e.report.completed} "
              f"cancelled={e.report.cancelled} finished={e.report.finished} ({e})", flush=True)
        return 3
    return 0

sys.exit(asyncio.run(main()))
"""


def _start(delay: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SIGNAL_SCRIPT), str(delay)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_line(proc: subprocess.Popen[str], prefix: str) -> list[str]:
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.strip())
        if line.startswith(prefix):
            return lines
    raise AssertionError(f"never printed {prefix!r}: {lines}")


def test_first_signal_drains_then_iteration_raises_interrupted() -> None:
    import signal

    proc = _start(0.5)
    before = _wait_line(proc, "started 1")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    lines = before + out.splitlines()
    assert proc.returncode == 3, (lines, err)
    # What was in flight (the two running and those queued for them) drained, and nothing
    # more was read: every task that started gave its result, none failed.
    results = [x for x in lines if x.startswith("result")]
    started = [x for x in lines if x.startswith("started")]
    assert 2 <= len(results) == len(started) < 100, lines
    assert all(x.endswith(" ok") for x in results)
    assert lines[-1].startswith(f"interrupted {int(signal.SIGTERM)} completed={len(results)}")
    assert lines[-1].endswith("in-flight work drained)")
    # The report is the drain's, taken once it ended (it was taken before, saying the drain
    # had not finished).
    assert " finished=True " in lines[-1], lines


def test_second_signal_cancels_at_once() -> None:
    import signal

    proc = _start(3600)
    _wait_line(proc, "started 1")
    proc.send_signal(signal.SIGINT)
    _wait_line(proc, "closed")  # two signals sent at once may reach it as one
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    lines = out.splitlines()
    assert proc.returncode == 3, (lines, err)
    assert not any(x.endswith(" ok") for x in lines)
    # (Said so: it was "in-flight work drained" after two signals too.)
    assert lines[-1].startswith(f"interrupted {int(signal.SIGINT)} "), lines  # the second's
    assert lines[-1].endswith("second signal: running work cancelled)"), lines
    assert "Task was destroyed" not in err and "never awaited" not in err, err


def test_leaving_async_with_after_a_second_signal_names_it() -> None:
    # The body awaits something else than results(): the block's exit raises Interrupted.
    # After SIGTERM then SIGINT it named SIGTERM and said nothing of the cancel.
    import signal

    async def main() -> Interrupted:
        never = asyncio.Event()

        async def work() -> None:
            await never.wait()

        async def until(condition: Callable[[], bool]) -> None:
            while not condition():
                await asyncio.sleep(0)

        try:
            async with AsyncPool(workers=2, handle_signals=True) as pool:
                tasks = [await pool.submit(work) for _ in range(2)]
                await asyncio.wait_for(until(lambda: pool.stats().running == 2), 10)
                os.kill(os.getpid(), signal.SIGTERM)
                await asyncio.wait_for(until(lambda: pool.closed), 10)
                os.kill(os.getpid(), signal.SIGINT)
                await asyncio.wait_for(until(lambda: all(t.done() for t in tasks)), 10)
        except Interrupted as e:
            return e
        raise AssertionError("no Interrupted")

    error = asyncio.run(main())
    assert error.signal == signal.SIGINT
    assert str(error).endswith("second signal: running work cancelled"), error
    assert error.report.cancelled == 2


RESTORE_SCRIPT = """
import asyncio, os, signal, sys
from workpool import AsyncPool, Interrupted

async def work(x):
    return x

async def own():
    # The program's own SIGTERM handler, on the loop: the pool gives it back.
    got = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, got.set)
    async with AsyncPool(2, handle_signals=True) as pool:
        assert [v async for v in pool.map(work, range(3))] == [0, 1, 2]
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(got.wait(), 10)
    print("own handler ran", flush=True)

async def nested():
    # An inner pool that ends gives the outer one its handlers back.
    release = asyncio.Event()

    async def held(i):
        await release.wait()
        return i

    try:
        async with AsyncPool(2, handle_signals=True) as outer:
            async with AsyncPool(2, handle_signals=True) as inner:
                assert [v async for v in inner.map(work, range(3))] == [0, 1, 2]
            async def watch():
                while not outer.closed:
                    await asyncio.sleep(0.005)
                release.set()  # the first signal closed the outer pool: let its work end
            watcher = asyncio.ensure_future(watch())
            os.kill(os.getpid(), signal.SIGINT)
            async for r in outer.results(held, range(4)):
                pass
    except Interrupted as e:
        print(f"outer interrupted {e.signal}", flush=True)

asyncio.run({"own": own, "nested": nested}[sys.argv[1]]())
"""


@pytest.mark.parametrize(
    ("mode", "expected"), [("own", "own handler ran"), ("nested", "outer interrupted 2")]
)
def test_handle_signals_gives_back_the_loops_own_handlers(mode: str, expected: str) -> None:
    # Before, leaving the pool removed the loop's handler and left asyncio's no-op in place:
    # the program's own handler (or an outer pool's) never ran again, the signal was lost.
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(RESTORE_SCRIPT), mode],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert proc.stdout.strip().splitlines()[-1] == expected, proc.stdout


def test_shutdown_restores_the_signal_handlers_of_a_pool_used_without_async_with() -> None:
    import signal

    async def main() -> None:
        before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        pool = AsyncPool(2, handle_signals=True)
        assert [v async for v in pool.map(double, range(3))] == [0, 2, 4]  # installs them
        assert signal.getsignal(signal.SIGTERM) != before[signal.SIGTERM]
        await pool.shutdown()
        after = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        assert after == before  # Ctrl-C and SIGTERM work again

    run(main)


# ---------------------------------------------------------------------- uvloop


def test_a_representative_run_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed")

    async def main() -> list[Result[int]]:
        gate = Gate()
        async with AsyncPool(4, task_timeout=5) as pool:
            task = await pool.submit(gate.task, 1)
            await gate.started(1)
            assert task.cancel() is True
            got = [r async for r in pool.results(double, range(200), ordered=True)]
            assert [v async for v in pool.map(double, range(3))] == [0, 2, 4]
            return got

    got = uvloop.run(main())
    assert [r.value for r in got] == [2 * i for i in range(200)]
