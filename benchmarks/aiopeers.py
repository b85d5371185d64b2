"""The rows shared by the asyncio workloads (A1, A2): workpool's async pools and their peers.

Every row runs a coroutine function ``fn`` of one argument over ``range(n)`` with at most
``limit`` coroutines at once, checks it got exactly one result per input, and times it ``reps``
times (best of). Async rows run in a fresh event loop per rep (``asyncio.run``) and are timed
inside it, from before the pool (or its peer's machinery) is created to after it is gone;
``Pool(backend="async")`` is timed from the calling thread, its own loop's start and stop
included, as a synchronous program sees it.

The peers, as a user would write them without workpool:

* ``hand_queue``: an ``asyncio.Queue`` fed by one task, ``limit`` worker tasks, results on an
  unbounded out-queue as they finish (the reference row: the floor of a pool on asyncio);
* ``aiometer.amap(fn, items, max_at_once=limit)``, results as they finish;
* ``asyncio.gather`` of one task per item, each behind an ``asyncio.Semaphore(limit)``;
* ``asyncio.TaskGroup`` (Python 3.11+), one task per item behind the semaphore;
* anyio: a task group with one task per item behind ``anyio.CapacityLimiter(limit)``.

The last three create every task up front and hand the results back only at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from time import perf_counter
from typing import Any

from harness import best_of, consume, consume_results, measurement, require_workpool

AsyncFn = Callable[[Any], Awaitable[Any]]
_DONE = object()


# --------------------------------------------------------------------------- peers


async def hand_queue(
    fn: AsyncFn,
    items: Iterable[Any] | AsyncIterable[Any],
    workers: int,
    maxsize: int | None = None,
) -> AsyncIterator[Any]:
    """The hand-written asyncio pool: yield ``fn(item)`` for every item, as they finish.

    The in-queue is bounded (``maxsize``, default ``2 * workers``), so an endless input stays
    bounded. Closing the generator early (``aclose``) cancels the feeder and the workers.
    """
    in_q: asyncio.Queue[Any] = asyncio.Queue(maxsize=2 * workers if maxsize is None else maxsize)
    out_q: asyncio.Queue[Any] = asyncio.Queue()

    async def feed() -> None:
        if isinstance(items, AsyncIterable):
            async for item in items:
                await in_q.put(item)
        else:
            for item in items:
                await in_q.put(item)
        for _ in range(workers):
            await in_q.put(_DONE)

    async def work() -> None:
        while True:
            item = await in_q.get()
            if item is _DONE:
                out_q.put_nowait(_DONE)
                return
            out_q.put_nowait(await fn(item))

    tasks = [asyncio.create_task(work()) for _ in range(workers)]
    tasks.append(asyncio.create_task(feed()))
    try:
        running = workers
        while running:
            result = await out_q.get()
            if result is _DONE:
                running -= 1
            else:
                yield result
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def aiometer_amap(fn: AsyncFn, items: list[Any], limit: int) -> AsyncIterator[Any]:
    import aiometer

    async with aiometer.amap(fn, items, max_at_once=limit) as results:
        async for result in results:
            yield result


async def gather_semaphore(fn: AsyncFn, items: Iterable[Any], limit: int) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def guarded(item: Any) -> Any:
        async with sem:
            return await fn(item)

    return await asyncio.gather(*(guarded(item) for item in items))


async def taskgroup_semaphore(fn: AsyncFn, items: Iterable[Any], limit: int) -> list[Any]:
    sem = asyncio.Semaphore(limit)
    done: list[Any] = []

    async def guarded(item: Any) -> None:
        async with sem:
            done.append(await fn(item))

    async with asyncio.TaskGroup() as tg:  # type: ignore[attr-defined]  # 3.11+
        for item in items:
            tg.create_task(guarded(item))
    return done


async def anyio_limiter(fn: AsyncFn, items: Iterable[Any], limit: int) -> list[Any]:
    import anyio

    limiter = anyio.CapacityLimiter(limit)
    done: list[Any] = []

    async def guarded(item: Any) -> None:
        async with limiter:
            done.append(await fn(item))

    async with anyio.create_task_group() as tg:
        for item in items:
            tg.start_soon(guarded, item)
    return done


# --------------------------------------------------------------------------- helpers


async def acount(results: AsyncIterable[Any], expected: int, unwrap: bool = False) -> int:
    """Consume an async iterable, checking the count (and, with ``unwrap``, that every
    workpool ``Result`` is ok)."""
    count = 0
    async for r in results:
        if unwrap and not r.ok:
            raise RuntimeError(f"task failed: {r.error!r}")
        count += 1
    if count != expected:
        raise RuntimeError(f"got {count} results, expected {expected}")
    return count


def check_count(results: list[Any], expected: int) -> None:
    if len(results) != expected:
        raise RuntimeError(f"got {len(results)} results, expected {expected}")


def timed_async(reps: int, body: Callable[[], Awaitable[None]]) -> float:
    """Best of ``reps`` runs of ``await body()``, each in a new event loop, timed inside it."""

    async def once() -> float:
        t0 = perf_counter()
        await body()
        return perf_counter() - t0

    return best_of(reps, lambda: asyncio.run(once()))


# --------------------------------------------------------------------------- rows

PEERS = ("hand_queue", "aiometer", "gather", "taskgroup", "anyio")


def peer_row(kind: str, fn: AsyncFn, n: int, limit: int, reps: int) -> dict[str, Any]:
    """One peer (``kind`` in ``PEERS``) running ``fn`` over ``range(n)``."""

    async def body() -> None:
        if kind == "hand_queue":
            async with contextlib.aclosing(hand_queue(fn, range(n), limit)) as it:
                await acount(it, n)
        elif kind == "aiometer":
            # aiometer calls len() on its input: it takes a list, not a lazy iterable.
            await acount(aiometer_amap(fn, list(range(n)), limit), n)
        elif kind == "gather":
            check_count(await gather_semaphore(fn, range(n), limit), n)
        elif kind == "taskgroup":
            check_count(await taskgroup_semaphore(fn, range(n), limit), n)
        elif kind == "anyio":
            check_count(await anyio_limiter(fn, range(n), limit), n)
        else:
            raise ValueError(f"unknown peer {kind!r}; one of {PEERS}")

    return measurement(timed_async(reps, body), n)


def asyncpool_row(method: str, fn: AsyncFn, n: int, limit: int, reps: int) -> dict[str, Any]:
    """``AsyncPool(workers=limit)`` (API.md §6): ``method`` is ``"results"`` or ``"map"``."""
    require_workpool("AsyncPool", where="API.md §6")
    from workpool import AsyncPool

    async def body() -> None:
        async with AsyncPool(workers=limit) as pool:
            if method == "results":
                await acount(pool.results(fn, range(n)), n, unwrap=True)
            else:
                await acount(pool.map(fn, range(n)), n)

    return measurement(timed_async(reps, body), n)


def pool_async_row(method: str, fn: AsyncFn, n: int, limit: int, reps: int) -> dict[str, Any]:
    """``Pool(workers=limit, backend="async")`` driven from synchronous code (API.md §6)."""
    from workpool import Pool

    def once() -> float:
        t0 = perf_counter()
        with Pool(workers=limit, backend="async") as pool:
            if method == "results":
                consume_results(pool.results(fn, range(n)), n)
            else:
                consume(pool.map(fn, range(n)), n)
        return perf_counter() - t0

    return measurement(best_of(reps, once), n)
