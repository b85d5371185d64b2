"""A1: the per-coroutine cost of an async pool — 20,000 coroutines of ``await asyncio.sleep(0)``.

At most 100 at once, results as they finish (the ``gather``/``TaskGroup``/anyio rows hand
them back at the end). The ratio column is throughput against the hand-written
``asyncio.Queue`` pool with 100 worker tasks (see ``aiopeers``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiopeers
from harness import Config, RowSpec, Target, Workload

N = 20_000
LIMIT = 100
REPS = 3  # each run is ~0.1-0.5 s: best of 3


async def tick(x: Any) -> Any:
    await asyncio.sleep(0)
    return x


def peer(kind: str, n: int, reps: int) -> dict[str, Any]:
    return aiopeers.peer_row(kind, tick, n, LIMIT, reps)


def asyncpool(method: str, n: int, reps: int) -> dict[str, Any]:
    return aiopeers.asyncpool_row(method, tick, n, LIMIT, reps)


def pool_async(method: str, n: int, reps: int) -> dict[str, Any]:
    return aiopeers.pool_async_row(method, tick, n, LIMIT, reps)


HAND = "hand-written asyncio.Queue"
WP_RESULTS = "AsyncPool.results"
AIOMETER = "aiometer.amap"


def build(cfg: Config) -> Workload:
    reps = 1 if cfg.quick else REPS
    kw = {"n": N, "reps": reps}
    m = __name__
    wp = ("workpool",)
    return Workload(
        id="A1",
        title=f"{N:,} coroutines of asyncio.sleep(0), {LIMIT} at once, results as they finish (best of {reps})",
        description="per-coroutine overhead of the async pool",
        default_ref=HAND,
        rows=[
            RowSpec(WP_RESULTS, m, "asyncpool", {**kw, "method": "results"}, wp),
            RowSpec(
                'Pool(backend="async").results',
                m,
                "pool_async",
                {**kw, "method": "results"},
                wp,
                note="synchronous caller; the pool's loop runs in its own thread",
            ),
            RowSpec(
                HAND,
                m,
                "peer",
                {**kw, "kind": "hand_queue"},
                note=f"{LIMIT} worker tasks, in-queue maxsize={2 * LIMIT}",
            ),
            RowSpec(
                AIOMETER,
                m,
                "peer",
                {**kw, "kind": "aiometer"},
                ("aiometer",),
                note=f"max_at_once={LIMIT}; input as a list (aiometer calls len())",
            ),
            RowSpec(
                "asyncio.gather + Semaphore",
                m,
                "peer",
                {**kw, "kind": "gather"},
                note="a task per item up front; results at the end",
            ),
            RowSpec(
                "asyncio.TaskGroup + Semaphore",
                m,
                "peer",
                {**kw, "kind": "taskgroup"},
                ("asyncio.taskgroups",),  # Python 3.11+
                note="a task per item up front; results at the end",
            ),
            RowSpec(
                "anyio task group + CapacityLimiter",
                m,
                "peer",
                {**kw, "kind": "anyio"},
                ("anyio",),
                note="asyncio backend; a task per item up front",
            ),
        ],
        targets=[
            Target(
                "A1 AsyncPool.results >= 0.8x hand-written asyncio.Queue",
                WP_RESULTS,
                ">=",
                0.8,
                ref=HAND,
            ),
            Target("A1 AsyncPool.results >= 4x aiometer.amap", WP_RESULTS, ">=", 4.0, ref=AIOMETER),
        ],
    )
