"""W2: per-task overhead of the process backend — 50,000 no-op tasks on 2 processes.

Every rep creates the pool, runs all tasks and shuts the pool down, all inside the timing;
``time`` is the best of REPS. The first rep of a row runs in a fresh interpreter, so it also pays
one-time costs (workpool: starting the fork server; joblib/loky: nothing is reused yet); it is
shown separately as ``cold ms``. joblib keeps its loky executor alive between calls by design;
here it is shut down at the end of every rep (inside the timing), so that every row pays for
creating and stopping its workers.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from time import perf_counter
from typing import Any

from harness import Config, RowSpec, Target, Workload, consume, consume_results, measurement
from procpeers import joblib_shutdown, loky_module
from proctasks import noop

WORKERS = 2
REPS = 3


def _reps(n: int, once: Any, reps: int = REPS) -> dict[str, Any]:
    samples = [once() for _ in range(reps)]
    best = min(samples)
    return measurement(best, n, cold_ms=samples[0] * 1000.0, reps=float(reps))


# --------------------------------------------------------------------------- rows


def wp_map(n: int) -> dict[str, Any]:
    from workpool import Pool

    def once() -> float:
        t0 = perf_counter()
        with Pool(WORKERS, backend="process") as pool:
            consume(pool.map(noop, range(n)), n)
        return perf_counter() - t0

    return _reps(n, once)


def wp_results(n: int) -> dict[str, Any]:
    from workpool import Pool

    def once() -> float:
        t0 = perf_counter()
        with Pool(WORKERS, backend="process") as pool:
            consume_results(pool.results(noop, range(n)), n)
        return perf_counter() - t0

    return _reps(n, once)


def mp_imap(n: int, chunksize: int) -> dict[str, Any]:
    def once() -> float:
        t0 = perf_counter()
        pool = multiprocessing.Pool(WORKERS)
        consume(pool.imap_unordered(noop, range(n), chunksize=chunksize), n)
        pool.close()
        pool.join()
        return perf_counter() - t0

    return _reps(n, once)


def ppe_map(n: int, chunksize: int, reps: int = REPS) -> dict[str, Any]:
    def once() -> float:
        t0 = perf_counter()
        with ProcessPoolExecutor(WORKERS) as ex:
            consume(ex.map(noop, range(n), chunksize=chunksize), n)
        return perf_counter() - t0

    return _reps(n, once, reps)


def joblib_gen(n: int) -> dict[str, Any]:
    from joblib import Parallel, delayed

    def once() -> float:
        t0 = perf_counter()
        gen = Parallel(n_jobs=WORKERS, return_as="generator_unordered")(
            delayed(noop)(i) for i in range(n)
        )
        consume(gen, n)
        joblib_shutdown()
        return perf_counter() - t0

    return _reps(n, once)


def mpire_imap(n: int) -> dict[str, Any]:
    from mpire import WorkerPool

    def once() -> float:
        t0 = perf_counter()
        with WorkerPool(n_jobs=WORKERS) as pool:
            consume(pool.imap_unordered(noop, range(n)), n)
        return perf_counter() - t0

    return _reps(n, once)


def pebble_map(n: int, chunksize: int) -> dict[str, Any]:
    from pebble import ProcessPool

    def once() -> float:
        t0 = perf_counter()
        with ProcessPool(max_workers=WORKERS) as pool:
            consume(pool.map(noop, range(n), chunksize=chunksize).result(), n)
        return perf_counter() - t0

    return _reps(n, once)


def loky_map(n: int, chunksize: int) -> dict[str, Any]:
    loky, label = loky_module()

    def once() -> float:
        t0 = perf_counter()
        with loky.ProcessPoolExecutor(WORKERS) as ex:
            consume(ex.map(noop, range(n), chunksize=chunksize), n)
        return perf_counter() - t0

    result = _reps(n, once)
    result["note"] = label
    return result


# --------------------------------------------------------------------------- workload

WP_MAP = "workpool map"
WP_RESULTS = "workpool results"
MP_256 = "mp.Pool(2).imap_unordered cs=256"
MP_1 = "mp.Pool(2).imap_unordered cs=1"
PPE_256 = "PPE(2).map cs=256"
PPE_1 = "PPE(2).map cs=1"
JOBLIB = "joblib generator_unordered"
MPIRE = "mpire imap_unordered"
PEBBLE = "pebble ProcessPool.map cs=256"
LOKY = "loky PPE(2).map cs=256"


def build(cfg: Config) -> Workload:
    n = 5_000 if cfg.quick else 50_000
    kw = {"n": n}
    m = __name__
    wp = ("workpool",)
    return Workload(
        id="W2",
        title=(
            f"{n:,} no-op tasks on {WORKERS} processes (best of {REPS}; every rep includes "
            f"pool creation + shutdown; cold = first rep in a fresh interpreter)"
        ),
        description="per-task overhead of the process backend",
        default_ref=MP_256,
        columns=[("cold_ms", "cold ms", ".0f")],
        rows=[
            RowSpec(WP_MAP, m, "wp_map", kw, wp, note="ordered (default), auto batching"),
            RowSpec(WP_RESULTS, m, "wp_results", kw, wp, ref=JOBLIB, note="auto batching"),
            RowSpec(MP_256, m, "mp_imap", {**kw, "chunksize": 256}, note="fork"),
            RowSpec(MP_1, m, "mp_imap", {**kw, "chunksize": 1}, note="fork"),
            RowSpec(PPE_256, m, "ppe_map", {**kw, "chunksize": 256}, note="fork"),
            RowSpec(
                PPE_1,
                m,
                "ppe_map",
                {**kw, "chunksize": 1, "reps": 1},
                note="fork; 1 rep (slow)",
            ),
            RowSpec(
                JOBLIB,
                m,
                "joblib_gen",
                kw,
                ("joblib",),
                note="loky, auto batching; executor shut down each rep",
            ),
            RowSpec(MPIRE, m, "mpire_imap", kw, ("mpire",), note="fork, default chunking"),
            RowSpec(PEBBLE, m, "pebble_map", {**kw, "chunksize": 256}, ("pebble",)),
            RowSpec(LOKY, m, "loky_map", {**kw, "chunksize": 256}, ("joblib",)),
        ],
        targets=[
            Target(
                "W2 workpool map >= 0.5x mp.Pool.imap_unordered(cs=256)",
                WP_MAP,
                ">=",
                0.5,
                ref=MP_256,
            ),
            Target("W2 workpool map >= 2x joblib", WP_MAP, ">=", 2.0, ref=JOBLIB),
            Target("W2 workpool results >= 1.0x joblib", WP_RESULTS, ">=", 1.0, ref=JOBLIB),
        ],
    )
