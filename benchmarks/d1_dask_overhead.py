"""D1: the per-task cost on Dask — 20,000 no-op tasks on a local cluster of 2 workers x 1 thread.

See ``daskrows`` for the rows and what is timed, ``dasklocal`` for the cluster. The ratio
column is throughput against raw ``client.map`` + ``as_completed`` (``future.result()``).
"""

from __future__ import annotations

from typing import Any

import daskrows
from harness import Config, RowSpec, Target, Workload
from proctasks import noop


def client_map(n: int, with_results: bool = False) -> dict[str, Any]:
    return daskrows.client_map(noop, list(range(n)), with_results)


def joblib_dask(n: int) -> dict[str, Any]:
    return daskrows.joblib_dask(noop, list(range(n)))


def workpool_dask(n: int, method: str) -> dict[str, Any]:
    return daskrows.workpool_dask(noop, list(range(n)), method)


CLIENT_MAP = "client.map + as_completed"
JOBLIB = "joblib dask backend"
WP_MAP = 'Pool(backend="dask").map'
DASK = ("distributed",)
COLUMNS = [
    ("scheduler_warnings", "sched warns", ".0f"),
    ("workers_warnings", "worker warns", ".0f"),
    ("client_warnings", "client warns", ".0f"),
]


def build(cfg: Config) -> Workload:
    n = 2_000 if cfg.quick else 20_000
    m = __name__
    wp = ("workpool", "distributed")
    return Workload(
        id="D1",
        title=f"{n:,} no-op tasks on a local Dask cluster (2 worker processes x 1 thread, 1 run)",
        description="per-task overhead of the Dask backend",
        default_ref=CLIENT_MAP,
        columns=COLUMNS,
        rows=[
            RowSpec(WP_MAP, m, "workpool_dask", {"n": n, "method": "map"}, wp),
            RowSpec(
                'Pool(backend="dask").results',
                m,
                "workpool_dask",
                {"n": n, "method": "results"},
                wp,
            ),
            RowSpec(
                CLIENT_MAP, m, "client_map", {"n": n}, DASK, note="future.result() each, pure=False"
            ),
            RowSpec(
                "client.map + as_completed(with_results)",
                m,
                "client_map",
                {"n": n, "with_results": True},
                DASK,
                note="pure=False",
            ),
            RowSpec(
                JOBLIB,
                m,
                "joblib_dask",
                {"n": n},
                ("joblib", "distributed"),
                note="n_jobs=-1, generator_unordered",
            ),
        ],
        targets=[
            Target(f"D1 {WP_MAP} >= 20x {CLIENT_MAP}", WP_MAP, ">=", 20.0, ref=CLIENT_MAP),
            Target(f"D1 {WP_MAP} >= {JOBLIB}", WP_MAP, ">=", 1.0, ref=JOBLIB),
        ],
    )
