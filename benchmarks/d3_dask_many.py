"""D3: a million tiny tasks on Dask — through ``results``, in bounded client memory.

1,000,000 no-op tasks (``--quick``: 50,000) on the local cluster of ``dasklocal`` (scheduler in
its own process, so this process's RSS is the client's). The input is a lazy generator of ints
that counts what was taken. Memory is measured as in W5 (``streams``): RSS growth after the
first ``base_at`` results; ``read-ahead`` = items taken from the input but not yet yielded.
The warnings columns count what the scheduler, the workers and the client logged during the
run (a "warning storm" shows up there; the first message of each is in the note). Timed:
creating the pool to its shutdown, cluster start excluded. There is no ratio: the target is
completing within the memory bound; items/s is reported.

Raw ``client.map`` refuses iterators and creates a future per item up front, so it has no
row; joblib's Dask backend (which batches by itself) is shown for items/s.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from time import perf_counter
from typing import Any

import dasklocal
from d1_dask_overhead import COLUMNS
from harness import Config, RowSpec, Target, Workload, measurement
from proctasks import noop
from streams import Endless, MemoryProbe

Start = Callable[[Any, Iterable[int]], tuple[Iterable[Any], Callable[[], None]]]


def _drive(n: int, base_at: int, every: int, start: Start, unwrap: bool) -> dict[str, Any]:
    """``start(client, items)`` returns (results iterator, stop function); both are timed."""
    source = Endless(int)
    probe = MemoryProbe(n, base_at, every, source)
    count = 0
    with dasklocal.Cluster() as cluster:
        cluster.mark()
        probe.start()
        t0 = perf_counter()
        it, stop = start(cluster.client, itertools.islice(iter(source), n))
        try:
            for r in it:
                if unwrap and not r.ok:
                    raise RuntimeError(f"task failed: {r.error!r}")
                count += 1
                probe.tick(count)
        finally:
            stop()
        elapsed = perf_counter() - t0
        counts, first = cluster.warnings()
    if count != n:
        raise RuntimeError(f"got {count} results, expected {n}")
    return measurement(elapsed, n, note=first, **probe.metrics(), **counts)


def workpool_results(n: int, base_at: int, every: int) -> dict[str, Any]:
    def start(client: Any, items: Iterable[int]) -> tuple[Iterable[Any], Callable[[], None]]:
        pool = dasklocal.workpool_pool(client)
        pool.__enter__()
        return pool.results(noop, items), lambda: pool.__exit__(None, None, None)

    return _drive(n, base_at, every, start, unwrap=True)


def joblib_dask(n: int, base_at: int, every: int) -> dict[str, Any]:
    from joblib import Parallel, delayed, parallel_config

    def start(client: Any, items: Iterable[int]) -> tuple[Iterable[Any], Callable[[], None]]:
        config = parallel_config(backend="dask")
        config.__enter__()
        parallel = Parallel(n_jobs=-1, return_as="generator_unordered")
        return parallel(delayed(noop)(x) for x in items), lambda: config.__exit__(None, None, None)

    return _drive(n, base_at, every, start, unwrap=False)


WP = 'Pool(backend="dask").results'


def build(cfg: Config) -> Workload:
    n = 50_000 if cfg.quick else 1_000_000
    base_at = 10_000 if cfg.quick else 100_000
    every = 5_000 if cfg.quick else 10_000
    kw = {"n": n, "base_at": base_at, "every": every}
    m = __name__
    return Workload(
        id="D3",
        title=f"{n:,} no-op tasks through results on a local Dask cluster (2 x 1 thread, 1 run)",
        description=f"many tiny tasks: items/s, client RSS growth after the first {base_at:,} results, warnings",
        columns=[
            ("rss_growth_mb", "RSS +MB", ".1f"),
            ("peak_mb", "peak +MB", ".1f"),
            ("read_ahead", "read-ahead", ",.0f"),
            *COLUMNS,
        ],
        rows=[
            RowSpec(WP, m, "workpool_results", kw, ("workpool", "distributed")),
            RowSpec(
                "joblib dask backend",
                m,
                "joblib_dask",
                kw,
                ("joblib", "distributed"),
                note="n_jobs=-1, generator_unordered",
            ),
        ],
        targets=[
            Target(
                f"D3 {WP} client RSS growth < 50 MB over {n:,}",
                WP,
                "<",
                50.0,
                metric="rss_growth_mb",
                unit="MB",
            ),
            Target(
                f"D3 {WP} scheduler warnings (no storm: < 10)",
                WP,
                "<",
                10.0,
                metric="scheduler_warnings",
                unit="",
            ),
        ],
    )
