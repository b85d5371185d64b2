"""W6p: fixed cost of a process pool — create + run one task + shut down.

``with Pool(2, backend="process") as p: p.submit(noop, 1).result()``, REPS times after a first
rep that is reported on its own: each row runs in a fresh interpreter, so the first rep pays
one-time costs — for workpool (and the forkserver peers) starting the fork server, which
imports the program and workpool once; for the fork peers, lazy imports. ``time`` is the
median of the other reps. Shutdown is graceful everywhere (workers are joined).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from time import perf_counter
from typing import Any

from harness import Config, RowSpec, Target, Workload, measurement, median_ms
from proctasks import noop

WORKERS = 2


def _lifecycle(reps: int, once: Any) -> dict[str, Any]:
    t0 = perf_counter()
    once()
    first = perf_counter() - t0
    samples = []
    for _ in range(reps):
        t0 = perf_counter()
        once()
        samples.append(perf_counter() - t0)
    med = median_ms(samples)
    return measurement(
        med / 1000.0,
        None,
        median_ms=med,
        min_ms=min(samples) * 1000.0,
        max_ms=max(samples) * 1000.0,
        first_ms=first * 1000.0,
    )


def wp_lifecycle(reps: int) -> dict[str, Any]:
    from workpool import Pool

    def once() -> None:
        with Pool(WORKERS, backend="process") as pool:
            pool.submit(noop, 1).result()

    return _lifecycle(reps, once)


def mp_lifecycle(reps: int, method: str | None) -> dict[str, Any]:
    ctx = multiprocessing.get_context(method)

    def once() -> None:
        pool = ctx.Pool(WORKERS)
        pool.apply(noop, (1,))
        pool.close()
        pool.join()

    return _lifecycle(reps, once)


def ppe_lifecycle(reps: int, method: str | None) -> dict[str, Any]:
    ctx = multiprocessing.get_context(method)

    def once() -> None:
        with ProcessPoolExecutor(WORKERS, mp_context=ctx) as ex:
            ex.submit(noop, 1).result()

    return _lifecycle(reps, once)


WP = "workpool: with Pool(2, process): submit().result()"
MP = "mp.Pool(2): apply() + close/join"
MP_FS = "mp.Pool(2) forkserver: apply() + close/join"
PPE = "PPE(2): submit().result()"
PPE_FS = "PPE(2) forkserver: submit().result()"


def build(cfg: Config) -> Workload:
    reps = 10 if cfg.quick else 30
    m = __name__
    return Workload(
        id="W6p",
        title=(
            f"process pool: create + 1 task + shutdown, {WORKERS} workers (median of {reps}; "
            "first = the first rep in a fresh interpreter, reported separately); "
            "ratio = time / ref"
        ),
        description="fixed cost of the process backend",
        ratio_mode="time",
        default_ref=MP,
        columns=[
            ("median_ms", "median ms", ".1f"),
            ("min_ms", "min ms", ".1f"),
            ("max_ms", "max ms", ".1f"),
            ("first_ms", "first ms", ".1f"),
        ],
        rows=[
            RowSpec(WP, m, "wp_lifecycle", {"reps": reps}, ("workpool",), note="forkserver"),
            RowSpec(MP, m, "mp_lifecycle", {"reps": reps, "method": None}, note="fork"),
            RowSpec(MP_FS, m, "mp_lifecycle", {"reps": reps, "method": "forkserver"}),
            RowSpec(PPE, m, "ppe_lifecycle", {"reps": reps, "method": None}, note="fork"),
            RowSpec(PPE_FS, m, "ppe_lifecycle", {"reps": reps, "method": "forkserver"}),
        ],
        targets=[
            Target(
                "W6p process create+task+shutdown <= 30 ms (median)",
                WP,
                "<=",
                30.0,
                metric="median_ms",
                unit="ms",
            ),
            Target(
                "W6p process create+task+shutdown <= 30 ms (min)",
                WP,
                "<=",
                30.0,
                metric="min_ms",
                unit="ms",
            ),
        ],
    )
