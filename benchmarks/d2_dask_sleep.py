"""D2: keeping a Dask cluster busy — 400 tasks sleeping 50 ms on 2 workers x 1 thread.

The physical limit is 400 x 50 ms / 2 threads = 10 s; the ratio column is time / limit. See
``daskrows`` for the rows and what is timed, ``dasklocal`` for the cluster.
"""

from __future__ import annotations

from typing import Any

import daskrows
from d1_dask_overhead import CLIENT_MAP, COLUMNS, DASK, JOBLIB
from dasklocal import WORKERS
from harness import Config, RowSpec, Target, Workload
from proctasks import nap

SLEEP = 0.05
LEVEL = 1.02  # "level with client.map": within 2 % (the noise of one 10 s run here)


def client_map(n: int) -> dict[str, Any]:
    return daskrows.client_map(nap, [SLEEP] * n)


def joblib_dask(n: int) -> dict[str, Any]:
    return daskrows.joblib_dask(nap, [SLEEP] * n)


def workpool_dask(n: int, method: str) -> dict[str, Any]:
    return daskrows.workpool_dask(nap, [SLEEP] * n, method)


LIMIT = "physical limit"
WP = {'Pool(backend="dask").map': "map", 'Pool(backend="dask").results': "results"}


def build(cfg: Config) -> Workload:
    # the input is the sleep itself: nap(x) sleeps x seconds, so every item is SLEEP
    n = 80 if cfg.quick else 400
    m = __name__
    wp = ("workpool", "distributed")
    kw = {"n": n}
    return Workload(
        id="D2",
        title=f"{n} tasks of sleep({SLEEP * 1000:.0f} ms) on a local Dask cluster ({WORKERS} x 1 thread, 1 run); ratio = time / limit",
        description="keeping the Dask workers busy",
        default_ref=LIMIT,
        ratio_mode="time",
        columns=COLUMNS,
        rows=[
            RowSpec(
                LIMIT,
                computed={
                    "seconds": n * SLEEP / WORKERS,
                    "items": n,
                    "note": f"{n} x {SLEEP * 1000:.0f} ms / {WORKERS}",
                },
            ),
            *(
                RowSpec(name, m, "workpool_dask", {**kw, "method": method}, wp)
                for name, method in WP.items()
            ),
            RowSpec(CLIENT_MAP, m, "client_map", kw, DASK, note="future.result() each, pure=False"),
            RowSpec(
                JOBLIB,
                m,
                "joblib_dask",
                kw,
                ("joblib", "distributed"),
                note="n_jobs=-1, generator_unordered",
            ),
        ],
        targets=[
            *(
                Target(
                    f"D2 {name} <= 1.05x physical limit",
                    name,
                    "<=",
                    1.05,
                    metric="seconds",
                    ref=LIMIT,
                )
                for name in WP
            ),
            *(
                Target(
                    f"D2 {name} level with {CLIENT_MAP} (<= {LEVEL}x)",
                    name,
                    "<=",
                    LEVEL,
                    metric="seconds",
                    ref=CLIENT_MAP,
                )
                for name in WP
            ),
        ],
    )
