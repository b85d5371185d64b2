"""The rows shared by the Dask workloads (D1-D3): workpool's Dask pool and its peers.

Every row starts its own cluster (``dasklocal.Cluster``: scheduler + 2 worker processes x 1
thread, on 127.0.0.1, started and warmed up outside the timed region), runs ``fn`` over a
list of ``items``, checks it got exactly one result per input, and reports the warnings the
cluster logged during the timed region. Timed: from creating the pool (or calling
``client.map``/``Parallel``) to the last result, with the pool shut down and the futures
released.

* ``client.map`` + ``as_completed``: Dask's documented way, ``future.result()`` for each
  future as it completes (``pure=False``: identical calls are separate tasks), or with
  ``with_results=True`` (results fetched in batches);
* joblib's Dask backend: ``Parallel(n_jobs=-1)`` inside ``parallel_config(backend="dask")``
  (joblib batches tiny tasks by itself), results as a generator in completion order;
* workpool ``Pool(backend="dask", client=client)`` (API.md §8) ``map`` / ``results``.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter
from typing import Any

import dasklocal
from harness import consume, consume_results, measurement


def _row(n: int, run: Callable[[Any], None]) -> dict[str, Any]:
    with dasklocal.Cluster() as cluster:
        cluster.mark()
        t0 = perf_counter()
        run(cluster.client)
        elapsed = perf_counter() - t0
        counts, first = cluster.warnings()
    return measurement(elapsed, n, note=first, **counts)


def client_map(
    fn: Callable[..., Any], items: list[Any], with_results: bool = False
) -> dict[str, Any]:
    from distributed import as_completed

    n = len(items)

    def run(client: Any) -> None:
        futures = client.map(fn, items, pure=False)
        if with_results:
            consume((r for _, r in as_completed(futures, with_results=True)), n)
        else:
            consume((f.result() for f in as_completed(futures)), n)
        del futures  # releases them on the scheduler

    return _row(n, run)


def joblib_dask(fn: Callable[..., Any], items: list[Any]) -> dict[str, Any]:
    from joblib import Parallel, delayed, parallel_config

    n = len(items)

    def run(client: Any) -> None:
        with parallel_config(backend="dask"):  # the default client: the cluster's
            parallel = Parallel(n_jobs=-1, return_as="generator_unordered")
            consume(parallel(delayed(fn)(x) for x in items), n)

    return _row(n, run)


def workpool_dask(fn: Callable[..., Any], items: list[Any], method: str) -> dict[str, Any]:
    n = len(items)

    def run(client: Any) -> None:
        with dasklocal.workpool_pool(client) as pool:
            if method == "results":
                consume_results(pool.results(fn, items), n)
            else:
                consume(pool.map(fn, items), n)

    return _row(n, run)
