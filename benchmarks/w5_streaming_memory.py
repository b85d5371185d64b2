"""W5: an infinite input in constant memory — 1 KiB items, stop after N results.

RSS growth = highest RSS sampled after the first 100,000 results (every 10,000 results, and
at the N-th) minus the RSS at the 100,000-th result.  "peak +MB" is the highest sample minus
the RSS before the pool was created (it shows memory taken before the baseline, e.g. by an
input that is read eagerly).  "read-ahead" is the most items taken from the input but not
yet yielded as results (sampled every 1,000 results).  Each row runs in its own fresh
interpreter.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.pool import ThreadPool
from time import perf_counter
from typing import Any

import handpool
from harness import Config, RowSpec, Target, Workload, close_iterator, measurement, rss_bytes

WORKERS = 8
MB = 1024 * 1024
SAMPLE_EVERY = 10_000
AHEAD_EVERY = 1_000


_produced = 0  # items taken from the input so far (one row per process)


def gen() -> Iterator[bytes]:
    """Infinite input: a fresh 1 KiB bytes object per item."""
    global _produced
    i = 0
    while True:
        _produced = i + 1
        yield i.to_bytes(8, "little") * 128
        i += 1


def f(b: bytes) -> int:
    return len(b)


Started = tuple[Iterable[Any], Callable[[], None]]


def _drive(
    start: Callable[[], Started], n: int, base_at: int, unwrap: bool = False
) -> dict[str, Any]:
    """``start()`` creates the pool and returns (results iterator, stop function).

    Consume ``n`` results sampling RSS, then stop; pool start and stop are both timed.
    """
    rss0 = rss_bytes()
    t0 = perf_counter()
    it, stop = start()
    base = peak = rss0
    count = ahead = 0
    for r in it:
        if unwrap and not r.ok:
            raise RuntimeError(f"task failed: {r.error!r}")
        count += 1
        if count % AHEAD_EVERY == 0:
            ahead = max(ahead, _produced - count)
        if count % SAMPLE_EVERY == 0 or count == n:
            rss = rss_bytes()
            if count == base_at:
                base = peak = rss
            elif count > base_at:
                peak = max(peak, rss)
        if count >= n:
            break
    stop()
    elapsed = perf_counter() - t0
    if count != n:
        raise RuntimeError(f"got {count} results, expected {n}")
    return measurement(
        elapsed,
        n,
        rss_growth_mb=(peak - base) / MB,
        peak_mb=(peak - rss0) / MB,
        read_ahead=ahead,
    )


def _workpool(n: int, base_at: int, method: str) -> dict[str, Any]:
    from workpool import Pool

    def start() -> Started:
        pool = Pool(workers=WORKERS, backend="thread")
        pool.__enter__()
        it = getattr(pool, method)(f, gen())

        def stop() -> None:
            close_iterator(it)  # what leaving a for loop over a temporary iterator does
            pool.__exit__(None, None, None)

        return it, stop

    return _drive(start, n, base_at, unwrap=(method == "results"))


def wp_map(n: int, base_at: int) -> dict[str, Any]:
    return _workpool(n, base_at, "map")


def wp_results(n: int, base_at: int) -> dict[str, Any]:
    return _workpool(n, base_at, "results")


def hand_queue(n: int, base_at: int) -> dict[str, Any]:
    def start() -> Started:
        it = handpool.imap_unordered(f, gen(), WORKERS, maxsize=16)
        # generator close -> the feeder stops, the workers drain the in-queue and are joined
        return it, it.close

    return _drive(start, n, base_at)


def threadpool_imap(n: int, base_at: int) -> dict[str, Any]:
    def start() -> Started:
        pool = ThreadPool(WORKERS)
        # imap reads its whole input eagerly in a background thread: on the infinite generator
        # it would grow without bound, so the input is capped at n items.
        it = pool.imap_unordered(f, itertools.islice(gen(), n), chunksize=64)

        def stop() -> None:
            pool.terminate()
            pool.join()

        return it, stop

    return _drive(start, n, base_at)


def build(cfg: Config) -> Workload:
    n = 200_000 if cfg.quick else 2_000_000
    base_at = 20_000 if cfg.quick else 100_000
    kw = {"n": n, "base_at": base_at}
    m = __name__
    wp = ("workpool",)
    hand = "hand-written queue.Queue pool"
    return Workload(
        id="W5",
        title=f"infinite input of 1 KiB items, stop after {n:,} results, {WORKERS} threads (1 run)",
        description=f"throughput and RSS growth (after the first {base_at:,} results) on an infinite input",
        default_ref=hand,
        columns=[
            ("rss_growth_mb", "RSS +MB", ".1f"),
            ("peak_mb", "peak +MB", ".1f"),
            ("read_ahead", "read-ahead", ",.0f"),
        ],
        rows=[
            RowSpec("workpool map", m, "wp_map", kw, wp),
            RowSpec("workpool results", m, "wp_results", kw, wp),
            RowSpec(hand, m, "hand_queue", kw, note="in-queue maxsize=16, stop event + sentinels"),
            RowSpec(
                "ThreadPool(8).imap_unordered cs=64",
                m,
                "threadpool_imap",
                kw,
                note=f"input capped at {n:,} with islice (imap reads input eagerly)",
            ),
        ],
        targets=[
            Target(
                "W5 workpool map >= hand-written pool items/s", "workpool map", ">=", 1.0, ref=hand
            ),
            Target(
                "W5 workpool results >= hand-written pool items/s",
                "workpool results",
                ">=",
                1.0,
                ref=hand,
            ),
            Target(
                f"W5 workpool map RSS growth < 5 MB over {n:,}",
                "workpool map",
                "<",
                5.0,
                metric="rss_growth_mb",
                unit="MB",
            ),
            Target(
                f"W5 workpool results RSS growth < 5 MB over {n:,}",
                "workpool results",
                "<",
                5.0,
                metric="rss_growth_mb",
                unit="MB",
            ),
        ],
    )
