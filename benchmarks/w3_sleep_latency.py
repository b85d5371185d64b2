"""W3: keeping 64 workers busy — 2,000 tasks of ``time.sleep(0.01)``.

The physical limit is tasks * 10 ms / workers = 0.3125 s; the ratio column is time / limit.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
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
    sleep_floor_rows,
)

WORKERS = 64
SLEEP = 0.01
N = 2_000
REPS = 3  # each run is ~0.3 s: best of 3 keeps scheduler noise out of a 3 % target


def sleepy(x: Any) -> Any:
    time.sleep(SLEEP)
    return x


def bare_threads(n: int, reps: int) -> dict[str, Any]:
    """No pool: WORKERS threads, each sleeping its fixed share of the n tasks.

    What the limit costs with this machine's real sleep() and thread start, i.e. the floor
    any pool can reach.
    """
    import threading

    shares = [n // WORKERS + (i < n % WORKERS) for i in range(WORKERS)]

    def once() -> float:
        def run(k: int) -> None:
            for _ in range(k):
                sleepy(None)

        t0 = perf_counter()
        threads = [threading.Thread(target=run, args=(k,)) for k in shares]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return perf_counter() - t0

    t0 = perf_counter()
    for _ in range(50):
        time.sleep(SLEEP)
    mean_sleep = (perf_counter() - t0) / 50
    return measurement(
        best_of(reps, once), n, note=f"sleep({SLEEP}) really takes {mean_sleep * 1000:.3f} ms here"
    )


def wp_map(n: int, reps: int) -> dict[str, Any]:
    from workpool import Pool

    def once() -> float:
        t0 = perf_counter()
        with Pool(workers=WORKERS, backend="thread") as pool:
            consume(pool.map(sleepy, range(n)), n)
        return perf_counter() - t0

    return measurement(best_of(reps, once), n)


def wp_results(n: int, reps: int) -> dict[str, Any]:
    from workpool import Pool

    def once() -> float:
        t0 = perf_counter()
        with Pool(workers=WORKERS, backend="thread") as pool:
            consume_results(pool.results(sleepy, range(n)), n)
        return perf_counter() - t0

    return measurement(best_of(reps, once), n)


def tpe_map(n: int, reps: int) -> dict[str, Any]:
    def once() -> float:
        t0 = perf_counter()
        with ThreadPoolExecutor(WORKERS) as ex:
            consume(ex.map(sleepy, range(n)), n)
        return perf_counter() - t0

    return measurement(best_of(reps, once), n)


def threadpool_imap(n: int, reps: int) -> dict[str, Any]:
    def once() -> float:
        t0 = perf_counter()
        pool = ThreadPool(WORKERS)
        consume(pool.imap_unordered(sleepy, range(n), chunksize=1), n)
        pool.close()
        pool.join()
        return perf_counter() - t0

    return measurement(best_of(reps, once), n)


def hand_queue(n: int, reps: int) -> dict[str, Any]:
    def once() -> float:
        t0 = perf_counter()
        consume(handpool.imap_unordered(sleepy, range(n), WORKERS), n)
        return perf_counter() - t0

    return measurement(best_of(reps, once), n)


def pypeln_map(n: int, reps: int) -> dict[str, Any]:
    import pypeln as pl

    def once() -> float:
        t0 = perf_counter()
        consume(pl.thread.map(sleepy, range(n), workers=WORKERS, maxsize=2 * WORKERS), n)
        return perf_counter() - t0

    return measurement(best_of(reps, once), n)


LIMIT = "physical limit"
WP_MAP = "workpool map"
WP_RESULTS = "workpool results"


def build(cfg: Config) -> Workload:
    reps = 1 if cfg.quick else REPS
    kw = {"n": N, "reps": reps}
    m = __name__
    wp = ("workpool",)
    return Workload(
        id="W3",
        title=f"{N:,} x sleep({SLEEP * 1000:.0f} ms) on {WORKERS} threads (best of {reps}); ratio = time / limit",
        description="scheduling latency with many I/O-bound workers",
        default_ref=LIMIT,
        ratio_mode="time",
        rows=[
            *sleep_floor_rows(LIMIT, N, WORKERS, SLEEP),
            RowSpec(f"{WORKERS} bare threads, fixed shares (no pool)", m, "bare_threads", kw),
            RowSpec(WP_MAP, m, "wp_map", kw, wp),
            RowSpec(WP_RESULTS, m, "wp_results", kw, wp),
            RowSpec(f"TPE({WORKERS}).map", m, "tpe_map", kw),
            RowSpec(f"ThreadPool({WORKERS}).imap_unordered cs=1", m, "threadpool_imap", kw),
            RowSpec(
                f"hand-written queue.Queue pool({WORKERS})",
                m,
                "hand_queue",
                kw,
                note="in-queue maxsize=128",
            ),
            RowSpec(
                "pypeln.thread.map",
                m,
                "pypeln_map",
                kw,
                ("pypeln",),
                note=f"workers={WORKERS}, maxsize=128",
            ),
        ],
        targets=[
            Target(
                "W3 workpool map <= 1.03x physical limit",
                WP_MAP,
                "<=",
                1.03,
                metric="seconds",
                ref=LIMIT,
            ),
            Target(
                "W3 workpool results <= 1.03x physical limit",
                WP_RESULTS,
                "<=",
                1.03,
                metric="seconds",
                ref=LIMIT,
            ),
        ],
    )
