"""A3: an endless async input in constant memory — fresh 1 KiB items, stop after N results.

The input is an endless async generator of fresh 1 KiB ``bytes`` (``streams.Endless``), the
task a coroutine returning ``len(item)``, 100 workers. Every row stops after N results and
shuts its pool down; both are timed, inside the event loop (``Pool(backend="async")``: from
the calling thread, over the same generator iterated synchronously). Memory is measured as in
W5 (see ``streams``). The ratio column is throughput against the hand-written asyncio.Queue
pool fed from the same generator.

``aiometer.amap`` (calls ``len()`` on its input), ``gather`` and ``TaskGroup`` (a task per item,
created up front) cannot take an endless input at all, so they have no row here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, Iterable
from time import perf_counter
from typing import Any

import aiopeers
from harness import Config, RowSpec, Target, Workload, close_iterator, measurement, require_workpool
from streams import Endless, MemoryProbe, kib

WORKERS = 100


async def length(item: bytes) -> int:
    return len(item)


def _check(r: Any, unwrap: bool) -> None:
    if unwrap and not r.ok:
        raise RuntimeError(f"task failed: {r.error!r}")


async def _consume(results: AsyncIterable[Any], probe: MemoryProbe, unwrap: bool) -> int:
    count = 0
    async for r in results:
        _check(r, unwrap)
        count += 1
        probe.tick(count)
        if count >= probe.n:
            break
    return count


def _finish(elapsed: float, count: int, probe: MemoryProbe) -> dict[str, Any]:
    if count != probe.n:
        raise RuntimeError(f"got {count} results, expected {probe.n}")
    return measurement(elapsed, count, **probe.metrics())


async def _aclose(it: Any) -> None:
    """What leaving ``async with aclosing(...)`` does; a plain ``break`` does not close."""
    aclose = getattr(it, "aclose", None)
    if aclose is not None:
        await aclose()


def asyncpool(method: str, n: int, base_at: int, every: int) -> dict[str, Any]:
    require_workpool("AsyncPool", where="API.md §6")
    from workpool import AsyncPool

    source = Endless(kib)
    probe = MemoryProbe(n, base_at, every, source)

    async def run() -> tuple[float, int]:
        probe.start()
        t0 = perf_counter()
        async with AsyncPool(workers=WORKERS) as pool:
            it = getattr(pool, method)(length, source.agen())
            try:
                count = await _consume(it, probe, unwrap=(method == "results"))
            finally:
                await _aclose(it)
        return perf_counter() - t0, count

    return _finish(*asyncio.run(run()), probe)


def hand_queue(n: int, base_at: int, every: int) -> dict[str, Any]:
    source = Endless(kib)
    probe = MemoryProbe(n, base_at, every, source)

    async def run() -> tuple[float, int]:
        probe.start()
        t0 = perf_counter()
        feed = aiopeers.hand_queue(length, source.agen(), WORKERS)
        async with contextlib.aclosing(feed) as it:
            count = await _consume(it, probe, unwrap=False)
        return perf_counter() - t0, count

    return _finish(*asyncio.run(run()), probe)


def pool_async(method: str, n: int, base_at: int, every: int) -> dict[str, Any]:
    from workpool import Pool

    source = Endless(kib)
    probe = MemoryProbe(n, base_at, every, source)
    unwrap = method == "results"
    probe.start()
    t0 = perf_counter()
    count = 0
    with Pool(workers=WORKERS, backend="async") as pool:
        it: Iterable[Any] = getattr(pool, method)(length, iter(source))
        for r in it:
            _check(r, unwrap)
            count += 1
            probe.tick(count)
            if count >= n:
                break
        close_iterator(it)
    return _finish(perf_counter() - t0, count, probe)


HAND = "hand-written asyncio.Queue"


def build(cfg: Config) -> Workload:
    n = 50_000 if cfg.quick else 500_000
    base_at = 10_000 if cfg.quick else 100_000
    every = 5_000 if cfg.quick else 10_000
    kw = {"n": n, "base_at": base_at, "every": every}
    m = __name__
    wp = ("workpool",)
    sync_note = "synchronous caller, the same generator iterated with for"
    return Workload(
        id="A3",
        title=f"endless async generator of 1 KiB items, stop after {n:,} results, {WORKERS} workers (1 run)",
        description=f"throughput and RSS growth (after the first {base_at:,} results) on an endless async input",
        default_ref=HAND,
        columns=[
            ("rss_growth_mb", "RSS +MB", ".1f"),
            ("peak_mb", "peak +MB", ".1f"),
            ("read_ahead", "read-ahead", ",.0f"),
        ],
        rows=[
            RowSpec("AsyncPool.results", m, "asyncpool", {**kw, "method": "results"}, wp),
            RowSpec("AsyncPool.map", m, "asyncpool", {**kw, "method": "map"}, wp, note="ordered"),
            RowSpec(
                'Pool(backend="async").results',
                m,
                "pool_async",
                {**kw, "method": "results"},
                wp,
                note=sync_note,
            ),
            RowSpec(
                HAND,
                m,
                "hand_queue",
                kw,
                note=f"{WORKERS} worker tasks, in-queue maxsize={2 * WORKERS}",
            ),
        ],
        targets=[
            Target(
                f"A3 AsyncPool.results RSS growth < 5 MB over {n:,}",
                "AsyncPool.results",
                "<",
                5.0,
                metric="rss_growth_mb",
                unit="MB",
            ),
            Target(
                f"A3 AsyncPool.map RSS growth < 5 MB over {n:,}",
                "AsyncPool.map",
                "<",
                5.0,
                metric="rss_growth_mb",
                unit="MB",
            ),
        ],
    )
