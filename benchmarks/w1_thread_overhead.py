"""W1: per-task overhead of the thread backend — 200,000 no-op tasks on 8 threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, as_completed
from multiprocessing.pool import ThreadPool
from time import perf_counter
from typing import Any

import handpool
from harness import (
    Config,
    RowSpec,
    Target,
    Workload,
    best_of,
    consume,
    consume_results,
    measurement,
)

WORKERS = 8
REPS = 3


def noop(x: Any) -> Any:
    return x


# --------------------------------------------------------------------------- rows
# Each row times pool creation + all tasks + shutdown, best of REPS.


def wp_map(n: int) -> dict[str, Any]:
    from workpool import Pool

    def once() -> float:
        t0 = perf_counter()
        with Pool(workers=WORKERS, backend="thread") as pool:
            consume(pool.map(noop, range(n)), n)
        return perf_counter() - t0

    return measurement(best_of(REPS, once), n)


def wp_results(n: int) -> dict[str, Any]:
    from workpool import Pool

    def once() -> float:
        t0 = perf_counter()
        with Pool(workers=WORKERS, backend="thread") as pool:
            consume_results(pool.results(noop, range(n)), n)
        return perf_counter() - t0

    return measurement(best_of(REPS, once), n)


def wp_submit(n: int) -> dict[str, Any]:
    from workpool import Pool

    def once() -> float:
        t0 = perf_counter()
        with Pool(workers=WORKERS, backend="thread") as pool:
            futures = [pool.submit(noop, i) for i in range(n)]
            consume((f.result() for f in as_completed(futures)), n)
        return perf_counter() - t0

    return measurement(best_of(REPS, once), n)


def tpe_map(n: int) -> dict[str, Any]:
    def once() -> float:
        t0 = perf_counter()
        with ThreadPoolExecutor(WORKERS) as ex:
            consume(ex.map(noop, range(n)), n)
        return perf_counter() - t0

    return measurement(best_of(REPS, once), n)


def tpe_submit(n: int) -> dict[str, Any]:
    def once() -> float:
        t0 = perf_counter()
        with ThreadPoolExecutor(WORKERS) as ex:
            futures = [ex.submit(noop, i) for i in range(n)]
            consume((f.result() for f in as_completed(futures)), n)
        return perf_counter() - t0

    return measurement(best_of(REPS, once), n)


def threadpool_imap(n: int, chunksize: int) -> dict[str, Any]:
    def once() -> float:
        t0 = perf_counter()
        pool = ThreadPool(WORKERS)
        consume(pool.imap_unordered(noop, range(n), chunksize=chunksize), n)
        pool.close()
        pool.join()
        return perf_counter() - t0

    return measurement(best_of(REPS, once), n)


def hand_queue(n: int) -> dict[str, Any]:
    def once() -> float:
        t0 = perf_counter()
        consume(handpool.imap_unordered(noop, range(n), WORKERS, maxsize=16), n)
        return perf_counter() - t0

    return measurement(best_of(REPS, once), n)


def pypeln_map(n: int) -> dict[str, Any]:
    import pypeln as pl

    def once() -> float:
        t0 = perf_counter()
        consume(pl.thread.map(noop, range(n), workers=WORKERS, maxsize=16), n)
        return perf_counter() - t0

    return measurement(best_of(REPS, once), n)


# --------------------------------------------------------------------------- workload

WP_MAP = "workpool map"
WP_RESULTS = "workpool results"
WP_SUBMIT = "workpool submit+as_completed"
TPE_MAP = "TPE(8).map"
TPE_SUBMIT = "TPE(8) submit+as_completed"
IMAP_1 = "ThreadPool(8).imap_unordered cs=1"
IMAP_64 = "ThreadPool(8).imap_unordered cs=64"
HAND = "hand-written queue.Queue pool"
PYPELN = "pypeln.thread.map"


def build(cfg: Config) -> Workload:
    n = 20_000 if cfg.quick else 200_000
    kw = {"n": n}
    m = __name__
    wp = ("workpool",)
    return Workload(
        id="W1",
        title=f"{n:,} no-op tasks on {WORKERS} threads (best of {REPS}, incl. pool start/stop)",
        description="per-task overhead of the thread backend",
        default_ref=TPE_MAP,
        rows=[
            RowSpec(WP_MAP, m, "wp_map", kw, wp, ref=IMAP_64),
            RowSpec(WP_RESULTS, m, "wp_results", kw, wp),
            RowSpec(WP_SUBMIT, m, "wp_submit", kw, wp, ref=TPE_SUBMIT),
            RowSpec(TPE_MAP, m, "tpe_map", kw),
            RowSpec(TPE_SUBMIT, m, "tpe_submit", kw),
            RowSpec(IMAP_1, m, "threadpool_imap", {**kw, "chunksize": 1}),
            RowSpec(IMAP_64, m, "threadpool_imap", {**kw, "chunksize": 64}),
            RowSpec(HAND, m, "hand_queue", kw, note="in-queue maxsize=16"),
            RowSpec(PYPELN, m, "pypeln_map", kw, ("pypeln",), note="maxsize=16"),
        ],
        targets=[
            Target(
                "W1 workpool map >= 0.5x ThreadPool.imap_unordered(cs=64)",
                WP_MAP,
                ">=",
                0.5,
                ref=IMAP_64,
            ),
            Target("W1 workpool map >= 10x TPE.map", WP_MAP, ">=", 10.0, ref=TPE_MAP),
            Target("W1 workpool results >= 10x TPE.map", WP_RESULTS, ">=", 10.0, ref=TPE_MAP),
            Target(
                "W1 workpool submit+as_completed >= 1.0x TPE's",
                WP_SUBMIT,
                ">=",
                1.0,
                ref=TPE_SUBMIT,
            ),
        ],
    )
