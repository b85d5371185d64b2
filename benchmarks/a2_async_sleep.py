"""A2: keeping 64 coroutines busy — 2,000 coroutines awaiting ``asyncio.sleep(0.01)``.

The physical limit is 2000 x 10 ms / 64 = 0.3125 s. The floor this machine reaches is the
reference row: 64 bare tasks, no pool, each awaiting its fixed share of the sleeps (some run
32 of them, so it is at least ceil(2000/64) x 10 ms plus this loop's real timer latency).
The ratio column is time / that floor.
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import Any

import aiopeers
from harness import Config, RowSpec, Target, Workload, measurement, sleep_floor_rows

N = 2_000
WORKERS = 64
SLEEP = 0.01
REPS = 3  # each run is ~0.33 s: best of 3 keeps scheduler noise out of a 3 % target


async def sleepy(x: Any) -> Any:
    await asyncio.sleep(SLEEP)
    return x


def bare_tasks(n: int, reps: int) -> dict[str, Any]:
    """No pool: WORKERS tasks, each awaiting its fixed share of the n sleeps."""
    shares = [n // WORKERS + (i < n % WORKERS) for i in range(WORKERS)]

    async def run(k: int) -> int:
        for _ in range(k):
            await sleepy(None)
        return k

    async def body() -> None:
        done = await asyncio.gather(*(run(k) for k in shares))
        if sum(done) != n:
            raise RuntimeError(f"ran {sum(done)} sleeps, expected {n}")

    async def real_sleep() -> float:
        t0 = perf_counter()
        for _ in range(50):
            await asyncio.sleep(SLEEP)
        return (perf_counter() - t0) / 50

    mean = asyncio.run(real_sleep())
    return measurement(
        aiopeers.timed_async(reps, body),
        n,
        note=f"no pool, each its fixed share; asyncio.sleep({SLEEP}) really takes {mean * 1000:.3f} ms here",
    )


def peer(kind: str, n: int, reps: int) -> dict[str, Any]:
    return aiopeers.peer_row(kind, sleepy, n, WORKERS, reps)


def asyncpool(method: str, n: int, reps: int) -> dict[str, Any]:
    return aiopeers.asyncpool_row(method, sleepy, n, WORKERS, reps)


def pool_async(method: str, n: int, reps: int) -> dict[str, Any]:
    return aiopeers.pool_async_row(method, sleepy, n, WORKERS, reps)


FLOOR = f"floor: {WORKERS} bare tasks"
WP = {
    "AsyncPool.map": ("asyncpool", "map"),
    "AsyncPool.results": ("asyncpool", "results"),
    'Pool(backend="async").map': ("pool_async", "map"),
    'Pool(backend="async").results': ("pool_async", "results"),
}


def build(cfg: Config) -> Workload:
    reps = 1 if cfg.quick else REPS
    kw = {"n": N, "reps": reps}
    m = __name__
    wp = ("workpool",)
    sync_note = "synchronous caller; the pool's loop runs in its own thread"
    return Workload(
        id="A2",
        title=f"{N:,} coroutines of asyncio.sleep({SLEEP * 1000:.0f} ms) on {WORKERS} workers (best of {reps}); ratio = time / floor",
        description="scheduling latency of the async pool with many waiting coroutines",
        default_ref=FLOOR,
        ratio_mode="time",
        rows=[
            *sleep_floor_rows("physical limit", N, WORKERS, SLEEP),
            RowSpec(FLOOR, m, "bare_tasks", kw),
            *(
                RowSpec(
                    name,
                    m,
                    func,
                    {**kw, "method": method},
                    wp,
                    note=sync_note if func == "pool_async" else "",
                )
                for name, (func, method) in WP.items()
            ),
            RowSpec(
                "hand-written asyncio.Queue",
                m,
                "peer",
                {**kw, "kind": "hand_queue"},
                note=f"{WORKERS} worker tasks, in-queue maxsize={2 * WORKERS}",
            ),
            RowSpec(
                "aiometer.amap",
                m,
                "peer",
                {**kw, "kind": "aiometer"},
                ("aiometer",),
                note=f"max_at_once={WORKERS}",
            ),
            RowSpec("asyncio.gather + Semaphore", m, "peer", {**kw, "kind": "gather"}),
            RowSpec(
                "asyncio.TaskGroup + Semaphore",
                m,
                "peer",
                {**kw, "kind": "taskgroup"},
                ("asyncio.taskgroups",),  # Python 3.11+
            ),
            RowSpec(
                "anyio task group + CapacityLimiter", m, "peer", {**kw, "kind": "anyio"}, ("anyio",)
            ),
        ],
        targets=[
            Target(
                f"A2 {name} <= 1.03x the bare-task floor",
                name,
                "<=",
                1.03,
                metric="seconds",
                ref=FLOOR,
            )
            for name in WP
        ],
    )
